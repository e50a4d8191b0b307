//! Filling `{{track}}`, `{{interval}}`, `{{name}}` and `{{namespace}}` into
//! queries, URLs and bodies, and writing durations the way Prometheus reads
//! them.
//!
//! Placeholders are the ones `coalmine validate` accepts (spaces inside the
//! braces are allowed, as there); anything else between braces is left as
//! written, since validation has already rejected unknown names.

use std::time::Duration;

use coalmine_core::routes::Track;

use crate::Context;

/// The values a template is filled with for one call.
#[derive(Debug, Clone, Copy)]
pub struct Vars<'a> {
    /// The analysis context: name, namespace, interval.
    pub context: &'a Context,
    /// The track asked about; threshold metrics use `canary`.
    pub track: Track,
}

impl Vars<'_> {
    /// The value of placeholder `name`, if it is one.
    fn value(&self, name: &str) -> Option<String> {
        match name {
            "track" => Some(self.track.as_str().to_owned()),
            "interval" => Some(prometheus_duration(self.context.interval)),
            "name" => Some(self.context.name.clone()),
            "namespace" => Some(self.context.namespace.clone()),
            _ => None,
        }
    }
}

/// `template` with every known placeholder replaced by its value, passed
/// through `escape` first (identity for PromQL and bodies, percent-encoding
/// for URLs).
pub fn fill(template: &str, vars: Vars<'_>, escape: fn(&str) -> String) -> String {
    let mut out = String::with_capacity(template.len() + 16);
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        let after = &rest[start + 2..];
        let Some(end) = after.find("}}") else {
            break;
        };
        out.push_str(&rest[..start]);
        match vars.value(after[..end].trim()) {
            Some(v) => out.push_str(&escape(&v)),
            None => out.push_str(&rest[start..start + 2 + end + 2]),
        }
        rest = &after[end + 2..];
    }
    out.push_str(rest);
    out
}

/// Leaves a value as it is.
pub fn verbatim(s: &str) -> String {
    s.to_owned()
}

/// Percent-encodes everything but RFC 3986's unreserved characters, so a
/// value is one safe piece of a URL path or query. Names, namespaces,
/// tracks and durations are made of unreserved characters already, so in
/// practice this changes nothing; it only keeps an odd name from breaking
/// the URL.
pub fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A duration as Prometheus's range selectors read it: units from hours
/// down to milliseconds, largest first, zero parts left out (`10s`,
/// `1m30s`, `2h`, `1s500ms`, `36h`). Prometheus (2.x and 3.x) accepts
/// such compound durations in `[...]`; days and weeks are not used because
/// hours say the same without calendar questions. Sub-millisecond parts
/// are dropped; zero is `0s`.
pub fn prometheus_duration(d: Duration) -> String {
    let mut ms = d.as_millis();
    if ms == 0 {
        return "0s".to_owned();
    }
    let mut out = String::new();
    for (unit, size) in [("h", 3_600_000), ("m", 60_000), ("s", 1_000), ("ms", 1)] {
        let n = ms / size;
        if n > 0 {
            out.push_str(&format!("{n}{unit}"));
            ms %= size;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx(secs: u64) -> Context {
        Context {
            name: "myapp".into(),
            namespace: "shop".into(),
            interval: Duration::from_secs(secs),
        }
    }

    #[test]
    fn durations_in_prometheus_form() {
        let cases = [
            (Duration::from_secs(10), "10s"),
            (Duration::from_secs(60), "1m"),
            (Duration::from_secs(90), "1m30s"),
            (Duration::from_secs(3600), "1h"),
            (Duration::from_secs(3600 + 61), "1h1m1s"),
            (Duration::from_secs(36 * 3600), "36h"),
            (Duration::from_millis(1500), "1s500ms"),
            (Duration::from_millis(250), "250ms"),
            (Duration::from_micros(999), "0s"),
            (Duration::ZERO, "0s"),
        ];
        for (d, want) in cases {
            assert_eq!(prometheus_duration(d), want, "{d:?}");
        }
    }

    #[test]
    fn fills_every_placeholder() {
        let c = ctx(90);
        let vars = Vars {
            context: &c,
            track: Track::Canary,
        };
        assert_eq!(
            fill(
                "sum(increase(x{app=\"{{name}}\",ns=\"{{ namespace }}\",track=\"{{track}}\"}[{{interval}}]))",
                vars,
                verbatim
            ),
            "sum(increase(x{app=\"myapp\",ns=\"shop\",track=\"canary\"}[1m30s]))"
        );
        let stable = Vars {
            track: Track::Stable,
            ..vars
        };
        assert_eq!(
            fill("{{track}}/{{track}}", stable, verbatim),
            "stable/stable"
        );
    }

    #[test]
    fn leaves_unknown_and_unclosed_braces() {
        let c = ctx(10);
        let vars = Vars {
            context: &c,
            track: Track::Stable,
        };
        assert_eq!(
            fill("{{other}} {{track}}", vars, verbatim),
            "{{other}} stable"
        );
        assert_eq!(fill("a {{track", vars, verbatim), "a {{track");
        assert_eq!(fill("no placeholders", vars, verbatim), "no placeholders");
        assert_eq!(fill("{{track}}}", vars, verbatim), "stable}");
    }

    #[test]
    fn url_values_are_percent_encoded() {
        let c = Context {
            name: "my app/ü".into(),
            ..ctx(10)
        };
        let vars = Vars {
            context: &c,
            track: Track::Canary,
        };
        assert_eq!(
            fill("http://h/x?app={{name}}&t={{track}}", vars, percent_encode),
            "http://h/x?app=my%20app%2F%C3%BC&t=canary"
        );
        assert_eq!(percent_encode("a-b_c.d~e"), "a-b_c.d~e");
        assert_eq!(
            percent_encode("sum(x{a=\"b\"})"),
            "sum%28x%7Ba%3D%22b%22%7D%29"
        );
    }
}
