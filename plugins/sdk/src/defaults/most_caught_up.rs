//! `most-caught-up`: replica selection.
//!
//! Among the eligible candidates the one with the highest replication offset wins; ties go to
//! the lowest ordinal. Who is eligible depends on why a new primary is needed:
//!
//! - planned handover: ready, on the desired revision, link up, not syncing, and lagging at most
//!   `maxLagBytes` when that is set;
//! - primary lost: ready and not syncing (the old revision is allowed and the link is down
//!   anyway, since the primary is dead);
//! - primary empty: ready, not syncing and holding data.
//!
//! Whatever the reason, an empty candidate is never chosen while another candidate holds data
//! (docs/architecture.md, safety rule 2). With `preferZone`, eligible candidates in that zone win over the
//! others. When no candidate is eligible the answer is `wait`, naming each candidate and what
//! it lacks.
//!
//! Config: `{"maxLagBytes": u64, "preferZone": "zone"}`, both optional. `maxLagBytes` applies
//! to planned handovers only: once the primary is lost, the most caught-up member is the one
//! that loses the least data, however far behind it is.

use super::config_object;
use crate::prelude::*;
use crate::types::{Member, PluginInfo, Selection, SelectionReason, SelectionRequest};
use serde_json::Value;

/// The plugin's settings.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Config {
    /// Planned handovers only consider candidates lagging at most this many bytes.
    pub max_lag_bytes: Option<u64>,
    /// Prefer eligible candidates in this topology zone.
    pub prefer_zone: Option<String>,
}

/// Who the plugin is.
pub fn info() -> PluginInfo {
    PluginInfo {
        name: "most-caught-up".into(),
        version: "0.1.0".into(),
        description: "Promotes the ready replica with the highest replication offset, never an \
                      empty one while another holds data."
            .into(),
    }
}

/// Check the settings; the message names the bad field.
pub fn validate_config(config: &str) -> Result<(), String> {
    parse_config(config).map(|_| ())
}

/// Parse `{"maxLagBytes": u64, "preferZone": string}` (both optional, `null` means unset).
pub fn parse_config(config: &str) -> Result<Config, String> {
    let map = config_object(config, &["maxLagBytes", "preferZone"])?;
    let max_lag_bytes = match map.get("maxLagBytes") {
        None | Some(Value::Null) => None,
        Some(v) => Some(v.as_u64().ok_or_else(|| {
            format!("maxLagBytes: expected a whole number of bytes (0 or more), got `{v}`")
        })?),
    };
    let prefer_zone = match map.get("preferZone") {
        None | Some(Value::Null) => None,
        Some(Value::String(z)) if z.is_empty() => {
            return Err("preferZone: must not be empty".into());
        }
        Some(Value::String(z)) => Some(z.clone()),
        Some(v) => {
            return Err(format!(
                "preferZone: expected a zone name (a string), got `{v}`"
            ));
        }
    };
    Ok(Config {
        max_lag_bytes,
        prefer_zone,
    })
}

/// Choose the candidate to promote, or say why none can be.
pub fn select(req: &SelectionRequest) -> Result<Selection, String> {
    let config = parse_config(&req.config)?;
    if req.candidates.is_empty() {
        return Ok(Selection::Wait("no candidates were offered".into()));
    }
    let holder = req
        .candidates
        .iter()
        .find(|m| !m.is_empty())
        .map(|m| m.name.as_str());
    // Eligibility first, without building messages: they are only needed when nobody is
    // eligible.
    let mut eligible: Vec<&Member> = Vec::with_capacity(req.candidates.len());
    eligible.extend(
        req.candidates
            .iter()
            .filter(|m| is_eligible(m, req.reason, &config, holder)),
    );
    if let Some(zone) = &config.prefer_zone
        && eligible.iter().any(|m| m.zone.as_ref() == Some(zone))
    {
        eligible.retain(|m| m.zone.as_ref() == Some(zone));
    }
    let best = eligible.into_iter().max_by(|a, b| {
        a.offset
            .cmp(&b.offset)
            .then(b.ordinal.cmp(&a.ordinal))
            .then(b.name.cmp(&a.name))
    });
    Ok(match best {
        Some(m) => Selection::Promote(m.name.clone()),
        None => {
            let refused: Vec<String> = req
                .candidates
                .iter()
                .map(|m| {
                    let lacks = shortcomings(m, req.reason, &config, holder);
                    format!("{} {}", m.name, lacks.join(", "))
                })
                .collect();
            Selection::Wait(format!(
                "no candidate can be promoted ({}): {}",
                reason_text(req.reason),
                refused.join("; ")
            ))
        }
    })
}

