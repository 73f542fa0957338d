//! The store's connection, whether Redis is one node or a cluster: every call site (the
//! scripts, the heartbeat, the fleet secret) sends through it alike.

use ::redis::aio::{ConnectionLike, ConnectionManager};
use ::redis::{Cmd, Pipeline, RedisFuture, Value};

/// A connection to one Redis node, or to a Redis Cluster. Cheap to clone: clones share the
/// connection (multiplexed).
#[derive(Clone)]
pub(super) enum Conn {
    /// One node (or a proxy in front of several), reconnected in the background by the
    /// manager.
    Node(ConnectionManager),
    /// A Redis Cluster: each call goes to the primary that holds its keys' slot (every key one
    /// of our scripts touches shares one hash tag, so one slot), following `MOVED` and `ASK`.
    #[cfg(feature = "redis-cluster")]
    Cluster(::redis::cluster_async::ClusterConnection),
}

impl Conn {
    /// What the store's `Debug` shows.
    pub(super) fn kind(&self) -> &'static str {
        match self {
            Conn::Node(_) => "node",
            #[cfg(feature = "redis-cluster")]
            Conn::Cluster(_) => "cluster",
        }
    }
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Node(conn) => conn.req_packed_command(cmd),
            #[cfg(feature = "redis-cluster")]
            Conn::Cluster(conn) => conn.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Conn::Node(conn) => conn.req_packed_commands(pipeline, offset, count),
            #[cfg(feature = "redis-cluster")]
            Conn::Cluster(conn) => conn.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Node(conn) => conn.get_db(),
            #[cfg(feature = "redis-cluster")]
            Conn::Cluster(conn) => conn.get_db(),
        }
    }
}
