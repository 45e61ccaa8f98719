//! The HTTP listener against the real server in-process: health, Prometheus metrics, the
//! admin API's JSON answers and errors, and API keys with their roles (README,
//! "Observability").

mod common;

use common::*;
use supermq::auth::hash_password;
use supermq::protocol::QoS;

#[tokio::test]
async fn health_metrics_and_the_node_answer_without_keys_on_loopback() {
    let broker = TestBroker::with_http(Vec::new()).await;
    let http_addr = broker.http.expect("http on");
    let (status, body) = http(http_addr, "GET", "/healthz", None).await;
    assert_eq!((status, body.as_str()), (200, r#"{"status":"ok"}"#));

    let mut sub = TestClient::v5(broker.addr, "sub").await;
    sub.subscribe("m/#", QoS::AtLeastOnce).await;
    let mut publisher = TestClient::v5(broker.addr, "pub").await;
    publisher.publish("m/1", b"x", QoS::AtLeastOnce, true).await;
    sub.recv_acked().await;

    let (status, metrics) = http(http_addr, "GET", "/metrics", None).await;
    assert_eq!(status, 200);
    for line in [
        "supermq_connections 2",
        "supermq_sessions 2",
        "supermq_subscriptions 1",
        "supermq_retained_messages 1",
        "supermq_messages_received_total 1",
        "supermq_messages_delivered_total 1",
        "supermq_messages_dropped_total{reason=\"queue_full\"} 0",
    ] {
        assert!(
            metrics.lines().any(|l| l == line),
            "{line:?} not in:\n{metrics}"
        );
    }

    let (status, nodes) = http(http_addr, "GET", "/api/v1/nodes", None).await;
    assert_eq!(status, 200);
    let nodes: serde_json::Value = serde_json::from_str(&nodes).expect("JSON");
    let node = &nodes["data"][0];
    assert_eq!(node["connections"], 2);
    assert_eq!(node["subscriptions"], 1);
    assert_eq!(node["retained"], 1);
    assert_eq!(node["status"], "running");
    assert!(node["memory_bytes"].as_u64().unwrap_or(0) > 0);
    assert_eq!(nodes["meta"]["missing_nodes"], serde_json::json!([]));

    let (status, error) = http(http_addr, "GET", "/api/v1/nope", None).await;
    let error: serde_json::Value = serde_json::from_str(&error).expect("JSON");
    assert_eq!((status, error["code"].as_str()), (404, Some("NOT_FOUND")));
}

#[tokio::test]
async fn api_keys_are_required_and_a_viewer_may_only_read() {
    let hash = hash_password(b"s3cret").expect("hash");
    let broker = TestBroker::with_http(vec![
        format!("ops:admin:{hash}"),
        format!("dash:viewer:{hash}"),
    ])
    .await;
    let addr = broker.http.expect("http on");
    let (status, _) = http(addr, "GET", "/healthz", None).await;
    assert_eq!(status, 200, "the health check needs no key");
    for key in [None, Some("ops:wrong"), Some("nobody:s3cret"), Some("ops")] {
        let (status, body) = http(addr, "GET", "/api/v1/nodes", key).await;
        assert_eq!(status, 401, "{key:?}");
        assert!(body.contains("\"UNAUTHORIZED\""), "{body}");
    }
    let (status, _) = http(addr, "GET", "/metrics", Some("dash:s3cret")).await;
    assert_eq!(status, 200);
    let (status, body) = http(addr, "DELETE", "/api/v1/nodes", Some("dash:s3cret")).await;
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("\"FORBIDDEN\""));
    let (status, _) = http(addr, "GET", "/api/v1/nodes", Some("ops:s3cret")).await;
    assert_eq!(status, 200);
}

/// Any node shows the whole cluster: every node's figures (asked of the peers over the
/// routes) and its routes with their figures, round trips measured by the heartbeats.
#[tokio::test]
async fn any_node_shows_every_node_and_its_routes() {
    use common::cluster::{free_port, in_process_node};
    let (ra, rb) = (free_port(), free_port());
    let mut config_a = in_process_node("a", ra, &[]);
    config_a.http.listen = "127.0.0.1:0".to_string();
    let a = TestBroker::start(config_a).await;
    let b = TestBroker::start(in_process_node("b", rb, &[ra])).await;
    let addr = a.http.expect("http on");
    wait_until("a and b meet", || {
        a.cluster.as_ref().is_some_and(|c| c.peers() == ["b"])
            && b.cluster.as_ref().is_some_and(|c| c.peers() == ["a"])
    })
    .await;
    let mut sub = TestClient::v5(b.addr, "far").await;
    sub.subscribe("x/#", QoS::AtMostOnce).await;

    let (status, nodes) = http(addr, "GET", "/api/v1/nodes", None).await;
    assert_eq!(status, 200);
    let nodes: serde_json::Value = serde_json::from_str(&nodes).expect("JSON");
    let names: Vec<&str> = nodes["data"]
        .as_array()
        .expect("a list")
        .iter()
        .filter_map(|n| n["name"].as_str())
        .collect();
    assert_eq!(names, ["a", "b"], "{nodes}");
    assert_eq!(nodes["data"][1]["connections"], 1, "b's own figures");

    let deadline = tokio::time::Instant::now() + WAIT;
    let route = loop {
        let (_, routes) = http(addr, "GET", "/api/v1/routes", None).await;
        let routes: serde_json::Value = serde_json::from_str(&routes).expect("JSON");
        let route = routes["data"][0].clone();
        if route["rtt_us"].as_u64().unwrap_or(0) > 0 {
            break route;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no round trip measured: {routes}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    assert_eq!(route["peer"], "b");
    assert!(route["in_bytes"].as_u64().unwrap_or(0) > 0);

    let (_, matrix) = http(addr, "GET", "/api/v1/cluster/routes", None).await;
    let matrix = json(&matrix);
    let rows: Vec<(&str, &str)> = matrix["data"]
        .as_array()
        .expect("a list")
        .iter()
        .map(|n| {
            (
                n["node"].as_str().unwrap_or(""),
                n["routes"][0]["peer"].as_str().unwrap_or(""),
            )
        })
        .collect();
    assert_eq!(
        rows,
        [("a", "b"), ("b", "a")],
        "every node's routes: {matrix}"
    );

    let (_, metrics) = http(addr, "GET", "/metrics", None).await;
    assert!(
        metrics.lines().any(|l| l == "supermq_routes 1"),
        "{metrics}"
    );
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("supermq_route_in_bytes_total{peer=\"b\"}")),
        "{metrics}"
    );
}

fn json(body: &str) -> serde_json::Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"))
}

