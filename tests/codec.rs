//! Tests of the MQTT codec through its public API only (`supermq::protocol`).
//!
//! - round trips: every packet type in every version that has it, encoded then decoded, whole
//!   and one byte at a time;
//! - exact bytes: the short forms of 5.0, the fields left out before 5.0, and packets as real
//!   clients send them;
//! - a table of malformed packets, each with the exact error it must raise;
//! - the maximum packet size, enforced before the body arrives;
//! - a seeded property test: random and mutated bytes never panic the decoder, and whatever
//!   it accepts encodes back to the same packet.

use bytes::{Bytes, BytesMut};
use rand::rngs::SmallRng;
use rand::{Rng, RngExt, SeedableRng};
use supermq::protocol::properties::{Properties, PropertyValues};
use supermq::protocol::*;

use ProtocolVersion::{V5, V31, V311};

const VERSIONS: [ProtocolVersion; 3] = [V31, V311, V5];
const NO_LIMIT: usize = usize::MAX;

// ---------------------------------------------------------------------------------------------
// Helpers

/// Bytes from a compact spec: hex bytes, and `'word` for an MQTT string (length-prefixed).
fn raw(spec: &str) -> Vec<u8> {
    let mut out = Vec::new();
    for token in spec.split_whitespace() {
        if let Some(text) = token.strip_prefix('\'') {
            out.extend_from_slice(&(text.len() as u16).to_be_bytes());
            out.extend_from_slice(text.as_bytes());
        } else {
            out.push(u8::from_str_radix(token, 16).unwrap());
        }
    }
    out
}

/// A packet with first byte `first` and the body given by `spec` (see [`raw`]).
fn pkt(first: u8, spec: &str) -> Vec<u8> {
    with_length(first, &raw(spec))
}

/// A packet with first byte `first`, the remaining length of `body`, and `body`.
fn with_length(first: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![first];
    let mut len = body.len();
    loop {
        let byte = (len % 128) as u8;
        len /= 128;
        if len == 0 {
            out.push(byte);
            break;
        }
        out.push(byte | 0x80);
    }
    out.extend_from_slice(body);
    out
}

fn encoded(packet: &Packet, version: ProtocolVersion) -> Vec<u8> {
    let mut out = BytesMut::new();
    let n = encode(packet, version, &mut out).unwrap();
    assert_eq!(n, out.len(), "encode must report the bytes it wrote");
    out.to_vec()
}

/// Decodes `bytes`, which must hold exactly one packet (or an error).
fn decode_one(bytes: &[u8], version: ProtocolVersion) -> Result<Packet, DecodeError> {
    let mut buf = BytesMut::from(bytes);
    let packet = decode(&mut buf, version, NO_LIMIT)?.expect("a whole packet");
    assert!(buf.is_empty(), "{} left {} bytes", packet.name(), buf.len());
    Ok(packet)
}

/// Feeds `bytes` one byte at a time: no packet, and nothing consumed, until the last byte.
fn decode_byte_at_a_time(bytes: &[u8], version: ProtocolVersion) -> Packet {
    let mut buf = BytesMut::new();
    for (i, &byte) in bytes.iter().enumerate() {
        buf.extend_from_slice(&[byte]);
        if i + 1 < bytes.len() {
            assert_eq!(
                decode(&mut buf, version, NO_LIMIT),
                Ok(None),
                "after {i} bytes"
            );
            assert_eq!(buf.len(), i + 1, "a partial packet must stay in the buffer");
        }
    }
    let packet = decode(&mut buf, version, NO_LIMIT).unwrap().unwrap();
    assert!(buf.is_empty());
    packet
}

fn assert_round_trip(packet: &Packet, version: ProtocolVersion) {
    let bytes = encoded(packet, version);
    assert_eq!(&decode_one(&bytes, version).unwrap(), packet, "{version:?}");
    assert_eq!(
        &decode_byte_at_a_time(&bytes, version),
        packet,
        "{version:?}"
    );
}

fn s(text: &str) -> String {
    text.to_string()
}

// ---------------------------------------------------------------------------------------------
// Sample packets: every type, with every property it allows in 5.0

fn user_properties() -> Vec<(String, String)> {
    vec![(s("k"), s("v")), (s("k"), s("v2")), (s(""), s("ü€"))]
}

fn connect_properties() -> PropertyValues {
    PropertyValues {
        session_expiry_interval: Some(3600),
        authentication_method: Some(s("SCRAM-SHA-1")),
        authentication_data: Some(Bytes::from_static(b"\x00\xffdata")),
        request_problem_information: Some(0),
        request_response_information: Some(1),
        receive_maximum: Some(20),
        topic_alias_maximum: Some(10),
        user_properties: user_properties(),
        maximum_packet_size: Some(1 << 20),
        ..PropertyValues::default()
    }
}

fn message_properties() -> PropertyValues {
    PropertyValues {
        payload_format_indicator: Some(1),
        message_expiry_interval: Some(u32::MAX),
        content_type: Some(s("text/plain")),
        response_topic: Some(s("reply/here")),
        correlation_data: Some(Bytes::from_static(b"\x01\x02")),
        user_properties: user_properties(),
        ..PropertyValues::default()
    }
}

fn will_properties() -> PropertyValues {
    PropertyValues {
        will_delay_interval: Some(30),
        ..message_properties()
    }
}

fn publish_properties() -> PropertyValues {
    PropertyValues {
        subscription_identifiers: vec![1, 268_435_455, 127, 128],
        topic_alias: Some(65535),
        ..message_properties()
    }
}

fn connack_properties() -> PropertyValues {
    PropertyValues {
        session_expiry_interval: Some(0),
        assigned_client_identifier: Some(s("auto-1")),
        server_keep_alive: Some(30),
        authentication_method: Some(s("SCRAM-SHA-1")),
        authentication_data: Some(Bytes::from_static(b"server")),
        response_information: Some(s("resp/")),
        server_reference: Some(s("other:1883")),
        reason_string: Some(s("welcome")),
        receive_maximum: Some(65535),
        topic_alias_maximum: Some(0),
        maximum_qos: Some(1),
        retain_available: Some(0),
        user_properties: user_properties(),
        maximum_packet_size: Some(u32::MAX),
        wildcard_subscription_available: Some(1),
        subscription_identifier_available: Some(0),
        shared_subscription_available: Some(1),
        ..PropertyValues::default()
    }
}

fn reply_properties() -> PropertyValues {
    PropertyValues {
        reason_string: Some(s("why")),
        user_properties: user_properties(),
        ..PropertyValues::default()
    }
}

fn user_only() -> PropertyValues {
    PropertyValues {
        user_properties: user_properties(),
        ..PropertyValues::default()
    }
}

fn connect(version: ProtocolVersion, client_id: &str) -> Connect {
    Connect {
        protocol: version,
        clean_start: true,
        keep_alive: 60,
        client_id: s(client_id),
        will: None,
        username: None,
        password: None,
        properties: Properties::default(),
    }
}

fn publish(qos: QoS, packet_id: u16, topic: &str, payload: &'static [u8]) -> Publish {
    Publish {
        qos,
        packet_id,
        topic: s(topic),
        payload: Bytes::from_static(payload),
        ..Publish::default()
    }
}

