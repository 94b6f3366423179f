//! Progress for people at a terminal: an overall bar of steps and, for the running script, a
//! spinner with its elapsed time and latest output line. Everything else (results, notices,
//! log lines) is printed above the bars through the same `MultiProgress`, so nothing tears them.

use std::io::Write;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::events::{event_line, Reporter, RunEvent};
use super::Styler;

/// Where log lines go while bars are drawn (None: straight to stderr).
fn log_sink() -> &'static Mutex<Option<MultiProgress>> {
    static SINK: OnceLock<Mutex<Option<MultiProgress>>> = OnceLock::new();
    SINK.get_or_init(|| Mutex::new(None))
}

/// The writer `tracing` logs through: above the bars while they are drawn, else stderr.
pub struct LogWriter;

impl Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let sink = log_sink().lock().ok().and_then(|s| s.clone());
        match sink {
            Some(mp) => {
                let text = String::from_utf8_lossy(buf);
                let _ = mp.println(text.trim_end_matches('\n'));
                Ok(buf.len())
            }
            None => std::io::stderr().write(buf),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

pub struct ProgressReporter {
    multi: MultiProgress,
    /// The bar of steps, drawn from the first setup or step on: nothing is in progress while
    /// the guided flow asks its questions.
    overall: Option<ProgressBar>,
    /// Steps the decided plan runs.
    total: u64,
    step: Option<ProgressBar>,
    /// A tag's running setup command: its own line, since the next tag is set up while the
    /// steps of the current one run.
    setup: Option<ProgressBar>,
    /// The running setup command's phase (install, build), kept on its spinner's line.
    setup_phase: String,
    styler: Styler,
    /// The plan as last shown: the run decides again under its lock, and an unchanged plan is
    /// not printed twice.
    shown_plan: Option<String>,
}

impl ProgressReporter {
    pub fn new() -> ProgressReporter {
        let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stderr());
        if let Ok(mut sink) = log_sink().lock() {
            *sink = Some(multi.clone());
        }
        ProgressReporter {
            multi,
            overall: None,
            total: 0,
            step: None,
            setup: None,
            setup_phase: String::new(),
            styler: Styler::for_stderr(),
            shown_plan: None,
        }
    }

    /// The bar of steps, created when there is progress to show.
    fn overall(&mut self) -> &ProgressBar {
        let (multi, total) = (&self.multi, self.total);
        self.overall.get_or_insert_with(|| {
            let bar = multi.add(ProgressBar::new(total));
            bar.set_style(
                ProgressStyle::with_template("{prefix:.bold} [{bar:30}] {pos}/{len} steps  {msg}")
                    .unwrap_or_else(|_| ProgressStyle::default_bar())
                    .progress_chars("=> "),
            );
            bar.set_prefix("upgrade");
            bar
        })
    }

    /// For prompts that must hide the bars while they ask (`MultiProgress::suspend`).
    pub fn multi(&self) -> MultiProgress {
        self.multi.clone()
    }

    fn println(&self, line: &str) {
        let _ = self.multi.println(line);
    }
}

impl Default for ProgressReporter {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for ProgressReporter {
    fn drop(&mut self) {
        if let Ok(mut sink) = log_sink().lock() {
            *sink = None;
        }
        for spinner in [self.step.take(), self.setup.take()].into_iter().flatten() {
            spinner.finish_and_clear();
        }
        if let Some(overall) = self.overall.take() {
            overall.finish_and_clear();
        }
    }
}

fn shorten(line: &str, max: usize) -> String {
    let line = line.trim();
    if line.chars().count() <= max {
        line.to_string()
    } else {
        format!("{}…", line.chars().take(max).collect::<String>())
    }
}

impl Reporter for ProgressReporter {
    fn report(&mut self, event: &RunEvent) {
        match event {
            RunEvent::Plan { steps } => {
                self.total = steps.iter().filter(|s| s.action == "run").count() as u64;
                if let Some(overall) = &self.overall {
                    overall.set_length(self.total);
                }
                if let Some(line) = event_line(event, &self.styler, false) {
                    if self.shown_plan.as_deref() != Some(line.as_str()) {
                        self.println(&line);
                        self.shown_plan = Some(line);
                    }
                }
            }
            RunEvent::StepStarted {
                index, id, git_ref, ..
            } => {
                let overall = self.overall();
                overall.set_position(*index as u64 - 1);
                overall.set_message(id.clone());
                if let Some(line) = event_line(event, &self.styler, false) {
                    self.println(&line);
                }
                let spinner = self.multi.add(ProgressBar::new_spinner());
                spinner.set_style(
                    ProgressStyle::with_template("  {spinner} {elapsed_precise} {msg}")
                        .unwrap_or_else(|_| ProgressStyle::default_spinner()),
                );
                spinner.set_message(format!("{id} at {git_ref}"));
                spinner.enable_steady_tick(Duration::from_millis(120));
                self.step = Some(spinner);
            }
            RunEvent::Setup {
                git_ref,
                status,
                phase,
                detail,
                ..
            } if status == "running" || status == "removing" => {
                self.overall();
                if let Some(line) = event_line(event, &self.styler, false) {
                    self.println(&line);
                }
                if let Some(old) = self.setup.take() {
                    old.finish_and_clear();
                }
                let spinner = self.multi.add(ProgressBar::new_spinner());
                spinner.set_style(
                    ProgressStyle::with_template("  {spinner} {elapsed_precise} {msg}")
                        .unwrap_or_else(|_| ProgressStyle::default_spinner()),
                );
                // The spinner's clock is the phase's elapsed time.
                self.setup_phase = phase.clone();
                spinner.set_message(format!("setup {git_ref} {phase}: {}", shorten(detail, 80)));
                spinner.enable_steady_tick(Duration::from_millis(120));
                self.setup = Some(spinner);
            }
            RunEvent::SetupOutput { git_ref, line } => {
                if let Some(spinner) = &self.setup {
                    spinner.set_message(format!(
                        "setup {git_ref} {} | {}",
                        self.setup_phase,
                        shorten(line, 100)
                    ));
                }
            }
            RunEvent::Setup { .. } => {
                if let Some(spinner) = self.setup.take() {
                    spinner.finish_and_clear();
                }
                if let Some(line) = event_line(event, &self.styler, false) {
                    self.println(&line);
                }
            }
            RunEvent::Output { id, line, .. } => {
                if let Some(spinner) = &self.step {
                    spinner.set_message(format!("{id} | {}", shorten(line, 100)));
                }
            }
            RunEvent::StepFinished { .. } => {
                if let Some(spinner) = self.step.take() {
                    spinner.finish_and_clear();
                }
                self.overall().inc(1);
                if let Some(line) = event_line(event, &self.styler, false) {
                    self.println(&line);
                }
            }
            RunEvent::Summary { .. } => {
                if let Some(overall) = self.overall.take() {
                    overall.finish_and_clear();
                }
            }
            other => {
                if let Some(line) = event_line(other, &self.styler, false) {
                    self.println(&line);
                }
            }
        }
    }
}
