//! The hook-specific parts of a new plugin: an example decision per hook, a sample request
//! and scenarios whose expected answers are those of the example.

use super::{Plan, fill};
use kvpilot_sdk::{
    Hook, Member, RolloutRequest, ScheduleRequest, SelectionReason, SelectionRequest, SnapshotMode,
};
use serde_json::{Value, json};

const SELECT: &str = r#"
    /// Promotes the ready candidate with the highest offset (ties: the lowest ordinal), never
    /// an empty one while another holds data, never one in `avoid`.
    fn select(request: &SelectionRequest) -> Result<Selection, String> {
        let config = Config::parse(&request.config)?;
        let holds_data = request.candidates.iter().any(|m| m.keys > 0);
        let best = request
            .candidates
            .iter()
            .filter(|m| m.ready && !m.syncing && !config.avoids(&m.name))
            .filter(|m| m.keys > 0 || !holds_data)
            .max_by(|a, b| a.offset.cmp(&b.offset).then(b.ordinal.cmp(&a.ordinal)));
        Ok(match best {
            Some(m) => Selection::Promote(m.name.clone()),
            None => Selection::Wait(format!(
                "none of the {} candidates is ready and holding data",
                request.candidates.len()
            )),
        })
    }
"#;

const SCHEDULE: &str = r#"
    /// Members in name order get the base schedule shifted by their rank times the stagger;
    /// the primary gets none in `replicas-only` mode, replicas none in `primary-only` mode,
    /// members in `avoid` none.
    fn schedule(request: &ScheduleRequest) -> Result<Vec<MemberSchedule>, String> {
        let config = Config::parse(&request.config)?;
        let base: Cron = request
            .schedule
            .parse()
            .map_err(|e| format!("schedule: {e}"))?;
        let mut members: Vec<&Member> = request.members.iter().collect();
        members.sort_by(|a, b| a.name.cmp(&b.name));
        let mut rank: u32 = 0;
        let mut answer = Vec::with_capacity(members.len());
        for m in members {
            let snapshots = match request.mode {
                SnapshotMode::All => true,
                SnapshotMode::PrimaryOnly => m.role == Role::Primary,
                SnapshotMode::ReplicasOnly => m.role == Role::Replica,
            } && !config.avoids(&m.name);
            let cron = if snapshots {
                let shift = rank.saturating_mul(request.stagger_minutes);
                rank += 1;
                let shifted = base.shifted(shift).map_err(|e| format!("{}: {e}", m.name))?;
                Some(shifted.to_string())
            } else {
                None
            };
            answer.push(MemberSchedule {
                member: m.name.clone(),
                cron,
            });
        }
        Ok(answer)
    }
"#;

const NEXT: &str = r#"
    /// Waits while a member is not ready and in sync; restarts stale replicas one at a time,
    /// highest ordinal first; then hands the stale primary over to the most caught-up current
    /// replica not in `avoid`; `done` when every member is current.
    fn next(request: &RolloutRequest) -> Result<Step, String> {
        let config = Config::parse(&request.config)?;
        if request.members.iter().all(|m| m.on_desired_revision) {
            return Ok(Step::Done);
        }
        let busy = request.members.iter().find(|m| {
            !m.ready || m.syncing || (m.role == Role::Replica && !m.link_up)
        });
        if let Some(m) = busy {
            return Ok(Step::Wait(format!("{} is not ready and in sync", m.name)));
        }
        if request.max_in_flight == 0 {
            return Ok(Step::Wait("max-in-flight is 0".into()));
        }
        let stale_replica = request
            .members
            .iter()
            .filter(|m| m.role == Role::Replica && !m.on_desired_revision)
            .max_by_key(|m| m.ordinal);
        if let Some(m) = stale_replica {
            return Ok(Step::Restart(m.name.clone()));
        }
        let Some(primary) = request.members.iter().find(|m| m.role == Role::Primary) else {
            return Ok(Step::Wait("no member is the primary".into()));
        };
        let target = request
            .members
            .iter()
            .filter(|m| m.role == Role::Replica && m.on_desired_revision)
            .filter(|m| m.in_sync(request.max_lag_bytes) && !config.avoids(&m.name))
            .max_by(|a, b| a.offset.cmp(&b.offset).then(b.ordinal.cmp(&a.ordinal)));
        Ok(match target {
            Some(to) => Step::Handover {
                from: primary.name.clone(),
                to: to.name.clone(),
            },
            None if request.members.len() == 1 => Step::Restart(primary.name.clone()),
            None => Step::Wait(format!("no in-sync replica to hand {} over to", primary.name)),
        })
    }
"#;

