//! The transport layer over real sockets on 127.0.0.1: TCP, TLS (with and without client
//! certificates), WebSocket and secure WebSocket, each checked from the client side with a real
//! client (tokio-rustls, tokio-tungstenite) and, where it matters, from the server side through
//! the `BoxStream` the broker would get. Certificates come from tests/certs/ (see its README).

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, pem::PemObject};
use supermq::transport::{
    BoxStream, BudgetSpent, Kind, Listener, MessageTooLarge, ReadBudget, TransportError, load_tls,
};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_rustls::TlsConnector;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::handshake::client::Response;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{Bytes, Error as WsError, Message};

// ---------------------------------------------------------------------------------------------
// Harness

fn cert(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/certs")
        .join(name)
}

/// Fails the test instead of hanging it when something never happens.
async fn within<T>(what: &str, future: impl Future<Output = T>) -> T {
    match tokio::time::timeout(Duration::from_secs(10), future).await {
        Ok(value) => value,
        Err(_) => panic!("timed out: {what}"),
    }
}

async fn bind(kind: Kind, tls: Option<Arc<rustls::ServerConfig>>) -> Listener {
    let listener = Listener::bind(kind, "127.0.0.1:0".parse().unwrap(), tls)
        .await
        .unwrap();
    assert_eq!(listener.kind(), kind);
    assert_ne!(listener.local_addr().port(), 0);
    listener
}

fn server_tls() -> Arc<rustls::ServerConfig> {
    load_tls(&cert("server.pem"), &cert("server.key"), None).unwrap()
}

fn server_tls_with_client_ca() -> Arc<rustls::ServerConfig> {
    load_tls(
        &cert("server.pem"),
        &cert("server.key"),
        Some(&cert("ca.pem")),
    )
    .unwrap()
}

/// The largest WebSocket message the server side accepts in these tests (the broker passes its
/// `limits.max_packet_size`).
const MAX_MESSAGE: usize = 4096;

/// A read budget no test here reaches, for the tests that are not about it.
fn unbounded() -> ReadBudget {
    ReadBudget::new(usize::MAX)
}

/// The echo harness: accepts connections forever, runs each handshake in its own task (as the
/// broker will), copies every byte back, and reports how each connection ended: `Ok` at end of
/// stream, `Err` with the error's text if the handshake or a read failed.
fn echo(listener: Listener) -> mpsc::UnboundedReceiver<Result<(), String>> {
    let (outcomes, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let (pending, _peer) = listener.accept().await.unwrap();
            let outcomes = outcomes.clone();
            tokio::spawn(async move {
                let outcome = match pending.handshake(MAX_MESSAGE, unbounded()).await {
                    Ok((stream, _)) => copy_back(stream.0).await.map_err(|e| e.to_string()),
                    Err(e) => Err(e.to_string()),
                };
                let _ = outcomes.send(outcome);
            });
        }
    });
    rx
}

async fn copy_back(mut stream: BoxStream) -> std::io::Result<()> {
    let mut buf = [0u8; 4096];
    loop {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            return Ok(());
        }
        stream.write_all(&buf[..n]).await?;
        stream.flush().await?;
    }
}

/// Accepts one connection and returns its server-side stream, for tests that look at exactly
/// what the broker would read.
async fn accept_one(listener: &Listener) -> Result<BoxStream, TransportError> {
    accept_one_within(listener, unbounded()).await
}

/// [`accept_one`], with reads from the socket taking from `budget`.
async fn accept_one_within(
    listener: &Listener,
    budget: ReadBudget,
) -> Result<BoxStream, TransportError> {
    let (pending, _peer) = listener.accept().await.unwrap();
    pending
        .handshake(MAX_MESSAGE, budget)
        .await
        .map(|(stream, _)| stream.0)
}

/// Writes `data` and checks it comes back unchanged.
async fn assert_echoes<S: AsyncRead + AsyncWrite + Unpin>(stream: &mut S, data: &[u8]) {
    stream.write_all(data).await.unwrap();
    stream.flush().await.unwrap();
    let mut back = vec![0u8; data.len()];
    within("echo", stream.read_exact(&mut back)).await.unwrap();
    assert_eq!(back, data);
}