fn options(qos: QoS) -> SubscriptionOptions {
    SubscriptionOptions {
        qos,
        ..SubscriptionOptions::default()
    }
}

/// Representative packets of every type `version` has; in 5.0 with every allowed property.
fn samples(version: ProtocolVersion) -> Vec<Packet> {
    let v5 = version.is_v5();
    // Properties and reason codes only exist in 5.0.
    let props = |p: PropertyValues| {
        if v5 {
            Properties::from(p)
        } else {
            Properties::default()
        }
    };
    let code = |c: u8| if v5 { c } else { 0 };
    let mut packets = vec![
        Packet::Connect(Box::new(connect(version, "c1"))),
        Packet::Connect(Box::new(Connect {
            clean_start: false,
            keep_alive: 0,
            ..connect(version, "")
        })),
        Packet::Connect(Box::new(Connect {
            will: Some(Will {
                topic: s("will/t"),
                payload: Bytes::from_static(b"bye"),
                qos: QoS::AtLeastOnce,
                retain: true,
                properties: props(will_properties()),
            }),
            username: Some(s("user")),
            password: Some(Bytes::from_static(b"\x00p\xff")),
            properties: props(connect_properties()),
            ..connect(version, "full")
        })),
        Packet::Connect(Box::new(Connect {
            will: Some(Will {
                topic: s("w"),
                payload: Bytes::new(),
                qos: QoS::ExactlyOnce,
                retain: false,
                properties: Properties::default(),
            }),
            username: Some(s("")),
            password: Some(Bytes::new()),
            ..connect(version, "c2")
        })),
        Packet::ConnAck(ConnAck::default()),
        Packet::ConnAck(ConnAck {
            session_present: true,
            ..ConnAck::default()
        }),
        Packet::ConnAck(ConnAck {
            session_present: false,
            code: if v5 { 0x87 } else { 5 },
            properties: props(connack_properties()),
        }),
        Packet::Publish(publish(QoS::AtMostOnce, 0, "a/b", b"hello")),
        Packet::Publish(Publish {
            dup: true,
            retain: true,
            ..publish(QoS::AtLeastOnce, 1, "a/b/c", b"\x00\x01")
        }),
        Packet::Publish(publish(QoS::ExactlyOnce, 65535, "ü/€/$", b"")),
        Packet::Publish(Publish {
            retain: true,
            properties: props(publish_properties()),
            ..publish(QoS::AtLeastOnce, 7, "/", b"payload")
        }),
        Packet::Subscribe(Subscribe {
            packet_id: 1,
            filters: vec![(s("a/+"), options(QoS::AtMostOnce))],
            properties: Properties::default(),
        }),
        Packet::Subscribe(Subscribe {
            packet_id: 65535,
            filters: vec![
                (s("#"), options(QoS::AtLeastOnce)),
                (s("$SYS/#"), options(QoS::ExactlyOnce)),
                (s("a//b"), options(QoS::AtMostOnce)),
            ],
            properties: props(PropertyValues {
                subscription_identifiers: vec![268_435_455],
                ..user_only()
            }),
        }),
        Packet::SubAck(SubAck {
            packet_id: 1,
            reasons: vec![0, 1, 2, 0x80],
            properties: props(reply_properties()),
        }),
        Packet::Unsubscribe(Unsubscribe {
            packet_id: 2,
            filters: vec![s("a/+"), s("#"), s("x")],
            properties: props(user_only()),
        }),
        Packet::UnsubAck(UnsubAck {
            packet_id: 2,
            reasons: if v5 { vec![0, 0x11, 0x80] } else { Vec::new() },
            properties: props(reply_properties()),
        }),
        Packet::PingReq,
        Packet::PingResp,
        Packet::Disconnect(Disconnect::default()),
    ];
    for make in [
        Packet::PubAck,
        Packet::PubRec,
        Packet::PubRel,
        Packet::PubComp,
    ] {
        packets.push(make(Ack::new(1)));
        packets.push(make(Ack::new(65535)));
        packets.push(make(Ack {
            packet_id: 3,
            reason: code(0x10),
            properties: Properties::default(),
        }));
        packets.push(make(Ack {
            packet_id: 4,
            reason: 0,
            properties: props(reply_properties()),
        }));
        packets.push(make(Ack {
            packet_id: 5,
            reason: code(0x80),
            properties: props(reply_properties()),
        }));
    }
    if v5 {
        packets.extend(v5_only_samples());
    }
    packets
}

fn v5_only_samples() -> Vec<Packet> {
    vec![
        // A password without a user name is allowed from 5.0 on.
        Packet::Connect(Box::new(Connect {
            password: Some(Bytes::from_static(b"token")),
            ..connect(V5, "p")
        })),
        Packet::Publish(Publish {
            properties: PropertyValues {
                topic_alias: Some(1),
                ..PropertyValues::default()
            }
            .into(),
            ..publish(QoS::AtMostOnce, 0, "", b"aliased")
        }),
        Packet::Subscribe(Subscribe {
            packet_id: 9,
            filters: vec![
                (
                    s("a/#"),
                    SubscriptionOptions {
                        qos: QoS::ExactlyOnce,
                        no_local: true,
                        retain_as_published: true,
                        retain_handling: 2,
                    },
                ),
                (
                    s("$share/g/b"),
                    SubscriptionOptions {
                        qos: QoS::AtLeastOnce,
                        no_local: false,
                        retain_as_published: false,
                        retain_handling: 1,
                    },
                ),
            ],
            properties: Properties::default(),
        }),
        Packet::Disconnect(Disconnect::new(reason::DISCONNECT_WITH_WILL)),
        Packet::Disconnect(Disconnect {
            reason: 0,
            properties: user_only().into(),
        }),
        Packet::Disconnect(Disconnect {
            reason: reason::SESSION_TAKEN_OVER,
            properties: PropertyValues {
                session_expiry_interval: Some(10),
                server_reference: Some(s("elsewhere")),
                ..reply_properties()
            }
            .into(),
        }),
        Packet::Auth(Auth::default()),
        Packet::Auth(Auth {
            reason: reason::CONTINUE_AUTHENTICATION,
            properties: PropertyValues {
                authentication_method: Some(s("SCRAM-SHA-1")),
                authentication_data: Some(Bytes::from_static(b"challenge")),
                ..reply_properties()
            }
            .into(),
        }),
        Packet::Auth(Auth {
            reason: reason::REAUTHENTICATE,
            properties: Properties::default(),
        }),
    ]
}

// ---------------------------------------------------------------------------------------------
// Round trips

#[test]
fn every_packet_round_trips_in_every_version() {
    for version in VERSIONS {
        let packets = samples(version);
        assert!(packets.len() >= 35);
        for packet in &packets {
            assert_round_trip(packet, version);
        }
    }
}

#[test]
fn every_packet_type_is_sampled() {
    let mut names: Vec<&str> = samples(V5).iter().map(Packet::name).collect();
    names.sort_unstable();
    names.dedup();
    assert_eq!(names.len(), 15, "{names:?}");
    assert_eq!(
        samples(V311).iter().filter(|p| p.name() == "AUTH").count(),
        0
    );
}