/// Whether `m` may be promoted for `reason`: exactly when [`shortcomings`] is empty.
fn is_eligible(m: &Member, reason: SelectionReason, config: &Config, holder: Option<&str>) -> bool {
    if !m.ready || m.syncing {
        return false;
    }
    if reason == SelectionReason::PlannedHandover
        && (!m.on_desired_revision
            || !m.link_up
            || config.max_lag_bytes.is_some_and(|max| m.lag_bytes > max))
    {
        return false;
    }
    !(m.is_empty() && (reason == SelectionReason::PrimaryEmpty || holder.is_some()))
}

/// What keeps `m` from being promoted for `reason`; empty when it is eligible. `holder` is a
/// candidate that holds data, if any.
fn shortcomings(
    m: &Member,
    reason: SelectionReason,
    config: &Config,
    holder: Option<&str>,
) -> Vec<String> {
    let mut lacks = Vec::new();
    if !m.ready {
        lacks.push("is not ready".to_string());
    }
    if m.syncing {
        lacks.push("is syncing".to_string());
    }
    if reason == SelectionReason::PlannedHandover {
        if !m.on_desired_revision {
            lacks.push("is not on the desired revision".to_string());
        }
        if !m.link_up {
            lacks.push("has its replication link down".to_string());
        }
        if let Some(max) = config.max_lag_bytes
            && m.lag_bytes > max
        {
            lacks.push(format!("lags {} bytes (maxLagBytes {max})", m.lag_bytes));
        }
    }
    if m.is_empty() {
        match holder {
            _ if reason == SelectionReason::PrimaryEmpty => {
                lacks.push("holds no data".to_string());
            }
            Some(holder) => lacks.push(format!("is empty while {holder} holds data")),
            None => {}
        }
    }
    lacks
}

fn reason_text(reason: SelectionReason) -> &'static str {
    match reason {
        SelectionReason::PlannedHandover => "planned handover",
        SelectionReason::PrimaryLost => "primary lost",
        SelectionReason::PrimaryEmpty => "primary empty",
    }
}

/// `builtin:most-caught-up` as a [`Policy`](crate::Policy): what its component exports.
pub struct MostCaughtUp;

impl crate::Policy for MostCaughtUp {
    const HOOKS: &'static [crate::Hook] = &[crate::Hook::ReplicaSelection];

    fn info() -> PluginInfo {
        info()
    }

    fn validate_config(config: &str) -> Result<(), String> {
        validate_config(config)
    }

