//! The MQTT wire protocol: packet types and our own strict codec (docs/ARCHITECTURE.md, Layers).
//!
//! - [`packet`] and [`properties`]: the packets as Rust values, for MQTT 3.1, 3.1.1 and 5.0;
//! - [`decode()`]: bytes to packets, rejecting everything the specification calls malformed;
//! - [`encode()`]: packets to bytes;
//! - [`topic`]: topic name and filter rules, and filter matching;
//! - [`reason`]: reason codes.
//!
//! The codec is pure: no I/O, no allocation beyond the decoded values, no panics on any input.

mod decode;
mod encode;
mod error;
pub mod packet;
pub mod properties;
pub mod reason;
pub mod topic;

pub use decode::{connect_version, decode, packet_size};
pub use encode::{Delivered, TopicAlias, encode, encode_publish};
pub use error::{DecodeError, EncodeError};
pub use packet::*;
pub use properties::{Properties, PropertyValues};
