//! act: carry out one step of a [`Plan`](crate::decide::Plan) and return. The next reconcile
//! observes the result; nothing here is remembered.

use crate::api::KvClusterSpec;
use crate::decide::Action;
use crate::engine::handover::{HandoverStep, Side};
use crate::engine::{self, EngineError, Role};
use crate::leadership::{Leadership, NotLeader};
use crate::observe::{Clients, Observed};
use crate::platform::{Platform, PlatformError};
use std::net::SocketAddr;
use std::time::Duration;

/// How long one `CLUSTER FAILOVER FORCE|TAKEOVER` may take to make the replica a primary
/// that owns its slots (an election among the primaries takes a few node-timeout-free round
/// trips; past this the attempt counts as lost and is retried once).
const CLUSTER_PROMOTE_LIMIT: Duration = Duration::from_secs(1);

/// How long the other primaries may take to show a planned handover's new epoch (gossip
/// normally spreads it in milliseconds).
const EPOCH_AGREEMENT_LIMIT: Duration = Duration::from_secs(5);

/// How long the roles may take to settle after the server reports the handover done.
const CONFIRM_LIMIT: Duration = Duration::from_secs(3);

/// The error of one step, naming the member and what was being done.
#[derive(Debug, thiserror::Error)]
pub enum ActError {
    #[error("{member}: {source}")]
    Engine {
        member: String,
        #[source]
        source: EngineError,
    },
    #[error(transparent)]
    Platform(#[from] PlatformError),
    #[error(transparent)]
    NotLeader(#[from] NotLeader),
    #[error("{0} gave no cluster view (CLUSTER NODES) in this observation")]
    NoClusterView(String),
    #[error("decide named {0}, which the platform does not list")]
    UnknownMember(String),
    #[error("handover from {from} to {to} finished, but the roles are not confirmed: {detail}")]
    NotConfirmed {
        from: String,
        to: String,
        detail: String,
    },
}

/// Carries out `action` against the members in `observed`. `leadership` is asked right before
/// each platform call and each command to a member (rule 9): a leader that lost its lease
/// half-way stops there, and the next leader observes what was done.
pub async fn act<P: Platform>(
    action: &Action,
    observed: &Observed,
    spec: &KvClusterSpec,
    platform: &P,
    clients: &Clients,
    leadership: &dyn Leadership,
) -> Result<(), ActError> {
    let ctx = Ctx {
        observed,
        clients,
        leadership,
    };
    match action {
        Action::Start {
            members,
            replica_of,
        } => {
            let primary = replica_of.as_deref().map(|p| ctx.addr(p)).transpose()?;
            leadership.check()?;
            platform.start(members, primary).await?;
        }
        Action::Restart { member, replica_of } => {
            let primary = replica_of.as_deref().map(|p| ctx.addr(p)).transpose()?;
            let addr = ctx.addr(member)?;
            leadership.check()?;
            platform.restart(member, primary).await?;
            clients.forget(addr).await;
        }
        Action::Retire { members } => {
            leadership.check()?;
            platform.retire(members).await?;
            for name in members {
                if let Ok(addr) = ctx.addr(name) {
                    clients.forget(addr).await;
                }
            }
        }
        Action::StopHung { members } => {
            leadership.check()?;
            platform.stop_hung(members).await?;
            for name in members {
                if let Ok(addr) = ctx.addr(name) {
                    clients.forget(addr).await;
                }
            }
        }
        Action::Fence { members } => ctx.fence(members).await?,
        Action::Failover {
            promote,
            repoint,
            fence,
            ..
        } => {
            let new_primary = ctx.addr(promote)?;
            // A primary being replaced that answers is demoted first (rule 7): from its
            // REPLICAOF on it refuses writes, so nothing it acknowledges after this point can
            // be lost. If that fails, nothing is promoted and the next reconcile looks again.
            ctx.replicate_all_or_nothing(fence, promote).await?;
            ctx.client(promote)
                .await?
                .replicaof_no_one()
                .await
                .map_err(|e| engine_err(promote, e))?;
            // Move clients next: every new connection reaches the new primary.
            leadership.check()?;
            platform.point_endpoint(new_primary).await?;
            let others: Vec<String> = repoint
                .iter()
                .filter(|m| !fence.contains(m))
                .cloned()
                .collect();
            let repointed = ctx.replicate(&others, promote).await;
            let fenced = ctx.fence(fence).await;
            repointed.and(fenced)?;
        }
        Action::Replicate { members, primary } => {
            let demoted: Vec<String> = members
                .iter()
                .filter(|m| ctx.was_primary(m))
                .cloned()
                .collect();
            ctx.replicate(members, primary).await?;
            ctx.fence(&demoted).await?;
        }
        Action::PointEndpoint { primary, fence } => {
            leadership.check()?;
            platform.point_endpoint(ctx.addr(primary)?).await?;
            ctx.fence(fence).await?;
        }
        Action::Snapshot { member } => {
            ctx.client(member)
                .await?
                .bgsave()
                .await
                .map_err(|e| engine_err(member, e))?;
        }
        Action::Configure { member, key, value } => {
            ctx.client(member)
                .await?
                .config_set(key, value)
                .await
                .map_err(|e| engine_err(member, e))?;
        }
        Action::ClusterMeet { via, members } => {
            let seed = ctx.client(via).await?;
            for name in members {
                let (ip, port, bus) = ctx.bus_address(name)?;
                leadership.check()?;
                seed.cluster_meet(&ip, port, Some(bus))
                    .await
                    .map_err(|e| engine_err(via, e))?;
            }
        }
        Action::AssignSlots { assign } => {
            for (member, ranges) in assign {
                leadership.check()?;
                ctx.client(member)
                    .await?
                    .cluster_addslotsrange(ranges)
                    .await
                    .map_err(|e| engine_err(member, e))?;
            }
        }
        Action::ClusterReplicate {
            member, primary_id, ..
        } => {
            leadership.check()?;
            let client = ctx.client(member).await?;
            match client.cluster_replicate(primary_id).await {
                Ok(()) => {}
                // A member back with its data but without its nodes.conf: decide made it a
                // replica only because the primary holds that data (rule 2), which the
                // engine wants dropped first.
                Err(e) if e.to_string().contains("must be empty") => {
                    client
                        .flush_all()
                        .await
                        .map_err(|e| engine_err(member, e))?;
                    client
                        .cluster_replicate(primary_id)
                        .await
                        .map_err(|e| engine_err(member, e))?;
                }
                Err(e) => return Err(engine_err(member, e)),
            }
        }
        Action::ClusterFailover {
            promote, takeover, ..
        } => ctx.cluster_promote(promote, *takeover).await?,
        Action::ClusterHandover { from, to, .. } => ctx.cluster_handover(from, to).await?,
        Action::ClusterBumpEpoch { member, .. } => {
            leadership.check()?;
            ctx.client(member)
                .await?
                .cluster_bump_epoch()
                .await
                .map_err(|e| engine_err(member, e))?;
        }
        Action::ClusterUnpark { members } => {
            for member in members {
                leadership.check()?;
                ctx.client(member)
                    .await?
                    .unpark()
                    .await
                    .map_err(|e| engine_err(member, e))?;
            }
        }
        Action::ClusterForget { id, on } => {
            // Every member within one action: gossip re-adds a node to a member that has not
            // forgotten it yet once its ban (60 s) on the others runs out.
            for member in on {
                leadership.check()?;
                ctx.client(member)
                    .await?
                    .cluster_forget(id)
                    .await
                    .map_err(|e| engine_err(member, e))?;
            }
        }
        Action::Handover { from, to } => {
            let timeout = Duration::from_secs(u64::from(spec.rollout.handover_timeout_seconds));
            let to_addr = ctx.addr(to)?;
            let target = engine::HostPort::from(to_addr);
            let started = std::time::Instant::now();
            let mut handed = Duration::ZERO;
            // The dialect's sequence (engine::handover): on Dragonfly the old master shuts
            // down after the takeover, so it is neither waited for nor required to answer.
            for step in
                engine::handover::steps(clients.dialect(), &target.host, target.port, timeout)
            {
                // Rule 9: leadership is checked right before every step that changes a member.
                leadership.check()?;
                match step {
                    HandoverStep::WaitAckWindow => {
                        let old = ctx.client(from).await?;
                        engine::ack::wait_for_ack_window(&old, &target)
                            .await
                            .map_err(|e| engine_err(from, e))?;
                    }
                    HandoverStep::KillClients { on } => {
                        let member = ctx.side(on, from, to);
                        let killed = ctx
                            .client(member)
                            .await?
                            .kill_normal_clients()
                            .await
                            .map_err(|e| engine_err(member, e))?;
                        tracing::info!(%member, killed, "closed the clients that could hold up the handover");
                    }
                    HandoverStep::Handover { on, .. } => {
                        let begun = std::time::Instant::now();
                        match on {
                            Side::From => ctx
                                .client(from)
                                .await?
                                .failover_to(&target, timeout)
                                .await
                                .map_err(|e| engine_err(from, e))?,
                            Side::To => ctx
                                .client(to)
                                .await?
                                .take_over(timeout)
                                .await
                                .map_err(|e| engine_err(to, e))?,
                        }
                        handed = begun.elapsed();
                    }
                    HandoverStep::Confirm { old_follows: true } => ctx.confirm(from, to).await?,
                    HandoverStep::Confirm { old_follows: false } => {
                        ctx.confirm_primary(from, to).await?;
                        clients.forget(ctx.addr(from)?).await;
                    }
                    HandoverStep::PointEndpoint => platform.point_endpoint(to_addr).await?,
                    HandoverStep::Fence { required: true } => {
                        ctx.fence(std::slice::from_ref(from)).await?
                    }
                    HandoverStep::Fence { required: false } => {
                        if let Err(e) = ctx.fence(std::slice::from_ref(from)).await {
                            tracing::info!(%from, error = %e, "the old primary does not answer after the takeover (it shuts down); nothing to fence");
                        }
                    }
                }
            }
            tracing::info!(%from, %to, handover_ms = handed.as_millis() as u64, total_ms = started.elapsed().as_millis() as u64, "handover done");
        }
    }
    Ok(())
}

/// The members whose clients `action` disconnected when it succeeded: status then no
/// longer counts a fence as pending for them (rule 7).
pub fn fenced(action: &Action, observed: &Observed) -> Vec<String> {
    match action {
        Action::Fence { members } => members.clone(),
        Action::Handover { from, .. } => vec![from.clone()],
        Action::Failover { fence, .. } | Action::PointEndpoint { fence, .. } => fence.clone(),
        Action::Replicate { members, .. } => members
            .iter()
            .filter(|m| {
                observed
                    .members
                    .iter()
                    .any(|o| &o.name == *m && o.is(kvpilot_sdk::Role::Primary))
            })
            .cloned()
            .collect(),
        _ => Vec::new(),
    }
}

struct Ctx<'a> {
    observed: &'a Observed,
    clients: &'a Clients,
    leadership: &'a dyn Leadership,
}

impl Ctx<'_> {
    /// The client IP, client port and bus port `member` announces in its own view.
    fn bus_address(&self, member: &str) -> Result<(String, u16, u16), ActError> {
        let m = self
            .observed
            .members
            .iter()
            .find(|m| m.name == member)
            .ok_or_else(|| ActError::UnknownMember(member.to_string()))?;
        let me = m
            .cluster
            .as_ref()
            .and_then(|v| v.myself())
            .ok_or_else(|| ActError::NoClusterView(member.to_string()))?;
        Ok((m.addr.ip().to_string(), m.addr.port(), me.bus_port))
    }

