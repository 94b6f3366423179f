//! Settings: flags > environment variables > an `upstep.toml` profile > defaults, each value
//! with where it came from.
//!
//! The file is found at `--config FILE`, else `./upstep.toml`, else
//! `$XDG_CONFIG_HOME/upstep/upstep.toml` (`~/.config/upstep/upstep.toml`). It holds named
//! profiles (`[profiles.prod]`); the profile is `--profile`, else `UPSTEP_PROFILE`, else the
//! file's `default_profile`. A store encryption key is never read from the file or a flag: only
//! the NAME of the environment variable that holds it.
//!
//! `resolve` is pure apart from reading the file: the environment is passed in.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::cli::{MapOpts, MongoOpts, RedisOpts, RepoOpts, SshKnownHosts, SshOpts};
use crate::error::{Error, Result};
use crate::git::RepoLocation;
use crate::redact::Uri;
use crate::tunnel::{parse_host_port, parse_ssh_target, KnownHostsPolicy};

/// Novu's own name for the variable holding the store encryption key.
pub const DEFAULT_ENCRYPTION_KEY_ENV: &str = "STORE_ENCRYPTION_KEY";
/// What `redis_url` is when nothing sets it: a throwaway local redis-server for the run.
pub const REDIS_AUTO: &str = "auto";
pub const FILE_NAME: &str = "upstep.toml";

/// Where a value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// A command-line flag.
    Flag,
    /// An environment variable (its name).
    Env(String),
    /// A profile of a settings file; `via_env` when the profile names the variable holding it
    /// (`mongo_uri_env`, `redis_url_env`).
    Profile {
        name: String,
        file: PathBuf,
        via_env: Option<String>,
    },
    /// upstep's default.
    Default,
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Flag => write!(f, "flag"),
            Source::Env(name) => write!(f, "env {name}"),
            Source::Profile {
                name,
                file,
                via_env: None,
            } => write!(f, "profile {name} ({})", file.display()),
            Source::Profile {
                name,
                file,
                via_env: Some(var),
            } => write!(f, "env {var}, named by profile {name} ({})", file.display()),
            Source::Default => write!(f, "default"),
        }
    }
}

impl Serialize for Source {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        #[serde(tag = "kind", rename_all = "lowercase")]
        enum View<'a> {
            Flag,
            Env {
                name: &'a str,
            },
            Profile {
                profile: &'a str,
                file: String,
                #[serde(skip_serializing_if = "Option::is_none")]
                env: Option<&'a str>,
            },
            Default,
        }
        match self {
            Source::Flag => View::Flag,
            Source::Env(name) => View::Env { name },
            Source::Profile {
                name,
                file,
                via_env,
            } => View::Profile {
                profile: name,
                file: file.display().to_string(),
                env: via_env.as_deref(),
            },
            Source::Default => View::Default,
        }
        .serialize(s)
    }
}

/// A value and where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sourced<T> {
    pub value: T,
    pub source: Source,
}

impl<T> Sourced<T> {
    pub fn new(value: T, source: Source) -> Self {
        Sourced { value, source }
    }
}

/// The SSH tunnel settings (see `tunnel::TunnelSpec`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SshSettings {
    /// `[user@]host`.
    pub destination: Sourced<String>,
    pub port: Option<u16>,
    pub identity_file: Option<Sourced<PathBuf>>,
    pub jump_host: Option<Sourced<String>>,
    pub known_hosts: Sourced<KnownHostsPolicy>,
    pub known_hosts_file: Option<Sourced<PathBuf>>,
    /// MongoDB as seen from the SSH host; `None`: the host:port of the MongoDB URI.
    pub remote_mongo: Option<Sourced<(String, u16)>>,
    /// Redis as seen from the SSH host; `None`: Redis is not forwarded.
    pub remote_redis: Option<Sourced<(String, u16)>>,
}

