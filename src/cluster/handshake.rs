//! The route handshake: magic bytes, INFO both ways, proof of the shared secret, and the
//! checks that decide whether a peer may join.
//!
//! The secret never crosses the wire. Each side sends a fresh random nonce and proves that it
//! knows the secret with an HMAC-SHA256, keyed with the secret, over the other side's nonce,
//! its own nonce, its role, the node names known at that point and the cluster name:
//!
//! ```text
//! dialler                                        acceptor
//! SMQR INFO (nonce_d)                    ─────▶  checks protocol version and cluster name
//!                                        ◀─────  SMQR CHALLENGE (nonce_a)
//! PROOF dial(nonce_a, nonce_d, dialler)  ─────▶  verifies; refuses a route to itself
//!                                        ◀─────  INFO, PROOF accept(nonce_d, nonce_a, acceptor, dialler)
//! verifies, checks
//! ```
//!
//! A proof answers one challenge only (the verifier's fresh nonce is part of it), so a proof
//! seen on one connection is worthless on another; the role is part of it too, so a dialler's
//! proof cannot be reflected back as an acceptor's. Proofs are verified in constant time.
//! The dialler proves first: the accepting side answers with its INFO (and its peer list) and
//! its own proof only after the dialler's proof and INFO passed its checks, so a stranger on
//! the route port learns neither the cluster's peers nor a proof it could use to guess a weak
//! secret offline; the dialler only proves itself to addresses it was configured with or
//! learned from authenticated peers. The dialler's own INFO goes first, to a peer that has
//! proved nothing yet, so it holds only the dialler's node name, the cluster's name and the
//! dialler's route address, no peer list: each side sends its peers in PEERS frames once the
//! route is registered ([`super::mesh`]), as it does interest and retained messages. With
//! route TLS ([`super::tls`]) the whole exchange runs inside TLS, after both certificates
//! were verified, so not even that is shown to a node outside the cluster.
//!
//! Until the peer has proved the secret, the node holds only a small fixed amount for it: a
//! handshake frame longer than [`frame::MAX_HANDSHAKE_FRAME`] is refused before anything is
//! allocated for it, the whole exchange must finish within `cluster.heartbeat_timeout_ms`, and
//! the mesh runs at most `cluster.max_pending_routes` handshakes at once. A peer's INFO must
//! name its node and cluster and give a `HOST:PORT` address ([`validate::info`]) before any
//! of it is compared or logged.
//!
//! Refusals (malformed INFO, wrong secret, cluster name or protocol version, a route to
//! oneself, another node with this node's name) are sent to the peer as a REFUSED frame when
//! it is a route at all, so both sides log the same reason; a peer's own refusal text is cut
//! to a log line's worth ([`validate::loggable`]). A plain MQTT client on the route port gets a CONNACK
//! "Server unavailable" instead.

use std::time::Duration;

use ring::hmac;
use ring::rand::{SecureRandom, SystemRandom};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::frame::{self, Frame, FrameError, Info, MAGIC, PROTOCOL_VERSION};
use super::validate;

/// The refusal text for a route to oneself: the dialler recognises it and stops dialling
/// that address, as the acceptor is the node itself.
const MYSELF: &str = "route to the node itself";

/// Random bytes in a nonce.
const NONCE_BYTES: usize = 32;

/// Why a route could not be established.
#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    #[error("{0}")]
    Frame(#[from] FrameError),
    #[error("timed out")]
    Timeout,
    #[error(
        "the peer does not speak the route protocol (is it an MQTT port, or one that requires route TLS?)"
    )]
    NotARoute,
    #[error("an MQTT client connected to the route port; refused with CONNACK")]
    MqttClient,
    #[error("refused by the peer: {0}")]
    RefusedByPeer(String),
    #[error("refused: {0}")]
    Refused(String),
    #[error("route to this node itself")]
    Myself,
    #[error("the system has no random numbers for a handshake nonce")]
    NoRandom,
    /// Route TLS failed: no certificate, one from another CA, or a peer without route TLS
    /// (`cluster.tls_*` must be set alike on every node).
    #[error("route TLS: {0}")]
    Tls(std::io::Error),
    /// One side uses route TLS and the other does not.
    #[error(
        "the peer {0}: cluster.tls_cert, tls_key and tls_ca must be set on every node or on none"
    )]
    TlsMismatch(&'static str),
}

