//! A small HTTP/1.1 client for the most common request a proxy forwards: a
//! `GET` or `HEAD` without a body.
//!
//! Why: profiling the proxy (callgrind, `docs/performance.md`) put hyper's
//! client connection at about 40% of the proxy's user-space instructions
//! per request: a task per upstream connection, a channel to hand it each
//! request and another to hand back the answer, and a dispatcher polled
//! several times per exchange. Here the request's own task writes the head
//! and reads the answer on the socket directly: one write, one read, one
//! parse. Everything else (bodies, upgrades, HTTP/2) still goes through
//! hyper ([`crate::pool`]).
//!
//! Framing follows RFC 9112 §6.3: no body for `HEAD`, 1xx, 204 and 304;
//! `Transfer-Encoding: chunked` is decoded (trailers are passed on); a
//! `Content-Length` is counted down; otherwise the body runs to the end of
//! the connection. A connection goes back to the pool only when its answer
//! was read to the end, nothing was read beyond it, and neither side asked
//! to close it; before it carries another request, [`Conn::is_clean`]
//! checks that the upstream has sent nothing since. Bytes an upstream sends
//! beyond its answer's framing (a body on a `HEAD` answer, after a 204, past
//! the `Content-Length`) are never taken as the next request's answer
//! (RFC 9112 §6.3): the connection is closed instead.

use std::io;
use std::mem::MaybeUninit;
use std::task::{Context, Poll, ready};

use bytes::{Buf, Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode, Version};
use hyper::body::Frame;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

/// Largest response head accepted (hyper's client connection is given
/// the same limit).
pub const MAX_HEAD: usize = 64 * 1024;
/// Most headers in a response head (hyper's default is 100).
const MAX_HEADERS: usize = 100;
/// Headers in the table tried first.
const FEW_HEADERS: usize = 24;
/// Longest chunk-size line (with extensions) or trailer section accepted.
const MAX_LINE: usize = 8 * 1024;
/// Read buffer reserve.
const READ_SIZE: usize = 8 * 1024;

/// Why an exchange failed, and whether it may be tried again elsewhere.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The connection failed before any byte of an answer came back, so
    /// the (idempotent) request may be sent again on a new connection.
    #[error("the upstream closed the connection: {0}")]
    Closed(io::Error),
    /// The answer broke off or was not HTTP.
    #[error("bad answer from the upstream: {0}")]
    Protocol(String),
    /// Reading or writing failed after the answer had begun.
    #[error("the upstream failed: {0}")]
    Io(io::Error),
}

/// One keep-alive connection to an upstream, idle between exchanges.
pub struct Conn {
    stream: TcpStream,
    /// Bytes read and not yet used; empty between exchanges.
    read: BytesMut,
    /// The request head being written; kept to reuse its allocation.
    write: Vec<u8>,
    /// The header names of its last answers.
    names: Names,
}

/// The header names of an upstream's last answers, by position: an
/// upstream sends the same names in the same order answer after answer,
/// and comparing their bytes costs a fraction of parsing them
/// (`HeaderName::from_bytes` lowercases and looks up every name; it was
/// about 3% of the proxy's instructions). Only an exact byte match is
/// taken, so the name is the one parsing would give.
#[derive(Default)]
struct Names(Vec<(Box<[u8]>, HeaderName)>);

/// Names remembered per connection, and the longest remembered.
const NAMES: usize = 16;
const NAME_LEN: usize = 64;

impl Names {
    /// The name of the `i`th header, `raw`.
    fn name(&mut self, i: usize, raw: &[u8]) -> Option<HeaderName> {
        if let Some((seen, name)) = self.0.get(i)
            && **seen == *raw
        {
            return Some(name.clone());
        }
        let name = HeaderName::from_bytes(raw).ok()?;
        if i < NAMES && raw.len() <= NAME_LEN {
            let entry = (Box::from(raw), name.clone());
            if let Some(slot) = self.0.get_mut(i) {
                *slot = entry;
            } else if i == self.0.len() {
                self.0.push(entry);
            }
        }
        Some(name)
    }
}

