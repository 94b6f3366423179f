//! The operations commands: `config show`, `completions <shell>` and `man`.

use std::fmt::Write as _;
use std::io::Write as _;

use clap::CommandFactory;
use serde::Serialize;

use crate::cli::{Cli, Command, ConfigCommand};
use crate::error::{Error, ExitCode, Result};
use crate::redact::redact_uri;
use crate::settings::{self, FlagValues, Settings, Source, Sourced};
use crate::ui::{self, Styler};

pub fn dispatch(command: Command) -> Result<ExitCode> {
    match command {
        Command::Config(ConfigCommand::Show {
            profile,
            mongo,
            redis,
            repo,
            map,
            ssh,
            output,
        }) => {
            let env = |name: &str| std::env::var(name).ok();
            let flags = FlagValues::from_opts(&mongo, &redis, &repo, &map, &ssh, &env);
            let settings = settings::resolve(
                &flags,
                &env,
                profile.config.as_deref(),
                profile.profile.as_deref(),
            )?;
            let view = ConfigView::new(&settings, &env);
            if output.json {
                ui::print_json(&view)?;
            } else {
                ui::print_text(&view.text(&Styler::for_stdout()))?;
            }
            Ok(ExitCode::Success)
        }
        Command::Completions { shell } => {
            let mut out = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "upstep", &mut out);
            write_stdout(&out)
        }
        Command::Man => {
            let mut out = Vec::new();
            clap_mangen::Man::new(Cli::command())
                .render(&mut out)
                .map_err(Error::Output)?;
            write_stdout(&out)
        }
        other => Err(Error::Internal(format!(
            "ops::dispatch called with {other:?}"
        ))),
    }
}

fn write_stdout(bytes: &[u8]) -> Result<ExitCode> {
    let mut out = std::io::stdout().lock();
    match out.write_all(bytes).and_then(|()| out.flush()) {
        Ok(()) => Ok(ExitCode::Success),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(ExitCode::Success),
        Err(e) => Err(Error::Output(e)),
    }
}

/// One resolved value as printed: redacted, with its source.
#[derive(Serialize)]
struct Item {
    value: Option<String>,
    source: Option<Source>,
}

impl Item {
    fn of<T>(v: Option<&Sourced<T>>, show: impl Fn(&T) -> String) -> Item {
        Item {
            value: v.map(|s| show(&s.value)),
            source: v.map(|s| s.source.clone()),
        }
    }
}

#[derive(Serialize)]
struct ConfigView {
    schema: &'static str,
    config_file: Option<String>,
    profile: Item,
    mongo_uri: Item,
    redis_url: Item,
    repo: Item,
    map: Item,
    encryption_key_env: Item,
    /// "set (N chars)" or "not set": the key itself is never read out.
    encryption_key: String,
    /// An object in JSON (field -> item), in the order of the text output.
    #[serde(serialize_with = "as_map")]
    ssh: Option<Vec<(String, Item)>>,
}

fn as_map<S: serde::Serializer>(
    items: &Option<Vec<(String, Item)>>,
    s: S,
) -> std::result::Result<S::Ok, S::Error> {
    match items {
        Some(items) => s.collect_map(items.iter().map(|(k, v)| (k, v))),
        None => s.serialize_none(),
    }
}

impl ConfigView {
    fn new(s: &Settings, env: &dyn Fn(&str) -> Option<String>) -> Self {
        let key = env(&s.encryption_key_env.value).filter(|k| !k.is_empty());
        let ssh = s.ssh.as_ref().map(|ssh| {
            let mut items = vec![
                (
                    "host".to_string(),
                    Item::of(Some(&ssh.destination), |d| match ssh.port {
                        Some(p) => format!("{d}:{p}"),
                        None => d.clone(),
                    }),
                ),
                (
                    "identity_file".to_string(),
                    Item::of(ssh.identity_file.as_ref(), |p| p.display().to_string()),
                ),
                (
                    "jump_host".to_string(),
                    Item::of(ssh.jump_host.as_ref(), String::clone),
                ),
                (
                    "known_hosts".to_string(),
                    Item::of(Some(&ssh.known_hosts), |k| k.as_str().to_string()),
                ),
                (
                    "known_hosts_file".to_string(),
                    Item::of(ssh.known_hosts_file.as_ref(), |p| p.display().to_string()),
                ),
                (
                    "remote_mongo".to_string(),
                    Item::of(ssh.remote_mongo.as_ref(), |(h, p)| format!("{h}:{p}")),
                ),
                (
                    "remote_redis".to_string(),
                    Item::of(ssh.remote_redis.as_ref(), |(h, p)| format!("{h}:{p}")),
                ),
            ];
            if ssh.remote_mongo.is_none() {
                items[5].1.value = Some("(the MongoDB URI's host:port)".into());
            }
            items
        });
        ConfigView {
            schema: crate::json_schemas::CONFIG,
            config_file: s.config_file.as_ref().map(|p| p.display().to_string()),
            profile: Item::of(s.profile.as_ref(), String::clone),
            mongo_uri: Item::of(s.mongo_uri.as_ref(), |u| redact_uri(u)),
            redis_url: Item::of(Some(&s.redis_url), |u| {
                if s.redis_is_auto() {
                    "auto".into()
                } else {
                    redact_uri(u)
                }
            }),
            repo: Item::of(s.repo.as_ref(), |r| r.to_string()),
            map: Item {
                value: Some(
                    s.map
                        .as_ref()
                        .map_or("embedded (Novu)".into(), |m| m.value.display().to_string()),
                ),
                source: Some(s.map.as_ref().map_or(Source::Default, |m| m.source.clone())),
            },
            encryption_key_env: Item::of(Some(&s.encryption_key_env), String::clone),
            encryption_key: match key {
                Some(k) => format!("set ({} chars)", k.chars().count()),
                None => "not set".into(),
            },
            ssh,
        }
    }

    fn text(&self, st: &Styler) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "{} {}",
            st.bold("Settings"),
            st.dim(&format!(
                "(file: {})",
                self.config_file.as_deref().unwrap_or("none found")
            ))
        );
        let mut rows: Vec<(String, &Item)> = vec![
            ("profile".into(), &self.profile),
            ("mongo_uri".into(), &self.mongo_uri),
            ("redis_url".into(), &self.redis_url),
            ("repo".into(), &self.repo),
            ("map".into(), &self.map),
            ("encryption_key_env".into(), &self.encryption_key_env),
        ];
        if let Some(ssh) = &self.ssh {
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
            let _ = writeln!(
                out,
                "  {}  {value}{}",
                ui::pad(&name, width),
                st.dim(&source)
            );
        }
        let _ = writeln!(
            out,
            "  {}  {}",
            ui::pad("encryption key", width),
            self.encryption_key
        );
        if self.ssh.is_none() {
            let _ = writeln!(out, "  {}  (no tunnel)", ui::pad("ssh", width));
        }
        out
    }
}
