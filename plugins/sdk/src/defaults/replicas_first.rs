//! `replicas-first`: rollout order for one shard.
//!
//! 1. Wait while anything is in flight: a member that is not ready or is syncing, or a replica
//!    whose link is down. One exception: when the only member in flight is a stale replica
//!    (say it crash-loops on the old config) and every other member is ready and in sync, it
//!    is restarted first. It serves nothing, so restarting it costs no availability, and the
//!    new revision may be what fixes it.
//! 2. Restart stale replicas one at a time, highest ordinal first, only while every other
//!    member is ready and every other replica is in sync.
//! 3. Then, if the primary is stale: restart it when it has no replicas; otherwise hand over to
//!    the in-sync replica on the desired revision with the highest offset (ties: lowest
//!    ordinal). The old primary comes back as a stale replica and step 2 restarts it.
//! 4. `done` when every member is on the desired revision.
//!
//! A restart only happens while no *other* member is in flight, so at most one member is ever
//! unready because of this plugin, whatever `max-in-flight` allows (0 pauses the rollout).
//! Config: `{}`.

use super::{config_object, names};
use crate::prelude::*;
use crate::types::{Member, PluginInfo, Role, RolloutRequest, Step};

/// Who the plugin is.
pub fn info() -> PluginInfo {
    PluginInfo {
        name: "replicas-first".into(),
        version: "0.1.0".into(),
        description: "Restarts stale replicas one at a time, highest ordinal first, then hands \
                      the primary role to an in-sync replica before the old primary restarts."
            .into(),
    }
}

/// The plugin takes no settings: anything but `{}` (or blank) is an error.
pub fn validate_config(config: &str) -> Result<(), String> {
    config_object(config, &[]).map(|_| ())
}

/// The next step of the shard's rollout.
pub fn next(req: &RolloutRequest) -> Result<Step, String> {
    validate_config(&req.config)?;
    let members = &req.members;
    if members.is_empty() {
        return Ok(wait("no members were observed"));
    }
    if members.iter().all(|m| m.on_desired_revision) {
        return Ok(Step::Done);
    }
    if req.max_in_flight == 0 {
        return Ok(wait("max-in-flight is 0, so the rollout is paused"));
    }
    let in_flight: Vec<(&Member, String)> = members
        .iter()
        .filter_map(|m| in_flight(m).map(|why| (m, why)))
        .collect();
    match in_flight.as_slice() {
        [] => {}
        [(down, why)] if stale_replica(down) => return Ok(restart_down(req, down, why)),
        many => {
            let reasons: Vec<&str> = many.iter().map(|(_, why)| why.as_str()).collect();
            return Ok(wait(&reasons.join("; ")));
        }
    }
    let unknown: Vec<&str> = members
        .iter()
        .filter(|m| m.role == Role::Unknown)
        .map(|m| m.name.as_str())
        .collect();
    if !unknown.is_empty() {
        return Ok(wait(&format!("the role of {} is unknown", names(unknown))));
    }
    let primaries: Vec<&Member> = members.iter().filter(|m| m.role == Role::Primary).collect();
    let primary = match primaries.as_slice() {
        [] => return Ok(wait("no primary is known")),
        [one] => *one,
        many => {
            let all = names(many.iter().map(|m| m.name.as_str()));
            return Ok(wait(&format!(
                "more than one member reports the primary role: {all}"
            )));
        }
    };
    let replicas: Vec<&Member> = members.iter().filter(|m| m.role == Role::Replica).collect();
    let lagging = |except: Option<&str>| -> Vec<String> {
        replicas
            .iter()
            .filter(|m| Some(m.name.as_str()) != except && !m.in_sync(req.max_lag_bytes))
            .map(|m| lags(m, req.max_lag_bytes))
            .collect()
    };

    let stale_replica = replicas
        .iter()
        .filter(|m| !m.on_desired_revision)
        .max_by(|a, b| a.ordinal.cmp(&b.ordinal).then(b.name.cmp(&a.name)));
    if let Some(target) = stale_replica {
        let behind = lagging(Some(&target.name));
        return Ok(if behind.is_empty() {
            Step::Restart(target.name.clone())
        } else {
            wait(&format!(
                "before restarting {}: {}",
                target.name,
                behind.join("; ")
            ))
        });
    }

    // Only the primary is stale.
    if replicas.is_empty() {
        return Ok(Step::Restart(primary.name.clone()));
    }
    let target = replicas
        .iter()
        .filter(|m| m.on_desired_revision && m.in_sync(req.max_lag_bytes))
        .max_by(|a, b| {
            a.offset
                .cmp(&b.offset)
                .then(b.ordinal.cmp(&a.ordinal))
                .then(b.name.cmp(&a.name))
        });
    Ok(match target {
        Some(to) => Step::Handover {
            from: primary.name.clone(),
            to: to.name.clone(),
        },
        None => wait(&format!(
            "no replica of {} is on the desired revision and in sync: {}",
            primary.name,
            lagging(None).join("; ")
        )),
    })
}