/// Whether `req` can take the fast path: `GET` or `HEAD`, HTTP/1.1, no
/// body, no upgrade. Both methods are idempotent, so a request that meets a
/// connection the upstream had closed may be sent again (RFC 9110 §9.2.2).
pub fn eligible<B: hyper::body::Body>(req: &Request<B>) -> bool {
    (req.method() == Method::GET || req.method() == Method::HEAD)
        && req.version() == Version::HTTP_11
        && req.body().is_end_stream()
        && !req.headers().contains_key(header::UPGRADE)
}

impl Conn {
    /// A connection over `stream` (already connected).
    pub fn new(stream: TcpStream) -> Self {
        Conn {
            stream,
            read: BytesMut::new(),
            write: Vec::new(),
            names: Names::default(),
        }
    }

    /// Whether an idle connection may carry another request: the upstream
    /// has neither closed it nor sent anything since the last answer ended.
    /// Anything it sent would be read as the next request's answer, so such
    /// a connection is dropped instead. Costs no system call when tokio
    /// already knows the socket has nothing to read, which is the rule
    /// after a whole answer ([`Conn::poll_fill`]).
    pub fn is_clean(&mut self) -> bool {
        if !self.read.is_empty() {
            return false;
        }
        let mut probe = [0u8; 1];
        matches!(self.stream.try_read(&mut probe), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
    }

    /// Sends the head of `req` and reads the answer's head. The body is
    /// read by the returned [`Body`].
    pub async fn exchange<B>(mut self, req: &Request<B>) -> Result<(Response<()>, Body), Error> {
        self.write.clear();
        encode_head(req, &mut self.write);
        if let Err(e) = self.stream.write_all(&self.write).await {
            return Err(Error::Closed(e));
        }
        let head_only = req.method() == Method::HEAD;
        let mut scan = HeadScan::default();
        loop {
            if scan.may_hold_head(&self.read)
                && let Some((resp, framing, keep_alive)) =
                    parse_head(&mut self.read, head_only, &mut self.names)?
            {
                scan = HeadScan::default();
                if resp.status().is_informational() {
                    // 1xx other than 101 (which a request without Upgrade
                    // cannot get): another head follows.
                    if resp.status() != StatusCode::SWITCHING_PROTOCOLS {
                        continue;
                    }
                    return Err(Error::Protocol("101 to a request without Upgrade".into()));
                }
                let body = Body {
                    conn: Some(self),
                    framing,
                    keep_alive,
                };
                return Ok((resp, body));
            }
            if self.read.len() >= MAX_HEAD {
                return Err(Error::Protocol(format!(
                    "response head larger than {MAX_HEAD} bytes"
                )));
            }
            let began = !self.read.is_empty();
            match std::future::poll_fn(|cx| self.poll_fill(cx)).await {
                Ok(0) if began => return Err(Error::Protocol("the answer broke off".into())),
                Ok(0) => {
                    return Err(Error::Closed(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "closed before answering",
                    )));
                }
                Ok(_) => {}
                Err(e) if began => return Err(Error::Io(e)),
                Err(e) => return Err(Error::Closed(e)),
            }
        }
    }

    /// Reads what the socket has into the buffer; `Ok(0)` at its end.
    ///
    /// Through tokio's `poll_read`, which takes a read that did not fill
    /// the buffer as proof that the socket is drained and forgets its
    /// readiness: then [`Conn::is_clean`] needs no system call until the
    /// upstream sends again.
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        self.read.reserve(READ_SIZE);
        tokio_util::io::poll_read_buf(std::pin::Pin::new(&mut self.stream), cx, &mut self.read)
    }
}

