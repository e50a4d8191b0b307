//! A small, tolerant reader of the Prometheus text exposition format, for
//! scraping a proxy's `/metrics`.
//!
//! It reads what the proxy writes (and what any exporter writes): `#`
//! comment, `HELP` and `TYPE` lines, samples `name{label="value",...} value
//! [timestamp]` with escaped label values (`\\`, `\"`, `\n`), and the
//! special values `NaN`, `+Inf`, `-Inf`. It is tolerant on purpose: a line
//! it cannot read is reported in [`Parsed::errors`] and skipped, so one odd
//! metric from a newer proxy cannot hide the counters the judge needs.
//! Timestamps and OpenMetrics exemplars are ignored.

/// One sample line.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// The metric name, e.g. `coalmine_proxy_requests_total`.
    pub name: String,
    /// The labels, in the order written.
    pub labels: Vec<(String, String)>,
    /// The value; may be NaN or infinite.
    pub value: f64,
}

impl Sample {
    /// The value of label `name`, if present.
    pub fn label(&self, name: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// The samples of a text, and the lines that could not be read.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Parsed {
    /// Every sample read, in order.
    pub samples: Vec<Sample>,
    /// `line N: why` for each line skipped.
    pub errors: Vec<String>,
}

/// Reads every sample of `text`, skipping (and reporting) bad lines.
pub fn parse(text: &str) -> Parsed {
    let mut parsed = Parsed::default();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        match sample(line) {
            Ok(s) => parsed.samples.push(s),
            Err(why) => parsed.errors.push(format!("line {}: {why}", i + 1)),
        }
    }
    parsed
}

/// A float as the format writes it: Go's `ParseFloat` forms plus `NaN`,
/// `+Inf`, `-Inf` (any case).
pub fn parse_value(s: &str) -> Option<f64> {
    match s.to_ascii_lowercase().as_str() {
        "nan" => Some(f64::NAN),
        "+inf" | "inf" => Some(f64::INFINITY),
        "-inf" => Some(f64::NEG_INFINITY),
        // Rust would also read "infinity"; the format never writes it.
        "infinity" | "+infinity" | "-infinity" => None,
        _ => s.parse().ok(),
    }
}

struct Cursor<'a> {
    s: &'a str,
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn peek(&self) -> Option<char> {
        self.s[self.pos..].chars().next()
    }

    fn bump(&mut self) -> Option<char> {
        let c = self.peek()?;
        self.pos += c.len_utf8();
        Some(c)
    }

    fn skip_spaces(&mut self) {
        while matches!(self.peek(), Some(' ' | '\t')) {
            self.pos += 1;
        }
    }

    fn ident(&mut self, colons: bool) -> &'a str {
        let start = self.pos;
        while let Some(c) = self.peek() {
            let ok = c.is_ascii_alphabetic()
                || c == '_'
                || (colons && c == ':')
                || (self.pos > start && c.is_ascii_digit());
            if !ok {
                break;
            }
            self.pos += 1;
        }
        &self.s[start..self.pos]
    }

    fn expect(&mut self, want: char) -> Result<(), String> {
        match self.bump() {
            Some(c) if c == want => Ok(()),
            Some(c) => Err(format!("expected `{want}`, found `{c}`")),
            None => Err(format!("expected `{want}`, found the end of the line")),
        }
    }

    fn quoted(&mut self) -> Result<String, String> {
        self.expect('"')?;
        let mut out = String::new();
        loop {
            match self.bump() {
                None => return Err("a label value is not closed with `\"`".to_owned()),
                Some('"') => return Ok(out),
                Some('\\') => match self.bump() {
                    Some('n') => out.push('\n'),
                    Some('\\') => out.push('\\'),
                    Some('"') => out.push('"'),
                    // Unknown escapes are kept as written, like Prometheus.
                    Some(c) => {
                        out.push('\\');
                        out.push(c);
                    }
                    None => return Err("a label value ends with `\\`".to_owned()),
                },
                Some(c) => out.push(c),
            }
        }
    }
}