/// Stale and not reporting the primary role: a down member's role is `unknown`, because it
/// does not answer.
fn stale_replica(m: &Member) -> bool {
    !m.on_desired_revision && m.role != Role::Primary
}

/// `down` is the only member in flight and a stale replica: restart it when the rest of the
/// shard is healthy (one ready primary, every other replica in sync); otherwise wait, saying
/// what holds it back.
fn restart_down(req: &RolloutRequest, down: &Member, why: &str) -> Step {
    let others = || req.members.iter().filter(|m| m.name != down.name);
    let primaries: Vec<&Member> = others().filter(|m| m.role == Role::Primary).collect();
    let mut blockers: Vec<String> = Vec::new();
    match primaries.as_slice() {
        [_] => {}
        [] => blockers.push("no other member is the primary".into()),
        many => blockers.push(format!(
            "more than one member reports the primary role: {}",
            names(many.iter().map(|m| m.name.as_str()))
        )),
    }
    let unknown: Vec<&str> = others()
        .filter(|m| m.role == Role::Unknown)
        .map(|m| m.name.as_str())
        .collect();
    if !unknown.is_empty() {
        blockers.push(format!("the role of {} is unknown", names(unknown)));
    }
    blockers.extend(
        others()
            .filter(|m| m.role == Role::Replica && !m.in_sync(req.max_lag_bytes))
            .map(|m| lags(m, req.max_lag_bytes)),
    );
    if blockers.is_empty() {
        Step::Restart(down.name.clone())
    } else {
        wait(&format!(
            "{why}; before restarting {}: {}",
            down.name,
            blockers.join("; ")
        ))
    }
}

fn lags(m: &Member, max_lag_bytes: u64) -> String {
    format!(
        "{} lags {} bytes (max {max_lag_bytes})",
        m.name, m.lag_bytes
    )
}

fn wait(reason: &str) -> Step {
    Step::Wait(reason.to_string())
}

/// Why `m` counts as in flight, if it does.
fn in_flight(m: &Member) -> Option<String> {
    if !m.ready {
        Some(format!("{} is not ready", m.name))
    } else if m.syncing {
        Some(format!("{} is syncing", m.name))
    } else if m.role == Role::Replica && !m.link_up {
        Some(format!("{}'s replication link is down", m.name))
    } else {
        None
    }
}

/// `builtin:replicas-first` as a [`Policy`](crate::Policy): what its component exports.
pub struct ReplicasFirst;

impl crate::Policy for ReplicasFirst {
    const HOOKS: &'static [crate::Hook] = &[crate::Hook::RolloutOrder];

    fn info() -> PluginInfo {
        info()
    }

    fn validate_config(config: &str) -> Result<(), String> {
        validate_config(config)
    }

