//! Keeping secrets out of output: URIs with passwords, and driver messages that might echo them.
//!
//! Anything upstep prints, logs or journals that came from a connection string goes through
//! `redact_uri` first; error text from a driver goes through `scrub` with the secrets it may hold.

/// What a hidden secret is shown as.
pub const MASK: &str = "****";

/// Query parameters whose values are secrets (matched case-insensitively, by substring).
/// `authMechanismProperties` may carry an AWS session token.
const SECRET_PARAMS: [&str; 5] = [
    "password",
    "secret",
    "token",
    "key",
    "authmechanismproperties",
];

/// `scheme://user:password@host/db?x=y` -> `scheme://user:****@host/db?x=y`.
///
/// The whole part after the first `:` of the user info is replaced, so a password containing
/// unencoded `:`, `@` or `/` is hidden too; query values of password/secret/token/key parameters
/// are replaced as well. A user name without a password is kept (it is not a secret).
pub fn redact_uri(uri: &str) -> String {
    let (scheme, rest) = match uri.find("://") {
        Some(at) => (&uri[..at + 3], &uri[at + 3..]),
        None => ("", uri),
    };
    let (userinfo, after_userinfo) = match userinfo_end(rest) {
        Some(at) => (Some(&rest[..at]), &rest[at + 1..]),
        None => (None, rest),
    };
    let mut out = String::with_capacity(uri.len());
    out.push_str(scheme);
    if let Some(userinfo) = userinfo {
        match userinfo.split_once(':') {
            Some((user, _password)) => {
                out.push_str(user);
                out.push(':');
                out.push_str(MASK);
            }
            None => out.push_str(userinfo),
        }
        out.push('@');
    }
    match after_userinfo.split_once('?') {
        Some((before_query, query)) => {
            out.push_str(before_query);
            out.push('?');
            out.push_str(&redact_query(query));
        }
        None => out.push_str(after_userinfo),
    }
    out
}

/// Where the user info ends (the `@` before the host) in what follows `scheme://`, if there is
/// user info.
pub(crate) fn userinfo_end(rest: &str) -> Option<usize> {
    // Normal case: the last `@` before the first `/`, `?` or `#` (hosts never contain them).
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    if let Some(at) = rest[..authority_end].rfind('@') {
        return Some(at);
    }
    // A raw password containing `/` or `?` breaks that rule: `user:pa/ss@host`. Then the last
    // `@` anywhere ends the user info, unless what follows the `:` is a port (`host:8080/a@b`).
    let at = rest.rfind('@')?;
    let (_, after_colon) = rest[..authority_end].split_once(':')?;
    let is_port = !after_colon.is_empty() && after_colon.bytes().all(|b| b.is_ascii_digit());
    (!is_port).then_some(at)
}

/// `a=1&token=x` -> `a=1&token=****`.
pub(crate) fn redact_query(query: &str) -> String {
    query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((name, _)) if is_secret_param(name) => format!("{name}={MASK}"),
            _ => pair.to_string(),
        })
        .collect::<Vec<_>>()
        .join("&")
}

fn is_secret_param(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    SECRET_PARAMS.iter().any(|secret| name.contains(secret))
}

/// The password in a URI's user info, raw and percent-decoded, for `scrub`.
pub fn uri_secrets(uri: &str) -> Vec<String> {
    let rest = uri.find("://").map_or(uri, |at| &uri[at + 3..]);
    let Some(end) = userinfo_end(rest) else {
        return Vec::new();
    };
    let Some((_, password)) = rest[..end].split_once(':') else {
        return Vec::new();
    };
    let mut secrets = vec![password.to_string()];
    let decoded = percent_decode(password);
    if decoded != password {
        secrets.push(decoded);
    }
    secrets.retain(|s| !s.is_empty());
    secrets
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

pub(crate) fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            let hex = (hex_value(bytes[i + 1]), hex_value(bytes[i + 2]));
            if let (Some(high), Some(low)) = hex {
                out.push(high * 16 + low);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex_value(byte: u8) -> Option<u8> {
    (byte as char).to_digit(16).map(|d| d as u8)
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