/// True if `start` opens a TLS record (handshake or alert, TLS 1.0 to 1.3), as a peer with
/// route TLS sends where one without expects the magic.
fn is_tls(start: &[u8; 4]) -> bool {
    matches!(start, [0x15 | 0x16, 0x03, 0x00..=0x04, _])
}

/// The cluster secret (`cluster.secret`) as an HMAC-SHA256 key: all a node keeps of it.
pub struct Secret(hmac::Key);

impl Secret {
    pub fn new(secret: &str) -> Secret {
        Secret(hmac::Key::new(hmac::HMAC_SHA256, secret.as_bytes()))
    }

    /// The proof, by the side in `role`, that it knows the secret.
    fn prove(
        &self,
        role: Role,
        verifier_nonce: &str,
        prover_nonce: &str,
        names: &[&str],
    ) -> Vec<u8> {
        let signed = transcript(role, verifier_nonce, prover_nonce, names);
        hmac::sign(&self.0, &signed).as_ref().to_vec()
    }

    /// True if `proof` is what [`Secret::prove`] gives with this secret; constant time.
    fn verify(
        &self,
        proof: &[u8],
        role: Role,
        verifier_nonce: &str,
        prover_nonce: &str,
        names: &[&str],
    ) -> bool {
        let signed = transcript(role, verifier_nonce, prover_nonce, names);
        hmac::verify(&self.0, &signed, proof).is_ok()
    }
}

/// Which side of the handshake a proof comes from.
#[derive(Debug, Clone, Copy)]
enum Role {
    Dialler,
    Acceptor,
}

/// What a proof covers, each part length-prefixed so that no two transcripts read alike:
/// the protocol version, the prover's role, the verifier's nonce (so the proof answers this
/// connection's challenge only), the prover's nonce, node and cluster names, and the
/// prover's epoch.
fn transcript(role: Role, verifier_nonce: &str, prover_nonce: &str, names: &[&str]) -> Vec<u8> {
    let role = match role {
        Role::Dialler => "dialler",
        Role::Acceptor => "acceptor",
    };
    let mut out = Vec::with_capacity(256);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&PROTOCOL_VERSION.to_be_bytes());
    for part in [role, verifier_nonce, prover_nonce].iter().chain(names) {
        out.extend_from_slice(&(part.len() as u64).to_be_bytes());
        out.extend_from_slice(part.as_bytes());
    }
    out
}

/// A node's epoch as the proofs cover it, so nobody between two nodes can make one look
/// restarted (or not) to the other.
fn epoch(info: &Info) -> String {
    format!("{:016x}", info.epoch)
}

/// A fresh nonce, as hex digits.
fn nonce() -> Result<String, HandshakeError> {
    let mut bytes = [0u8; NONCE_BYTES];
    SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| HandshakeError::NoRandom)?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// Checks the names and address in a peer's INFO (see [`validate::info`]) before anything
/// else looks at them or logs them.
fn well_formed(theirs: &Info) -> Result<(), HandshakeError> {
    validate::info(theirs)
        .map_err(|invalid| HandshakeError::Refused(format!("malformed INFO: {invalid}")))
}

/// Checks that a peer's INFO is from a node of our cluster and protocol version; `Err` holds
/// the reason, for the log and the peer.
fn compatible(mine: &Info, theirs: &Info) -> Result<(), HandshakeError> {
    if theirs.version != PROTOCOL_VERSION {
        return Err(HandshakeError::Refused(format!(
            "node {} speaks route protocol version {}, this node {}",
            theirs.node, theirs.version, PROTOCOL_VERSION
        )));
    }
    if theirs.cluster != mine.cluster {
        return Err(HandshakeError::Refused(format!(
            "node {} belongs to cluster {:?}, this node to {:?} (cluster.name)",
            theirs.node, theirs.cluster, mine.cluster
        )));
    }
    Ok(())
}

/// The peer refused us and said why: its text, made fit for our log.
fn refused_by_peer(why: &str) -> HandshakeError {
    HandshakeError::RefusedByPeer(validate::loggable(why))
}

