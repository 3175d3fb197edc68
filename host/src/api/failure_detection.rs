//! `spec.failureDetection`: how fast the operator decides that a primary is lost, traded
//! against false alarms. A lost primary that the platform still reports running (hung,
//! partitioned) is stopped through the platform before a replica is promoted (safety rule 7 in
//! `docs/architecture.md`), so a false alarm costs a failover: the bounds keep the fastest
//! setting at two probes of at least 100 ms.

use crate::decide::Settings;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// Bounds of each field, shared by the CRD schema and [`FailureDetectionSpec::validate`].
pub const PROBE_INTERVAL_MS: (u32, u32) = (50, 10_000);
pub const PROBE_TIMEOUT_MS: (u32, u32) = (100, 10_000);
pub const FAILURE_THRESHOLD: (u32, u32) = (2, 20);

/// Failure detection. Unset fields keep the operator's defaults (200 ms, 1000 ms, 3). A
/// primary that stops answering is declared lost after about
/// `failureThreshold × (probeTimeoutMs + probeIntervalMs)`, counted from the first probe it
/// missed (while everything is settled, members are probed every 2 s).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct FailureDetectionSpec {
    /// Milliseconds between probes while something is wrong or moving (no primary, a member
    /// starting or syncing), 50 to 10000; default 200.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 50, max = 10000))]
    pub probe_interval_ms: Option<u32>,
    /// Longest one probe of a member may take (connect, authenticate, `INFO`) before the member
    /// counts as not answering, in milliseconds, 100 to 10000; default 1000. Connecting alone
    /// is cut off after 500 ms. Shorter detects a hung primary sooner; longer tolerates a
    /// member that answers slowly (a fork of a large dataset, a saturated network) without a
    /// failover.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 100, max = 10000))]
    pub probe_timeout_ms: Option<u32>,
    /// Consecutive probes in which no member answers as primary before the primary counts
    /// as lost and a replica is promoted, 2 to 20; default 3. A primary whose process or pod
    /// is gone counts as lost at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 2, max = 20))]
    pub failure_threshold: Option<u32>,
}

impl FailureDetectionSpec {
    /// `settings` with the fields this spec sets.
    pub fn apply(&self, settings: &Settings) -> Settings {
        let ms = |v: u32| Duration::from_millis(u64::from(v));
        Settings {
            probe_interval: self.probe_interval_ms.map_or(settings.probe_interval, ms),
            probe_timeout: self.probe_timeout_ms.map_or(settings.probe_timeout, ms),
            failure_threshold: self.failure_threshold.unwrap_or(settings.failure_threshold),
            ..settings.clone()
        }
    }

    /// The bounds the schema states, for specs that did not pass an API server (local files).
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        let check = |field: &'static str, value: Option<u32>, (min, max): (u32, u32)| match value {
            Some(v) if v < min || v > max => {
                Err((field, format!("{v} is outside the allowed {min} to {max}")))
            }
            _ => Ok(()),
        };
        check(
            "failureDetection.probeIntervalMs",
            self.probe_interval_ms,
            PROBE_INTERVAL_MS,
        )?;
        check(
            "failureDetection.probeTimeoutMs",
            self.probe_timeout_ms,
            PROBE_TIMEOUT_MS,
        )?;
        check(
            "failureDetection.failureThreshold",
            self.failure_threshold,
            FAILURE_THRESHOLD,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unset_fields_keep_the_operators_settings() {
        let base = Settings {
            probe_interval: Duration::from_millis(100),
            ..Settings::default()
        };
        let applied = FailureDetectionSpec::default().apply(&base);
        assert_eq!(applied.probe_interval, Duration::from_millis(100));
        assert_eq!(applied.probe_timeout, Duration::from_secs(1));
        assert_eq!(applied.failure_threshold, 3);
        let fast = FailureDetectionSpec {
            probe_interval_ms: Some(50),
            probe_timeout_ms: Some(100),
            failure_threshold: Some(2),
        };
        let applied = fast.apply(&base);
        assert_eq!(applied.probe_interval, Duration::from_millis(50));
        assert_eq!(applied.probe_timeout, Duration::from_millis(100));
        assert_eq!(applied.failure_threshold, 2);
        assert_eq!(applied.steady_interval, base.steady_interval);
    }

    #[test]
    fn values_outside_the_bounds_are_refused_with_the_field() {
        let ok = FailureDetectionSpec {
            probe_interval_ms: Some(10_000),
            probe_timeout_ms: Some(100),
            failure_threshold: Some(20),
        };
        assert_eq!(ok.validate(), Ok(()));
        let one_probe = FailureDetectionSpec {
            failure_threshold: Some(1),
            ..Default::default()
        };
        let (field, message) = one_probe.validate().unwrap_err();
        assert_eq!(field, "failureDetection.failureThreshold");
        assert!(message.contains("2 to 20"), "{message}");
        let too_fast = FailureDetectionSpec {
            probe_timeout_ms: Some(10),
            ..Default::default()
        };
        assert_eq!(
            too_fast.validate().unwrap_err().0,
            "failureDetection.probeTimeoutMs"
        );
        let zero = FailureDetectionSpec {
            probe_interval_ms: Some(0),
            ..Default::default()
        };
        assert_eq!(
            zero.validate().unwrap_err().0,
            "failureDetection.probeIntervalMs"
        );
    }
}
