//! A minimal HTTP/1.1 client for coalmine's own needs: the binary's control
//! commands talking to a running `coalmine run`, and the demo's load
//! generator ([`crate::load`]). Plain `http://` on one kept-alive connection; anything more
//! (pools, TLS, retries) belongs to the providers' client.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::header::{AUTHORIZATION, CONTENT_TYPE, HOST, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// Largest answer read (a status document is a few kilobytes).
const MAX_BODY: usize = 4 * 1024 * 1024;

/// One open HTTP/1.1 connection.
pub struct Connection {
    sender: SendRequest<Full<Bytes>>,
    host: HeaderValue,
    /// The `Authorization` header of every request, if any.
    pub auth: Option<HeaderValue>,
}

impl Connection {
    /// Connects to `addr`; `host` goes into every request's `Host` header.
    pub async fn open(addr: SocketAddr, host: &str) -> std::io::Result<Connection> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        let io = TokioIo::new(stream);
        let (sender, conn) = hyper::client::conn::http1::handshake(io)
            .await
            .map_err(std::io::Error::other)?;
        tokio::spawn(async move {
            // Ends when either side closes; a broken connection shows up as
            // an error on the next request, which reconnects.
            let _ = conn.await;
        });
        let host =
            HeaderValue::from_str(host).unwrap_or_else(|_| HeaderValue::from_static("localhost"));
        Ok(Connection {
            sender,
            host,
            auth: None,
        })
    }

    /// Whether another request can be sent on this connection.
    pub fn is_open(&self) -> bool {
        !self.sender.is_closed()
    }

    /// Sends a request and reads the whole answer.
    pub async fn send(
        &mut self,
        method: Method,
        path: &str,
        body: Option<Bytes>,
    ) -> Result<Response<Bytes>, String> {
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .header(HOST, self.host.clone());
        if let Some(auth) = &self.auth {
            req = req.header(AUTHORIZATION, auth.clone());
        }
        if body.is_some() {
            req = req.header(CONTENT_TYPE, "application/json");
        }
        let req = req
            .body(Full::new(body.unwrap_or_default()))
            .map_err(|e| format!("bad request {path}: {e}"))?;
        self.sender
            .ready()
            .await
            .map_err(|e| format!("connection lost: {e}"))?;
        let resp = self
            .sender
            .send_request(req)
            .await
            .map_err(|e| format!("no answer: {e}"))?;
        let (parts, body) = resp.into_parts();
        let bytes = Limited::new(body, MAX_BODY)
            .collect()
            .await
            .map_err(|e| format!("reading the answer: {e}"))?
            .to_bytes();
        Ok(Response::from_parts(parts, bytes))
    }
}

/// A base URL like `http://127.0.0.1:9901`, split for [`Connection::open`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Base {
    /// Where to connect.
    pub addr: SocketAddr,
    /// The `Host` header (the URL's authority).
    pub host: String,
    /// Sent as `Authorization: Bearer TOKEN` when the admin API wants one.
    pub token: Option<String>,
}

impl Base {
    /// Parses `http://HOST:PORT` (a trailing `/` is allowed; a bare
    /// `HOST:PORT` means http). Names are resolved once, here.
    pub async fn parse(url: &str, flag: &str) -> Result<Base, String> {
        let rest = url.strip_prefix("http://").unwrap_or(url);
        if rest.contains("://") {
            return Err(format!(
                "{flag} {url}: only http:// is supported (the admin API listens on loopback)"
            ));
        }
        let authority = rest.trim_end_matches('/');
        if authority.is_empty() || authority.contains('/') {
            return Err(format!(
                "{flag} {url}: give the admin address only, like http://127.0.0.1:9901"
            ));
        }
        let with_port = if authority.rsplit_once(':').is_some_and(|(_, p)| {
            !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) && !authority.ends_with(']')
        }) {
            authority.to_string()
        } else {
            format!("{authority}:80")
        };
        let addr = tokio::net::lookup_host(&with_port)
            .await
            .map_err(|e| format!("{flag} {url}: cannot resolve the address: {e}"))?
            .next()
            .ok_or_else(|| format!("{flag} {url}: the name has no address"))?;
        Ok(Base {
            addr,
            host: authority.to_string(),
            token: None,
        })
    }
}

/// One request on a fresh connection, bounded by `timeout`.
pub async fn call(
    base: &Base,
    method: Method,
    path: &str,
    timeout: Duration,
) -> Result<(StatusCode, Bytes), String> {
    let url = format!("http://{}{path}", base.host);
    let work = async {
        let mut conn = Connection::open(base.addr, &base.host)
            .await
            .map_err(|e| format!("cannot connect to {url}: {e}"))?;
        if let Some(token) = &base.token {
            conn.auth = HeaderValue::from_str(&format!("Bearer {token}")).ok();
        }
        let resp = conn
            .send(method, path, None)
            .await
            .map_err(|e| format!("{url}: {e}"))?;
        Ok((resp.status(), resp.into_body()))
    };
    tokio::time::timeout(timeout, work)
        .await
        .map_err(|_| format!("{url}: no answer within {}s", timeout.as_secs()))?
}