#[test]
fn remaining_length_boundaries() {
    // Bodies of 127/128, 16383/16384 and 2097151/2097152 bytes need 1 to 4 length bytes.
    let topic = "t"; // 2 + 1 bytes of topic, no packet id at QoS 0
    for (body, header) in [
        (0usize, 2),
        (127, 2),
        (128, 3),
        (16_383, 3),
        (16_384, 4),
        (2_097_151, 4),
        (2_097_152, 5),
    ] {
        for version in VERSIONS {
            let overhead = 3 + usize::from(version.is_v5());
            let Some(len) = body.checked_sub(overhead) else {
                continue;
            };
            let packet = Packet::Publish(Publish {
                topic: s(topic),
                payload: Bytes::from(vec![0xA5; len]),
                ..Publish::default()
            });
            let bytes = encoded(&packet, version);
            assert_eq!(bytes.len(), header + body, "body {body}, {version:?}");
            assert_eq!(decode_one(&bytes, version).unwrap(), packet);
        }
    }
}

#[test]
fn several_packets_in_one_buffer_decode_in_order() {
    for version in VERSIONS {
        let packets = samples(version);
        let mut buf = BytesMut::new();
        for packet in &packets {
            encode(packet, version, &mut buf).unwrap();
        }
        // A partial packet at the end must wait for the rest.
        buf.extend_from_slice(&[0x30, 0x05, 0x00]);
        for packet in &packets {
            assert_eq!(
                &decode(&mut buf, version, NO_LIMIT).unwrap().unwrap(),
                packet
            );
        }
        assert_eq!(decode(&mut buf, version, NO_LIMIT), Ok(None));
        assert_eq!(&buf[..], &[0x30, 0x05, 0x00]);
    }
}

#[test]
fn decoded_payload_shares_the_read_buffer() {
    let bytes = encoded(
        &Packet::Publish(publish(QoS::AtMostOnce, 0, "t", b"payload")),
        V311,
    );
    let mut buf = BytesMut::from(&bytes[..]);
    let start = buf.as_ptr() as usize;
    let Some(Packet::Publish(p)) = decode(&mut buf, V311, NO_LIMIT).unwrap() else {
        panic!("not a PUBLISH");
    };
    assert_eq!(p.payload.as_ptr() as usize, start + bytes.len() - 7);
}

// ---------------------------------------------------------------------------------------------
// Exact bytes

#[test]
fn v5_uses_the_shortest_forms() {
    let cases = [
        (Packet::PubAck(Ack::new(1)), "40 02 00 01"),
        (Packet::PubRel(Ack::new(1)), "62 02 00 01"),
        (
            Packet::PubRec(Ack {
                packet_id: 1,
                reason: 0x10,
                properties: Properties::default(),
            }),
            "50 03 00 01 10",
        ),
        (
            Packet::PubComp(Ack {
                packet_id: 1,
                reason: 0,
                properties: PropertyValues {
                    reason_string: Some(s("x")),
                    ..PropertyValues::default()
                }
                .into(),
            }),
            "70 08 00 01 00 04 1f 00 01 78",
        ),
        (Packet::Disconnect(Disconnect::default()), "e0 00"),
        (Packet::Disconnect(Disconnect::new(4)), "e0 01 04"),
        (Packet::Auth(Auth::default()), "f0 00"),
        (
            Packet::Auth(Auth {
                reason: 0x18,
                properties: Properties::default(),
            }),
            "f0 01 18",
        ),
        (Packet::PingReq, "c0 00"),
        (Packet::PingResp, "d0 00"),
        (Packet::ConnAck(ConnAck::default()), "20 03 00 00 00"),
        (
            Packet::UnsubAck(UnsubAck {
                packet_id: 1,
                reasons: vec![0],
                properties: Properties::default(),
            }),
            "b0 04 00 01 00 00",
        ),
    ];
    for (packet, hex) in cases {
        assert_eq!(encoded(&packet, V5), raw(hex), "{}", packet.name());
    }
}

#[test]
fn before_v5_the_v5_fields_are_left_out() {
    let ack = Ack {
        packet_id: 1,
        reason: 0x80,
        properties: reply_properties().into(),
    };
    let cases = [
        (Packet::PubAck(ack.clone()), "40 02 00 01"),
        (Packet::PubRel(ack), "62 02 00 01"),
        (
            Packet::UnsubAck(UnsubAck {
                packet_id: 1,
                reasons: vec![0x11],
                properties: reply_properties().into(),
            }),
            "b0 02 00 01",
        ),
        (
            Packet::Disconnect(Disconnect {
                reason: 0x8E,
                properties: user_only().into(),
            }),
            "e0 00",
        ),
        (
            Packet::ConnAck(ConnAck {
                session_present: true,
                code: 0,
                properties: connack_properties().into(),
            }),
            "20 02 01 00",
        ),
        (
            Packet::SubAck(SubAck {
                packet_id: 1,
                reasons: vec![1, 0x80],
                properties: reply_properties().into(),
            }),
            "90 04 00 01 01 80",
        ),
        (
            Packet::Publish(Publish {
                properties: publish_properties().into(),
                ..publish(QoS::AtLeastOnce, 1, "t", b"p")
            }),
            "32 06 00 01 74 00 01 70",
        ),
    ];
    for version in [V31, V311] {
        for (packet, hex) in &cases {
            assert_eq!(encoded(packet, version), raw(hex), "{}", packet.name());
        }
    }
}

#[test]
fn encoding_connect_uses_its_own_protocol() {
    let c = Packet::Connect(Box::new(connect(V31, "x")));
    let expected = pkt(0x10, "'MQIsdp 03 02 00 3c 'x");
    assert_eq!(encoded(&c, V5), expected);
    let c = Packet::Connect(Box::new(connect(V5, "x")));
    assert_eq!(encoded(&c, V311), pkt(0x10, "'MQTT 05 02 00 3c 00 'x"));
}

#[test]
fn subscription_options_bits() {
    let sub = |options| {
        Packet::Subscribe(Subscribe {
            packet_id: 1,
            filters: vec![(s("t"), options)],
            properties: Properties::default(),
        })
    };
    let all = SubscriptionOptions {
        qos: QoS::ExactlyOnce,
        no_local: true,
        retain_as_published: true,
        retain_handling: 2,
    };
    assert_eq!(encoded(&sub(all), V5), pkt(0x82, "00 01 00 't 2e"));
    // Before 5.0 only the QoS exists.
    assert_eq!(encoded(&sub(all), V311), pkt(0x82, "00 01 't 02"));
}

#[test]
fn dup_is_dropped_at_qos_0() {
    let packet = Packet::Publish(Publish {
        dup: true,
        ..publish(QoS::AtMostOnce, 0, "t", b"")
    });
    assert_eq!(encoded(&packet, V311), raw("30 03 00 01 74"));
}