/// Everything resolved. Connection strings are [`Uri`]s and the repository a [`RepoLocation`],
/// so a `Debug` of the settings (or the JSON of `config show`) never shows a secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    pub mongo_uri: Option<Sourced<Uri>>,
    /// A redis:// URL, or `auto` (the default): a throwaway local redis-server.
    pub redis_url: Sourced<Uri>,
    pub repo: Option<Sourced<RepoLocation>>,
    /// `None`: the embedded release map.
    pub map: Option<Sourced<PathBuf>>,
    /// The NAME of the variable holding the store encryption key (never the key).
    pub encryption_key_env: Sourced<String>,
    pub ssh: Option<SshSettings>,
    /// The profile in use, and where its name came from.
    pub profile: Option<Sourced<String>>,
    /// The settings file read, if any.
    pub config_file: Option<PathBuf>,
}

/// upstep's own variables that may carry a secret (a password in a URI, a repository token).
const PRIVATE_ENV_VARS: [&str; 3] = ["UPSTEP_MONGO_URI", "UPSTEP_REDIS_URL", "UPSTEP_REPO"];

impl Settings {
    /// Names of the environment variables that carry upstep's own connection settings (its
    /// `UPSTEP_*` variables, and any a profile names): migration scripts and setup commands
    /// must not inherit them (a repository token or a database URI is no business of node's;
    /// each child gets what its era declares instead).
    pub fn private_env_vars(&self) -> Vec<String> {
        let mut names: Vec<String> = PRIVATE_ENV_VARS.iter().map(|s| s.to_string()).collect();
        let sources = [
            self.mongo_uri.as_ref().map(|s| &s.source),
            Some(&self.redis_url.source),
            self.repo.as_ref().map(|s| &s.source),
        ];
        for source in sources.into_iter().flatten() {
            match source {
                Source::Env(name) => names.push(name.clone()),
                Source::Profile {
                    via_env: Some(name),
                    ..
                } => names.push(name.clone()),
                _ => {}
            }
        }
        names.sort();
        names.dedup();
        names
    }

    /// Whether Redis is the throwaway local one.
    pub fn redis_is_auto(&self) -> bool {
        self.redis_url
            .value
            .expose()
            .eq_ignore_ascii_case(REDIS_AUTO)
    }
}

/// The values given as flags (none of them read from the environment: see `from_opts`).
#[derive(Debug, Clone, Default)]
pub struct FlagValues {
    pub mongo_uri: Option<Uri>,
    pub redis_url: Option<Uri>,
    pub repo: Option<RepoLocation>,
    pub map: Option<PathBuf>,
    pub ssh: SshFlags,
}

#[derive(Debug, Clone, Default)]
pub struct SshFlags {
    /// `[user@]host[:port]`.
    pub host: Option<String>,
    pub identity_file: Option<PathBuf>,
    pub jump_host: Option<String>,
    pub known_hosts: Option<KnownHostsPolicy>,
    pub known_hosts_file: Option<PathBuf>,
    pub remote_mongo: Option<String>,
    pub remote_redis: Option<String>,
}

