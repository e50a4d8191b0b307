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
use std::sync::atomic::{AtomicU8, AtomicU32, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes, BytesMut};
use http::header::{self, HeaderValue};
use http::{Request, Response};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
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
    // HTTP/2 (prior knowledge) connections.
    let mut builder = auto::Builder::new(TokioExecutor::new()).http2_only();
    // An HTTP/2 client that stops answering pings is closed.
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(limits.header_timeout)
        .keep_alive_timeout(limits.header_timeout.min(Duration::from_secs(20)));
    let builder = Arc::new(builder);
    // HTTP/1 connections, one hyper connection per busy spell
    // (`serve_h1`).
    let mut h1 = http1::Builder::new();
    // No timer: `serve_h1` times the heads itself (hyper's header timeout
    // costs a timer entry and an allocation per request).
    h1.keep_alive(true)
        .max_buf_size(MAX_REQUEST_HEAD)
        // The buffer's limit alone lets a head through that arrives in
        // one read past it: this one counts the parsed head.
        .max_header_size(MAX_REQUEST_HEAD)
        // Measured: one flat buffer per answer costs 2% fewer instructions
        // per request than a vectored write of headers and body.
        .writev(false);
    let h1 = Arc::new(h1);
    let (stop_tx, stop_rx) = watch::channel(false);
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
                let builder = builder.clone();
                let h1 = h1.clone();
                let watcher = graceful.watcher();
                let stop = stop_rx.clone();
                tokio::spawn(async move {
                    let _slot = slot;
                    // hyper's header timeout starts once it knows the
                    // protocol, which takes a first byte: a client that
                    // never sends one is closed here.
                    match tokio::time::timeout(header_timeout, is_h2(&stream)).await {
                        Ok(Some(false)) => {
                            let io = ClientIo::new(Stalls::new(stream, write_timeout));
                            serve_h1(io, &h1, handler, peer, header_timeout, stop).await;
                        }
                        Ok(Some(true)) => {
                            // Boxed: an HTTP/2 connection's future is large,
                            // and every connection's task would be as large
                            // (it is what an idle HTTP/1 connection holds).
                            let io = Stalls::new(stream, write_timeout);
                            Box::pin(serve_h2(io, &builder, handler, peer, watcher)).await;
                        }
                        Ok(None) | Err(_) => {}
                    }
                });
            }
            () = &mut shutdown => break,
        }
    }
    drop(listener);
    let _ = stop_tx.send(true);
    let all = u32::try_from(max.max(1)).unwrap_or(u32::MAX);
    let finished = async {
        graceful.shutdown().await;
        // Every connection holds a slot: all slots back, all closed.
        let _ = slots.acquire_many(all).await;
    };
    if tokio::time::timeout(grace, finished).await.is_err() {
        tracing::warn!("connections still open after {grace:?}; closing them");
    }
}

/// Serves an HTTP/2 (prior knowledge) client connection.
async fn serve_h2<H, F, B>(
    io: Stalls<tokio::net::TcpStream>,
    builder: &auto::Builder<TokioExecutor>,
    handler: H,
    peer: Peer,
    watcher: hyper_util::server::graceful::Watcher,
) where
    H: Fn(Request<Incoming>, Peer) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<B>> + Send + 'static,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let service = service_fn(move |req| {
        let fut = handler(req, peer.clone());
        async move { Ok::<_, Infallible>(fut.await) }
    });
    let conn = builder.serve_connection_with_upgrades(TokioIo::new(io), service);
    if let Err(e) = watcher.watch(conn.into_owned()).await {
        tracing::debug!(error = %e, "connection ended with an error");
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

/// Whether a connection speaks HTTP/2 with prior knowledge (its first
/// bytes are the preface's `PRI `), once it has sent enough to tell;
/// `None` if it closes first. Request methods starting with `P` need a
/// few bytes; any other first byte is HTTP/1 at once.
async fn is_h2(stream: &tokio::net::TcpStream) -> Option<bool> {
    let mut first = [0u8; 4];
    let mut pause = Duration::from_millis(2);
    loop {
        let n = stream.peek(&mut first).await.ok()?;
        match (n, first[0]) {
            (0, _) => return None,
            (_, b'P') if n < first.len() => {
                // `peek` returns at once while bytes wait unread: look
                // again later, less and less often (a client that sends
                // `P` and stops costs a few wake-ups until the timeout).
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(1));
            }
            _ => return Some(first == *b"PRI "),
        }
    }
}

