//! The admin API under `/api/v1/` (README, "Observability"; the paths and shapes are EMQX's
//! where EMQX has them).
//!
//! Lists are paged (`?page=1&limit=100`, limit at most [`MAX_LIMIT`]) and answered as
//! `{"data": [...], "meta": {"page", "limit", "count", "hasnext", "missing_nodes"}}`, `count`
//! being the number of matches over the cluster. A cluster-wide list is gathered from every
//! node ([`Question`]): each filters and sorts its own part and sends the first
//! `page × limit` of it with its count, and the asking node merges them, so a deep page costs
//! the nodes more than a shallow one, and no node ever sends more than [`MAX_GATHERED`] items.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use base64ct::{Base64, Encoding};
use futures_util::Stream;
use serde::{Deserialize, Serialize};

use crate::broker::{ClientInfo, MAX_TAPS, SubscriptionInfo, Tapped, is_sys_topic, within_limits};
use crate::cluster::RouteFigures;
use crate::protocol::{Properties, PropertyValues, Publish, QoS, topic};

use super::{ApiError, GATHER_WAIT, NodeInfo, Shared};

/// The largest page.
pub const MAX_LIMIT: usize = 10_000;

/// The most items one node sends for one list.
const MAX_GATHERED: usize = 50_000;

/// A list answer.
#[derive(Serialize)]
pub struct Listed<T> {
    data: Vec<T>,
    meta: Meta,
}

#[derive(Serialize, Default)]
struct Meta {
    #[serde(skip_serializing_if = "Option::is_none")]
    page: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    limit: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    count: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    hasnext: Option<bool>,
    /// Nodes that did not answer in time.
    missing_nodes: Vec<String>,
}

/// What the nodes ask each other for the API (ASK frames carry it as JSON).
#[derive(Serialize, Deserialize, Debug)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Question {
    Nodes,
    Routes,
    Clients {
        filter: ClientFilter,
        first: usize,
    },
    Client {
        clientid: String,
    },
    Kick {
        clientid: String,
    },
    Subscriptions {
        filter: SubscriptionFilter,
        first: usize,
    },
}

/// A node's part of a list: its first items (sorted) and how many it has in all.
#[derive(Serialize, Deserialize)]
struct Part<T> {
    node: String,
    count: usize,
    items: Vec<T>,
}

impl Question {
    /// This node's answer, as JSON.
    pub(super) fn answer(&self, shared: &Shared) -> Option<Vec<u8>> {
        match self {
            Question::Nodes => serde_json::to_vec(&shared.node_info()).ok(),
            Question::Routes => serde_json::to_vec(&NodeRoutes {
                node: shared.node.clone(),
                routes: shared
                    .cluster()
                    .map(|cluster| cluster.route_figures())
                    .unwrap_or_default(),
            })
            .ok(),
            Question::Clients { filter, first } => {
                let mut items: Vec<ClientInfo> = shared
                    .broker
                    .client_list()
                    .into_iter()
                    .filter(|c| filter.matches(c))
                    .collect();
                part(&mut items, *first, |c| c.clientid.clone(), &shared.node)
            }
            Question::Client { clientid } => {
                let found = shared.broker.client(clientid).map(|mut c| {
                    c.node.clone_from(&shared.node);
                    c
                });
                serde_json::to_vec(&found).ok()
            }
            Question::Kick { clientid } => serde_json::to_vec(&shared.broker.kick(clientid)).ok(),
            Question::Subscriptions { filter, first } => {
                let mut items: Vec<SubscriptionInfo> = shared
                    .broker
                    .subscription_list()
                    .into_iter()
                    .filter(|s| filter.matches(s))
                    .collect();
                part(
                    &mut items,
                    *first,
                    |s| format!("{}\u{0}{}", s.clientid, s.topic),
                    &shared.node,
                )
            }
        }
    }
}

/// Items that carry the node they are on.
trait OnNode {
    fn set_node(&mut self, node: &str);
}

impl OnNode for ClientInfo {
    fn set_node(&mut self, node: &str) {
        self.node = node.to_string();
    }
}

impl OnNode for SubscriptionInfo {
    fn set_node(&mut self, node: &str) {
        self.node = node.to_string();
    }
}

/// Sorts `items` by `key`, keeps the first `first`, and encodes them with the count.
fn part<T: Serialize + OnNode>(
    items: &mut Vec<T>,
    first: usize,
    key: impl Fn(&T) -> String,
    node: &str,
) -> Option<Vec<u8>> {
    let count = items.len();
    items.sort_by_cached_key(|item| key(item));
    items.truncate(first.min(MAX_GATHERED));
    for item in items.iter_mut() {
        item.set_node(node);
    }
    serde_json::to_vec(&Part {
        node: node.to_string(),
        count,
        items: std::mem::take(items),
    })
    .ok()
}