impl FlagValues {
    /// The flags of the shared arg groups. clap also fills some of them from their environment
    /// variables (`UPSTEP_MONGO_URI`, `UPSTEP_REDIS_URL`, `UPSTEP_REPO`, `UPSTEP_MAP`); a value
    /// equal to that variable's is left to `resolve` to attribute to the environment.
    pub fn from_opts(
        mongo: &MongoOpts,
        redis: &RedisOpts,
        repo: &RepoOpts,
        map: &MapOpts,
        ssh: &SshOpts,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Self {
        let not_from = |value: &Option<Uri>, var: &str| -> Option<Uri> {
            value
                .clone()
                .filter(|v| env(var).as_deref() != Some(v.expose()))
        };
        FlagValues {
            mongo_uri: not_from(&mongo.mongo_uri, "UPSTEP_MONGO_URI"),
            redis_url: not_from(&redis.redis_url, "UPSTEP_REDIS_URL"),
            repo: repo
                .repo
                .clone()
                .filter(|r| env("UPSTEP_REPO").map(RepoLocation::from).as_ref() != Some(r)),
            map: map
                .map
                .clone()
                .filter(|m| env("UPSTEP_MAP").map(PathBuf::from).as_ref() != Some(m)),
            ssh: SshFlags {
                host: ssh.ssh.clone(),
                identity_file: ssh.ssh_identity.clone(),
                jump_host: ssh.ssh_jump.clone(),
                known_hosts: ssh.ssh_known_hosts.map(|k| match k {
                    SshKnownHosts::Strict => KnownHostsPolicy::Strict,
                    SshKnownHosts::AcceptNew => KnownHostsPolicy::AcceptNew,
                }),
                known_hosts_file: ssh.ssh_known_hosts_file.clone(),
                remote_mongo: ssh.ssh_remote_mongo.clone(),
                remote_redis: ssh.ssh_remote_redis.clone(),
            },
        }
    }
}

// ---- the file ----

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    default_profile: Option<String>,
    #[serde(default)]
    profiles: BTreeMap<String, ProfileFile>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ProfileFile {
    mongo_uri: Option<Uri>,
    mongo_uri_env: Option<String>,
    redis_url: Option<Uri>,
    redis_url_env: Option<String>,
    repo: Option<Uri>,
    repo_env: Option<String>,
    map: Option<PathBuf>,
    encryption_key_env: Option<String>,
    ssh: Option<SshFile>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SshFile {
    host: String,
    identity_file: Option<PathBuf>,
    jump_host: Option<String>,
    known_hosts: Option<KnownHostsPolicy>,
    known_hosts_file: Option<PathBuf>,
    remote_mongo: Option<String>,
    remote_redis: Option<String>,
}

const PROFILE_FIELDS: &[&str] = &[
    "mongo_uri",
    "mongo_uri_env",
    "redis_url",
    "redis_url_env",
    "repo",
    "repo_env",
    "map",
    "encryption_key_env",
    "ssh",
];
const SSH_FIELDS: &[&str] = &[
    "host",
    "identity_file",
    "jump_host",
    "known_hosts",
    "known_hosts_file",
    "remote_mongo",
    "remote_redis",
];
const TOP_FIELDS: &[&str] = &["default_profile", "profiles"];

/// The settings file to read: `--config`, else ./upstep.toml, else the XDG one; `None` if
/// neither default exists. A `--config` that does not exist is an error.
pub fn find_config_file(
    config_path: Option<&Path>,
    env: &dyn Fn(&str) -> Option<String>,
    cwd: &Path,
) -> Result<Option<PathBuf>> {
    if let Some(path) = config_path {
        if !path.is_file() {
            return Err(Error::config(
                format!("the settings file {} does not exist", path.display()),
                "check the path given to --config",
            ));
        }
        return Ok(Some(path.to_path_buf()));
    }
    Ok(default_config_paths(env, cwd)
        .into_iter()
        .find(|p| p.is_file()))
}

/// ./upstep.toml, then $XDG_CONFIG_HOME/upstep/upstep.toml (or ~/.config/upstep/upstep.toml).
pub fn default_config_paths(env: &dyn Fn(&str) -> Option<String>, cwd: &Path) -> Vec<PathBuf> {
    let mut paths = vec![cwd.join(FILE_NAME)];
    let config_home = env("XDG_CONFIG_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| {
            env("HOME")
                .filter(|v| !v.is_empty())
                .map(|h| Path::new(&h).join(".config"))
        })
        .or_else(dirs::config_dir);
    if let Some(dir) = config_home {
        paths.push(dir.join("upstep").join(FILE_NAME));
    }
    paths
}

/// 1-based line and column of a byte offset.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let column = before.rfind('\n').map_or(before.chars().count(), |nl| {
        before[nl + 1..].chars().count()
    }) + 1;
    (line, column)
}

/// The fix for a parse error: the nearest known field for a typo, the key rule for a key.
fn parse_fix(message: &str) -> String {
    let unknown = message
        .split("unknown field `")
        .nth(1)
        .and_then(|rest| rest.split('`').next());
    if let Some(field) = unknown {
        let lower = field.to_ascii_lowercase();
        if lower.contains("key") && !lower.ends_with("_env") && lower != "identity_file"
            || lower.contains("secret")
        {
            return "a store encryption key is never read from a file: set \
                    encryption_key_env = \"NAME\" to the NAME of the environment variable that \
                    holds it (default STORE_ENCRYPTION_KEY), and export that variable"
                .into();
        }
        let known: &[&str] = if message.contains("`host`") {
            SSH_FIELDS
        } else if message.contains("`default_profile`") {
            TOP_FIELDS
        } else {
            PROFILE_FIELDS
        };
        if let Some(best) = known
            .iter()
            .min_by_key(|k| strsim::levenshtein(field, k))
            .filter(|k| strsim::levenshtein(field, k) <= 3)
        {
            return format!("did you mean `{best}`? (see docs/configuration.md)");
        }
        return "remove it or fix its name (see docs/configuration.md for every field)".into();
    }
    "fix the file at that line (see docs/configuration.md for the format)".into()
}