fn client_tls(client_cert: Option<(&str, &str)>) -> TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    for ca in CertificateDer::pem_file_iter(cert("ca.pem")).unwrap() {
        roots.add(ca.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    let config = match client_cert {
        Some((chain, key)) => {
            let chain = CertificateDer::pem_file_iter(cert(chain))
                .unwrap()
                .collect::<Result<Vec<_>, _>>()
                .unwrap();
            let key = PrivateKeyDer::from_pem_file(cert(key)).unwrap();
            builder.with_client_auth_cert(chain, key).unwrap()
        }
        None => builder.with_no_client_auth(),
    };
    TlsConnector::from(Arc::new(config))
}

async fn tls_connect(
    addr: SocketAddr,
    connector: &TlsConnector,
) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(addr).await?;
    let name = ServerName::try_from("localhost").unwrap();
    connector.connect(name, tcp).await
}

/// A WebSocket client handshake on `stream` for `path`, offering `subprotocols` (if any).
async fn ws_connect<S: AsyncRead + AsyncWrite + Unpin>(
    stream: S,
    addr: SocketAddr,
    path: &str,
    subprotocols: Option<&str>,
) -> Result<(WebSocketStream<S>, Response), WsError> {
    let mut request = format!("ws://{addr}{path}").into_client_request().unwrap();
    if let Some(offer) = subprotocols {
        request
            .headers_mut()
            .insert("Sec-WebSocket-Protocol", offer.parse().unwrap());
    }
    tokio_tungstenite::client_async(request, stream).await
}

fn chosen_subprotocol(response: &Response) -> Option<&str> {
    response
        .headers()
        .get("Sec-WebSocket-Protocol")
        .map(|value| value.to_str().unwrap())
}

/// The next data or close message the client receives (pings and pongs are skipped).
async fn next_message<S: AsyncRead + AsyncWrite + Unpin>(
    client: &mut WebSocketStream<S>,
) -> Option<Message> {
    loop {
        match within("client message", client.next()).await {
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
            Some(Ok(message)) => return Some(message),
            Some(Err(e)) => panic!("client read error: {e}"),
            None => return None,
        }
    }
}

/// Reads binary messages on the client until `len` bytes arrived; returns them and how many
/// frames they came in.
async fn read_binary<S: AsyncRead + AsyncWrite + Unpin>(
    client: &mut WebSocketStream<S>,
    len: usize,
) -> (Vec<u8>, usize) {
    let mut data = Vec::new();
    let mut frames = 0;
    while data.len() < len {
        match next_message(client).await {
            Some(Message::Binary(payload)) => {
                data.extend_from_slice(&payload);
                frames += 1;
            }
            other => panic!("expected a binary frame, got {other:?}"),
        }
    }
    (data, frames)
}

/// Connects a WebSocket client to a fresh `ws` listener and returns both ends.
async fn ws_pair() -> (WebSocketStream<TcpStream>, BoxStream) {
    let listener = bind(Kind::Ws, None).await;
    let addr = listener.local_addr();
    let server = tokio::spawn(async move { accept_one(&listener).await.unwrap() });
    let tcp = TcpStream::connect(addr).await.unwrap();
    let (client, _) = within("ws handshake", ws_connect(tcp, addr, "/mqtt", Some("mqtt")))
        .await
        .unwrap();
    (client, server.await.unwrap())
}

// A PUBLISH (QoS 0, topic "a/b", payload "hi"), a PINGREQ and a DISCONNECT, as on the wire.
const PUBLISH: [u8; 9] = [0x30, 0x07, 0x00, 0x03, b'a', b'/', b'b', b'h', b'i'];
const PINGREQ: [u8; 2] = [0xc0, 0x00];
const DISCONNECT: [u8; 2] = [0xe0, 0x00];

