//! Progress on long work: an indicatif bar on a terminal (rate, ETA, latest metric), plain
//! periodic lines on stderr when not on a terminal (logs, CI).

use indicatif::{ProgressBar, ProgressStyle};
use std::io::IsTerminal;
use std::time::{Duration, Instant};

pub struct Progress {
    bar: Option<ProgressBar>,
    label: String,
    total: u64,
    pos: u64,
    msg: String,
    last_line: Instant,
    every: Duration,
    quiet: bool,
}

impl Progress {
    /// `total` units (samples, episodes, steps) of work labelled `label`.
    pub fn new(label: &str, total: u64, quiet: bool) -> Progress {
        let bar = (!quiet && std::io::stderr().is_terminal()).then(|| {
            let b = ProgressBar::new(total);
            b.set_style(
                ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len} {per_sec} eta {eta} {msg}")
                    .unwrap()
                    .progress_chars("=> "),
            );
            b.set_prefix(label.to_string());
            b
        });
        Progress {
            bar,
            label: label.to_string(),
            total,
            pos: 0,
            msg: String::new(),
            last_line: Instant::now(),
            every: Duration::from_secs(10),
            quiet,
        }
    }

    pub fn set_position(&mut self, pos: u64) {
        self.pos = pos;
        if let Some(b) = &self.bar {
            b.set_position(pos);
        } else {
            self.maybe_line(false);
        }
    }

    pub fn inc(&mut self, n: u64) {
        self.set_position(self.pos + n);
    }

    /// The latest metric, e.g. `valid_nll 18.2`; printed as a plain line at most every 10 s off a terminal.
    pub fn message(&mut self, msg: String) {
        self.msg = msg;
        match &self.bar {
            Some(b) => b.set_message(self.msg.clone()),
            None => self.maybe_line(false),
        }
    }

    fn maybe_line(&mut self, force: bool) {
        if self.quiet || (!force && self.last_line.elapsed() < self.every) {
            return;
        }
        self.last_line = Instant::now();
        eprintln!("{} {}/{} {}", self.label, self.pos, self.total, self.msg);
    }

    pub fn finish(&mut self) {
        match self.bar.take() {
            Some(b) => b.finish_and_clear(),
            None => self.maybe_line(true),
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        if let Some(b) = self.bar.take() {
            b.abandon();
        }
    }
}
