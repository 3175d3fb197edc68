//! Builders with sensible defaults for members, clusters and requests: for tests and sample
//! inputs, so that a test names only what matters to it.
//!
//! ```
//! use kvpilot_sdk::{Member, SelectionReason, SelectionRequest};
//!
//! let request = SelectionRequest::new(
//!     SelectionReason::PrimaryLost,
//!     vec![
//!         Member::replica("cache-1").offset(900).keys(10),
//!         Member::replica("cache-2").offset(950).keys(10).zone("zone-b"),
//!     ],
//! )
//! .config(r#"{"preferZone": "zone-b"}"#);
//! assert_eq!(request.candidates[1].ordinal, 2);
//! assert_eq!(request.cluster.name, "cache");
//! ```

use crate::prelude::*;
use crate::types::{
    Cluster, Engine, Member, Role, RolloutRequest, ScheduleRequest, SelectionReason,
    SelectionRequest, SnapshotMode, empty_config,
};

impl Member {
    /// A healthy member: ready, on the desired revision, link up, not syncing, no lag, shard
    /// 0, offset 0, no keys. The ordinal is the number after the name's last `-` (`cache-2`
    /// → 2), else 0.
    pub fn new(name: impl Into<String>, role: Role) -> Member {
        let name = name.into();
        let ordinal = name
            .rsplit_once('-')
            .and_then(|(_, n)| n.parse().ok())
            .unwrap_or(0);
        Member {
            name,
            shard: 0,
            ordinal,
            role,
            ready: true,
            on_desired_revision: true,
            link_up: true,
            syncing: false,
            offset: 0,
            lag_bytes: 0,
            keys: 0,
            zone: None,
            node: None,
        }
    }

    /// A healthy primary (see [`Member::new`]).
    pub fn primary(name: impl Into<String>) -> Member {
        Member::new(name, Role::Primary)
    }

    /// A healthy, in-sync replica (see [`Member::new`]).
    pub fn replica(name: impl Into<String>) -> Member {
        Member::new(name, Role::Replica)
    }

    /// A member that did not answer: role unknown, not ready, link down.
    pub fn unreachable(name: impl Into<String>) -> Member {
        Member::new(name, Role::Unknown).ready(false).link_up(false)
    }

    pub fn shard(mut self, shard: u32) -> Member {
        self.shard = shard;
        self
    }

    pub fn ordinal(mut self, ordinal: u32) -> Member {
        self.ordinal = ordinal;
        self
    }

    pub fn role(mut self, role: Role) -> Member {
        self.role = role;
        self
    }

    pub fn ready(mut self, ready: bool) -> Member {
        self.ready = ready;
        self
    }

    /// Not on the desired revision (waiting for its restart in a rollout).
    pub fn stale(mut self) -> Member {
        self.on_desired_revision = false;
        self
    }

    pub fn on_desired_revision(mut self, current: bool) -> Member {
        self.on_desired_revision = current;
        self
    }

    pub fn link_up(mut self, up: bool) -> Member {
        self.link_up = up;
        self
    }

    pub fn syncing(mut self, syncing: bool) -> Member {
        self.syncing = syncing;
        self
    }

    pub fn offset(mut self, offset: u64) -> Member {
        self.offset = offset;
        self
    }

    pub fn lag_bytes(mut self, lag: u64) -> Member {
        self.lag_bytes = lag;
        self
    }

    pub fn keys(mut self, keys: u64) -> Member {
        self.keys = keys;
        self
    }

    pub fn zone(mut self, zone: impl Into<String>) -> Member {
        self.zone = Some(zone.into());
        self
    }

    pub fn node(mut self, node: impl Into<String>) -> Member {
        self.node = Some(node.into());
        self
    }
}

impl Cluster {
    /// A Valkey cluster in namespace `default` with one shard and no replicas declared.
    pub fn new(name: impl Into<String>) -> Cluster {
        Cluster {
            name: name.into(),
            namespace: "default".into(),
            engine: Engine::Valkey,
            engine_version: String::new(),
            shards: 1,
            replicas_per_shard: 0,
        }
    }

    pub fn namespace(mut self, namespace: impl Into<String>) -> Cluster {
        self.namespace = namespace.into();
        self
    }

    pub fn engine(mut self, engine: Engine) -> Cluster {
        self.engine = engine;
        self
    }

    pub fn engine_version(mut self, version: impl Into<String>) -> Cluster {
        self.engine_version = version.into();
        self
    }

    pub fn shards(mut self, shards: u32) -> Cluster {
        self.shards = shards;
        self
    }

    pub fn replicas_per_shard(mut self, replicas: u32) -> Cluster {
        self.replicas_per_shard = replicas;
        self
    }
}