/// The refusal of a peer whose proof does not match our secret.
fn wrong_secret(theirs: &Info) -> HandshakeError {
    HandshakeError::Refused(format!(
        "node {} presented a wrong secret (cluster.secret)",
        theirs.node
    ))
}

/// The dialling side: sends our INFO, answers the peer's challenge, then reads and checks the
/// peer's INFO and proof.
pub async fn dial<R, W>(
    reader: &mut R,
    writer: &mut W,
    mine: &Info,
    secret: &Secret,
    timeout: Duration,
) -> Result<Info, HandshakeError>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let exchange = async {
        let mine = Info {
            nonce: nonce()?,
            ..mine.clone()
        };
        send(writer, true, &[Frame::Info(mine.clone())]).await?;
        let mut magic = [0u8; 4];
        reader.read_exact(&mut magic).await.map_err(|error| {
            // Over route TLS, an acceptor that refuses our certificate says so with an alert
            // that arrives here, as TLS 1.3 lets the dialler finish its handshake first.
            if error.kind() == std::io::ErrorKind::InvalidData {
                HandshakeError::Tls(error)
            } else {
                HandshakeError::NotARoute
            }
        })?;
        if &magic != MAGIC {
            if is_tls(&magic) {
                return Err(HandshakeError::TlsMismatch(
                    "answers in TLS and this node has no route TLS",
                ));
            }
            return Err(HandshakeError::NotARoute);
        }
        let challenge = match frame::read_handshake_frame(reader).await? {
            Frame::Challenge(challenge) => challenge,
            Frame::Refused(why) if why == MYSELF => return Err(HandshakeError::Myself),
            Frame::Refused(why) => return Err(refused_by_peer(&why)),
            _ => return Err(HandshakeError::NotARoute),
        };
        let proof = secret.prove(
            Role::Dialler,
            &challenge,
            &mine.nonce,
            &[&mine.node, &mine.cluster, &epoch(&mine)],
        );
        send(writer, false, &[Frame::Proof(proof)]).await?;
        let theirs = match frame::read_handshake_frame(reader).await? {
            Frame::Info(theirs) => theirs,
            Frame::Refused(why) if why == MYSELF => return Err(HandshakeError::Myself),
            Frame::Refused(why) => return Err(refused_by_peer(&why)),
            _ => return Err(HandshakeError::NotARoute),
        };
        let Frame::Proof(proof) = frame::read_handshake_frame(reader).await? else {
            return Err(HandshakeError::NotARoute);
        };
        let names = [
            theirs.node.as_str(),
            &mine.node,
            &mine.cluster,
            &epoch(&theirs),
        ];
        let checked = well_formed(&theirs).and_then(|()| {
            if secret.verify(&proof, Role::Acceptor, &mine.nonce, &challenge, &names) {
                compatible(&mine, &theirs).and_then(|()| not_myself(&mine, &theirs))
            } else {
                Err(wrong_secret(&theirs))
            }
        });
        if let Err(error) = checked {
            refuse(writer, false, &error).await;
            return Err(error);
        }
        Ok(theirs)
    };
    tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| HandshakeError::Timeout)?
}

