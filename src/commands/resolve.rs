//! The settings path every command shares (flags > environment > upstep.toml profile >
//! defaults), for the values `Settings` leaves to the command: the encryption key's variable,
//! and a MongoDB reached through the SSH tunnel for the commands that connect by URI alone
//! (`backup`, `restore`).

use crate::cli::RunEnvOpts;
use crate::error::{Error, Result};
use crate::redact::Uri;
use crate::settings::Settings;
use crate::tunnel::Tunnel;

/// The variable holding the store encryption key: `--encryption-key-env`, else the profile's
/// `encryption_key_env`, else STORE_ENCRYPTION_KEY.
pub fn key_var(settings: &Settings, run_env: &RunEnvOpts) -> Result<String> {
    match &run_env.encryption_key_env {
        Some(name) if crate::settings::is_env_name(name) => Ok(name.clone()),
        // Not echoed: it may be the key itself.
        Some(_) => Err(Error::usage(
            "--encryption-key-env is not the name of an environment variable (its value is not \
             shown, in case it is the key itself)",
            "pass the NAME of the variable that holds the key, e.g. --encryption-key-env \
             STORE_ENCRYPTION_KEY, and export the key in it",
        )),
        None => Ok(settings.encryption_key_env.value.clone()),
    }
}

/// A MongoDB URI as the settings give it, reached through the SSH tunnel when they ask for
/// one: the URI to use (rewritten to the tunnel's local end) and the tunnel, which must live
/// as long as the URI is used.
pub async fn through_tunnel(
    settings: &Settings,
    uri: Uri,
    batch_mode: bool,
) -> Result<(Uri, Option<Tunnel>)> {
    match &settings.ssh {
        Some(ssh) => {
            let spec = ssh.tunnel_spec(Some(&uri), batch_mode)?;
            let tunnel = crate::tunnel::open(spec).await?;
            let local = tunnel.rewrite_mongo_uri(&uri)?;
            Ok((local, Some(tunnel)))
        }
        None => Ok((uri, None)),
    }
}

/// The settings of a command that only needs MongoDB (`backup`, `restore`): the URI from the
/// flag, the environment or the profile, and the profile's (or the flags') SSH tunnel.
pub fn mongo_settings(
    mongo: &crate::cli::MongoOpts,
    ssh: &crate::cli::SshOpts,
    profile: &crate::cli::ProfileOpts,
) -> Result<Settings> {
    let connect = crate::cli::ConnectOpts {
        mongo: mongo.clone(),
        redis: Default::default(),
        ssh: ssh.clone(),
        profile: profile.clone(),
    };
    super::run::resolve_settings(
        &connect,
        &crate::cli::RepoOpts::default(),
        &crate::cli::MapOpts { map: None },
    )
}
