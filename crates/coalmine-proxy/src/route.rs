//! The per-request routing decision, compiled from a [`Routes`] table.
//!
//! Order: header routes → sticky cookie → weight. The
//! weighted choice is exact rather than random: request `n` goes to the
//! canary when `floor((n+1)·w/100) > floor(n·w/100)`, so every 100
//! consecutive requests carry exactly `w` canary requests. That keeps the
//! split within one percentage point over 20,000 requests, also at 1%, by
//! construction,
//! where a coin flip would miss it now and then.
//!
//! Sticky cookies are signed: the value is the track and an HMAC-SHA256
//! tag over the cookie's name and the track ([`StickyKey`]), so a client
//! can only present a pin the proxy handed out; any other value is
//! ignored and the request is routed by weight.

use std::sync::atomic::{AtomicU64, Ordering};

use coalmine_core::Problem;
use coalmine_core::routes::{Routes, whole_value};
use http::header::{COOKIE, HeaderMap, HeaderName, HeaderValue};
use regex::Regex;
use ring::hmac;

pub use coalmine_core::routes::Track;

/// The track header's value for `track`.
pub(crate) fn header_value(track: Track) -> HeaderValue {
    HeaderValue::from_static(track.as_str())
}

/// Why a request went where it went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// A header or cookie route matched.
    HeaderRoute,
    /// The sticky cookie named the track.
    Sticky,
    /// The weighted choice.
    Weight,
}

/// The decision for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Choice {
    /// Where it goes.
    pub track: Track,
    /// Why.
    pub reason: Reason,
}

enum Pattern {
    Exact(String),
    Regex(Regex),
}

impl Pattern {
    fn matches(&self, value: &str) -> bool {
        match self {
            Pattern::Exact(v) => v == value,
            Pattern::Regex(r) => r.is_match(value),
        }
    }
}

enum Matcher {
    Header(HeaderName, Pattern),
    Cookie(String, Pattern),
}

/// A compiled route table: regexes built, header names parsed, the
/// `Set-Cookie` values for stickiness prepared once.
pub struct RouteTable {
    routes: Routes,
    matchers: Vec<Matcher>,
    weight: u64,
    mirror: u64,
    sticky: Option<Sticky>,
}

struct Sticky {
    name: String,
    /// The signed cookie values, `stable.TAG` and `canary.TAG`.
    stable: String,
    canary: String,
    set_stable: HeaderValue,
    set_canary: HeaderValue,
}

/// The key that signs sticky cookies: random per process unless given
/// (several proxies behind one balancer share one).
#[derive(Clone)]
pub struct StickyKey(hmac::Key);

impl StickyKey {
    /// A key from the operator's secret bytes.
    pub fn new(secret: &[u8]) -> Self {
        StickyKey(hmac::Key::new(hmac::HMAC_SHA256, secret))
    }

    /// A random key from the system's generator.
    pub fn random() -> Result<Self, String> {
        let rng = ring::rand::SystemRandom::new();
        hmac::Key::generate(hmac::HMAC_SHA256, &rng)
            .map(StickyKey)
            .map_err(|_| "no random bytes for the sticky cookie's key".to_owned())
    }

    /// `TRACK.TAG`: the track, and 128 bits of the HMAC of the cookie's
    /// name and the track, in hex.
    fn value(&self, name: &str, track: Track) -> String {
        let mut ctx = hmac::Context::with_key(&self.0);
        ctx.update(name.as_bytes());
        ctx.update(b"\0");
        ctx.update(track.as_str().as_bytes());
        let tag = ctx.sign();
        let hex: String = tag.as_ref()[..16]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        format!("{}.{hex}", track.as_str())
    }
}

impl std::fmt::Debug for StickyKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StickyKey(..)")
    }
}

