//! A progress bar on standard error for long work, drawn only when
//! standard error is a terminal, so piped output stays clean.

use std::io::{IsTerminal, Write};

/// Draws `label [#####-----] 50% (n/total)` in place, or `label: n what`
/// while the total is not known.
pub struct Progress {
    label: &'static str,
    shown: bool,
    /// The percent last drawn, or the ten thousands of a count.
    last: Option<u64>,
}

impl Progress {
    /// A bar for `label`; drawn only on a terminal.
    pub fn new(label: &'static str) -> Progress {
        Progress {
            label,
            shown: std::io::stderr().is_terminal(),
            last: None,
        }
    }

    /// Reports `done` of `total`.
    pub fn update(&mut self, done: u64, total: u64) {
        if !self.shown || total == 0 {
            return;
        }
        let percent = done.min(total) * 100 / total;
        if self.last == Some(percent) {
            return;
        }
        self.last = Some(percent);
        let filled = usize::try_from(percent / 5).unwrap_or(20);
        let bar = format!("{}{}", "#".repeat(filled), "-".repeat(20 - filled.min(20)));
        let mut stderr = std::io::stderr();
        let _ = write!(
            stderr,
            "\r{} [{bar}] {percent:>3}% ({done}/{total})",
            self.label
        );
        let _ = stderr.flush();
    }

    /// Reports `done` of a total not known yet, each time it passes
    /// another 10,000.
    pub fn count(&mut self, done: u64, what: &str) {
        let step = done / 10_000;
        if !self.shown || step == 0 || self.last == Some(step) {
            return;
        }
        self.last = Some(step);
        let mut stderr = std::io::stderr();
        let _ = write!(stderr, "\r{}: {done} {what}", self.label);
        let _ = stderr.flush();
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        if self.shown && self.last.is_some() {
            eprintln!();
        }
    }
}