#[test]
fn encode_refuses_what_cannot_be_written() {
    let long = "x".repeat(65_536);
    let too_long_topic = Packet::Publish(publish(QoS::AtMostOnce, 0, &long, b""));
    let too_long_property = Packet::Disconnect(Disconnect {
        reason: 0,
        properties: PropertyValues {
            reason_string: Some(long.clone()),
            ..PropertyValues::default()
        }
        .into(),
    });
    let too_long_password = Packet::Connect(Box::new(Connect {
        username: Some(s("u")),
        password: Some(Bytes::from(long.clone().into_bytes())),
        ..connect(V311, "c")
    }));
    let too_big_identifier = Packet::Subscribe(Subscribe {
        packet_id: 1,
        filters: vec![(s("t"), options(QoS::AtMostOnce))],
        properties: PropertyValues {
            subscription_identifiers: vec![268_435_456],
            ..PropertyValues::default()
        }
        .into(),
    });
    // The payload's pages are never touched: only its length is read before refusing.
    let too_big_payload = Packet::Publish(Publish {
        payload: Bytes::from(vec![0u8; 268_435_455]),
        ..publish(QoS::AtMostOnce, 0, "t", b"")
    });
    let cases = [
        (too_long_topic, V311, EncodeError::FieldTooLong(65_536)),
        (too_long_property, V5, EncodeError::FieldTooLong(65_536)),
        (too_long_password, V311, EncodeError::FieldTooLong(65_536)),
        (
            too_big_identifier,
            V5,
            EncodeError::VarIntTooLarge(268_435_456),
        ),
        (too_big_payload, V311, EncodeError::TooLarge(268_435_458)),
        (
            Packet::Auth(Auth::default()),
            V311,
            EncodeError::UnsupportedPacket("AUTH"),
        ),
    ];
    for (packet, version, error) in cases {
        let mut out = BytesMut::from(&b"kept"[..]);
        assert_eq!(encode(&packet, version, &mut out), Err(error));
        assert_eq!(&out[..], b"kept", "nothing written on error");
    }
}

#[test]
fn known_good_wire_bytes() {
    let mosquitto_sub_311_connect = pkt(0x10, "'MQTT 04 02 00 3c 'mosq-Gz3cN9HD3Jc0DFbGqx");
    let mqisdp_connect = pkt(0x10, "'MQIsdp 03 c2 00 0a 'paho/31 'user 'pass");
    let v5_connect = pkt(0x10, "'MQTT 05 02 00 3c 05 11 00 00 00 3c 00 00");
    let cases: Vec<(ProtocolVersion, Vec<u8>, Packet)> = vec![
        (V5, raw("e0 00"), Packet::Disconnect(Disconnect::default())),
        (V5, raw("e0 01 04"), Packet::Disconnect(Disconnect::new(4))),
        (
            V5,
            raw("e0 02 00 00"),
            Packet::Disconnect(Disconnect::default()),
        ),
        (V5, raw("f0 00"), Packet::Auth(Auth::default())),
        (V5, raw("40 02 00 01"), Packet::PubAck(Ack::new(1))),
        (V5, raw("40 04 00 01 00 00"), Packet::PubAck(Ack::new(1))),
        (V311, raw("62 02 12 34"), Packet::PubRel(Ack::new(0x1234))),
        (V31, raw("6a 02 00 01"), Packet::PubRel(Ack::new(1))),
        (V311, raw("c0 00"), Packet::PingReq),
        (
            V311,
            raw("e0 00"),
            Packet::Disconnect(Disconnect::default()),
        ),
        (
            V311,
            mosquitto_sub_311_connect,
            Packet::Connect(Box::new(connect(V311, "mosq-Gz3cN9HD3Jc0DFbGqx"))),
        ),
        (
            // The connection's version does not matter for CONNECT.
            V5,
            mqisdp_connect,
            Packet::Connect(Box::new(Connect {
                keep_alive: 10,
                username: Some(s("user")),
                password: Some(Bytes::from_static(b"pass")),
                ..connect(V31, "paho/31")
            })),
        ),
        (
            V311,
            v5_connect,
            Packet::Connect(Box::new(Connect {
                properties: PropertyValues {
                    session_expiry_interval: Some(60),
                    ..PropertyValues::default()
                }
                .into(),
                ..connect(V5, "")
            })),
        ),
        (
            V311,
            pkt(0x82, "00 01 'test 00"),
            Packet::Subscribe(Subscribe {
                packet_id: 1,
                filters: vec![(s("test"), options(QoS::AtMostOnce))],
                properties: Properties::default(),
            }),
        ),
        (
            V31,
            pkt(0x8a, "00 02 'a/# 01"),
            Packet::Subscribe(Subscribe {
                packet_id: 2,
                filters: vec![(s("a/#"), options(QoS::AtLeastOnce))],
                properties: Properties::default(),
            }),
        ),
        (
            V311,
            raw("20 02 00 00"),
            Packet::ConnAck(ConnAck::default()),
        ),
        (
            V5,
            pkt(0x20, "00 00 06 22 00 0a 21 00 14"),
            Packet::ConnAck(ConnAck {
                properties: PropertyValues {
                    topic_alias_maximum: Some(10),
                    receive_maximum: Some(20),
                    ..PropertyValues::default()
                }
                .into(),
                ..ConnAck::default()
            }),
        ),
        (
            V311,
            pkt(0x3d, "'a/b 00 07 68 69"),
            Packet::Publish(Publish {
                dup: true,
                retain: true,
                ..publish(QoS::ExactlyOnce, 7, "a/b", b"hi")
            }),
        ),
        (
            V5,
            pkt(0x30, "00 00 03 23 00 05 68 69"),
            Packet::Publish(Publish {
                properties: PropertyValues {
                    topic_alias: Some(5),
                    ..PropertyValues::default()
                }
                .into(),
                ..publish(QoS::AtMostOnce, 0, "", b"hi")
            }),
        ),
        (
            V5,
            pkt(0x30, "'t 04 0b 01 0b 02 68 69"),
            Packet::Publish(Publish {
                properties: PropertyValues {
                    subscription_identifiers: vec![1, 2],
                    ..PropertyValues::default()
                }
                .into(),
                ..publish(QoS::AtMostOnce, 0, "t", b"hi")
            }),
        ),
    ];
    for (version, bytes, expected) in cases {
        assert_eq!(decode_one(&bytes, version), Ok(expected), "{bytes:02x?}");
    }
}

// ---------------------------------------------------------------------------------------------
// Malformed packets