    fn select(request: &crate::types::SelectionRequest) -> Result<crate::types::Selection, String> {
        select(request)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::defaults::testing::{cluster, member, shard};
    use crate::types::Role;

    fn request(reason: SelectionReason, candidates: Vec<Member>, config: &str) -> SelectionRequest {
        SelectionRequest {
            reason,
            cluster: cluster(),
            primary: Some(member(0, Role::Primary)),
            candidates,
            config: config.into(),
        }
    }

    fn replicas(n: u32) -> Vec<Member> {
        shard(n + 1).into_iter().skip(1).collect()
    }

    fn pick(reason: SelectionReason, candidates: Vec<Member>, config: &str) -> Selection {
        select(&request(reason, candidates, config)).unwrap()
    }

    fn promote(name: &str) -> Selection {
        Selection::Promote(name.into())
    }

    fn wait_text(s: Selection) -> String {
        match s {
            Selection::Wait(text) => text,
            other => panic!("expected wait, got {other:?}"),
        }
    }

    use SelectionReason::{PlannedHandover, PrimaryEmpty, PrimaryLost};

    #[test]
    fn info_names_the_plugin() {
        let i = info();
        assert_eq!(i.name, "most-caught-up");
        assert_eq!(i.version, "0.1.0");
        assert!(!i.description.is_empty());
    }

    #[test]
    fn config_is_checked_field_by_field() {
        assert_eq!(parse_config("{}"), Ok(Config::default()));
        assert_eq!(
            parse_config(r#"{"maxLagBytes": 4096, "preferZone": "eu-1a"}"#),
            Ok(Config {
                max_lag_bytes: Some(4096),
                prefer_zone: Some("eu-1a".into())
            })
        );
        assert_eq!(
            parse_config(r#"{"maxLagBytes": null}"#),
            Ok(Config {
                max_lag_bytes: None,
                prefer_zone: None
            })
        );
        let err = validate_config(r#"{"maxLagBytes": "big"}"#).unwrap_err();
        assert!(
            err.starts_with("maxLagBytes: expected a whole number"),
            "{err}"
        );
        let err = validate_config(r#"{"maxLagBytes": -1}"#).unwrap_err();
        assert!(err.starts_with("maxLagBytes:"), "{err}");
        let err = validate_config(r#"{"maxLagBytes": 1.5}"#).unwrap_err();
        assert!(err.starts_with("maxLagBytes:"), "{err}");
        let err = validate_config(r#"{"preferZone": 3}"#).unwrap_err();
        assert!(err.starts_with("preferZone: expected a zone name"), "{err}");
        assert_eq!(
            validate_config(r#"{"preferZone": ""}"#).unwrap_err(),
            "preferZone: must not be empty"
        );
        let err = validate_config(r#"{"maxlagbytes": 1}"#).unwrap_err();
        assert!(err.starts_with("maxlagbytes: unknown field"), "{err}");
        assert!(validate_config("nope").is_err());
        // A bad config is a plugin error, not a wait.
        assert!(select(&request(PlannedHandover, replicas(2), r#"{"x":1}"#)).is_err());
    }

    #[test]
    fn highest_offset_wins() {
        let mut c = replicas(2);
        c[0].offset = 900;
        c[1].offset = 950;
        assert_eq!(pick(PlannedHandover, c, "{}"), promote("cache-2"));
    }

    #[test]
    fn ties_go_to_the_lowest_ordinal() {
        let mut c = replicas(3);
        c.reverse();
        assert_eq!(pick(PlannedHandover, c, "{}"), promote("cache-1"));
    }

    #[test]
    fn planned_handover_needs_a_current_healthy_replica() {
        let mut c = replicas(4);
        for m in &mut c {
            m.offset = 2000; // all better than the one eligible replica
        }
        c[0].ready = false;
        c[1].on_desired_revision = false;
        c[2].link_up = false;
        c[3].syncing = true;
        let text = wait_text(pick(PlannedHandover, c.clone(), "{}"));
        assert!(text.contains("planned handover"), "{text}");
        assert!(text.contains("cache-1 is not ready"), "{text}");
        assert!(
            text.contains("cache-2 is not on the desired revision"),
            "{text}"
        );
        assert!(
            text.contains("cache-3 has its replication link down"),
            "{text}"
        );
        assert!(text.contains("cache-4 is syncing"), "{text}");

        let mut good = member(5, Role::Replica);
        good.offset = 10;
        c.push(good);
        assert_eq!(pick(PlannedHandover, c, "{}"), promote("cache-5"));
    }

    #[test]
    fn max_lag_bytes_limits_planned_handovers_only() {
        let mut c = replicas(2);
        c[0].lag_bytes = 5000;
        c[0].offset = 5000;
        c[1].lag_bytes = 100;
        c[1].offset = 100;
        assert_eq!(pick(PlannedHandover, c.clone(), "{}"), promote("cache-1"));
        let limited = r#"{"maxLagBytes": 1000}"#;
        assert_eq!(
            pick(PlannedHandover, c.clone(), limited),
            promote("cache-2")
        );
        c[1].lag_bytes = 1001;
        let text = wait_text(pick(PlannedHandover, c.clone(), limited));
        assert!(
            text.contains("cache-1 lags 5000 bytes (maxLagBytes 1000)"),
            "{text}"
        );
        assert!(text.contains("cache-2 lags 1001 bytes"), "{text}");
        assert_eq!(pick(PrimaryLost, c, limited), promote("cache-1"));
    }

    #[test]
    fn prefer_zone_chooses_among_that_zone_when_possible() {
        let mut c = replicas(3);
        for (m, (zone, offset)) in c.iter_mut().zip([("a", 10), ("b", 30), ("b", 20)]) {
            m.zone = Some(zone.into());
            m.offset = offset;
        }
        assert_eq!(pick(PlannedHandover, c.clone(), "{}"), promote("cache-2"));
        assert_eq!(
            pick(PlannedHandover, c.clone(), r#"{"preferZone":"a"}"#),
            promote("cache-1")
        );
        assert_eq!(
            pick(PlannedHandover, c.clone(), r#"{"preferZone":"b"}"#),
            promote("cache-2")
        );
        // No eligible candidate in the zone: the best of the rest.
        assert_eq!(
            pick(PlannedHandover, c.clone(), r#"{"preferZone":"z"}"#),
            promote("cache-2")
        );
        c[0].ready = false;
        assert_eq!(
            pick(PlannedHandover, c, r#"{"preferZone":"a"}"#),
            promote("cache-2")
        );
    }

    #[test]
    fn primary_lost_allows_stale_and_unlinked_candidates() {
        let mut c = replicas(3);
        for m in &mut c {
            m.link_up = false;
        }
        c[0].on_desired_revision = false;
        c[0].offset = 3000;
        c[1].offset = 2000;
        c[2].ready = false;
        c[2].offset = 9000;
        assert_eq!(pick(PrimaryLost, c.clone(), "{}"), promote("cache-1"));
        c[0].syncing = true;
        assert_eq!(pick(PrimaryLost, c, "{}"), promote("cache-2"));
    }

    #[test]
    fn primary_lost_never_chooses_an_empty_member_while_another_holds_data() {
        let mut c = replicas(2);
        c[0].keys = 0;
        c[0].offset = 5000;
        c[1].offset = 10;
        assert_eq!(pick(PrimaryLost, c.clone(), "{}"), promote("cache-2"));
        // The data holder is not ready: wait for it rather than promote the empty one.
        c[1].ready = false;
        let text = wait_text(pick(PrimaryLost, c.clone(), "{}"));
        assert!(
            text.contains("cache-1 is empty while cache-2 holds data"),
            "{text}"
        );
        assert!(text.contains("cache-2 is not ready"), "{text}");
        // Nobody holds data (a new cluster): an empty member is fine.
        c[1].keys = 0;
        c[1].ready = true;
        assert_eq!(pick(PrimaryLost, c, "{}"), promote("cache-1"));
    }

    #[test]
    fn primary_empty_only_promotes_data_holders() {
        let mut c = replicas(3);
        c[0].keys = 0;
        c[0].offset = 9999;
        c[1].offset = 10;
        c[2].offset = 20;
        c[2].on_desired_revision = false;
        c[2].link_up = false;
        assert_eq!(pick(PrimaryEmpty, c.clone(), "{}"), promote("cache-3"));
        for m in &mut c {
            m.keys = 0;
        }
        let text = wait_text(pick(PrimaryEmpty, c, "{}"));
        assert!(text.contains("primary empty"), "{text}");
        assert!(text.contains("cache-1 holds no data"), "{text}");
    }

    #[test]
    fn no_candidates_means_wait() {
        let text = wait_text(pick(PlannedHandover, vec![], "{}"));
        assert_eq!(text, "no candidates were offered");
    }

    #[test]
    fn a_hundred_candidates() {
        let mut c = replicas(100);
        for m in &mut c {
            m.offset = 1_000_000 - u64::from(m.ordinal % 37) * 10;
            m.zone = Some(format!("zone-{}", m.ordinal % 3));
        }
        // Offsets peak at ordinals that are multiples of 37: 37 and 74; 37 wins the tie.
        assert_eq!(pick(PlannedHandover, c.clone(), "{}"), promote("cache-37"));
        // zone-2 holds ordinals 2, 5, …, 74 (74 % 3 == 2).
        assert_eq!(
            pick(PlannedHandover, c.clone(), r#"{"preferZone":"zone-2"}"#),
            promote("cache-74")
        );
        for m in &mut c {
            m.ready = m.ordinal == 99;
        }
        assert_eq!(pick(PlannedHandover, c.clone(), "{}"), promote("cache-99"));
        c[98].ready = false;
        let text = wait_text(pick(PlannedHandover, c, "{}"));
        assert!(text.contains("cache-1 is not ready") && text.contains("cache-100 is not ready"));
    }

    #[test]
    fn eligibility_agrees_with_the_shortcomings() {
        let configs = [
            Config::default(),
            Config {
                max_lag_bytes: Some(10),
                prefer_zone: None,
            },
        ];
        let mut checked = 0;
        for bits in 0u32..64 {
            let mut m = member(1, Role::Replica);
            m.ready = bits & 1 != 0;
            m.syncing = bits & 2 != 0;
            m.on_desired_revision = bits & 4 != 0;
            m.link_up = bits & 8 != 0;
            m.lag_bytes = if bits & 16 != 0 { 100 } else { 0 };
            m.keys = if bits & 32 != 0 { 0 } else { 100 };
            for reason in [
                SelectionReason::PlannedHandover,
                SelectionReason::PrimaryLost,
                SelectionReason::PrimaryEmpty,
            ] {
                for config in &configs {
                    for holder in [None, Some("cache-2")] {
                        assert_eq!(
                            is_eligible(&m, reason, config, holder),
                            shortcomings(&m, reason, config, holder).is_empty(),
                            "{m:?} {reason:?} {config:?} {holder:?}"
                        );
                        checked += 1;
                    }
                }
            }
        }
        assert_eq!(checked, 64 * 3 * 2 * 2);
    }
}
