//! Building the child process of one step from the release map: the era's argv and working
//! directory, and its environment with connection placeholders filled in (the shim that calls an
//! exported function is written by `shim`). Secrets travel only in the environment, never in argv.

use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};

use secrecy::{ExposeSecret, SecretString};

use crate::error::{Error, Result};
use crate::redact::Uri;
use crate::release_map::{Era, Mode, RunKind};

/// Values for the env placeholders of an era; a variable whose placeholder has no value is
/// left unset.
#[derive(Debug, Clone, Default)]
pub struct Connection {
    /// Shown redacted by `Debug`; its real string goes only into a child's environment.
    pub mongo_uri: Uri,
    pub redis_host: Option<String>,
    pub redis_port: Option<u16>,
    /// Secrets as `SecretString`: a `Debug` of the connection shows `[REDACTED]`.
    pub redis_password: Option<SecretString>,
    pub redis_db: Option<u32>,
    pub redis_tls: bool,
    pub encryption_key: Option<SecretString>,
    /// Inherited variables no child may see (`Settings::private_env_vars`).
    pub private_env: Vec<String>,
}

impl Connection {
    fn placeholder(&self, name: &str) -> Option<String> {
        match name {
            "mongo_uri" => Some(self.mongo_uri.expose().to_string()),
            "redis_host" => self.redis_host.clone(),
            "redis_port" => self.redis_port.map(|p| p.to_string()),
            "redis_password" => exposed(&self.redis_password),
            "redis_db" => self.redis_db.map(|d| d.to_string()),
            "redis_tls" => self.redis_tls.then(|| "true".to_string()),
            "encryption_key" => exposed(&self.encryption_key),
            _ => None,
        }
    }

    /// Every secret a child's output, log or journal tail must never show.
    pub fn secrets(&self) -> Vec<String> {
        let mut secrets = self.mongo_uri.secrets();
        secrets.push(self.mongo_uri.expose().to_string());
        secrets.extend(exposed(&self.redis_password));
        secrets.extend(exposed(&self.encryption_key));
        secrets.retain(|s| !s.is_empty());
        secrets
    }
}

/// The real value of a secret, for a child's environment or a scrub list only.
fn exposed(secret: &Option<SecretString>) -> Option<String> {
    secret.as_ref().map(|s| s.expose_secret().to_string())
}

/// Fill `{placeholder}`s; None when one of them has no value (the variable stays unset).
fn render_env_value(template: &str, conn: &Connection) -> Option<String> {
    let mut out = String::new();
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        let Some(close) = after.find('}') else {
            out.push_str(&rest[open..]);
            return Some(out);
        };
        out.push_str(&conn.placeholder(&after[..close])?);
        rest = &after[close + 1..];
    }
    out.push_str(rest);
    Some(out)
}

/// The environment of every script of an era.
pub fn era_env(era: &Era, conn: &Connection) -> Vec<(String, String)> {
    era.env
        .iter()
        .filter_map(|(k, v)| render_env_value(v, conn).map(|value| (k.clone(), value)))
        .collect()
}

/// `to` relative to `from` (both relative to the same root), e.g. `migrations/a.ts` from
/// `apps/api` is `../../migrations/a.ts`.
pub fn relative_to(to: &Path, from: &Path) -> PathBuf {
    let norm = |p: &Path| -> Vec<String> {
        p.components()
            .filter_map(|c| match c {
                Component::Normal(s) => Some(s.to_string_lossy().into_owned()),
                _ => None,
            })
            .collect()
    };
    let (to, from) = (norm(to), norm(from));
    let common = to.iter().zip(&from).take_while(|(a, b)| a == b).count();
    let mut out = PathBuf::new();
    for _ in common..from.len() {
        out.push("..");
    }
    for part in &to[common..] {
        out.push(part);
    }
    out
}

/// The command of one step, ready to spawn.
#[derive(Debug, Clone)]
pub struct StepCommand {
    pub program: PathBuf,
    pub args: Vec<String>,
    pub cwd: PathBuf,
    /// A shim file upstep wrote into the worktree (removed after the step).
    pub shim: Option<PathBuf>,
}

/// Prepare the argv (and the shim file, for exported functions) of one step.
pub fn step_command(
    worktree: &Path,
    era: &Era,
    mode: &Mode,
    script: &str,
    step_id: &str,
) -> Result<StepCommand> {
    let cwd_rel = Path::new(&era.cwd);
    let cwd = worktree.join(cwd_rel);
    let script_rel = relative_to(Path::new(script), cwd_rel);
    let (target, shim) = match mode.run {
        RunKind::File => (script_rel, None),
        RunKind::Command => {
            return Err(Error::Internal(format!(
                "{step_id}: a command step is built by executor::command_step"
            )))
        }
        RunKind::Export => {
            let (file_name, path) =
                super::shim::write_shim(&cwd, era, mode, script, &script_rel, step_id)?;
            (file_name, Some(path))
        }
    };
    let target = target.display().to_string();
    let mut argv = era.run.iter().map(|a| a.replace("{script}", &target));
    let first = argv
        .next()
        .ok_or_else(|| Error::Internal(format!("era {} has an empty run command", era.name)))?;
    // A relative program path with a slash is relative to the working directory.
    let program = if first.contains('/') && !first.starts_with('/') {
        cwd.join(&first)
    } else {
        PathBuf::from(&first)
    };
    Ok(StepCommand {
        program,
        args: argv.collect(),
        cwd,
        shim,
    })
}

/// The setup commands' environment: the era's setup_env.
pub fn setup_env(era: &Era) -> Vec<(String, String)> {
    era.setup_env
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect::<BTreeMap<_, _>>()
        .into_iter()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_paths_between_repo_folders() {
        assert_eq!(
            relative_to(Path::new("apps/api/migrations/a.ts"), Path::new("apps/api")),
            PathBuf::from("migrations/a.ts")
        );
        assert_eq!(
            relative_to(Path::new("migrations/a.ts"), Path::new(".")),
            PathBuf::from("migrations/a.ts")
        );
        assert_eq!(
            relative_to(Path::new("migrations/a.ts"), Path::new("apps/api")),
            PathBuf::from("../../migrations/a.ts")
        );
    }

    #[test]
    fn placeholders_fill_in_or_leave_the_variable_unset() {
        let conn = Connection {
            mongo_uri: "mongodb://u:pw@h/db".into(),
            redis_host: Some("127.0.0.1".into()),
            redis_port: Some(6390),
            ..Connection::default()
        };
        assert_eq!(
            render_env_value("{redis_host}:{redis_port}", &conn).as_deref(),
            Some("127.0.0.1:6390")
        );
        assert_eq!(render_env_value("{redis_password}", &conn), None);
        assert_eq!(render_env_value("false", &conn).as_deref(), Some("false"));
        assert!(conn.secrets().contains(&"pw".to_string()));
    }
}
