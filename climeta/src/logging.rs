//! Log lines, the same way in every binary: `tracing` events on stderr with a timestamp (UTC,
//! RFC 3339), the level and the module; `RUST_LOG` filters (default `info`); no colour codes
//! unless stderr is a terminal (journald stores the bytes it gets), and `--log-format json`
//! (one object per line: `timestamp`, `level`, `target`, `message`, the event's fields and
//! its spans) for log shippers. User-facing command output stays on stdout, untouched.

use std::fmt;
use std::io::IsTerminal;
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::time::{FormatTime, SystemTime};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::EnvFilter;

/// The shape of a log line.
#[derive(clap::ValueEnum, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LogFormat {
    /// `2026-12-06T05:31:47.123456Z  INFO migrator::serve: message key=value`
    #[default]
    Text,
    /// `{"timestamp":"…","level":"INFO","target":"migrator::serve","message":"…",…}`
    Json,
}

/// The global `--log-format` flag every binary flattens into its command line.
#[derive(clap::Args, Clone, Debug, Default)]
pub struct LogArgs {
    /// Log lines on stderr: text (timestamp, level, module, message) or json (one object per
    /// line). Which levels: RUST_LOG (default info).
    #[arg(
        long,
        global = true,
        value_enum,
        value_name = "FORMAT",
        default_value_t = LogFormat::Text,
        env = "HOSTMOVE_LOG_FORMAT"
    )]
    pub log_format: LogFormat,
}

impl LogArgs {
    /// Installs the process's log subscriber ([`init`]).
    pub fn init(&self) {
        init(self.log_format);
    }
}

/// Installs the subscriber: stderr, `RUST_LOG` (default `info`; an invalid filter is said once
/// and `info` used), colours only on a terminal. A second call is a no-op (tests).
pub fn init(format: LogFormat) {
    let (filter, bad) = match EnvFilter::try_from_default_env() {
        Ok(f) => (f, None),
        Err(e) => {
            let set = std::env::var("RUST_LOG").ok().filter(|v| !v.is_empty());
            (EnvFilter::new("info"), set.map(|v| format!("{v:?}: {e}")))
        }
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none());
    let done = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.event_format(JsonLines).try_init(),
    };
    if let (Ok(()), Some(bad)) = (done, bad) {
        tracing::warn!("RUST_LOG ignored, logging at info: {bad}");
    }
}

/// `--log-format json`: one JSON object per event.
pub struct JsonLines;

impl<S, N> FormatEvent<S, N> for JsonLines
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let mut line = serde_json::Map::new();
        let mut ts = String::new();
        SystemTime.format_time(&mut Writer::new(&mut ts))?;
        let meta = event.metadata();
        line.insert("timestamp".into(), ts.into());
        line.insert("level".into(), meta.level().as_str().into());
        line.insert("target".into(), meta.target().into());
        event.record(&mut JsonFields(&mut line));
        if let Some(scope) = ctx.event_scope() {
            let spans: Vec<serde_json::Value> =
                scope.from_root().map(|s| s.name().into()).collect();
            line.insert("spans".into(), spans.into());
        }
        writeln!(writer, "{}", serde_json::Value::Object(line))
    }
}

/// An event's fields as JSON values (`message` included); numbers and booleans stay typed.
struct JsonFields<'a>(&'a mut serde_json::Map<String, serde_json::Value>);

impl Visit for JsonFields<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.0
            .insert(field.name().into(), format!("{value:?}").into());
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.0.insert(field.name().into(), value.into());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    /// Collects what the subscriber writes.
    #[derive(Clone, Default)]
    struct Buf(Arc<Mutex<Vec<u8>>>);
    impl std::io::Write for Buf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn capture(format: LogFormat, f: impl FnOnce()) -> String {
        let buf = Buf::default();
        let w = buf.clone();
        let b = tracing_subscriber::fmt()
            .with_writer(move || w.clone())
            .with_ansi(false);
        match format {
            LogFormat::Text => tracing::subscriber::with_default(b.finish(), f),
            LogFormat::Json => {
                tracing::subscriber::with_default(b.event_format(JsonLines).finish(), f)
            }
        }
        let out = buf.0.lock().unwrap().clone();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn a_json_line_has_timestamp_level_target_message_fields_and_spans() {
        let out = capture(LogFormat::Json, || {
            let span = tracing::info_span!("wave", number = 3);
            let _g = span.enter();
            tracing::warn!(site = "s1", retries = 2u64, "lease renewal failed");
        });
        let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
        assert_eq!(v["level"], "WARN", "{out}");
        assert_eq!(v["target"], module_path!(), "{out}");
        assert_eq!(v["message"], "lease renewal failed", "{out}");
        assert_eq!(v["site"], "s1", "{out}");
        assert_eq!(v["retries"], 2, "{out}");
        assert_eq!(v["spans"], serde_json::json!(["wave"]), "{out}");
        let ts = v["timestamp"].as_str().unwrap();
        assert!(
            ts.len() >= 20 && ts.ends_with('Z') && ts.contains('T'),
            "{ts}"
        );
    }

    #[test]
    fn a_text_line_has_timestamp_and_level_and_no_colour_codes() {
        let out = capture(LogFormat::Text, || tracing::info!("tunnel up"));
        let line = out.trim();
        let (ts, rest) = line.split_once(' ').unwrap();
        assert!(ts.ends_with('Z') && ts.contains('T'), "{line}");
        assert!(rest.trim_start().starts_with("INFO"), "{line}");
        assert!(line.ends_with("tunnel up"), "{line}");
        assert!(!line.contains('\u{1b}'), "{line}");
    }

    #[test]
    fn the_flag_parses_and_defaults_to_text() {
        use clap::Parser;
        #[derive(Parser)]
        struct Cli {
            #[command(flatten)]
            log: LogArgs,
        }
        std::env::remove_var("HOSTMOVE_LOG_FORMAT");
        assert_eq!(Cli::parse_from(["x"]).log.log_format, LogFormat::Text);
        let json = Cli::parse_from(["x", "--log-format", "json"]);
        assert_eq!(json.log.log_format, LogFormat::Json);
        assert!(Cli::try_parse_from(["x", "--log-format", "xml"]).is_err());
    }
}