/// `?page=&limit=`.
#[derive(Deserialize)]
pub struct Paging {
    page: Option<usize>,
    limit: Option<usize>,
}

impl Paging {
    fn checked(&self) -> Result<(usize, usize), ApiError> {
        let page = self.page.unwrap_or(1);
        let limit = self.limit.unwrap_or(100);
        if page == 0 || limit == 0 || limit > MAX_LIMIT {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "BAD_REQUEST",
                format!("page starts at 1, and limit is 1 to {MAX_LIMIT}"),
            ));
        }
        Ok((page, limit))
    }
}

#[derive(Serialize, Deserialize, Debug, Default)]
pub struct ClientFilter {
    clientid: Option<String>,
    username: Option<String>,
    node: Option<String>,
    connected: Option<bool>,
}

impl ClientFilter {
    fn matches(&self, c: &ClientInfo) -> bool {
        self.clientid.as_ref().is_none_or(|id| *id == c.clientid)
            && self
                .username
                .as_ref()
                .is_none_or(|u| c.username.as_ref() == Some(u))
            && self
                .connected
                .is_none_or(|connected| connected == c.connected)
    }
}

#[derive(Serialize, Deserialize, Debug, Default)]
pub struct SubscriptionFilter {
    clientid: Option<String>,
    topic: Option<String>,
    group: Option<String>,
}

impl SubscriptionFilter {
    fn matches(&self, s: &SubscriptionInfo) -> bool {
        self.clientid.as_ref().is_none_or(|id| *id == s.clientid)
            && self.topic.as_ref().is_none_or(|t| *t == s.topic)
            && self
                .group
                .as_ref()
                .is_none_or(|g| s.group.as_ref() == Some(g))
    }
}

/// Asks every node `question` (this one directly when alone) and decodes the answers.
async fn gather<T: for<'de> Deserialize<'de>>(
    shared: &Shared,
    question: &Question,
) -> (Vec<T>, Vec<String>) {
    let Some(cluster) = shared.cluster() else {
        let answer = question.answer(shared);
        let decoded = answer.and_then(|body| serde_json::from_slice(&body).ok());
        return (decoded.into_iter().collect(), Vec::new());
    };
    let asked = serde_json::to_string(question).unwrap_or_default();
    let gathered = cluster.ask_all(&asked, GATHER_WAIT).await;
    let answers = gathered
        .answers
        .iter()
        .filter_map(|(_, body)| serde_json::from_slice(body).ok())
        .collect();
    (answers, gathered.missing)
}

/// Merges the nodes' parts of a list and cuts the page out of it.
fn page_of<T>(
    parts: Vec<Part<T>>,
    missing: Vec<String>,
    (page, limit): (usize, usize),
    key: impl Fn(&T) -> String,
) -> Listed<T> {
    let count = parts.iter().map(|p| p.count).sum::<usize>();
    let mut all: Vec<T> = parts.into_iter().flat_map(|p| p.items).collect();
    all.sort_by_cached_key(|item| key(item));
    let start = (page - 1).saturating_mul(limit);
    let data: Vec<T> = all.into_iter().skip(start).take(limit).collect();
    Listed {
        meta: Meta {
            page: Some(page),
            limit: Some(limit),
            count: Some(count),
            hasnext: Some(start + data.len() < count),
            missing_nodes: missing,
        },
        data,
    }
}

pub async fn nodes(State(shared): State<Arc<Shared>>) -> Json<Listed<NodeInfo>> {
    let (mut data, missing): (Vec<NodeInfo>, _) = gather(&shared, &Question::Nodes).await;
    data.sort_by(|a, b| a.name.cmp(&b.name));
    Json(Listed {
        data,
        meta: Meta {
            missing_nodes: missing,
            ..Meta::default()
        },
    })
}

pub async fn routes(State(shared): State<Arc<Shared>>) -> Json<Listed<RouteFigures>> {
    let data = shared
        .cluster()
        .map(|cluster| cluster.route_figures())
        .unwrap_or_default();
    Json(Listed {
        data,
        meta: Meta::default(),
    })
}

/// One node's routes, for the cluster's route matrix.
#[derive(Serialize, Deserialize)]
pub struct NodeRoutes {
    node: String,
    routes: Vec<RouteFigures>,
}