const SELECT_TEST: &str = r##"
    #[test]
    fn promotes_the_most_caught_up_candidate_holding_data() {
        let request = SelectionRequest::new(
            SelectionReason::PrimaryLost,
            vec![
                Member::replica("cache-1").offset(900).keys(10),
                Member::replica("cache-2").offset(990).keys(0),
            ],
        );
        assert_eq!(
            {{Type}}::select(&request),
            Ok(Selection::Promote("cache-1".into()))
        );
        let avoiding = request.config(r#"{"avoid": ["cache-1"]}"#);
        assert!(matches!({{Type}}::select(&avoiding), Ok(Selection::Wait(_))));
    }
"##;

const SCHEDULE_TEST: &str = r#"
    #[test]
    fn replicas_are_staggered() {
        let request = ScheduleRequest::new(
            "0 3 * * *",
            vec![Member::primary("cache-0"), Member::replica("cache-1"), Member::replica("cache-2")],
        )
        .stagger_minutes(15);
        let crons: Vec<Option<String>> = {{Type}}::schedule(&request)
            .expect("schedules")
            .into_iter()
            .map(|s| s.cron)
            .collect();
        assert_eq!(crons, [None, Some("0 3 * * *".into()), Some("15 3 * * *".into())]);
    }
"#;

const NEXT_TEST: &str = r#"
    #[test]
    fn replicas_go_first() {
        let request = RolloutRequest::new(vec![
            Member::primary("cache-0").stale(),
            Member::replica("cache-1").stale(),
            Member::replica("cache-2"),
        ]);
        assert_eq!({{Type}}::next(&request), Ok(Step::Restart("cache-1".into())));
    }
"#;

/// `src/policy.rs`: the config, `info`, `validate_config` and an example decision per hook,
/// with a unit test each that uses the sdk's builders.
pub(super) fn policy_rs(plan: &Plan) -> String {
    let mut types = vec![];
    let mut test_types = vec!["Member"];
    let mut hook_consts = vec![];
    let mut functions = String::new();
    let mut tests = String::new();
    for hook in &plan.hooks {
        match hook {
            Hook::ReplicaSelection => {
                types.extend(["Selection", "SelectionRequest"]);
                test_types.push("SelectionReason");
                hook_consts.push("Hook::ReplicaSelection");
                functions.push_str(SELECT);
                tests.push_str(SELECT_TEST);
            }
            Hook::SnapshotSchedule => {
                types.extend([
                    "Member",
                    "MemberSchedule",
                    "Role",
                    "ScheduleRequest",
                    "SnapshotMode",
                ]);
                hook_consts.push("Hook::SnapshotSchedule");
                functions.push_str(SCHEDULE);
                tests.push_str(SCHEDULE_TEST);
            }
            Hook::RolloutOrder => {
                types.extend(["Role", "RolloutRequest", "Step"]);
                hook_consts.push("Hook::RolloutOrder");
                functions.push_str(NEXT);
                tests.push_str(NEXT_TEST);
            }
        }
    }
    types.sort_unstable();
    types.dedup();
    test_types.retain(|t| !types.contains(t));
    let mut imports = format!("use kvpilot_sdk::{{{}}};", types.join(", "));
    if plan.hooks.contains(&Hook::SnapshotSchedule) {
        imports.push_str("\nuse kvpilot_sdk::cron::Cron;");
    }
    let description = format!(
        "TODO: one sentence on what {} decides ({}).",
        plan.name,
        plan.hooks
            .iter()
            .map(|h| h.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    );
    let head = fill(include_str!("templates/policy_head.rs.in"), plan)
        .replace("{{imports}}", &imports)
        .replace("{{hook_consts}}", &hook_consts.join(", "))
        .replace("{{description}}", &description);
    let test_imports = if test_types.is_empty() {
        String::new()
    } else {
        format!("    use kvpilot_sdk::{{{}}};\n", test_types.join(", "))
    };
    format!(
        "{head}{functions}}}\n\n// Unit tests with the sdk's builders; the scenario files are run by `tests/scenarios.rs`.\n#[cfg(test)]\nmod tests {{\n    use super::*;\n{test_imports}{}}}\n",
        fill(&tests, plan)
    )
}

/// The cluster of every sample and scenario.
fn cluster() -> Value {
    json!({"name": "cache", "namespace": "default", "engine": "valkey", "replicas-per-shard": 2})
}

/// `request` as a JSON object without its `config` (a scenario gives it beside the request),
/// its cluster the sample one.
fn request_json<T: serde::Serialize>(request: &T) -> Value {
    let mut value = serde_json::to_value(request).unwrap_or(Value::Null);
    if let Value::Object(fields) = &mut value {
        fields.remove("config");
        fields.insert("cluster".into(), cluster());
    }
    value
}

fn holding(member: Member) -> Member {
    member.offset(1000).keys(100)
}

fn selection() -> Value {
    request_json(&SelectionRequest::new(
        SelectionReason::PrimaryLost,
        vec![
            Member::replica("cache-1")
                .offset(900)
                .keys(10)
                .link_up(false),
            Member::replica("cache-2")
                .offset(950)
                .keys(10)
                .link_up(false),
            Member::replica("cache-3")
                .offset(990)
                .keys(0)
                .link_up(false),
        ],
    ))
}

fn schedule(mode: SnapshotMode) -> Value {
    request_json(
        &ScheduleRequest::new(
            "0 3 * * *",
            vec![
                holding(Member::primary("cache-0")),
                holding(Member::replica("cache-1")),
                holding(Member::replica("cache-2")),
            ],
        )
        .mode(mode)
        .stagger_minutes(15),
    )
}

fn rollout(stale_replicas: bool) -> Value {
    let replica = |name: &str, offset: u64| {
        let m = holding(Member::replica(name)).offset(offset);
        if stale_replicas { m.stale() } else { m }
    };
    request_json(
        &RolloutRequest::new(vec![
            holding(Member::primary("cache-0")).stale(),
            replica("cache-1", 990),
            replica("cache-2", 1000),
        ])
        .max_lag_bytes(1 << 20),
    )
}

fn pretty(value: &Value) -> String {
    serde_json::to_string_pretty(value).unwrap_or_default() + "\n"
}

/// `samples/<hook>.json`: a request for `kvpilot policy run --input`.
pub(super) fn sample(hook: Hook) -> String {
    let mut request = match hook {
        Hook::ReplicaSelection => selection(),
        Hook::SnapshotSchedule => schedule(SnapshotMode::ReplicasOnly),
        Hook::RolloutOrder => rollout(true),
    };
    if let Value::Object(fields) = &mut request {
        fields.insert("config".into(), json!({}));
    }
    pretty(&request)
}

fn scenario(description: &str, hook: Hook, config: Value, request: Value, expect: Value) -> String {
    pretty(&json!({
        "description": description,
        "hook": hook.as_str(),
        "config": config,
        "request": request,
        "expect": expect,
    }))
}

/// `scenarios/<name>.json` for `hook`: the example's answers, and a config rejection.
pub(super) fn scenarios(hook: Hook) -> Vec<(String, String)> {
    let name = |what: &str| format!("{hook}-{what}");
    let mut out = match hook {
        Hook::ReplicaSelection => vec![
            (
                name("most-caught-up"),
                scenario(
                    "The primary is lost: the most caught-up candidate that holds data wins (cache-3 is empty).",
                    hook,
                    json!({}),
                    selection(),
                    json!({"answer": {"promote": "cache-2"}}),
                ),
            ),
            (
                name("avoid"),
                scenario(
                    "A member in `avoid` is never promoted.",
                    hook,
                    json!({"avoid": ["cache-2"]}),
                    selection(),
                    json!({"answer": {"promote": "cache-1"}}),
                ),
            ),
        ],
        Hook::SnapshotSchedule => vec![
            (
                name("staggered"),
                scenario(
                    "replicas-only: the primary never snapshots; replicas 15 minutes apart.",
                    hook,
                    json!({}),
                    schedule(SnapshotMode::ReplicasOnly),
                    json!({"answer": [
                        {"member": "cache-0", "cron": null},
                        {"member": "cache-1", "cron": "0 3 * * *"},
                        {"member": "cache-2", "cron": "15 3 * * *"}
                    ]}),
                ),
            ),
            (
                name("avoid"),
                scenario(
                    "all: every member but those in `avoid`, 15 minutes apart.",
                    hook,
                    json!({"avoid": ["cache-1"]}),
                    schedule(SnapshotMode::All),
                    json!({"answer": [
                        {"member": "cache-0", "cron": "0 3 * * *"},
                        {"member": "cache-1", "cron": null},
                        {"member": "cache-2", "cron": "15 3 * * *"}
                    ]}),
                ),
            ),
        ],
        Hook::RolloutOrder => vec![
            (
                name("replicas-first"),
                scenario(
                    "Stale replicas are restarted first, highest ordinal first.",
                    hook,
                    json!({}),
                    rollout(true),
                    json!({"answer": {"restart": "cache-2"}}),
                ),
            ),
            (
                name("handover"),
                scenario(
                    "Only the primary is stale: it hands over to the most caught-up replica not avoided.",
                    hook,
                    json!({"avoid": ["cache-2"]}),
                    rollout(false),
                    json!({"answer": {"handover": {"from": "cache-0", "to": "cache-1"}}}),
                ),
            ),
        ],
    };
    let request = match hook {
        Hook::ReplicaSelection => selection(),
        Hook::SnapshotSchedule => schedule(SnapshotMode::ReplicasOnly),
        Hook::RolloutOrder => rollout(true),
    };
    out.push((
        name("config-rejected"),
        scenario(
            "validate-config names the bad field.",
            hook,
            json!({"avoid": "cache-1"}),
            request,
            json!({"config-rejected": "avoid: expected a list of member names"}),
        ),
    ));
    out
}
