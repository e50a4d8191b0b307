//! The route table the data plane applies: the proxy admin API's JSON body
//! (`GET/PUT /routes`) and what the rollout state machine asks routers for.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Requests that go to the canary whatever the weight: a header or a cookie
/// whose value equals `value` or matches `regex`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
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
    /// Regular expression the value must match; exactly one of `value` and `regex`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub regex: Option<String>,
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
}

impl Routes {
    /// Everything to stable: no weight, no header routes, no mirror, no stickiness.
    pub fn all_stable() -> Self {
        Routes::default()
    }

    /// Whether any request, real or mirrored, can reach the canary.
    pub fn reaches_canary(&self) -> bool {
        self.canary_weight > 0
            || !self.header_routes.is_empty()
            || self.mirror_percent > 0
            || self.sticky_cookie.is_some()
    }
}