fn load_file(path: &Path) -> Result<FileConfig> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        Error::config(
            format!("cannot read the settings file {}: {e}", path.display()),
            "check the file's path and permissions",
        )
    })?;
    toml::from_str::<FileConfig>(&text).map_err(|e| {
        let (line, column) = e.span().map_or((1, 1), |s| line_col(&text, s.start));
        let message = e.message().trim().to_string();
        Error::config(
            format!("{}:{line}:{column}: {message}", path.display()),
            parse_fix(&message),
        )
    })
}

pub(crate) fn is_env_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// A path from the file: `~/` is the home directory, relative paths are relative to the file.
fn file_path(path: &Path, file_dir: &Path, env: &dyn Fn(&str) -> Option<String>) -> PathBuf {
    if let Ok(rest) = path.strip_prefix("~") {
        if let Some(home) = env("HOME").filter(|h| !h.is_empty()) {
            return Path::new(&home).join(rest);
        }
    }
    if path.is_relative() {
        file_dir.join(path)
    } else {
        path.to_path_buf()
    }
}

/// A repository from the file: URLs and `git@host:path` stay as they are; a relative local
/// path is relative to the file.
fn file_repo(repo: &str, file_dir: &Path, env: &dyn Fn(&str) -> Option<String>) -> RepoLocation {
    let looks_remote = repo.contains("://")
        || repo
            .split_once(':')
            .is_some_and(|(host, _)| host.contains('@') && !host.contains('/'));
    if looks_remote {
        RepoLocation::from(repo)
    } else {
        RepoLocation::from(
            file_path(Path::new(repo), file_dir, env)
                .display()
                .to_string(),
        )
    }
}

fn non_empty(value: Option<String>) -> Option<String> {
    value.filter(|v| !v.trim().is_empty())
}

fn non_empty_uri(value: Option<Uri>) -> Option<Uri> {
    value.filter(|v| !v.expose().trim().is_empty())
}

/// Resolves the settings; `config_path` is `--config`, `profile` is `--profile`. Reads the
/// file (and nothing else) from disk; `./upstep.toml` is looked for in the current directory.
pub fn resolve(
    flags: &FlagValues,
    env: &dyn Fn(&str) -> Option<String>,
    config_path: Option<&Path>,
    profile: Option<&str>,
) -> Result<Settings> {
    let cwd = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("."));
    resolve_in(flags, env, config_path, profile, &cwd)
}

