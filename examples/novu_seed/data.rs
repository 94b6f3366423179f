//! A small Novu database "as of release X": for every legacy migration script, one or more
//! documents in the collections and field shapes the script reads at its tag (read from each
//! script at its tag in novuhq/novu), migrated for the scripts at or before X and still in the
//! old shape for the scripts after X. So an upgrade from X exercises exactly the scripts after X.
//!
//! Pure data (no I/O): `scripts/novu-e2e.sh` writes it through the `novu_seed` example, and the
//! integration tests check it against the release map's data checks.

use bson::{doc, oid::ObjectId, Bson, DateTime, Document};
use semver::Version;

/// The 32-character STORE_ENCRYPTION_KEY every seeded ciphertext is made with. A run must
/// pass the same key, or the migrated and seeded secrets could not be read back together.
pub const E2E_KEY: &str = "upstep-e2e-store-encryption-key!";

/// A seeded secret: its plaintext, and the ciphertext Novu's cipher makes of it with
/// `E2E_KEY` (AES-256-CBC, `nvsk.<iv hex>:<data hex>`, with a fixed IV so the seed is
/// reproducible), and the sha256 the API-key migration stores beside it.
pub struct Secret {
    pub name: &'static str,
    pub plain: &'static str,
    pub encrypted: &'static str,
    pub sha256: &'static str,
}

pub const SENDGRID_KEY: Secret = Secret {
    name: "sendgrid apiKey",
    plain: "SG.e2e-sendgrid-secret",
    encrypted: "nvsk.01010101010101010101010101010101:3b501718a56b906abf0b466fc53671619393e35584f987d9b56fcc27e603cf56",
    sha256: "4023d6735456c43945ec4a7a8803452e8ce149310a23e5ded9aa3533b2d64717",
};
pub const SMTP_PASSWORD: Secret = Secret {
    name: "nodemailer password",
    plain: "e2e-smtp-password",
    encrypted: "nvsk.02020202020202020202020202020202:45805d41f456515ef87e1983d9fcf3f28470857720899ba314c95b164dfb1903",
    sha256: "ed4369c3b765dd3b60be56e13262807561ed310f0b6a02b927600a92a887086c",
};
pub const FCM_ACCOUNT: Secret = Secret {
    name: "fcm serviceAccount",
    plain: r#"{"project_id":"acme-e2e"}"#,
    encrypted: "nvsk.03030303030303030303030303030303:7f5a822298d9fcfb6008fe87053fe9cf8baac75288e5fccba38bc6a4dfad3245",
    sha256: "1cfb91a0bc0240ef99b6e784b9cd8c47c5e298766eeff5de5370fa821e710e2f",
};
pub const API_KEY_DEV: Secret = Secret {
    name: "Development API key",
    plain: "e2e-api-key-development-0001",
    encrypted: "nvsk.04040404040404040404040404040404:a91df5aa24a170b8c641e5a9ed86ee9fc4a124122721fd25cdbc5431504b0480",
    sha256: "85c9afb37c55bd2f08830185c87de39405b19de8919afa634f846530046e03cb",
};
pub const API_KEY_PROD: Secret = Secret {
    name: "Production API key",
    plain: "e2e-api-key-production-0002",
    encrypted: "nvsk.05050505050505050505050505050505:51795d7af2d96d7822b686adb38aab649cbb0aab1d3bc205a96843619a62289b",
    sha256: "abc71e2e44282d2bde9bc54bbb85b5f7ad7e2d74bf18b878bee67925429c79e9",
};

