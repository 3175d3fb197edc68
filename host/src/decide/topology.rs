//! Who is the primary: election when it is lost, the data-holding guard when it came back
//! empty, split-brain resolution, replicas and endpoint following the primary.

use super::Input;
use super::history::{self, Held, Standing};
use super::members;
use super::plan::{Action, Blocker, Plan};
use crate::observe::{KnownRole, Observed, ObservedMember};
use crate::policy::{Policies, PolicyError};
use kvpilot_sdk::{Role, Selection, SelectionReason, SelectionRequest};

/// Either a primary every member follows, or a plan that must run first.
pub(super) enum Settled<'a> {
    Primary(Plan, &'a ObservedMember),
    Done(Plan),
}

pub(super) async fn settle<'a, P: Policies>(
    input: &Input<'a>,
    policies: &P,
    plan: Plan,
) -> Settled<'a> {
    let obs = input.observed;
    let primaries: Vec<&'a ObservedMember> = obs
        .members
        .iter()
        .filter(|m| m.running && m.is(Role::Primary))
        .collect();
    match primaries.as_slice() {
        [] => Settled::Done(elect(input, policies, plan).await),
        [primary] => one_primary(input, policies, plan, primary).await,
        many => Settled::Done(resolve_split(input, plan, many)),
    }
}

/// No member answers as primary.
async fn elect<P: Policies>(input: &Input<'_>, policies: &P, plan: Plan) -> Plan {
    let obs = input.observed;
    let s = input.settings;
    let answering: Vec<&ObservedMember> = obs
        .members
        .iter()
        .filter(|m| m.running && m.report.is_some())
        .collect();
    if answering.is_empty() {
        let stopped = not_running(obs.members.iter());
        if !stopped.is_empty() {
            return plan.act(
                Action::Start {
                    members: stopped,
                    replica_of: None,
                },
                s.probe_interval,
            );
        }
        return plan.wait(
            Blocker::NoPrimary,
            "no member answers yet",
            s.probe_interval,
        );
    }
    // The primary the replicas still follow: if the platform says it is gone, it is lost now;
    // otherwise wait for the failure threshold so a slow primary is not replaced by accident.
    let last_primary = answering
        .iter()
        .filter_map(|m| m.report.as_ref().and_then(|r| r.following))
        .find_map(|addr| obs.members.iter().find(|m| m.addr == addr));
    let dead = last_primary.is_some_and(|p| !p.running);
    if !dead && obs.primary_missing_probes < s.failure_threshold {
        return plan.wait(
            Blocker::NoPrimary,
            format!(
                "no primary answered in {} of {} consecutive probes",
                obs.primary_missing_probes, s.failure_threshold
            ),
            s.probe_interval,
        );
    }
    let ready = promotable(&answering);
    if ready.is_empty() {
        let names: Vec<&str> = answering.iter().map(|m| m.name.as_str()).collect();
        return plan.wait(
            Blocker::NoPrimary,
            format!(
                "no member can be promoted yet ({} still loading)",
                names.join(", ")
            ),
            s.probe_interval,
        );
    }
    // Rule 2: promote only a member that holds what every other member holds or may hold.
    let (candidates, blockers) = newest(&ready, obs, input.spec.rollout.max_lag_bytes);
    if candidates.is_empty() {
        // A member that may hold the data is down: start it (parked) so it can be looked at.
        let stopped: Vec<String> = blockers
            .iter()
            .filter(|b| !b.member.running && !b.member.retiring)
            .map(|b| b.member.name.clone())
            .collect();
        if !stopped.is_empty() {
            return plan.act(
                Action::Start {
                    members: stopped,
                    replica_of: None,
                },
                s.probe_interval,
            );
        }
        return plan.wait(
            Blocker::NoPrimary,
            format!(
                "waiting before promoting any of {}: {}",
                names(&ready),
                Holdout::describe_all(&blockers)
            ),
            s.probe_interval,
        );
    }
    // Rule 7: a member that may still be acting as primary but does not answer (hung,
    // partitioned from the operator) is stopped through the platform before anyone is
    // promoted, so the writes queued on its open connections are never acknowledged.
    let hung: Vec<String> = obs
        .members
        .iter()
        .filter(|m| m.running && m.report.is_none() && may_act_as_primary(m, obs))
        .map(|m| m.name.clone())
        .collect();
    if !hung.is_empty() {
        return plan.act(Action::StopHung { members: hung }, s.probe_interval);
    }
    let repoint = answering.iter().map(|m| m.name.clone()).collect();
    choose_and_promote(
        input,
        policies,
        plan,
        SelectionReason::PrimaryLost,
        last_primary,
        &candidates,
        repoint,
        Vec::new(),
        None,
    )
    .await
}

