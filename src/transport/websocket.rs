//! MQTT over WebSocket (MQTT 5.0 §6, MQTT 3.1.1 §6): the HTTP upgrade, and an adapter that
//! presents the WebSocket's binary frames as one plain byte stream.
//!
//! The upgrade is served on `/mqtt` only and answers the `mqtt` subprotocol (or the older
//! `mqttv3.1`). After it, frame boundaries mean nothing: an MQTT packet may span frames and a
//! frame may hold several packets, so [`WsStream`] reads frame payloads into a byte stream and
//! writes each chunk of bytes as one binary frame. The MQTT codec above never sees frames.
//!
//! The same adapter serves the client side ([`connect`]), which the `supermq pub/sub/bench`
//! tools use for `--ws`.
//!
//! Memory: tungstenite's defaults (128 KiB read buffer, allocated eagerly) would dwarf an idle
//! MQTT connection, so the read buffer is small, the adapter holds no buffer of its own between
//! frames, and outgoing frames are capped so tungstenite's write buffer stays small too.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Buf, Bytes, BytesMut};
use futures_util::{Sink, Stream};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::error::{CapacityError, ProtocolError};
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::{HeaderMap, HeaderValue, StatusCode, header};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

use super::{BoxStream, TransportError};

/// The only path MQTT is served on; other paths get 404.
const PATH: &str = "/mqtt";

/// Subprotocols we answer, most preferred first: `mqtt` is the registered name (MQTT 3.1.1 and
/// 5.0), `mqttv3.1` what MQTT 3.1 clients still send.
const SUBPROTOCOLS: [&str; 2] = ["mqtt", "mqttv3.1"];

/// Largest WebSocket message (and frame) the client side accepts from a broker: 16 MiB. (The
/// server side takes its bound from the broker: see [`accept`].)
const CLIENT_MAX_MESSAGE_SIZE: usize = 16 << 20;

/// Read buffer, allocated when the handshake completes and the most read from the socket per
/// system call. Small, because it is held for the connection's whole life.
const READ_BUFFER_SIZE: usize = 1024;

/// Largest binary frame one write sends. tungstenite's write buffer keeps the capacity of the
/// largest frame it ever wrote, so this bounds it; longer writes become several frames.
const MAX_WRITE_FRAME: usize = 8 << 10;

/// Runs the server side of the WebSocket upgrade on `stream` (TCP or TLS).
///
/// Messages and frames from the client are bounded by `max_message`, the broker's
/// `limits.max_packet_size`: tungstenite buffers a whole message (and a whole frame) before
/// handing it on, so this bounds what a client can make the broker hold, as the packet size
/// does on TCP. No slack is added for headers: MQTT's packet size counts the fixed header, so
/// any packet the broker accepts fits in one message. A packet may still span messages, and a
/// message may hold several packets as long as it stays within the bound. A larger frame is
/// refused from its header, before its payload is read, and the read fails with
/// [`MessageTooLarge`].
pub(super) async fn accept<S>(stream: S, max_message: usize) -> Result<WsStream<S>, TransportError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let config = WebSocketConfig::default()
        .read_buffer_size(READ_BUFFER_SIZE)
        // Write each frame to the socket at once instead of collecting a batch in tungstenite's
        // buffer: the broker batches packets itself, before they reach us.
        .write_buffer_size(0)
        .max_message_size(Some(max_message))
        .max_frame_size(Some(max_message));
    let ws = tokio_tungstenite::accept_hdr_async_with_config(stream, answer_upgrade, Some(config))
        .await
        .map_err(|error| TransportError::WebSocketHandshake(Box::new(error)))?;
    Ok(WsStream {
        ws,
        unread: Bytes::new(),
    })
}

/// Read buffer of the client side: larger than the server's, because a client (the bench tool
/// above all) is one of a few connections and reads many packets per system call.
const CLIENT_READ_BUFFER_SIZE: usize = 64 << 10;

