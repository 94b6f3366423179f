//! Wording for the terminal: `crate::words` (counts, connection reasons), and preflight
//! findings as sentences.

pub use crate::words::*;

/// A preflight finding as a sentence: "Preflight warning (disk): only 3 GiB free at /c. Fix:
/// free 2 GiB."
pub fn check_notice(check: &crate::preflight::CheckResult) -> String {
    let severity = match check.severity {
        crate::preflight::Severity::Ok => "note",
        crate::preflight::Severity::Warning => "warning",
        crate::preflight::Severity::Blocker => "blocker",
    };
    let mut text = format!(
        "Preflight {severity} ({}): {}",
        check.id,
        sentence(&check.reason)
    );
    if let Some(fix) = &check.fix {
        text.push_str(&format!(" Fix: {}", sentence(fix)));
    }
    text
}

/// `text` ending with a full stop (unless it already ends a sentence).
fn sentence(text: &str) -> String {
    let text = text.trim_end();
    if text.ends_with(['.', '!', '?', ':', ')']) {
        text.to_string()
    } else {
        format!("{text}.")
    }
}
