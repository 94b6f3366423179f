//! Secrets never reach output: URIs are printed with their passwords replaced by `****`.
//!
//! (A small helper of the operations layer; it may later be unified with the preflight one.)

/// Query parameters whose values are secrets in MongoDB and Redis URIs.
const SECRET_PARAMS: &[&str] = &[
    "password",
    "tlscertificatekeyfilepassword",
    "sslpemkeypassword",
    "authmechanismproperties",
];

/// `scheme://user:secret@host/...` -> `scheme://user:****@host/...`; secret query parameters
/// (e.g. `password=`, `authMechanismProperties=`) get `****` too. Errs on the side of hiding:
/// the user information ends at the LAST `@`, so a password holding an unencoded `@` or `/` is
/// still hidden whole. Text that is not a URI is returned unchanged.
pub fn redact_uri(uri: &str) -> String {
    let Some(scheme_end) = uri.find("://") else {
        return uri.to_string();
    };
    let (scheme, rest) = uri.split_at(scheme_end + 3);
    let mut out = String::with_capacity(uri.len());
    out.push_str(scheme);
    let after_userinfo = match rest.rfind('@') {
        Some(at) => {
            let userinfo = &rest[..at];
            match userinfo.find(':') {
                Some(colon) => {
                    out.push_str(&userinfo[..colon]);
                    out.push_str(":****@");
                }
                // A user without a password (e.g. X.509 or a token-only user): keep the name.
                None => {
                    out.push_str(userinfo);
                    out.push('@');
                }
            }
            &rest[at + 1..]
        }
        None => rest,
    };
    match after_userinfo.find('?') {
        Some(q) => {
            out.push_str(&after_userinfo[..=q]);
            let query = &after_userinfo[q + 1..];
            let params: Vec<String> = query
                .split('&')
                .map(|param| match param.split_once('=') {
                    Some((name, _))
                        if SECRET_PARAMS.contains(&name.to_ascii_lowercase().as_str()) =>
                    {
                        format!("{name}=****")
                    }
                    _ => param.to_string(),
                })
                .collect();
            out.push_str(&params.join("&"));
        }
        None => out.push_str(after_userinfo),
    }
    out
}

#[cfg(test)]
mod tests {
    use super::redact_uri;

    #[test]
    fn hides_passwords_keeps_the_rest() {
        assert_eq!(
            redact_uri("mongodb://novu:CanaryPw@db1:27017,db2:27017/novu-db?authSource=admin"),
            "mongodb://novu:****@db1:27017,db2:27017/novu-db?authSource=admin"
        );
        assert_eq!(
            redact_uri("redis://:s3cret@127.0.0.1:6379/0"),
            "redis://:****@127.0.0.1:6379/0"
        );
        assert_eq!(
            redact_uri("mongodb://127.0.0.1:27017/novu"),
            "mongodb://127.0.0.1:27017/novu"
        );
        assert_eq!(
            redact_uri("mongodb://user@host/db"),
            "mongodb://user@host/db"
        );
        assert_eq!(redact_uri("auto"), "auto");
    }

    #[test]
    fn unencoded_separators_in_the_password_stay_hidden() {
        let out = redact_uri("mongodb://u:p@ss/w?rd@host:1/db");
        assert!(!out.contains("ss/w"), "{out}");
        assert_eq!(out, "mongodb://u:****@host:1/db");
    }

    #[test]
    fn secret_query_parameters() {
        assert_eq!(
            redact_uri("mongodb://h/db?authMechanism=MONGODB-AWS&authMechanismProperties=AWS_SESSION_TOKEN:abc&password=x"),
            "mongodb://h/db?authMechanism=MONGODB-AWS&authMechanismProperties=****&password=****"
        );
    }
}