/// Tells when a response head that arrives in pieces may be whole, so it
/// is parsed once rather than from its start after every read (which
/// costs quadratic time in a head trickled in a byte at a time).
///
/// The first look parses at once (a head nearly always arrives in one
/// read); after that, only the bytes not seen before are scanned for the
/// empty line that ends a head (`\n\n` or `\n\r\n`, after the empty
/// lines httparse skips before the status line), so the work stays linear
/// in the head's length.
#[derive(Debug, Default)]
struct HeadScan {
    /// Whether the buffer was handed to the parser without a scan.
    tried: bool,
    /// Bytes of the buffer scanned.
    scanned: usize,
    /// Where the scan is in the head's lines.
    state: ScanState,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum ScanState {
    /// Before the status line: empty lines are skipped.
    #[default]
    Leading,
    /// Within a line.
    Line,
    /// Just after a `\n`.
    LineStart,
    /// After `\n\r`.
    LineStartCr,
}

impl HeadScan {
    /// Whether `buf` should be handed to the parser now.
    fn may_hold_head(&mut self, buf: &[u8]) -> bool {
        if buf.is_empty() {
            return false;
        }
        if !self.tried {
            self.tried = true;
            return true;
        }
        let new = buf.get(self.scanned..).unwrap_or_default();
        for (i, &b) in new.iter().enumerate() {
            self.state = match (self.state, b) {
                (ScanState::Leading, b'\r' | b'\n') => ScanState::Leading,
                (ScanState::Line, b'\n') => ScanState::LineStart,
                (ScanState::LineStart, b'\r') => ScanState::LineStartCr,
                (ScanState::LineStart | ScanState::LineStartCr, b'\n') => {
                    // An empty line: the head may end here. Scanning
                    // resumes after it should the parser want more.
                    self.scanned += i + 1;
                    self.state = ScanState::Line;
                    return true;
                }
                _ => ScanState::Line,
            };
        }
        self.scanned = buf.len();
        false
    }
}

/// Parses a complete response head from the read buffer, consuming it;
/// `None` if more bytes are needed.
///
/// Header values are slices of the head's bytes, not copies (five
/// allocations a request fewer), and the header slots are left
/// uninitialised for httparse to fill. Most answers have a handful of
/// headers, so a small table is tried first.
fn parse_head(
    read: &mut BytesMut,
    head_only: bool,
    names: &mut Names,
) -> Result<Option<(Response<()>, Framing, bool)>, Error> {
    match parse_head_in::<FEW_HEADERS>(read, head_only, names) {
        Some(parsed) => parsed,
        None => parse_head_in::<MAX_HEADERS>(read, head_only, names).unwrap_or_else(|| {
            Err(Error::Protocol(format!(
                "more than {MAX_HEADERS} response headers"
            )))
        }),
    }
}

/// [`parse_head`] with room for `N` headers; `None` if there are more.
#[allow(clippy::type_complexity)]
fn parse_head_in<const N: usize>(
    read: &mut BytesMut,
    head_only: bool,
    names: &mut Names,
) -> Option<Result<Option<(Response<()>, Framing, bool)>, Error>> {
    match parse_head_with::<N>(read, head_only, names) {
        Err(e) => Some(Err(e)),
        Ok(None) => None,
        Ok(Some(parsed)) => Some(Ok(parsed)),
    }
}

#[allow(clippy::type_complexity)]
fn parse_head_with<const N: usize>(
    read: &mut BytesMut,
    head_only: bool,
    names: &mut Names,
) -> Result<Option<Option<(Response<()>, Framing, bool)>>, Error> {
    let mut slots = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; N];
    let mut parsed = httparse::Response::new(&mut []);
    let len = match httparse::ParserConfig::default().parse_response_with_uninit_headers(
        &mut parsed,
        &*read,
        &mut slots,
    ) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Ok(Some(None)),
        Err(httparse::Error::TooManyHeaders) => return Ok(None),
        Err(e) => return Err(Error::Protocol(format!("unparsable response head: {e}"))),
    };
    // Where each name and value lies in the head, so the head can be
    // split off the buffer and shared.
    let base = read.as_ptr() as usize;
    let offset = |part: &[u8]| {
        (part.as_ptr() as usize)
            .checked_sub(base)
            .filter(|start| start + part.len() <= len)
            .map(|start| start..start + part.len())
    };
    let mut spans = [const { (0..0, 0..0) }; N];
    let count = parsed.headers.len();
    for (span, h) in spans.iter_mut().zip(parsed.headers.iter()) {
        let value = if h.value.is_empty() {
            Some(0..0)
        } else {
            offset(h.value)
        };
        match (offset(h.name.as_bytes()), value) {
            (Some(name), Some(value)) => *span = (name, value),
            _ => return Err(Error::Protocol("header outside the head".into())),
        }
    }
    let code = parsed.code.unwrap_or(0);
    let status = StatusCode::from_u16(code)
        .map_err(|_| Error::Protocol(format!("bad status code {code}")))?;
    let version = if parsed.version == Some(1) {
        Version::HTTP_11
    } else {
        Version::HTTP_10
    };
    let head = read.split_to(len).freeze();
    let mut headers = HeaderMap::with_capacity(count);
    let mut keep_alive = version == Version::HTTP_11;
    let mut chunked = false;
    let mut coded = false;
    let mut length: Option<u64> = None;
    for (i, (name, value)) in spans[..count].iter().enumerate() {
        let name = names.name(i, &head[name.clone()]).ok_or_else(|| {
            Error::Protocol(format!(
                "bad header name {:?}",
                String::from_utf8_lossy(&head[name.clone()])
            ))
        })?;
        let value = HeaderValue::from_maybe_shared(head.slice(value.clone()))
            .map_err(|_| Error::Protocol(format!("bad value for header {name}")))?;
        if name == header::CONNECTION {
            for token in value.as_bytes().split(|b| *b == b',') {
                let token = token.trim_ascii();
                if token.eq_ignore_ascii_case(b"close") {
                    keep_alive = false;
                } else if token.eq_ignore_ascii_case(b"keep-alive") && version == Version::HTTP_10 {
                    keep_alive = true;
                }
            }
        } else if name == header::TRANSFER_ENCODING {
            coded = true;
            // Only the last coding says how the message ends.
            chunked = value
                .as_bytes()
                .rsplit(|b| *b == b',')
                .next()
                .is_some_and(|last| last.trim_ascii().eq_ignore_ascii_case(b"chunked"));
        } else if name == header::CONTENT_LENGTH {
            let n = content_length(value.as_bytes())
                .ok_or_else(|| Error::Protocol("bad content-length".into()))?;
            if length.is_some_and(|prior| prior != n) {
                return Err(Error::Protocol("conflicting content-lengths".into()));
            }
            length = Some(n);
        }
        headers.append(name, value);
    }
    if coded && length.is_some() {
        // Both: the coding wins and the length is dropped, and the
        // connection is closed after this answer, since the upstream's
        // idea of where the answer ends is in doubt (RFC 9112 §6.3,
        // rule 3).
        headers.remove(header::CONTENT_LENGTH);
        length = None;
        keep_alive = false;
    }
    if coded && version == Version::HTTP_10 {
        // An HTTP/1.0 answer with a transfer coding: framing is faulty,
        // so the connection ends with this answer (RFC 9112 §6.1).
        keep_alive = false;
    }
    let bodiless = status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED;
    if head_only || (bodiless && (coded || length.is_some_and(|n| n > 0))) {
        // A `HEAD` answer, or a 204/304 that announces a body: servers
        // that answer `HEAD` like `GET`, or write the body they
        // announced, send bytes that are not part of this answer and
        // may come at any time. The connection is not reused.
        keep_alive = false;
    }
    let framing = if head_only || bodiless {
        Framing::Done
    } else if coded && chunked {
        Framing::Chunked(Chunk::Size)
    } else if coded {
        // A coding that is not chunked last: the body ends with the
        // connection (RFC 9112 §6.3, rule 4).
        Framing::Close
    } else {
        match length {
            Some(0) => Framing::Done,
            Some(n) => Framing::Length(n),
            None => Framing::Close,
        }
    };
    if matches!(framing, Framing::Close) {
        keep_alive = false;
    }
    let mut resp = Response::new(());
    *resp.status_mut() = status;
    *resp.version_mut() = version;
    *resp.headers_mut() = headers;
    Ok(Some(Some((resp, framing, keep_alive))))
}