/// Every node's routes (`/api/v1/routes` is this node's): what the console's route matrix
/// shows, a row per node.
pub async fn cluster_routes(State(shared): State<Arc<Shared>>) -> Json<Listed<NodeRoutes>> {
    let (mut data, missing): (Vec<NodeRoutes>, _) = gather(&shared, &Question::Routes).await;
    data.sort_by(|a, b| a.node.cmp(&b.node));
    Json(Listed {
        data,
        meta: Meta {
            missing_nodes: missing,
            ..Meta::default()
        },
    })
}

pub async fn clients(
    State(shared): State<Arc<Shared>>,
    Query(paging): Query<Paging>,
    Query(filter): Query<ClientFilter>,
) -> Result<Json<Listed<ClientInfo>>, ApiError> {
    let (page, limit) = paging.checked()?;
    let node = filter.node.clone();
    let question = Question::Clients {
        filter,
        first: page.saturating_mul(limit),
    };
    let (mut parts, missing): (Vec<Part<ClientInfo>>, _) = gather(&shared, &question).await;
    if let Some(node) = &node {
        parts.retain(|p| p.node == *node);
    }
    Ok(Json(page_of(parts, missing, (page, limit), |c| {
        c.clientid.clone()
    })))
}

pub async fn client(
    State(shared): State<Arc<Shared>>,
    Path(clientid): Path<String>,
) -> Result<Json<ClientInfo>, ApiError> {
    let (found, _): (Vec<Option<ClientInfo>>, _) =
        gather(&shared, &Question::Client { clientid }).await;
    // A session lives on one node; a connected one wins over a copy left elsewhere.
    found
        .into_iter()
        .flatten()
        .max_by_key(|c| (c.connected, c.connected_at))
        .map(Json)
        .ok_or_else(client_not_found)
}

pub async fn kick(
    State(shared): State<Arc<Shared>>,
    Path(clientid): Path<String>,
) -> Result<StatusCode, ApiError> {
    let (kicked, _): (Vec<bool>, _) = gather(&shared, &Question::Kick { clientid }).await;
    if kicked.contains(&true) {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(client_not_found())
    }
}

fn client_not_found() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "CLIENT_NOT_FOUND",
        "no connected client or session with this client id on any node that answered",
    )
}

pub async fn subscriptions(
    State(shared): State<Arc<Shared>>,
    Query(paging): Query<Paging>,
    Query(filter): Query<SubscriptionFilter>,
) -> Result<Json<Listed<SubscriptionInfo>>, ApiError> {
    let (page, limit) = paging.checked()?;
    let question = Question::Subscriptions {
        filter,
        first: page.saturating_mul(limit),
    };
    let (parts, missing) = gather(&shared, &question).await;
    Ok(Json(page_of(
        parts,
        missing,
        (page, limit),
        |s: &SubscriptionInfo| format!("{}\u{0}{}\u{0}{}", s.clientid, s.topic, s.node),
    )))
}

/// One consumer group: its filter and how many members each node has.
#[derive(Serialize)]
pub struct GroupInfo {
    group: String,
    filter: String,
    members: BTreeMap<String, usize>,
}

pub async fn groups(State(shared): State<Arc<Shared>>) -> Json<Listed<GroupInfo>> {
    let question = Question::Subscriptions {
        filter: SubscriptionFilter::default(),
        first: MAX_GATHERED,
    };
    let (parts, missing): (Vec<Part<SubscriptionInfo>>, _) = gather(&shared, &question).await;
    let mut groups: BTreeMap<(String, String), BTreeMap<String, usize>> = BTreeMap::new();
    for s in parts.into_iter().flat_map(|p| p.items) {
        if let Some(group) = s.group {
            *groups
                .entry((group, s.topic))
                .or_default()
                .entry(s.node)
                .or_default() += 1;
        }
    }
    Json(Listed {
        data: groups
            .into_iter()
            .map(|((group, filter), members)| GroupInfo {
                group,
                filter,
                members,
            })
            .collect(),
        meta: Meta {
            missing_nodes: missing,
            ..Meta::default()
        },
    })
}

/// A retained message as the API shows it.
#[derive(Serialize)]
pub struct Retained {
    topic: String,
    /// Standard base64.
    payload: String,
    qos: u8,
}

pub async fn retained(
    State(shared): State<Arc<Shared>>,
    Query(paging): Query<Paging>,
) -> Result<Json<Listed<Retained>>, ApiError> {
    let (page, limit) = paging.checked()?;
    // Every node holds every retained message: this node's store is the cluster's.
    let all = shared.broker.retained_list();
    let count = all.len();
    let start = (page - 1).saturating_mul(limit);
    let data: Vec<Retained> = all
        .into_iter()
        .skip(start)
        .take(limit)
        .map(|m| Retained {
            topic: m.topic,
            payload: Base64::encode_string(&m.payload),
            qos: m.qos as u8,
        })
        .collect();
    Ok(Json(Listed {
        meta: Meta {
            page: Some(page),
            limit: Some(limit),
            count: Some(count),
            hasnext: Some(start + data.len() < count),
            missing_nodes: Vec::new(),
        },
        data,
    }))
}