// ---------------------------------------------------------------------------------------------
// TCP

#[tokio::test]
async fn tcp_echoes_through_a_box_stream() {
    let listener = bind(Kind::Tcp, None).await;
    let addr = listener.local_addr();
    let mut outcomes = echo(listener);

    let mut client = TcpStream::connect(addr).await.unwrap();
    assert_echoes(&mut client, &PUBLISH).await;
    assert_echoes(&mut client, &[7u8; 100_000]).await;
    drop(client);
    assert_eq!(within("outcome", outcomes.recv()).await, Some(Ok(())));
}

#[tokio::test]
async fn accept_returns_the_peer_address() {
    let listener = bind(Kind::Tcp, None).await;
    let client = TcpStream::connect(listener.local_addr()).await.unwrap();
    let (_pending, peer) = within("accept", listener.accept()).await.unwrap();
    assert_eq!(peer, client.local_addr().unwrap());
}

#[tokio::test]
async fn bind_on_an_address_in_use_names_the_address_and_the_os_error() {
    let first = bind(Kind::Tcp, None).await;
    let addr = first.local_addr();
    let error = Listener::bind(Kind::Tcp, addr, None).await.unwrap_err();
    let message = error.to_string();
    assert!(matches!(error, TransportError::Bind { .. }), "{error:?}");
    assert!(message.contains(&addr.to_string()), "{message}");
    assert!(
        message.to_lowercase().contains("address already in use"),
        "{message}"
    );
}

#[tokio::test]
async fn tls_kinds_refuse_to_bind_without_a_tls_config() {
    for kind in [Kind::Tls, Kind::Wss] {
        let addr = "127.0.0.1:0".parse().unwrap();
        let error = Listener::bind(kind, addr, None).await.unwrap_err();
        assert!(
            matches!(error, TransportError::TlsConfigMissing { .. }),
            "{error:?}"
        );
        assert!(error.to_string().contains(kind.name()), "{error}");
    }
}

// ---------------------------------------------------------------------------------------------
// TLS

#[tokio::test]
async fn tls_handshake_then_bytes_both_ways() {
    let listener = bind(Kind::Tls, Some(server_tls())).await;
    let addr = listener.local_addr();
    let mut outcomes = echo(listener);

    let mut client = within("tls connect", tls_connect(addr, &client_tls(None)))
        .await
        .unwrap();
    assert_echoes(&mut client, &PUBLISH).await;
    assert_echoes(&mut client, &[9u8; 100_000]).await;
    client.shutdown().await.unwrap();
    assert_eq!(within("outcome", outcomes.recv()).await, Some(Ok(())));
}

#[tokio::test]
async fn tls_client_that_does_not_trust_the_server_fails() {
    // A server presenting the self-signed certificate: the client trusts only the test CA.
    let config = load_tls(&cert("other.pem"), &cert("other.key"), None).unwrap();
    let listener = bind(Kind::Tls, Some(config)).await;
    let addr = listener.local_addr();
    let mut outcomes = echo(listener);

    let error = within("tls connect", tls_connect(addr, &client_tls(None)))
        .await
        .unwrap_err();
    assert!(error.to_string().contains("UnknownIssuer"), "{error}");
    let outcome = within("outcome", outcomes.recv()).await.unwrap();
    assert!(outcome.unwrap_err().starts_with("TLS handshake failed"));
}

#[tokio::test]
async fn tls_with_client_ca_accepts_a_client_certificate_signed_by_it() {
    let listener = bind(Kind::Tls, Some(server_tls_with_client_ca())).await;
    let addr = listener.local_addr();
    let mut outcomes = echo(listener);

    let connector = client_tls(Some(("client.pem", "client.key")));
    let mut client = within("tls connect", tls_connect(addr, &connector))
        .await
        .unwrap();
    assert_echoes(&mut client, &PUBLISH).await;
    client.shutdown().await.unwrap();
    assert_eq!(within("outcome", outcomes.recv()).await, Some(Ok(())));
}