/// A `Content-Length` value: digits only (RFC 9110 §8.6; `+5` and ` 5`
/// are refused, where `u64::from_str` would take them).
pub fn content_length(value: &[u8]) -> Option<u64> {
    if value.is_empty() || !value.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(value).ok()?.parse().ok()
}

/// `METHOD target HTTP/1.1`, then the headers as they are (the caller has
/// set `Host` and removed hop-by-hop headers).
fn encode_head<B>(req: &Request<B>, out: &mut Vec<u8>) {
    out.extend_from_slice(req.method().as_str().as_bytes());
    out.push(b' ');
    let target = req.uri().path_and_query().map_or("/", |p| p.as_str());
    out.extend_from_slice(target.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    for (name, value) in req.headers() {
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

/// How the answer's body ends.
#[derive(Debug)]
enum Framing {
    /// This many bytes to go.
    Length(u64),
    /// Chunked, in this state.
    Chunked(Chunk),
    /// At the end of the connection.
    Close,
    /// Read to the end.
    Done,
}

/// Where a chunked body's decoder stands.
#[derive(Debug)]
enum Chunk {
    /// Expecting a chunk-size line.
    Size,
    /// Inside a chunk's data, this many bytes to go.
    Data(u64),
    /// Expecting the CRLF after a chunk's data.
    DataEnd,
    /// After the last chunk: trailer fields up to an empty line.
    Trailers,
}

/// An answer's body, read from the connection as it is polled. The
/// connection is handed back by the caller ([`Body::take_conn`]) once the
/// body has ended and may be reused.
pub struct Body {
    conn: Option<Conn>,
    framing: Framing,
    keep_alive: bool,
}

impl Body {
    /// Whether the body has been read to the end.
    pub fn is_end_stream(&self) -> bool {
        matches!(self.framing, Framing::Done)
    }

    /// The exact size when it is known.
    pub fn size_hint(&self) -> hyper::body::SizeHint {
        match self.framing {
            Framing::Length(n) => hyper::body::SizeHint::with_exact(n),
            Framing::Done => hyper::body::SizeHint::with_exact(0),
            _ => hyper::body::SizeHint::default(),
        }
    }

    /// The connection, once the body is read to the end and the
    /// connection may carry another request.
    pub fn take_conn(&mut self) -> Option<Conn> {
        if self.is_end_stream()
            && self.keep_alive
            && self.conn.as_ref().is_some_and(|c| c.read.is_empty())
        {
            self.conn.take()
        } else {
            None
        }
    }

    /// The next frame of the body.
    pub fn poll_frame(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Error>>> {
        loop {
            let Some(conn) = self.conn.as_mut() else {
                return Poll::Ready(None);
            };
            match step(&mut self.framing, &mut conn.read) {
                Step::Frame(frame) => return Poll::Ready(Some(Ok(frame))),
                Step::End => return Poll::Ready(None),
                Step::Fail(why) => {
                    self.conn = None;
                    return Poll::Ready(Some(Err(Error::Protocol(why))));
                }
                Step::More => {}
            }
            match ready!(conn.poll_fill(cx)) {
                Ok(0) => {
                    if matches!(self.framing, Framing::Close) {
                        self.framing = Framing::Done;
                        self.conn = None;
                        return Poll::Ready(None);
                    }
                    self.conn = None;
                    return Poll::Ready(Some(Err(Error::Protocol(
                        "the body broke off before its end".into(),
                    ))));
                }
                Ok(_) => {}
                Err(e) => {
                    self.conn = None;
                    return Poll::Ready(Some(Err(Error::Io(e))));
                }
            }
        }
    }
}

/// What the decoder made of the bytes at hand.
#[derive(Debug)]
enum Step {
    Frame(Frame<Bytes>),
    End,
    More,
    Fail(String),
}

/// Decodes as much of the body as `buf` holds (pure: no I/O, so the
/// framing rules are unit-tested on their own).
fn step(framing: &mut Framing, buf: &mut BytesMut) -> Step {
    loop {
        match framing {
            Framing::Done => return Step::End,
            Framing::Length(left) => {
                let Some(data) = take_counted(buf, left) else {
                    return Step::More;
                };
                if *left == 0 {
                    *framing = Framing::Done;
                }
                return Step::Frame(Frame::data(data));
            }
            Framing::Close => {
                if buf.is_empty() {
                    return Step::More;
                }
                return Step::Frame(Frame::data(buf.split().freeze()));
            }
            Framing::Chunked(chunk) => match chunk {
                Chunk::Size => {
                    let Some(end) = find(buf, b"\r\n") else {
                        return too_long_or_more(buf);
                    };
                    let line = buf.split_to(end + 2);
                    let digits = line[..end]
                        .split(|b| *b == b';')
                        .next()
                        .unwrap_or_default()
                        .trim_ascii();
                    let size = std::str::from_utf8(digits)
                        .ok()
                        .filter(|d| !d.is_empty() && d.len() <= 16)
                        .and_then(|d| u64::from_str_radix(d, 16).ok());
                    match size {
                        Some(0) => *chunk = Chunk::Trailers,
                        Some(n) => *chunk = Chunk::Data(n),
                        None => return Step::Fail("bad chunk size".into()),
                    }
                }
                Chunk::Data(left) => {
                    let Some(data) = take_counted(buf, left) else {
                        return Step::More;
                    };
                    if *left == 0 {
                        *chunk = Chunk::DataEnd;
                    }
                    return Step::Frame(Frame::data(data));
                }
                Chunk::DataEnd => {
                    if buf.len() < 2 {
                        return Step::More;
                    }
                    if &buf[..2] != b"\r\n" {
                        return Step::Fail("chunk data not followed by CRLF".into());
                    }
                    buf.advance(2);
                    *chunk = Chunk::Size;
                }
                Chunk::Trailers => {
                    if buf.starts_with(b"\r\n") {
                        buf.advance(2);
                        *framing = Framing::Done;
                        return Step::End;
                    }
                    let Some(end) = find(buf, b"\r\n\r\n") else {
                        return too_long_or_more(buf);
                    };
                    let section = buf.split_to(end + 4);
                    *framing = Framing::Done;
                    return match trailers(&section) {
                        Ok(map) => Step::Frame(Frame::trailers(map)),
                        Err(why) => Step::Fail(why),
                    };
                }
            },
        }
    }
}

/// Runs the answer parser and the body decoder over `data` as the fast
/// path would, for the fuzzer (`fuzz/`) and its corpus, which the tests
/// replay: the first byte says whether the request was a `HEAD` (lowest
/// bit) and in what pieces the rest arrives (the other bits). It must
/// never panic, loop or take more memory than the input.
#[doc(hidden)]
pub fn decode_for_fuzzing(data: &[u8]) {
    let Some((&first, rest)) = data.split_first() else {
        return;
    };
    let head_only = first & 1 == 1;
    let piece = usize::from(first >> 1).max(1);
    let mut pieces = rest.chunks(piece);
    let mut buf = BytesMut::new();
    let mut scan = HeadScan::default();
    // Shared by the heads (1xx, then the answer), as on a connection.
    let mut names = Names::default();
    let mut framing = loop {
        let parsed = if scan.may_hold_head(&buf) {
            parse_head(&mut buf, head_only, &mut names)
        } else {
            Ok(None)
        };
        match parsed {
            Ok(Some((resp, _, _))) if resp.status().is_informational() => {
                scan = HeadScan::default();
            }
            Ok(Some((_, framing, _))) => break framing,
            Ok(None) if buf.len() < MAX_HEAD => match pieces.next() {
                Some(p) => buf.extend_from_slice(p),
                None => return,
            },
            Ok(None) | Err(_) => return,
        }
    };
    loop {
        match step(&mut framing, &mut buf) {
            Step::Frame(_) => {}
            Step::End | Step::Fail(_) => return,
            Step::More => match pieces.next() {
                Some(p) => buf.extend_from_slice(p),
                None => return,
            },
        }
    }
}

/// Up to `left` bytes off the front of `buf`, counted down; `None` when
/// `buf` is empty.
fn take_counted(buf: &mut BytesMut, left: &mut u64) -> Option<Bytes> {
    if buf.is_empty() {
        return None;
    }
    let take = buf.len().min(usize::try_from(*left).unwrap_or(usize::MAX));
    *left -= take as u64;
    Some(buf.split_to(take).freeze())
}

fn too_long_or_more(buf: &BytesMut) -> Step {
    if buf.len() > MAX_LINE {
        Step::Fail(format!(
            "chunk line or trailers longer than {MAX_LINE} bytes"
        ))
    } else {
        Step::More
    }
}

fn find(buf: &[u8], needle: &[u8]) -> Option<usize> {
    buf.windows(needle.len()).position(|w| w == needle)
}

/// Trailer fields (`name: value` lines, the section ending in an empty line).
fn trailers(section: &[u8]) -> Result<HeaderMap, String> {
    let mut map = HeaderMap::new();
    for line in section.split(|b| *b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            continue;
        }
        let colon = line
            .iter()
            .position(|b| *b == b':')
            .ok_or_else(|| "trailer line without a colon".to_string())?;
        let name = HeaderName::from_bytes(&line[..colon]).map_err(|_| "bad trailer name")?;
        let value = HeaderValue::from_bytes(line[colon + 1..].trim_ascii())
            .map_err(|_| "bad trailer value")?;
        map.append(name, value);
    }
    Ok(map)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(framing: &mut Framing, input: &[&[u8]]) -> Result<(Vec<u8>, Option<HeaderMap>), String> {
        let mut buf = BytesMut::new();
        let mut body = Vec::new();
        let mut trailers = None;
        for piece in input {
            buf.extend_from_slice(piece);
            loop {
                match step(framing, &mut buf) {
                    Step::Frame(f) => match f.into_data() {
                        Ok(d) => body.extend_from_slice(&d),
                        Err(f) => trailers = f.into_trailers().ok(),
                    },
                    Step::End => return Ok((body, trailers)),
                    Step::More => break,
                    Step::Fail(why) => return Err(why),
                }
            }
        }
        Err(format!("not finished: {framing:?}"))
    }

    /// Feeds `wire` in `piece`-byte reads as `exchange` does; the head's
    /// status and how many times the parser ran.
    fn trickle(wire: &[u8], piece: usize) -> (Option<u16>, usize) {
        let mut buf = BytesMut::new();
        let mut scan = HeadScan::default();
        let mut parses = 0;
        for p in wire.chunks(piece) {
            buf.extend_from_slice(p);
            if scan.may_hold_head(&buf) {
                parses += 1;
                match parse_head(&mut buf, false, &mut Names::default()) {
                    Ok(Some((resp, _, _))) if resp.status().is_informational() => {
                        scan = HeadScan::default();
                    }
                    Ok(Some((resp, _, _))) => return (Some(resp.status().as_u16()), parses),
                    Ok(None) => {}
                    Err(_) => return (None, parses),
                }
            }
        }
        (None, parses)
    }

    #[test]
    fn a_trickled_head_is_parsed_once_not_after_every_read() {
        let mut head = b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n".to_vec();
        for i in 0..90 {
            head.extend_from_slice(format!("x-filler-{i}: {}\r\n", "v".repeat(600)).as_bytes());
        }
        head.extend_from_slice(b"\r\n");
        assert!(head.len() > 50_000 && head.len() < MAX_HEAD);
        // A read per byte: the parser runs for the first byte and once
        // the empty line is in, never in between.
        let (status, parses) = trickle(&head, 1);
        assert_eq!((status, parses), (Some(200), 2));
        // Bare LF line ends, empty lines before the status line, and a
        // 1xx head before the answer: still one parse per head (+ the
        // first look at each read that starts one).
        let wire = b"\r\n\r\nHTTP/1.1 100 Continue\n\nHTTP/1.1 204 No Content\nx: y\n\r\n";
        let (status, parses) = trickle(wire, 1);
        assert_eq!(status, Some(204));
        assert!(parses <= 4, "{parses} parses");
        for piece in 1..wire.len() {
            assert_eq!(trickle(wire, piece).0, Some(204), "pieces of {piece}");
        }
        // In one read, as nearly always: one parse.
        assert_eq!(trickle(&head, head.len()), (Some(200), 1));
    }

    #[test]
    fn chunked_bodies_decode_across_any_split() {
        let wire: &[u8] =
            b"4;ext=1\r\nWiki\r\n5\r\npedia\r\nE\r\n in\r\n\r\nchunks.\r\n0\r\nx-sum: 7\r\n\r\n";
        for cut in 0..wire.len() {
            let mut f = Framing::Chunked(Chunk::Size);
            let (body, trailers) = run(&mut f, &[&wire[..cut], &wire[cut..]]).unwrap();
            assert_eq!(body, b"Wikipedia in\r\n\r\nchunks.", "cut at {cut}");
            assert_eq!(trailers.unwrap()["x-sum"], "7");
        }
        let mut f = Framing::Chunked(Chunk::Size);
        let (body, trailers) = run(&mut f, &[b"3\r\nabc\r\n0\r\n\r\n"]).unwrap();
        assert_eq!((body.as_slice(), trailers), (&b"abc"[..], None));
    }

    #[test]
    fn bad_chunks_fail() {
        for wire in [
            &b"zz\r\nab\r\n"[..],
            b"2\r\nabXY",
            b"\r\n",
            b"12345678901234567\r\n",
        ] {
            let mut f = Framing::Chunked(Chunk::Size);
            assert!(run(&mut f, &[wire]).is_err(), "{wire:?}");
        }
    }

    #[test]
    fn lengths_count_down_and_leave_the_rest() {
        let mut f = Framing::Length(5);
        let mut buf = BytesMut::from(&b"hel"[..]);
        assert!(matches!(step(&mut f, &mut buf), Step::Frame(_)));
        buf.extend_from_slice(b"loEXTRA");
        assert!(matches!(step(&mut f, &mut buf), Step::Frame(_)));
        assert!(matches!(f, Framing::Done));
        assert_eq!(&buf[..], b"EXTRA");
    }

    #[test]
    fn remembered_header_names_are_the_parsed_ones() {
        let mut names = Names::default();
        let mut parse = |head: &[u8]| {
            let mut buf = BytesMut::from(head);
            parse_head(&mut buf, false, &mut names).map(|parsed| {
                let (resp, _, _) = parsed.expect("a whole head");
                resp.headers()
                    .iter()
                    .map(|(n, v)| format!("{n}={}", v.to_str().unwrap_or("?")))
                    .collect::<Vec<_>>()
            })
        };
        let first = parse(b"HTTP/1.1 200 OK\r\nServer: a\r\nX-One: 1\r\nContent-Length: 0\r\n\r\n");
        assert_eq!(
            first.expect("parsed"),
            ["server=a", "x-one=1", "content-length=0"]
        );
        // Same names, then other names and other cases at the same places.
        let again = parse(b"HTTP/1.1 200 OK\r\nServer: b\r\nX-One: 2\r\nContent-Length: 0\r\n\r\n");
        assert_eq!(
            again.expect("parsed"),
            ["server=b", "x-one=2", "content-length=0"]
        );
        let other = parse(b"HTTP/1.1 200 OK\r\nSERVER: c\r\nx-two: 3\r\nContent-Length: 0\r\n\r\n");
        assert_eq!(
            other.expect("parsed"),
            ["server=c", "x-two=3", "content-length=0"]
        );
        // A bad name where a good one was remembered is still refused
        // (httparse lets a few through that `HeaderName` does not).
        let bad = parse(b"HTTP/1.1 200 OK\r\nServer: d\r\nX-{One}: 1\r\nContent-Length: 0\r\n\r\n");
        assert!(bad.is_err(), "{bad:?}");
    }

    #[test]
    fn heads_encode_as_sent() {
        let req = Request::builder()
            .method("GET")
            .uri("/a?b=1")
            .header("host", "up:80")
            .header("x-forwarded-for", "127.0.0.1")
            .body(())
            .unwrap();
        let mut out = Vec::new();
        encode_head(&req, &mut out);
        assert_eq!(
            out,
            b"GET /a?b=1 HTTP/1.1\r\nhost: up:80\r\nx-forwarded-for: 127.0.0.1\r\n\r\n"
        );
    }
}
