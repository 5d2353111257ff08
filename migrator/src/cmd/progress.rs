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

/// Progress of a running wave: an indicatif bar on a terminal (sites ended of total, sites per
/// state, bytes, rate, ETA, the current throttle reason), else a plain line on stderr whenever
/// the picture changes (at most every 5 s, and at least every 60 s).
pub struct WaveProgress {
    bar: Option<ProgressBar>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// The bar's message: states, bytes, rate, ETA, why the wave waits.
fn wave_message(s: &migrator::control::WaveStatus) -> String {
    let states: Vec<String> = s.states.iter().map(|(k, v)| format!("{k} {v}")).collect();
    let mut m = format!(
        "{} | {} {}/s",
        states.join(", "),
        indicatif::HumanBytes(s.bytes),
        indicatif::HumanBytes(s.rate as u64)
    );
    if let Some(eta) = s.eta_seconds {
        m.push_str(&format!(
            " ETA {}",
            indicatif::HumanDuration(Duration::from_secs_f64(eta))
        ));
    }
    if let Some(r) = &s.control.reason {
        m.push_str(&format!(" | PAUSED: {r}"));
    } else if let Some(l) = s.control.concurrency_limit {
        m.push_str(&format!(" | throttled to {l}"));
    }
    if let Some(w) = migrator::control::throttle_summary(&s.waiting) {
        m.push_str(&format!(" | waiting: {w}"));
    }
    m
}

impl WaveProgress {
    pub fn start(monitor: std::sync::Arc<migrator::monitor::WaveMonitor>, quiet: bool) -> Self {
        use std::sync::atomic::Ordering;
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        if quiet {
            return WaveProgress {
                bar: None,
                stop,
                thread: None,
            };
        }
        let bar = std::io::stderr().is_terminal().then(|| {
            let b = ProgressBar::new(monitor.snapshot().total as u64);
            b.set_style(
                ProgressStyle::with_template(
                    "{spinner} wave {prefix} [{bar:25}] {pos}/{len} sites  {wide_msg}",
                )
                .expect("valid template")
                .progress_chars("=> "),
            );
            b.set_prefix(monitor.wave().to_string());
            b.enable_steady_tick(Duration::from_millis(250));
            b
        });
        let (b, st) = (bar.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            let mut last_line = String::new();
            let mut last_at = Instant::now() - Duration::from_secs(3600);
            while !st.load(Ordering::SeqCst) {
                let s = monitor.snapshot();
                match &b {
                    Some(b) => {
                        b.set_position(s.ended as u64);
                        b.set_message(wave_message(&s));
                    }
                    None => {
                        let line = format!(
                            "wave {}: {}/{} sites | {}",
                            s.wave,
                            s.ended,
                            s.total,
                            wave_message(&s)
                        );
                        // The byte rate changes constantly: compare without it.
                        let key = format!(
                            "{:?}{:?}{:?}{}",
                            s.states, s.waiting, s.control.reason, s.ended
                        );
                        let due = last_at.elapsed() >= Duration::from_secs(60)
                            || (key != last_line && last_at.elapsed() >= Duration::from_secs(5));
                        if due {
                            eprintln!("{line}");
                            last_line = key;
                            last_at = Instant::now();
                        }
                    }
                }
                std::thread::sleep(Duration::from_millis(200));
            }
        });
        WaveProgress {
            bar,
            stop,
            thread: Some(thread),
        }
    }

    /// A line above the bar (or on stderr).
    pub fn println(&self, line: &str) {
        match &self.bar {
            Some(b) => b.println(line),
            None => eprintln!("{line}"),
        }
    }

    pub fn finish(mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
    }
}
