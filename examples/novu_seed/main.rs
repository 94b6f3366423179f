//! Seeds a small, real-shaped Novu database "as of" a release, and afterwards checks that the
//! data says what each migration script promises. Used by `scripts/novu-e2e.sh`.
//!
//!   novu_seed seed  URI/db --as-of X
//!       drops the database, then writes the documents of `data.rs` as of release X: every
//!       script introduced at or before X has migrated them, every later one still has work.
//!   novu_seed check URI/db --from X --to Y --key KEY
//!       for every script an upgrade from X to Y runs, checks what it promises on the seeded
//!       documents (secrets decrypt with KEY to the seeded plaintext, no live duplicate
//!       subscriber, every message has `seen`, ...). Prints one line per promise, `ok` or
//!       `FAILED`, and exits 1 if any failed. Decryption runs in `node` (Novu's cipher is
//!       node's aes-256-cbc), with the key passed in its environment.

mod data;

use std::collections::BTreeMap;
use std::io::Write;

use bson::{doc, Bson, Document};
use futures_util::TryStreamExt;
use mongodb::{Client, Database};
use semver::Version;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

const USAGE: &str =
    "usage: novu_seed seed URI/db --as-of X | novu_seed check URI/db --from X --to Y [--key KEY]";

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), BoxError> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (mode, uri) = match (args.first(), args.get(1)) {
        (Some(m), Some(u)) => (m.as_str(), u.as_str()),
        _ => return Err(USAGE.into()),
    };
    let flags = parse_flags(&args[2..])?;
    let version = |name: &str| -> Result<Version, BoxError> {
        let text = flags.get(name).ok_or(USAGE)?;
        Ok(Version::parse(text.trim_start_matches('v'))?)
    };
    let db = database(uri).await?;
    match mode {
        "seed" => {
            let as_of = version("as-of")?;
            let written = seed(&db, &as_of).await?;
            println!(
                "seeded {written} documents as of {as_of} into {}",
                db.name()
            );
            Ok(())
        }
        "check" => {
            let (from, to) = (version("from")?, version("to")?);
            // The seeded ciphertexts were made with E2E_KEY: the run must use it too.
            let key = flags.get("key").map_or(data::E2E_KEY, String::as_str);
            let failed = check(&db, &from, &to, key).await?;
            if failed > 0 {
                eprintln!("{failed} promise(s) failed");
                std::process::exit(1);
            }
            Ok(())
        }
        _ => Err(USAGE.into()),
    }
}

fn parse_flags(rest: &[String]) -> Result<BTreeMap<String, String>, BoxError> {
    let mut out = BTreeMap::new();
    let mut it = rest.iter();
    while let Some(flag) = it.next() {
        let name = flag.strip_prefix("--").ok_or(USAGE)?;
        let value = it.next().ok_or(USAGE)?;
        out.insert(name.to_string(), value.clone());
    }
    Ok(out)
}

async fn database(uri: &str) -> Result<Database, BoxError> {
    let client = Client::with_uri_str(uri).await?;
    let db = client
        .default_database()
        .ok_or("the URI must name a database (mongodb://host:port/db)")?;
    Ok(db)
}

async fn seed(db: &Database, as_of: &Version) -> Result<usize, BoxError> {
    db.drop().await?;
    let mut written = 0;
    for (collection, docs) in data::documents(as_of) {
        if docs.is_empty() {
            continue;
        }
        written += docs.len();
        db.collection::<Document>(collection)
            .insert_many(docs)
            .await?;
    }
    Ok(written)
}

/// Whether an upgrade from `from` to `to` runs the scripts of release `major.minor`.
fn runs(from: &Version, to: &Version, major: u64, minor: u64) -> bool {
    runs_patch(from, to, major, minor, 0)
}

/// `runs` for a patch release (drop-logs-collection ships in v2.1.1).
fn runs_patch(from: &Version, to: &Version, major: u64, minor: u64, patch: u64) -> bool {
    let v = Version::new(major, minor, patch);
    *from < v && v <= *to
}