    fn next(request: &crate::types::RolloutRequest) -> Result<crate::types::Step, String> {
        next(request)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::defaults::testing::{cluster, shard};

    fn request(members: Vec<Member>) -> RolloutRequest {
        RolloutRequest {
            cluster: cluster(),
            members,
            max_in_flight: 1,
            max_lag_bytes: 1024,
            config: "{}".into(),
        }
    }

    fn step(members: Vec<Member>) -> Step {
        next(&request(members)).unwrap_or_else(|e| panic!("next failed: {e}"))
    }

    fn stale(n: u32) -> Vec<Member> {
        let mut members = shard(n);
        for m in &mut members {
            m.on_desired_revision = false;
        }
        members
    }

    fn restart(name: &str) -> Step {
        Step::Restart(name.into())
    }

    fn wait_text(s: Step) -> String {
        match s {
            Step::Wait(text) => text,
            other => panic!("expected wait, got {other:?}"),
        }
    }

    #[test]
    fn info_and_config() {
        assert_eq!(info().name, "replicas-first");
        assert_eq!(info().version, "0.1.0");
        assert!(validate_config("{}").is_ok());
        assert!(
            validate_config(r#"{"order": "random"}"#)
                .unwrap_err()
                .starts_with("order: unknown field")
        );
        let mut req = request(stale(3));
        req.config = "[]".into();
        assert!(next(&req).is_err());
    }

    #[test]
    fn all_current_is_done() {
        assert_eq!(step(shard(3)), Step::Done);
        assert_eq!(step(shard(1)), Step::Done);
    }

    #[test]
    fn no_members_waits() {
        assert_eq!(wait_text(step(vec![])), "no members were observed");
    }

    #[test]
    fn a_whole_rollout_of_three_members() {
        let mut members = stale(3);
        // Replicas first, highest ordinal first.
        assert_eq!(step(members.clone()), restart("cache-2"));
        // It comes back on the desired revision, first unready, then syncing.
        members[2].on_desired_revision = true;
        members[2].ready = false;
        assert_eq!(wait_text(step(members.clone())), "cache-2 is not ready");
        members[2].ready = true;
        members[2].syncing = true;
        assert_eq!(wait_text(step(members.clone())), "cache-2 is syncing");
        members[2].syncing = false;
        assert_eq!(step(members.clone()), restart("cache-1"));
        members[1].on_desired_revision = true;
        // Only the primary is stale: hand over to the most caught-up current replica.
        members[1].offset = 999;
        assert_eq!(
            step(members.clone()),
            Step::Handover {
                from: "cache-0".into(),
                to: "cache-2".into()
            }
        );
        // After the handover cache-2 is primary and cache-0 a stale replica.
        members[0].role = Role::Replica;
        members[2].role = Role::Primary;
        assert_eq!(step(members.clone()), restart("cache-0"));
        members[0].on_desired_revision = true;
        assert_eq!(step(members), Step::Done);
    }

    #[test]
    fn handover_ties_go_to_the_lowest_ordinal() {
        let mut members = shard(4);
        members[0].on_desired_revision = false;
        assert_eq!(
            step(members),
            Step::Handover {
                from: "cache-0".into(),
                to: "cache-1".into()
            }
        );
    }

    #[test]
    fn waits_while_another_replica_lags() {
        let mut members = stale(3);
        members[1].lag_bytes = 5000;
        let text = wait_text(step(members.clone()));
        assert_eq!(
            text,
            "before restarting cache-2: cache-1 lags 5000 bytes (max 1024)"
        );
        // The target itself may lag: it is about to restart anyway.
        members[1].lag_bytes = 0;
        members[2].lag_bytes = 5000;
        assert_eq!(step(members), restart("cache-2"));
    }

    #[test]
    fn link_down_replica_is_in_flight() {
        let mut members = stale(3);
        members[1].on_desired_revision = true;
        members[1].link_up = false;
        assert_eq!(
            wait_text(step(members)),
            "cache-1's replication link is down"
        );
    }

    #[test]
    fn every_in_flight_member_is_named() {
        let mut members = stale(4);
        members[1].ready = false;
        members[3].syncing = true;
        assert_eq!(
            wait_text(step(members)),
            "cache-1 is not ready; cache-3 is syncing"
        );
    }

    #[test]
    fn primary_without_replicas_restarts() {
        assert_eq!(step(stale(1)), restart("cache-0"));
    }

    #[test]
    fn primary_waits_for_an_in_sync_current_replica() {
        let mut members = shard(3);
        members[0].on_desired_revision = false;
        members[1].lag_bytes = 2000;
        members[2].lag_bytes = 3000;
        let text = wait_text(step(members.clone()));
        assert!(
            text.starts_with("no replica of cache-0 is on the desired revision and in sync"),
            "{text}"
        );
        assert!(text.contains("cache-1 lags 2000 bytes"), "{text}");
        members[2].lag_bytes = 1024;
        assert_eq!(
            step(members),
            Step::Handover {
                from: "cache-0".into(),
                to: "cache-2".into()
            }
        );
    }

    #[test]
    fn no_primary_or_unknown_roles_wait() {
        let mut members = stale(3);
        members[0].role = Role::Replica;
        assert_eq!(wait_text(step(members.clone())), "no primary is known");
        members[0].role = Role::Unknown;
        assert_eq!(
            wait_text(step(members.clone())),
            "the role of cache-0 is unknown"
        );
        members[0].role = Role::Primary;
        members[1].role = Role::Primary;
        assert_eq!(
            wait_text(step(members)),
            "more than one member reports the primary role: cache-0 and cache-1"
        );
    }

    #[test]
    fn max_in_flight_zero_pauses() {
        let mut req = request(stale(3));
        req.max_in_flight = 0;
        assert!(wait_text(next(&req).unwrap()).contains("paused"));
        // A larger allowance does not restart two at once.
        req.max_in_flight = 3;
        req.members[2].on_desired_revision = true;
        req.members[2].ready = false;
        assert_eq!(wait_text(next(&req).unwrap()), "cache-2 is not ready");
    }

    /// A stale replica that is down, as a member that does not answer is observed.
    fn down(m: &mut Member) {
        m.ready = false;
        m.link_up = false;
        m.role = Role::Unknown;
        m.offset = 0;
        m.keys = 0;
    }

    #[test]
    fn a_stale_replica_that_is_down_is_restarted_first() {
        let mut members = stale(4);
        down(&mut members[1]);
        // Before cache-3 (the highest ordinal): cache-1 serves nothing while it is down.
        assert_eq!(step(members.clone()), restart("cache-1"));
        // The same when it answers but loads, or its link is down.
        let mut loading = stale(4);
        loading[1].syncing = true;
        assert_eq!(step(loading), restart("cache-1"));
        let mut unlinked = stale(4);
        unlinked[1].link_up = false;
        assert_eq!(step(unlinked), restart("cache-1"));
        // Once it runs the desired revision, the others follow in the usual order.
        members[1] = crate::defaults::testing::member(1, Role::Replica);
        assert_eq!(step(members), restart("cache-3"));
    }

    #[test]
    fn a_down_stale_replica_waits_for_the_rest_of_the_shard() {
        let mut members = stale(3);
        down(&mut members[2]);
        members[1].lag_bytes = 5000;
        assert_eq!(
            wait_text(step(members.clone())),
            "cache-2 is not ready; before restarting cache-2: cache-1 lags 5000 bytes (max 1024)"
        );
        // Two members down: restarting one of them would leave two unready.
        members[1].lag_bytes = 0;
        down(&mut members[1]);
        assert_eq!(
            wait_text(step(members)),
            "cache-1 is not ready; cache-2 is not ready"
        );
    }

    #[test]
    fn a_down_member_is_not_restarted_unless_it_is_a_stale_replica() {
        // Down on the desired revision: it is coming up; nothing to restart.
        let mut current = shard(3);
        current[0].on_desired_revision = false;
        current[2].ready = false;
        assert_eq!(wait_text(step(current)), "cache-2 is not ready");
        // The stale primary down: that is a failover, not a rollout step.
        let mut members = stale(3);
        members[0].ready = false;
        assert_eq!(wait_text(step(members.clone())), "cache-0 is not ready");
        down(&mut members[0]);
        assert_eq!(
            wait_text(step(members)),
            "cache-0 is not ready; before restarting cache-0: no other member is the primary"
        );
    }

    #[test]
    fn a_down_stale_replica_needs_every_other_role_known() {
        let mut members = stale(3);
        down(&mut members[2]);
        members[1].role = Role::Unknown;
        assert_eq!(
            wait_text(step(members.clone())),
            "cache-2 is not ready; before restarting cache-2: the role of cache-1 is unknown"
        );
        members[1].role = Role::Primary;
        assert_eq!(
            wait_text(step(members)),
            "cache-2 is not ready; before restarting cache-2: more than one member reports the \
             primary role: cache-0 and cache-1"
        );
    }

    #[test]
    fn a_hundred_members_roll_one_at_a_time() {
        let mut members = stale(100);
        let mut restarted = Vec::new();
        for _ in 0..200 {
            match step(members.clone()) {
                Step::Restart(name) => {
                    let m = members.iter_mut().find(|m| m.name == name).unwrap();
                    assert!(!m.on_desired_revision, "{name} restarted twice");
                    m.on_desired_revision = true;
                    restarted.push(name);
                }
                Step::Handover { from, to } => {
                    for m in &mut members {
                        if m.name == from {
                            m.role = Role::Replica;
                        } else if m.name == to {
                            assert!(m.on_desired_revision);
                            m.role = Role::Primary;
                        }
                    }
                }
                Step::Done => break,
                Step::Wait(reason) => panic!("unexpected wait: {reason}"),
            }
        }
        assert_eq!(restarted.len(), 100);
        assert_eq!(restarted[0], "cache-99");
        assert_eq!(restarted[98], "cache-1");
        assert_eq!(restarted[99], "cache-0");
        assert!(members.iter().all(|m| m.on_desired_revision));
        assert_eq!(
            members
                .iter()
                .find(|m| m.role == Role::Primary)
                .map(|m| m.name.as_str()),
            Some("cache-1")
        );
    }
}
