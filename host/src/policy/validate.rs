//! Answer validation: pure functions, shared by the wasm and the native paths. A plugin can
//! choose among what the host offers, never outside it.

use kvpilot_sdk::cron::Cron;
use kvpilot_sdk::{
    MemberSchedule, Role, RolloutRequest, ScheduleRequest, Selection, SelectionRequest, Step,
};
use std::collections::HashMap;

/// Why an answer is refused: the field and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid {
    pub field: String,
    pub message: String,
}

/// A name (or any text) from a plugin's answer as an error quotes it: cleaned and cut
/// (docs/architecture.md, rule 10), so that a hostile answer cannot flood a status message or
/// put a terminal escape in it.
fn quote(text: &str) -> String {
    super::text::one_line(text, super::text::NAME_BYTES)
}

fn invalid(field: impl Into<String>, message: impl Into<String>) -> Invalid {
    Invalid {
        field: field.into(),
        message: message.into(),
    }
}

/// A promoted member must be one of the candidates.
pub fn selection(request: &SelectionRequest, answer: &Selection) -> Result<(), Invalid> {
    match answer {
        Selection::Promote(name) => {
            if request.candidates.iter().any(|c| &c.name == name) {
                Ok(())
            } else {
                Err(invalid(
                    "promote",
                    format!(
                        "`{}` is not a candidate (candidates: {})",
                        quote(name),
                        names(request.candidates.iter().map(|c| c.name.as_str()))
                    ),
                ))
            }
        }
        Selection::Wait(_) => Ok(()),
    }
}

/// Every member of the request appears exactly once, no other member appears, and every
/// schedule parses as a 5-field cron expression.
pub fn schedules(request: &ScheduleRequest, answer: &[MemberSchedule]) -> Result<(), Invalid> {
    let mut seen: HashMap<&str, usize> = request
        .members
        .iter()
        .map(|m| (m.name.as_str(), 0))
        .collect();
    for (i, entry) in answer.iter().enumerate() {
        match seen.get_mut(entry.member.as_str()) {
            None => {
                return Err(invalid(
                    format!("[{i}].member"),
                    format!("`{}` is not a member of the request", quote(&entry.member)),
                ));
            }
            Some(count) if *count > 0 => {
                return Err(invalid(
                    format!("[{i}].member"),
                    format!("`{}` appears more than once", quote(&entry.member)),
                ));
            }
            Some(count) => *count += 1,
        }
        if let Some(cron) = &entry.cron
            && let Err(e) = cron.parse::<Cron>()
        {
            return Err(invalid(
                format!("[{i}].cron"),
                format!(
                    "`{}` for `{}` does not parse: {}",
                    quote(cron),
                    quote(&entry.member),
                    quote(&e)
                ),
            ));
        }
    }
    let mut missing: Vec<&str> = seen
        .into_iter()
        .filter(|(_, count)| *count == 0)
        .map(|(name, _)| name)
        .collect();
    if !missing.is_empty() {
        missing.sort_unstable();
        return Err(invalid(
            "members",
            format!("no schedule for {}", names(missing.into_iter())),
        ));
    }
    Ok(())
}

/// A restart names a stale member; a handover goes from the stale current primary to a
/// replica on the desired revision.
pub fn step(request: &RolloutRequest, answer: &Step) -> Result<(), Invalid> {
    let find = |name: &str| request.members.iter().find(|m| m.name == name);
    match answer {
        Step::Restart(name) => match find(name) {
            None => Err(invalid(
                "restart",
                format!("`{}` is not a member of the shard", quote(name)),
            )),
            Some(m) if m.on_desired_revision => Err(invalid(
                "restart",
                format!("`{}` is already on the desired revision", quote(name)),
            )),
            Some(_) => Ok(()),
        },
        Step::Handover { from, to } => {
            match find(from) {
                None => {
                    return Err(invalid(
                        "handover.from",
                        format!("`{}` is not a member of the shard", quote(from)),
                    ));
                }
                Some(m) if m.role != Role::Primary => {
                    return Err(invalid(
                        "handover.from",
                        format!("`{}` is not the current primary", quote(from)),
                    ));
                }
                Some(m) if m.on_desired_revision => {
                    return Err(invalid(
                        "handover.from",
                        format!("`{}` is already on the desired revision", quote(from)),
                    ));
                }
                Some(_) => {}
            }
            match find(to) {
                None => Err(invalid(
                    "handover.to",
                    format!("`{}` is not a member of the shard", quote(to)),
                )),
                Some(m) if m.role != Role::Replica => Err(invalid(
                    "handover.to",
                    format!("`{}` is not a replica", quote(to)),
                )),
                Some(m) if !m.on_desired_revision => Err(invalid(
                    "handover.to",
                    format!("`{}` is not on the desired revision", quote(to)),
                )),
                Some(_) => Ok(()),
            }
        }
        Step::Wait(_) | Step::Done => Ok(()),
    }
}

