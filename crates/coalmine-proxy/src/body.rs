//! Request bodies as the request path hands them to an upstream
//! connection: shared by [`crate::forward`], which makes them, and
//! [`crate::pool`], which sends them, so that neither imports the other.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http_body_util::{Either, Full};
use hyper::body::{Body as _, Incoming};

/// An error of any kind, as bodies report them.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Request bodies: streamed from the client, or made here.
pub type RequestBody = Either<ClientBody, Full<Bytes>>;

/// A client's request body, streamed, noting whether it has ended or
/// broke off, so a failed or late exchange can be put down to the client
/// rather than the upstream.
pub struct ClientBody {
    inner: Incoming,
    /// [`UPLOADING`], [`UPLOADED`] or [`UPLOAD_FAILED`]; absent for a body
    /// that was empty from the start (most requests), which can neither
    /// fail nor keep anyone waiting.
    pub(crate) upload: Option<Arc<AtomicU8>>,
}

/// The client is still sending its body.
pub(crate) const UPLOADING: u8 = 0;
/// The client's body has ended.
pub(crate) const UPLOADED: u8 = 1;
/// The client's body broke off or was malformed.
pub(crate) const UPLOAD_FAILED: u8 = 2;

impl ClientBody {
    pub(crate) fn new(inner: Incoming) -> Self {
        let upload = (!inner.is_end_stream()).then(|| Arc::new(AtomicU8::new(UPLOADING)));
        ClientBody { inner, upload }
    }
}

impl hyper::body::Body for ClientBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<Bytes>, hyper::Error>>> {
        let this = self.get_mut();
        let frame = ready!(Pin::new(&mut this.inner).poll_frame(cx));
        if let Some(upload) = &this.upload {
            match &frame {
                Some(Err(_)) => upload.store(UPLOAD_FAILED, Ordering::Relaxed),
                None => upload.store(UPLOADED, Ordering::Relaxed),
                Some(Ok(_)) if this.inner.is_end_stream() => {
                    upload.store(UPLOADED, Ordering::Relaxed);
                }
                Some(Ok(_)) => {}
            }
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}
