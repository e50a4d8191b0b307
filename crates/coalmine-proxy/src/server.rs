//! Accept loops with graceful shutdown, for the data port and the admin port.
//!
//! Each loop bounds what a client can hold: connections open at once (a
//! semaphore taken before `accept`, so the surplus waits in the kernel's
//! backlog instead of failing), the time to send a request head, which is
//! also how long an idle keep-alive connection lives, the time a client
//! may leave an answer unread, and the largest request head.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use http::header::HeaderValue;
use http::{Request, Response};
use hyper::body::{Body, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::time::Sleep;

/// Largest request head read (hyper's default is about 400 KiB; HAProxy's
/// whole buffer is 16 KiB).
pub const MAX_REQUEST_HEAD: usize = 64 * 1024;

/// File descriptors kept out of the client connections' budget: listeners,
/// logs, the state file, the admin API.
const FD_RESERVE: usize = 64;

/// Client connections the process's file-descriptor limit allows: each
/// may hold a connection to an upstream too, so half of what is left after
/// a reserve. `None` where the limit cannot be read (not Linux).
pub fn fd_budget() -> Option<usize> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    let soft = line.split_whitespace().nth(3)?;
    if soft == "unlimited" {
        return None;
    }
    let soft: usize = soft.parse().ok()?;
    Some(soft.saturating_sub(FD_RESERVE).max(2) / 2)
}

/// What one listener allows its clients.
#[derive(Debug, Clone, Copy)]
pub struct ServeLimits {
    /// Time to send a request head, and to keep an idle connection.
    pub header_timeout: Duration,
    /// Time a client may take nothing of an answer waiting for it.
    pub client_write_timeout: Duration,
    /// Connections open at once.
    pub max_connections: usize,
}

impl Default for ServeLimits {
    /// The data port's defaults (see [`crate::Limits`]).
    fn default() -> Self {
        ServeLimits {
            header_timeout: Duration::from_secs(30),
            client_write_timeout: Duration::from_secs(30),
            max_connections: 8192,
        }
    }
}

/// [`serve_with`] with the default limits.
pub async fn serve<H, F, B>(
    listener: TcpListener,
    handler: H,
    shutdown: impl Future<Output = ()>,
    grace: Duration,
) where
    H: Fn(Request<Incoming>, Peer) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<B>> + Send + 'static,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    serve_with(listener, handler, shutdown, grace, ServeLimits::default()).await;
}

/// The client at the other end of a connection.
#[derive(Debug, Clone)]
pub struct Peer {
    /// Its address.
    pub addr: SocketAddr,
    /// Its IP as a header value, formatted once per connection (for
    /// `x-forwarded-for`; formatting it per request showed in profiles).
    pub ip: HeaderValue,
}

