//! The encryption key and the environment checks a release map declares: settings a script
//! reads from its environment. What a valid key looks like and which variables must be set
//! come from the map (`[project.encryption_key]`, `[[project.env_checks]]`), never from here.

use std::collections::BTreeMap;

use super::CheckResult;
use crate::release_map::tools::{EnvCheckSeverity, RawEnvCheck, RawKeyRules};

/// Checks the key that will be passed to scripts as `var_name`, against the map's `rules`.
/// Never puts the value (or any part of it) in the result.
pub fn check_encryption_key(
    value: Option<&str>,
    var_name: &str,
    needed: bool,
    rules: &RawKeyRules,
) -> CheckResult {
    const ID: &str = "encryption-key";
    let title = format!("{var_name} (encryption key)");
    let about = rules
        .about
        .as_deref()
        .map(|a| format!(" ({a})"))
        .unwrap_or_default();
    let fix = format!("export {var_name}=<the production key>{about}");
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
    if rules.placeholders.iter().any(|p| p == value) {
        return CheckResult::blocker(
            ID,
            title,
            format!(
                "{var_name} is the project's example placeholder, not a real key; data \
                 encrypted with it cannot be read by your deployment"
            ),
            fix,
        );
    }
    let Some(length) = rules.length else {
        return CheckResult::ok(ID, title, "set");
    };
    if value.len() != length {
        let trimmed = value.trim();
        let hint = if trimmed.len() == length {
            " (it has leading or trailing whitespace)"
        } else if value.chars().count() == length {
            " (it has non-ASCII characters, which take more than one byte each)"
        } else {
            ""
        };
        return CheckResult::blocker(
            ID,
            title,
            format!(
                "{var_name} must be exactly {length} characters; it has {}{hint}",
                value.chars().count()
            ),
            fix,
        );
    }
    CheckResult::ok(ID, title, format!("set, {length} characters"))
}

/// One `[[project.env_checks]]` rule against the env scripts will get.
pub fn check_env(rule: &RawEnvCheck, env: &BTreeMap<String, String>) -> CheckResult {
    let id = rule.id.clone();
    match env.get(&rule.var) {
        Some(value) if value.trim().eq_ignore_ascii_case(rule.equals.trim()) => CheckResult::ok(
            id,
            rule.title.clone(),
            format!("{}={} is set for scripts", rule.var, rule.equals),
        ),
        other => {
            let state = match other {
                Some(_) => format!("{} is not {}", rule.var, rule.equals),
                None => format!("{} is not set", rule.var),
            };
            let reason = format!("{state}: {}", rule.why);
            match rule.severity {
                EnvCheckSeverity::Warning => {
                    CheckResult::warning(id, rule.title.clone(), reason, rule.fix.clone())
                }
                EnvCheckSeverity::Blocker => {
                    CheckResult::blocker(id, rule.title.clone(), reason, rule.fix.clone())
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::preflight::Severity;

    const GOOD: &str = "0123456789abcdef0123456789ABCDEF";
    const ENCRYPTION_KEY_PLACEHOLDER: &str = "<ENCRYPTION_KEY_MUST_BE_32_LONG>";

    /// Novu's rules, as its map declares them.
    fn novu_rules() -> RawKeyRules {
        crate::release_map::load(None)
            .unwrap()
            .project
            .encryption_key
            .expect("the Novu map declares its key rules")
    }

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
            let result =
                check_encryption_key(*value, "STORE_ENCRYPTION_KEY", *needed, &novu_rules());
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
    fn new_relic_comes_from_the_novu_map() {
        let map = crate::release_map::load(None).unwrap();
        let rule = map
            .project
            .env_checks
            .iter()
            .find(|r| r.id == "new-relic")
            .expect("the Novu map declares the New Relic check");
        let mut env = BTreeMap::new();
        assert_eq!(check_env(rule, &env).severity, Severity::Warning);
        env.insert("NEW_RELIC_ENABLED".to_string(), "true".to_string());
        assert_eq!(check_env(rule, &env).severity, Severity::Warning);
        env.insert("NEW_RELIC_ENABLED".to_string(), "false".to_string());
        assert_eq!(check_env(rule, &env).severity, Severity::Ok);
    }

    #[test]
    fn a_map_without_key_rules_only_needs_the_key_set() {
        let rules = RawKeyRules::default();
        let ok = check_encryption_key(Some("short"), "KEY", true, &rules);
        assert_eq!(ok.severity, Severity::Ok);
        let missing = check_encryption_key(None, "KEY", true, &rules);
        assert_eq!(missing.severity, Severity::Blocker);
        assert!(!missing.fix.unwrap().contains("Novu"));
    }
}
