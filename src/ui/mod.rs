//! Everything upstep prints on stdout goes through here: human text (aligned, coloured only
//! on a terminal and never under NO_COLOR) or JSON. Logs go to stderr through `tracing`.

pub mod backup_text;
pub mod cache_text;
pub mod config_text;
pub mod detect_text;
pub mod doctor_text;
pub mod events;
pub mod map_text;
pub mod plan_text;
pub mod progress;
pub mod rehearse_recorder;
pub mod rehearse_text;
pub mod status_text;
pub mod words;

use std::io::{IsTerminal, Write};

use serde::Serialize;

use crate::error::{Error, Result};

/// Minimal ANSI styling; a no-op when colour is off.
#[derive(Debug, Clone, Copy)]
pub struct Styler {
    enabled: bool,
}

impl Styler {
    /// Colour when stdout is a terminal and NO_COLOR is unset (https://no-color.org).
    pub fn for_stdout() -> Self {
        let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
        Styler {
            enabled: !no_color && std::io::stdout().is_terminal(),
        }
    }

    /// The same rule for stderr (progress lines of a run).
    pub fn for_stderr() -> Self {
        let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
        Styler {
            enabled: !no_color && std::io::stderr().is_terminal(),
        }
    }

    pub fn plain() -> Self {
        Styler { enabled: false }
    }

    fn paint(&self, code: &str, text: &str) -> String {
        if self.enabled {
            format!("\x1b[{code}m{text}\x1b[0m")
        } else {
            text.to_string()
        }
    }

    pub fn bold(&self, t: &str) -> String {
        self.paint("1", t)
    }
    pub fn dim(&self, t: &str) -> String {
        self.paint("2", t)
    }
    pub fn warn(&self, t: &str) -> String {
        self.paint("33", t)
    }
    pub fn bad(&self, t: &str) -> String {
        self.paint("31", t)
    }
    pub fn good(&self, t: &str) -> String {
        self.paint("32", t)
    }
}

/// Write text to stdout. A closed pipe (`upstep plan | head`) ends quietly.
pub fn print_text(text: &str) -> Result<()> {
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|_| out.flush()) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        Err(e) => Err(Error::Output(e)),
    }
}

/// Write one JSON document (pretty) to stdout.
pub fn print_json<T: Serialize>(value: &T) -> Result<()> {
    let text = serde_json::to_string_pretty(value)
        .map_err(|e| Error::Internal(format!("cannot encode JSON: {e}")))?;
    print_text(&(text + "\n"))
}

/// Pad `s` to `width` display columns (ASCII-oriented; the map's ids are ASCII).
pub fn pad(s: &str, width: usize) -> String {
    let len = s.chars().count();
    if len >= width {
        s.to_string()
    } else {
        format!("{s}{}", " ".repeat(width - len))
    }
}