/// `resolve` with an explicit current directory.
pub fn resolve_in(
    flags: &FlagValues,
    env: &dyn Fn(&str) -> Option<String>,
    config_path: Option<&Path>,
    profile: Option<&str>,
    cwd: &Path,
) -> Result<Settings> {
    let env_value = |name: &str| non_empty(env(name));
    let config_file = find_config_file(config_path, env, cwd)?;
    let file = match &config_file {
        Some(path) => Some(load_file(path)?),
        None => None,
    };

    // Which profile.
    let requested = match profile {
        Some(p) => Some(Sourced::new(p.to_string(), Source::Flag)),
        None => env_value("UPSTEP_PROFILE")
            .map(|p| Sourced::new(p, Source::Env("UPSTEP_PROFILE".into()))),
    };
    let (profile_name, profile_file) = match (&file, &config_file, requested) {
        (Some(file), Some(path), requested) => {
            let chosen = requested.or_else(|| {
                file.default_profile.clone().map(|p| {
                    Sourced::new(
                        p.clone(),
                        Source::Profile {
                            name: p,
                            file: path.clone(),
                            via_env: None,
                        },
                    )
                })
            });
            match chosen {
                Some(name) => match file.profiles.get(&name.value) {
                    Some(p) => (Some(name), Some(p)),
                    None => {
                        let known: Vec<&str> = file.profiles.keys().map(String::as_str).collect();
                        return Err(Error::config(
                            format!(
                                "no profile `{}` in {} (from {}); it has {}",
                                name.value,
                                path.display(),
                                name.source,
                                if known.is_empty() {
                                    "no profiles".to_string()
                                } else {
                                    format!("profiles: {}", known.join(", "))
                                }
                            ),
                            if known.is_empty() {
                                format!("add a [profiles.{}] table to the file", name.value)
                            } else {
                                format!("use one of: {}", known.join(", "))
                            },
                        ));
                    }
                },
                None => (None, None),
            }
        }
        (_, _, Some(name)) => {
            let looked: Vec<String> = default_config_paths(env, cwd)
                .iter()
                .map(|p| p.display().to_string())
                .collect();
            return Err(Error::config(
                format!(
                    "profile `{}` was asked for (by {}), but there is no settings file (looked at {})",
                    name.value,
                    name.source,
                    looked.join(", ")
                ),
                "create one (see docs/configuration.md), or point at it with --config FILE",
            ));
        }
        _ => (None, None),
    };

    let file_path_buf = config_file.clone().unwrap_or_default();
    let file_dir = file_path_buf
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| cwd.to_path_buf());
    let pname = profile_name
        .as_ref()
        .map(|p| p.value.clone())
        .unwrap_or_default();
    let from_profile = |via_env: Option<&str>| Source::Profile {
        name: pname.clone(),
        file: file_path_buf.clone(),
        via_env: via_env.map(str::to_string),
    };

    // A profile value that is either literal or read from a named variable.
    let profile_value = |literal: &Option<Uri>,
                         var: &Option<String>,
                         field: &str|
     -> Result<Option<Sourced<Uri>>> {
        match (literal, var) {
            (Some(_), Some(_)) => Err(Error::config(
                format!(
                    "profile `{pname}` in {} sets both {field} and {field}_env",
                    file_path_buf.display()
                ),
                "keep one of them".to_string(),
            )),
            (Some(v), None) => Ok(Some(Sourced::new(v.clone(), from_profile(None)))),
            (None, Some(var)) => match env_value(var) {
                Some(v) => Ok(Some(Sourced::new(Uri::new(v), from_profile(Some(var))))),
                None => Err(Error::config(
                    format!(
                        "profile `{pname}` in {} reads {field} from the environment variable \
                         {var}, which is not set",
                        file_path_buf.display()
                    ),
                    format!("export {var}, or give the value with a flag"),
                )),
            },
            (None, None) => Ok(None),
        }
    };

    // MongoDB: flag > UPSTEP_MONGO_URI > MONGO_URL > profile.
    let mongo_uri = match non_empty_uri(flags.mongo_uri.clone()) {
        Some(v) => Some(Sourced::new(v, Source::Flag)),
        None => match ["UPSTEP_MONGO_URI", "MONGO_URL"].iter().find_map(|var| {
            env_value(var).map(|v| Sourced::new(Uri::new(v), Source::Env(var.to_string())))
        }) {
            Some(v) => Some(v),
            None => match profile_file {
                Some(p) => profile_value(&p.mongo_uri, &p.mongo_uri_env, "mongo_uri")?,
                None => None,
            },
        },
    };

    let redis_url = match non_empty_uri(flags.redis_url.clone()) {
        Some(v) => Sourced::new(v, Source::Flag),
        None => match env_value("UPSTEP_REDIS_URL") {
            Some(v) => Sourced::new(Uri::new(v), Source::Env("UPSTEP_REDIS_URL".into())),
            None => match profile_file {
                Some(p) => profile_value(&p.redis_url, &p.redis_url_env, "redis_url")?,
                None => None,
            }
            .unwrap_or_else(|| Sourced::new(Uri::new(REDIS_AUTO), Source::Default)),
        },
    };

    let repo = match flags.repo.clone().filter(|r| !r.is_empty()) {
        Some(v) => Some(Sourced::new(v, Source::Flag)),
        None => match env_value("UPSTEP_REPO") {
            Some(v) => Some(Sourced::new(
                RepoLocation::from(v),
                Source::Env("UPSTEP_REPO".into()),
            )),
            None => match profile_file {
                Some(p) => profile_value(&p.repo, &p.repo_env, "repo")?
                    .map(|r| Sourced::new(file_repo(r.value.expose(), &file_dir, env), r.source)),
                None => None,
            },
        },
    };

    let map = match &flags.map {
        Some(v) => Some(Sourced::new(v.clone(), Source::Flag)),
        None => match env_value("UPSTEP_MAP") {
            Some(v) => Some(Sourced::new(
                PathBuf::from(v),
                Source::Env("UPSTEP_MAP".into()),
            )),
            None => profile_file.and_then(|p| {
                p.map
                    .as_deref()
                    .map(|m| Sourced::new(file_path(m, &file_dir, env), from_profile(None)))
            }),
        },
    };

    let encryption_key_env = match profile_file.and_then(|p| p.encryption_key_env.clone()) {
        Some(name) if is_env_name(&name) => Sourced::new(name, from_profile(None)),
        Some(_) => {
            // Not echoed: it may be the key itself.
            return Err(Error::config(
                format!(
                    "profile `{pname}` in {}: encryption_key_env is not the name of an \
                     environment variable (its value is not shown, in case it is the key itself)",
                    file_path_buf.display()
                ),
                "set encryption_key_env to a variable NAME such as STORE_ENCRYPTION_KEY and \
                 export the key in that variable; never write the key in the file",
            ));
        }
        None => Sourced::new(DEFAULT_ENCRYPTION_KEY_ENV.to_string(), Source::Default),
    };

    let ssh = resolve_ssh(
        flags,
        profile_file.and_then(|p| p.ssh.as_ref()),
        &from_profile(None),
        &file_dir,
        env,
    )?;

    Ok(Settings {
        mongo_uri,
        redis_url,
        repo,
        map,
        encryption_key_env,
        ssh,
        profile: profile_name,
        config_file,
    })
}