/// Equality in time independent of where the inputs differ.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl RouteTable {
    /// Checks and compiles a table, sticky cookies signed with `key`; on
    /// failure, every problem.
    pub fn compile(routes: Routes, key: &StickyKey) -> Result<Self, Vec<Problem>> {
        let problems = routes.check();
        if !problems.is_empty() {
            return Err(problems);
        }
        let mut matchers = Vec::with_capacity(routes.header_routes.len());
        for (i, m) in routes.header_routes.iter().enumerate() {
            let pattern = match (&m.value, &m.regex) {
                (Some(v), _) => Pattern::Exact(v.clone()),
                (None, Some(r)) => Pattern::Regex(Regex::new(&whole_value(r)).map_err(|e| {
                    vec![Problem::error(
                        format!("headerRoutes[{i}].regex"),
                        e.to_string(),
                    )]
                })?),
                (None, None) => unreachable_pattern(i)?,
            };
            matchers.push(match (&m.header, &m.cookie) {
                (Some(h), _) => {
                    let name = HeaderName::from_bytes(h.as_bytes()).map_err(|e| {
                        vec![Problem::error(
                            format!("headerRoutes[{i}].header"),
                            e.to_string(),
                        )]
                    })?;
                    Matcher::Header(name, pattern)
                }
                (None, Some(c)) => Matcher::Cookie(c.clone(), pattern),
                (None, None) => unreachable_pattern(i)?,
            });
        }
        let sticky = match &routes.sticky_cookie {
            Some(name) => {
                let age = routes
                    .sticky_max_age
                    .map(|d| format!("; Max-Age={}", d.as_millis() / 1000))
                    .unwrap_or_default();
                let stable = key.value(name, Track::Stable);
                let canary = key.value(name, Track::Canary);
                let set = |value: &str| {
                    HeaderValue::from_str(&format!(
                        "{name}={value}; Path=/; HttpOnly; SameSite=Lax{age}"
                    ))
                    .map_err(|e| vec![Problem::error("stickyCookie", e.to_string())])
                };
                Some(Sticky {
                    name: name.clone(),
                    set_stable: set(&stable)?,
                    set_canary: set(&canary)?,
                    stable,
                    canary,
                })
            }
            None => None,
        };
        Ok(RouteTable {
            weight: u64::from(routes.canary_weight),
            mirror: u64::from(routes.mirror_percent),
            routes,
            matchers,
            sticky,
        })
    }

    /// The table as given, for `GET /routes`.
    pub fn routes(&self) -> &Routes {
        &self.routes
    }

    /// Where a request with these headers goes. `counter` is the proxy's
    /// request counter, shared by all connections.
    pub fn choose(&self, headers: &HeaderMap, counter: &AtomicU64) -> Choice {
        if !self.matchers.is_empty() && self.matchers.iter().any(|m| m.matches(headers)) {
            return Choice {
                track: Track::Canary,
                reason: Reason::HeaderRoute,
            };
        }
        if let Some(sticky) = &self.sticky
            && let Some(value) = cookie(headers, &sticky.name)
        {
            if same(value.as_bytes(), sticky.stable.as_bytes()) {
                return Choice {
                    track: Track::Stable,
                    reason: Reason::Sticky,
                };
            }
            // A canary cookie only holds while the canary gets traffic:
            // at weight 0 (a restart, say) nobody is pinned to it.
            if self.weight > 0 && same(value.as_bytes(), sticky.canary.as_bytes()) {
                return Choice {
                    track: Track::Canary,
                    reason: Reason::Sticky,
                };
            }
        }
        Choice {
            track: if every(counter, self.weight) {
                Track::Canary
            } else {
                Track::Stable
            },
            reason: Reason::Weight,
        }
    }

    /// Whether this stable request should also be copied to the canary.
    pub fn mirror(&self, counter: &AtomicU64) -> bool {
        self.mirror > 0 && every(counter, self.mirror)
    }

    /// The `Set-Cookie` value pinning a user to `track`, when the choice was
    /// made by weight and stickiness is on.
    pub fn set_cookie(&self, choice: Choice) -> Option<&HeaderValue> {
        let sticky = self.sticky.as_ref()?;
        (choice.reason == Reason::Weight).then_some(match choice.track {
            Track::Stable => &sticky.set_stable,
            Track::Canary => &sticky.set_canary,
        })
    }
}