/// The accepting side: reads and checks the dialler's INFO, challenges it, and answers with
/// our INFO and proof once its proof is right.
pub async fn accept<R, W>(
    reader: &mut R,
    writer: &mut W,
    mine: &Info,
    secret: &Secret,
    timeout: Duration,
) -> Result<Info, HandshakeError>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let exchange = async {
        let mut magic = [0u8; 4];
        reader
            .read_exact(&mut magic)
            .await
            .map_err(FrameError::from)?;
        if &magic != MAGIC {
            if magic[0] == 0x10 {
                refuse_mqtt(reader, writer, &magic).await;
                return Err(HandshakeError::MqttClient);
            }
            if is_tls(&magic) {
                return Err(HandshakeError::TlsMismatch(
                    "dialled in TLS and this node has no route TLS",
                ));
            }
            return Err(HandshakeError::NotARoute);
        }
        let theirs = match frame::read_handshake_frame(reader).await? {
            Frame::Info(theirs) => theirs,
            _ => return Err(HandshakeError::NotARoute),
        };
        if let Err(error) = well_formed(&theirs).and_then(|()| compatible(mine, &theirs)) {
            refuse(writer, true, &error).await;
            return Err(error);
        }
        let mine = Info {
            nonce: nonce()?,
            ..mine.clone()
        };
        send(writer, true, &[Frame::Challenge(mine.nonce.clone())]).await?;
        let proof = match frame::read_handshake_frame(reader).await? {
            Frame::Proof(proof) => proof,
            Frame::Refused(why) => return Err(refused_by_peer(&why)),
            _ => return Err(HandshakeError::NotARoute),
        };
        let names = [theirs.node.as_str(), &theirs.cluster, &epoch(&theirs)];
        let checked = if secret.verify(&proof, Role::Dialler, &mine.nonce, &theirs.nonce, &names) {
            not_myself(&mine, &theirs)
        } else {
            Err(wrong_secret(&theirs))
        };
        if let Err(error) = checked {
            refuse(writer, false, &error).await;
            return Err(error);
        }
        let names = [
            mine.node.as_str(),
            &theirs.node,
            &mine.cluster,
            &epoch(&mine),
        ];
        let proof = secret.prove(Role::Acceptor, &theirs.nonce, &mine.nonce, &names);
        send(writer, false, &[Frame::Info(mine), Frame::Proof(proof)]).await?;
        Ok(theirs)
    };
    tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| HandshakeError::Timeout)?
}

/// A peer with our own node name is this node, dialled through another address, when it
/// advertises our address too; otherwise it is another node with the same name, which both
/// sides refuse and keep saying so, instead of taking the other for themselves and going
/// quiet.
fn not_myself(mine: &Info, theirs: &Info) -> Result<(), HandshakeError> {
    if theirs.node != mine.node {
        return Ok(());
    }
    if theirs.advertise == mine.advertise {
        return Err(HandshakeError::Myself);
    }
    Err(HandshakeError::Refused(format!(
        "node {} at {} has the same name as this node ([node] name must be unique)",
        theirs.node, theirs.advertise
    )))
}

/// Writes `frames`, after the magic if this is the first thing this side sends.
async fn send<W: AsyncWrite + Unpin>(
    writer: &mut W,
    magic: bool,
    frames: &[Frame],
) -> Result<(), FrameError> {
    if magic {
        writer.write_all(MAGIC).await?;
    }
    for frame in frames {
        let bytes = frame
            .encode()
            .map_err(|_| FrameError::Malformed("outgoing"))?;
        writer.write_all(&bytes).await?;
    }
    writer.flush().await?;
    Ok(())
}

/// Tells a refused peer why, best effort (it may not be listening any more).
async fn refuse<W: AsyncWrite + Unpin>(writer: &mut W, magic: bool, error: &HandshakeError) {
    let why = match error {
        HandshakeError::Myself => MYSELF.to_string(),
        other => other.to_string(),
    };
    let _ = send(writer, magic, &[Frame::Refused(why)]).await;
}

/// An MQTT CONNECT arrived on the route port: answer with a CONNACK "Server unavailable" in
/// the client's protocol version, so its user sees a clear refusal instead of a reset.
async fn refuse_mqtt<R, W>(reader: &mut R, writer: &mut W, start: &[u8; 4])
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    // start = 0x10, remaining length (one byte for any real CONNECT's first bytes), then the
    // protocol name's length; the protocol level follows the name.
    let name_len = usize::from(u16::from_be_bytes([start[2], start[3]]));
    let mut rest = vec![0u8; name_len.min(6) + 1];
    let level =
        match tokio::time::timeout(Duration::from_secs(1), reader.read_exact(&mut rest)).await {
            Ok(Ok(_)) => rest.last().copied().unwrap_or(4),
            _ => 4,
        };
    let connack: &[u8] = if level == 5 {
        // CONNACK, no session present, 0x88 Server unavailable, no properties.
        &[0x20, 0x03, 0x00, 0x88, 0x00]
    } else {
        // CONNACK, return code 3: Server unavailable.
        &[0x20, 0x02, 0x00, 0x03]
    };
    let _ = writer.write_all(connack).await;
    let _ = writer.flush().await;
}

#[cfg(test)]
mod tests {
    use std::pin::Pin;
    use std::sync::{Arc, Mutex};
    use std::task::{Context, Poll};

    use tokio::io::DuplexStream;

    use super::*;