fn resolve_ssh(
    flags: &FlagValues,
    file: Option<&SshFile>,
    profile_source: &Source,
    file_dir: &Path,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Option<SshSettings>> {
    let f = &flags.ssh;
    let any_flag = f.identity_file.is_some()
        || f.jump_host.is_some()
        || f.known_hosts.is_some()
        || f.known_hosts_file.is_some()
        || f.remote_mongo.is_some()
        || f.remote_redis.is_some();
    let (host, host_source) = match (&f.host, file) {
        (Some(h), _) => (h.clone(), Source::Flag),
        (None, Some(file)) => (file.host.clone(), profile_source.clone()),
        (None, None) if any_flag => {
            return Err(Error::usage(
                "--ssh-* options were given without an SSH host",
                "add --ssh [user@]host[:port] (or an [profiles.NAME.ssh] table in upstep.toml)",
            ))
        }
        (None, None) => return Ok(None),
    };
    let in_file = |what: &str| -> Error {
        Error::config(
            format!("{profile_source}: ssh.{what}"),
            "see docs/configuration.md for the format",
        )
    };
    let (destination, port) = parse_ssh_target(&host).map_err(|e| match host_source {
        Source::Flag => e,
        _ => in_file(&format!("host `{host}` is not [user@]host[:port]")),
    })?;

    let pick = |flag: &Option<PathBuf>, file_value: Option<&PathBuf>| -> Option<Sourced<PathBuf>> {
        match (flag, file_value) {
            (Some(v), _) => Some(Sourced::new(v.clone(), Source::Flag)),
            (None, Some(v)) => Some(Sourced::new(
                file_path(v, file_dir, env),
                profile_source.clone(),
            )),
            (None, None) => None,
        }
    };
    let pick_str =
        |flag: &Option<String>, file_value: Option<&String>| -> Option<Sourced<String>> {
            match (flag, file_value) {
                (Some(v), _) => Some(Sourced::new(v.clone(), Source::Flag)),
                (None, Some(v)) => Some(Sourced::new(v.clone(), profile_source.clone())),
                (None, None) => None,
            }
        };
    let host_port = |value: Option<Sourced<String>>,
                     flag: &str,
                     field: &str|
     -> Result<Option<Sourced<(String, u16)>>> {
        match value {
            None => Ok(None),
            Some(v) => match parse_host_port(&v.value) {
                Some(hp) => Ok(Some(Sourced::new(hp, v.source))),
                None if v.source == Source::Flag => Err(Error::usage(
                    format!("{flag} `{}` is not host:port", v.value),
                    format!("write it as host:port as the SSH host sees it, e.g. {flag} 127.0.0.1:27017"),
                )),
                None => Err(in_file(&format!("{field} `{}` is not host:port", v.value))),
            },
        }
    };

    let known_hosts = match (f.known_hosts, file.and_then(|s| s.known_hosts)) {
        (Some(k), _) => Sourced::new(k, Source::Flag),
        (None, Some(k)) => Sourced::new(k, profile_source.clone()),
        (None, None) => Sourced::new(KnownHostsPolicy::Strict, Source::Default),
    };

    Ok(Some(SshSettings {
        destination: Sourced::new(destination, host_source),
        port,
        identity_file: pick(
            &f.identity_file,
            file.and_then(|s| s.identity_file.as_ref()),
        ),
        jump_host: pick_str(&f.jump_host, file.and_then(|s| s.jump_host.as_ref())),
        known_hosts,
        known_hosts_file: pick(
            &f.known_hosts_file,
            file.and_then(|s| s.known_hosts_file.as_ref()),
        ),
        remote_mongo: host_port(
            pick_str(&f.remote_mongo, file.and_then(|s| s.remote_mongo.as_ref())),
            "--ssh-remote-mongo",
            "remote_mongo",
        )?,
        remote_redis: host_port(
            pick_str(&f.remote_redis, file.and_then(|s| s.remote_redis.as_ref())),
            "--ssh-remote-redis",
            "remote_redis",
        )?,
    }))
}

impl SshSettings {
    /// The tunnel to open: MongoDB (`remote_mongo`, else the URI's host:port) and, when
    /// `remote_redis` is set, Redis.
    pub fn tunnel_spec(
        &self,
        mongo_uri: Option<&Uri>,
        batch_mode: bool,
    ) -> Result<crate::tunnel::TunnelSpec> {
        use crate::tunnel::{mongo_forward_target, Forward, ForwardKind, TunnelSpec};
        let mut spec = TunnelSpec::new(self.destination.value.clone());
        spec.port = self.port;
        spec.identity_file = self.identity_file.as_ref().map(|s| s.value.clone());
        spec.jump_host = self.jump_host.as_ref().map(|s| s.value.clone());
        spec.known_hosts = self.known_hosts.value;
        spec.known_hosts_file = self.known_hosts_file.as_ref().map(|s| s.value.clone());
        spec.batch_mode = batch_mode;
        let (host, port) = match (&self.remote_mongo, mongo_uri) {
            (Some(r), _) => r.value.clone(),
            (None, Some(uri)) => mongo_forward_target(uri)?,
            (None, None) => {
                return Err(Error::usage(
                    "an SSH tunnel needs to know where MongoDB is, and there is no MongoDB URI",
                    "give --mongo-uri (or MONGO_URL), or --ssh-remote-mongo host:port",
                ))
            }
        };
        spec.forwards.push(Forward {
            remote_host: host,
            remote_port: port,
            kind: ForwardKind::Mongo,
        });
        if let Some(r) = &self.remote_redis {
            spec.forwards.push(Forward {
                remote_host: r.value.0.clone(),
                remote_port: r.value.1,
                kind: ForwardKind::Redis,
            });
        }
        Ok(spec)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_are_one_based() {
        assert_eq!(line_col("ab\ncd", 0), (1, 1));
        assert_eq!(line_col("ab\ncd", 4), (2, 2));
    }

    #[test]
    fn env_names() {
        assert!(is_env_name("STORE_ENCRYPTION_KEY"));
        assert!(!is_env_name("abc-def"));
        assert!(!is_env_name("9ABC"));
    }

    #[test]
    fn remote_repos_are_kept() {
        let env = |_: &str| None;
        let dir = Path::new("/etc/upstep");
        for (given, resolved) in [
            (
                "https://github.com/novuhq/novu",
                "https://github.com/novuhq/novu",
            ),
            (
                "git@github.com:novuhq/novu.git",
                "git@github.com:novuhq/novu.git",
            ),
            ("novu", "/etc/upstep/novu"),
        ] {
            assert_eq!(file_repo(given, dir, &env), RepoLocation::from(resolved));
        }
    }
}
