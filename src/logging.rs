//! Logs go to stderr (never stdout, which carries results), as text or JSON lines.

use tracing_subscriber::EnvFilter;

use crate::cli::{GlobalOpts, LogFormat};

pub fn init(opts: &GlobalOpts) {
    let default = match (opts.quiet, opts.verbose) {
        (true, _) => "error",
        (false, 0) => "warn",
        (false, 1) => "debug",
        (false, _) => "trace",
    };
    // UPSTEP_LOG overrides the level, e.g. UPSTEP_LOG=upstep=debug.
    let filter = EnvFilter::try_from_env("UPSTEP_LOG").unwrap_or_else(|_| EnvFilter::new(default));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(|| crate::ui::progress::LogWriter)
        .with_target(false);
    // A second init (tests calling run() twice in one process) is harmless: keep the first.
    let _ = match opts.log_format {
        LogFormat::Text => builder.without_time().try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}