/// The cluster a request gets when none is given: `cache`, with as many replicas per shard as
/// there are members beyond one.
fn default_cluster(members: usize) -> Cluster {
    let replicas = u32::try_from(members.saturating_sub(1)).unwrap_or(u32::MAX);
    Cluster::new("cache").replicas_per_shard(replicas)
}

impl SelectionRequest {
    /// Choose among `candidates` for `reason`, in cluster `cache`, no known primary, config
    /// `{}`.
    pub fn new(reason: SelectionReason, candidates: Vec<Member>) -> SelectionRequest {
        SelectionRequest {
            reason,
            cluster: default_cluster(candidates.len() + 1),
            primary: None,
            candidates,
            config: empty_config(),
        }
    }

    pub fn cluster(mut self, cluster: Cluster) -> SelectionRequest {
        self.cluster = cluster;
        self
    }

    pub fn primary(mut self, primary: Member) -> SelectionRequest {
        self.primary = Some(primary);
        self
    }

    /// The plugin's settings, a JSON object text.
    pub fn config(mut self, config: impl Into<String>) -> SelectionRequest {
        self.config = config.into();
        self
    }
}

impl ScheduleRequest {
    /// Schedule `members` around the cron expression `schedule`, mode `replicas-only`, no
    /// stagger, in cluster `cache`, config `{}`.
    pub fn new(schedule: impl Into<String>, members: Vec<Member>) -> ScheduleRequest {
        ScheduleRequest {
            mode: SnapshotMode::ReplicasOnly,
            cluster: default_cluster(members.len()),
            schedule: schedule.into(),
            stagger_minutes: 0,
            members,
            config: empty_config(),
        }
    }

    pub fn mode(mut self, mode: SnapshotMode) -> ScheduleRequest {
        self.mode = mode;
        self
    }

    pub fn stagger_minutes(mut self, minutes: u32) -> ScheduleRequest {
        self.stagger_minutes = minutes;
        self
    }

    pub fn cluster(mut self, cluster: Cluster) -> ScheduleRequest {
        self.cluster = cluster;
        self
    }

    /// The plugin's settings, a JSON object text.
    pub fn config(mut self, config: impl Into<String>) -> ScheduleRequest {
        self.config = config.into();
        self
    }
}

impl RolloutRequest {
    /// The next step for the shard of `members`, one member in flight, no lag tolerated, in
    /// cluster `cache`, config `{}`.
    pub fn new(members: Vec<Member>) -> RolloutRequest {
        RolloutRequest {
            cluster: default_cluster(members.len()),
            members,
            max_in_flight: 1,
            max_lag_bytes: 0,
            config: empty_config(),
        }
    }

    pub fn cluster(mut self, cluster: Cluster) -> RolloutRequest {
        self.cluster = cluster;
        self
    }

    pub fn max_in_flight(mut self, n: u32) -> RolloutRequest {
        self.max_in_flight = n;
        self
    }

    pub fn max_lag_bytes(mut self, bytes: u64) -> RolloutRequest {
        self.max_lag_bytes = bytes;
        self
    }

    /// The plugin's settings, a JSON object text.
    pub fn config(mut self, config: impl Into<String>) -> RolloutRequest {
        self.config = config.into();
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn members_default_to_healthy_and_take_their_ordinal_from_the_name() {
        let m = Member::replica("cache-12");
        assert_eq!((m.ordinal, m.role), (12, Role::Replica));
        assert!(m.in_sync(0) && m.on_desired_revision);
        assert_eq!(Member::primary("solo").ordinal, 0);
        let down = Member::unreachable("cache-3");
        assert!(!down.ready && !down.link_up && down.role == Role::Unknown);
        let m = Member::replica("a-1")
            .stale()
            .lag_bytes(5)
            .zone("z")
            .node("n");
        assert!(!m.on_desired_revision && m.lag_bytes == 5);
        assert_eq!(
            (m.zone.as_deref(), m.node.as_deref()),
            (Some("z"), Some("n"))
        );
    }

    #[test]
    fn requests_fill_in_a_cluster_and_an_empty_config() {
        let r = RolloutRequest::new(vec![Member::primary("c-0"), Member::replica("c-1")]);
        assert_eq!(r.cluster.replicas_per_shard, 1);
        assert_eq!((r.max_in_flight, r.config.as_str()), (1, "{}"));
        let s = SelectionRequest::new(SelectionReason::PrimaryLost, vec![Member::replica("c-1")]);
        assert_eq!(s.cluster.replicas_per_shard, 1);
        let s = ScheduleRequest::new("0 3 * * *", vec![Member::primary("c-0")]).stagger_minutes(5);
        assert_eq!((s.stagger_minutes, s.mode), (5, SnapshotMode::ReplicasOnly));
    }
}
