//! Redis-protocol dialects (Valkey, Redis 7, Dragonfly) over RESP.
//!
//! - [`info`]: pure parsers of `INFO replication|persistence|server`, `ROLE`, `DBSIZE`.
//! - [`Dialect`]: which command does what per engine (Dragonfly is experimental).
//! - [`Client`]: one bounded-timeout connection to one member: [`Client::observe`] reads,
//!   the other methods act (`REPLICAOF`, `FAILOVER`, `CLIENT KILL`, `CONFIG SET`, ...).
//! - [`EngineError`]: the one error type of this boundary.

pub mod ack;
mod client;
mod dialect;
mod error;
pub mod info;

pub use client::{
    CONNECT_TIMEOUT, Client, HANDOVER_CLIENT_MARGIN, HANDOVER_POLL_INTERVAL, HostPort,
    MemberReport, RESPONSE_TIMEOUT, handover,
};
pub use dialect::{Dialect, EngineCommand, HandoverStyle};
pub use error::EngineError;
pub use info::{
    FailoverState, PersistenceInfo, PrimaryLink, ReplicaEntry, ReplicationInfo, Role, RoleReply,
    ServerInfo, ServerKind,
};
