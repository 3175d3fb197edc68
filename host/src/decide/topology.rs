//! Who is the primary: election when it is lost, the data-holding guard when it came back
//! empty, split-brain resolution, replicas and endpoint following the primary.

use super::Input;
use super::members;
use super::plan::{Action, Blocker, Plan};
use crate::observe::ObservedMember;
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
    let candidates = promotable(&answering, input.spec.rollout.max_lag_bytes);
    if candidates.is_empty() {
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

/// Exactly one member answers as primary.
async fn one_primary<'a, P: Policies>(
    input: &Input<'a>,
    policies: &P,
    plan: Plan,
    primary: &'a ObservedMember,
) -> Settled<'a> {
    let obs = input.observed;
    let s = input.settings;
    // Data-holding guard: an empty primary that the data holders do not follow came back
    // without its data. Promote a data holder instead of letting it wipe them.
    if !primary.holds_data() {
        let holders: Vec<&ObservedMember> = obs
            .members
            .iter()
            .filter(|m| m.name != primary.name && m.running && m.holds_data())
            .filter(|m| {
                m.report
                    .as_ref()
                    .is_some_and(|r| !(r.link_up && r.following == Some(primary.addr)))
            })
            .collect();
        if !holders.is_empty() {
            // A holder already full-syncing *from the empty primary* still has its data (the
            // empty payload has not arrived: diskless syncs wait `repl-diskless-sync-delay`)
            // and promoting it aborts that sync, so the sync must not disqualify it.
            let aborting = Some(primary.addr);
            let candidates =
                promotable_aborting(&holders, input.spec.rollout.max_lag_bytes, aborting);
            if candidates.is_empty() {
                return Settled::Done(plan.wait(
                    Blocker::NoPrimary,
                    format!(
                        "primary {} is empty and the members holding data are still loading",
                        primary.name
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
        return Settled::Done(plan.act(
            Action::Start {
                members: stopped,
                replica_of: Some(primary.name.clone()),
            },
            s.probe_interval,
        ));
    }
    let astray: Vec<String> = obs
        .members
        .iter()
        .filter(|m| m.name != primary.name)
        .filter(|m| {
            m.report
                .as_ref()
                .is_some_and(|r| r.role == Role::Replica && r.following != Some(primary.addr))
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
    Settled::Primary(plan, primary)
}

/// Several members answer as primary. Keep the one holding the data that the others follow;
/// the rest replicate it. Never make an empty member the source for members holding data.
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
    let winner = primaries.iter().copied().max_by_key(|p| {
        (
            p.holds_data(),
            followers(p),
            obs.endpoint == Some(p.addr),
            p.report.as_ref().map(|r| r.offset).unwrap_or(0),
            std::cmp::Reverse(p.ordinal),
        )
    });
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

/// Members that may become primary: ready and not syncing; if any of them holds data, only
/// the data holders within `max_lag` of the most advanced one (safety rule 2).
fn promotable<'a>(members: &[&'a ObservedMember], max_lag: u64) -> Vec<&'a ObservedMember> {
    promotable_aborting(members, max_lag, None)
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
    max_lag: u64,
    aborting: Option<std::net::SocketAddr>,
) -> Vec<&'a ObservedMember> {
    let ready: Vec<&ObservedMember> = members
        .iter()
        .copied()
        .filter(|m| m.ready() && !syncing(m, aborting))
        .collect();
    if !ready.iter().any(|m| m.holds_data()) {
        return prefer_staying(ready);
    }
    let best = ready
        .iter()
        .filter(|m| m.holds_data())
        .filter_map(|m| m.report.as_ref().map(|r| r.offset))
        .max()
        .unwrap_or(0);
    let holders = ready
        .into_iter()
        .filter(|m| m.holds_data())
        .filter(|m| {
            m.report
                .as_ref()
                .is_some_and(|r| r.offset >= best.saturating_sub(max_lag))
        })
        .collect();
    prefer_staying(holders)
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
async fn choose_and_promote<P: Policies>(
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