/// Serves HTTP/1.1 and HTTP/2 cleartext (prior knowledge) on `listener`
/// until `shutdown` completes; then stops accepting and lets connections
/// finish their requests for up to `grace`.
pub async fn serve_with<H, F, B>(
    listener: TcpListener,
    handler: H,
    shutdown: impl Future<Output = ()>,
    grace: Duration,
    limits: ServeLimits,
) where
    H: Fn(Request<Incoming>, Peer) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<B>> + Send + 'static,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .keep_alive(true)
        // Runs from the end of an answer too, so it closes idle
        // keep-alive connections.
        .header_read_timeout(limits.header_timeout)
        .max_buf_size(MAX_REQUEST_HEAD)
        // Measured: one flat buffer per answer costs 2% fewer instructions
        // per request than a vectored write of headers and body.
        .writev(false);
    // An HTTP/2 client that stops answering pings is closed.
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(limits.header_timeout)
        .keep_alive_timeout(limits.header_timeout.min(Duration::from_secs(20)));
    let builder = Arc::new(builder);
    let max = fd_budget().map_or(limits.max_connections, |fds| {
        fds.min(limits.max_connections)
    });
    let slots = Arc::new(Semaphore::new(max.max(1)));
    let header_timeout = limits.header_timeout;
    let write_timeout = limits.client_write_timeout;
    let graceful = GracefulShutdown::new();
    let mut last_warning: Option<Instant> = None;
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = accept(&listener, &slots) => {
                let (stream, remote, slot) = match accepted {
                    Ok(accepted) => accepted,
                    Err(e) => {
                        // Out of file descriptors and the like: back off,
                        // keep serving, and say so once a minute at most.
                        if last_warning.is_none_or(|t| t.elapsed() >= Duration::from_secs(60)) {
                            tracing::warn!(error = %e, "accept failed (repeats are not logged for a minute)");
                            last_warning = Some(Instant::now());
                        }
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let handler = handler.clone();
                let peer = Peer {
                    addr: remote,
                    ip: HeaderValue::from_str(&remote.ip().to_string())
                        .unwrap_or_else(|_| HeaderValue::from_static("unknown")),
                };
                let service = service_fn(move |req| {
                    let fut = handler(req, peer.clone());
                    async move { Ok::<_, Infallible>(fut.await) }
                });
                let builder = builder.clone();
                let watcher = graceful.watcher();
                tokio::spawn(async move {
                    let _slot = slot;
                    // hyper's header timeout starts once it knows the
                    // protocol, which takes a first byte: a client that
                    // never sends one is closed here.
                    let mut first = [0u8; 1];
                    match tokio::time::timeout(header_timeout, stream.peek(&mut first)).await {
                        Ok(Ok(1..)) => {}
                        _ => return,
                    }
                    let io = TokioIo::new(Stalls::new(stream, write_timeout));
                    let conn = builder.serve_connection_with_upgrades(io, service);
                    if let Err(e) = watcher.watch(conn.into_owned()).await {
                        tracing::debug!(error = %e, "connection ended with an error");
                    }
                });
            }
            () = &mut shutdown => break,
        }
    }
    drop(listener);
    if tokio::time::timeout(grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("connections still open after {grace:?}; closing them");
    }
}

/// The next connection, once a connection slot is free.
async fn accept(
    listener: &TcpListener,
    slots: &Arc<Semaphore>,
) -> std::io::Result<(
    tokio::net::TcpStream,
    SocketAddr,
    tokio::sync::OwnedSemaphorePermit,
)> {
    let slot = slots
        .clone()
        .acquire_owned()
        .await
        .map_err(|_| std::io::Error::other("the connection slots were closed"))?;
    let (stream, remote) = listener.accept().await?;
    Ok((stream, remote, slot))
}

/// A client connection whose writes fail once the client has taken nothing
/// for `timeout` while an answer waits: without it, a client that stops
/// reading holds its connection, the answer's upstream connection and
/// their buffers for as long as it likes. The timer is only made when a
/// write has to wait.
struct Stalls<T> {
    io: T,
    timeout: Duration,
    stalled: Option<Pin<Box<Sleep>>>,
}

impl<T> Stalls<T> {
    fn new(io: T, timeout: Duration) -> Self {
        Stalls {
            io,
            timeout,
            stalled: None,
        }
    }

    /// After a write or flush returned `result`: clears the timer when the
    /// client took something; fails when it has waited too long.
    fn watch<R>(
        &mut self,
        cx: &mut Context<'_>,
        result: Poll<io::Result<R>>,
    ) -> Poll<io::Result<R>> {
        if result.is_ready() {
            self.stalled = None;
            return result;
        }
        let timeout = self.timeout;
        let stalled = self
            .stalled
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
        match stalled.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("the client took nothing of its answer for {timeout:?}"),
            ))),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Stalls<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Stalls<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        let result = Pin::new(&mut this.io).poll_write(cx, buf);
        this.watch(cx, result)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        let result = Pin::new(&mut this.io).poll_write_vectored(cx, bufs);
        this.watch(cx, result)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let result = Pin::new(&mut this.io).poll_flush(cx);
        this.watch(cx, result)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}