/// With a client CA configured, a client without a certificate, or with one the CA did not
/// sign, gets no byte through, and the server reports a failed handshake.
#[tokio::test]
async fn tls_with_client_ca_refuses_clients_without_a_valid_certificate() {
    let listener = bind(Kind::Tls, Some(server_tls_with_client_ca())).await;
    let addr = listener.local_addr();
    let mut outcomes = echo(listener);

    for (connector, expected) in [
        (client_tls(None), "no certificates"),
        (
            client_tls(Some(("other.pem", "other.key"))),
            "UnknownIssuer",
        ),
    ] {
        // In TLS 1.3 the client may finish its side of the handshake before the server has
        // checked its certificate, so the refusal can show up on connect or on the first read.
        if let Ok(mut client) = within("tls connect", tls_connect(addr, &connector)).await {
            let _ = client.write_all(&PUBLISH).await;
            let mut buf = [0u8; 16];
            let read = within("read", client.read(&mut buf)).await;
            assert!(!matches!(read, Ok(n) if n > 0), "{read:?}");
        }
        let outcome = within("outcome", outcomes.recv()).await.unwrap();
        let error = outcome.unwrap_err();
        assert!(error.starts_with("TLS handshake failed"), "{error}");
        assert!(error.contains(expected), "{error}");
    }
}

// ---------------------------------------------------------------------------------------------
// load_tls errors

/// A scratch file with `contents`, unique to the test.
fn scratch_file(name: &str, contents: &str) -> PathBuf {
    let path = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("transport-{name}"));
    std::fs::write(&path, contents).unwrap();
    path
}

fn tls_error(cert_file: &Path, key_file: &Path, ca: Option<&Path>) -> String {
    match load_tls(cert_file, key_file, ca) {
        Ok(_) => panic!("load_tls({cert_file:?}, {key_file:?}, {ca:?}) succeeded"),
        Err(error) => error.to_string(),
    }
}

#[test]
fn load_tls_names_a_missing_file() {
    let missing = cert("missing.pem");
    let message = tls_error(&missing, &cert("server.key"), None);
    assert!(
        message.starts_with(&missing.display().to_string()),
        "{message}"
    );
    assert!(message.contains("cannot read"), "{message}");

    let message = tls_error(&cert("server.pem"), &missing, None);
    assert!(
        message.starts_with(&missing.display().to_string()),
        "{message}"
    );

    let message = tls_error(&cert("server.pem"), &cert("server.key"), Some(&missing));
    assert!(
        message.starts_with(&missing.display().to_string()),
        "{message}"
    );
}

#[test]
fn load_tls_names_a_file_that_is_not_pem() {
    let garbage = scratch_file("garbage.pem", "this is not a certificate\n");
    let message = tls_error(&garbage, &cert("server.key"), None);
    assert!(
        message.starts_with(&garbage.display().to_string()),
        "{message}"
    );
    assert!(message.contains("no certificate found"), "{message}");

    let message = tls_error(&cert("server.pem"), &garbage, None);
    assert!(
        message.starts_with(&garbage.display().to_string()),
        "{message}"
    );
    assert!(message.contains("no private key found"), "{message}");

    let message = tls_error(&cert("server.pem"), &cert("server.key"), Some(&garbage));
    assert!(
        message.starts_with(&garbage.display().to_string()),
        "{message}"
    );
    assert!(message.contains("no certificate found"), "{message}");

    let broken = scratch_file(
        "broken.pem",
        "-----BEGIN CERTIFICATE-----\n!!!not base64!!!\n-----END CERTIFICATE-----\n",
    );
    let message = tls_error(&broken, &cert("server.key"), None);
    assert!(
        message.starts_with(&broken.display().to_string()),
        "{message}"
    );
    assert!(message.contains("not valid PEM"), "{message}");
}

#[test]
fn load_tls_names_swapped_certificate_and_key() {
    let key = cert("server.key");
    let message = tls_error(&key, &cert("server.pem"), None);
    assert!(message.starts_with(&key.display().to_string()), "{message}");
    assert!(message.contains("no certificate found"), "{message}");
}