/// Runs the client side of the upgrade to `url` (`ws://host:port/mqtt`, or `wss://` over a TLS
/// `stream`), offering the `mqtt` subprotocol, and returns the connection as a byte stream.
pub async fn connect<S>(stream: S, url: &str) -> Result<BoxStream, TransportError>
where
    S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let handshake_error = |error| TransportError::WebSocketHandshake(Box::new(error));
    let mut request = url.into_client_request().map_err(handshake_error)?;
    request.headers_mut().insert(
        header::SEC_WEBSOCKET_PROTOCOL,
        HeaderValue::from_static(SUBPROTOCOLS[0]),
    );
    let config = WebSocketConfig::default()
        .read_buffer_size(CLIENT_READ_BUFFER_SIZE)
        .write_buffer_size(0)
        .max_message_size(Some(CLIENT_MAX_MESSAGE_SIZE))
        .max_frame_size(Some(CLIENT_MAX_MESSAGE_SIZE));
    let (ws, _response) =
        tokio_tungstenite::client_async_with_config(request, stream, Some(config))
            .await
            .map_err(handshake_error)?;
    Ok(Box::new(WsStream {
        ws,
        unread: Bytes::new(),
    }))
}

/// The handshake callback: refuses paths other than `/mqtt` and picks the subprotocol.
#[expect(
    clippy::result_large_err,
    reason = "the signature is tungstenite's handshake Callback"
)]
fn answer_upgrade(request: &Request, mut response: Response) -> Result<Response, ErrorResponse> {
    if request.uri().path() != PATH {
        let body = format!("MQTT over WebSocket is served on {PATH}\n");
        let mut not_found = ErrorResponse::new(None);
        *not_found.status_mut() = StatusCode::NOT_FOUND;
        let headers = not_found.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(body.len()));
        headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
        *not_found.body_mut() = Some(body);
        return Err(not_found);
    }
    // Many clients offer no subprotocol at all; they are accepted, with none in the answer.
    if let Some(chosen) = choose_subprotocol(request.headers()) {
        response.headers_mut().insert(
            header::SEC_WEBSOCKET_PROTOCOL,
            HeaderValue::from_static(chosen),
        );
    }
    Ok(response)
}

/// The most preferred of [`SUBPROTOCOLS`] that the client offers. The offer may be spread over
/// several headers, each a comma-separated list.
fn choose_subprotocol(headers: &HeaderMap) -> Option<&'static str> {
    let offered: Vec<&str> = headers
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|list| list.split(','))
        .map(str::trim)
        .collect();
    SUBPROTOCOLS.into_iter().find(|ours| offered.contains(ours))
}

/// A WebSocket message or frame larger than allowed, as the cause of the read error
/// ([`std::io::Error::get_ref`]) that reports it: the broker answers it as it answers a
/// packet larger than its maximum.
#[derive(Debug, thiserror::Error)]
#[error("WebSocket message of {size} bytes exceeds the maximum of {max}")]
pub struct MessageTooLarge {
    pub size: usize,
    pub max: usize,
}

