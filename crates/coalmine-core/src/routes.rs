//! The route table the data plane applies: the proxy admin API's JSON body
//! (`GET/PUT /routes`) and what the rollout state machine asks routers for.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::Duration;
use crate::problem::Problem;

/// Which version serves a request, or which Deployment: the same two names
/// in the proxy's metric labels and track header and in the controller's
/// `coalmine.dev/track` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Track {
    /// The current version.
    Stable,
    /// The version under test.
    Canary,
}

impl Track {
    /// `stable` or `canary`.
    pub fn as_str(self) -> &'static str {
        match self {
            Track::Stable => "stable",
            Track::Canary => "canary",
        }
    }
}

/// Requests that go to the canary whatever the weight: a header or a cookie
/// whose value equals `value` or matches `regex`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HeaderMatch {
    /// Header name (case-insensitive); exactly one of `header` and `cookie`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub header: Option<String>,
    /// Cookie name; exactly one of `header` and `cookie`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cookie: Option<String>,
    /// Exact value; exactly one of `value` and `regex`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    /// Regular expression the whole value must match; exactly one of `value` and `regex`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub regex: Option<String>,
}

impl HeaderMatch {
    /// Problems with this match, reported at `path`.
    pub fn check(&self, path: &str) -> Vec<Problem> {
        let mut problems = Vec::new();
        match (&self.header, &self.cookie) {
            (Some(_), Some(_)) | (None, None) => problems.push(
                Problem::error(path, "needs exactly one of `header` and `cookie`")
                    .hint("e.g. {header: x-canary, value: always} or {cookie: beta, value: yes}"),
            ),
            (Some(name), None) | (None, Some(name)) if !is_token(name) => problems.push(
                Problem::error(
                    path,
                    format!("`{name}` is not a valid header or cookie name"),
                )
                .hint("use letters, digits and '-'"),
            ),
            _ => {}
        }
        match (&self.value, &self.regex) {
            (Some(_), Some(_)) | (None, None) => problems.push(
                Problem::error(path, "needs exactly one of `value` and `regex`")
                    .hint("`value` matches exactly, `regex` by a regular expression"),
            ),
            (None, Some(re)) => {
                if let Err(e) = regex::Regex::new(re) {
                    let why = e
                        .to_string()
                        .lines()
                        .last()
                        .unwrap_or_default()
                        .trim()
                        .to_owned();
                    problems.push(Problem::error(
                        format!("{path}.regex"),
                        format!("`{re}` is not a regular expression: {why}"),
                    ));
                }
            }
            _ => {}
        }
        problems
    }
}

/// `regex` anchored at both ends, `^(?:regex)$`: a header route's regex
/// matches the whole header (or cookie) value, never a part of it, with
/// every router. Envoy (Istio, most Gateway API implementations) matches
/// whole values by itself; coalmine's proxy and the ingress-nginx
/// annotation are given the anchored form.
pub fn whole_value(regex: &str) -> String {
    format!("^(?:{regex})$")
}

/// An HTTP token: what header and cookie names may contain.
pub(crate) fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|c| c.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&c))
}

/// The whole routing decision at one moment.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Routes {
    /// Percent of the remaining traffic sent to the canary, 0–100.
    pub canary_weight: u8,
    /// Requests matching any of these go to the canary.
    #[serde(default)]
    pub header_routes: Vec<HeaderMatch>,
    /// Percent of stable requests copied to the canary, 0–100.
    #[serde(default)]
    pub mirror_percent: u8,
    /// Cookie that pins a user to the track that first answered it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sticky_cookie: Option<String>,
    /// How long the sticky cookie lives; for the browser session when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sticky_max_age: Option<Duration>,
}

impl Routes {
    /// Everything to stable: no weight, no header routes, no mirror, no stickiness.
    pub fn all_stable() -> Self {
        Routes::default()
    }

    /// Every problem with this table, each named by its JSON field.
    pub fn check(&self) -> Vec<Problem> {
        let mut problems = Vec::new();
        for (field, v) in [
            ("canaryWeight", self.canary_weight),
            ("mirrorPercent", self.mirror_percent),
        ] {
            if v > 100 {
                problems.push(
                    Problem::error(field, format!("{v} is above 100"))
                        .hint("a percent from 0 to 100"),
                );
            }
        }
        for (i, m) in self.header_routes.iter().enumerate() {
            problems.extend(m.check(&format!("headerRoutes[{i}]")));
        }
        if let Some(c) = self.sticky_cookie.as_deref().filter(|c| !is_token(c)) {
            problems.push(
                Problem::error("stickyCookie", format!("`{c}` is not a valid cookie name"))
                    .hint("use letters, digits and '-', e.g. coalmine-track"),
            );
        }
        problems
    }

    /// Whether any request, real or mirrored, can reach the canary.
    pub fn reaches_canary(&self) -> bool {
        self.canary_weight > 0
            || !self.header_routes.is_empty()
            || self.mirror_percent > 0
            || self.sticky_cookie.is_some()
    }
}
