//! Progress reporting for backup and restore: a trait, a terminal bar, and a silent one.

use std::io::IsTerminal;
use std::sync::Mutex;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Told about each collection as it is copied. Called from the copying task only.
pub trait Progress: Send + Sync {
    /// A collection starts; `total_docs` is an estimate when known.
    fn start(&self, collection: &str, total_docs: Option<u64>);
    /// `docs` more documents (`bytes` more BSON bytes) were copied.
    fn advance(&self, docs: u64, bytes: u64);
    /// The collection is done.
    fn finish(&self, collection: &str);
    /// Whether a total (and so an ETA) is shown: counting a collection first is worth it only
    /// then (on some servers a count reads the whole collection).
    fn shows_totals(&self) -> bool {
        false
    }
}

/// Reports nothing: for tests and `--json`.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoProgress;

impl Progress for NoProgress {
    fn start(&self, _collection: &str, _total_docs: Option<u64>) {}
    fn advance(&self, _docs: u64, _bytes: u64) {}
    fn finish(&self, _collection: &str) {}
}

/// A bar per collection on stderr with documents/s and ETA; draws nothing when stderr is not a
/// terminal (so logs and pipelines stay clean).
pub struct BarProgress {
    verb: &'static str,
    visible: bool,
    bar: Mutex<Option<ProgressBar>>,
}

impl BarProgress {
    /// `verb` heads each line, e.g. "backup" or "restore".
    pub fn new(verb: &'static str) -> Self {
        BarProgress {
            verb,
            visible: std::io::stderr().is_terminal(),
            bar: Mutex::new(None),
        }
    }

    fn with_bar(&self, f: impl FnOnce(&mut Option<ProgressBar>)) {
        if let Ok(mut guard) = self.bar.lock() {
            f(&mut guard);
        }
    }
}

impl Progress for BarProgress {
    fn shows_totals(&self) -> bool {
        self.visible
    }

    fn start(&self, collection: &str, total_docs: Option<u64>) {
        let target = if self.visible {
            ProgressDrawTarget::stderr()
        } else {
            ProgressDrawTarget::hidden()
        };
        let bar = ProgressBar::with_draw_target(total_docs, target);
        let template = if total_docs.is_some() {
            "{prefix:.bold} [{bar:30}] {human_pos}/{human_len} docs  {per_sec}  ETA {eta}"
        } else {
            "{prefix:.bold} {spinner} {human_pos} docs  {per_sec}"
        };
        if let Ok(style) = ProgressStyle::with_template(template) {
            bar.set_style(style.progress_chars("=> "));
        }
        bar.set_prefix(format!("{} {collection}", self.verb));
        bar.enable_steady_tick(Duration::from_millis(200));
        self.with_bar(|slot| {
            if let Some(old) = slot.take() {
                old.finish_and_clear();
            }
            *slot = Some(bar);
        });
    }

    fn advance(&self, docs: u64, _bytes: u64) {
        self.with_bar(|slot| {
            if let Some(bar) = slot {
                bar.inc(docs);
            }
        });
    }

    fn finish(&self, _collection: &str) {
        self.with_bar(|slot| {
            if let Some(bar) = slot.take() {
                bar.finish_and_clear();
            }
        });
    }
}