/// A WebSocket connection seen as a byte stream.
///
/// Reading: binary frame payloads are handed out in order, as one continuous stream. Pings are
/// answered by tungstenite; a close frame is answered and then reads as end of stream; a text
/// frame is refused with close code 1003 and a read error (MQTT-6.0.0-1); a message or frame
/// over the bound is a read error with [`MessageTooLarge`] (the connection can still write,
/// so the broker can say why before it closes). After a read error the stream reads as ended.
///
/// Writing: each write sends its bytes as one binary frame (at most [`MAX_WRITE_FRAME`] bytes;
/// a longer write is partial, as `AsyncWrite` allows); shutdown sends a close frame and then
/// shuts the socket down.
pub(super) struct WsStream<S> {
    ws: WebSocketStream<S>,
    /// The part of the last binary payload not read yet. It shares the frame's memory, and is
    /// reset to an empty `Bytes` (no allocation) once read, so the frame is freed.
    unread: Bytes,
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for WsStream<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if buf.remaining() == 0 {
            return Poll::Ready(Ok(()));
        }
        while this.unread.is_empty() {
            match ready!(Pin::new(&mut this.ws).poll_next(cx)) {
                Some(Ok(Message::Binary(payload))) => this.unread = payload,
                // tungstenite has queued the answer to a ping (a pong) or to a close (a close).
                // Polling again is what writes it out: each read first flushes queued control
                // frames. After a close, the next poll ends the stream: `None` below.
                Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Close(_))) => {}
                Some(Ok(Message::Text(_))) => return Poll::Ready(Err(this.refuse_text())),
                // Raw frames are only ever written, never read; skip rather than fail.
                Some(Ok(Message::Frame(_))) => {}
                Some(Err(error)) => return Poll::Ready(Err(into_io(error))),
                None => return Poll::Ready(Ok(())),
            }
        }
        let n = buf.remaining().min(this.unread.len());
        buf.put_slice(&this.unread[..n]);
        this.unread.advance(n);
        if this.unread.is_empty() {
            // An emptied `Bytes` still holds the frame; drop it.
            this.unread = Bytes::new();
        }
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> WsStream<S> {
    /// Answers a text frame with close code 1003 and returns the read error. MQTT-6.0.0-1 says
    /// to close the connection; the close frame tells the client why.
    fn refuse_text(&mut self) -> io::Error {
        let close = CloseFrame {
            code: CloseCode::Unsupported,
            reason: "MQTT over WebSocket uses binary frames".into(),
        };
        // Best effort: the connection is being dropped for the error below either way, so a
        // close frame that cannot be written now is not worth waiting for.
        if let Err(error) = Pin::new(&mut self.ws).start_send(Message::Close(Some(close))) {
            tracing::debug!(%error, "cannot send WebSocket close frame");
        }
        io::Error::new(
            io::ErrorKind::InvalidData,
            "text WebSocket frame received; MQTT uses binary frames (MQTT-6.0.0-1)",
        )
    }

    /// Sends `payload` as one binary frame once tungstenite can take it.
    fn poll_send(
        &mut self,
        cx: &mut Context<'_>,
        payload: impl FnOnce() -> Bytes,
    ) -> Poll<io::Result<usize>> {
        let mut ws = Pin::new(&mut self.ws);
        ready!(ws.as_mut().poll_ready(cx)).map_err(into_io)?;
        let payload = payload();
        let len = payload.len();
        // With a write buffer size of 0 this writes the frame to the socket right away; if the
        // socket is full, tungstenite keeps the frame and the next poll_ready flushes it.
        ws.start_send(Message::Binary(payload)).map_err(into_io)?;
        Poll::Ready(Ok(len))
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for WsStream<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        let len = buf.len().min(MAX_WRITE_FRAME);
        self.poll_send(cx, || Bytes::copy_from_slice(&buf[..len]))
    }

    /// Gathers the slices (typically a packet header and its payload) into one frame rather
    /// than one frame per slice.
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let total = bufs
            .iter()
            .map(|slice| slice.len())
            .sum::<usize>()
            .min(MAX_WRITE_FRAME);
        if total == 0 {
            return Poll::Ready(Ok(0));
        }
        self.poll_send(cx, || {
            let mut frame = BytesMut::with_capacity(total);
            for slice in bufs {
                let take = slice.len().min(total - frame.len());
                frame.extend_from_slice(&slice[..take]);
            }
            frame.freeze()
        })
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.ws).poll_flush(cx).map_err(into_io)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // Close frame first, then the socket below it (for wss, that sends TLS close_notify).
        ready!(Pin::new(&mut self.ws).poll_close(cx)).map_err(into_io)?;
        Pin::new(self.ws.get_mut()).poll_shutdown(cx)
    }
}

/// tungstenite reports socket errors and WebSocket protocol errors in one type; the byte
/// stream reports them as `io::Error`, keeping the socket's own errors as they are.
fn into_io(error: WsError) -> io::Error {
    match error {
        WsError::Io(error) => error,
        // Writing after either side closed: the same situation as a socket closed under us.
        WsError::ConnectionClosed
        | WsError::AlreadyClosed
        | WsError::Protocol(ProtocolError::SendAfterClosing) => {
            io::Error::new(io::ErrorKind::BrokenPipe, error)
        }
        WsError::Capacity(CapacityError::MessageTooLong { size, max_size }) => io::Error::new(
            io::ErrorKind::InvalidData,
            MessageTooLarge {
                size,
                max: max_size,
            },
        ),
        other => io::Error::new(io::ErrorKind::InvalidData, other),
    }
}