/// Serves an HTTP/1 client connection with no buffer held while it idles.
///
/// hyper's server connection keeps its read and write buffers (about
/// 16 KiB) for as long as the connection lives, idle or not. Here a hyper
/// connection serves a busy spell only: once an answer has gone out and
/// the client has sent nothing for [`IDLE_RELEASE`] or a little more
/// (checked by a timer per hyper connection, not per request, so a busy
/// connection pays nothing per request), or, on a new connection's first
/// spell, as soon as its first answer has been flushed and the socket has
/// nothing more to read (so that many connections opening at once, each with one
/// request, do not all hold buffers for those 25 ms: freed memory stays
/// with the allocator, so their peak is what the process keeps; a
/// connection that comes back with a request pays one more hyper
/// connection, once), the hyper connection is ended at
/// that message boundary (a graceful shutdown of an idle hyper connection,
/// with the socket kept open: [`ClientIo`] skips the shutdown) and
/// dropped with its buffers. The socket then waits for readability with
/// nothing allocated, and the next request starts a new hyper connection,
/// given any bytes the old one had read ahead.
///
/// Only at a boundary hyper itself would keep the connection alive across:
/// a request without a body (so no unread body can remain), HTTP/1.1,
/// neither side asking to close, no upgrade, its answer's body ended and
/// flushed. Every other case stays with the hyper connection, which then
/// ends the connection as it always does. The hand-over is checked: it
/// counts only when hyper finishes at once; otherwise the connection
/// closes.
async fn serve_h1<H, F, B>(
    mut io: ClientIo,
    h1: &http1::Builder,
    handler: H,
    peer: Peer,
    idle_timeout: Duration,
    mut stop: watch::Receiver<bool>,
) where
    H: Fn(Request<Incoming>, Peer) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<B>> + Send + 'static,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let flags = io.flags.clone();
    let mut first_spell = true;
    loop {
        if io.ahead.is_empty() {
            // Idle: wait for the next request's first byte (or the end of
            // the connection, which hyper then reads as such).
            tokio::select! {
                ready = tokio::time::timeout(idle_timeout, io.stream.io.readable()) => {
                    if !matches!(ready, Ok(Ok(()))) {
                        return;
                    }
                }
                _ = stop.wait_for(|stop| *stop) => return,
            }
            // Then its head, before a hyper connection exists, within the
            // header timeout.
            tokio::select! {
                read = tokio::time::timeout(idle_timeout, read_head(&mut io)) => {
                    if !matches!(read, Ok(Ok(()))) || io.ahead.is_empty() {
                        return;
                    }
                }
                _ = stop.wait_for(|stop| *stop) => return,
            }
        }
        flags.reset();
        if first_spell {
            flags.set(Flags::EAGER);
        }
        let service = {
            let (handler, peer, flags) = (handler.clone(), peer.clone(), flags.clone());
            service_fn(move |req: Request<Incoming>| {
                flags.begin(&req);
                let (handler, peer, flags) = (handler.clone(), peer.clone(), flags.clone());
                async move {
                    // The handler's future is made here, where it is
                    // polled, not outside and moved in: it is a few KiB,
                    // and each move a copy.
                    let resp = handler(req, peer).await;
                    if connection_has_close(resp.headers()) {
                        flags.refuse();
                    }
                    Ok::<_, Infallible>(resp.map(|inner| Watched { inner, flags }))
                }
            })
        };
        let mut conn = Box::pin(
            h1.serve_connection(TokioIo::new(io), service)
                .with_upgrades(),
        );
        let mut stopped = false;
        let mut handing_over = false;
        // Looked at every `IDLE_RELEASE` (busy connections never pay for
        // it per request): whether the server is stopping; whether the
        // client has taken longer than `idle_timeout` over a head; and
        // whether a connection that began no request over a whole period
        // sits at a boundary, to hand it over.
        let mut tick = Box::pin(tokio::time::sleep(IDLE_RELEASE));
        let spell_begun = flags.begun();
        let mut seen = spell_begun;
        // Since when it has waited for a head, as the ticks saw it.
        let mut awaiting_since = None;
        let ended = std::future::poll_fn(|cx| {
            if let Poll::Ready(result) = conn.as_mut().poll(cx) {
                if let Err(e) = result {
                    tracing::debug!(error = %e, "connection ended with an error");
                }
                return Poll::Ready(handing_over);
            }
            if handing_over {
                return Poll::Pending;
            }
            let idle = if first_spell && flags.idle() {
                // A new connection's first answer is out and nothing
                // follows: let go at once.
                true
            } else {
                if tick.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
                let now = tokio::time::Instant::now();
                tick.as_mut().reset(now + IDLE_RELEASE);
                if tick.as_mut().poll(cx).is_ready() {
                    cx.waker().wake_by_ref();
                }
                if !stopped && *stop.borrow() {
                    stopped = true;
                    flags.refuse();
                    conn.as_mut().graceful_shutdown();
                    cx.waker().wake_by_ref();
                    return Poll::Pending;
                }
                let begun = flags.begun();
                let quiet = begun == seen;
                seen = begun;
                if !quiet || !flags.awaiting_head(spell_begun) {
                    awaiting_since = None;
                } else if now.saturating_duration_since(*awaiting_since.get_or_insert(now))
                    >= idle_timeout
                {
                    // No head came whole in time (hyper's own header
                    // timeout is off: it costs a timer per request).
                    return Poll::Ready(false);
                }
                quiet && flags.idle()
            };
            if idle {
                // At a message boundary with nothing to read: end this
                // hyper connection, keeping the socket.
                handing_over = true;
                flags.hand_over(true);
                conn.as_mut().graceful_shutdown();
                match conn.as_mut().poll(cx) {
                    Poll::Ready(Ok(())) => return Poll::Ready(true),
                    Poll::Ready(Err(e)) => {
                        tracing::debug!(error = %e, "connection ended with an error");
                        flags.hand_over(false);
                        return Poll::Ready(false);
                    }
                    Poll::Pending => {
                        // Not idle after all: hyper finishes this
                        // connection its own way and closes it.
                        flags.hand_over(false);
                        flags.refuse();
                        handing_over = false;
                    }
                }
            }
            Poll::Pending
        })
        .await;
        if !ended {
            return;
        }
        first_spell = false;
        let Some(parts) = Pin::into_inner(conn).into_parts() else {
            return;
        };
        io = parts.io.into_inner();
        flags.hand_over(false);
        // What hyper read beyond the last request (the start of the next
        // one) goes first to the next hyper connection.
        if !parts.read_buf.is_empty() {
            io.ahead = if io.ahead.is_empty() {
                parts.read_buf
            } else {
                let mut joined = Vec::with_capacity(parts.read_buf.len() + io.ahead.len());
                joined.extend_from_slice(&parts.read_buf);
                joined.extend_from_slice(&io.ahead);
                Bytes::from(joined)
            };
        }
    }
}