/// Clients: paged and filtered, one by id (404 when unknown), and disconnected by an
/// administrator (MQTT 5: DISCONNECT 0x98); persistent sessions whose client is away are
/// listed too.
#[tokio::test]
async fn clients_are_listed_paged_filtered_and_kicked() {
    let broker = TestBroker::with_http(Vec::new()).await;
    let addr = broker.http.expect("http on");
    let mut a = TestClient::v5(broker.addr, "a-client").await;
    let _b = TestClient::v311(broker.addr, "b-client").await;
    let (away, _) = TestClient::connect(
        broker.addr,
        supermq::protocol::ProtocolVersion::V311,
        "c-away",
        false,
    )
    .await;
    away.disconnect().await;
    a.subscribe("t/#", QoS::AtLeastOnce).await;

    let (status, page) = http(addr, "GET", "/api/v1/clients?page=1&limit=2", None).await;
    assert_eq!(status, 200);
    let page = json(&page);
    let ids: Vec<&str> = page["data"]
        .as_array()
        .expect("list")
        .iter()
        .filter_map(|c| c["clientid"].as_str())
        .collect();
    assert_eq!(ids, ["a-client", "b-client"]);
    assert_eq!(page["meta"]["count"], 3);
    assert_eq!(page["meta"]["hasnext"], true);
    let a_info = &page["data"][0];
    assert_eq!(a_info["proto_ver"], 5);
    assert_eq!(a_info["connected"], true);
    assert_eq!(a_info["subscriptions"], 1);
    assert_eq!(a_info["ip_address"], "127.0.0.1");

    let (_, offline) = http(addr, "GET", "/api/v1/clients?connected=false", None).await;
    let offline = json(&offline);
    assert_eq!(offline["meta"]["count"], 1);
    assert_eq!(offline["data"][0]["clientid"], "c-away");

    let (status, one) = http(addr, "GET", "/api/v1/clients/b-client", None).await;
    assert_eq!((status, json(&one)["proto_ver"].as_u64()), (200, Some(4)));
    let (status, none) = http(addr, "GET", "/api/v1/clients/nobody", None).await;
    assert_eq!(status, 404);
    assert_eq!(json(&none)["code"], "CLIENT_NOT_FOUND");
    let (status, _) = http(addr, "GET", "/api/v1/clients?limit=10001", None).await;
    assert_eq!(status, 400);

    let (status, _) = http(addr, "DELETE", "/api/v1/clients/a-client", None).await;
    assert_eq!(status, 204);
    a.expect_disconnect(supermq::protocol::reason::ADMINISTRATIVE_ACTION)
        .await;
}

