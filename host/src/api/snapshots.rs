//! `spec.snapshots`: which members snapshot, on what schedule, how far apart, and where the
//! files go. The snapshot-schedule plugin turns this into one schedule per member.

use crate::decide::SnapshotPolicy;
use kvpilot_sdk::SnapshotMode;
use serde::{Deserialize, Serialize};

/// Snapshot settings. Without them the operator leaves snapshots alone.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SnapshotSpec {
    /// `all`, `primaryOnly` or `replicasOnly` (the primary never forks; needs at least 2
    /// replicas).
    #[serde(default)]
    pub mode: SnapshotModeSpec,
    /// Base schedule, a 5-field cron expression in UTC (`minute hour day month weekday`).
    #[schemars(length(min = 1))]
    pub schedule: String,
    /// How far apart consecutive members snapshot, as a duration in whole minutes: `10m`,
    /// `1h`, `1h30m`. The stagger times the number of snapshotting members must fit in the
    /// schedule's period, and each shifted schedule must be expressible in cron (with the
    /// builtin plugin). Unused in primaryOnly, where one member snapshots.
    #[serde(default = "default_stagger")]
    pub stagger_interval: String,
    /// Where snapshot files go: `dataDir` (the member's data directory, an `emptyDir` on
    /// Kubernetes without `storage`) or `persistentVolume` (needs `spec.storage`).
    #[serde(default)]
    pub location: SnapshotLocation,
}

fn default_stagger() -> String {
    "10m".to_string()
}

#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "camelCase")]
pub enum SnapshotModeSpec {
    All,
    PrimaryOnly,
    #[default]
    ReplicasOnly,
}

#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "camelCase")]
pub enum SnapshotLocation {
    #[default]
    DataDir,
    PersistentVolume,
}

impl SnapshotModeSpec {
    pub fn sdk(self) -> SnapshotMode {
        match self {
            SnapshotModeSpec::All => SnapshotMode::All,
            SnapshotModeSpec::PrimaryOnly => SnapshotMode::PrimaryOnly,
            SnapshotModeSpec::ReplicasOnly => SnapshotMode::ReplicasOnly,
        }
    }
}

impl SnapshotSpec {
    /// What `decide` needs; `None` when the interval does not parse (validation says why).
    pub fn policy(&self) -> Option<SnapshotPolicy> {
        Some(SnapshotPolicy {
            mode: self.mode.sdk(),
            schedule: self.schedule.clone(),
            stagger_minutes: parse_minutes(&self.stagger_interval).ok()?,
        })
    }
}

/// `90m`, `1h`, `1h30m`, `0m` → minutes. Seconds are refused: cron has minute resolution.
pub fn parse_minutes(text: &str) -> Result<u32, String> {
    let t = text.trim();
    if t.is_empty() {
        return Err("empty duration".into());
    }
    let mut total: u64 = 0;
    let mut number = String::new();
    let mut seen_unit = false;
    for c in t.chars() {
        if c.is_ascii_digit() {
            number.push(c);
            continue;
        }
        let n: u64 = number
            .parse()
            .map_err(|_| format!("`{text}`: expected a number before `{c}`"))?;
        number.clear();
        total += match c {
            'h' => n * 60,
            'm' => n,
            's' => return Err(format!("`{text}`: use whole minutes (cron has no seconds)")),
            other => return Err(format!("`{text}`: unknown unit `{other}` (use h or m)")),
        };
        seen_unit = true;
    }
    if !number.is_empty() || !seen_unit {
        return Err(format!(
            "`{text}`: a unit (h or m) must follow every number"
        ));
    }
    u32::try_from(total).map_err(|_| format!("`{text}` is too long"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_in_whole_minutes() {
        assert_eq!(parse_minutes("10m"), Ok(10));
        assert_eq!(parse_minutes("1h30m"), Ok(90));
        assert_eq!(parse_minutes("2h"), Ok(120));
        assert!(parse_minutes("30s").unwrap_err().contains("whole minutes"));
        assert!(parse_minutes("10").unwrap_err().contains("unit"));
        assert!(parse_minutes("ten minutes").is_err());
    }
}