/// Whether a `Connection` header says `close`.
fn connection_has_close(headers: &http::HeaderMap) -> bool {
    headers.get_all(header::CONNECTION).iter().any(|v| {
        v.to_str()
            .is_ok_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case("close")))
    })
}

/// How long an HTTP/1 client connection sits idle, at least, before its
/// hyper connection and buffers are let go (at most twice this). Short,
/// so that many connections opening at once do not each hold buffers for
/// long (freed memory stays in the allocator: the peak is what the
/// process keeps); long against the gaps between requests on a busy
/// connection, which are not worth a new hyper connection each.
const IDLE_RELEASE: Duration = Duration::from_millis(25);

/// Where a client connection's current exchange is, for [`serve_h1`];
/// shared by the socket wrapper, the service and the answer body.
struct Flags(AtomicU8, AtomicU32);

impl Flags {
    /// The request may be followed by a hand-over.
    const REUSABLE: u8 = 1;
    /// Its answer's body has ended.
    const ANSWERED: u8 = 2;
    /// ... and has been flushed to the socket.
    const FLUSHED: u8 = 4;
    /// ... and the socket had nothing more to read.
    const IDLE: u8 = 8;
    /// The hyper connection is ending for a hand-over: keep the socket.
    const HANDING_OVER: u8 = 16;
    /// A new connection's first hyper connection: look for an idle
    /// socket as soon as an answer has been flushed ([`ClientIo`]).
    const EAGER: u8 = 32;

