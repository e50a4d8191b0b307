//! Keep-alive HTTP/1.1 connections to one upstream server.
//!
//! A stack of idle connections (hyper's low-level `SendRequest`s) per
//! upstream, behind a mutex held for a push or a pop. A connection goes back
//! on the stack when the answer's body has been read to the end
//! ([`PooledBody`]); one whose answer was cut short is closed.
//!
//! `GET` and `HEAD` requests without a body take a faster path over
//! connections of their own ([`crate::h1`]); everything else goes through
//! hyper's client connection.
//!
//! Why not hyper-util's pooled client: profiling the proxy showed its
//! per-request work (a hash-map pool keyed by scheme and authority, checkout
//! futures, large moves) at about a fifth of all instructions; the proxy
//! already knows which server it wants, so a plain stack per server does.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::body::{BoxError, RequestBody};
use crate::h1;

/// Idle connections kept per upstream at most.
const MAX_IDLE: usize = 1024;
/// New connections tried for one request before giving up.
const MAX_CONNECTS: usize = 2;

/// Connections to one upstream server.
pub struct ConnPool {
    /// `host:port` to connect to.
    target: String,
    connect_timeout: Duration,
    idle: Mutex<Vec<SendRequest<RequestBody>>>,
    /// Idle connections of the fast path ([`h1`]).
    fast_idle: Mutex<Vec<h1::Conn>>,
}

/// Why a request got no answer.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// No connection could be opened.
    #[error("could not connect: {0}")]
    Connect(io::Error),
    /// The connection failed while the request was under way.
    #[error("the upstream failed: {0}")]
    Exchange(BoxError),
}

impl SendError {
    /// Every new connection tried for one request was closed at once.
    fn exhausted() -> SendError {
        SendError::Connect(io::Error::new(
            io::ErrorKind::ConnectionAborted,
            "the upstream closed every new connection",
        ))
    }
}

impl ConnPool {
    /// A pool for `target` (`host:port`).
    pub fn new(target: String, connect_timeout: Duration) -> Self {
        ConnPool {
            target,
            connect_timeout,
            idle: Mutex::new(Vec::new()),
            fast_idle: Mutex::new(Vec::new()),
        }
    }

    /// Sends `req` (origin-form URI, `Host` set) on an idle connection, or a
    /// new one. A request that never left (the connection had closed) is
    /// retried on another connection; one that did is not, since it may
    /// not be idempotent.
    pub async fn send(
        self: &Arc<Self>,
        req: Request<RequestBody>,
    ) -> Result<Response<PooledBody>, SendError> {
        if h1::eligible(&req) {
            return self.send_fast(&req).await;
        }
        // Boxed: the rarer path's future is large, and the request's
        // future (moved a few times per request) would be as large.
        Box::pin(self.send_hyper(req)).await
    }

    /// Over hyper's client connection: requests with bodies, upgrades.
    async fn send_hyper(
        self: &Arc<Self>,
        mut req: Request<RequestBody>,
    ) -> Result<Response<PooledBody>, SendError> {
        let mut connects = 0;
        loop {
            let mut tx = match self.take_idle() {
                Some(tx) => tx,
                None if connects < MAX_CONNECTS => {
                    connects += 1;
                    self.connect().await?
                }
                None => return Err(SendError::exhausted()),
            };
            if tx.ready().await.is_err() {
                continue;
            }
            match tx.try_send_request(req).await {
                Ok(resp) => {
                    let pool = self.clone();
                    return Ok(resp.map(|body| PooledBody {
                        inner: Inner::Hyper {
                            body,
                            give_back: Some((tx, pool)),
                        },
                    }));
                }
                Err(mut e) => match e.take_message() {
                    Some(unsent) => req = unsent,
                    None => return Err(SendError::Exchange(e.into_error().into())),
                },
            }
        }
    }

    /// The fast path: an idle connection of its own, or a new one. A
    /// reused connection that turns out closed before any answer came back
    /// (the upstream's keep-alive timeout) gets the request again on a new
    /// one, which is safe because the request is a `GET` or `HEAD`.
    async fn send_fast(
        self: &Arc<Self>,
        req: &Request<RequestBody>,
    ) -> Result<Response<PooledBody>, SendError> {
        let mut connects = 0;
        loop {
            let idle = self.take_fast();
            let fresh = idle.is_none();
            let conn = match idle {
                Some(conn) => conn,
                None if connects < MAX_CONNECTS => {
                    connects += 1;
                    // Boxed for the same reason: new connections are rare.
                    h1::Conn::new(Box::pin(self.connect_stream()).await?)
                }
                None => return Err(SendError::exhausted()),
            };
            match conn.exchange(req).await {
                Ok((head, body)) => {
                    let pool = self.clone();
                    let (parts, ()) = head.into_parts();
                    return Ok(Response::from_parts(
                        parts,
                        PooledBody {
                            inner: Inner::Fast { body, pool },
                        },
                    ));
                }
                Err(h1::Error::Closed(_)) if !fresh => {}
                Err(e) => return Err(SendError::Exchange(e.into())),
            }
        }
    }

