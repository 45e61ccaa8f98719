//! supermq: an MQTT 3.1 / 3.1.1 / 5.0 broker.
//!
//! The crate is laid out the way a message travels:
//! - [`transport`] accepts TCP, TLS and WebSocket connections and hands each one over as a byte
//!   stream;
//! - [`protocol`] turns those bytes into MQTT packets and back (our own strict codec);
//! - [`auth`] holds the password and ACL rules that admit clients and guard their topics;
//! - [`broker`] runs the sessions, the subscription index, retained messages and wills;
//! - [`store`] keeps what the broker must not lose on disk, with group commit (redb);
//! - [`cluster`] joins brokers into a full mesh over routes;
//! - [`http`] shows a node, and the cluster from it: health, Prometheus metrics, the admin API;
//! - [`server`] wires listeners, broker and shutdown together, and [`config`] says how.
//!
//! The library is the broker and nothing else. The `supermq` binary lives beside it in `cli/`:
//! `cli/main.rs` is a thin command line around [`server::Server`], and the binary's own modules
//! `cli/client/` (a small MQTT client on this crate's codec and transports) and `cli/tools/`
//! (`supermq pub`, `sub`, `bench`, `health`, `passwd`) use the library like any other user.
//! Integration tests start the same server in-process.

pub mod auth;
pub mod broker;
pub mod cluster;
pub mod config;
pub mod http;
pub mod protocol;
pub mod server;
pub mod store;
pub mod transport;
