//! The web console's files as the HTTP listener serves them (README, "Observability",
//! "Console"): the page at `/` with its script and stylesheet and their content types, open
//! without a key while the API wants one, and the live viewer's `?key=` (its `EventSource`
//! cannot send a header). The console's behaviour in a browser is tests/browser.

mod common;

use std::net::SocketAddr;

use common::*;
use supermq::auth::hash_password;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// An answer's status, headers (lowercase names) and body.
struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// A GET with an optional bearer key. Reads the head, then `Content-Length` bytes of body if
/// the answer has one — a stream of events has none and is never read to its end.
async fn get(addr: SocketAddr, path: &str, bearer: Option<&str>) -> Answer {
    let mut stream = tokio::net::TcpStream::connect(addr)
        .await
        .expect("http connect");
    let auth = bearer.map_or(String::new(), |key| {
        format!("Authorization: Bearer {key}\r\n")
    });
    let request = format!("GET {path} HTTP/1.1\r\nHost: test\r\n{auth}\r\n");
    stream
        .write_all(request.as_bytes())
        .await
        .expect("http write");
    let mut raw = Vec::new();
    let mut chunk = [0u8; 4096];
    let answer = tokio::time::timeout(WAIT, async {
        loop {
            let head_end = raw.windows(4).position(|w| w == b"\r\n\r\n");
            if let Some(end) = head_end {
                let head = String::from_utf8_lossy(&raw[..end]).into_owned();
                let mut lines = head.split("\r\n");
                let status = lines
                    .next()
                    .and_then(|line| line.split(' ').nth(1))
                    .and_then(|code| code.parse().ok())
                    .expect("a status line");
                let headers: Vec<(String, String)> = lines
                    .filter_map(|line| line.split_once(':'))
                    .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
                    .collect();
                let length = headers
                    .iter()
                    .find(|(n, _)| n == "content-length")
                    .and_then(|(_, v)| v.parse::<usize>().ok());
                let body_start = end + 4;
                match length {
                    Some(length) if raw.len() >= body_start + length => {
                        let body = String::from_utf8_lossy(&raw[body_start..body_start + length])
                            .into_owned();
                        return Answer {
                            status,
                            headers,
                            body,
                        };
                    }
                    None => {
                        return Answer {
                            status,
                            headers,
                            body: String::new(),
                        };
                    }
                    Some(_) => {}
                }
            }
            let n = stream.read(&mut chunk).await.expect("http read");
            assert!(n > 0, "the connection closed mid-answer");
            raw.extend_from_slice(&chunk[..n]);
        }
    })
    .await;
    answer.expect("an HTTP answer in time")
}

#[tokio::test]
async fn the_page_its_script_and_stylesheet_are_served_with_their_types() {
    let broker = TestBroker::with_http(Vec::new()).await;
    let addr = broker.http.expect("http on");
    let page = get(addr, "/", None).await;
    assert_eq!(page.status, 200);
    assert_eq!(
        page.header("content-type"),
        Some("text/html; charset=utf-8")
    );
    assert!(
        page.body.contains("<script src=\"/console/app.js\">"),
        "{}",
        page.body
    );
    assert!(
        page.body
            .contains("<link rel=\"stylesheet\" href=\"/console/style.css\">"),
        "{}",
        page.body
    );

    let script = get(addr, "/console/app.js", None).await;
    assert_eq!(script.status, 200);
    assert_eq!(
        script.header("content-type"),
        Some("text/javascript; charset=utf-8")
    );
    assert!(script.body.contains("/api/v1/nodes"));

    let style = get(addr, "/console/style.css", None).await;
    assert_eq!(style.status, 200);
    assert_eq!(
        style.header("content-type"),
        Some("text/css; charset=utf-8")
    );

    let missing = get(addr, "/console/nope.js", None).await;
    assert_eq!(missing.status, 404);
}

#[tokio::test]
async fn with_keys_the_console_loads_without_one_and_the_api_does_not() {
    let hash = hash_password(b"s3cret").expect("hash");
    let broker = TestBroker::with_http(vec![
        format!("ops:admin:{hash}"),
        format!("dash:viewer:{hash}"),
    ])
    .await;
    let addr = broker.http.expect("http on");
    for path in ["/", "/console/app.js", "/console/style.css"] {
        assert_eq!(get(addr, path, None).await.status, 200, "{path}");
    }
    assert_eq!(get(addr, "/api/v1/nodes", None).await.status, 401);
    assert_eq!(
        get(addr, "/api/v1/nodes", Some("dash:s3cret")).await.status,
        200
    );
    // Other assets' paths are not open: only the console's three files are.
    assert_eq!(get(addr, "/console/nope.js", None).await.status, 401);
}

#[tokio::test]
async fn the_live_viewer_may_send_its_key_in_the_query_and_only_it() {
    let hash = hash_password(b"s3cret").expect("hash");
    let broker = TestBroker::with_http(vec![format!("dash:viewer:{hash}")]).await;
    let addr = broker.http.expect("http on");
    let events = get(addr, "/api/v1/events?filter=%23&key=dash%3As3cret", None).await;
    assert_eq!(events.status, 200);
    assert_eq!(events.header("content-type"), Some("text/event-stream"));
    let wrong = get(addr, "/api/v1/events?filter=%23&key=dash%3Awrong", None).await;
    assert_eq!(wrong.status, 401);
    let elsewhere = get(addr, "/api/v1/nodes?key=dash%3As3cret", None).await;
    assert_eq!(elsewhere.status, 401, "?key= is for the event stream only");
}