    fn get(&self) -> u8 {
        self.0.load(Ordering::Relaxed)
    }

    fn set(&self, bit: u8) {
        self.0.fetch_or(bit, Ordering::Relaxed);
    }

    fn clear(&self, bit: u8) {
        self.0.fetch_and(!bit, Ordering::Relaxed);
    }

    fn reset(&self) {
        self.0.store(0, Ordering::Relaxed);
    }

    /// A request's head was read: whether hyper will keep the connection
    /// at a clean boundary after it.
    fn begin<T: Body>(&self, req: &Request<T>) {
        self.1.fetch_add(1, Ordering::Relaxed);
        let reusable = req.version() == http::Version::HTTP_11
            && req.body().is_end_stream()
            && !req.headers().contains_key(header::UPGRADE)
            && !connection_has_close(req.headers());
        let eager = self.get() & Self::EAGER;
        let reusable = if reusable { Self::REUSABLE } else { 0 };
        self.0.store(reusable | eager, Ordering::Relaxed);
    }

    /// Requests begun so far.
    fn begun(&self) -> u32 {
        self.1.load(Ordering::Relaxed)
    }

    fn refuse(&self) {
        self.clear(Self::REUSABLE | Self::IDLE);
    }

    fn idle(&self) -> bool {
        self.get() & Self::IDLE != 0
    }

    fn hand_over(&self, on: bool) {
        if on {
            self.set(Self::HANDING_OVER);
        } else {
            self.clear(Self::HANDING_OVER);
        }
    }

    fn answered(&self) {
        self.set(Self::ANSWERED);
    }

    /// After a successful flush.
    fn flushed(&self) {
        if self.get() & Self::ANSWERED != 0 {
            self.set(Self::FLUSHED);
        }
    }

    /// Whether the hyper connection waits for a request head: it began
    /// none (since [`Flags::begun`] was `spell_begun`), or the last one's
    /// answer has ended.
    fn awaiting_head(&self, spell_begun: u32) -> bool {
        self.begun() == spell_begun || self.get() & Self::ANSWERED != 0
    }

    /// After a read of the socket found nothing.
    fn nothing_to_read(&self) {
        let done = Self::REUSABLE | Self::ANSWERED | Self::FLUSHED;
        if self.get() & done == done {
            self.set(Self::IDLE);
        }
    }
}

pin_project_lite::pin_project! {
    /// An answer body that tells [`Flags`] when it has ended.
    struct Watched<B> {
        #[pin]
        inner: B,
        flags: Arc<Flags>,
    }
}

