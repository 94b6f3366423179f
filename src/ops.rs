//! The operations commands: `config show`, `completions <shell>` and `man`.

use std::io::Write as _;

use clap::CommandFactory;

use crate::cli::{Cli, Command, ConfigCommand};
use crate::error::{Error, ExitCode, Result};
use crate::redact::Uri;
use crate::settings::Sourced;
use crate::settings::{self, FlagValues, Settings, Source};
use crate::ui::config_text::{self, Item};
use crate::ui::{self, Styler};

type ConfigView = config_text::ConfigView<Source>;

/// One resolved value as `config show` gives it (shown by `show`), with its source.
fn item<T>(v: Option<&Sourced<T>>, show: impl Fn(&T) -> String) -> Item<Source> {
    Item {
        value: v.map(|s| show(&s.value)),
        source: v.map(|s| s.source.clone()),
    }
}

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
                ui::print_text(&config_text::render(&view, &Styler::for_stdout()))?;
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

impl ConfigView {
    /// The settings as `config show` prints them: every secret redacted, each with its source.
    pub(crate) fn new(s: &Settings, env: &dyn Fn(&str) -> Option<String>) -> Self {
        let key = env(&s.encryption_key_env.value).filter(|k| !k.is_empty());
        let ssh = s.ssh.as_ref().map(|ssh| {
            let mut items = vec![
                (
                    "host".to_string(),
                    item(Some(&ssh.destination), |d| match ssh.port {
                        Some(p) => format!("{d}:{p}"),
                        None => d.clone(),
                    }),
                ),
                (
                    "identity_file".to_string(),
                    item(ssh.identity_file.as_ref(), |p| p.display().to_string()),
                ),
                (
                    "jump_host".to_string(),
                    item(ssh.jump_host.as_ref(), String::clone),
                ),
                (
                    "known_hosts".to_string(),
                    item(Some(&ssh.known_hosts), |k| k.as_str().to_string()),
                ),
                (
                    "known_hosts_file".to_string(),
                    item(ssh.known_hosts_file.as_ref(), |p| p.display().to_string()),
                ),
                (
                    "remote_mongo".to_string(),
                    item(ssh.remote_mongo.as_ref(), |(h, p)| format!("{h}:{p}")),
                ),
                (
                    "remote_redis".to_string(),
                    item(ssh.remote_redis.as_ref(), |(h, p)| format!("{h}:{p}")),
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
            profile: item(s.profile.as_ref(), String::clone),
            mongo_uri: item(s.mongo_uri.as_ref(), Uri::redacted),
            redis_url: item(Some(&s.redis_url), |u| {
                if s.redis_is_auto() {
                    "auto".into()
                } else {
                    u.redacted()
                }
            }),
            repo: item(s.repo.as_ref(), |r| r.to_string()),
            map: Item {
                value: Some(
                    s.map
                        .as_ref()
                        .map_or("embedded (Novu)".into(), |m| m.value.display().to_string()),
                ),
                source: Some(s.map.as_ref().map_or(Source::Default, |m| m.source.clone())),
            },
            encryption_key_env: item(Some(&s.encryption_key_env), String::clone),
            encryption_key: match key {
                Some(k) => format!("set ({} chars)", k.chars().count()),
                None => "not set".into(),
            },
            ssh,
        }
    }
}
