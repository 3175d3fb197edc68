//! Where members live. The same observe → decide → act runs on every platform; a platform only
//! lists members, starts/restarts them and moves the primary endpoint.
//!
//! - [`local`]: real server processes on 127.0.0.x with a TCP forwarder as the endpoint.
//! - [`kubernetes`]: the objects (StatefulSets, Services, PDBs, ConfigMaps) a KvCluster needs.

pub mod kubernetes;
pub mod local;

use std::future::Future;
use std::net::SocketAddr;

/// A member as the platform sees it (pod / process), before asking the datastore anything.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlatformMember {
    pub name: String,
    pub shard: u32,
    pub ordinal: u32,
    /// Where it serves (pod IP / 127.0.0.x) and where replicas connect to it.
    pub addr: SocketAddr,
    /// The revision it runs; `None` when it is not running.
    pub revision: Option<String>,
    /// The process / pod exists and runs.
    pub running: bool,
    pub zone: Option<String>,
    pub node: Option<String>,
    /// The spec no longer asks for it (a scale-down) but the platform still has it, running
    /// or not: it is removed with [`Platform::retire`] once it is not the primary.
    pub retiring: bool,
}

/// The error of the platform boundary.
#[derive(Debug, thiserror::Error)]
#[error("platform {platform}: {action}: {message}")]
pub struct PlatformError {
    pub platform: &'static str,
    pub action: String,
    pub message: String,
}

/// What the reconciler needs from a platform.
pub trait Platform: Send + Sync {
    /// Every member the spec asks for, running or not, and every member a scale-down has not
    /// removed yet (`retiring`), ordered by ordinal.
    fn members(&self) -> impl Future<Output = Result<Vec<PlatformMember>, PlatformError>> + Send;

    /// The revision every member should run (a digest of what members are built from).
    fn desired_revision(&self) -> String;

    /// Where the primary endpoint currently sends clients.
    fn endpoint(&self) -> Option<SocketAddr>;

    /// Starts members that are not running, on the desired revision, as replicas of
    /// `replica_of`, or parked (following nothing that answers) when `None`.
    fn start(
        &self,
        members: &[String],
        replica_of: Option<SocketAddr>,
    ) -> impl Future<Output = Result<(), PlatformError>> + Send;

    /// Stops a member and starts it again on the desired revision, as a replica of `replica_of`.
    fn restart(
        &self,
        member: &str,
        replica_of: Option<SocketAddr>,
    ) -> impl Future<Output = Result<(), PlatformError>> + Send;

    /// Removes retiring `members` for good (the scale-down the spec asks for). `decide` asks
    /// only once none of them is the primary; a platform refuses to remove any member it was
    /// not given, or one that serves as the primary.
    fn retire(&self, members: &[String]) -> impl Future<Output = Result<(), PlatformError>> + Send;

    /// Stops `members` at once, without a grace period: each may still be acting as the
    /// primary but does not answer (hung, or partitioned from the operator), and another
    /// member is about to be promoted. A process that is killed before it resumes never
    /// acknowledges the writes queued on its open connections, which a Service keeps open
    /// (safety rule 7). Returns once they are stopped, as far as the platform can tell.
    fn stop_hung(
        &self,
        members: &[String],
    ) -> impl Future<Output = Result<(), PlatformError>> + Send;

    /// Sends new client connections to `primary`. Connections already established stay with
    /// the member they reached, as behind a Kubernetes Service: moving the endpoint fences
    /// nothing (safety rule 7: the demoted member is fenced on the member itself).
    fn point_endpoint(
        &self,
        primary: SocketAddr,
    ) -> impl Future<Output = Result<(), PlatformError>> + Send;
}