pub async fn retained_one(
    State(shared): State<Arc<Shared>>,
    Path(name): Path<String>,
) -> Result<Json<Retained>, ApiError> {
    shared
        .broker
        .retained_list()
        .into_iter()
        .find(|m| m.topic == name)
        .map(|m| {
            Json(Retained {
                topic: m.topic,
                payload: Base64::encode_string(&m.payload),
                qos: m.qos as u8,
            })
        })
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "TOPIC_NOT_FOUND",
                "no retained message on this topic",
            )
        })
}

/// Clears a retained message everywhere: an empty retained publish, which goes to every node
/// with a fresh version.
pub async fn retained_clear(
    State(shared): State<Arc<Shared>>,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    let publish = Publish {
        retain: true,
        topic: checked_topic(&shared, name)?,
        ..Publish::default()
    };
    shared.broker.publish_as_broker(publish);
    Ok(StatusCode::NO_CONTENT)
}

/// The body of `POST /api/v1/publish`.
#[derive(Deserialize)]
pub struct PublishRequest {
    topic: String,
    #[serde(default)]
    payload: String,
    /// `plain` (the default) or `base64`.
    #[serde(default)]
    payload_encoding: Option<String>,
    #[serde(default)]
    qos: u8,
    #[serde(default)]
    retain: bool,
    #[serde(default)]
    properties: PublishProperties,
}

/// The MQTT 5 properties a publish may carry, by name.
#[derive(Deserialize, Default)]
pub struct PublishProperties {
    payload_format_indicator: Option<u8>,
    message_expiry_interval: Option<u32>,
    content_type: Option<String>,
    response_topic: Option<String>,
    /// Base64.
    correlation_data: Option<String>,
    #[serde(default)]
    user_properties: BTreeMap<String, String>,
}

#[derive(Serialize)]
struct Published {
    id: String,
}

#[derive(Serialize)]
struct NotDelivered {
    reason_code: u8,
    message: &'static str,
}

pub async fn publish(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    match publish_request(&shared, &body) {
        Err(error) => error.into_response(),
        Ok(publish) => {
            let id = format!("{:016x}", rand::random::<u64>());
            if shared.broker.publish_as_broker(publish) > 0 {
                Json(Published { id }).into_response()
            } else {
                let body = NotDelivered {
                    reason_code: 16,
                    message: "no_matching_subscribers",
                };
                (StatusCode::ACCEPTED, Json(body)).into_response()
            }
        }
    }
}

fn publish_request(shared: &Shared, body: &[u8]) -> Result<Publish, ApiError> {
    let bad = |why: String| ApiError::new(StatusCode::BAD_REQUEST, "BAD_REQUEST", why);
    let request: PublishRequest =
        serde_json::from_slice(body).map_err(|e| bad(format!("malformed JSON body: {e}")))?;
    let payload = match request.payload_encoding.as_deref() {
        None | Some("plain") => request.payload.into_bytes(),
        Some("base64") => Base64::decode_vec(&request.payload)
            .map_err(|_| bad("payload is not valid base64".into()))?,
        Some(other) => {
            return Err(bad(format!(
                "payload_encoding {other:?} is neither plain nor base64"
            )));
        }
    };
    let qos = QoS::from_u8(request.qos).ok_or_else(|| bad("qos is 0, 1 or 2".into()))?;
    let p = request.properties;
    let correlation_data = match p.correlation_data {
        Some(data) => Some(
            Base64::decode_vec(&data)
                .map_err(|_| bad("properties.correlation_data is not valid base64".into()))?
                .into(),
        ),
        None => None,
    };
    let properties = PropertyValues {
        payload_format_indicator: p.payload_format_indicator,
        message_expiry_interval: p.message_expiry_interval,
        content_type: p.content_type,
        response_topic: p.response_topic,
        correlation_data,
        user_properties: p.user_properties.into_iter().collect(),
        ..PropertyValues::default()
    }
    .into();
    if payload.len() > shared.broker.limits().max_packet_size as usize {
        return Err(bad("payload larger than limits.max_packet_size".into()));
    }
    Ok(Publish {
        qos,
        retain: request.retain,
        topic: checked_topic(shared, request.topic)?,
        packet_id: u16::from(qos != QoS::AtMostOnce),
        properties,
        payload: payload.into(),
        ..Publish::default()
    })
}