/// Subscriptions and consumer groups, retained messages (listed, read, cleared), and
/// publishing through the API.
#[tokio::test]
async fn subscriptions_groups_retained_and_publish() {
    let broker = TestBroker::with_http(Vec::new()).await;
    let addr = broker.http.expect("http on");
    let mut sub = TestClient::v5(broker.addr, "sub").await;
    sub.subscribe("api/#", QoS::AtLeastOnce).await;
    let mut worker = TestClient::v5(broker.addr, "worker").await;
    worker
        .subscribe("$share/crew/jobs/#", QoS::AtLeastOnce)
        .await;

    let (_, subs) = http(addr, "GET", "/api/v1/subscriptions?group=crew", None).await;
    let subs = json(&subs);
    assert_eq!(subs["meta"]["count"], 1);
    assert_eq!(subs["data"][0]["topic"], "jobs/#");
    assert_eq!(subs["data"][0]["clientid"], "worker");
    let (_, groups) = http(addr, "GET", "/api/v1/groups", None).await;
    let groups = json(&groups);
    assert_eq!(groups["data"][0]["group"], "crew");
    assert_eq!(groups["data"][0]["filter"], "jobs/#");

    let body = r#"{"topic":"api/one","payload":"aGk=","payload_encoding":"base64","qos":1,"retain":true,"properties":{"user_properties":{"k":"v"},"content_type":"text/plain"}}"#;
    let (status, answer) = http_with(addr, "POST", "/api/v1/publish", None, body).await;
    assert_eq!(status, 200, "{answer}");
    assert!(json(&answer)["id"].is_string());
    let got = sub.recv_acked().await;
    assert_eq!(&got.payload[..], b"hi");
    assert_eq!(got.properties.user_properties, [("k".into(), "v".into())]);
    assert_eq!(got.properties.content_type.as_deref(), Some("text/plain"));

    let (status, answer) = http_with(
        addr,
        "POST",
        "/api/v1/publish",
        None,
        r#"{"topic":"nobody/here","payload":"x"}"#,
    )
    .await;
    assert_eq!(status, 202);
    assert_eq!(json(&answer)["reason_code"], 16);
    for bad in [
        r#"{"topic":"a/+","payload":"x"}"#,
        r#"{"topic":"$SYS/x","payload":"x"}"#,
        r#"{"topic":"a","payload":"%%","payload_encoding":"base64"}"#,
        r#"{"topic":"a","qos":3}"#,
        "not json",
    ] {
        let (status, _) = http_with(addr, "POST", "/api/v1/publish", None, bad).await;
        assert_eq!(status, 400, "{bad}");
    }

    let (_, retained) = http(addr, "GET", "/api/v1/retained", None).await;
    let retained = json(&retained);
    assert_eq!(retained["meta"]["count"], 1);
    assert_eq!(retained["data"][0]["payload"], "aGk=");
    let (status, _) = http(addr, "GET", "/api/v1/retained/api/one", None).await;
    assert_eq!(status, 200);
    let (status, _) = http(addr, "DELETE", "/api/v1/retained/api/one", None).await;
    assert_eq!(status, 204);
    assert_eq!(broker.broker.retained_count(), 0);
    let (status, _) = http(addr, "GET", "/api/v1/retained/api/one", None).await;
    assert_eq!(status, 404);
}

