//! `stagger`: snapshot schedule.
//!
//! Members snapshot at the base schedule shifted by their rank times the stagger interval, so
//! no two members snapshot at the same minute:
//!
//! - replicas-only: the primary never snapshots; the replica of rank r (replicas sorted by
//!   name, r = 0, 1, …) gets the base schedule shifted by r × interval;
//! - primary-only: the primary gets the base schedule, every other member none;
//! - all: every member, ranked by name, gets the base schedule shifted by r × interval.
//!
//! Members whose role is unknown get no schedule in the replicas-only and primary-only modes.
//! Shifts carry minutes into hours and hours into days (see [`Cron::shifted`]); a shift that
//! cron cannot express is an error naming the member. Config: `{}`.

use super::config_object;
use crate::cron::Cron;
use crate::prelude::*;
use crate::types::{Member, MemberSchedule, PluginInfo, Role, ScheduleRequest, SnapshotMode};

/// Who the plugin is.
pub fn info() -> PluginInfo {
    PluginInfo {
        name: "stagger".into(),
        version: "0.1.0".into(),
        description: "Spreads snapshots over time: each member's schedule is the base schedule \
                      shifted by its rank times the stagger interval."
            .into(),
    }
}

/// The plugin takes no settings: anything but `{}` (or blank) is an error.
pub fn validate_config(config: &str) -> Result<(), String> {
    config_object(config, &[]).map(|_| ())
}

/// One schedule per member, in the order of `req.members`.
pub fn schedule(req: &ScheduleRequest) -> Result<Vec<MemberSchedule>, String> {
    validate_config(&req.config)?;
    let base: Cron = req
        .schedule
        .parse()
        .map_err(|e| format!("schedule `{}`: {e}", req.schedule))?;
    let takes_part = |m: &Member| match req.mode {
        SnapshotMode::All => true,
        SnapshotMode::ReplicasOnly => m.role == Role::Replica,
        SnapshotMode::PrimaryOnly => m.role == Role::Primary,
    };
    // Rank by name (then input position, should two members share a name): a total order,
    // so an unstable sort gives the same ranking.
    let mut ranked: Vec<usize> = Vec::with_capacity(req.members.len());
    ranked.extend((0..req.members.len()).filter(|&i| takes_part(&req.members[i])));
    ranked.sort_unstable_by(|&a, &b| {
        req.members[a]
            .name
            .cmp(&req.members[b].name)
            .then(a.cmp(&b))
    });
    let mut out: Vec<MemberSchedule> = req
        .members
        .iter()
        .map(|m| MemberSchedule {
            member: m.name.clone(),
            cron: None,
        })
        .collect();
    for (rank, &i) in ranked.iter().enumerate() {
        let name = &req.members[i].name;
        // The primary-only mode snapshots the primary at the base schedule, unshifted.
        let rank = if req.mode == SnapshotMode::PrimaryOnly {
            0
        } else {
            rank
        };
        let shift = u32::try_from(rank)
            .ok()
            .and_then(|r| r.checked_mul(req.stagger_minutes))
            .ok_or_else(|| {
                format!(
                    "cannot stagger {name}: rank {rank} × {} minutes overflows",
                    req.stagger_minutes
                )
            })?;
        let cron = base
            .shifted(shift)
            .map_err(|e| format!("cannot stagger {name} by {shift} minutes: {e}"))?;
        let mut text = String::with_capacity(24);
        // Writing to a String cannot fail.
        let _ = cron.write_to(&mut text);
        out[i].cron = Some(text);
    }
    Ok(out)
}

/// `builtin:stagger` as a [`Policy`](crate::Policy): what its component exports.
pub struct Stagger;

impl crate::Policy for Stagger {
    const HOOKS: &'static [crate::Hook] = &[crate::Hook::SnapshotSchedule];

    fn info() -> PluginInfo {
        info()
    }

    fn validate_config(config: &str) -> Result<(), String> {
        validate_config(config)
    }

