//! The encryption key and the New Relic switch: settings a script reads from its environment.

use std::collections::BTreeMap;

use super::CheckResult;

/// The 32-character placeholder in Novu's `apps/api/src/.example.env`. A script run with it
/// "works" and encrypts secrets with a key production does not have, so it must be refused.
pub const ENCRYPTION_KEY_PLACEHOLDER: &str = "<ENCRYPTION_KEY_MUST_BE_32_LONG>";

/// AES-256 in Novu's encrypt scripts takes the key string's bytes: exactly 32 of them.
const KEY_LENGTH: usize = 32;

/// Checks the key that will be passed to scripts as `var_name`. Never puts the value (or any
/// part of it) in the result.
pub fn check_encryption_key(value: Option<&str>, var_name: &str, needed: bool) -> CheckResult {
    const ID: &str = "encryption-key";
    let title = format!("{var_name} (encryption key)");
    let fix = format!(
        "export {var_name}=<the production key> (the value your Novu API runs with; a different \
         key makes encrypted secrets unreadable)"
    );
    if !needed {
        return CheckResult::ok(ID, title, "not needed by this plan");
    }
    let Some(value) = value.filter(|v| !v.is_empty()) else {
        return CheckResult::blocker(
            ID,
            title,
            format!("{var_name} is not set; a migration in this plan encrypts or decrypts data"),
            fix,
        );
    };
    if value == ENCRYPTION_KEY_PLACEHOLDER {
        return CheckResult::blocker(
            ID,
            title,
            format!(
                "{var_name} is Novu's .example.env placeholder, not a real key; data encrypted \
                 with it cannot be read by your deployment"
            ),
            fix,
        );
    }
    if value.len() != KEY_LENGTH {
        let trimmed = value.trim();
        let hint = if trimmed.len() == KEY_LENGTH {
            " (it has leading or trailing whitespace)"
        } else if value.chars().count() == KEY_LENGTH {
            " (it has non-ASCII characters, which take more than one byte each)"
        } else {
            ""
        };
        return CheckResult::blocker(
            ID,
            title,
            format!(
                "{var_name} must be exactly {KEY_LENGTH} characters; it has {}{hint}",
                value.chars().count()
            ),
            fix,
        );
    }
    CheckResult::ok(ID, title, format!("set, {KEY_LENGTH} characters"))
}

/// Novu's API loads the New Relic agent unless `NEW_RELIC_ENABLED=false`; in a migration run it
/// only slows start-up and may report to production's account. `env` is what scripts will get.
pub fn check_new_relic(env: &BTreeMap<String, String>) -> CheckResult {
    const ID: &str = "new-relic";
    let title = "New Relic agent disabled for scripts";
    match env.get("NEW_RELIC_ENABLED") {
        Some(value) if value.trim().eq_ignore_ascii_case("false") => {
            CheckResult::ok(ID, title, "NEW_RELIC_ENABLED=false is set for scripts")
        }
        other => CheckResult::warning(
            ID,
            title,
            match other {
                Some(_) => "NEW_RELIC_ENABLED is not false: scripts will load the New Relic agent",
                None => "NEW_RELIC_ENABLED is not set: scripts will load the New Relic agent",
            },
            "set NEW_RELIC_ENABLED = \"false\" in the era's env in the release map (the built-in \
             map does)",
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::preflight::Severity;

    const GOOD: &str = "0123456789abcdef0123456789ABCDEF";

    fn json(result: &CheckResult) -> String {
        serde_json::to_string(result).unwrap()
    }

    #[test]
    fn encryption_key_cases() {
        assert_eq!(GOOD.len(), 32);
        assert_eq!(ENCRYPTION_KEY_PLACEHOLDER.len(), 32);
        let cases: &[(Option<&str>, bool, Severity)] = &[
            (Some(GOOD), true, Severity::Ok),
            (None, true, Severity::Blocker),
            (Some(""), true, Severity::Blocker),
            (Some(ENCRYPTION_KEY_PLACEHOLDER), true, Severity::Blocker),
            (Some(&GOOD[..31]), true, Severity::Blocker),
            (
                Some("0123456789abcdef0123456789ABCDEF0"),
                true,
                Severity::Blocker,
            ),
            (
                Some(" 0123456789abcdef0123456789ABCDEF"),
                true,
                Severity::Blocker,
            ),
            (
                Some("é123456789abcdef0123456789ABCDEF"),
                true,
                Severity::Blocker,
            ),
            (None, false, Severity::Ok),
            (Some("short"), false, Severity::Ok),
        ];
        for (value, needed, expected) in cases {
            let result = check_encryption_key(*value, "STORE_ENCRYPTION_KEY", *needed);
            assert_eq!(result.severity, *expected, "{value:?} needed={needed}");
            if *expected != Severity::Ok {
                assert!(result
                    .fix
                    .as_deref()
                    .unwrap()
                    .contains("export STORE_ENCRYPTION_KEY="));
            }
            if let Some(value) = value.filter(|v| v.len() > 4) {
                assert!(!json(&result).contains(value), "{}", json(&result));
                let prefix = value.get(..8).unwrap_or(value);
                assert!(!json(&result).contains(prefix), "{}", json(&result));
            }
        }
    }

    #[test]
    fn new_relic() {
        let mut env = BTreeMap::new();
        assert_eq!(check_new_relic(&env).severity, Severity::Warning);
        env.insert("NEW_RELIC_ENABLED".to_string(), "true".to_string());
        assert_eq!(check_new_relic(&env).severity, Severity::Warning);
        env.insert("NEW_RELIC_ENABLED".to_string(), "false".to_string());
        assert_eq!(check_new_relic(&env).severity, Severity::Ok);
    }
}
