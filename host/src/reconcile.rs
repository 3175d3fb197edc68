//! One reconcile: observe → decide → act → status. Stateless apart from connection reuse, the
//! failure-detection counter, the policy backoff and the snapshots lately started (for the
//! retry delay after a failed one), all of which may be lost at any time.

use crate::act::act;
use crate::api::KvClusterSpec;
use crate::decide::{self, Blocker, Plan, SaveAttempts, Settings};
use crate::observe::{self, Clients, Tracker};
use crate::platform::Platform;
use crate::policy::Policies;
use crate::status::ClusterStatus;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Longest requeue after repeated plugin failures.
const MAX_POLICY_BACKOFF: Duration = Duration::from_secs(60);

/// Drives one cluster on one platform.
pub struct Reconciler<P: Platform> {
    pub name: String,
    pub namespace: String,
    pub platform: P,
    pub clients: Clients,
    pub settings: Settings,
    pub status: ClusterStatus,
    tracker: Tracker,
    policy_failures: u32,
    save_attempts: SaveAttempts,
}

/// What one reconcile did.
#[derive(Debug)]
pub struct Outcome {
    pub plan: Plan,
    /// The action's error, if it failed (also recorded as a Warning event).
    pub error: Option<String>,
}

impl<P: Platform> Reconciler<P> {
    pub fn new(
        name: &str,
        namespace: &str,
        platform: P,
        clients: Clients,
        settings: Settings,
    ) -> Self {
        Reconciler {
            name: name.to_string(),
            namespace: namespace.to_string(),
            platform,
            clients,
            settings,
            status: ClusterStatus::default(),
            tracker: Tracker::default(),
            policy_failures: 0,
            save_attempts: SaveAttempts::default(),
        }
    }

    /// Runs observe → decide → act once and records the result in `self.status`.
    pub async fn reconcile<Q: Policies>(&mut self, spec: &KvClusterSpec, policies: &Q) -> Outcome {
        let now = now_ms();
        let observed = match observe::collect(
            &self.platform,
            spec,
            &self.name,
            &self.namespace,
            &self.clients,
            &mut self.tracker,
        )
        .await
        {
            Ok(o) => o,
            Err(e) => {
                self.status.event(now, true, "ObserveFailed", e.to_string());
                let plan = Plan::new(self.settings.probe_interval);
                return Outcome {
                    plan,
                    error: Some(e.to_string()),
                };
            }
        };
        let snapshot_policy = spec.snapshots.as_ref().and_then(|s| s.policy());
        let input = decide::Input {
            spec,
            observed: &observed,
            settings: &self.settings,
            snapshots: snapshot_policy.as_ref(),
            save_attempts: &self.save_attempts,
        };
        let mut plan = decide::decide(&input, policies).await;
        // Only decisions that say something new become events (the snapshot schedule is
        // asked on every settled reconcile and mostly answers the same).
        let recorded = self.status.record(&observed, &plan, now);
        for d in &recorded {
            let fallback = d
                .fallback_from
                .as_deref()
                .map(|f| format!(" (fallback: {f})"))
                .unwrap_or_default();
            self.status.event(
                now,
                d.fallback_from.is_some(),
                "PolicyDecision",
                format!(
                    "{} {} answered {} in {} µs{fallback}",
                    d.hook,
                    d.plugin,
                    d.answer,
                    d.latency.as_micros()
                ),
            );
        }
        match plan.wait.as_ref() {
            Some(w) if w.blocker == Blocker::PolicyFailed => {
                self.policy_failures = self.policy_failures.saturating_add(1);
                plan.requeue_after = backoff(plan.requeue_after, self.policy_failures);
                self.status
                    .event(now, true, "PolicyFailed", w.reason.clone());
            }
            Some(w)
                if w.blocker == Blocker::RolloutBlocked || w.blocker == Blocker::InvalidSpec =>
            {
                self.policy_failures = 0;
                self.status.event(now, true, "Waiting", w.reason.clone());
            }
            _ => self.policy_failures = 0,
        }
        let mut error = None;
        if let Some(action) = plan.action.as_ref() {
            tracing::info!(cluster = %self.name, action = %action.describe(), "acting");
            let result = act(action, &observed, spec, &self.platform, &self.clients).await;
            self.save_attempts.note(&observed, &plan);
            match result {
                Ok(()) => self.status.event(now, false, "Action", action.describe()),
                Err(e) => {
                    tracing::warn!(cluster = %self.name, error = %e, "action failed");
                    self.status.event(
                        now,
                        true,
                        "ActionFailed",
                        format!("{}: {e}", action.describe()),
                    );
                    error = Some(e.to_string());
                }
            }
        }
        Outcome { plan, error }
    }
}

/// Doubles the delay for each consecutive failure, up to [`MAX_POLICY_BACKOFF`].
fn backoff(base: Duration, failures: u32) -> Duration {
    let factor = 2u32.saturating_pow(failures.saturating_sub(1).min(16));
    base.saturating_mul(factor).min(MAX_POLICY_BACKOFF)
}

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policy_backoff_doubles_and_is_bounded() {
        let base = Duration::from_secs(2);
        assert_eq!(backoff(base, 1), Duration::from_secs(2));
        assert_eq!(backoff(base, 2), Duration::from_secs(4));
        assert_eq!(backoff(base, 3), Duration::from_secs(8));
        assert_eq!(backoff(base, 40), MAX_POLICY_BACKOFF);
    }
}