/// `doc.a.b.c` as a document path, if every step is a document.
fn path<'a>(d: &'a Document, dotted: &str) -> Option<&'a Bson> {
    let mut parts = dotted.split('.').peekable();
    let mut current = d;
    while let Some(part) = parts.next() {
        let value = current.get(part)?;
        if parts.peek().is_none() {
            return Some(value);
        }
        current = value.as_document()?;
    }
    None
}

struct Report {
    failed: usize,
}

impl Report {
    fn promise(&mut self, script: &str, what: &str, ok: bool, detail: String) {
        let status = if ok { "ok" } else { "FAILED" };
        if ok {
            println!("{status:6} {script}: {what}");
        } else {
            println!("{status:6} {script}: {what} ({detail})");
            self.failed += 1;
        }
    }
}

async fn find_all(
    db: &Database,
    collection: &str,
    filter: Document,
) -> Result<Vec<Document>, BoxError> {
    Ok(db
        .collection::<Document>(collection)
        .find(filter)
        .await?
        .try_collect()
        .await?)
}

async fn find_one(db: &Database, collection: &str, filter: Document) -> Result<Document, BoxError> {
    db.collection::<Document>(collection)
        .find_one(filter.clone())
        .await?
        .ok_or_else(|| format!("no document in {collection} matches {filter}").into())
}

fn text<'a>(d: &'a Document, path: &str) -> Option<&'a str> {
    let mut current = d;
    let parts: Vec<&str> = path.split('.').collect();
    for (n, part) in parts.iter().enumerate() {
        if n + 1 == parts.len() {
            return current.get_str(part).ok();
        }
        current = current.get_document(part).ok()?;
    }
    None
}

/// Ciphertexts to decrypt in node: (label, ciphertext, expected plaintext).
type Decryptions = Vec<(String, String, String)>;