#[test]
fn malformed_packets_raise_the_exact_error() {
    use DecodeError::*;
    let v311_connect =
        |flags: &str, payload: &str| pkt(0x10, &format!("'MQTT 04 {flags} 00 3c {payload}"));
    let v5_connect = |props: &str| pkt(0x10, &format!("'MQTT 05 02 00 3c {props} 'c"));
    let v5_puback = |props: &str| pkt(0x40, &format!("00 01 00 {props}"));
    #[rustfmt::skip]
    let cases: Vec<(ProtocolVersion, Vec<u8>, DecodeError)> = vec![
        // Packet type and fixed-header flags.
        (V311, raw("00 00"), InvalidPacketType(0)),
        (V311, raw("f0 00"), InvalidPacketType(15)),
        (V31, raw("f0 00"), InvalidPacketType(15)),
        (V5, raw("f1 00"), InvalidFlags { packet: "AUTH", flags: 1 }),
        (V311, raw("11 00"), InvalidFlags { packet: "CONNECT", flags: 1 }),
        (V31, raw("18 00"), InvalidFlags { packet: "CONNECT", flags: 8 }),
        (V311, raw("21 02 00 00"), InvalidFlags { packet: "CONNACK", flags: 1 }),
        (V311, raw("41 02 00 01"), InvalidFlags { packet: "PUBACK", flags: 1 }),
        (V5, raw("60 02 00 01"), InvalidFlags { packet: "PUBREL", flags: 0 }),
        (V311, raw("6a 02 00 01"), InvalidFlags { packet: "PUBREL", flags: 0b1010 }),
        (V311, pkt(0x80, "00 01 't 00"), InvalidFlags { packet: "SUBSCRIBE", flags: 0 }),
        (V5, pkt(0xa0, "00 01 00 't"), InvalidFlags { packet: "UNSUBSCRIBE", flags: 0 }),
        (V311, raw("c1 00"), InvalidFlags { packet: "PINGREQ", flags: 1 }),
        (V5, raw("e2 00"), InvalidFlags { packet: "DISCONNECT", flags: 2 }),
        (V311, pkt(0x36, "'t 00 01"), InvalidQoS),
        (V5, pkt(0x3e, "'t 00 01 00"), InvalidQoS),
        (V311, pkt(0x38, "'t"), DupAtQoS0),
        // Lengths.
        (V311, raw("30 ff ff ff ff"), MalformedRemainingLength),
        (V311, raw("c0 80 80 80 80 01"), MalformedRemainingLength),
        (V311, raw("c0 80 00"), NonMinimalVarInt),
        (V5, raw("e0 81 00 00"), NonMinimalVarInt),
        (V5, pkt(0x30, "'t 03 0b 80 00"), NonMinimalVarInt),
        (V5, pkt(0x30, "'t 80 80 80 80 01"), MalformedVarInt),
        (V311, raw("30 03 00 05 61"), Truncated),
        (V311, raw("82 01 00"), Truncated),
        (V311, pkt(0x82, "00 01 't"), Truncated),
        (V5, pkt(0x30, "'t 05 23 00"), Truncated),
        (V5, v5_puback("03 1f 00 05 61"), Truncated),
        (V5, pkt(0x20, "00 00"), Truncated),
        (V311, pkt(0x10, "'MQTT"), Truncated),
        (V311, raw("40 03 00 01 00"), TrailingBytes { packet: "PUBACK", extra: 1 }),
        (V311, raw("c0 01 00"), TrailingBytes { packet: "PINGREQ", extra: 1 }),
        (V5, raw("d0 01 00"), TrailingBytes { packet: "PINGRESP", extra: 1 }),
        (V311, raw("e0 01 00"), TrailingBytes { packet: "DISCONNECT", extra: 1 }),
        (V311, raw("b0 03 00 01 00"), TrailingBytes { packet: "UNSUBACK", extra: 1 }),
        (V311, raw("20 03 00 00 00"), TrailingBytes { packet: "CONNACK", extra: 1 }),
        (V311, v311_connect("02", "'c 00"), TrailingBytes { packet: "CONNECT", extra: 1 }),
        (V5, raw("e0 03 00 00 00"), TrailingBytes { packet: "DISCONNECT", extra: 1 }),
        // Strings.
        (V311, raw("30 04 00 02 c3 28"), InvalidUtf8),
        (V5, raw("30 06 00 03 ed a0 80 00"), InvalidUtf8),
        (V311, raw("30 04 00 02 61 00"), NullCharacter),
        (V5, pkt(0x82, "00 01 00 00 03 61 00 62 00"), NullCharacter),
        (V5, v5_puback("04 1f 00 01 00"), NullCharacter),
        (V311, v311_connect("02", "00 02 ff fe"), InvalidUtf8),
        // CONNECT.
        (V311, pkt(0x10, "'MQTX 04 02 00 3c 'c"), InvalidProtocolName),
        (V311, pkt(0x10, "'mqtt 04 02 00 3c 'c"), InvalidProtocolName),
        (V311, pkt(0x10, "'MQTT 06 02 00 3c 'c"), UnsupportedProtocolLevel(6)),
        (V311, pkt(0x10, "'MQTT 03 02 00 3c 'c"), UnsupportedProtocolLevel(3)),
        (V311, pkt(0x10, "'MQIsdp 04 02 00 3c 'c"), UnsupportedProtocolLevel(4)),
        (V5, pkt(0x10, "'MQTT 84 02 00 3c 'c"), UnsupportedProtocolLevel(0x84)),
        (V311, v311_connect("03", "'c"), ReservedConnectFlag),
        (V311, v311_connect("0a", "'c"), WillFlagsWithoutWill),
        (V311, v311_connect("22", "'c"), WillFlagsWithoutWill),
        (V311, v311_connect("1e", "'c 'w 00 00"), InvalidWillQoS),
        (V311, v311_connect("42", "'c 'p"), PasswordWithoutUsername),
        (V31, pkt(0x10, "'MQIsdp 03 42 00 3c 'c 'p"), PasswordWithoutUsername),
        (V311, v311_connect("06", "'c 'a/# 00 00"), InvalidWillTopic),
        (V311, v311_connect("06", "'c 00 00 00 00"), InvalidWillTopic),
        (V311, v311_connect("82", "'c"), Truncated),
        (V311, raw("20 02 02 00"), InvalidConnAckFlags(2)),
        (V5, raw("20 03 80 00 00"), InvalidConnAckFlags(0x80)),
        // PUBLISH topics.
        (V311, pkt(0x30, "'a/#"), WildcardInTopicName),
        (V5, pkt(0x30, "'+ 00"), WildcardInTopicName),
        (V311, pkt(0x30, "00 00 68 69"), EmptyTopicName),
        (V5, pkt(0x30, "00 00 00 68 69"), EmptyTopicName),
        // SUBSCRIBE and UNSUBSCRIBE.
        (V311, raw("82 02 00 01"), NoTopicFilters { packet: "SUBSCRIBE" }),
        (V5, raw("82 03 00 01 00"), NoTopicFilters { packet: "SUBSCRIBE" }),
        (V311, raw("a2 02 00 01"), NoTopicFilters { packet: "UNSUBSCRIBE" }),
        (V5, raw("a2 03 00 01 00"), NoTopicFilters { packet: "UNSUBSCRIBE" }),
        (V311, pkt(0x82, "00 01 't 04"), ReservedSubscriptionBits(4)),
        (V311, pkt(0x82, "00 01 't 20"), ReservedSubscriptionBits(0x20)),
        (V5, pkt(0x82, "00 01 00 't 40"), ReservedSubscriptionBits(0x40)),
        (V311, pkt(0x82, "00 01 't 03"), InvalidSubscriptionQoS),
        (V5, pkt(0x82, "00 01 00 't 03"), InvalidSubscriptionQoS),
        (V5, pkt(0x82, "00 01 00 't 30"), InvalidRetainHandling),
        // Packet identifiers.
        (V311, pkt(0x32, "'t 00 00"), ZeroPacketId { packet: "PUBLISH" }),
        (V5, pkt(0x34, "'t 00 00 00"), ZeroPacketId { packet: "PUBLISH" }),
        (V311, raw("40 02 00 00"), ZeroPacketId { packet: "PUBACK" }),
        (V5, raw("50 02 00 00"), ZeroPacketId { packet: "PUBREC" }),
        (V311, raw("62 02 00 00"), ZeroPacketId { packet: "PUBREL" }),
        (V311, raw("70 02 00 00"), ZeroPacketId { packet: "PUBCOMP" }),
        (V311, pkt(0x82, "00 00 't 00"), ZeroPacketId { packet: "SUBSCRIBE" }),
        (V311, raw("90 03 00 00 00"), ZeroPacketId { packet: "SUBACK" }),
        (V5, pkt(0xa2, "00 00 00 't"), ZeroPacketId { packet: "UNSUBSCRIBE" }),
        (V311, raw("b0 02 00 00"), ZeroPacketId { packet: "UNSUBACK" }),
        // Properties.
        (V5, v5_puback("01 05"), UnknownProperty(5)),
        (V5, v5_puback("01 00"), UnknownProperty(0)),
        (V5, v5_puback("02 ff 00"), UnknownProperty(0xff)),
        (V5, v5_puback("03 23 00 01"), PropertyNotAllowed { packet: "PUBACK", id: 0x23 }),
        (V5, v5_connect("02 24 01"), PropertyNotAllowed { packet: "CONNECT", id: 0x24 }),
        (V5, pkt(0x30, "'t 05 18 00 00 00 01"), PropertyNotAllowed { packet: "PUBLISH", id: 0x18 }),
        (V5, raw("e0 04 00 02 17 01"), PropertyNotAllowed { packet: "DISCONNECT", id: 0x17 }),
        (
            V5,
            pkt(0x10, "'MQTT 05 06 00 3c 00 'c 05 11 00 00 00 00 'w 00 00"),
            PropertyNotAllowed { packet: "CONNECT will properties", id: 0x11 },
        ),
        (V5, v5_puback("06 1f 00 00 1f 00 00"), DuplicateProperty(0x1f)),
        (V5, v5_connect("06 21 00 01 21 00 01"), DuplicateProperty(0x21)),
        (V5, pkt(0x82, "00 01 04 0b 01 0b 02 't 00"), DuplicateProperty(0x0b)),
        (V5, pkt(0x30, "'t 06 23 00 01 23 00 01"), DuplicateProperty(0x23)),
        (V5, v5_connect("03 21 00 00"), InvalidPropertyValue(0x21)),
        (V5, v5_connect("05 27 00 00 00 00"), InvalidPropertyValue(0x27)),
        (V5, v5_connect("02 17 02"), InvalidPropertyValue(0x17)),
        (V5, v5_connect("02 19 02"), InvalidPropertyValue(0x19)),
        (V5, pkt(0x30, "'t 02 01 02"), InvalidPropertyValue(0x01)),
        (V5, pkt(0x30, "'t 03 23 00 00"), InvalidPropertyValue(0x23)),
        (V5, pkt(0x30, "'t 06 08 'a/+"), InvalidPropertyValue(0x08)),
        (V5, pkt(0x82, "00 01 02 0b 00 't 00"), InvalidPropertyValue(0x0b)),
        (V5, pkt(0x20, "00 00 02 24 02"), InvalidPropertyValue(0x24)),
        (V5, pkt(0x20, "00 00 02 2a 05"), InvalidPropertyValue(0x2a)),
        (V5, raw("f0 05 18 03 16 00 00"), AuthDataWithoutMethod),
        (V5, v5_connect("03 16 00 00"), AuthDataWithoutMethod),
    ];
    assert!(cases.len() >= 100);
    for (version, bytes, expected) in cases {
        assert_eq!(
            decode_one(&bytes, version),
            Err(expected),
            "{version:?} {bytes:02x?}"
        );
    }
}