    fn info(node: &str) -> Info {
        Info {
            version: PROTOCOL_VERSION,
            node: node.into(),
            cluster: "c".into(),
            advertise: "127.0.0.1:1".into(),
            nonce: String::new(),
            peers: Vec::new(),
            epoch: 1,
        }
    }

    #[test]
    fn only_a_peer_of_the_same_cluster_and_version_is_compatible() {
        let mine = info("a");
        assert!(compatible(&mine, &info("b")).is_ok());
        let refused = |theirs: Info| match compatible(&mine, &theirs) {
            Err(HandshakeError::Refused(why)) => why,
            other => panic!("expected a refusal, got {other:?}"),
        };
        assert!(
            refused(Info {
                version: 9,
                ..info("b")
            })
            .contains("version 9")
        );
        assert!(
            refused(Info {
                cluster: "x".into(),
                ..info("b")
            })
            .contains("cluster \"x\"")
        );
        assert!(matches!(
            not_myself(&mine, &info("a")),
            Err(HandshakeError::Myself)
        ));
        let twin = Info {
            advertise: "127.0.0.1:2".into(),
            ..info("a")
        };
        match not_myself(&mine, &twin) {
            Err(HandshakeError::Refused(why)) => assert!(why.contains("same name"), "{why}"),
            other => panic!("a twin is refused, got {other:?}"),
        }
    }

    /// The test vector of docs/ARCHITECTURE.md, "The HMAC transcript".
    #[test]
    fn the_documented_proofs_are_what_a_node_computes() {
        let secret = Secret::new("0123456789abcdef");
        let hex = |tag: Vec<u8>| tag.iter().map(|b| format!("{b:02x}")).collect::<String>();
        let dialler = secret.prove(Role::Dialler, "aa", "bb", &["n1", "c", "0000000000000001"]);
        let acceptor = secret.prove(
            Role::Acceptor,
            "bb",
            "aa",
            &["n2", "n1", "c", "0000000000000002"],
        );
        assert_eq!(
            hex(dialler),
            "8281c963d937b83580e6f3305ec12f7b28be394b28adfad8920c9656c4d1cda9"
        );
        assert_eq!(
            hex(acceptor),
            "705caf961e2b69c60f5344f476bd4ccf09eedf95c45f2c129828a3d0dc32dfb3"
        );
    }

    #[test]
    fn a_proof_answers_one_challenge_from_one_role() {
        let secret = Secret::new("s");
        let names = ["a", "c"];
        let proof = secret.prove(Role::Dialler, "n1", "n2", &names);
        assert!(secret.verify(&proof, Role::Dialler, "n1", "n2", &names));
        // Replayed against another challenge, reflected as the other role, other names, or
        // checked with another secret: refused.
        assert!(!secret.verify(&proof, Role::Dialler, "n3", "n2", &names));
        assert!(!secret.verify(&proof, Role::Acceptor, "n1", "n2", &names));
        assert!(!secret.verify(&proof, Role::Dialler, "n1", "n2", &["b", "c"]));
        assert!(!Secret::new("t").verify(&proof, Role::Dialler, "n1", "n2", &names));
        // The parts cannot slide into each other.
        assert!(!secret.verify(&proof, Role::Dialler, "n1n", "2", &names));
        assert_ne!(nonce().expect("nonce"), nonce().expect("nonce"));
    }

    /// One direction of an in-memory connection that records every byte written to it.
    struct Tap {
        inner: DuplexStream,
        seen: Arc<Mutex<Vec<u8>>>,
    }

    impl AsyncWrite for Tap {
        fn poll_write(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<std::io::Result<usize>> {
            let written = Pin::new(&mut self.inner).poll_write(cx, buf);
            if let Poll::Ready(Ok(n)) = written {
                self.seen
                    .lock()
                    .expect("not poisoned")
                    .extend_from_slice(&buf[..n]);
            }
            written
        }

        fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            Pin::new(&mut self.inner).poll_flush(cx)
        }

        fn poll_shutdown(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
        ) -> Poll<std::io::Result<()>> {
            Pin::new(&mut self.inner).poll_shutdown(cx)
        }
    }