async fn check(db: &Database, from: &Version, to: &Version, key: &str) -> Result<usize, BoxError> {
    let i = data::ids();
    let mut r = Report { failed: 0 };
    let mut decrypt: Decryptions = Vec::new();

    if runs(from, to, 0, 4) {
        let prod = find_all(
            db,
            "environments",
            doc! { "_organizationId": i.org, "name": "Production" },
        )
        .await?;
        let linked = prod.len() == 1 && prod[0].get_object_id("_parentId").ok() == Some(i.env_dev);
        r.promise(
            "changes-migration",
            "a Production environment linked to Development",
            linked,
            format!("{prod:?}"),
        );
    }
    if runs(from, to, 0, 8) {
        let fcm = find_one(db, "integrations", doc! { "_id": i.fcm }).await?;
        let creds = fcm.get_document("credentials").cloned().unwrap_or_default();
        r.promise(
            "fcm-credentials",
            "credentials.user renamed to serviceAccount",
            !creds.contains_key("user") && creds.contains_key("serviceAccount"),
            format!("{creds}"),
        );
        for (id, path, secret) in [
            (i.sendgrid, "credentials.apiKey", &data::SENDGRID_KEY),
            (i.nodemailer, "credentials.password", &data::SMTP_PASSWORD),
            (i.fcm, "credentials.serviceAccount", &data::FCM_ACCOUNT),
        ] {
            let d = find_one(db, "integrations", doc! { "_id": id }).await?;
            let value = text(&d, path).unwrap_or_default().to_string();
            r.promise(
                "encrypt-credentials",
                &format!("{} stored encrypted (nvsk.)", secret.name),
                value.starts_with("nvsk."),
                value.clone(),
            );
            decrypt.push((
                format!("encrypt-credentials: {} decrypts with the key", secret.name),
                value,
                secret.plain.to_string(),
            ));
        }
        let deleted = find_one(db, "integrations", doc! { "_id": i.mailgun_deleted }).await?;
        r.promise(
            "encrypt-credentials",
            "a soft-deleted integration is left alone",
            text(&deleted, "credentials.apiKey") == Some("key-deleted-plaintext"),
            format!("{deleted}"),
        );
    }
    if runs(from, to, 0, 9) {
        let missing = db
            .collection::<Document>("messages")
            .count_documents(doc! { "seen": { "$exists": false } })
            .await?;
        r.promise(
            "seen-read-support",
            "every message has `seen`",
            missing == 0,
            format!("{missing} without"),
        );
        let in_app = find_one(db, "messages", doc! { "_id": i.msg_in_app }).await?;
        r.promise(
            "seen-read-support",
            "the old in-app `seen: false` became `read: false`, `seen: true`",
            in_app.get_bool("read") == Ok(false) && in_app.get_bool("seen") == Ok(true),
            format!(
                "read={:?} seen={:?}",
                in_app.get("read"),
                in_app.get("seen")
            ),
        );
        let email = find_one(db, "messages", doc! { "_id": i.msg_email }).await?;
        r.promise(
            "seen-read-support",
            "an e-mail message is unseen",
            email.get_bool("seen") == Ok(false),
            format!("{:?}", email.get("seen")),
        );
    }
    if runs(from, to, 0, 12) {
        let jane = find_one(db, "users", doc! { "_id": i.user_jane }).await?;
        let bob = find_one(db, "users", doc! { "_id": i.user_bob }).await?;
        r.promise(
            "normalize-users-email",
            "e-mail addresses normalised (janedoe@gmail.com, bob@acme.io)",
            jane.get_str("email") == Ok("janedoe@gmail.com")
                && bob.get_str("email") == Ok("bob@acme.io"),
            format!("{:?} {:?}", jane.get("email"), bob.get("email")),
        );
    }
    if runs(from, to, 0, 15) {
        for collection in ["messages", "notifications", "jobs"] {
            let missing = db
                .collection::<Document>(collection)
                .count_documents(doc! { "expireAt": { "$exists": false } })
                .await?;
            r.promise(
                "expire-at",
                &format!("every document in {collection} has expireAt"),
                missing == 0,
                format!("{missing} without"),
            );
        }
    }
    if runs(from, to, 0, 16) {
        for env in [i.env_dev, i.env_prod, i.org2_env_dev, i.org2_env_prod] {
            let n = db.collection::<Document>("integrations").count_documents(doc! { "_environmentId": env, "providerId": "novu", "channel": "in_app", "deleted": { "$ne": true } }).await?;
            r.promise(
                "in-app-integration",
                &format!("environment {env} has one Novu in-app integration"),
                n == 1,
                format!("{n} found"),
            );
        }
        let nodemailer = find_one(db, "integrations", doc! { "_id": i.nodemailer }).await?;
        let secure = nodemailer
            .get_document("credentials")
            .ok()
            .and_then(|c| c.get("secure").cloned());
        r.promise(
            "secure-to-boolean",
            "credentials.secure is the boolean true",
            secure == Some(Bson::Boolean(true)),
            format!("{secure:?}"),
        );
    }
    let live = doc! { "deleted": { "$ne": true } };
    if runs(from, to, 0, 17) {
        let all = find_all(db, "integrations", live.clone()).await?;
        let without: Vec<String> = all
            .iter()
            .filter(|d| {
                d.get_str("name").map_or(true, str::is_empty)
                    || d.get_str("identifier").map_or(true, str::is_empty)
            })
            .map(|d| format!("{:?}", d.get("providerId")))
            .collect();
        r.promise(
            "add-integration-identifier",
            "every live integration has a name and an identifier",
            without.is_empty(),
            without.join(", "),
        );
    }
    if runs(from, to, 0, 18) {
        let all = find_all(db, "integrations", live.clone()).await?;
        let without: Vec<String> = all
            .iter()
            .filter(|d| !d.contains_key("primary") || !d.contains_key("priority"))
            .map(|d| format!("{:?}", d.get("providerId")))
            .collect();
        r.promise(
            "add-primary-priority",
            "every live integration has primary and priority",
            without.is_empty(),
            without.join(", "),
        );
        let sendgrid = find_one(db, "integrations", doc! { "_id": i.sendgrid }).await?;
        r.promise(
            "add-primary-priority",
            "the only active e-mail provider of Development is primary",
            sendgrid.get_bool("primary") == Ok(true),
            format!("{:?}", sendgrid.get("primary")),
        );
        for env in [i.env_dev, i.env_prod, i.org2_env_dev, i.org2_env_prod] {
            for provider in ["novu-email", "novu-sms"] {
                let n = db.collection::<Document>("integrations").count_documents(doc! { "_environmentId": env, "providerId": provider, "deleted": { "$ne": true } }).await?;
                r.promise(
                    "novu-integrations",
                    &format!("environment {env} has {provider}"),
                    n == 1,
                    format!("{n} found"),
                );
            }
        }
        let novu_email = find_one(
            db,
            "integrations",
            doc! { "_environmentId": i.env_dev, "providerId": "novu-email" },
        )
        .await?;
        r.promise(
            "novu-integrations",
            "Novu Email is inactive where SendGrid is active",
            novu_email.get_bool("active") == Ok(false),
            format!("{:?}", novu_email.get("active")),
        );
    }
    if runs(from, to, 0, 19) {
        let n = db.collection::<Document>("integrations").count_documents(doc! { "active": false, "primary": true, "providerId": { "$in": ["novu-email", "novu-sms"] }, "deleted": { "$ne": true } }).await?;
        r.promise(
            "update-primary-for-disabled-novu-integrations",
            "no inactive Novu integration is primary",
            n == 0,
            format!("{n} found"),
        );
        let layouts = find_all(db, "layouts", doc! {}).await?;
        let identifiers: Vec<Option<&str>> = layouts
            .iter()
            .map(|l| l.get_str("identifier").ok())
            .collect();
        let same =
            identifiers.iter().all(|x| x.is_some()) && identifiers.windows(2).all(|w| w[0] == w[1]);
        r.promise(
            "add-layout-identifier",
            "every layout has an identifier, the Production copy the same as its parent",
            same,
            format!("{identifiers:?}"),
        );
    }
    if runs(from, to, 0, 20) {
        let pref = find_one(db, "subscriberpreferences", doc! { "_id": i.pref_template }).await?;
        r.promise(
            "subscriber-preferences-level",
            "the template preference has level \"template\"",
            pref.get_str("level") == Ok("template"),
            format!("{:?}", pref.get("level")),
        );
    }
    // encrypt-api-keys runs at v2.0.0 when the upgrade reaches it, else at v0.23.0.
    if runs(from, to, 0, 23) || runs(from, to, 2, 0) {
        for (env, secret) in [
            (i.env_dev, &data::API_KEY_DEV),
            (i.env_prod, &data::API_KEY_PROD),
        ] {
            let e = find_one(db, "environments", doc! { "_id": env }).await?;
            let keys = e.get_array("apiKeys").cloned().unwrap_or_default();
            let first = keys
                .first()
                .and_then(Bson::as_document)
                .cloned()
                .unwrap_or_default();
            let value = first.get_str("key").unwrap_or_default().to_string();
            r.promise(
                "encrypt-api-keys",
                &format!("{} stored encrypted with its sha256 hash", secret.name),
                keys.len() == 1
                    && value.starts_with("nvsk.")
                    && first.get_str("hash") == Ok(secret.sha256),
                format!("{first}"),
            );
            decrypt.push((
                format!("encrypt-api-keys: {} decrypts with the key", secret.name),
                value,
                secret.plain.to_string(),
            ));
        }
    }
    if runs(from, to, 0, 24) {
        let in_app = find_one(db, "messages", doc! { "_id": i.msg_in_app }).await?;
        let action = in_app
            .get_document("cta")
            .ok()
            .and_then(|c| c.get("action").cloned());
        r.promise(
            "normalize-message-cta-action",
            "the message's empty cta.action became {}",
            action == Some(Bson::Document(doc! {})),
            format!("{action:?}"),
        );
        let empty = db
            .collection::<Document>("messagetemplates")
            .count_documents(doc! { "cta.action": "" })
            .await?;
        r.promise(
            "normalize-message-template-cta-action",
            "no message template has an empty cta.action",
            empty == 0,
            format!("{empty} found"),
        );
        let links: Vec<String> = find_all(db, "topicsubscribers", doc! {})
            .await?
            .iter()
            .filter_map(|d| d.get_str("externalSubscriberId").ok().map(String::from))
            .collect();
        r.promise(
            "topic-subscriber-normalize",
            "only the link to a live subscriber is left",
            links == ["e2e-alice"],
            links.join(", "),
        );
    }
    if runs(from, to, 2, 0) {
        let dups = find_all(
            db,
            "subscribers",
            doc! { "subscriberId": "e2e-dup", "deleted": { "$ne": true } },
        )
        .await?;
        let kept = dups.first().cloned().unwrap_or_default();
        r.promise(
            "remove-duplicated-subscribers",
            "one live e2e-dup subscriber is left: the oldest",
            dups.len() == 1 && kept.get_object_id("_id") == Ok(i.sub_dup_old),
            format!("{} live", dups.len()),
        );
        r.promise(
            "remove-duplicated-subscribers",
            "it holds the newer duplicate's fields (firstName New, phone)",
            kept.get_str("firstName") == Ok("New") && kept.get_str("phone") == Ok("+15550100"),
            format!("{kept}"),
        );
    }
    if runs(from, to, 2, 1) {
        for (kind, n) in [("WORKFLOW_RESOURCE", 2), ("USER_WORKFLOW", 2)] {
            let count = db
                .collection::<Document>("preferences")
                .count_documents(doc! { "type": kind })
                .await?;
            r.promise(
                "preference-centralization",
                &format!("one {kind} preference per workflow"),
                count == n,
                format!("{count} found"),
            );
        }
        let global = find_one(
            db,
            "preferences",
            doc! { "type": "SUBSCRIBER_GLOBAL", "_subscriberId": i.sub_alice },
        )
        .await;
        let sms = global
            .as_ref()
            .ok()
            .and_then(|g| path(g, "preferences.channels.sms.enabled").cloned());
        r.promise(
            "preference-centralization",
            "the global opt-out from SMS became a SUBSCRIBER_GLOBAL preference",
            sms == Some(Bson::Boolean(false)),
            format!("{global:?}"),
        );
        let per_workflow = find_one(
            db,
            "preferences",
            doc! { "type": "SUBSCRIBER_WORKFLOW", "_subscriberId": i.sub_alice, "_templateId": i.workflow_dev },
        )
        .await;
        let email = per_workflow
            .as_ref()
            .ok()
            .and_then(|p| path(p, "preferences.channels.email.enabled").cloned());
        r.promise(
            "preference-centralization",
            "the workflow opt-out from e-mail became a SUBSCRIBER_WORKFLOW preference",
            email == Some(Bson::Boolean(false)),
            format!("{per_workflow:?}"),
        );
    }
    if runs_patch(from, to, 2, 1, 1) {
        let names = db.list_collection_names().await?;
        r.promise(
            "drop-logs-collection",
            "the logs collection is gone",
            !names.iter().any(|n| n == "logs"),
            names.join(", "),
        );
    }
    if runs(from, to, 2, 3) {
        let t = find_one(db, "messagetemplates", doc! { "_id": i.msg_template_email }).await?;
        let body = path(&t, "controls.uiSchema.properties.body.component").cloned();
        let editor = path(&t, "controls.uiSchema.properties.editorType.component").cloned();
        r.promise(
            "email-step-ui-schema-html-editor",
            "the e-mail step's UI schema has the EMAIL_BODY body and the editor select",
            body == Some(Bson::String("EMAIL_BODY".into()))
                && editor == Some(Bson::String("EMAIL_EDITOR_SELECT".into())),
            format!("{body:?} {editor:?}"),
        );
    }
    if runs(from, to, 3, 11) {
        let t = find_one(db, "messagetemplates", doc! { "_id": i.msg_template_email }).await?;
        let schema = path(&t, "controls.schema.properties.layoutId").cloned();
        let ui = path(&t, "controls.uiSchema.properties.layoutId.component").cloned();
        r.promise(
            "add-layout-id-to-email-controls",
            "the e-mail step's controls carry a layoutId in schema and UI schema",
            schema.is_some() && ui == Some(Bson::String("LAYOUT_SELECT".into())),
            format!("{schema:?} {ui:?}"),
        );
    }
    if runs(from, to, 3, 12) {
        let links = find_all(db, "topicsubscribers", doc! {}).await?;
        let identifiers: Vec<Option<&str>> =
            links.iter().map(|l| l.get_str("identifier").ok()).collect();
        r.promise(
            "add-default-identifier-to-topic-subscribers",
            "every topic subscription has the identifier tk_<topic>:si_<subscriber>",
            identifiers
                .iter()
                .all(|x| *x == Some("tk_e2e-news:si_e2e-alice")),
            format!("{identifiers:?}"),
        );
        let ids: Vec<Option<bson::oid::ObjectId>> =
            links.iter().map(|l| l.get_object_id("_id").ok()).collect();
        r.promise(
            "remove-duplicate-identifiers",
            "alice's duplicate subscription is gone, the first one kept",
            ids == [Some(i.link_alice)],
            format!("{ids:?}"),
        );
    }
    // Nothing the scripts do removes organizations, users or environments (a second
    // organization with two environments exists from v0.4.0 on).
    let orgs = if *from >= Version::new(0, 4, 0) { 2 } else { 1 };
    for (collection, n) in [
        ("organizations", orgs),
        ("users", 2),
        ("environments", 2 * orgs),
    ] {
        let count = db
            .collection::<Document>(collection)
            .count_documents(doc! {})
            .await?;
        r.promise(
            "(all)",
            &format!("{collection} still holds {n} document(s)"),
            count == n,
            format!("{count}"),
        );
    }
    if !decrypt.is_empty() {
        for (label, ok, detail) in decrypt_in_node(&decrypt, key)? {
            r.promise(
                label.split(':').next().unwrap_or("?"),
                label.split_once(": ").map_or(label.as_str(), |x| x.1),
                ok,
                detail,
            );
        }
    }
    Ok(r.failed)
}