#[test]
fn load_tls_names_a_key_that_does_not_match_the_certificate() {
    let key = cert("other.key");
    let message = tls_error(&cert("server.pem"), &key, None);
    assert!(message.starts_with(&key.display().to_string()), "{message}");
    assert!(message.contains("does not match"), "{message}");
    assert!(message.contains("server.pem"), "{message}");
}

// ---------------------------------------------------------------------------------------------
// WebSocket

#[tokio::test]
async fn ws_selects_the_mqtt_subprotocol() {
    let listener = bind(Kind::Ws, None).await;
    let addr = listener.local_addr();
    let mut outcomes = echo(listener);

    for (offer, expected) in [
        (Some("mqtt"), Some("mqtt")),
        (Some("mqttv3.1"), Some("mqttv3.1")),
        // `mqtt` wins whatever the order of the offer.
        (Some("mqttv3.1, mqtt"), Some("mqtt")),
        (Some("chat, mqtt"), Some("mqtt")),
        // Many clients offer nothing; they are accepted without a subprotocol.
        (None, None),
    ] {
        let tcp = TcpStream::connect(addr).await.unwrap();
        let (mut client, response) = within("ws handshake", ws_connect(tcp, addr, "/mqtt", offer))
            .await
            .unwrap();
        assert_eq!(chosen_subprotocol(&response), expected, "offer {offer:?}");
        client
            .send(Message::binary(PUBLISH.to_vec()))
            .await
            .unwrap();
        let (data, _) = read_binary(&mut client, PUBLISH.len()).await;
        assert_eq!(data, PUBLISH);
        client.close(None).await.unwrap();
        assert_eq!(within("outcome", outcomes.recv()).await, Some(Ok(())));
    }
}

/// A client offering only subprotocols we do not speak is still upgraded, with no
/// Sec-WebSocket-Protocol in the answer (tungstenite's client would refuse that answer, so the
/// request is written by hand).
#[tokio::test]
async fn ws_accepts_an_offer_without_mqtt_and_answers_no_subprotocol() {
    let listener = bind(Kind::Ws, None).await;
    let addr = listener.local_addr();
    let server = tokio::spawn(async move { accept_one(&listener).await.map(|_| ()) });

    let mut tcp = TcpStream::connect(addr).await.unwrap();
    let request = format!(
        "GET /mqtt HTTP/1.1\r\nHost: {addr}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
         Sec-WebSocket-Protocol: chat\r\n\r\n"
    );
    tcp.write_all(request.as_bytes()).await.unwrap();
    let response = read_http_head(&mut tcp).await;
    assert!(response.starts_with("HTTP/1.1 101"), "{response}");
    assert!(
        !response.to_lowercase().contains("sec-websocket-protocol"),
        "{response}"
    );
    within("server handshake", server).await.unwrap().unwrap();
}

async fn read_http_head(tcp: &mut TcpStream) -> String {
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8; 1];
        let n = within("http response", tcp.read(&mut byte)).await.unwrap();
        assert_eq!(
            n,
            1,
            "connection closed after {:?}",
            String::from_utf8_lossy(&head)
        );
        head.push(byte[0]);
    }
    String::from_utf8(head).unwrap()
}

#[tokio::test]
async fn ws_refuses_paths_other_than_mqtt_with_404() {
    let listener = bind(Kind::Ws, None).await;
    let addr = listener.local_addr();
    let mut outcomes = echo(listener);

    for path in ["/", "/other", "/mqtt/"] {
        let tcp = TcpStream::connect(addr).await.unwrap();
        let error = within("ws handshake", ws_connect(tcp, addr, path, Some("mqtt")))
            .await
            .unwrap_err();
        match error {
            WsError::Http(response) => assert_eq!(response.status(), 404, "{path}"),
            other => panic!("{path}: expected HTTP 404, got {other:?}"),
        }
        let outcome = within("outcome", outcomes.recv()).await.unwrap();
        assert!(
            outcome
                .unwrap_err()
                .starts_with("WebSocket handshake failed")
        );
    }

    // The query string is not part of the path.
    let tcp = TcpStream::connect(addr).await.unwrap();
    let (mut client, _) = within("ws handshake", ws_connect(tcp, addr, "/mqtt?x=1", None))
        .await
        .unwrap();
    client.close(None).await.unwrap();
    assert_eq!(within("outcome", outcomes.recv()).await, Some(Ok(())));
}