/// Every place a 5.0 packet has a property block.
#[rustfmt::skip]
const PROPERTY_BLOCKS: [&str; 14] = [
    "CONNECT", "will", "CONNACK", "PUBLISH", "PUBACK", "PUBREC", "PUBREL", "PUBCOMP",
    "SUBSCRIBE", "SUBACK", "UNSUBSCRIBE", "UNSUBACK", "DISCONNECT", "AUTH",
];

/// The table of MQTT 5.0 §2.2.2.2: each property and the places that allow it.
#[rustfmt::skip]
const PROPERTY_PLACES: [(u8, &str); 27] = [
    (0x01, "PUBLISH will"),
    (0x02, "PUBLISH will"),
    (0x03, "PUBLISH will"),
    (0x08, "PUBLISH will"),
    (0x09, "PUBLISH will"),
    (0x0B, "PUBLISH SUBSCRIBE"),
    (0x11, "CONNECT CONNACK DISCONNECT"),
    (0x12, "CONNACK"),
    (0x13, "CONNACK"),
    (0x15, "CONNECT CONNACK AUTH"),
    (0x16, "CONNECT CONNACK AUTH"),
    (0x17, "CONNECT"),
    (0x18, "will"),
    (0x19, "CONNECT"),
    (0x1A, "CONNACK"),
    (0x1C, "CONNACK DISCONNECT"),
    (0x1F, "CONNACK PUBACK PUBREC PUBREL PUBCOMP SUBACK UNSUBACK DISCONNECT AUTH"),
    (0x21, "CONNECT CONNACK"),
    (0x22, "CONNECT CONNACK"),
    (0x23, "PUBLISH"),
    (0x24, "CONNACK"),
    (0x25, "CONNACK"),
    (0x26, "everywhere"),
    (0x27, "CONNECT CONNACK"),
    (0x28, "CONNACK"),
    (0x29, "CONNACK"),
    (0x2A, "CONNACK"),
];

/// A valid value for property `id`, by its data type.
fn property_value(id: u8) -> Vec<u8> {
    match id {
        0x01 | 0x17 | 0x19 | 0x24 | 0x25 | 0x28 | 0x29 | 0x2A => raw("01"),
        0x13 | 0x21 | 0x22 | 0x23 => raw("00 01"),
        0x02 | 0x11 | 0x18 | 0x27 => raw("00 00 00 01"),
        0x0B => raw("01"),
        0x26 => raw("'k 'v"),
        _ => raw("'a"),
    }
}

/// A 5.0 packet whose property block (in `place`) is `properties`.
fn packet_with_properties(place: &str, properties: &[u8]) -> Vec<u8> {
    let mut block = vec![properties.len() as u8];
    block.extend_from_slice(properties);
    let around = |first: u8, before: &str, after: &str| {
        let mut body = raw(before);
        body.extend_from_slice(&block);
        body.extend_from_slice(&raw(after));
        with_length(first, &body)
    };
    match place {
        "CONNECT" => around(0x10, "'MQTT 05 02 00 3c", "'c"),
        "will" => around(0x10, "'MQTT 05 06 00 3c 00 'c", "'w 00 00"),
        "CONNACK" => around(0x20, "00 00", ""),
        "PUBLISH" => around(0x30, "'t", ""),
        "PUBACK" => around(0x40, "00 01 00", ""),
        "PUBREC" => around(0x50, "00 01 00", ""),
        "PUBREL" => around(0x62, "00 01 00", ""),
        "PUBCOMP" => around(0x70, "00 01 00", ""),
        "SUBSCRIBE" => around(0x82, "00 01", "'t 00"),
        "SUBACK" => around(0x90, "00 01", "00"),
        "UNSUBSCRIBE" => around(0xa2, "00 01", "'t"),
        "UNSUBACK" => around(0xb0, "00 01", "00"),
        "DISCONNECT" => around(0xe0, "00", ""),
        "AUTH" => around(0xf0, "00", ""),
        _ => unreachable!("{place}"),
    }
}