/// Fixed ids, so checks after the run can find the seeded documents again.
pub struct Ids {
    pub org: ObjectId,
    pub user_jane: ObjectId,
    pub user_bob: ObjectId,
    pub member: ObjectId,
    pub env_dev: ObjectId,
    pub env_prod: ObjectId,
    pub group_dev: ObjectId,
    pub group_prod: ObjectId,
    pub msg_template_dev: ObjectId,
    pub msg_template_prod: ObjectId,
    pub workflow_dev: ObjectId,
    pub workflow_prod: ObjectId,
    pub sendgrid: ObjectId,
    pub nodemailer: ObjectId,
    pub fcm: ObjectId,
    pub mailgun_deleted: ObjectId,
    pub in_app_dev: ObjectId,
    pub in_app_prod: ObjectId,
    pub novu_email_dev: ObjectId,
    pub novu_email_prod: ObjectId,
    pub novu_sms_dev: ObjectId,
    pub novu_sms_prod: ObjectId,
    pub sub_alice: ObjectId,
    pub sub_dup_old: ObjectId,
    pub sub_dup_new: ObjectId,
    pub sub_dup_deleted: ObjectId,
    pub sub_gone: ObjectId,
    pub topic: ObjectId,
    pub link_alice: ObjectId,
    pub link_ghost: ObjectId,
    pub link_gone: ObjectId,
    pub layout_dev: ObjectId,
    pub layout_prod: ObjectId,
    pub notification: ObjectId,
    pub msg_in_app: ObjectId,
    pub msg_email: ObjectId,
    pub job: ObjectId,
    pub pref_template: ObjectId,
    pub pref_global: ObjectId,
    /// A second organization (from v0.4.0 on) with both environments but no layout: Novu's
    /// per-organization loops must cope with it.
    pub org2: ObjectId,
    pub org2_member: ObjectId,
    pub org2_env_dev: ObjectId,
    pub org2_env_prod: ObjectId,
    pub msg_template_email: ObjectId,
    pub link_alice_again: ObjectId,
}

fn oid(n: u8) -> ObjectId {
    let mut bytes = [0u8; 12];
    // "e2e" marker, then the number: readable in a shell, never colliding with real ids.
    bytes[..3].copy_from_slice(&[0x0e, 0x2e, 0x00]);
    bytes[11] = n;
    ObjectId::from_bytes(bytes)
}

pub fn ids() -> Ids {
    Ids {
        org: oid(1),
        user_jane: oid(2),
        user_bob: oid(3),
        member: oid(4),
        env_dev: oid(5),
        env_prod: oid(6),
        group_dev: oid(7),
        group_prod: oid(8),
        msg_template_dev: oid(9),
        msg_template_prod: oid(10),
        workflow_dev: oid(11),
        workflow_prod: oid(12),
        sendgrid: oid(13),
        nodemailer: oid(14),
        fcm: oid(15),
        mailgun_deleted: oid(16),
        in_app_dev: oid(17),
        in_app_prod: oid(18),
        novu_email_dev: oid(19),
        novu_email_prod: oid(20),
        novu_sms_dev: oid(21),
        novu_sms_prod: oid(22),
        sub_alice: oid(23),
        sub_dup_old: oid(24),
        sub_dup_new: oid(25),
        sub_dup_deleted: oid(26),
        sub_gone: oid(27),
        topic: oid(28),
        link_alice: oid(29),
        link_ghost: oid(30),
        link_gone: oid(31),
        layout_dev: oid(32),
        layout_prod: oid(33),
        notification: oid(34),
        msg_in_app: oid(35),
        msg_email: oid(36),
        job: oid(37),
        pref_template: oid(38),
        pref_global: oid(39),
        org2: oid(40),
        org2_member: oid(41),
        org2_env_dev: oid(42),
        org2_env_prod: oid(43),
        msg_template_email: oid(44),
        link_alice_again: oid(45),
    }
}

/// Seconds since the epoch of 2022-05-01: every seeded date is after it.
const T0_MS: i64 = 1_651_363_200_000;
const DAY_MS: i64 = 86_400_000;

fn day(n: i64) -> DateTime {
    DateTime::from_millis(T0_MS + n * DAY_MS)
}

/// The state of the data "as of" one release: `applied(v)` says whether the scripts
/// introduced in release `v` have run.
pub struct AsOf(pub Version);

impl AsOf {
    pub fn applied(&self, major: u64, minor: u64) -> bool {
        self.0 >= Version::new(major, minor, 0)
    }

    /// `applied` for a patch release (drop-logs-collection ships in v2.1.1).
    pub fn applied_patch(&self, major: u64, minor: u64, patch: u64) -> bool {
        self.0 >= Version::new(major, minor, patch)
    }
}

