//! The HTTP side of a node: health, Prometheus metrics and the admin API
//! (docs/ARCHITECTURE.md, "Observability"; the README lists every endpoint).
//!
//! One listener (`http.listen`, by default 127.0.0.1:11883) serves [`router`]'s paths. The API
//! shows the whole cluster from any node: what only another node knows is asked of it over
//! the routes ([`crate::cluster::Cluster::ask_all`]), each node answering its own part through
//! the [`Inspector`] this module gives the cluster, and the nodes that did not answer within
//! [`GATHER_WAIT`] are named in the answer's `meta.missing_nodes`.
//!
//! The same listener serves the web console at `/` ([`console`]).
//!
//! At most 256 HTTP connections are open at once ([`bounded`]); past that, accepting waits.
//!
//! Who may use it: with `http.api_keys` set, every path but `/healthz` and the console's files
//! wants `Authorization: Bearer name:secret` of a key ([`keys`]), and a `viewer` key may only
//! GET. `/api/v1/events` also takes the key as `?key=name:secret`, as a browser's
//! `EventSource` cannot send headers.
//! Without keys it answers anyone, which the configuration allows on a loopback address
//! only. Errors are JSON ([`error`]).

mod api;
mod bounded;
mod console;
mod error;
mod keys;
mod metrics;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use axum::extract::{Query, Request, State};
use axum::http::{Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;

use crate::broker::Broker;
use crate::cluster::{Cluster, Inspector};
use crate::config::HttpConfig;

pub use error::ApiError;
pub use keys::{ApiKeys, KeyError, Role};

/// How long a cluster-wide answer waits for the other nodes.
pub const GATHER_WAIT: Duration = Duration::from_secs(2);

/// Why the HTTP listener could not start.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("http.listen: \"{addr}\": {source}")]
    Bind {
        addr: String,
        source: std::io::Error,
    },
    #[error("http.api_keys: {0}")]
    Keys(#[from] KeyError),
}

/// What every handler reads.
struct Shared {
    broker: Arc<Broker>,
    /// Weak: the cluster holds this (through its inspector).
    cluster: Option<Weak<Cluster>>,
    node: String,
    started: Instant,
    keys: ApiKeys,
    /// Set once shutdown began: `/healthz` says so.
    stopping: AtomicBool,
}

/// A bound HTTP listener, not yet serving.
pub struct Http {
    listener: TcpListener,
    shared: Arc<Shared>,
}

impl Http {
    /// Gives the cluster, if any, this node's answers to the API's questions — asked by the
    /// other nodes even when this one serves no HTTP — and binds `http.listen` (`None` when
    /// it is empty).
    pub async fn bind(
        config: &HttpConfig,
        node: &str,
        broker: &Arc<Broker>,
        cluster: Option<&Arc<Cluster>>,
    ) -> Result<Option<Http>, HttpError> {
        let keys = ApiKeys::parse(&config.api_keys)?;
        let shared = Arc::new(Shared {
            broker: Arc::clone(broker),
            cluster: cluster.map(Arc::downgrade),
            node: node.to_string(),
            started: Instant::now(),
            keys,
            stopping: AtomicBool::new(false),
        });
        if let Some(cluster) = cluster {
            // The cluster keeps the inspector, which keeps what it reads.
            cluster.set_inspector(Arc::new(NodeInspector(Arc::clone(&shared))));
        }
        if config.listen.is_empty() {
            return Ok(None);
        }
        let listener =
            TcpListener::bind(&config.listen)
                .await
                .map_err(|source| HttpError::Bind {
                    addr: config.listen.clone(),
                    source,
                })?;
        Ok(Some(Http { listener, shared }))
    }

    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.listener.local_addr().ok()
    }

    /// Serves until the task is dropped. Once `shutdown` completes, `/healthz` answers 503:
    /// the API goes on answering while the node shuts down (its clients leave, its routes
    /// flush), so an operator can watch it, and a load balancer stops sending clients.
    pub async fn serve(self, shutdown: impl Future<Output = ()> + Send + 'static) {
        let shared = Arc::clone(&self.shared);
        tokio::spawn(async move {
            shutdown.await;
            shared.stopping.store(true, Ordering::Release);
        });
        let app = router(Arc::clone(&self.shared));
        if let Err(error) = axum::serve(bounded::Bounded::new(self.listener), app).await {
            tracing::warn!(%error, "the HTTP listener stopped");
        }
    }
}