/// A member that does not answer could still be serving writes as the primary: replicas
/// follow it, the endpoint sends clients to it, or it was last seen as a primary.
fn may_act_as_primary(m: &ObservedMember, obs: &crate::observe::Observed) -> bool {
    let followed = obs.members.iter().any(|o| {
        o.report
            .as_ref()
            .is_some_and(|r| r.following == Some(m.addr))
    });
    followed
        || obs.endpoint == Some(m.addr)
        || m.last_known
            .as_ref()
            .is_some_and(|k| k.role == KnownRole::Primary)
}

/// Why a member keeps every candidate from being promoted.
pub(super) struct Holdout<'a> {
    member: &'a ObservedMember,
    reason: &'static str,
}

impl Holdout<'_> {
    pub(super) fn describe(&self) -> String {
        format!("{} {}", self.member.name, self.reason)
    }

    /// Every holdout, `; `-separated, for a wait reason.
    pub(super) fn describe_all(holdouts: &[Holdout<'_>]) -> String {
        holdouts
            .iter()
            .map(Holdout::describe)
            .collect::<Vec<_>>()
            .join("; ")
    }
}

/// The candidates that hold what every other member holds or may hold, within `max_lag`
/// (rule 2), and the members that keep the others out when none does.
///
/// - A member that answered with its dataset loaded is compared by history.
/// - A member that is down, does not answer or is loading is compared by what status last
///   recorded of it; with no record it may hold anything: a loading one is waited for (its
///   load ends), and an absent one keeps out only members that hold nothing.
pub(super) fn newest<'a>(
    candidates: &[&'a ObservedMember],
    obs: &'a crate::observe::Observed,
    max_lag: u64,
) -> (Vec<&'a ObservedMember>, Vec<Holdout<'a>>) {
    let mut blockers: Vec<Holdout<'a>> = Vec::new();
    let mut accepted = Vec::new();
    for &c in candidates {
        let Standing::Now(held) = history::standing(c) else {
            // A ready member that reports no history (an engine without replication IDs):
            // judged by its keys alone, as before.
            if c.holds_data() || !obs.members.iter().any(|m| m.holds_data()) {
                accepted.push(c);
            }
            continue;
        };
        let mut ok = true;
        for m in obs.members.iter().filter(|m| m.name != c.name) {
            if let Some(reason) = keeps_out(held, m, max_lag) {
                ok = false;
                if !blockers.iter().any(|b| b.member.name == m.name) {
                    blockers.push(Holdout { member: m, reason });
                }
            }
        }
        if ok {
            accepted.push(c);
        }
    }
    if !accepted.is_empty() {
        blockers.clear();
    }
    (prefer_staying(accepted), blockers)
}

