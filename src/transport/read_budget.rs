//! A bound on the bytes a TLS or WebSocket connection may send before the broker lifts it.
//!
//! The broker holds what a client sends before its CONNECT is accepted, and the layers under
//! MQTT hold some of it too: rustls a handshake message of up to 64 KiB, tungstenite a whole
//! WebSocket message (of up to `limits.max_packet_size`) before handing it on. To bound all of
//! them with one figure, [`Pending::handshake`](super::Pending::handshake) puts the socket
//! behind a [`ReadBudget`]: reads from the socket, below TLS and WebSocket, take from it, and
//! a read once it is spent fails with [`BudgetSpent`]. Nothing above the socket can hold more
//! than was read from it, so a connection costs at most its budget until the broker lifts it
//! (when it accepts the CONNECT). Plain TCP needs none: the broker reads its CONNECT itself,
//! bounded from the fixed header.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// What a budget holds once lifted.
const LIFTED: usize = usize::MAX;

/// The bytes a connection may still send; shared between the broker, which lifts it, and the
/// socket, which spends it.
#[derive(Clone, Debug)]
pub struct ReadBudget(Arc<Budget>);

#[derive(Debug)]
struct Budget {
    /// Bytes left, or [`LIFTED`].
    left: AtomicUsize,
    /// Bytes given, for the error.
    given: usize,
}

impl ReadBudget {
    pub fn new(bytes: usize) -> ReadBudget {
        let given = bytes.min(LIFTED - 1);
        ReadBudget(Arc::new(Budget {
            left: AtomicUsize::new(given),
            given,
        }))
    }

    /// Lets the connection send without bound from now on.
    pub fn lift(&self) {
        self.0.left.store(LIFTED, Ordering::Relaxed);
    }

    fn left(&self) -> usize {
        self.0.left.load(Ordering::Relaxed)
    }

    /// Takes `n` bytes read; `false` if the budget was lifted meanwhile.
    fn spend(&self, n: usize) -> bool {
        self.0
            .left
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |left| {
                (left != LIFTED).then(|| left.saturating_sub(n))
            })
            .is_ok()
    }
}

/// The read error of a connection that sent more than its budget.
#[derive(Debug, thiserror::Error)]
#[error("sent more than {budget} bytes before its CONNECT was accepted")]
pub struct BudgetSpent {
    pub budget: usize,
}

/// A socket whose reads take from a [`ReadBudget`] until it is lifted.
pub(super) struct Budgeted<S> {
    inner: S,
    /// `None` once the budget was seen lifted: the connection's whole life after CONNECT then
    /// holds neither the budget nor its check.
    budget: Option<ReadBudget>,
}

impl<S> Budgeted<S> {
    pub fn new(inner: S, budget: ReadBudget) -> Budgeted<S> {
        Budgeted {
            inner,
            budget: Some(budget),
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Budgeted<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let Some(budget) = &this.budget else {
            return Pin::new(&mut this.inner).poll_read(cx, buf);
        };
        let left = budget.left();
        if left == LIFTED {
            this.budget = None;
            return Pin::new(&mut this.inner).poll_read(cx, buf);
        }
        if left == 0 {
            let spent = BudgetSpent {
                budget: budget.0.given,
            };
            return Poll::Ready(Err(io::Error::new(io::ErrorKind::InvalidData, spent)));
        }
        // Read no more than is left, so that no layer above ever holds more than the budget.
        let window = buf.initialize_unfilled_to(left.min(buf.remaining()));
        let mut limited = ReadBuf::new(window);
        ready!(Pin::new(&mut this.inner).poll_read(cx, &mut limited))?;
        let read = limited.filled().len();
        buf.advance(read);
        if let Some(budget) = &this.budget
            && !budget.spend(read)
        {
            this.budget = None;
        }
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Budgeted<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn reads_stop_at_the_budget_until_it_is_lifted() {
        let (mut client, server) = tokio::io::duplex(1024);
        let budget = ReadBudget::new(10);
        let mut server = Budgeted::new(server, budget.clone());
        client.write_all(&[7; 30]).await.unwrap();
        let mut buf = [0; 64];
        assert_eq!(
            server.read(&mut buf).await.unwrap(),
            10,
            "no more than the budget"
        );
        let error = server.read(&mut buf).await.expect_err("spent");
        assert_eq!(
            error.to_string(),
            "sent more than 10 bytes before its CONNECT was accepted"
        );
        budget.lift();
        assert_eq!(server.read(&mut buf).await.unwrap(), 20, "the rest");
        assert!(server.budget.is_none(), "the budget is let go once lifted");
    }
}
