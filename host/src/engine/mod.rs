//! Redis-protocol dialects (Valkey, Redis 7, Dragonfly) over RESP.
//!
//! - [`info`]: pure parsers of `INFO replication|persistence|server`, `keyspace`, `ROLE`.
//! - [`Dialect`]: which command does what per engine (Dragonfly is experimental).
//! - [`handover`]: the steps of a planned handover per dialect, as data.
//! - [`clients`]: closing client connections one by one (Dragonfly has no `CLIENT KILL TYPE`).
//! - [`Client`]: one bounded-timeout connection to one member: [`Client::observe`] reads,
//!   the other methods act (`REPLICAOF`, `FAILOVER`, `CLIENT KILL`, `CONFIG SET`, ...).
//! - Cluster mode: [`slots`] (key → slot, ranges, the balanced layout, [`slots::SlotMap`]),
//!   [`cluster_nodes`] and [`cluster_shards`] (pure parsers of `CLUSTER INFO/NODES/SHARDS`),
//!   the `CLUSTER ...` and `MIGRATE` methods of [`Client`], and [`dragonfly_cluster`] (the
//!   `DFLYCLUSTER CONFIG` JSON, experimental).
//! - [`TlsConfig`]: the CA a member's certificate must chain to, and the client certificate to
//!   present; [`ConnectOptions`] adds the credentials and the name to verify.
//! - [`EngineError`]: the one error type of talking to members; [`TlsConfigError`] says why
//!   TLS material (PEM) could not be used.

pub mod ack;
mod client;
pub mod clients;
mod cluster;
pub mod cluster_nodes;
pub mod cluster_shards;
mod dialect;
pub mod dragonfly_cluster;
mod error;
pub mod handover;
pub mod info;
pub mod park;
pub mod slots;
mod tls;

pub use client::{
    CONNECT_TIMEOUT, Client, ConnectOptions, Credentials, DRAGONFLY_TAKEOVER_SLACK,
    HANDOVER_CLIENT_MARGIN, HANDOVER_POLL_INTERVAL, HostPort, MemberReport, RESPONSE_TIMEOUT,
};
pub use cluster::{
    BumpEpoch, FailoverMode, MANUAL_FAILOVER_TIMEOUT, MigrateOutcome, ResetMode,
    SETSLOT_SERVER_TIMEOUT, SetSlot,
};
pub use cluster_nodes::{
    ClusterInfo, ClusterNode, ClusterNodes, ClusterState, LinkState, NodeFlags, SlotMove,
};
pub use cluster_shards::{ShardHealth, ShardNode, ShardRecord, ShardRole};
pub use dialect::{Dialect, EngineCommand, HandoverStyle};
pub use error::EngineError;
pub use info::{
    FailoverState, PersistenceInfo, PrimaryLink, ReplicaEntry, ReplicationInfo, Role, RoleReply,
    ServerInfo, ServerKind,
};
pub use tls::{ClientIdentity, TlsConfig, TlsConfigError};