/// Why `m` keeps a candidate holding `c` from being promoted, if it does.
fn keeps_out(c: Held<'_>, m: &ObservedMember, max_lag: u64) -> Option<&'static str> {
    let loading = m.running && m.report.as_ref().is_some_and(|r| r.loading);
    match history::standing(m) {
        Standing::Now(h) => (!history::covers(c, h, max_lag)).then_some("holds newer data"),
        Standing::Recorded(h) if history::covers(c, h, max_lag) => None,
        Standing::Recorded(_) if loading => Some("is loading and held newer data when last seen"),
        Standing::Recorded(_) => Some("held newer data when last seen and does not answer"),
        Standing::Unknown if loading => Some("is loading and may hold data"),
        Standing::Unknown if history::blank(c) => Some("does not answer yet and may hold data"),
        Standing::Unknown => None,
    }
}

fn names(members: &[&ObservedMember]) -> String {
    members
        .iter()
        .map(|m| m.name.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Exactly one member answers as primary.
async fn one_primary<'a, P: Policies>(
    input: &Input<'a>,
    policies: &P,
    plan: Plan,
    primary: &'a ObservedMember,
) -> Settled<'a> {
    let obs = input.observed;
    let s = input.settings;
    // Data-holding guard (rule 2): a member the primary does not hold everything of, that is
    // not its linked replica, has a newer history (the primary came back empty, or restarted
    // from an older dump). Promote it rather than let the primary overwrite it. A primary
    // emptied by FLUSHALL has the newer history and keeps its place.
    if let Standing::Now(p) = history::standing(primary) {
        let holders: Vec<&ObservedMember> = obs
            .members
            .iter()
            .filter(|m| m.name != primary.name && m.running)
            .filter(|m| m.report.is_some() && !fed_by(primary, m, obs))
            .filter(|m| matches!(history::standing(m), Standing::Now(h) if history::newer(h, p)))
            .collect();
        if !holders.is_empty() {
            // A holder already full-syncing *from this primary* still has its data until the
            // payload arrives, and promoting it aborts that sync, so the sync must not
            // disqualify it. (Nothing may count on that delay: with `repl-diskless-sync-delay
            // 0` the payload follows at once, which is why members that may hold newer data
            // start parked and are repointed only after the operator has looked.)
            let aborting = Some(primary.addr);
            let ready = promotable_aborting(&holders, aborting);
            let (candidates, _) = newest(&ready, obs, input.spec.rollout.max_lag_bytes);
            if candidates.is_empty() {
                return Settled::Done(plan.wait(
                    Blocker::NoPrimary,
                    format!(
                        "primary {} holds an older history than {}, which cannot be promoted yet",
                        primary.name,
                        names(&holders)
                    ),
                    s.probe_interval,
                ));
            }
            let repoint = answering(obs.members.iter());
            return Settled::Done(
                choose_and_promote(
                    input,
                    policies,
                    plan,
                    SelectionReason::PrimaryEmpty,
                    Some(primary),
                    &candidates,
                    repoint,
                    vec![primary.name.clone()],
                    aborting,
                )
                .await,
            );
        }
    }
    // From here on this member is the primary, also while the steps below bring the others
    // in line (status says so rather than "no primary").
    let mut plan = plan;
    plan.primary = Some(primary.name.clone());
    // Clients first: the endpoint follows the primary before any other member is started or
    // repointed, so a member that cannot start (or refuses REPLICAOF) never keeps clients
    // away from a healthy primary.
    if obs.endpoint != Some(primary.addr) {
        let fence = obs
            .members
            .iter()
            .filter(|m| {
                Some(m.addr) == obs.endpoint && m.name != primary.name && m.report.is_some()
            })
            .map(|m| m.name.clone())
            .collect();
        return Settled::Done(plan.act(
            Action::PointEndpoint {
                primary: primary.name.clone(),
                fence,
            },
            s.probe_interval,
        ));
    }
    let stopped = not_running(obs.members.iter());
    if !stopped.is_empty() {
        // A member the primary is known to hold everything of starts as its replica; one
        // that may hold more starts parked, so that it cannot sync from the primary (and,
        // with a diskless sync delay of 0, be wiped at once) before it has been looked at.
        let (safe, unknown): (Vec<String>, Vec<String>) = stopped
            .into_iter()
            .partition(|name| held_by(primary, obs.members.iter().find(|m| &m.name == name)));
        let (members, replica_of) = if safe.is_empty() {
            (unknown, None)
        } else {
            (safe, Some(primary.name.clone()))
        };
        return Settled::Done(plan.act(
            Action::Start {
                members,
                replica_of,
            },
            s.probe_interval,
        ));
    }
    let astray: Vec<String> = obs
        .members
        .iter()
        .filter(|m| m.name != primary.name)
        .filter(|m| {
            // A loading member refuses REPLICAOF; it is looked at once it has loaded.
            m.report.as_ref().is_some_and(|r| {
                r.role == Role::Replica && r.following != Some(primary.addr) && !r.loading
            })
        })
        .map(|m| m.name.clone())
        .collect();
    if !astray.is_empty() {
        return Settled::Done(plan.act(
            Action::Replicate {
                members: astray,
                primary: primary.name.clone(),
            },
            s.probe_interval,
        ));
    }
    // Rule 7: a former primary whose clients were not confirmed disconnected is fenced again
    // on every reconcile until it is.
    let fence: Vec<String> = obs
        .members
        .iter()
        .filter(|m| m.name != primary.name && m.is(Role::Replica) && fence_pending(m))
        .map(|m| m.name.clone())
        .collect();
    if !fence.is_empty() {
        return Settled::Done(plan.act(Action::Fence { members: fence }, s.probe_interval));
    }
    Settled::Primary(plan, primary)
}

/// `m` replicates `primary`'s stream over links that are up: directly, or through a chain
/// of replicas (right after a `FAILOVER` the other replicas still follow the demoted
/// primary, which follows the new one). What it holds came from `primary`; an offset ahead
/// of the primary's is only the skew between two observations taken under writes.
fn fed_by(primary: &ObservedMember, m: &ObservedMember, obs: &Observed) -> bool {
    let mut at = m;
    // Each hop moves to another member; a chain longer than the group is a loop.
    for _ in 0..obs.members.len() {
        let Some(r) = at.report.as_ref().filter(|r| r.link_up) else {
            return false;
        };
        match r.following {
            Some(addr) if addr == primary.addr => return true,
            Some(addr) => match obs.members.iter().find(|x| x.addr == addr) {
                Some(next) if next.name != m.name => at = next,
                _ => return false,
            },
            None => return false,
        }
    }
    false
}

/// Whether `primary` is known to hold everything the stopped `member` held when last seen.
fn held_by(primary: &ObservedMember, member: Option<&ObservedMember>) -> bool {
    let (Standing::Now(p), Some(m)) = (history::standing(primary), member) else {
        return false;
    };
    match history::standing(m) {
        Standing::Recorded(h) | Standing::Now(h) => history::contains(p, h),
        Standing::Unknown => false,
    }
}

/// A demoted primary still has the clients it took writes from: a replica whose last known
/// role was primary, in the same server process, or one already marked and not yet fenced.
/// A restarted process has none of the old clients.
pub(super) fn fence_pending(m: &ObservedMember) -> bool {
    let Some(known) = &m.last_known else {
        return false;
    };
    let Some(r) = m.report.as_ref().filter(|_| m.running) else {
        // Down or not answering: what was pending stays pending (a process that is gone
        // took its connections with it, and is forgotten once it answers again).
        return known.fence_pending && m.running;
    };
    let same_process = match (known.started_unix, r.started_unix) {
        (Some(then), Some(now)) => then.abs_diff(now) <= 2,
        _ => true,
    };
    same_process
        && r.role == Role::Replica
        && (known.fence_pending || known.role == KnownRole::Primary)
}

/// Several members answer as primary (split brain). The one with the newer replication
/// history wins (rule 2), whatever its followers or the endpoint say: those only break a tie
/// between equal histories. The others replicate it and are fenced.
fn resolve_split(input: &Input<'_>, plan: Plan, primaries: &[&ObservedMember]) -> Plan {
    let obs = input.observed;
    let followers = |p: &ObservedMember| {
        obs.members
            .iter()
            .filter(|m| {
                m.report
                    .as_ref()
                    .is_some_and(|r| r.following == Some(p.addr))
            })
            .count()
    };
    let tie = |p: &ObservedMember| {
        (
            followers(p),
            obs.endpoint == Some(p.addr),
            std::cmp::Reverse(p.ordinal),
        )
    };
    let histories: Option<Vec<(&ObservedMember, Held<'_>)>> = primaries
        .iter()
        .map(|p| match history::standing(p) {
            Standing::Now(h) => Some((*p, h)),
            _ => None,
        })
        .collect();
    let winner = match histories {
        Some(held) => held
            .iter()
            .copied()
            .reduce(|best, next| {
                let wins = history::newer(next.1, best.1)
                    || (!history::newer(best.1, next.1) && tie(next.0) > tie(best.0));
                if wins { next } else { best }
            })
            .map(|(p, _)| p),
        None => {
            if let Some(loading) = primaries
                .iter()
                .find(|p| p.report.as_ref().is_some_and(|r| r.loading))
            {
                return plan.wait(
                    Blocker::InProgress,
                    format!(
                        "{} answers as primary but is loading: its history is not known yet",
                        loading.name
                    ),
                    input.settings.probe_interval,
                );
            }
            // No replication IDs (an engine that reports none): by keys, as a last resort.
            primaries
                .iter()
                .copied()
                .max_by_key(|p| (p.holds_data(), p.report.as_ref().map(|r| r.offset), tie(p)))
        }
    };
    let Some(winner) = winner else {
        return plan.wait(
            Blocker::NoPrimary,
            "no primary",
            input.settings.probe_interval,
        );
    };
    let losers: Vec<String> = primaries
        .iter()
        .filter(|p| p.name != winner.name)
        .map(|p| p.name.clone())
        .collect();
    plan.act(
        Action::Replicate {
            members: losers,
            primary: winner.name.clone(),
        },
        input.settings.probe_interval,
    )
}

/// Members that may become primary: ready (answering, loaded) and not full-syncing.
pub(super) fn promotable<'a>(members: &[&'a ObservedMember]) -> Vec<&'a ObservedMember> {
    promotable_aborting(members, None)
}