/// Every path the listener serves.
fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .route("/api/v1/nodes", get(api::nodes))
        .route("/api/v1/routes", get(api::routes))
        .route("/api/v1/cluster/routes", get(api::cluster_routes))
        .route("/api/v1/clients", get(api::clients))
        .route(
            "/api/v1/clients/{clientid}",
            get(api::client).delete(api::kick),
        )
        .route("/api/v1/subscriptions", get(api::subscriptions))
        .route("/api/v1/groups", get(api::groups))
        .route("/api/v1/retained", get(api::retained))
        .route(
            "/api/v1/retained/{*topic}",
            get(api::retained_one).delete(api::retained_clear),
        )
        .route("/api/v1/publish", post(api::publish))
        .route("/api/edge/product", post(api::product))
        .route("/api/v1/events", get(api::events))
        .merge(console::routes())
        .fallback(|| async { ApiError::not_found("such path") })
        .layer(middleware::from_fn_with_state(
            Arc::clone(&shared),
            authorize,
        ))
        .with_state(shared)
}

/// Lets a request through if no keys are configured, it is for `/healthz` or the console's
/// files, or it carries a key whose role allows its method.
async fn authorize(State(shared): State<Arc<Shared>>, request: Request, next: Next) -> Response {
    // The health check needs no key; micromq's producer carries its own (the token).
    let path = request.uri().path();
    let open = ["/healthz", "/api/edge/product"].contains(&path) || console::PATHS.contains(&path);
    if !shared.keys.any() || open {
        return next.run(request).await;
    }
    let bearer = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "))
        .map(str::to_string);
    // The console's live viewer is an EventSource, which cannot send headers: there (and only
    // there, as a key in a URL may end up in logs and histories) the key may be `?key=`.
    let presented = bearer.or_else(|| {
        (path == "/api/v1/events")
            .then(|| Query::<HashMap<String, String>>::try_from_uri(request.uri()).ok())
            .flatten()
            .and_then(|Query(mut query)| query.remove("key"))
    });
    let Some(presented) = presented else {
        return ApiError::unauthorized().into_response();
    };
    match shared.keys.check(&presented).await {
        None => ApiError::unauthorized().into_response(),
        Some(Role::Viewer) if request.method() != Method::GET => {
            ApiError::forbidden().into_response()
        }
        Some(_) => next.run(request).await,
    }
}

#[derive(Serialize)]
struct Health {
    status: &'static str,
}

async fn healthz(State(shared): State<Arc<Shared>>) -> Response {
    if shared.stopping.load(Ordering::Acquire) {
        let body = Health {
            status: "shutting_down",
        };
        return (StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response();
    }
    Json(Health { status: "ok" }).into_response()
}

async fn metrics(State(shared): State<Arc<Shared>>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        metrics::render(&shared),
    )
        .into_response()
}

/// One node as `/api/v1/nodes` shows it.
#[derive(Debug, Serialize, Deserialize, PartialEq)]
pub struct NodeInfo {
    pub name: String,
    pub version: String,
    pub uptime_secs: u64,
    pub connections: usize,
    pub sessions: usize,
    pub subscriptions: usize,
    pub retained: usize,
    /// The process' resident memory (0 where the system does not say).
    pub memory_bytes: u64,
    pub status: String,
}

impl Shared {
    /// The cluster this node is part of, if any.
    fn cluster(&self) -> Option<Arc<Cluster>> {
        self.cluster.as_ref().and_then(Weak::upgrade)
    }

    fn node_info(&self) -> NodeInfo {
        let broker = &self.broker;
        NodeInfo {
            name: self.node.clone(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            uptime_secs: self.started.elapsed().as_secs(),
            connections: broker.connection_count(),
            sessions: broker.session_count(),
            subscriptions: broker.subscription_count(),
            retained: broker.retained_count(),
            memory_bytes: resident_bytes(),
            status: if self.stopping.load(Ordering::Acquire) {
                "stopping"
            } else {
                "running"
            }
            .to_string(),
        }
    }
}

/// This node's answers to the other nodes' questions.
struct NodeInspector(Arc<Shared>);

impl Inspector for NodeInspector {
    fn answer(&self, asked: &str) -> Option<Vec<u8>> {
        serde_json::from_str::<api::Question>(asked)
            .ok()?
            .answer(&self.0)
    }
}

/// The process' resident set size, from /proc (Linux); 0 elsewhere.
fn resident_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|line| line.strip_prefix("VmRSS:"))
                .and_then(|rest| {
                    rest.trim()
                        .trim_end_matches("kB")
                        .trim()
                        .parse::<u64>()
                        .ok()
                })
        })
        .map_or(0, |kib| kib * 1024)
}