#[tokio::test]
async fn ws_reads_a_packet_split_over_two_frames_as_one_byte_stream() {
    let (mut client, mut server) = ws_pair().await;
    client
        .send(Message::binary(PUBLISH[..4].to_vec()))
        .await
        .unwrap();
    client
        .send(Message::binary(PUBLISH[4..].to_vec()))
        .await
        .unwrap();
    let mut packet = [0u8; PUBLISH.len()];
    within("read", server.read_exact(&mut packet))
        .await
        .unwrap();
    assert_eq!(packet, PUBLISH);
}

#[tokio::test]
async fn ws_reads_two_packets_in_one_frame() {
    let (mut client, mut server) = ws_pair().await;
    let frame = [PINGREQ, DISCONNECT].concat();
    client.send(Message::binary(frame)).await.unwrap();
    // Read the packets one at a time, as the codec does: each read takes from the same frame.
    let mut packet = [0u8; 2];
    within("read", server.read_exact(&mut packet))
        .await
        .unwrap();
    assert_eq!(packet, PINGREQ);
    within("read", server.read_exact(&mut packet))
        .await
        .unwrap();
    assert_eq!(packet, DISCONNECT);
}

#[tokio::test]
async fn ws_each_write_is_one_binary_frame_and_long_writes_are_split() {
    let (mut client, mut server) = ws_pair().await;
    server.write_all(&PUBLISH).await.unwrap();
    server.flush().await.unwrap();
    assert_eq!(
        next_message(&mut client).await,
        Some(Message::Binary(Bytes::from_static(&PUBLISH)))
    );

    // A write longer than one frame arrives whole, over several frames.
    let long: Vec<u8> = (0..100_000u32).map(|i| i as u8).collect();
    server.write_all(&long).await.unwrap();
    server.flush().await.unwrap();
    let (data, frames) = read_binary(&mut client, long.len()).await;
    assert_eq!(data, long);
    assert!(frames > 1, "{frames} frame(s)");

    // A vectored write (header and payload) makes one frame.
    let slices = [
        std::io::IoSlice::new(&PUBLISH[..4]),
        std::io::IoSlice::new(&PUBLISH[4..]),
    ];
    let written = server.write_vectored(&slices).await.unwrap();
    assert_eq!(written, PUBLISH.len());
    server.flush().await.unwrap();
    assert_eq!(
        next_message(&mut client).await,
        Some(Message::Binary(Bytes::from_static(&PUBLISH)))
    );
}

#[tokio::test]
async fn ws_text_frame_is_a_read_error_and_closes_with_1003() {
    let (mut client, mut server) = ws_pair().await;
    client.send(Message::text("hello")).await.unwrap();
    let mut buf = [0u8; 16];
    let error = within("read", server.read(&mut buf)).await.unwrap_err();
    assert_eq!(error.kind(), std::io::ErrorKind::InvalidData, "{error}");
    match next_message(&mut client).await {
        Some(Message::Close(Some(frame))) => assert_eq!(frame.code, CloseCode::Unsupported),
        other => panic!("expected a close frame with 1003, got {other:?}"),
    }
}