#[test]
fn each_property_is_accepted_exactly_where_the_spec_allows_it() {
    for place in PROPERTY_BLOCKS {
        let packet = if place == "will" {
            "CONNECT will properties"
        } else {
            place
        };
        for (id, allowed_in) in PROPERTY_PLACES {
            let mut property = vec![id];
            property.extend_from_slice(&property_value(id));
            let result = decode_one(&packet_with_properties(place, &property), V5);
            if allowed_in == "everywhere" || allowed_in.split(' ').any(|p| p == place) {
                // Authentication Data alone is refused for another reason.
                let ok = result.is_ok() || result == Err(DecodeError::AuthDataWithoutMethod);
                assert!(ok, "{id:#04x} in {place}: {result:?}");
            } else {
                assert_eq!(
                    result,
                    Err(DecodeError::PropertyNotAllowed { packet, id }),
                    "{id:#04x} in {place}"
                );
            }
        }
    }
}

#[test]
fn unknown_property_ids_are_refused() {
    for id in 0..=255u8 {
        if PROPERTY_PLACES.iter().any(|&(known, _)| known == id) {
            continue;
        }
        let bytes = packet_with_properties("DISCONNECT", &[id, 0, 0, 0, 0]);
        assert_eq!(
            decode_one(&bytes, V5),
            Err(DecodeError::UnknownProperty(id))
        );
    }
}

#[test]
fn some_rules_differ_between_versions() {
    // 3.1 leaves the flags of PUBREL, SUBSCRIBE and UNSUBSCRIBE unchecked; 3.1.1 does not.
    assert!(decode_one(&raw("6a 02 00 01"), V31).is_ok());
    assert!(decode_one(&raw("6a 02 00 01"), V311).is_err());
    // 5.0 allows a password without a user name.
    let connect = |level: &str| pkt(0x10, &format!("'MQTT {level} 42 00 3c 'c 'p"));
    assert_eq!(
        decode_one(&connect("04"), V311),
        Err(DecodeError::PasswordWithoutUsername)
    );
    assert!(decode_one(&pkt(0x10, "'MQTT 05 42 00 3c 00 'c 'p"), V5).is_ok());
    // Subscription option bits 2-5 only exist in 5.0.
    assert!(decode_one(&pkt(0x82, "00 01 00 't 2e"), V5).is_ok());
    assert_eq!(
        decode_one(&pkt(0x82, "00 01 't 2e"), V311),
        Err(DecodeError::ReservedSubscriptionBits(0x2e))
    );
    // A 5.0 ack may carry a reason code; a 3.1.1 ack may not.
    assert!(decode_one(&raw("40 03 00 01 10"), V5).is_ok());
    assert!(decode_one(&raw("40 03 00 01 10"), V311).is_err());
    // An empty topic is fine in 5.0 with a topic alias, and never before.
    assert!(decode_one(&pkt(0x30, "00 00 03 23 00 01"), V5).is_ok());
    assert!(decode_one(&pkt(0x30, "00 00 03 23 00 01"), V311).is_err());
}

#[test]
fn errors_map_to_v5_reason_codes() {
    use DecodeError::*;
    let cases = [
        (
            UnsupportedProtocolLevel(6),
            reason::UNSUPPORTED_PROTOCOL_VERSION,
        ),
        (PacketTooLarge { size: 2, max: 1 }, reason::PACKET_TOO_LARGE),
        (Truncated, reason::MALFORMED_PACKET),
        (
            InvalidFlags {
                packet: "PUBACK",
                flags: 1,
            },
            reason::MALFORMED_PACKET,
        ),
        (UnknownProperty(5), reason::MALFORMED_PACKET),
        (
            PropertyNotAllowed {
                packet: "PUBACK",
                id: 0x23,
            },
            reason::MALFORMED_PACKET,
        ),
        (DuplicateProperty(0x1f), reason::PROTOCOL_ERROR),
        (InvalidPropertyValue(0x21), reason::PROTOCOL_ERROR),
        (InvalidPropertyValue(0x23), reason::TOPIC_ALIAS_INVALID),
        (WildcardInTopicName, reason::TOPIC_NAME_INVALID),
        (EmptyTopicName, reason::PROTOCOL_ERROR),
        (
            NoTopicFilters {
                packet: "SUBSCRIBE",
            },
            reason::PROTOCOL_ERROR,
        ),
        (InvalidProtocolName, reason::PROTOCOL_ERROR),
    ];
    for (error, code) in cases {
        assert_eq!(error.reason_code(), code, "{error}");
        assert!(!error.to_string().is_empty());
    }
}

// ---------------------------------------------------------------------------------------------
// Maximum packet size

#[test]
fn too_large_is_refused_before_the_body_arrives() {
    // Only the fixed header is there; the 268 MB body never will be.
    let mut buf = BytesMut::from(&raw("30 ff ff ff 7f")[..]);
    assert_eq!(
        decode(&mut buf, V311, 1024),
        Err(DecodeError::PacketTooLarge {
            size: 268_435_455 + 5,
            max: 1024
        })
    );
    let mut buf = BytesMut::from(&raw("82 e9 07")[..]);
    assert_eq!(
        decode(&mut buf, V5, 1000),
        Err(DecodeError::PacketTooLarge {
            size: 1004,
            max: 1000
        })
    );
}

#[test]
fn max_packet_size_counts_the_fixed_header() {
    let bytes = encoded(
        &Packet::Publish(publish(QoS::AtMostOnce, 0, "t", b"0123456789")),
        V5,
    );
    assert_eq!(bytes.len(), 16);
    let mut buf = BytesMut::from(&bytes[..]);
    assert!(decode(&mut buf, V5, 16).unwrap().is_some());
    let mut buf = BytesMut::from(&bytes[..]);
    assert_eq!(
        decode(&mut buf, V5, 15),
        Err(DecodeError::PacketTooLarge { size: 16, max: 15 })
    );
}