fn names<'a>(it: impl Iterator<Item = &'a str>) -> String {
    let list: Vec<&str> = it.collect();
    if list.is_empty() {
        "none".to_string()
    } else {
        list.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kvpilot_sdk::{Cluster, Member, SelectionReason, SnapshotMode};

    fn member(name: &str, role: Role, current: bool) -> Member {
        Member {
            name: name.into(),
            role,
            on_desired_revision: current,
            ready: true,
            link_up: true,
            ..Member::default()
        }
    }

    fn cluster() -> Cluster {
        Cluster {
            name: "cache".into(),
            shards: 1,
            replicas_per_shard: 2,
            ..Cluster::default()
        }
    }

    #[test]
    fn promotion_must_name_a_candidate() {
        let request = SelectionRequest {
            reason: SelectionReason::PrimaryLost,
            cluster: cluster(),
            primary: None,
            candidates: vec![
                member("c-1", Role::Replica, true),
                member("c-2", Role::Replica, true),
            ],
            config: "{}".into(),
        };
        assert_eq!(
            selection(&request, &Selection::Promote("c-2".into())),
            Ok(())
        );
        assert_eq!(selection(&request, &Selection::Wait("no".into())), Ok(()));
        let err = selection(&request, &Selection::Promote("c-0".into())).unwrap_err();
        assert_eq!(err.field, "promote");
        assert!(
            err.message.contains("c-0") && err.message.contains("c-1, c-2"),
            "{}",
            err.message
        );
        // A hostile name is quoted cleaned and cut.
        let hostile = format!("\u{1b}[2J\0{}", "n".repeat(100_000));
        let err = selection(&request, &Selection::Promote(hostile)).unwrap_err();
        assert!(err.message.len() < 600, "{}", err.message.len());
        assert!(!err.message.contains(['\u{1b}', '\0']), "{}", err.message);
        assert!(err.message.contains("more bytes]"), "{}", err.message);
    }

    fn schedule_request() -> ScheduleRequest {
        ScheduleRequest {
            mode: SnapshotMode::ReplicasOnly,
            cluster: cluster(),
            schedule: "0 3 * * *".into(),
            stagger_minutes: 10,
            members: vec![
                member("c-0", Role::Primary, true),
                member("c-1", Role::Replica, true),
            ],
            config: "{}".into(),
        }
    }

    fn entry(member: &str, cron: Option<&str>) -> MemberSchedule {
        MemberSchedule {
            member: member.into(),
            cron: cron.map(String::from),
        }
    }

    #[test]
    fn schedules_cover_every_member_once() {
        let request = schedule_request();
        let good = [entry("c-0", None), entry("c-1", Some("10 3 * * *"))];
        assert_eq!(schedules(&request, &good), Ok(()));

        let missing = [entry("c-1", Some("10 3 * * *"))];
        let err = schedules(&request, &missing).unwrap_err();
        assert_eq!(
            (err.field.as_str(), err.message.as_str()),
            ("members", "no schedule for c-0")
        );

        let twice = [entry("c-0", None), entry("c-0", None), entry("c-1", None)];
        assert_eq!(schedules(&request, &twice).unwrap_err().field, "[1].member");

        let bad_cron = [entry("c-0", None), entry("c-1", Some("61 3 * * *"))];
        let err = schedules(&request, &bad_cron).unwrap_err();
        assert_eq!(err.field, "[1].cron");
        assert!(err.message.contains("61 3 * * *"), "{}", err.message);

        let unknown = [entry("c-0", None), entry("c-1", None), entry("x", None)];
        let err = schedules(&request, &unknown).unwrap_err();
        assert_eq!(err.field, "[2].member");
        assert!(err.message.contains("`x`"), "{}", err.message);
    }

    #[test]
    fn rollout_steps_name_stale_members() {
        let request = RolloutRequest {
            cluster: cluster(),
            members: vec![
                member("c-0", Role::Primary, false),
                member("c-1", Role::Replica, true),
                member("c-2", Role::Replica, false),
            ],
            max_in_flight: 1,
            max_lag_bytes: 0,
            config: "{}".into(),
        };
        assert_eq!(step(&request, &Step::Restart("c-2".into())), Ok(()));
        assert_eq!(step(&request, &Step::Done), Ok(()));
        let err = step(&request, &Step::Restart("c-1".into())).unwrap_err();
        assert_eq!(err.field, "restart");
        assert!(err.message.contains("already on the desired revision"));
        assert_eq!(
            step(&request, &Step::Restart("c-9".into()))
                .unwrap_err()
                .field,
            "restart"
        );

        let handover = |from: &str, to: &str| Step::Handover {
            from: from.into(),
            to: to.into(),
        };
        assert_eq!(step(&request, &handover("c-0", "c-1")), Ok(()));
        assert_eq!(
            step(&request, &handover("c-2", "c-1")).unwrap_err().field,
            "handover.from",
            "from must be the primary"
        );
        let err = step(&request, &handover("c-0", "c-2")).unwrap_err();
        assert_eq!(err.field, "handover.to");
        assert!(err.message.contains("not on the desired revision"));
    }
}