#[tokio::test]
async fn ws_close_frame_is_end_of_stream_and_is_answered() {
    let (mut client, mut server) = ws_pair().await;
    client
        .send(Message::binary(PINGREQ.to_vec()))
        .await
        .unwrap();
    client.send(Message::Close(None)).await.unwrap();
    let mut data = Vec::new();
    within("read to end", server.read_to_end(&mut data))
        .await
        .unwrap();
    assert_eq!(data, PINGREQ);
    // The server answered the close...
    assert!(matches!(
        next_message(&mut client).await,
        Some(Message::Close(_))
    ));
    // Writing after the close is a broken pipe, as on a closed socket.
    let error = server.write_all(&PINGREQ).await.unwrap_err();
    assert_eq!(error.kind(), std::io::ErrorKind::BrokenPipe, "{error}");
    // The broker, having read end of stream, drops the connection, which ends it.
    drop(server);
    assert!(within("client end", client.next()).await.is_none());
}

/// tungstenite answers pings itself; the answer must go out while the broker is just waiting
/// in a read, with nothing of its own to write.
#[tokio::test]
async fn ws_ping_is_answered_while_the_server_waits_in_read() {
    let (mut client, mut server) = ws_pair().await;
    let reader = tokio::spawn(async move {
        let mut packet = [0u8; 2];
        server.read_exact(&mut packet).await.map(|_| packet)
    });
    client
        .send(Message::Ping(Bytes::from_static(b"are you there")))
        .await
        .unwrap();
    match within("pong", client.next()).await {
        Some(Ok(Message::Pong(payload))) => assert_eq!(&payload[..], b"are you there"),
        other => panic!("expected a pong, got {other:?}"),
    }
    // The ping did not disturb the byte stream.
    client
        .send(Message::binary(PINGREQ.to_vec()))
        .await
        .unwrap();
    assert_eq!(within("read", reader).await.unwrap().unwrap(), PINGREQ);
}

#[tokio::test]
async fn ws_shutdown_sends_a_close_frame() {
    let (mut client, mut server) = ws_pair().await;
    server.write_all(&DISCONNECT).await.unwrap();
    within("shutdown", server.shutdown()).await.unwrap();
    assert_eq!(
        next_message(&mut client).await,
        Some(Message::Binary(Bytes::from_static(&DISCONNECT)))
    );
    assert!(matches!(
        next_message(&mut client).await,
        Some(Message::Close(_))
    ));
}

/// Reads from the server side of `ws_pair` and expects the read to fail with MessageTooLarge.
async fn assert_too_large(server: &mut BoxStream, size: usize) {
    let mut buf = [0u8; 16];
    let error = within("read", server.read(&mut buf)).await.unwrap_err();
    assert_eq!(error.kind(), std::io::ErrorKind::InvalidData, "{error}");
    let cause = error
        .get_ref()
        .and_then(|cause| cause.downcast_ref::<MessageTooLarge>())
        .unwrap_or_else(|| panic!("not a MessageTooLarge: {error}"));
    assert_eq!((cause.size, cause.max), (size, MAX_MESSAGE));
}

#[tokio::test]
async fn ws_message_of_exactly_the_maximum_is_read() {
    let (mut client, mut server) = ws_pair().await;
    client
        .send(Message::binary(vec![7u8; MAX_MESSAGE]))
        .await
        .unwrap();
    let mut data = vec![0u8; MAX_MESSAGE];
    within("read", server.read_exact(&mut data)).await.unwrap();
    assert!(data.iter().all(|&byte| byte == 7));
}

/// A frame over the maximum is refused from its header: the server reads no further, so the
/// client may never finish sending it.
#[tokio::test]
async fn ws_frame_larger_than_the_maximum_is_a_read_error_from_its_header() {
    let (mut client, mut server) = ws_pair().await;
    tokio::spawn(async move {
        let _ = client.send(Message::binary(vec![0u8; 16 << 20])).await;
    });
    assert_too_large(&mut server, 16 << 20).await;
    // After the error the stream reads as ended: nothing more of the frame is buffered.
    let mut buf = [0u8; 16];
    assert_eq!(within("read", server.read(&mut buf)).await.unwrap(), 0);
}

