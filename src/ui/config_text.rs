//! The text and JSON of `upstep config show`: every setting as resolved (secrets redacted),
//! with where its value came from.

use std::fmt::Write;

use serde::Serialize;

use super::{pad, Styler};

/// One resolved value as printed: redacted, with its source (`S`: the settings' `Source`,
/// which prints as "flag", "env NAME", "profile ...", "default").
#[derive(Serialize)]
pub struct Item<S> {
    pub value: Option<String>,
    pub source: Option<S>,
}

#[derive(Serialize)]
#[serde(bound = "S: Serialize")]
pub struct ConfigView<S> {
    pub schema: &'static str,
    pub config_file: Option<String>,
    pub profile: Item<S>,
    pub mongo_uri: Item<S>,
    pub redis_url: Item<S>,
    pub repo: Item<S>,
    pub map: Item<S>,
    pub encryption_key_env: Item<S>,
    /// "set (N chars)" or "not set": the key itself is never read out.
    pub encryption_key: String,
    /// An object in JSON (field -> item), in the order of the text output.
    #[serde(serialize_with = "as_map")]
    pub ssh: Option<Vec<(String, Item<S>)>>,
}

fn as_map<S: Serialize, Z: serde::Serializer>(
    items: &Option<Vec<(String, Item<S>)>>,
    s: Z,
) -> std::result::Result<Z::Ok, Z::Error> {
    match items {
        Some(items) => s.collect_map(items.iter().map(|(k, v)| (k, v))),
        None => s.serialize_none(),
    }
}

/// `config show`'s text: one aligned line per setting, its value and where it came from.
pub fn render<S: std::fmt::Display>(view: &ConfigView<S>, st: &Styler) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{} {}",
        st.bold("Settings"),
        st.dim(&format!(
            "(file: {})",
            view.config_file.as_deref().unwrap_or("none found")
        ))
    );
    let mut rows: Vec<(String, &Item<S>)> = vec![
        ("profile".into(), &view.profile),
        ("mongo_uri".into(), &view.mongo_uri),
        ("redis_url".into(), &view.redis_url),
        ("repo".into(), &view.repo),
        ("map".into(), &view.map),
        ("encryption_key_env".into(), &view.encryption_key_env),
    ];
    if let Some(ssh) = &view.ssh {
        rows.extend(ssh.iter().map(|(k, v)| (format!("ssh.{k}"), v)));
    }
    let width = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    for (name, item) in rows {
        let mut value = item.value.clone().unwrap_or_else(|| "(not set)".into());
        if name == "redis_url" && value == "auto" {
            value.push_str(" (a throwaway local redis-server for each run)");
        }
        let source = item
            .source
            .as_ref()
            .map(|s| format!("  [{s}]"))
            .unwrap_or_default();
        let _ = writeln!(out, "  {}  {value}{}", pad(&name, width), st.dim(&source));
    }
    let _ = writeln!(
        out,
        "  {}  {}",
        pad("encryption key", width),
        view.encryption_key
    );
    if view.ssh.is_none() {
        let _ = writeln!(out, "  {}  (no tunnel)", pad("ssh", width));
    }
    out
}
