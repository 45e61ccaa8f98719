//! The read and write buffers of the bench's hot loops, polled by hand.
//!
//! Publishers and subscribers drive their connection from one `poll_fn` each, reading and
//! writing in the same poll so that neither direction ever waits for the other (a publisher
//! that only wrote would stop reading acknowledgements, and the broker would stop reading it).
//! Both buffers are plain `Vec<u8>`s with cursors: one large read per wake-up (64 KiB for a
//! subscriber, many packets) and one write of everything queued.

use std::future::poll_fn;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use supermq::transport::BoxStream;

use crate::client::ClientError;

/// Read buffer of a subscriber: deliveries come in bulk, so many per system call.
pub const SUBSCRIBER_READ: usize = 64 << 10;

/// Read buffer of a publisher: it only reads 4-byte acknowledgements.
pub const PUBLISHER_READ: usize = 8 << 10;

/// A normal DISCONNECT (valid in 3.1.1 and, as the short form, in 5.0).
const DISCONNECT: [u8; 2] = [0xE0, 0x00];

/// How long closing may take.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);

/// Bytes received and not yet handled.
pub struct ReadBuffer {
    buf: Vec<u8>,
    start: usize,
    end: usize,
}

impl ReadBuffer {
    /// A buffer of `size` bytes holding `initial` (bytes the connection read before the hot
    /// loop took over).
    pub fn new(size: usize, initial: &[u8]) -> ReadBuffer {
        let mut buf = vec![0; size.max(2 * initial.len())];
        buf[..initial.len()].copy_from_slice(initial);
        ReadBuffer {
            buf,
            start: 0,
            end: initial.len(),
        }
    }

    pub fn data(&self) -> &[u8] {
        &self.buf[self.start..self.end]
    }

    pub fn consume(&mut self, n: usize) {
        self.start += n;
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
    }

    /// Makes sure a packet of `total` bytes fits, so the next read can complete it.
    pub fn make_room(&mut self, total: usize) {
        if self.buf.len() - self.start < total {
            self.compact();
            if self.buf.len() < total {
                self.buf.resize(total, 0);
            }
        }
    }

    fn compact(&mut self) {
        self.buf.copy_within(self.start..self.end, 0);
        self.end -= self.start;
        self.start = 0;
    }

    /// Reads what the stream has; `Ok(false)` when nothing is there yet (the task will be woken).
    pub fn fill(
        &mut self,
        cx: &mut Context<'_>,
        stream: &mut BoxStream,
    ) -> Result<bool, ClientError> {
        if self.end == self.buf.len() {
            self.compact();
            if self.end == self.buf.len() {
                // Only reached with a packet larger than the buffer, which make_room prevents;
                // growing keeps the loop correct regardless.
                self.buf.resize(self.buf.len() * 2, 0);
            }
        }
        let mut read = ReadBuf::new(&mut self.buf[self.end..]);
        match Pin::new(stream).poll_read(cx, &mut read) {
            Poll::Pending => Ok(false),
            Poll::Ready(Err(error)) => Err(ClientError::Io(error)),
            Poll::Ready(Ok(())) => {
                let n = read.filled().len();
                if n == 0 {
                    return Err(ClientError::Closed);
                }
                self.end += n;
                Ok(true)
            }
        }
    }
}

/// Bytes queued for the stream.
#[derive(Default)]
pub struct WriteBuffer {
    buf: Vec<u8>,
    written: usize,
    /// Everything was written but the stream has not confirmed a flush yet (TLS, WebSocket).
    unflushed: bool,
}

impl WriteBuffer {
    /// True when nothing waits to be written or flushed.
    pub fn is_idle(&self) -> bool {
        self.buf.is_empty() && !self.unflushed
    }

    /// The buffer to append packets to.
    pub fn queue(&mut self) -> &mut Vec<u8> {
        &mut self.buf
    }

    /// Writes as much as the stream takes; `Ok(true)` if anything was written or flushed.
    pub fn drain(
        &mut self,
        cx: &mut Context<'_>,
        stream: &mut BoxStream,
    ) -> Result<bool, ClientError> {
        let mut progressed = false;
        while self.written < self.buf.len() {
            match Pin::new(&mut *stream).poll_write(cx, &self.buf[self.written..]) {
                Poll::Pending => return Ok(progressed),
                Poll::Ready(Err(error)) => return Err(ClientError::Io(error)),
                Poll::Ready(Ok(0)) => return Err(ClientError::Closed),
                Poll::Ready(Ok(n)) => {
                    self.written += n;
                    progressed = true;
                }
            }
        }
        if progressed {
            self.buf.clear();
            self.written = 0;
            self.unflushed = true;
        }
        if self.unflushed {
            match Pin::new(stream).poll_flush(cx) {
                Poll::Pending => {}
                Poll::Ready(Err(error)) => return Err(ClientError::Io(error)),
                Poll::Ready(Ok(())) => {
                    self.unflushed = false;
                    progressed = true;
                }
            }
        }
        Ok(progressed)
    }

    /// Sends DISCONNECT after what is queued and closes the stream, best effort: a bench
    /// client that is done must not wait long on a broker that stopped reading.
    pub async fn disconnect(&mut self, stream: &mut BoxStream) {
        self.buf.extend_from_slice(&DISCONNECT);
        let closing = async {
            poll_fn(|cx| match self.drain(cx, stream) {
                Err(_) => Poll::Ready(()),
                Ok(_) if self.is_idle() => Poll::Ready(()),
                Ok(_) => Poll::Pending,
            })
            .await;
            let _ = tokio::io::AsyncWriteExt::shutdown(stream).await;
        };
        let _ = tokio::time::timeout(CLOSE_TIMEOUT, closing).await;
    }
}
