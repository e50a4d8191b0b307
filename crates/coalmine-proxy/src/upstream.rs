//! Upstream pools: the servers behind each track, chosen round-robin.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use http::header::HeaderValue;
use http::uri::{Authority, PathAndQuery, Scheme, Uri};

use crate::metrics::{Metrics, UpstreamMetrics};
use crate::pool::ConnPool;
use crate::route::Track;

/// One upstream server.
pub struct Upstream {
    url: String,
    authority: Authority,
    /// Path prefix from the URL (`http://host/api` → `/api`), without a trailing slash.
    prefix: Option<String>,
    /// `Host` for requests that arrive without one (HTTP/1.0).
    host: HeaderValue,
    /// Per-upstream counters.
    pub metrics: UpstreamMetrics,
    /// Keep-alive HTTP/1.1 connections to this server.
    pub pool: Arc<ConnPool>,
}

impl Upstream {
    /// The URL as configured.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The `Host` value naming this server.
    pub fn host(&self) -> &HeaderValue {
        &self.host
    }

    /// The path and query to ask this server for: the prefix, then the
    /// request's path and query.
    fn path_for(&self, request: &Uri) -> Result<PathAndQuery, http::Error> {
        let pq = request
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| PathAndQuery::from_static("/"));
        Ok(match &self.prefix {
            None => pq,
            Some(prefix) => PathAndQuery::try_from(format!("{prefix}{pq}"))?,
        })
    }

    /// The origin-form URI (`/prefix/path?query`) for an HTTP/1.1 request.
    pub fn origin_form(&self, request: &Uri) -> Result<Uri, http::Error> {
        Ok(Uri::from(self.path_for(request)?))
    }

    /// The absolute URI (`http://host:port/prefix/path?query`), for HTTP/2.
    pub fn uri_for(&self, request: &Uri) -> Result<Uri, http::Error> {
        Uri::builder()
            .scheme(Scheme::HTTP)
            .authority(self.authority.clone())
            .path_and_query(self.path_for(request)?)
            .build()
    }
}

/// The servers of one track.
pub struct Pool {
    upstreams: Box<[Upstream]>,
    next: AtomicUsize,
}

impl Pool {
    /// A pool from `http://HOST:PORT[/PREFIX]` URLs.
    pub fn new(
        track: Track,
        urls: &[String],
        metrics: &Metrics,
        connect_timeout: Duration,
    ) -> Result<Pool, String> {
        if urls.is_empty() {
            return Err(format!("the {} pool has no upstreams", track.as_str()));
        }
        let mut upstreams = Vec::with_capacity(urls.len());
        for url in urls {
            let uri: Uri = url
                .parse()
                .map_err(|e| format!("{} upstream `{url}`: {e}", track.as_str()))?;
            if uri.scheme() != Some(&Scheme::HTTP) {
                return Err(format!(
                    "{} upstream `{url}`: only http:// upstreams are supported",
                    track.as_str()
                ));
            }
            let authority = uri
                .authority()
                .cloned()
                .ok_or_else(|| format!("{} upstream `{url}` has no host", track.as_str()))?;
            let path = uri.path().trim_end_matches('/');
            let target = match authority.port_u16() {
                Some(_) => authority.as_str().to_owned(),
                None => format!("{}:80", authority.host()),
            };
            upstreams.push(Upstream {
                url: url.clone(),
                host: HeaderValue::from_str(authority.as_str())
                    .map_err(|e| format!("{} upstream `{url}`: {e}", track.as_str()))?,
                authority,
                prefix: (!path.is_empty()).then(|| path.to_owned()),
                metrics: metrics.upstream(track, url),
                pool: Arc::new(ConnPool::new(target, connect_timeout)),
            });
        }
        Ok(Pool {
            upstreams: upstreams.into_boxed_slice(),
            next: AtomicUsize::new(0),
        })
    }

    /// The next server, round-robin.
    pub fn pick(&self) -> &Upstream {
        let i = if self.upstreams.len() == 1 {
            0
        } else {
            self.next.fetch_add(1, Ordering::Relaxed) % self.upstreams.len()
        };
        &self.upstreams[i]
    }

    /// The configured URLs.
    pub fn urls(&self) -> Vec<String> {
        self.upstreams.iter().map(|u| u.url.clone()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_upstream_uris() {
        let m = Metrics::new();
        let pool = Pool::new(
            Track::Stable,
            &[
                "http://127.0.0.1:9001".into(),
                "http://127.0.0.1:9002/api/".into(),
            ],
            &m,
            Duration::from_secs(1),
        )
        .unwrap();
        let req: Uri = "/v1/items?x=1".parse().unwrap();
        let a = pool.pick().uri_for(&req).unwrap();
        let b = pool.pick().uri_for(&req).unwrap();
        assert_eq!(a.to_string(), "http://127.0.0.1:9001/v1/items?x=1");
        assert_eq!(b.to_string(), "http://127.0.0.1:9002/api/v1/items?x=1");
        assert_eq!(
            pool.pick().origin_form(&req).unwrap().to_string(),
            "/v1/items?x=1"
        );
        assert_eq!(
            pool.pick().origin_form(&req).unwrap().to_string(),
            "/api/v1/items?x=1"
        );
        assert_eq!(pool.pick().url(), "http://127.0.0.1:9001");
    }

    #[test]
    fn refuses_bad_urls() {
        let m = Metrics::new();
        assert!(
            Pool::new(Track::Canary, &[], &m, Duration::from_secs(1))
                .err()
                .unwrap()
                .contains("no upstreams")
        );
        assert!(
            Pool::new(
                Track::Canary,
                &["https://x:1".into()],
                &m,
                Duration::from_secs(1)
            )
            .err()
            .unwrap()
            .contains("only http://")
        );
        assert!(
            Pool::new(
                Track::Canary,
                &["not a url".into()],
                &m,
                Duration::from_secs(1)
            )
            .is_err()
        );
    }
}