fn unreachable_pattern<T>(i: usize) -> Result<T, Vec<Problem>> {
    // `Routes::check` has already refused these; kept as an error, not a panic.
    Err(vec![Problem::error(
        format!("headerRoutes[{i}]"),
        "incomplete match",
    )])
}

/// Bresenham's split: true for exactly `percent` of every 100 consecutive ticks.
fn every(counter: &AtomicU64, percent: u64) -> bool {
    if percent == 0 {
        return false;
    }
    if percent >= 100 {
        return true;
    }
    let n = counter.fetch_add(1, Ordering::Relaxed) % 100;
    (n + 1) * percent / 100 > n * percent / 100
}

impl Matcher {
    fn matches(&self, headers: &HeaderMap) -> bool {
        match self {
            Matcher::Header(name, pattern) => headers
                .get_all(name)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .any(|v| pattern.matches(v)),
            Matcher::Cookie(name, pattern) => {
                cookie(headers, name).is_some_and(|v| pattern.matches(v))
            }
        }
    }
}

/// The value of cookie `name` in the request's `Cookie` headers.
fn cookie<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim_matches('"'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use coalmine_core::routes::HeaderMatch;

    fn key() -> StickyKey {
        StickyKey::new(b"test key")
    }

    fn table(routes: Routes) -> RouteTable {
        RouteTable::compile(routes, &key()).unwrap()
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn weights_are_exact_in_every_hundred() {
        for w in [0u8, 1, 5, 10, 33, 50, 99, 100] {
            let t = table(Routes {
                canary_weight: w,
                ..Routes::default()
            });
            let counter = AtomicU64::new(0);
            let h = HeaderMap::new();
            for block in 0..200 {
                let canary = (0..100)
                    .filter(|_| t.choose(&h, &counter).track == Track::Canary)
                    .count();
                assert_eq!(canary, usize::from(w), "weight {w}, block {block}");
            }
        }
    }

    #[test]
    fn a_regex_matches_the_whole_value_as_with_every_router() {
        let t = table(Routes {
            canary_weight: 0,
            header_routes: vec![
                HeaderMatch {
                    header: Some("x-user".into()),
                    regex: Some("beta|qa".into()),
                    ..HeaderMatch::default()
                },
                HeaderMatch {
                    cookie: Some("group".into()),
                    regex: Some("dev[0-9]".into()),
                    ..HeaderMatch::default()
                },
            ],
            ..Routes::default()
        });
        let c = AtomicU64::new(0);
        let track = |pairs: &[(&str, &str)]| t.choose(&headers(pairs), &c).track;
        assert_eq!(track(&[("x-user", "beta")]), Track::Canary);
        assert_eq!(track(&[("x-user", "qa")]), Track::Canary);
        for part in ["beta-1", "xbeta", "qa2", "nobeta"] {
            assert_eq!(track(&[("x-user", part)]), Track::Stable, "{part}");
        }
        assert_eq!(track(&[("cookie", "group=dev1")]), Track::Canary);
        assert_eq!(track(&[("cookie", "group=dev12")]), Track::Stable);
        assert_eq!(track(&[("cookie", "group=mydev1")]), Track::Stable);
    }

    #[test]
    fn header_and_cookie_routes_win_over_weight() {
        let t = table(Routes {
            canary_weight: 0,
            header_routes: vec![
                HeaderMatch {
                    header: Some("x-canary".into()),
                    value: Some("always".into()),
                    ..HeaderMatch::default()
                },
                HeaderMatch {
                    cookie: Some("beta".into()),
                    regex: Some("^y(es)?$".into()),
                    ..HeaderMatch::default()
                },
            ],
            ..Routes::default()
        });
        let c = AtomicU64::new(0);
        assert_eq!(
            t.choose(&headers(&[("x-canary", "always")]), &c).reason,
            Reason::HeaderRoute
        );
        assert_eq!(
            t.choose(&headers(&[("X-Canary", "always")]), &c).track,
            Track::Canary
        );
        assert_eq!(
            t.choose(&headers(&[("x-canary", "never")]), &c).track,
            Track::Stable
        );
        assert_eq!(
            t.choose(&headers(&[("cookie", "a=1; beta=yes")]), &c).track,
            Track::Canary
        );
        assert_eq!(
            t.choose(&headers(&[("cookie", "a=1"), ("cookie", "beta=y")]), &c)
                .track,
            Track::Canary
        );
        assert_eq!(
            t.choose(&headers(&[("cookie", "beta=no")]), &c).track,
            Track::Stable
        );
    }

    #[test]
    fn sticky_cookie_pins_and_is_set_only_on_weighted_choices() {
        let t = table(Routes {
            canary_weight: 50,
            sticky_cookie: Some("coalmine-track".into()),
            sticky_max_age: Some(coalmine_core::Duration::from_secs(3600)),
            ..Routes::default()
        });
        let c = AtomicU64::new(0);
        let canary = format!(
            "coalmine-track={}",
            key().value("coalmine-track", Track::Canary)
        );
        let stable = format!(
            "coalmine-track={}",
            key().value("coalmine-track", Track::Stable)
        );
        for _ in 0..10 {
            let ch = t.choose(&headers(&[("cookie", &canary)]), &c);
            assert_eq!((ch.track, ch.reason), (Track::Canary, Reason::Sticky));
            assert!(t.set_cookie(ch).is_none());
            assert_eq!(
                t.choose(&headers(&[("cookie", &stable)]), &c).track,
                Track::Stable
            );
        }
        let ch = t.choose(&HeaderMap::new(), &c);
        let set = t.set_cookie(ch).unwrap().to_str().unwrap();
        assert_eq!(
            set,
            format!(
                "coalmine-track={}; Path=/; HttpOnly; SameSite=Lax; Max-Age=3600",
                key().value("coalmine-track", ch.track)
            )
        );
        // At weight 0 a canary cookie no longer pins.
        let t0 = table(Routes {
            canary_weight: 0,
            sticky_cookie: Some("coalmine-track".into()),
            ..Routes::default()
        });
        assert_eq!(
            t0.choose(&headers(&[("cookie", &canary)]), &c).track,
            Track::Stable
        );
    }

    #[test]
    fn sticky_cookies_the_proxy_did_not_sign_are_ignored() {
        let t = table(Routes {
            canary_weight: 1,
            sticky_cookie: Some("coalmine-track".into()),
            ..Routes::default()
        });
        let other = StickyKey::new(b"another key").value("coalmine-track", Track::Canary);
        let genuine = key().value("coalmine-track", Track::Canary);
        let c = AtomicU64::new(0);
        for forged in [
            "canary".to_owned(),
            "stable".to_owned(),
            "canary.".to_owned(),
            other,
            genuine[..genuine.len() - 1].to_owned(),
            format!("{genuine}0"),
        ] {
            let ch = t.choose(
                &headers(&[("cookie", &format!("coalmine-track={forged}"))]),
                &c,
            );
            assert_eq!(ch.reason, Reason::Weight, "{forged}");
        }
        let ch = t.choose(
            &headers(&[("cookie", &format!("coalmine-track={genuine}"))]),
            &c,
        );
        assert_eq!((ch.track, ch.reason), (Track::Canary, Reason::Sticky));
    }

    #[test]
    fn mirror_share_is_exact() {
        let t = table(Routes {
            mirror_percent: 20,
            ..Routes::default()
        });
        let c = AtomicU64::new(0);
        assert_eq!((0..1000).filter(|_| t.mirror(&c)).count(), 200);
    }

    #[test]
    fn bad_tables_are_refused_with_reasons() {
        let errs = RouteTable::compile(
            Routes {
                canary_weight: 140,
                header_routes: vec![HeaderMatch {
                    header: Some("x".into()),
                    regex: Some("(".into()),
                    ..HeaderMatch::default()
                }],
                ..Routes::default()
            },
            &key(),
        )
        .err()
        .unwrap();
        let text: Vec<String> = errs.iter().map(ToString::to_string).collect();
        assert_eq!(text.len(), 2, "{text:?}");
        assert!(text[0].starts_with("canaryWeight: 140 is above 100"));
        assert!(text[1].starts_with("headerRoutes[0].regex: `(` is not a regular expression"));
    }
}