    /// An idle fast-path connection that is still clean ([`h1::Conn::is_clean`]).
    fn take_fast(&self) -> Option<h1::Conn> {
        loop {
            let mut conn = self
                .fast_idle
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .pop()?;
            if conn.is_clean() {
                return Some(conn);
            }
        }
    }

    fn put_fast(&self, conn: h1::Conn) {
        let mut idle = self.fast_idle.lock().unwrap_or_else(|e| e.into_inner());
        if idle.len() < MAX_IDLE {
            idle.push(conn);
        }
    }

    fn take_idle(&self) -> Option<SendRequest<RequestBody>> {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        while let Some(tx) = idle.pop() {
            if !tx.is_closed() {
                return Some(tx);
            }
        }
        None
    }

    fn put_idle(&self, tx: SendRequest<RequestBody>) {
        if tx.is_closed() {
            return;
        }
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        if idle.len() < MAX_IDLE {
            idle.push(tx);
        }
    }

    async fn connect_stream(&self) -> Result<TcpStream, SendError> {
        let stream = match tokio::time::timeout(
            self.connect_timeout,
            TcpStream::connect(&self.target),
        )
        .await
        {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => return Err(SendError::Connect(e)),
            Err(_) => {
                return Err(SendError::Connect(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("no connection within {:?}", self.connect_timeout),
                )));
            }
        };
        let _ = stream.set_nodelay(true);
        Ok(stream)
    }

    async fn connect(&self) -> Result<SendRequest<RequestBody>, SendError> {
        let stream = self.connect_stream().await?;
        let (tx, conn) = http1::Builder::new()
            .writev(false)
            // The same limits as the fast path's.
            .max_buf_size(h1::MAX_HEAD)
            .handshake(TokioIo::new(stream))
            .await
            .map_err(|e| SendError::Exchange(e.into()))?;
        tokio::spawn(async move {
            if let Err(e) = conn.with_upgrades().await {
                tracing::debug!(error = %e, "upstream connection ended with an error");
            }
        });
        Ok(tx)
    }
}

/// An upstream answer's body; its connection goes back to the pool when the
/// body has been read to the end.
pub struct PooledBody {
    inner: Inner,
}

enum Inner {
    /// Over hyper's client connection.
    Hyper {
        body: Incoming,
        give_back: Option<(SendRequest<RequestBody>, Arc<ConnPool>)>,
    },
    /// Over the fast path, which reads the socket as it is polled.
    Fast { body: h1::Body, pool: Arc<ConnPool> },
}

impl PooledBody {
    /// Keeps the connection out of the pool (it was upgraded, say).
    pub fn detach(&mut self) {
        if let Inner::Hyper { give_back, .. } = &mut self.inner {
            *give_back = None;
        }
    }

    fn release(&mut self) {
        match &mut self.inner {
            Inner::Hyper { give_back, .. } => {
                if let Some((tx, pool)) = give_back.take() {
                    pool.put_idle(tx);
                }
            }
            Inner::Fast { body, pool } => {
                if let Some(conn) = body.take_conn() {
                    pool.put_fast(conn);
                }
            }
        }
    }
}

impl Body for PooledBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        let frame: Option<Result<Frame<Bytes>, BoxError>> = match &mut this.inner {
            Inner::Hyper { body, give_back } => {
                match std::task::ready!(Pin::new(&mut *body).poll_frame(cx)) {
                    Some(Err(e)) => {
                        *give_back = None;
                        Some(Err(e.into()))
                    }
                    other => other.map(|f| f.map_err(Into::into)),
                }
            }
            Inner::Fast { body, .. } => {
                std::task::ready!(body.poll_frame(cx)).map(|f| f.map_err(Into::into))
            }
        };
        match &frame {
            None => this.release(),
            Some(Ok(_)) if this.is_end_stream() => this.release(),
            _ => {}
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        match &self.inner {
            Inner::Hyper { body, .. } => body.is_end_stream(),
            Inner::Fast { body, .. } => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.inner {
            Inner::Hyper { body, .. } => body.size_hint(),
            Inner::Fast { body, .. } => body.size_hint(),
        }
    }
}

impl Drop for PooledBody {
    fn drop(&mut self) {
        // A body never polled because it was empty (HEAD, 204, length 0)
        // still frees its connection; one cut short does not.
        if self.is_end_stream() {
            self.release();
        }
    }
}
