//! Keeping secrets out of output: where a secret is redacted.
//!
//! - `uri.rs`: [`Uri`], a connection string or URL parsed once, whose `Display`/`Debug` never
//!   show a password or token: the one rule for URIs (`redact_uri` and `uri_secrets` below are
//!   shorthands for it);
//! - here: `scrub` and `replace_secrets`, for text from a driver or child that may echo a secret.
//!
//! Anything upstep prints, logs or journals that came from a connection string is shown
//! redacted; error text from a driver goes through `scrub` with the secrets it may hold.

mod uri;

#[cfg(test)]
use uri::percent_decode;
pub use uri::{Uri, MASK};

/// A URI as upstep shows it: `scheme://user:password@host/db?x=y` -> `scheme://user:****@host/db?x=y`
/// (the rule is [`Uri`]'s).
pub fn redact_uri(uri: &str) -> String {
    Uri::new(uri).redacted()
}

/// The secrets in a URI's user info, raw and percent-decoded, for `scrub`.
pub fn uri_secrets(uri: &str) -> Vec<String> {
    Uri::new(uri).secrets()
}

/// Replaces every occurrence of each secret in `text` with `****`, and redacts URIs in it.
pub fn scrub(text: &str, secrets: &[String]) -> String {
    replace_secrets(text.to_string(), secrets)
        .split(' ')
        .map(|word| {
            if word.contains("://") && word.contains('@') {
                redact_uri(word)
            } else {
                word.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Replaces every occurrence of each non-empty secret with `****` (cheap when none occurs:
/// it runs on every line a script prints).
pub fn replace_secrets(mut text: String, secrets: &[String]) -> String {
    for secret in secrets.iter().filter(|s| !s.is_empty()) {
        if text.contains(secret.as_str()) {
            text = text.replace(secret.as_str(), MASK);
        }
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_passwords_in_uris() {
        let table: &[(&str, &str)] = &[
            (
                "mongodb://novu:CanaryPw-7f3a9@db.example:27017/novu-db?authSource=admin",
                "mongodb://novu:****@db.example:27017/novu-db?authSource=admin",
            ),
            (
                "redis://:CanaryPw-7f3a9@127.0.0.1:6379/2",
                "redis://:****@127.0.0.1:6379/2",
            ),
            ("rediss://user:pw@host", "rediss://user:****@host"),
            (
                "mongodb+srv://u:p%40ss@cluster0.example.net/db",
                "mongodb+srv://u:****@cluster0.example.net/db",
            ),
            // Unencoded `@`, `:` and `/` in the password.
            ("mongodb://u:p@ss:w@host/db", "mongodb://u:****@host/db"),
            ("mongodb://u:pa/ss@host/db", "mongodb://u:****@host/db"),
            ("mongodb://u:pa?ss@host/db", "mongodb://u:****@host/db"),
            // A port, then an `@` in the path: no user info.
            ("https://h:8080/a@b", "https://h:8080/a@b"),
            // Several hosts, no password, no credentials.
            (
                "mongodb://a:1,b:2/db?replicaSet=rs0",
                "mongodb://a:1,b:2/db?replicaSet=rs0",
            ),
            ("mongodb://user@host/db", "mongodb://user@host/db"),
            ("mongodb://127.0.0.1:27017", "mongodb://127.0.0.1:27017"),
            // Secrets in the query.
            (
                "mongodb://h/db?tlsCertificateKeyFilePassword=CanaryPw&w=1",
                "mongodb://h/db?tlsCertificateKeyFilePassword=****&w=1",
            ),
            (
                "mongodb://h/db?authMechanism=MONGODB-AWS&authMechanismProperties=AWS_SESSION_TOKEN:CanaryPw",
                "mongodb://h/db?authMechanism=MONGODB-AWS&authMechanismProperties=****",
            ),
            ("", ""),
            ("not a uri", "not a uri"),
        ];
        for (uri, expected) in table {
            assert_eq!(redact_uri(uri), *expected, "{uri}");
        }
    }

    #[test]
    fn finds_uri_secrets_raw_and_decoded() {
        assert_eq!(
            uri_secrets("mongodb://u:p%40ss@h/db"),
            vec!["p%40ss", "p@ss"]
        );
        assert_eq!(uri_secrets("redis://:pw@h:1"), vec!["pw"]);
        assert!(uri_secrets("mongodb://h/db").is_empty());
        assert!(uri_secrets("mongodb://u@h/db").is_empty());
    }

    #[test]
    fn scrubs_secrets_and_uris_from_text() {
        let text = "auth failed for mongodb://u:CanaryPw-7f3a9@h/db (password CanaryPw-7f3a9)";
        let scrubbed = scrub(text, &["CanaryPw-7f3a9".to_string()]);
        assert!(!scrubbed.contains("CanaryPw"), "{scrubbed}");
        assert!(!scrub("x mongodb://u:other@h/db", &[]).contains("other"));
        // Odd percent signs never panic.
        assert_eq!(percent_decode("%"), "%");
        assert_eq!(percent_decode("a%4"), "a%4");
        assert_eq!(percent_decode("%zz%41"), "%zzA");
    }
}