/// micromq's HTTP producer: the value (base64) is published at QoS 1 with its key as a user
/// property; a malformed body, a bad token or topic get micromq's status words.
#[tokio::test]
async fn the_edge_producer_publishes_with_micromqs_answers() {
    let hash = hash_password(b"tok").expect("hash");
    let broker = TestBroker::with_http(vec![format!("edge:admin:{hash}")]).await;
    let addr = broker.http.expect("http on");
    let mut sub = TestClient::v5(broker.addr, "consumer").await;
    sub.subscribe("edge/#", QoS::AtLeastOnce).await;
    let body = r#"{"topic":"edge/1","key":"k1","value":"aGk=","token":"edge:tok"}"#;
    let (status, answer) = http_with(addr, "POST", "/api/edge/product", None, body).await;
    assert_eq!(status, 200);
    assert_eq!(json(&answer)["status"], "Accepted", "{answer}");
    let got = sub.recv_acked().await;
    assert_eq!(got.qos, QoS::AtLeastOnce);
    assert_eq!(&got.payload[..], b"hi");
    assert_eq!(
        got.properties.user_properties,
        [("key".into(), "k1".into())]
    );
    for (body, status) in [
        ("{", "UnmarshalFailed"),
        (
            r#"{"topic":"edge/1","value":"aGk=","token":"edge:wrong"}"#,
            "TokenIncorrect",
        ),
        (
            r#"{"topic":"edge/+","value":"aGk=","token":"edge:tok"}"#,
            "Refused",
        ),
    ] {
        let (_, answer) = http_with(addr, "POST", "/api/edge/product", None, body).await;
        assert_eq!(json(&answer)["status"], status, "{body}: {answer}");
    }
}

/// The live viewer: messages whose topic matches the filter arrive as Server-Sent Events.
#[tokio::test]
async fn the_live_viewer_streams_matching_messages() {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    let broker = TestBroker::with_http(Vec::new()).await;
    let addr = broker.http.expect("http on");
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    stream
        .write_all(b"GET /api/v1/events?filter=ev%2F%23 HTTP/1.1\r\nHost: t\r\n\r\n")
        .await
        .expect("write");
    let mut lines = BufReader::new(stream).lines();
    let mut publisher = TestClient::v5(broker.addr, "pub").await;
    let mut seen = Vec::new();
    let deadline = tokio::time::Instant::now() + WAIT;
    let mut sent = false;
    while seen.len() < 2 {
        let line = tokio::time::timeout_at(deadline, lines.next_line())
            .await
            .expect("events in time")
            .expect("read")
            .expect("open");
        if line.starts_with("HTTP/1.1") {
            assert!(line.contains("200"), "{line}");
        }
        if line.is_empty() && !sent {
            // The headers are through: the tap is open.
            sent = true;
            publisher
                .publish("other/x", b"no", QoS::AtMostOnce, false)
                .await;
            publisher
                .publish("ev/1", b"one", QoS::AtMostOnce, false)
                .await;
            publisher
                .publish("ev/2", b"two", QoS::AtLeastOnce, false)
                .await;
        }
        if let Some(data) = line.strip_prefix("data: ")
            && let Ok(event) = serde_json::from_str::<serde_json::Value>(data)
        {
            seen.push((event["topic"].clone(), event["text"].clone()));
        }
    }
    assert_eq!(
        seen,
        [
            (serde_json::json!("ev/1"), serde_json::json!("one")),
            (serde_json::json!("ev/2"), serde_json::json!("two")),
        ]
    );
    let (status, _) = http(addr, "GET", "/api/v1/events?filter=a/%23/b", None).await;
    assert_eq!(status, 400, "an invalid filter");
}