/// Every collection's documents as of `as_of` (collection names are Mongoose's plural
/// lower-case names, as Novu's DAL creates them).
pub fn documents(as_of: &Version) -> Vec<(&'static str, Vec<Document>)> {
    let a = AsOf(as_of.clone());
    let i = ids();
    let mut out: Vec<(&'static str, Vec<Document>)> = Vec::new();
    // changes-migration (v0.4.0) created the Production environment and linked copies of the
    // groups and templates; before it, an organization has Development only.
    let has_prod = a.applied(0, 4);

    let mut orgs =
        vec![doc! { "_id": i.org, "name": "Acme E2E", "createdAt": day(0), "updatedAt": day(0) }];
    if has_prod {
        orgs.push(
            doc! { "_id": i.org2, "name": "Beta E2E", "createdAt": day(1), "updatedAt": day(1) },
        );
    }
    out.push(("organizations", orgs));
    // normalize-users-email (v0.12.0): mixed case, googlemail, dots and +tags.
    let (jane, bob) = if a.applied(0, 12) {
        ("janedoe@gmail.com", "bob@acme.io")
    } else {
        ("Jane.Doe+news@GoogleMail.com", "Bob@Acme.IO")
    };
    out.push((
        "users",
        vec![
            doc! { "_id": i.user_jane, "firstName": "Jane", "lastName": "Doe", "email": jane, "createdAt": day(0), "updatedAt": day(0) },
            doc! { "_id": i.user_bob, "firstName": "Bob", "lastName": "Builder", "email": bob, "createdAt": day(1), "updatedAt": day(1) },
        ],
    ));
    let mut members = vec![
        doc! { "_id": i.member, "_organizationId": i.org, "_userId": i.user_jane, "roles": ["admin"], "memberStatus": "active", "createdAt": day(0), "updatedAt": day(0) },
    ];
    if has_prod {
        members.push(doc! { "_id": i.org2_member, "_organizationId": i.org2, "_userId": i.user_bob, "roles": ["admin"], "memberStatus": "active", "createdAt": day(1), "updatedAt": day(1) });
    }
    out.push(("members", members));

    // encrypt-api-keys runs at v2.0.0 (introduced in v0.23.0 as an export only).
    let api_key = |s: &Secret| {
        if a.applied(2, 0) {
            doc! { "key": s.encrypted, "hash": s.sha256, "_userId": i.user_jane }
        } else {
            doc! { "key": s.plain, "_userId": i.user_jane }
        }
    };
    let mut envs = vec![doc! {
        "_id": i.env_dev, "name": "Development", "identifier": "e2e-dev-identifier",
        "_organizationId": i.org, "apiKeys": [api_key(&API_KEY_DEV)],
        "widget": { "notificationCenterEncryption": false },
        "createdAt": day(0), "updatedAt": day(0),
    }];
    if has_prod {
        envs.push(doc! {
            "_id": i.env_prod, "name": "Production", "identifier": "e2e-prod-identifier",
            "_organizationId": i.org, "_parentId": i.env_dev, "apiKeys": [api_key(&API_KEY_PROD)],
            "widget": { "notificationCenterEncryption": false },
            "createdAt": day(1), "updatedAt": day(1),
        });
    }
    if has_prod {
        // The second organization's environments hold no API key (nothing to encrypt).
        envs.push(doc! {
            "_id": i.org2_env_dev, "name": "Development", "identifier": "e2e-org2-dev",
            "_organizationId": i.org2, "widget": { "notificationCenterEncryption": false },
            "createdAt": day(1), "updatedAt": day(1),
        });
        envs.push(doc! {
            "_id": i.org2_env_prod, "name": "Production", "identifier": "e2e-org2-prod",
            "_organizationId": i.org2, "_parentId": i.org2_env_dev,
            "widget": { "notificationCenterEncryption": false },
            "createdAt": day(1), "updatedAt": day(1),
        });
    }
    out.push(("environments", envs));

    // Groups, message templates and workflows: changes-migration promotes them to Production;
    // the CTA scripts (v0.24.0) normalise an empty `cta.action`.
    let cta_action = if a.applied(0, 24) {
        Bson::Document(doc! {})
    } else {
        Bson::String(String::new())
    };
    let mut groups = vec![
        doc! { "_id": i.group_dev, "name": "General", "_organizationId": i.org, "_environmentId": i.env_dev, "createdAt": day(0), "updatedAt": day(0) },
    ];
    let message_template = |id: ObjectId, env: ObjectId, parent: Option<ObjectId>| {
        let mut d = doc! {
            "_id": id, "type": "in_app", "content": "Welcome {{firstName}}", "_organizationId": i.org,
            "_environmentId": env, "_creatorId": i.user_jane,
            "cta": { "type": "redirect", "data": { "url": "/welcome" }, "action": cta_action.clone() },
            "createdAt": day(2), "updatedAt": day(2),
        };
        if let Some(p) = parent {
            d.insert("_parentId", p);
        }
        d
    };
    let workflow = |id: ObjectId,
                    env: ObjectId,
                    group: ObjectId,
                    mt: ObjectId,
                    parent: Option<ObjectId>| {
        let mut d = doc! {
            "_id": id, "name": "Welcome", "active": true, "draft": false, "_organizationId": i.org,
            "_environmentId": env, "_creatorId": i.user_jane, "_notificationGroupId": group,
            "triggers": [{ "type": "event", "identifier": "welcome", "variables": [] }],
            "steps": [{ "_templateId": mt, "active": true }],
            "critical": false,
            "preferenceSettings": { "email": true, "sms": true, "in_app": true, "chat": true, "push": true },
            "createdAt": day(2), "updatedAt": day(2),
        };
        if let Some(p) = parent {
            d.insert("_parentId", p);
        }
        d
    };
    let mut message_templates = vec![message_template(i.msg_template_dev, i.env_dev, None)];
    let mut workflows = vec![workflow(
        i.workflow_dev,
        i.env_dev,
        i.group_dev,
        i.msg_template_dev,
        None,
    )];
    if has_prod {
        groups.push(doc! { "_id": i.group_prod, "name": "General", "_organizationId": i.org, "_environmentId": i.env_prod, "_parentId": i.group_dev, "createdAt": day(1), "updatedAt": day(1) });
        message_templates.push(message_template(
            i.msg_template_prod,
            i.env_prod,
            Some(i.msg_template_dev),
        ));
        workflows.push(workflow(
            i.workflow_prod,
            i.env_prod,
            i.group_prod,
            i.msg_template_prod,
            Some(i.workflow_dev),
        ));
    }
    if a.applied(2, 0) {
        message_templates.push(email_step_template(&a, &i));
    }
    out.push(("notificationgroups", groups));
    out.push(("messagetemplates", message_templates));
    out.push(("notificationtemplates", workflows));

    out.push(("integrations", integrations(&a, &i, has_prod)));
    out.push(("subscribers", subscribers(&a, &i)));
    out.push((
        "topics",
        vec![
            doc! { "_id": i.topic, "key": "e2e-news", "name": "News", "_organizationId": i.org, "_environmentId": i.env_dev, "createdAt": day(3), "updatedAt": day(3) },
        ],
    ));
    // topic-subscriber-normalize (v0.24.0) deletes links whose subscriber is missing or
    // soft-deleted; the link to a live subscriber stays.
    // add-default-identifier-to-topic-subscribers (v3.12.0) gives each link the identifier
    // `tk_<topicKey>:si_<subscriberId>`; remove-duplicate-identifiers (v3.12.0) then deletes
    // all but the first link of one identifier: alice subscribed twice (seeded from v2.0.0).
    let link = |id: ObjectId, sub: ObjectId, external: &str| {
        let mut d = doc! { "_id": id, "_topicId": i.topic, "topicKey": "e2e-news", "_subscriberId": sub, "externalSubscriberId": external, "_organizationId": i.org, "_environmentId": i.env_dev, "createdAt": day(3), "updatedAt": day(3) };
        if a.applied(3, 12) {
            d.insert("identifier", format!("tk_e2e-news:si_{external}"));
        }
        d
    };
    let mut links = vec![link(i.link_alice, i.sub_alice, "e2e-alice")];
    if !a.applied(0, 24) {
        links.push(link(i.link_ghost, oid(200), "e2e-ghost"));
        links.push(link(i.link_gone, i.sub_gone, "e2e-gone"));
    }
    if a.applied(2, 0) && !a.applied(3, 12) {
        links.push(link(i.link_alice_again, i.sub_alice, "e2e-alice"));
    }
    out.push(("topicsubscribers", links));

    // add-layout-identifier (v0.19.0): a layout and its Production copy without identifier.
    let layout = |id: ObjectId, env: ObjectId, parent: Option<ObjectId>| {
        let mut d = doc! {
            "_id": id, "name": "Default Layout", "content": "<div>{{{body}}}</div>", "contentType": "customHtml",
            "channel": "email", "isDefault": true, "deleted": false, "_organizationId": i.org,
            "_environmentId": env, "_creatorId": i.user_jane, "createdAt": day(4), "updatedAt": day(4),
        };
        if let Some(p) = parent {
            d.insert("_parentId", p);
        }
        if a.applied(0, 19) {
            d.insert("identifier", "default-layout-e2e");
        }
        d
    };
    let mut layouts = vec![layout(i.layout_dev, i.env_dev, None)];
    if has_prod {
        layouts.push(layout(i.layout_prod, i.env_prod, Some(i.layout_dev)));
    }
    out.push(("layouts", layouts));

    out.push(("notifications", vec![with_expiry(&a, doc! { "_id": i.notification, "_organizationId": i.org, "_environmentId": i.env_dev, "_templateId": i.workflow_dev, "_subscriberId": i.sub_alice, "transactionId": "e2e-tx-1", "channels": ["in_app", "email"], "createdAt": day(5), "updatedAt": day(5) })]));
    out.push(("jobs", vec![with_expiry(&a, doc! { "_id": i.job, "_organizationId": i.org, "_environmentId": i.env_dev, "_notificationId": i.notification, "_templateId": i.workflow_dev, "_subscriberId": i.sub_alice, "transactionId": "e2e-tx-1", "status": "completed", "type": "in_app", "createdAt": day(5), "updatedAt": day(5) })]));
    out.push(("messages", messages(&a, &i, &cta_action)));

    // subscriber-preferences-level (v0.20.0): a template-level preference without `level`.
    let mut pref = doc! { "_id": i.pref_template, "_organizationId": i.org, "_environmentId": i.env_dev, "_subscriberId": i.sub_alice, "_templateId": i.workflow_dev, "enabled": true, "channels": { "email": false, "in_app": true }, "createdAt": day(6), "updatedAt": day(6) };
    let mut prefs = Vec::new();
    if a.applied(0, 20) {
        pref.insert("level", "template");
        prefs.push(doc! { "_id": i.pref_global, "_organizationId": i.org, "_environmentId": i.env_dev, "_subscriberId": i.sub_alice, "level": "global", "enabled": true, "channels": { "sms": false }, "createdAt": day(6), "updatedAt": day(6) });
    }
    prefs.insert(0, pref);
    out.push(("subscriberpreferences", prefs));
    // preference-centralization (v2.1.0) writes `preferences` from the workflows and the
    // subscriber preferences above (it leaves subscriberpreferences in place).
    if a.applied(2, 1) {
        out.push(("preferences", centralized_preferences(&i)));
    }
    // drop-logs-collection (v2.1.1) drops `logs`.
    if !a.applied_patch(2, 1, 1) {
        out.push((
            "logs",
            vec![doc! { "_id": oid(60), "_organizationId": i.org, "_environmentId": i.env_dev, "text": "an old execution log line", "createdAt": day(7) }],
        ));
    }
    out
}

/// A v2 e-mail step's template with its controls: its UI schema gets the HTML editor at
/// v2.3.0 (email-step-ui-schema-html-editor), and a layoutId at v3.11.0
/// (add-layout-id-to-email-controls).
fn email_step_template(a: &AsOf, i: &Ids) -> Document {
    let mut schema = doc! { "type": "object", "properties": { "subject": { "type": "string" }, "body": { "type": "string" } }, "required": ["subject", "body"] };
    let mut ui = doc! { "group": "EMAIL", "properties": { "subject": { "component": "TEXT_FULL_LINE" }, "body": { "component": "BLOCK_EDITOR" } } };
    if a.applied(2, 3) {
        let props = ui.get_document_mut("properties").expect("seeded");
        props.insert("body", doc! { "component": "EMAIL_BODY" });
        props.insert(
            "editorType",
            doc! { "component": "EMAIL_EDITOR_SELECT", "placeholder": "block" },
        );
    }
    if a.applied(3, 11) {
        schema
            .get_document_mut("properties")
            .expect("seeded")
            .insert("layoutId", doc! { "type": ["string", "null"] });
        ui.get_document_mut("properties")
            .expect("seeded")
            .insert("layoutId", doc! { "component": "LAYOUT_SELECT" });
    }
    doc! {
        "_id": i.msg_template_email, "type": "email", "stepId": "send-email", "_organizationId": i.org,
        "_environmentId": i.env_dev, "_creatorId": i.user_jane, "deleted": false,
        "controls": { "schema": schema, "uiSchema": ui },
        "content": "", "subject": "Hello", "createdAt": day(8), "updatedAt": day(8),
    }
}

/// What preference-centralization writes for the seeded workflows and preferences.
fn centralized_preferences(i: &Ids) -> Vec<Document> {
    let channels = |off: &str| {
        let mut c = Document::new();
        for ch in ["email", "sms", "in_app", "chat", "push"] {
            c.insert(ch, doc! { "enabled": ch != off });
        }
        doc! { "all": { "enabled": true, "readOnly": false }, "channels": c }
    };
    let mut out = Vec::new();
    for (n, (wf, env)) in [(i.workflow_dev, i.env_dev), (i.workflow_prod, i.env_prod)]
        .into_iter()
        .enumerate()
    {
        let n = n as u8;
        out.push(doc! { "_id": oid(70 + 2 * n), "type": "WORKFLOW_RESOURCE", "_templateId": wf, "_environmentId": env, "_organizationId": i.org, "preferences": channels(""), "createdAt": day(9), "updatedAt": day(9) });
        out.push(doc! { "_id": oid(71 + 2 * n), "type": "USER_WORKFLOW", "_templateId": wf, "_userId": i.user_jane, "_environmentId": env, "_organizationId": i.org, "preferences": channels(""), "createdAt": day(9), "updatedAt": day(9) });
    }
    out.push(doc! { "_id": oid(74), "type": "SUBSCRIBER_GLOBAL", "_subscriberId": i.sub_alice, "_environmentId": i.env_dev, "_organizationId": i.org, "preferences": channels("sms"), "createdAt": day(9), "updatedAt": day(9) });
    out.push(doc! { "_id": oid(75), "type": "SUBSCRIBER_WORKFLOW", "_subscriberId": i.sub_alice, "_templateId": i.workflow_dev, "_environmentId": i.env_dev, "_organizationId": i.org, "preferences": channels("email"), "createdAt": day(9), "updatedAt": day(9) });
    out
}

/// expire-at (v0.15.0) adds `expireAt`.
fn with_expiry(a: &AsOf, mut d: Document) -> Document {
    if a.applied(0, 15) {
        d.insert("expireAt", day(400));
    }
    d
}

fn messages(a: &AsOf, i: &Ids, cta_action: &Bson) -> Vec<Document> {
    let base = |id: ObjectId, channel: &str| {
        doc! {
            "_id": id, "_organizationId": i.org, "_environmentId": i.env_dev, "_notificationId": i.notification,
            "_subscriberId": i.sub_alice, "_templateId": i.workflow_dev, "_messageTemplateId": i.msg_template_dev,
            "transactionId": "e2e-tx-1", "channel": channel, "content": "Welcome Alice",
            "createdAt": day(5), "updatedAt": day(5),
        }
    };
    let mut in_app = base(i.msg_in_app, "in_app");
    in_app.insert(
        "cta",
        doc! { "type": "redirect", "data": { "url": "/welcome" }, "action": cta_action.clone() },
    );
    let mut email = base(i.msg_email, "email");
    // seen-read-support (v0.9.0): `seen` meant "read" before it; it becomes `read`, and every
    // message gets the new `seen` (true for in-app, false for the other channels).
    if a.applied(0, 9) {
        in_app.insert("read", false);
        in_app.insert("seen", true);
        email.insert("seen", false);
    } else {
        in_app.insert("seen", false);
    }
    vec![with_expiry(a, in_app), with_expiry(a, email)]
}

fn subscribers(a: &AsOf, i: &Ids) -> Vec<Document> {
    let sub = |id: ObjectId, subscriber_id: &str, updated: i64| {
        doc! {
            "_id": id, "subscriberId": subscriber_id, "_organizationId": i.org, "_environmentId": i.env_dev,
            "channels": [], "deleted": false, "createdAt": day(updated), "updatedAt": day(updated),
        }
    };
    let mut alice = sub(i.sub_alice, "e2e-alice", 3);
    alice.insert("firstName", "Alice");
    alice.insert("email", "alice@acme.io");
    // remove-duplicated-subscribers (v2.0.0): two live records and a soft-deleted one with one
    // subscriberId. It merges them into the oldest (newer non-empty fields win) and
    // soft-deletes the others.
    let merged = a.applied(2, 0);
    let mut old = sub(i.sub_dup_old, "e2e-dup", 3);
    old.insert("firstName", if merged { "New" } else { "Old" });
    old.insert("email", "dup-old@acme.io");
    if merged {
        old.insert("phone", "+15550100");
    }
    let mut new = sub(i.sub_dup_new, "e2e-dup", 4);
    new.insert("firstName", "New");
    new.insert("phone", "+15550100");
    if merged {
        new.insert("deleted", true);
        new.insert("deletedAt", day(9));
    }
    let mut deleted = sub(i.sub_dup_deleted, "e2e-dup", 5);
    deleted.insert("deleted", true);
    deleted.insert("deletedAt", day(5));
    let mut gone = sub(i.sub_gone, "e2e-gone", 3);
    gone.insert("deleted", true);
    gone.insert("deletedAt", day(4));
    vec![alice, old, new, deleted, gone]
}

#[allow(clippy::too_many_arguments)]
fn integration_in(
    org: ObjectId,
    id: ObjectId,
    env: ObjectId,
    provider: &str,
    channel: &str,
    active: bool,
    credentials: Document,
    created: i64,
) -> Document {
    doc! {
        "_id": id, "_organizationId": org, "_environmentId": env, "providerId": provider,
        "channel": channel, "credentials": credentials, "active": active, "deleted": false,
        "createdAt": day(created), "updatedAt": day(created),
    }
}

fn integrations(a: &AsOf, i: &Ids, has_prod: bool) -> Vec<Document> {
    // encrypt-credentials (v0.8.0) encrypts the secret credentials with the store key.
    let secret = |s: &Secret| {
        if a.applied(0, 8) {
            s.encrypted
        } else {
            s.plain
        }
    };
    let integration = |id: ObjectId,
                       env: ObjectId,
                       provider: &str,
                       channel: &str,
                       active: bool,
                       credentials: Document,
                       created: i64| {
        integration_in(
            i.org,
            id,
            env,
            provider,
            channel,
            active,
            credentials,
            created,
        )
    };
    let mut out = Vec::new();
    out.push((
        integration(
            i.sendgrid,
            i.env_dev,
            "sendgrid",
            "email",
            true,
            doc! { "apiKey": secret(&SENDGRID_KEY), "from": "noreply@acme.io", "senderName": "Acme" },
            2,
        ),
        ("SendGrid", "sendgrid-e2e", true, 1),
    ));
    // secure-to-boolean (v0.16.0): `secure` stored as a string.
    let secure = if a.applied(0, 16) {
        Bson::Boolean(true)
    } else {
        Bson::String("true".into())
    };
    out.push((
        integration(
            i.nodemailer,
            i.env_dev,
            "nodemailer",
            "email",
            false,
            doc! { "user": "mailer", "password": secret(&SMTP_PASSWORD), "host": "smtp.acme.io", "port": "587", "secure": secure, "from": "noreply@acme.io" },
            1,
        ),
        ("Nodemailer", "nodemailer-e2e", false, 0),
    ));
    // fcm-credentials (v0.8.0) renames credentials.user to serviceAccount, which
    // encrypt-credentials then encrypts.
    let fcm_credentials = if a.applied(0, 8) {
        doc! { "serviceAccount": FCM_ACCOUNT.encrypted }
    } else {
        doc! { "user": FCM_ACCOUNT.plain }
    };
    out.push((
        integration(i.fcm, i.env_dev, "fcm", "push", true, fcm_credentials, 2),
        ("Firebase Cloud Messaging", "fcm-e2e", false, 0),
    ));
    // The second organization's environments get what the in-app and Novu-integration
    // scripts create in every environment (it has no e-mail provider of its own).
    if has_prod {
        for (n, env) in [(44u8, i.org2_env_dev), (45, i.org2_env_prod)] {
            let service =
                |id: u8, provider: &str, channel: &str, credentials: Document, created: i64| {
                    integration_in(
                        i.org2,
                        oid(id),
                        env,
                        provider,
                        channel,
                        true,
                        credentials,
                        created,
                    )
                };
            if a.applied(0, 16) {
                out.push((
                    service(n, "novu", "in_app", doc! { "hmac": false }, 7),
                    ("Novu In-App", "novu-in-app-e2e-org2", false, 0),
                ));
            }
            if a.applied(0, 18) {
                out.push((
                    service(n + 10, "novu-email", "email", doc! {}, 8),
                    ("Novu Email", "novu-email-e2e-org2", true, 1),
                ));
                out.push((
                    service(n + 20, "novu-sms", "sms", doc! {}, 8),
                    ("Novu SMS", "novu-sms-e2e-org2", true, 1),
                ));
            }
        }
    }
    if a.applied(0, 16) {
        // in-app-integration (v0.16.0) created these.
        out.push((
            integration(
                i.in_app_dev,
                i.env_dev,
                "novu",
                "in_app",
                true,
                doc! { "hmac": false },
                7,
            ),
            ("Novu In-App", "novu-in-app-e2e-dev", false, 0),
        ));
        if has_prod {
            out.push((
                integration(
                    i.in_app_prod,
                    i.env_prod,
                    "novu",
                    "in_app",
                    true,
                    doc! { "hmac": false },
                    7,
                ),
                ("Novu In-App", "novu-in-app-e2e-prod", false, 0),
            ));
        }
    }
    if a.applied(0, 18) {
        // novu-integrations (v0.18.0) created these: e-mail inactive where another e-mail
        // provider is active. update-primary-for-disabled-novu-integrations (v0.19.0) fixes
        // the primary flag a v0.18.0 upgrade left on the inactive one.
        let inactive_primary = !a.applied(0, 19);
        out.push((
            integration(
                i.novu_email_dev,
                i.env_dev,
                "novu-email",
                "email",
                false,
                doc! {},
                8,
            ),
            ("Novu Email", "novu-email-e2e-dev", inactive_primary, 0),
        ));
        out.push((
            integration(
                i.novu_sms_dev,
                i.env_dev,
                "novu-sms",
                "sms",
                true,
                doc! {},
                8,
            ),
            ("Novu SMS", "novu-sms-e2e-dev", true, 1),
        ));
        if has_prod {
            out.push((
                integration(
                    i.novu_email_prod,
                    i.env_prod,
                    "novu-email",
                    "email",
                    true,
                    doc! {},
                    8,
                ),
                ("Novu Email", "novu-email-e2e-prod", true, 1),
            ));
            out.push((
                integration(
                    i.novu_sms_prod,
                    i.env_prod,
                    "novu-sms",
                    "sms",
                    true,
                    doc! {},
                    8,
                ),
                ("Novu SMS", "novu-sms-e2e-prod", true, 1),
            ));
        }
    }
    let mut docs: Vec<Document> = out
        .into_iter()
        .map(|(mut d, (name, identifier, primary, priority))| {
            // add-integration-identifier (v0.17.0) and add-primary-priority (v0.18.0).
            if a.applied(0, 17) {
                d.insert("name", name);
                d.insert("identifier", identifier);
            }
            if a.applied(0, 18) {
                d.insert("primary", primary);
                d.insert("priority", priority);
            }
            d
        })
        .collect();
    // A soft-deleted integration: the DAL hides it from every script, so its plaintext key
    // stays (and the data checks must not count it).
    docs.push(doc! {
        "_id": i.mailgun_deleted, "_organizationId": i.org, "_environmentId": i.env_dev,
        "providerId": "mailgun", "channel": "email", "credentials": { "apiKey": "key-deleted-plaintext" },
        "active": false, "deleted": true, "deletedAt": day(3), "createdAt": day(1), "updatedAt": day(3),
    });
    docs
}