fn sample(line: &str) -> Result<Sample, String> {
    let mut cur = Cursor { s: line, pos: 0 };
    let name = cur.ident(true);
    if name.is_empty() {
        return Err("a sample must start with a metric name".to_owned());
    }
    let name = name.to_owned();
    let after_name = cur.pos;
    cur.skip_spaces();
    let mut labels = Vec::new();
    if cur.peek() != Some('{') {
        cur.pos = after_name;
    } else {
        cur.pos += 1;
        loop {
            cur.skip_spaces();
            if cur.peek() == Some('}') {
                cur.pos += 1;
                break;
            }
            let label = cur.ident(false);
            if label.is_empty() {
                return Err(format!("`{name}`: expected a label name or `}}`"));
            }
            let label = label.to_owned();
            cur.skip_spaces();
            cur.expect('=').map_err(|e| format!("`{name}`: {e}"))?;
            cur.skip_spaces();
            let value = cur.quoted().map_err(|e| format!("`{name}`: {e}"))?;
            labels.push((label, value));
            cur.skip_spaces();
            match cur.bump() {
                Some(',') => {}
                Some('}') => break,
                Some(c) => return Err(format!("`{name}`: expected `,` or `}}`, found `{c}`")),
                None => return Err(format!("`{name}`: the label set is not closed")),
            }
        }
    }
    let rest = &line[cur.pos..];
    if !rest.is_empty() && !rest.starts_with([' ', '\t']) {
        return Err(format!("`{name}`: expected a space before the value"));
    }
    let token = rest
        .split_whitespace()
        .next()
        .ok_or_else(|| format!("`{name}` has no value"))?;
    let value = parse_value(token).ok_or_else(|| format!("`{name}`: `{token}` is not a number"))?;
    Ok(Sample {
        name,
        labels,
        value,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_proxy_exposition() {
        let m = coalmine_proxy::metrics::Metrics::new();
        m.track(coalmine_core::routes::Track::Canary).record(
            coalmine_core::counters::Class::ServerError,
            std::time::Duration::from_millis(120),
        );
        let parsed = parse(&m.encode());
        assert!(parsed.errors.is_empty(), "{:?}", parsed.errors);
        let s = parsed
            .samples
            .iter()
            .find(|s| {
                s.name == "coalmine_proxy_requests_total"
                    && s.label("track") == Some("canary")
                    && s.label("class") == Some("5xx")
            })
            .expect("the canary 5xx counter");
        assert_eq!(s.value, 1.0);
        let inf = parsed
            .samples
            .iter()
            .find(|s| {
                s.name == "coalmine_proxy_request_duration_seconds_bucket"
                    && s.label("le") == Some("+Inf")
                    && s.label("track") == Some("canary")
            })
            .expect("the +Inf bucket");
        assert_eq!(inf.value, 1.0);
    }

    #[test]
    fn comments_spaces_escapes_and_special_values() {
        let text = "# HELP x_total a \"help\" line\n\
                    # TYPE x_total counter\n\
                    \n\
                    x_total{a=\"q\\\"uote\",b=\"back\\\\slash\",c=\"new\\nline\",} 3 1700000000000\n\
                    y { a = \"1\" , b=\"{,}\" } NaN\n\
                    z +Inf\n\
                    z2{} -Inf\n\
                    w:rate 1.5e3 # {trace_id=\"abc\"} 1\n\
                    u{x=\"caf\u{e9}\"} -0.25\n";
        let p = parse(text);
        assert!(p.errors.is_empty(), "{:?}", p.errors);
        assert_eq!(p.samples.len(), 6);
        assert_eq!(p.samples[0].label("a"), Some("q\"uote"));
        assert_eq!(p.samples[0].label("b"), Some("back\\slash"));
        assert_eq!(p.samples[0].label("c"), Some("new\nline"));
        assert_eq!(p.samples[0].value, 3.0);
        assert_eq!(p.samples[1].label("b"), Some("{,}"));
        assert!(p.samples[1].value.is_nan());
        assert_eq!(p.samples[2].value, f64::INFINITY);
        assert!(p.samples[2].labels.is_empty());
        assert_eq!(p.samples[3].value, f64::NEG_INFINITY);
        assert_eq!(p.samples[4].name, "w:rate");
        assert_eq!(p.samples[4].value, 1500.0);
        assert_eq!(p.samples[5].label("x"), Some("café"));
        assert_eq!(p.samples[5].value, -0.25);
    }

    #[test]
    fn bad_lines_are_skipped_and_reported() {
        let text = "good 1\n\
                    {a=\"b\"} 1\n\
                    bad{a=\"b} 1\n\
                    bad{a=b} 1\n\
                    bad{a=\"b\" c=\"d\"} 1\n\
                    bad{a=\"b\"}1\n\
                    novalue{a=\"b\"}\n\
                    nan_not x\n\
                    alsogood{a=\"b\"} 2\n";
        let p = parse(text);
        let names: Vec<&str> = p.samples.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["good", "alsogood"]);
        assert_eq!(p.errors.len(), 7, "{:?}", p.errors);
        assert!(p.errors[0].starts_with("line 2:"), "{:?}", p.errors);
        assert!(
            p.errors.iter().any(|e| e.contains("not closed")),
            "{:?}",
            p.errors
        );
        assert!(
            p.errors.iter().any(|e| e.contains("`x` is not a number")),
            "{:?}",
            p.errors
        );
    }

    #[test]
    fn values() {
        assert_eq!(parse_value("1"), Some(1.0));
        assert_eq!(parse_value("-1.5e-3"), Some(-0.0015));
        assert_eq!(parse_value("+Inf"), Some(f64::INFINITY));
        assert_eq!(parse_value("Inf"), Some(f64::INFINITY));
        assert_eq!(parse_value("-Inf"), Some(f64::NEG_INFINITY));
        assert!(parse_value("NaN").is_some_and(f64::is_nan));
        assert_eq!(parse_value("infinity"), None);
        assert_eq!(parse_value("1,5"), None);
        assert_eq!(parse_value(""), None);
    }
}
