//! Parking of a cluster-mode member (rule 2 per shard): a member starts with its `default`
//! user barred from `PSYNC`/`SYNC` and writes (see
//! [`crate::platform::local::server::ServerCluster::parked`]); the operator reads that
//! state and lifts it once the member's history is judged safe to serve from.

use redis::Value;

use super::client::{Client, RESPONSE_TIMEOUT};
use super::dialect::EngineCommand;
use super::error::EngineError;

/// The `default` user's rules while parked: everything but replication and writes. A
/// replica's `PSYNC` is then refused with `NOPERM`, which it treats as a failed attempt
/// (retried, its dataset kept), as Valkey 8 and Redis 7 do. Both platforms start cluster-mode
/// members with these rules (rule 2, docs/architecture.md).
pub const PARKED_RULES: &str = "~* &* +@all -@write -psync -sync";

/// What parking takes away, given back on release.
const RELEASE_RULES: [&str; 3] = ["+@write", "+psync", "+sync"];

impl Client {
    /// Whether this member's `default` user is parked: `ACL DRYRUN default PSYNC ? -1`
    /// answers with the reason it would be refused instead of `OK`. A server without
    /// `ACL DRYRUN` (before Redis 7) cannot be parked and answers `false`.
    pub async fn parked(&self) -> Result<bool, EngineError> {
        let command = EngineCommand::new(["ACL", "DRYRUN", "default", "PSYNC", "?", "-1"]);
        match self.run(&command, RESPONSE_TIMEOUT).await {
            Ok(Value::Okay) => Ok(false),
            Ok(Value::SimpleString(s)) if s.eq_ignore_ascii_case("OK") => Ok(false),
            // The reason it would be refused.
            Ok(Value::BulkString(_)) | Ok(Value::VerbatimString { .. }) => Ok(true),
            Ok(_) => Ok(false),
            Err(EngineError::Command { .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// `FLUSHALL`: empties a member without slots before `CLUSTER REPLICATE`, which the
    /// engine refuses to a primary that holds keys. Only for a member whose data its new
    /// primary holds (decide checks that first, rule 2).
    pub async fn flush_all(&self) -> Result<(), EngineError> {
        self.run(&EngineCommand::new(["FLUSHALL"]), RESPONSE_TIMEOUT)
            .await
            .map(drop)
    }

    /// `CLUSTER BUMPEPOCH`: this member takes a config epoch above every other, so its claim
    /// on its slots wins over a rival's (one that came back and claimed them from its data).
    pub async fn cluster_bump_epoch(&self) -> Result<(), EngineError> {
        self.run(
            &EngineCommand::new(["CLUSTER", "BUMPEPOCH"]),
            RESPONSE_TIMEOUT,
        )
        .await
        .map(drop)
    }

    /// Releases a parked member: `ACL SETUSER default +@write +psync +sync`.
    pub async fn unpark(&self) -> Result<(), EngineError> {
        self.acl_setuser("default", &RELEASE_RULES).await
    }
}
