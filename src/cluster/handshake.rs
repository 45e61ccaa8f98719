//! The route handshake: magic bytes and INFO both ways, and the checks that decide whether a
//! peer may join.
//!
//! The dialling side speaks first; the accepting side answers only after the dialler's INFO
//! passed its checks, so a stranger never learns the secret from the listener. Refusals (wrong
//! secret, cluster name or protocol version, a route to oneself) are sent to the peer as a
//! REFUSED frame when it is a route at all, so both sides log the same reason. A plain MQTT
//! client on the route port gets a CONNACK "Server unavailable" instead.

use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::frame::{self, Frame, FrameError, Info, MAGIC, PROTOCOL_VERSION};

/// The refusal text for a route to oneself: the dialler recognises it and stops dialling
/// that address, as the acceptor is the node itself.
const MYSELF: &str = "route to the node itself";

/// Why a route could not be established.
#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    #[error("{0}")]
    Frame(#[from] FrameError),
    #[error("timed out")]
    Timeout,
    #[error("the peer does not speak the route protocol (is it an MQTT port?)")]
    NotARoute,
    #[error("an MQTT client connected to the route port; refused with CONNACK")]
    MqttClient,
    #[error("refused by the peer: {0}")]
    RefusedByPeer(String),
    #[error("refused: {0}")]
    Refused(String),
    #[error("route to this node itself")]
    Myself,
}

/// Checks a peer's INFO against ours; `Err` holds the reason, for the log and the peer.
pub fn check(mine: &Info, theirs: &Info) -> Result<(), HandshakeError> {
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
    if theirs.secret != mine.secret {
        return Err(HandshakeError::Refused(format!(
            "node {} presented a wrong secret (cluster.secret)",
            theirs.node
        )));
    }
    if theirs.node == mine.node {
        return Err(HandshakeError::Myself);
    }
    Ok(())
}

/// The dialling side: sends our INFO, reads and checks the peer's.
pub async fn dial<R, W>(
    reader: &mut R,
    writer: &mut W,
    mine: &Info,
    timeout: Duration,
) -> Result<Info, HandshakeError>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let exchange = async {
        send(writer, &Frame::Info(mine.clone())).await?;
        let mut magic = [0u8; 4];
        reader
            .read_exact(&mut magic)
            .await
            .map_err(|_| HandshakeError::NotARoute)?;
        if &magic != MAGIC {
            return Err(HandshakeError::NotARoute);
        }
        match frame::read_frame(reader, 0).await? {
            Frame::Info(theirs) => {
                if let Err(error) = check(mine, &theirs) {
                    refuse(writer, &error).await;
                    return Err(error);
                }
                Ok(theirs)
            }
            Frame::Refused(why) if why == MYSELF => Err(HandshakeError::Myself),
            Frame::Refused(why) => Err(HandshakeError::RefusedByPeer(why)),
            _ => Err(HandshakeError::NotARoute),
        }
    };
    tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| HandshakeError::Timeout)?
}

/// The accepting side: reads and checks the dialler's INFO, then answers with ours.
pub async fn accept<R, W>(
    reader: &mut R,
    writer: &mut W,
    mine: &Info,
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
            return Err(HandshakeError::NotARoute);
        }
        let theirs = match frame::read_frame(reader, 0).await? {
            Frame::Info(theirs) => theirs,
            _ => return Err(HandshakeError::NotARoute),
        };
        if let Err(error) = check(mine, &theirs) {
            refuse(writer, &error).await;
            return Err(error);
        }
        send(writer, &Frame::Info(mine.clone())).await?;
        Ok(theirs)
    };
    tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| HandshakeError::Timeout)?
}

async fn send<W: AsyncWrite + Unpin>(writer: &mut W, frame: &Frame) -> Result<(), FrameError> {
    let bytes = frame
        .encode()
        .map_err(|_| FrameError::Malformed("outgoing"))?;
    writer.write_all(MAGIC).await?;
    writer.write_all(&bytes).await?;
    writer.flush().await?;
    Ok(())
}

/// Tells a refused peer why, best effort (it may not be listening any more).
async fn refuse<W: AsyncWrite + Unpin>(writer: &mut W, error: &HandshakeError) {
    let why = match error {
        HandshakeError::Myself => MYSELF.to_string(),
        other => other.to_string(),
    };
    if let Ok(bytes) = Frame::Refused(why).encode() {
        let _ = writer.write_all(MAGIC).await;
        let _ = writer.write_all(&bytes).await;
        let _ = writer.flush().await;
    }
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
    use super::*;

    fn info(node: &str) -> Info {
        Info {
            version: PROTOCOL_VERSION,
            node: node.into(),
            cluster: "c".into(),
            advertise: "127.0.0.1:1".into(),
            secret: "s".into(),
            peers: Vec::new(),
        }
    }

    #[test]
    fn only_a_peer_of_the_same_cluster_version_and_secret_is_accepted() {
        let mine = info("a");
        assert!(check(&mine, &info("b")).is_ok());
        let refused = |theirs: Info| match check(&mine, &theirs) {
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
        assert!(
            refused(Info {
                secret: "x".into(),
                ..info("b")
            })
            .contains("wrong secret")
        );
        assert!(matches!(
            check(&mine, &info("a")),
            Err(HandshakeError::Myself)
        ));
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
            Duration::from_secs(1),
        )
        .await;
        assert!(matches!(result, Err(HandshakeError::MqttClient)));
        assert_eq!(written, [0x20, 0x03, 0x00, 0x88, 0x00]);
    }
}
