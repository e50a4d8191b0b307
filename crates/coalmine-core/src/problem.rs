//! Problems found in a Canary: where (a field path), what, and how to fix it.

use std::fmt;

/// How bad a problem is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Severity {
    /// The file is used as it is, but probably not as meant.
    Warning,
    /// The file cannot be used.
    Error,
}

/// One thing wrong with a Canary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Error or warning.
    pub severity: Severity,
    /// The field, e.g. `spec.steps[3].setWeight`.
    pub path: String,
    /// What is wrong, e.g. `140 is above 100`.
    pub message: String,
    /// How to fix it, where that is not obvious.
    pub hint: Option<String>,
}

impl Problem {
    /// An error at `path`.
    pub fn error(path: impl Into<String>, message: impl Into<String>) -> Self {
        Problem {
            severity: Severity::Error,
            path: path.into(),
            message: message.into(),
            hint: None,
        }
    }

    /// A warning at `path`.
    pub fn warning(path: impl Into<String>, message: impl Into<String>) -> Self {
        Problem {
            severity: Severity::Warning,
            ..Problem::error(path, message)
        }
    }

    /// The same problem with a hint on how to fix it.
    pub fn hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    /// Whether this problem stops the file from being used.
    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.severity == Severity::Warning {
            f.write_str("warning: ")?;
        }
        if self.path.is_empty() {
            f.write_str(&self.message)?;
        } else {
            write!(f, "{}: {}", self.path, self.message)?;
        }
        if let Some(hint) = &self.hint {
            write!(f, " ({hint})")?;
        }
        Ok(())
    }
}

/// The candidate closest to `word` by edit distance, if it is close enough
/// to be a typo of it.
pub fn did_you_mean<'a>(
    word: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    let limit = (word.chars().count() / 3).max(1);
    candidates
        .into_iter()
        .map(|c| (edit_distance(&word.to_lowercase(), &c.to_lowercase()), c))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

/// Edit distance counting a swap of two neighbours as one edit (optimal
/// string alignment), since `bda` for `bad` is the commonest typo.
fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let w = b.len() + 1;
    let mut d = vec![0usize; (a.len() + 1) * w];
    for i in 0..=a.len() {
        for j in 0..=b.len() {
            d[i * w + j] = if i == 0 || j == 0 {
                i + j
            } else {
                let cost = usize::from(a[i - 1] != b[j - 1]);
                let mut best = (d[(i - 1) * w + j] + 1)
                    .min(d[i * w + j - 1] + 1)
                    .min(d[(i - 1) * w + j - 1] + cost);
                if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                    best = best.min(d[(i - 2) * w + j - 2] + 1);
                }
                best
            };
        }
    }
    d[a.len() * w + b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edit_distances() {
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(edit_distance("same", "same"), 0);
        assert_eq!(edit_distance("bda", "bad"), 1);
    }

    #[test]
    fn suggests_only_near_misses() {
        let fields = [
            "setWeight",
            "pause",
            "analysis",
            "setHeaderRoute",
            "setMirror",
        ];
        assert_eq!(did_you_mean("setWeigth", fields), Some("setWeight"));
        assert_eq!(did_you_mean("setweight", fields), Some("setWeight"));
        assert_eq!(did_you_mean("paus", fields), Some("pause"));
        assert_eq!(did_you_mean("rollback", fields), None);
    }

    #[test]
    fn displays_path_message_and_hint() {
        let p = Problem::error("spec.steps[3].setWeight", "140 is above 100").hint("use 0 to 100");
        assert_eq!(
            p.to_string(),
            "spec.steps[3].setWeight: 140 is above 100 (use 0 to 100)"
        );
        let w = Problem::warning("spec.steps[2]", "weight goes down");
        assert_eq!(w.to_string(), "warning: spec.steps[2]: weight goes down");
    }
}