/// Decrypts with node's crypto exactly as Novu's cipher does; the key goes in the
/// environment, never in argv.
fn decrypt_in_node(
    items: &Decryptions,
    key: &str,
) -> Result<Vec<(String, bool, String)>, BoxError> {
    const SCRIPT: &str = r#"
const c = require('crypto');
const items = JSON.parse(require('fs').readFileSync(0, 'utf8'));
const key = Buffer.from(process.env.E2E_DECRYPT_KEY);
const out = items.map(([label, text, expected]) => {
  try {
    const body = text.startsWith('nvsk.') ? text.slice(5) : text;
    const [iv, ...rest] = body.split(':');
    const d = c.createDecipheriv('aes-256-cbc', key, Buffer.from(iv, 'hex'));
    const plain = Buffer.concat([d.update(Buffer.from(rest.join(':'), 'hex')), d.final()]).toString();
    return [label, plain === expected, plain === expected ? '' : 'decrypted to something else'];
  } catch (e) { return [label, false, String(e.message)]; }
});
console.log(JSON.stringify(out));
"#;
    let mut child = std::process::Command::new("node")
        .args(["-e", SCRIPT])
        .env("E2E_DECRYPT_KEY", key)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start node to decrypt: {e}"))?;
    let input = serde_json::to_vec(items)?;
    child.stdin.take().ok_or("no stdin")?.write_all(&input)?;
    let out = child.wait_with_output()?;
    if !out.status.success() {
        return Err(format!("node failed to decrypt: {}", out.status).into());
    }
    Ok(serde_json::from_slice(&out.stdout)?)
}