/// A CONNECT refused for its size is answered in the client's version, read from its first
/// bytes: the name and level are there long before the rest.
#[test]
fn the_version_of_a_connect_is_read_from_its_first_bytes() {
    for version in [V31, V311, V5] {
        let bytes = encoded(&Packet::Connect(Box::new(connect(version, "c"))), version);
        // Cut after the level byte: header (2), name length (2), name (4 or 6), level (1).
        let cut = 2 + 2 + if version == V31 { 6 } else { 4 } + 1;
        assert_eq!(connect_version(&bytes[..cut]), Some(version), "{version:?}");
        assert_eq!(
            connect_version(&bytes[..cut - 1]),
            None,
            "{version:?} cut short"
        );
    }
    // A 5.0 CONNECT announcing 1 MiB, of which only the start came.
    assert_eq!(connect_version(&raw("10 80 80 40 'MQTT 05 02")), Some(V5));
    // Too short, a level we do not speak, a name that is not MQTT's, not a CONNECT.
    for other in ["10", "10 0a 'MQTT 06", "10 0a 'MQT 05", "30 0a 'MQTT 05"] {
        assert_eq!(connect_version(&raw(other)), None, "{other}");
    }
}

#[test]
fn garbage_first_byte_is_refused_at_once() {
    // No need to wait for a length when the first byte is already wrong.
    let mut buf = BytesMut::from(&[0x00][..]);
    assert_eq!(
        decode(&mut buf, V311, NO_LIMIT),
        Err(DecodeError::InvalidPacketType(0))
    );
    let mut buf = BytesMut::from(&[0x36][..]);
    assert_eq!(
        decode(&mut buf, V311, NO_LIMIT),
        Err(DecodeError::InvalidQoS)
    );
}

// ---------------------------------------------------------------------------------------------
// Property test: random and mutated input

/// Inputs per protocol version.
const FUZZ_ROUNDS: usize = 100_000;

#[test]
fn random_and_mutated_bytes_never_panic_and_round_trip() {
    let seed = std::env::var("CODEC_SEED")
        .ok()
        .and_then(|seed| seed.parse().ok())
        .unwrap_or(0x5EED_C0DE_u64);
    println!("codec property test seed: {seed} (set CODEC_SEED to change it)");
    let mut rng = SmallRng::seed_from_u64(seed);
    let mut accepted = 0;
    for version in VERSIONS {
        let valid: Vec<Vec<u8>> = samples(version)
            .iter()
            .map(|p| encoded(p, version))
            .collect();
        for round in 0..FUZZ_ROUNDS {
            let input = match round % 4 {
                0 => random_packet(&mut rng),
                _ => mutated(&mut rng, &valid),
            };
            let max = if rng.random_bool(0.1) {
                rng.random_range(0..64)
            } else {
                NO_LIMIT
            };
            accepted += check_decode(&input, version, max);
        }
    }
    println!("{accepted} packets decoded and re-encoded");
    // Enough inputs must get through to exercise re-encoding, not just rejection.
    assert!(accepted > 30_000, "only {accepted} packets decoded");
}

/// Decodes every packet in `input`; checks that a short read leaves the buffer untouched and
/// that every accepted packet encodes back to itself. Returns the number of packets decoded.
fn check_decode(input: &[u8], version: ProtocolVersion, max: usize) -> usize {
    let mut buf = BytesMut::from(input);
    let mut decoded = 0;
    loop {
        let before = buf.clone();
        match decode(&mut buf, version, max) {
            Ok(Some(packet)) => {
                assert!(buf.len() < before.len(), "a packet takes bytes");
                let again = encoded(&packet, version);
                assert_eq!(
                    decode_one(&again, version).as_ref(),
                    Ok(&packet),
                    "{version:?} {:02x?}",
                    &before[..]
                );
                decoded += 1;
            }
            Ok(None) => {
                assert_eq!(buf, before, "an incomplete packet must stay in the buffer");
                return decoded;
            }
            Err(_) => return decoded,
        }
    }
}

/// A random first byte and body, with a correct remaining length half the time.
fn random_packet(rng: &mut SmallRng) -> Vec<u8> {
    let mut body = vec![0; rng.random_range(0..48)];
    rng.fill_bytes(&mut body);
    let first = rng.random::<u8>();
    if rng.random_bool(0.5) {
        let mut out = vec![first];
        out.extend_from_slice(&body);
        out
    } else {
        with_length(first, &body)
    }
}

/// A valid packet with one to four random edits; its length then fixed half the time, so
/// that the edits reach the body parser instead of only breaking the length.
fn mutated(rng: &mut SmallRng, valid: &[Vec<u8>]) -> Vec<u8> {
    let mut bytes = valid[rng.random_range(0..valid.len())].clone();
    for _ in 0..rng.random_range(1..=4) {
        let len = bytes.len();
        let at = rng.random_range(0..=len);
        match rng.random_range(0..7) {
            0 if at < len => bytes[at] ^= 1 << rng.random_range(0..8),
            1 if at < len => bytes[at] = rng.random(),
            2 => bytes.insert(at, rng.random()),
            3 if at < len => {
                bytes.remove(at);
            }
            4 => bytes.truncate(at),
            5 => {
                let other = &valid[rng.random_range(0..valid.len())];
                let from = rng.random_range(0..other.len());
                let to = rng.random_range(from..=other.len());
                bytes.splice(at..at, other[from..to].iter().copied());
            }
            _ if at < len => bytes[at] = [0x00, 0x7f, 0x80, 0xff][rng.random_range(0..4)],
            _ => bytes.push(rng.random()),
        }
    }
    if rng.random_bool(0.5) {
        fix_length(&bytes)
    } else {
        bytes
    }
}

/// Rewrites the remaining length of `bytes` to match what follows the fixed header.
fn fix_length(bytes: &[u8]) -> Vec<u8> {
    let Some((&first, rest)) = bytes.split_first() else {
        return Vec::new();
    };
    let header = rest
        .iter()
        .take(4)
        .position(|b| b & 0x80 == 0)
        .map_or(0, |i| i + 1);
    with_length(first, &rest[header..])
}

/// `encode_publish` (the broker's per-delivery path) decodes to the PUBLISH it stands for:
/// the stored properties plus the delivery's expiry and subscription identifiers.
#[test]
fn encode_publish_matches_the_packet_it_stands_for() {
    let ids = [7, 300_000];
    for version in [V31, V311, V5] {
        for qos in [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce] {
            // What the broker stores: the expiry is kept as a deadline, not as a property.
            let stored = PropertyValues {
                message_expiry_interval: None,
                ..message_properties()
            };
            let delivered = Delivered {
                dup: qos != QoS::AtMostOnce,
                qos,
                retain: true,
                packet_id: if qos == QoS::AtMostOnce { 0 } else { 513 },
                message_expiry_interval: Some(42),
                subscription_identifiers: &ids,
                ..Delivered::default()
            };
            let mut out = BytesMut::new();
            let written =
                encode_publish("a/b", &stored, b"payload", &delivered, version, &mut out).unwrap();
            assert_eq!(written, out.len());
            let mut expected = stored.clone();
            expected.message_expiry_interval = Some(42);
            expected.subscription_identifiers = ids.to_vec();
            let want = Publish {
                dup: delivered.dup,
                qos,
                retain: true,
                topic: s("a/b"),
                packet_id: delivered.packet_id,
                properties: if version == V5 {
                    expected.into()
                } else {
                    Properties::default()
                },
                payload: Bytes::from_static(b"payload"),
            };
            assert_eq!(
                decode_one(&out, version).unwrap(),
                Packet::Publish(want),
                "{version:?} {qos:?}"
            );
        }
    }
}
