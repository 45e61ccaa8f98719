//! A small async MQTT client on our own codec, for the `supermq pub`, `sub`, `bench` and
//! `health` tools. It is a module of the `supermq` binary, not of the broker library: it uses
//! the library's codec and transports like any other user would.
//!
//! - [`dial`](dial()) opens the byte stream: TCP, TLS, WebSocket or secure WebSocket, with the
//!   WebSocket adapter the broker side uses too;
//! - [`tls`] loads what the client trusts and presents;
//! - [`Client`] speaks MQTT 3.1.1 or 5.0 over it: CONNECT/CONNACK, SUBSCRIBE, QoS 0/1/2
//!   publications with an in-flight window, incoming messages, keep alive;
//! - [`ClientError`] says which step failed, in terms a user can act on.

mod connection;
mod dial;
mod error;
mod options;
mod tls;

pub use connection::{Client, Parts};
pub use dial::{Endpoint, dial};
pub use error::ClientError;
pub use options::ConnectOptions;
pub use tls::{TlsOptions, client_config};
