//! Progress for copy commands: indicatif bars on a terminal, plain lines (at most one every few
//! seconds) when stderr is a file or a pipe.

use indicatif::{ProgressBar, ProgressStyle};
use std::io::IsTerminal;
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub struct Reporter {
    bar: Option<ProgressBar>,
    /// Plain mode: when the last line was printed.
    last: Mutex<Option<Instant>>,
    what: &'static str,
}

impl Reporter {
    /// `quiet`: no progress at all (JSON output).
    pub fn new(what: &'static str, quiet: bool) -> Reporter {
        let bar = (!quiet && std::io::stderr().is_terminal()).then(|| {
            let b = ProgressBar::new(0);
            b.set_style(
                ProgressStyle::with_template(
                    "{msg} [{bar:30}] {bytes}/{total_bytes} {binary_bytes_per_sec} ETA {eta}",
                )
                .expect("valid template")
                .progress_chars("=> "),
            );
            b
        });
        Reporter {
            bar,
            last: Mutex::new(if quiet { None } else { Some(Instant::now()) }),
            what,
        }
    }

    /// Reports items and bytes done out of totals.
    pub fn update(&self, items_done: u64, items_total: u64, bytes_done: u64, bytes_total: u64) {
        if let Some(b) = &self.bar {
            b.set_length(bytes_total);
            b.set_position(bytes_done);
            b.set_message(format!("{} {items_done}/{items_total}", self.what));
            return;
        }
        let mut last = self.last.lock().expect("progress lock");
        let Some(t) = *last else { return };
        let finished = items_done == items_total && bytes_done == bytes_total;
        if t.elapsed() >= Duration::from_secs(3) || (finished && items_total > 0) {
            eprintln!(
                "{}: {items_done}/{items_total}, {bytes_done}/{bytes_total} bytes",
                self.what
            );
            *last = Some(Instant::now());
        }
    }

    pub fn finish(&self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
    }
}