impl<B: Body> Body for Watched<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        let polled = this.inner.poll_frame(cx);
        match &polled {
            Poll::Ready(None) => this.flags.answered(),
            Poll::Ready(Some(Err(_))) => this.flags.refuse(),
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        let end = self.inner.is_end_stream();
        if end {
            self.flags.answered();
        }
        end
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A client socket for [`serve_h1`]: bytes read ahead by the previous
/// hyper connection, or by [`read_head`], come first, reads and flushes
/// feed [`Flags`], and the shutdown is skipped while a hyper connection
/// ends for a hand-over.
struct ClientIo {
    stream: Stalls<tokio::net::TcpStream>,
    ahead: Bytes,
    flags: Arc<Flags>,
}

impl ClientIo {
    fn new(stream: Stalls<tokio::net::TcpStream>) -> Self {
        ClientIo {
            stream,
            ahead: Bytes::new(),
            flags: Arc::new(Flags(AtomicU8::new(0), AtomicU32::new(0))),
        }
    }
}

/// The buffer [`read_head`] starts with: most heads fit.
const HEAD_FIRST: usize = 4 * 1024;

/// Reads the head of the request that starts a busy spell into
/// `io.ahead`, until its end has come, or it has grown past
/// [`MAX_REQUEST_HEAD`] (hyper then refuses it with `431`), or the client
/// closed; before any hyper connection exists.
///
/// hyper grows its read buffer by doubling, each step a new allocation
/// and a copy, and keeps a write buffer from its start: a client
/// trickling a 60 KiB head made it hold a 112 KiB buffer (60 KiB
/// written), the 8 KiB write buffer, and the smaller buffers it outgrew
/// with the allocator. Here the head sits in one buffer that grows once,
/// to what the limit allows, and hyper, made once the head is whole,
/// parses it at once.
async fn read_head(io: &mut ClientIo) -> io::Result<()> {
    let limit = MAX_REQUEST_HEAD + 1;
    let mut held = BytesMut::with_capacity(HEAD_FIRST);
    let mut scan = 0;
    loop {
        if held.len() == held.capacity() {
            held.reserve(limit.saturating_sub(held.len()).max(1));
        }
        let start = held.len();
        let n = std::future::poll_fn(|cx| {
            tokio_util::io::poll_read_buf(Pin::new(&mut io.stream), cx, &mut held)
        })
        .await?;
        let new = held.get(start..).unwrap_or_default();
        if n == 0 || head_ends(&mut scan, new) || held.len() >= limit {
            break;
        }
    }
    io.ahead = held.freeze();
    Ok(())
}

/// Looks for the empty line that ends a head (`\n\n` or `\n\r\n`) in
/// `bytes`, after `state` (0: within a line, 1: after `\n`, 2: after
/// `\n\r`), which it updates.
fn head_ends(state: &mut u8, bytes: &[u8]) -> bool {
    for &b in bytes {
        *state = match (*state, b) {
            (1 | 2, b'\n') => return true,
            (1, b'\r') => 2,
            (_, b'\n') => 1,
            _ => 0,
        };
    }
    false
}

impl AsyncRead for ClientIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if !this.ahead.is_empty() {
            let n = this.ahead.len().min(buf.remaining());
            buf.put_slice(&this.ahead[..n]);
            this.ahead.advance(n);
            if this.ahead.is_empty() {
                // Let its buffer go now, not at the next hand-over.
                this.ahead = Bytes::new();
            }
            this.flags.clear(Flags::IDLE);
            return Poll::Ready(Ok(()));
        }
        let polled = Pin::new(&mut this.stream).poll_read(cx, buf);
        match polled {
            Poll::Pending => this.flags.nothing_to_read(),
            Poll::Ready(_) => this.flags.clear(Flags::IDLE),
        }
        polled
    }
}

impl AsyncWrite for ClientIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let polled = Pin::new(&mut self.stream).poll_flush(cx);
        if let Poll::Ready(Ok(())) = polled {
            self.flags.flushed();
            // On a new connection's first hyper connection, whether the
            // client has sent more is asked here (tokio's readiness, no
            // system call): hyper may not read again after this flush
            // until the client sends, and the connection would hold its
            // buffers until the 25 ms timer. Readiness that lags behind
            // a byte already arrived only hands the connection over
            // early; the byte waits in the socket for the next one.
            let eager = Flags::EAGER | Flags::REUSABLE | Flags::ANSWERED;
            if self.flags.get() & eager == eager && self.stream.io.poll_read_ready(cx).is_pending()
            {
                self.flags.nothing_to_read();
            }
        }
        polled
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.flags.get() & Flags::HANDING_OVER != 0 {
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::head_ends;

    #[test]
    fn a_heads_end_is_found_wherever_the_reads_cut_it() {
        for head in [
            &b"GET / HTTP/1.1\r\nhost: x\r\n\r\n"[..],
            b"GET / HTTP/1.1\nhost: x\n\n",
            b"GET / HTTP/1.1\r\nhost: x\r\n\n",
        ] {
            for cut in 0..=head.len() {
                let mut state = 0;
                let first = head_ends(&mut state, &head[..cut]);
                let found = first || head_ends(&mut state, &head[cut..]);
                assert!(found, "{head:?} cut at {cut}");
                assert_eq!(first, cut == head.len(), "{head:?} cut at {cut}");
            }
        }
        for unended in [&b"GET / HTTP/1.1\r\nhost: x\r\n"[..], b"a\r\r\nb\r\n\rc"] {
            let mut state = 0;
            assert!(!head_ends(&mut state, unended), "{unended:?}");
        }
    }
}
