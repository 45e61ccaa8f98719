//! The server: listeners, broker and shutdown wired together.
//!
//! [`Server::bind`] opens every listener the configuration names (so an address in use or a
//! bad certificate is reported before anything runs), the MQTT ones after the store has been
//! read back, so that a client that can connect finds what the store held; [`Server::run`] accepts connections
//! until told to stop, then shuts down gracefully: stop accepting, tell every client (MQTT 5
//! clients get DISCONNECT 0x8B), wait a bounded time for connections to close, then let the
//! cluster's routes send what is queued on them and close, within the same bound.

use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use crate::auth::{Auth, FileError};
use crate::broker::{self, Broker};
use crate::cluster::{self, Cluster, ClusterError};
use crate::config::Config;
use crate::http::{Http, HttpError};
use crate::store::{self, Store, StoreError};
use crate::transport::{self, Kind, Listener, TransportError};

/// How long shutdown waits for connections to close and routes to flush, in all.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Why the server could not start. The message names the configuration key.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("{key}: {source}")]
    Transport {
        key: &'static str,
        source: TransportError,
    },
    #[error("{key}: \"{addr}\" is not an IP:PORT address")]
    Address { key: &'static str, addr: String },
    #[error("{0}")]
    Cluster(#[from] ClusterError),
    /// A password or ACL file that cannot be read or parsed (`auth.password_file`,
    /// `auth.acl_file`): the message names the file, line and reason.
    #[error("{0}")]
    Auth(#[from] FileError),
    #[error("{0}")]
    Http(#[from] HttpError),
    /// The store (`storage.dir`) cannot be opened: the message names the file and what to do.
    #[error("storage.dir: {0}")]
    Store(#[from] StoreError),
}

/// A bound, not yet running, server.
pub struct Server {
    broker: Arc<Broker>,
    listeners: Vec<Listener>,
    /// This node's part of the cluster, when `cluster.listen` is set: attached to the broker,
    /// accepting and dialling routes once the server runs.
    cluster: Option<cluster::Attached>,
    /// Health, metrics and the admin API, when `http.listen` is set.
    http: Option<Http>,
    /// How often the `$SYS` tree is published (`sys.interval_secs`); `None`: never.
    sys_interval: Option<Duration>,
    /// The store, when `storage.dir` is set: written to until the connections are closed.
    store: Option<Store>,
}

impl Server {
    /// Creates the broker and binds every configured listener.
    pub async fn bind(config: &Config) -> Result<Server, StartError> {
        let mqtt = &config.mqtt;
        let wanted = [
            ("mqtt.tcp", Kind::Tcp, &mqtt.tcp),
            ("mqtt.tls", Kind::Tls, &mqtt.tls),
            ("mqtt.ws", Kind::Ws, &mqtt.ws),
            ("mqtt.wss", Kind::Wss, &mqtt.wss),
        ];
        let needs_tls = wanted
            .iter()
            .any(|(_, kind, addr)| kind.needs_tls() && !addr.is_empty());
        let tls = if needs_tls {
            let tls = &config.tls;
            let client_ca = (!tls.client_ca.is_empty()).then(|| Path::new(&tls.client_ca));
            let loaded = transport::load_tls(Path::new(&tls.cert), Path::new(&tls.key), client_ca)
                .map_err(|source| StartError::Transport { key: "tls", source })?;
            Some(loaded)
        } else {
            None
        };

        let auth = Auth::load(&config.auth, config.tls.use_identity_as_username)?;
        // Opened before anything serves: a store that cannot be trusted stops the start.
        let opened = open_store(&config.storage)?;
        let cluster = if config.cluster.listen.is_empty() {
            None
        } else {
            let bound = cluster::Bound::bind(&config.cluster, &config.node.name).await?;
            tracing::info!(addr = ?bound.local_addr(), "listening for routes");
            Some(bound)
        };
        let broker = Broker::with_auth(config.limits.clone(), &config.cluster.group_strategy, auth);
        let cluster = cluster.map(|bound| bound.attach(&broker));
        // After joining the cluster, whose retained tombstone period the restore keeps.
        let store = match opened {
            Some((store, mode, contents, writer)) => {
                let opened_in = contents.opened_in;
                let started = std::time::Instant::now();
                let restored = broker.restore(store.clone(), mode, contents);
                // Only now: the restore's rewrite is the first commit, whole or not at all.
                writer.start()?;
                tracing::info!(
                    dir = %config.storage.dir,
                    sessions = restored.sessions,
                    messages = restored.messages,
                    retained = restored.retained,
                    expired_sessions = restored.expired,
                    damaged_records = restored.damaged,
                    open_ms = opened_in.as_millis(),
                    restore_ms = started.elapsed().as_millis(),
                    "store loaded"
                );
                Some(store)
            }
            None => None,
        };
        // The MQTT listeners last: a client that can connect finds everything the store held.
        let mut listeners = Vec::new();
        for (key, kind, addr) in wanted {
            if addr.is_empty() {
                continue;
            }
            let addr: SocketAddr = addr.parse().map_err(|_| StartError::Address {
                key,
                addr: addr.clone(),
            })?;
            let tls = tls.clone().filter(|_| kind.needs_tls());
            let listener = Listener::bind(kind, addr, tls)
                .await
                .map_err(|source| StartError::Transport { key, source })?;
            tracing::info!(%addr, kind = kind.name(), "listening");
            listeners.push(listener);
        }
        warn_if_open(config, &listeners, broker.auth());
        let http = Http::bind(
            &config.http,
            &config.node.name,
            &broker,
            cluster.as_ref().map(cluster::Attached::cluster),
        )
        .await?;
        if let Some(addr) = http.as_ref().and_then(Http::local_addr) {
            tracing::info!(%addr, "listening for HTTP (health, metrics, admin API)");
        }
        let sys_interval =
            (config.sys.interval_secs > 0).then(|| Duration::from_secs(config.sys.interval_secs));
        Ok(Server {
            broker,
            listeners,
            cluster,
            http,
            sys_interval,
            store,
        })
    }

    /// The cluster this node is part of, if any (for its peers and counters).
    pub fn cluster(&self) -> Option<&Arc<Cluster>> {
        self.cluster.as_ref().map(cluster::Attached::cluster)
    }

    /// The broker, for inspecting counters.
    pub fn broker(&self) -> &Arc<Broker> {
        &self.broker
    }

    /// The bound address of the HTTP listener, if on.
    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.http.as_ref().and_then(Http::local_addr)
    }

    /// The bound address of the listener of `kind` (useful when configured with port 0).
    pub fn local_addr(&self, kind: Kind) -> Option<SocketAddr> {
        self.listeners
            .iter()
            .find(|l| l.kind() == kind)
            .map(Listener::local_addr)
    }

    /// Serves until `shutdown` completes, then shuts down gracefully.
    pub async fn run(mut self, shutdown: impl Future<Output = ()>) {
        let cluster: Option<Arc<Cluster>> = self.cluster.take().map(cluster::Attached::start);
        // Made before the first connection is accepted: it turns resting on.
        let idle = tokio::spawn(broker::watch_idle_connections(Arc::clone(&self.broker)));
        let accepting: Vec<_> = self
            .listeners
            .into_iter()
            .map(|listener| tokio::spawn(accept_loop(listener, Arc::clone(&self.broker))))
            .collect();
        let keep_alive = tokio::spawn(broker::keep_alive_sweep(Arc::clone(&self.broker)));
        let expiry = tokio::spawn(broker::expire_sessions(Arc::clone(&self.broker)));
        let stopping = tokio::sync::watch::channel(false).0;
        let http = self.http.take().map(|http| {
            let mut stop = stopping.subscribe();
            tokio::spawn(http.serve(async move {
                let _ = stop.wait_for(|s| *s).await;
            }))
        });
        let sys = self
            .sys_interval
            .map(|every| tokio::spawn(broker::publish_sys_tree(Arc::clone(&self.broker), every)));
        shutdown.await;
        tracing::info!("shutting down");
        // The health check says so from now on; the API answers until the end.
        stopping.send_replace(true);
        for task in accepting.iter().chain(&sys) {
            task.abort();
        }
        keep_alive.abort();
        expiry.abort();
        self.broker.shutdown();
        let deadline = tokio::time::Instant::now() + SHUTDOWN_GRACE;
        while self.broker.connection_count() > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // After the clients: their last publishes and unsubscribes are queued on the routes.
        if let Some(cluster) = cluster {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            cluster.shutdown(left).await;
        }
        // Last: what the closing connections changed (sessions left, Wills kept) is written;
        // what is dropped after this (the broker's memory) is not deleted from the disk.
        if let Some(store) = self.store.take() {
            let left = deadline
                .saturating_duration_since(tokio::time::Instant::now())
                .max(Duration::from_secs(1));
            tokio::task::spawn_blocking(move || store.close(left))
                .await
                .ok();
        }
        if let Some(http) = http {
            http.abort();
        }
        // Last, as the connections that rest until then need it to see their client.
        idle.abort();
        tracing::info!(open = self.broker.connection_count(), "stopped");
    }
}

/// Opens the store of `[storage]`, if it names a directory.
type Opened = (Store, store::Mode, store::Contents, store::Writer);

fn open_store(storage: &crate::config::StorageConfig) -> Result<Option<Opened>, StoreError> {
    if storage.dir.is_empty() {
        return Ok(None);
    }
    let mode = match storage.durability.as_str() {
        "batched" => store::Mode::Batched(Duration::from_millis(storage.flush_ms)),
        _ => store::Mode::Immediate,
    };
    let (store, contents, writer) = Store::open(Path::new(&storage.dir), mode)?;
    Ok(Some((store, mode, contents, writer)))
}

/// Says once, at start-up, that anyone who can reach a listener may connect: anonymous
/// clients are allowed, no password is checked, and a listener that asks for no client
/// certificate is on more than loopback.
fn warn_if_open(config: &Config, listeners: &[Listener], auth: &Auth) {
    // A TLS listener that requires client certificates lets in only those the CA signed.
    let certified = !config.tls.client_ca.is_empty();
    let guarded = |listener: &&Listener| {
        listener.local_addr().ip().is_loopback() || (certified && listener.kind().needs_tls())
    };
    let exposed = listeners.iter().find(|listener| !guarded(listener));
    if let Some(listener) = exposed
        && auth.allows_anonymous()
        && !auth.checks_passwords()
    {
        tracing::warn!(
            addr = %listener.local_addr(),
            "the broker is open to anyone who can reach it: anonymous clients are allowed and no password file is set (see [auth] in the README's Security section)"
        );
    }
}

async fn accept_loop(listener: Listener, broker: Arc<Broker>) {
    let max_message = usize::try_from(broker.limits().max_packet_size).unwrap_or(usize::MAX);
    // A refused plain TCP socket can still read its CONNECT and be told why; for the other
    // kinds that would take the very handshake the refusal is there to spare.
    let answerable = listener.kind() == Kind::Tcp;
    loop {
        match listener.accept().await {
            Ok((pending, peer)) => {
                let Some((count, mut arrival)) = broker.admit(peer, answerable) else {
                    continue;
                };
                let pending = match pending.into_plain() {
                    Ok(tcp) => {
                        // No handshake: the task is the connection and nothing more, as a
                        // task keeps room for all it holds for the connection's whole life.
                        tokio::spawn(broker::serve(count, tcp, arrival));
                        continue;
                    }
                    Err(pending) => pending,
                };
                // Boxed, and made before the task: the TLS and WebSocket handshakes are large
                // state machines.
                let handshake = Box::pin(pending.handshake(max_message, arrival.read_budget()));
                tokio::spawn(async move {
                    // Read from the arrival, not captured: a captured value is kept for the
                    // connection's whole life.
                    let deadline = arrival.deadline();
                    let stream = tokio::select! {
                        done = tokio::time::timeout_at(deadline, handshake) => match done {
                            Ok(Ok((stream, certificate_name))) => {
                                arrival.set_certificate_name(certificate_name);
                                stream
                            }
                            Ok(Err(error)) => return arrival.handshake_failed(&error),
                            Err(_) => return arrival.handshake_timed_out(),
                        },
                        // Evicted to make room for a newer socket, or shutting down.
                        () = arrival.dismissed() => return,
                    };
                    broker::serve(count, stream, arrival).await;
                });
            }
            Err(error) => {
                // Out of file descriptors and the like: back off instead of spinning.
                tracing::warn!(%error, kind = listener.kind().name(), "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}