    /// Runs a handshake between a dialler with `dialler_secret` and an acceptor with
    /// `acceptor_secret`; returns both results and every byte either side wrote.
    async fn handshake(
        dialler_secret: &str,
        acceptor_secret: &str,
    ) -> (
        Result<Info, HandshakeError>,
        Result<Info, HandshakeError>,
        Vec<u8>,
    ) {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (to_acceptor, mut acceptor_reads) = tokio::io::duplex(64 * 1024);
        let (to_dialler, mut dialler_reads) = tokio::io::duplex(64 * 1024);
        let mut dialler_writes = Tap {
            inner: to_acceptor,
            seen: Arc::clone(&seen),
        };
        let mut acceptor_writes = Tap {
            inner: to_dialler,
            seen: Arc::clone(&seen),
        };
        let (dialler_secret, acceptor_secret) =
            (Secret::new(dialler_secret), Secret::new(acceptor_secret));
        let timeout = Duration::from_secs(5);
        let (dialled, accepted) = tokio::join!(
            async {
                let result = dial(
                    &mut dialler_reads,
                    &mut dialler_writes,
                    &info("d"),
                    &dialler_secret,
                    timeout,
                )
                .await;
                // The dialler is done with the connection either way: close it, as the
                // route would, so the acceptor is not left waiting for a proof.
                drop(dialler_writes);
                result
            },
            async {
                let result = accept(
                    &mut acceptor_reads,
                    &mut acceptor_writes,
                    &info("a"),
                    &acceptor_secret,
                    timeout,
                )
                .await;
                drop(acceptor_writes);
                result
            },
        );
        let seen = seen.lock().expect("not poisoned").clone();
        (dialled, accepted, seen)
    }

    #[tokio::test]
    async fn the_secret_is_proven_without_ever_being_written() {
        let secret = "correct horse battery staple";
        let (dialled, accepted, wire) = handshake(secret, secret).await;
        assert_eq!(dialled.expect("dialler accepts").node, "a");
        assert_eq!(accepted.expect("acceptor accepts").node, "d");
        assert!(wire.starts_with(MAGIC));
        assert!(
            !wire.windows(secret.len()).any(|w| w == secret.as_bytes()),
            "the secret went over the wire"
        );
    }

    #[tokio::test]
    async fn a_wrong_secret_is_refused_and_both_sides_say_why() {
        let (dialled, accepted, wire) = handshake("right", "wrong").await;
        match accepted {
            Err(HandshakeError::Refused(why)) => {
                assert_eq!(why, "node d presented a wrong secret (cluster.secret)");
            }
            other => panic!("the acceptor refuses, got {other:?}"),
        }
        match dialled {
            Err(HandshakeError::RefusedByPeer(why)) => {
                assert!(why.contains("wrong secret"), "{why}")
            }
            other => panic!("the dialler is told, got {other:?}"),
        }
        // The acceptor never sent its INFO (nor its peer list) to a peer that failed: no
        // INFO kind, protocol version and node name "a" anywhere.
        let acceptor_info = [1, 0, PROTOCOL_VERSION as u8, 0, 1, b'a'];
        assert!(!wire.windows(6).any(|w| w == acceptor_info));
    }

    #[test]
    fn tls_records_are_told_from_the_magic_and_from_mqtt() {
        // A ClientHello (TLS 1.0 record version, as TLS 1.3 sends it) and an alert.
        assert!(is_tls(&[0x16, 0x03, 0x01, 0x00]));
        assert!(is_tls(&[0x15, 0x03, 0x03, 0x00]));
        assert!(!is_tls(MAGIC));
        assert!(!is_tls(&[0x10, 0x10, 0x00, 0x04]));
    }

    #[tokio::test]
    async fn an_mqtt_client_on_the_route_port_gets_a_connack_in_its_version() {
        // CONNECT, remaining length, "MQTT", level 5.
        let connect = [0x10u8, 0x10, 0x00, 0x04, b'M', b'Q', b'T', b'T', 0x05];
        let mut reader = &connect[..];
        let mut written = Vec::new();
        let result = accept(
            &mut reader,
            &mut written,
            &info("a"),
            &Secret::new("s"),
            Duration::from_secs(1),
        )
        .await;
        assert!(matches!(result, Err(HandshakeError::MqttClient)));
        assert_eq!(written, [0x20, 0x03, 0x00, 0x88, 0x00]);
    }
}
