//! The single-node broker.