/// A member is syncing for the purpose of promotion: loading, or full-syncing from anything
/// but `aborting` (a sync that promoting the member cancels before it touches the data).
fn syncing(m: &ObservedMember, aborting: Option<std::net::SocketAddr>) -> bool {
    m.report
        .as_ref()
        .is_none_or(|r| r.loading || (r.syncing && (aborting.is_none() || r.following != aborting)))
}

/// [`promotable`], not counting a full sync from `aborting` against a member.
fn promotable_aborting<'a>(
    members: &[&'a ObservedMember],
    aborting: Option<std::net::SocketAddr>,
) -> Vec<&'a ObservedMember> {
    members
        .iter()
        .copied()
        .filter(|m| m.ready() && !syncing(m, aborting))
        .collect()
}

/// Members a scale-down is removing are promoted only when no member that stays can be: one
/// would have to hand over again at once.
fn prefer_staying(candidates: Vec<&ObservedMember>) -> Vec<&ObservedMember> {
    if candidates.iter().any(|m| !m.retiring) {
        candidates.into_iter().filter(|m| !m.retiring).collect()
    } else {
        candidates
    }
}

#[allow(clippy::too_many_arguments)]
pub(super) async fn choose_and_promote<P: Policies>(
    input: &Input<'_>,
    policies: &P,
    mut plan: Plan,
    reason: SelectionReason,
    last_primary: Option<&ObservedMember>,
    candidates: &[&ObservedMember],
    repoint: Vec<String>,
    fence: Vec<String>,
    aborting: Option<std::net::SocketAddr>,
) -> Plan {
    let obs = input.observed;
    let s = input.settings;
    let request = SelectionRequest {
        reason,
        cluster: members::cluster(obs, input.spec),
        primary: last_primary.map(|p| members::member(p, None, &obs.desired_revision)),
        candidates: candidates
            .iter()
            .map(|m| {
                let mut record = members::member(m, None, &obs.desired_revision);
                // Documented in the WIT: the sync the promotion aborts is not reported.
                record.syncing = syncing(m, aborting);
                record
            })
            .collect(),
        config: kvpilot_sdk::empty_config(),
    };
    match policies.select_replica(request).await {
        Err(e) => policy_failed(plan, e, s.policy_retry),
        Ok(decided) => {
            plan.decisions.push(decided.record);
            match decided.answer {
                Selection::Wait(reason) => plan.wait(Blocker::NoPrimary, reason, s.probe_interval),
                Selection::Promote(name) => {
                    let repoint = repoint.into_iter().filter(|n| *n != name).collect();
                    plan.act(
                        Action::Failover {
                            promote: name,
                            reason,
                            repoint,
                            fence,
                        },
                        s.probe_interval,
                    )
                }
            }
        }
    }
}

pub(super) fn policy_failed(plan: Plan, e: PolicyError, retry: std::time::Duration) -> Plan {
    plan.wait(Blocker::PolicyFailed, e.to_string(), retry)
}

/// Members to start: not running, and not being removed by a scale-down.
fn not_running<'a>(members: impl Iterator<Item = &'a ObservedMember>) -> Vec<String> {
    members
        .filter(|m| !m.running && !m.retiring)
        .map(|m| m.name.clone())
        .collect()
}

fn answering<'a>(members: impl Iterator<Item = &'a ObservedMember>) -> Vec<String> {
    members
        .filter(|m| m.running && m.report.is_some())
        .map(|m| m.name.clone())
        .collect()
}
