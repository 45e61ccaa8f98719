//! Listeners: TCP, TLS, WebSocket and secure WebSocket.
//!
//! Each listener accepts sockets and turns them into a [`BoxStream`], a plain byte stream, so one
//! connection handler in the broker serves all four transports.
