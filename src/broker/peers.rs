//! The other nodes of a cluster, as the broker sees them: the interface the broker defines and
//! the cluster implements (docs/ARCHITECTURE.md, "Layers").
//!
//! The broker never names the cluster: it holds an optional `Arc<dyn Peers>` and tells it
//! what the other nodes need to know (local interest changed, a client connected, a message
//! to forward), and asks it one thing back: how many members each consumer group matching a
//! topic has on each peer, connected and offline. Choosing the member that gets a group's message — here or on a
//! peer — is the broker's job alone ([`super::groups::choose`]), so every path honours
//! `cluster.group_strategy`. A standalone broker has no `Peers` and pays one atomic load per
//! publish and subscription change for the possibility.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use super::flow::Waiter;
use super::groups::GroupRef;
use super::handover::Fetched;
use super::message::Message;

/// A peer node, as the cluster numbers it (stable while the node runs and its route is up
/// or in its grace period).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PeerId(pub u64);

/// A consumer group that has members on other nodes: who has how many.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteGroup {
    pub group: GroupRef,
    /// The peers with members of the group...
    pub peers: Vec<PeerId>,
    /// ...how many of them each has connected: a peer with three gets three times the share...
    pub online: Vec<u32>,
    /// ...and how many offline (persistent sessions whose clients are away), which get the
    /// group's messages only when no member is connected anywhere.
    pub offline: Vec<u32>,
}

/// A group's message goes to this peer, which gives it to one of its members.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assigned {
    pub peer: PeerId,
    pub group: GroupRef,
}

/// What the broker tells the other nodes, and asks of them. Every call returns at once: a
/// peer that cannot take a message now has it queued or dropped (and counted) by the
/// implementation, never waited for.
pub trait Peers: Send + Sync {
    /// A local filter's subscriber count went 0 → 1 (`present`) or 1 → 0. Called under the
    /// router's write lock, so changes reach the peers in the order they happened.
    fn local_interest(&self, filter: &str, present: bool);

    /// A local consumer group's members changed: `online` connected and `offline` waiting in
    /// persistent sessions (both 0: the group is gone here). Called under the router's write
    /// lock.
    fn local_group(&self, group: &GroupRef, online: usize, offline: usize);

    /// The groups with members on other nodes whose filters match `topic`.
    fn remote_groups(&self, topic: &str) -> Vec<RemoteGroup>;

    /// Sends a message a local client published to every peer with matching plain interest
    /// and to the peers `assigned` its groups, once per peer; a retained message goes to
    /// every peer, so each node's retained store stays complete. Returns how many peers were
    /// sent it for delivery. `publisher` is the local client that published it, if one did:
    /// at QoS 0 it is held back while a peer it sends to is behind, and a QoS 1/2 copy for
    /// delivery holds its ack until the peer has taken it ([`Waiter::forwarded`]), unless the
    /// cluster acknowledges once a message is queued here (`cluster.acks = "local"`).
    /// Never given a `$SYS` message: a node's tree is its own (`super::sys`).
    fn forward(
        &self,
        message: &Message,
        assigned: &[Assigned],
        publisher: Option<&Arc<Waiter>>,
    ) -> usize;

    /// Sends a group message whose members on this node are gone to `peer`, marked so it goes
    /// no further. False if it could not be sent.
    fn redirect(&self, message: &Message, group: &GroupRef, peer: PeerId) -> bool;

    /// A client connected here with clean start = 0 and has no session here: asks the other
    /// nodes for its session, which the one holding it hands over
    /// ([`super::Broker::export_session`]). The future ends within 10 s. `None` when there
    /// is no node to ask.
    fn fetch_session(
        &self,
        client_id: &str,
        username: Option<&str>,
    ) -> Option<Pin<Box<dyn Future<Output = Fetched> + Send>>>;

    /// A local client connected at `connected_at` (microseconds since the Unix epoch): other
    /// nodes close their connection with the same id, if it is the older of the two, and
    /// with `clean_start` discard their session of it
    /// ([`super::Broker::client_connected_elsewhere`]).
    fn client_connected(&self, client_id: &str, connected_at: u64, clean_start: bool);
}