    fn schedule(
        request: &crate::types::ScheduleRequest,
    ) -> Result<Vec<crate::types::MemberSchedule>, String> {
        schedule(request)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::defaults::testing::{cluster, member, shard};

    fn request(
        mode: SnapshotMode,
        schedule: &str,
        stagger: u32,
        members: Vec<Member>,
    ) -> ScheduleRequest {
        ScheduleRequest {
            mode,
            cluster: cluster(),
            schedule: schedule.into(),
            stagger_minutes: stagger,
            members,
            config: "{}".into(),
        }
    }

    /// (member, cron) pairs for compact assertions.
    fn run(req: &ScheduleRequest) -> Vec<(String, Option<String>)> {
        schedule(req)
            .unwrap_or_else(|e| panic!("schedule failed: {e}"))
            .into_iter()
            .map(|s| (s.member, s.cron))
            .collect()
    }

    fn pairs(expected: &[(&str, Option<&str>)]) -> Vec<(String, Option<String>)> {
        expected
            .iter()
            .map(|(m, c)| (m.to_string(), c.map(str::to_string)))
            .collect()
    }

    #[test]
    fn info_and_config() {
        assert_eq!(info().name, "stagger");
        assert_eq!(info().version, "0.1.0");
        assert!(validate_config("{}").is_ok());
        assert!(validate_config("").is_ok());
        let err = validate_config(r#"{"interval": 5}"#).unwrap_err();
        assert_eq!(
            err,
            "interval: unknown field (this plugin takes no settings)"
        );
        assert!(
            validate_config("{")
                .unwrap_err()
                .starts_with("config is not valid JSON")
        );
        assert!(
            validate_config("5")
                .unwrap_err()
                .starts_with("config must be a JSON object")
        );
        let mut req = request(SnapshotMode::All, "0 2 * * *", 10, shard(3));
        req.config = r#"{"x": true}"#.into();
        assert!(schedule(&req).is_err());
    }

    #[test]
    fn replicas_only_staggers_replicas_by_name() {
        let req = request(SnapshotMode::ReplicasOnly, "0 2 * * *", 15, shard(3));
        assert_eq!(
            run(&req),
            pairs(&[
                ("cache-0", None),
                ("cache-1", Some("0 2 * * *")),
                ("cache-2", Some("15 2 * * *"))
            ])
        );
    }

    #[test]
    fn output_follows_input_order_while_rank_follows_names() {
        let mut members = shard(4);
        members.reverse(); // cache-3, cache-2, cache-1, cache-0
        let req = request(SnapshotMode::ReplicasOnly, "30 1 * * *", 20, members);
        assert_eq!(
            run(&req),
            pairs(&[
                ("cache-3", Some("10 2 * * *")),
                ("cache-2", Some("50 1 * * *")),
                ("cache-1", Some("30 1 * * *")),
                ("cache-0", None),
            ])
        );
    }

    #[test]
    fn primary_only_gives_the_base_schedule_to_the_primary() {
        let mut members = shard(3);
        members[2].role = Role::Unknown;
        members.swap(0, 1); // the primary is not first
        let req = request(SnapshotMode::PrimaryOnly, "0 3 * * SUN", 15, members);
        assert_eq!(
            run(&req),
            pairs(&[
                ("cache-1", None),
                ("cache-0", Some("0 3 * * 0")),
                ("cache-2", None)
            ])
        );
    }

    #[test]
    fn all_staggers_every_member_by_name() {
        let req = request(SnapshotMode::All, "*/30 * * * *", 10, shard(3));
        assert_eq!(
            run(&req),
            pairs(&[
                ("cache-0", Some("0,30 * * * *")),
                ("cache-1", Some("10,40 * * * *")),
                ("cache-2", Some("20,50 * * * *")),
            ])
        );
    }

    #[test]
    fn unknown_roles_do_not_snapshot_in_replicas_only() {
        let mut members = shard(3);
        members[1].role = Role::Unknown;
        let req = request(SnapshotMode::ReplicasOnly, "0 2 * * *", 15, members);
        // cache-2 is the only replica, so it has rank 0.
        assert_eq!(
            run(&req),
            pairs(&[
                ("cache-0", None),
                ("cache-1", None),
                ("cache-2", Some("0 2 * * *"))
            ])
        );
    }

    #[test]
    fn shifts_wrap_past_midnight() {
        let req = request(SnapshotMode::ReplicasOnly, "50 23 * * *", 20, shard(4));
        assert_eq!(
            run(&req),
            pairs(&[
                ("cache-0", None),
                ("cache-1", Some("50 23 * * *")),
                ("cache-2", Some("10 0 * * *")),
                ("cache-3", Some("30 0 * * *")),
            ])
        );
    }

    #[test]
    fn zero_interval_gives_everyone_the_base() {
        let req = request(SnapshotMode::All, "@daily", 0, shard(3));
        assert!(
            run(&req)
                .iter()
                .all(|(_, c)| c.as_deref() == Some("0 0 * * *"))
        );
    }

    #[test]
    fn bad_schedules_and_inexpressible_shifts_are_errors() {
        let err = schedule(&request(SnapshotMode::All, "0 25 * * *", 10, shard(2))).unwrap_err();
        assert_eq!(err, "schedule `0 25 * * *`: hour: 25 is out of range 0-23");
        let err = schedule(&request(SnapshotMode::All, "50 23 1 * *", 20, shard(2))).unwrap_err();
        assert!(
            err.starts_with("cannot stagger cache-1 by 20 minutes:"),
            "{err}"
        );
        let err = schedule(&request(SnapshotMode::All, "0,45 10 * * *", 30, shard(2))).unwrap_err();
        assert!(err.contains("cache-1"), "{err}");
    }

    #[test]
    fn a_hundred_members_get_distinct_minutes() {
        let mut members: Vec<Member> = (0..100).map(|i| member(i, Role::Replica)).collect();
        members[42].role = Role::Primary;
        let req = request(SnapshotMode::ReplicasOnly, "0 1 * * *", 5, members.clone());
        let out = run(&req);
        assert_eq!(out.len(), 100);
        assert_eq!(out[42], ("cache-42".to_string(), None));
        let mut times: Vec<Cron> = out
            .iter()
            .filter_map(|(_, c)| c.as_deref())
            .map(|c| c.parse().unwrap())
            .collect();
        assert_eq!(times.len(), 99);
        // Names sort as text: cache-0, cache-1, cache-10, cache-11, …
        assert_eq!(out[0].1.as_deref(), Some("0 1 * * *"));
        assert_eq!(out[1].1.as_deref(), Some("5 1 * * *"));
        assert_eq!(out[10].1.as_deref(), Some("10 1 * * *"));
        // 99 replicas × 5 minutes: the last rank (98) is 490 minutes later, 09:10.
        assert_eq!(out[99].1.as_deref(), Some("10 9 * * *"));
        times.sort_by_key(|c| c.next_after(0));
        times.dedup();
        assert_eq!(times.len(), 99, "every replica snapshots at its own minute");
    }
}
