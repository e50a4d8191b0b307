//! JSON logs, one object per line: `time`, `level`, `target`, `message`, and
//! every field of the event (`canary`, `namespace`, `reason`, …) plus those
//! of the spans it happened in, so log pipelines can filter by Canary.
//!
//! Written here rather than through tracing-subscriber's `json` feature,
//! which needs a crate the workspace does not otherwise use.

use std::fmt;

use serde_json::{Map, Value};
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

/// Formats each event as one JSON object.
#[derive(Debug, Clone, Copy, Default)]
pub struct JsonFormat;

struct Fields<'a>(&'a mut Map<String, Value>);

impl Visit for Fields<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.0
            .insert(field.name().to_owned(), Value::String(format!("{value:?}")));
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.0
            .insert(field.name().to_owned(), Value::String(value.to_owned()));
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.insert(field.name().to_owned(), Value::from(value));
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.insert(field.name().to_owned(), Value::from(value));
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        self.0.insert(field.name().to_owned(), Value::from(value));
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.insert(field.name().to_owned(), Value::from(value));
    }
}

impl<S, N> FormatEvent<S, N> for JsonFormat
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
        let meta = event.metadata();
        let mut out = Map::new();
        out.insert(
            "time".into(),
            Value::String(coalmine_core::Time::now().to_string()),
        );
        out.insert("level".into(), Value::String(meta.level().to_string()));
        out.insert("target".into(), Value::String(meta.target().to_owned()));
        // Span fields, as the fmt layer stored them ("k=v k2=v2"), are
        // flattened in as one string per span: enough to find a reconcile's
        // object, which kube-runtime records on its span.
        if let Some(scope) = ctx.event_scope() {
            let spans: Vec<Value> = scope
                .from_root()
                .map(|span| {
                    let ext = span.extensions();
                    let fields = ext
                        .get::<tracing_subscriber::fmt::FormattedFields<N>>()
                        .map(|f| f.fields.clone())
                        .unwrap_or_default();
                    serde_json::json!({"name": span.name(), "fields": fields})
                })
                .collect();
            if !spans.is_empty() {
                out.insert("spans".into(), Value::Array(spans));
            }
        }
        event.record(&mut Fields(&mut out));
        writeln!(writer, "{}", Value::Object(out))
    }
}

/// Logs to stderr as JSON (`json`) or text; `RUST_LOG` sets the level
/// (default `info`).
pub fn init(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = if json {
        // No colour codes inside the span fields of a JSON line.
        builder.with_ansi(false).event_format(JsonFormat).try_init()
    } else {
        builder.try_init()
    };
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Buffer {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            if let Ok(mut v) = self.0.lock() {
                v.extend_from_slice(b);
            }
            Ok(b.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn each_event_is_one_json_object_with_its_fields() {
        let buf = Buffer::default();
        let writer = buf.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_ansi(false)
            .event_format(JsonFormat)
            .with_writer(move || writer.clone())
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            let span = tracing::info_span!("reconciling", object = "web");
            let _g = span.enter();
            tracing::info!(
                canary = "web",
                weight = 25u64,
                warning = false,
                "step taken"
            );
        });
        let text =
            String::from_utf8(buf.0.lock().map(|v| v.clone()).unwrap_or_default()).expect("utf-8");
        let line: Value = serde_json::from_str(text.trim()).expect("one JSON object");
        assert_eq!(line["message"], "step taken");
        assert_eq!(line["canary"], "web");
        assert_eq!(line["weight"], 25);
        assert_eq!(line["level"], "INFO");
        assert_eq!(line["spans"][0]["name"], "reconciling");
        assert!(line["time"].as_str().is_some_and(|t| t.ends_with('Z')));
    }
}