/// `?filter=` of `/api/v1/events`.
#[derive(Deserialize)]
pub struct EventsQuery {
    filter: String,
}

/// A message as the live viewer gets it.
#[derive(Serialize)]
struct Seen<'a> {
    topic: &'a str,
    /// Standard base64.
    payload: String,
    /// The payload as text, when it is UTF-8.
    text: Option<&'a str>,
    qos: u8,
    retain: bool,
}

/// Server-Sent Events: the messages passing through this node whose topic matches `filter`
/// (`broker::taps`): `event: message` with the message as JSON, and `event: dropped` with how
/// many were lost when the reader lagged.
pub async fn events(
    State(shared): State<Arc<Shared>>,
    Query(query): Query<EventsQuery>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    if !topic::valid_filter(&query.filter) {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "BAD_FILTER",
            "filter is not an MQTT topic filter",
        ));
    }
    let reader = shared.broker.tap(&query.filter).ok_or_else(|| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "TOO_MANY_VIEWERS",
            format!("{MAX_TAPS} viewers are open on this node"),
        )
    })?;
    let stream = futures_util::stream::unfold(reader, |mut reader| async move {
        let event = match reader.next().await? {
            Tapped::Message {
                topic,
                payload,
                qos,
                retain,
            } => {
                let seen = Seen {
                    topic: &topic,
                    payload: Base64::encode_string(&payload),
                    text: std::str::from_utf8(&payload).ok(),
                    qos: qos as u8,
                    retain,
                };
                Event::default()
                    .event("message")
                    .data(serde_json::to_string(&seen).unwrap_or_default())
            }
            Tapped::Dropped(lost) => Event::default().event("dropped").data(lost.to_string()),
        };
        Some((Ok(event), reader))
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}

/// The body of micromq's HTTP producer, `POST /api/edge/product`.
#[derive(Deserialize)]
pub struct Product {
    topic: String,
    #[serde(default)]
    key: String,
    /// Base64.
    #[serde(default)]
    value: String,
    #[serde(default)]
    token: String,
}

/// Its answer: micromq's fields and status words.
#[derive(Serialize)]
pub struct ProductAnswer {
    status: &'static str,
    offset: u64,
    /// Milliseconds the broker took.
    response_time: f64,
    message: String,
}

/// micromq's HTTP producer: publishes `value` (base64) on `topic` at QoS 1, with `key` as the
/// user property `key`. It answers 200 with a status word in every case, as micromq does; the
/// token is checked against the API keys (an admin's) when keys are configured.
pub async fn product(State(shared): State<Arc<Shared>>, body: Bytes) -> Json<ProductAnswer> {
    static OFFSET: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let started = std::time::Instant::now();
    let answer = |status, offset, message: String| {
        Json(ProductAnswer {
            status,
            offset,
            response_time: started.elapsed().as_secs_f64() * 1000.0,
            message,
        })
    };
    let Ok(product) = serde_json::from_slice::<Product>(&body) else {
        return answer(
            "UnmarshalFailed",
            0,
            "the body is not a product JSON".into(),
        );
    };
    if shared.keys.any() && shared.keys.check(&product.token).await != Some(super::Role::Admin) {
        return answer(
            "TokenIncorrect",
            0,
            "the token is not an admin API key".into(),
        );
    }
    let Ok(payload) = Base64::decode_vec(&product.value) else {
        return answer("UnmarshalFailed", 0, "value is not base64".into());
    };
    let topic = match checked_topic(&shared, product.topic) {
        Ok(topic) => topic,
        Err(_) => return answer("Refused", 0, "not a topic a client may publish to".into()),
    };
    let mut properties = Properties::default();
    if !product.key.is_empty() {
        properties.user_properties.push(("key".into(), product.key));
    }
    shared.broker.publish_as_broker(Publish {
        qos: QoS::AtLeastOnce,
        topic,
        packet_id: 1,
        properties,
        payload: payload.into(),
        ..Publish::default()
    });
    let offset = OFFSET.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    answer("Accepted", offset, String::new())
}

/// A topic a client could publish to: valid, within the limits, not `$SYS`.
fn checked_topic(shared: &Shared, name: String) -> Result<String, ApiError> {
    if !topic::valid_name(&name)
        || !within_limits(&name, shared.broker.limits())
        || is_sys_topic(&name)
    {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "BAD_TOPIC",
            "not a topic a client may publish to (empty, wildcards, over the limits, or $SYS)",
        ));
    }
    Ok(name)
}