/// The bound is on messages, not just frames: one made of small frames is refused too.
#[tokio::test]
async fn ws_message_of_small_frames_over_the_maximum_is_a_read_error() {
    use tokio_tungstenite::tungstenite::protocol::frame::Frame;
    use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
    let (mut client, mut server) = ws_pair().await;
    let half = MAX_MESSAGE / 2;
    let first = Frame::message(vec![1u8; half], OpCode::Data(Data::Binary), false);
    client.send(Message::Frame(first)).await.unwrap();
    let rest = Frame::message(vec![2u8; half + 1], OpCode::Data(Data::Continue), true);
    client.send(Message::Frame(rest)).await.unwrap();
    assert_too_large(&mut server, MAX_MESSAGE + 1).await;
}

/// Until the broker lifts it, a read budget bounds what the WebSocket layer may read from the
/// socket, handshake included: a message that would take more fails the read, before it is
/// buffered whole. Once lifted, the same message goes through.
#[tokio::test]
async fn ws_reads_stop_at_the_read_budget_until_it_is_lifted() {
    const BUDGET: usize = 2048;
    for lifted in [false, true] {
        let listener = bind(Kind::Ws, None).await;
        let addr = listener.local_addr();
        let budget = ReadBudget::new(BUDGET);
        let given = budget.clone();
        let server = tokio::spawn(async move { accept_one_within(&listener, given).await });
        let tcp = TcpStream::connect(addr).await.unwrap();
        let (mut client, _) = within("ws handshake", ws_connect(tcp, addr, "/mqtt", Some("mqtt")))
            .await
            .unwrap();
        let mut server = server.await.unwrap().unwrap();
        if lifted {
            budget.lift();
        }
        // Within the message bound, beyond the budget.
        client
            .send(Message::binary(vec![7u8; MAX_MESSAGE]))
            .await
            .unwrap();
        let mut data = vec![0u8; MAX_MESSAGE];
        let read = within("read", server.read_exact(&mut data)).await;
        if lifted {
            read.unwrap();
            assert!(data.iter().all(|&byte| byte == 7));
            continue;
        }
        let error = read.unwrap_err();
        let cause = error
            .get_ref()
            .and_then(|cause| cause.downcast_ref::<BudgetSpent>())
            .unwrap_or_else(|| panic!("not a BudgetSpent: {error}"));
        assert_eq!(cause.budget, BUDGET);
    }
}

// ---------------------------------------------------------------------------------------------
// Secure WebSocket

#[tokio::test]
async fn wss_end_to_end() {
    let listener = bind(Kind::Wss, Some(server_tls())).await;
    let addr = listener.local_addr();
    let mut outcomes = echo(listener);

    let tls = within("tls connect", tls_connect(addr, &client_tls(None)))
        .await
        .unwrap();
    let (mut client, response) = within(
        "wss handshake",
        ws_connect(tls, addr, "/mqtt", Some("mqtt")),
    )
    .await
    .unwrap();
    assert_eq!(chosen_subprotocol(&response), Some("mqtt"));

    client
        .send(Message::binary(PUBLISH[..3].to_vec()))
        .await
        .unwrap();
    client
        .send(Message::binary(PUBLISH[3..].to_vec()))
        .await
        .unwrap();
    let (data, _) = read_binary(&mut client, PUBLISH.len()).await;
    assert_eq!(data, PUBLISH);

    client.close(None).await.unwrap();
    assert_eq!(within("outcome", outcomes.recv()).await, Some(Ok(())));
}

#[tokio::test]
async fn wss_refuses_a_plain_websocket_client() {
    let listener = bind(Kind::Wss, Some(server_tls())).await;
    let addr = listener.local_addr();
    let mut outcomes = echo(listener);

    let tcp = TcpStream::connect(addr).await.unwrap();
    assert!(
        within("ws handshake", ws_connect(tcp, addr, "/mqtt", Some("mqtt")))
            .await
            .is_err()
    );
    let outcome = within("outcome", outcomes.recv()).await.unwrap();
    assert!(outcome.unwrap_err().starts_with("TLS handshake failed"));
}