    /// Planned: `CLUSTER FAILOVER` on `to` (retried once: right after a member joined the
    /// first attempt is often refused), then wait until every other primary that owns slots
    /// shows `to` as a primary at its new config epoch. Only then may `from` be restarted;
    /// decide checks the same agreement again before any restart (resumable).
    async fn cluster_handover(&self, from: &str, to: &str) -> Result<(), ActError> {
        let client = self.client(to).await?;
        let mut outcome = Err(ActError::UnknownMember(to.to_string()));
        for _ in 0..2 {
            self.leadership.check()?;
            outcome = client
                .cluster_failover_and_wait(
                    engine::FailoverMode::Graceful,
                    engine::MANUAL_FAILOVER_TIMEOUT,
                )
                .await
                .map_err(|e| engine_err(to, e));
            if outcome.is_ok() {
                break;
            }
        }
        let epoch = outcome?;
        let id = self.node_id(to)?;
        let voters: Vec<&str> = self
            .observed
            .members
            .iter()
            .filter(|m| m.name != from && m.name != to)
            .filter(|m| m.cluster.as_ref().is_some_and(|v| v.owns_slots()))
            .map(|m| m.name.as_str())
            .collect();
        let started = std::time::Instant::now();
        for voter in voters {
            let c = self.client(voter).await?;
            loop {
                let seen = c.cluster_nodes().await.map_err(|e| engine_err(voter, e))?;
                if seen.get(&id).is_some_and(|n| {
                    n.flags.primary && !n.slots.is_empty() && n.config_epoch >= epoch
                }) {
                    break;
                }
                if started.elapsed() > EPOCH_AGREEMENT_LIMIT {
                    return Err(ActError::NotConfirmed {
                        from: from.to_string(),
                        to: to.to_string(),
                        detail: format!(
                            "{voter} does not show {to} at config epoch {epoch} after {:?}",
                            EPOCH_AGREEMENT_LIMIT
                        ),
                    });
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
        Ok(())
    }

    /// `member`'s node id, as it reported it in this observation.
    fn node_id(&self, member: &str) -> Result<String, ActError> {
        self.observed
            .members
            .iter()
            .find(|m| m.name == member)
            .and_then(|m| m.cluster.as_ref())
            .map(|v| v.id.clone())
            .ok_or_else(|| ActError::NoClusterView(member.to_string()))
    }

    /// `CLUSTER FAILOVER FORCE` (or `TAKEOVER`) on `member`, waiting until it owns the
    /// slots. The first attempt right after a member joined often loses its election (the
    /// voters' views have not settled); one retry follows at once.
    async fn cluster_promote(&self, member: &str, takeover: bool) -> Result<(), ActError> {
        let mode = if takeover {
            engine::FailoverMode::Takeover
        } else {
            engine::FailoverMode::Force
        };
        let client = self.client(member).await?;
        let mut last = None;
        for _ in 0..2 {
            self.leadership.check()?;
            match client
                .cluster_failover_and_wait(mode, CLUSTER_PROMOTE_LIMIT)
                .await
            {
                Ok(_) => return Ok(()),
                Err(e) => {
                    tracing::info!(member, error = %e, "cluster failover attempt failed");
                    last = Some(e);
                }
            }
        }
        Err(match last {
            Some(e) => engine_err(member, e),
            None => ActError::UnknownMember(member.to_string()),
        })
    }

    fn addr(&self, member: &str) -> Result<SocketAddr, ActError> {
        self.observed
            .members
            .iter()
            .find(|m| m.name == member)
            .map(|m| m.addr)
            .ok_or_else(|| ActError::UnknownMember(member.to_string()))
    }

    fn was_primary(&self, member: &str) -> bool {
        self.observed
            .members
            .iter()
            .any(|m| m.name == member && m.is(kvpilot_sdk::Role::Primary))
    }

    /// A connection to `member`, to send it one command: leadership is checked first, so
    /// every command of an action is (rule 9).
    async fn client(&self, member: &str) -> Result<engine::Client, ActError> {
        self.leadership.check()?;
        let addr = self.addr(member)?;
        self.clients
            .get(member, addr)
            .await
            .map_err(|e| engine_err(member, e))
    }

    /// `REPLICAOF primary` on each member; tries all, returns the first error.
    async fn replicate(&self, members: &[String], primary: &str) -> Result<(), ActError> {
        let target = engine::HostPort::from(self.addr(primary)?);
        let mut first = Ok(());
        for m in members {
            let result = match self.client(m).await {
                Ok(c) => c.replicaof(&target).await.map_err(|e| engine_err(m, e)),
                Err(e) => Err(e),
            };
            if let Err(e) = result {
                tracing::warn!(member = %m, error = %e, "repoint failed; the next reconcile retries");
                if first.is_ok() {
                    first = Err(e);
                }
            }
        }
        first
    }

    /// `REPLICAOF primary` on each member, stopping at the first error.
    async fn replicate_all_or_nothing(
        &self,
        members: &[String],
        primary: &str,
    ) -> Result<(), ActError> {
        let target = engine::HostPort::from(self.addr(primary)?);
        for m in members {
            self.client(m)
                .await?
                .replicaof(&target)
                .await
                .map_err(|e| engine_err(m, e))?;
        }
        Ok(())
    }

    /// Safety rule 7: kill normal client connections on demoted members.
    async fn fence(&self, members: &[String]) -> Result<(), ActError> {
        for m in members {
            let killed = self
                .client(m)
                .await?
                .kill_normal_clients()
                .await
                .map_err(|e| engine_err(m, e))?;
            tracing::info!(member = %m, killed, "fenced the demoted member's clients");
        }
        Ok(())
    }

    /// `from` or `to`, as `side` says.
    fn side<'m>(&self, side: Side, from: &'m str, to: &'m str) -> &'m str {
        match side {
            Side::From => from,
            Side::To => to,
        }
    }

    /// After a Dragonfly takeover: `to` answers as primary (bounded by [`CONFIRM_LIMIT`]).
    /// The old master is not asked: it shuts down.
    async fn confirm_primary(&self, from: &str, to: &str) -> Result<(), ActError> {
        let deadline = tokio::time::Instant::now() + CONFIRM_LIMIT;
        loop {
            let detail = match self.client(to).await {
                Ok(c) => match c.observe().await {
                    Ok(r) if r.role() == Role::Primary => return Ok(()),
                    Ok(r) => format!("{to} is {:?}", r.role()),
                    Err(e) => e.to_string(),
                },
                Err(e) => e.to_string(),
            };
            if tokio::time::Instant::now() >= deadline {
                return Err(ActError::NotConfirmed {
                    from: from.to_string(),
                    to: to.to_string(),
                    detail: format!("after {CONFIRM_LIMIT:?}: {detail}"),
                });
            }
            tokio::time::sleep(engine::HANDOVER_POLL_INTERVAL).await;
        }
    }

    /// After a handover: `to` answers as primary and `from` follows it. The old primary
    /// turns into a replica before the target has processed its `PSYNC FAILOVER` and promoted
    /// itself, so for a few milliseconds the target still reports itself a replica: poll,
    /// bounded by [`CONFIRM_LIMIT`].
    async fn confirm(&self, from: &str, to: &str) -> Result<(), ActError> {
        let to_addr = engine::HostPort::from(self.addr(to)?);
        let deadline = tokio::time::Instant::now() + CONFIRM_LIMIT;
        loop {
            let detail = match self.roles(from, to).await {
                Ok((new_role, old_follows)) => {
                    if new_role == Role::Primary && old_follows.as_ref() == Some(&to_addr) {
                        return Ok(());
                    }
                    format!("{to} is {new_role:?}, {from} follows {old_follows:?}")
                }
                Err(e) => e.to_string(),
            };
            if tokio::time::Instant::now() >= deadline {
                return Err(ActError::NotConfirmed {
                    from: from.to_string(),
                    to: to.to_string(),
                    detail: format!("after {CONFIRM_LIMIT:?}: {detail}"),
                });
            }
            tokio::time::sleep(engine::HANDOVER_POLL_INTERVAL).await;
        }
    }

    /// The role of `to` and the primary `from` follows, as they answer now.
    async fn roles(
        &self,
        from: &str,
        to: &str,
    ) -> Result<(Role, Option<engine::HostPort>), ActError> {
        let new = self
            .client(to)
            .await?
            .observe()
            .await
            .map_err(|e| engine_err(to, e))?;
        let old = self
            .client(from)
            .await?
            .observe()
            .await
            .map_err(|e| engine_err(from, e))?;
        Ok((new.role(), old.replica_of()))
    }
}

fn engine_err(member: &str, source: EngineError) -> ActError {
    ActError::Engine {
        member: member.to_string(),
        source,
    }
}
