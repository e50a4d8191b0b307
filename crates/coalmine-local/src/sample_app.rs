//! The sample app: a small HTTP server to put behind the proxy in demos
//! and tests (`coalmine sample-app`, and the demo's two in-process apps),
//! with a version to tell stable from canary, an error rate and a latency
//! to make one of them worse.
//!
//! Every request (any method, any path) is answered after `latency` ±
//! uniform `jitter` with JSON `{"version": V, "path": "/x", "error": false}`;
//! a share `error_rate` of them get a 500 with `"error": true` instead.
//! `GET /healthz` is always `200 ok`, without delay or errors. Every answer
//! carries an `x-sample-version: V` header.
//!
//! [`serve`] runs it on a listener with a [`SampleConfig`].

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use http::header::{CONTENT_TYPE, HeaderName, HeaderValue};
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use rand::rngs::SmallRng;
use rand::{RngExt, SeedableRng};
use tokio::net::TcpListener;

/// The response header naming the version that answered.
const VERSION_HEADER: HeaderName = HeaderName::from_static("x-sample-version");

/// After the shutdown signal, time given to requests in flight on top of
/// the longest possible delay.
const GRACE: std::time::Duration = std::time::Duration::from_secs(5);

/// What a sample app answers and how.
#[derive(Debug, Clone, PartialEq)]
pub struct SampleConfig {
    /// Reported as `version` in the JSON body and in the `x-sample-version`
    /// header (left out of the header if it is not a valid header value).
    pub version: String,
    /// Share of requests answered 500, from 0 to 1 (values outside are
    /// clamped; NaN counts as 0).
    pub error_rate: f64,
    /// Delay before each answer (not `/healthz`).
    pub latency: std::time::Duration,
    /// Each delay is `latency` plus a uniform offset in `-jitter..=jitter`,
    /// never below zero.
    pub jitter: std::time::Duration,
}

/// Serves the sample app on `listener` (HTTP/1.1 with keep-alive) until
/// `shutdown` completes; then stops accepting and lets open connections
/// finish the requests they are in (for a bounded time).
pub async fn serve(
    listener: TcpListener,
    config: SampleConfig,
    shutdown: impl Future<Output = ()>,
) {
    let error_rate = if config.error_rate.is_nan() {
        0.0
    } else {
        config.error_rate.clamp(0.0, 1.0)
    };
    let grace = GRACE
        .saturating_add(config.latency)
        .saturating_add(config.jitter);
    let app = Arc::new(App {
        header: HeaderValue::from_str(&config.version).ok(),
        config: SampleConfig {
            error_rate,
            ..config
        },
    });
    let seeds = Arc::new(Seeds::new());
    // The proxy's accept loop (keep-alive, graceful drain) serves the app
    // too; each request draws from its own generator, seeded uniquely.
    let handler = move |req: Request<Incoming>, _peer| {
        let mut rng = SmallRng::seed_from_u64(seeds.next());
        app.reply(req, &mut rng)
    };
    coalmine_proxy::server::serve(listener, handler, shutdown, grace).await;
}

/// The shared, read-only part of a running sample app.
struct App {
    config: SampleConfig,
    header: Option<HeaderValue>,
}

impl App {
    /// Decides now (delay, error) and answers later, so the generator is
    /// not held across an await.
    fn reply(
        self: &Arc<Self>,
        req: Request<Incoming>,
        rng: &mut SmallRng,
    ) -> impl Future<Output = Response<Full<Bytes>>> + Send + use<> {
        let app = Arc::clone(self);
        let health = req.uri().path() == "/healthz";
        let (delay, error) = if health {
            (std::time::Duration::ZERO, false)
        } else {
            (self.delay(rng), rng.random_bool(self.config.error_rate))
        };
        async move {
            let path = req.uri().path().to_owned();
            // Read the request body so the connection can be kept alive.
            let mut body = req.into_body();
            while let Some(frame) = body.frame().await {
                if frame.is_err() {
                    break;
                }
            }
            if health {
                return app.response(StatusCode::OK, "text/plain", Bytes::from_static(b"ok"));
            }
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            // Written by hand to keep the fields in this order.
            let json = format!(
                r#"{{"version":{},"path":{},"error":{error}}}"#,
                serde_json::Value::from(app.config.version.as_str()),
                serde_json::Value::from(path),
            );
            let status = if error {
                StatusCode::INTERNAL_SERVER_ERROR
            } else {
                StatusCode::OK
            };
            app.response(status, "application/json", Bytes::from(json))
        }
    }

    /// `latency` ± uniform `jitter`, never below zero.
    fn delay(&self, rng: &mut SmallRng) -> std::time::Duration {
        let SampleConfig {
            latency, jitter, ..
        } = self.config;
        if jitter.is_zero() {
            return latency;
        }
        let spread = u64::try_from(jitter.as_micros()).unwrap_or(u64::MAX / 2);
        let offset = rng.random_range(0..=spread.saturating_mul(2));
        let up = std::time::Duration::from_micros(offset);
        latency.saturating_add(up).saturating_sub(jitter)
    }

    fn response(
        &self,
        status: StatusCode,
        content_type: &'static str,
        body: Bytes,
    ) -> Response<Full<Bytes>> {
        let mut resp = Response::new(Full::new(body));
        *resp.status_mut() = status;
        let headers = resp.headers_mut();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
        if let Some(v) = &self.header {
            headers.insert(VERSION_HEADER, v.clone());
        }
        resp
    }
}

/// Distinct seeds for the per-connection generators of one server.
struct Seeds {
    base: u64,
    count: AtomicU64,
}

impl Seeds {
    fn new() -> Self {
        // No OS randomness in this build of `rand`: the clock and the
        // process id are enough to make two sample apps differ.
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        Seeds {
            base: nanos ^ (u64::from(std::process::id()) << 32),
            count: AtomicU64::new(0),
        }
    }

    fn next(&self) -> u64 {
        let n = self.count.fetch_add(1, Ordering::Relaxed);
        self.base ^ n.wrapping_mul(0x9E37_79B9_7F4A_7C15)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_stay_within_the_jitter_and_above_zero() {
        let ms = std::time::Duration::from_millis;
        let app = App {
            config: SampleConfig {
                version: "v1".into(),
                error_rate: 0.0,
                latency: ms(5),
                jitter: ms(10),
            },
            header: None,
        };
        let mut rng = SmallRng::seed_from_u64(7);
        let delays: Vec<_> = (0..2000).map(|_| app.delay(&mut rng)).collect();
        assert!(delays.iter().all(|d| *d <= ms(15)));
        assert!(delays.iter().any(|d| d.is_zero()));
        assert!(delays.iter().any(|d| *d > ms(12)));
    }
}
