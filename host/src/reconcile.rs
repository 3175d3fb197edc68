//! One reconcile: observe → decide → act → status. Stateless apart from connection reuse, the
//! failure-detection counter, the backoffs after failed hooks (per hook, see
//! `policy/retry.rs`) and failed actions, and the snapshots lately started (for the retry delay
//! after a failed one), all of which may be lost at any time.

use crate::act::act;
use crate::api::KvClusterSpec;
use crate::decide::{self, Blocker, Plan, SaveAttempts, Settings};
use crate::leadership::{Alone, Leadership};
use crate::observe::{self, Clients, Tracker};
use crate::platform::Platform;
use crate::policy::{HookRetry, Policies, Retrying};
use crate::status::ClusterStatus;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Longest requeue after an action failed repeatedly, before the caps below.
const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// Longest requeue after a handover or restart failed repeatedly: each attempt may pause
/// writes for up to the handover timeout, so retries must thin out.
const MAX_ROLLOUT_ACTION_BACKOFF: Duration = Duration::from_secs(30);
/// Longest requeue after another action failed repeatedly (promotion, repointing): healing
/// must not wait long.
const MAX_ACTION_BACKOFF: Duration = Duration::from_secs(5);

/// Drives one cluster on one platform.
pub struct Reconciler<P: Platform> {
    pub name: String,
    pub namespace: String,
    pub platform: P,
    pub clients: Clients,
    pub settings: Settings,
    pub status: ClusterStatus,
    tracker: Tracker,
    /// Hooks that failed, each backing off on its own.
    hook_retry: HookRetry,
    save_attempts: SaveAttempts,
    /// The last action that failed, until an action succeeds or decide stops asking for it.
    failed_action: Option<FailedAction>,
    /// Asked right before every action (rule 9); [`Alone`] unless an election is in force.
    pub leadership: std::sync::Arc<dyn Leadership>,
}

/// An action that failed, how often in a row, and why (shown in status until it clears).
#[derive(Debug, Clone)]
struct FailedAction {
    action: crate::decide::Action,
    attempts: u32,
    error: String,
    /// Not retried before this time (Unix ms), even if something else wakes the reconciler.
    retry_at_ms: u64,
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
            hook_retry: HookRetry::default(),
            failed_action: None,
            save_attempts: SaveAttempts::default(),
            leadership: std::sync::Arc::new(Alone),
        }
    }

    /// The policies were bound again (a spec change, or a retry of hooks that could not be
    /// bound): every hook gets a fresh try.
    pub fn policies_rebound(&mut self) {
        self.hook_retry.forget();
    }

    /// Runs observe → decide → act once and records the result in `self.status`.
    pub async fn reconcile<Q: Policies>(&mut self, spec: &KvClusterSpec, policies: &Q) -> Outcome {
        let now = now_ms();
        // `spec.failureDetection` overrides the operator's timings field by field.
        let settings = match &spec.failure_detection {
            Some(fd) => fd.apply(&self.settings),
            None => self.settings.clone(),
        };
        let mut observed = match observe::collect(
            &self.platform,
            spec,
            &self.name,
            &self.namespace,
            &self.clients,
            &mut self.tracker,
            settings.probe_timeout,
        )
        .await
        {
            Ok(o) => o,
            Err(e) => {
                self.status.event(now, true, "ObserveFailed", e.to_string());
                let plan = Plan::new(settings.probe_interval);
                return Outcome {
                    plan,
                    error: Some(e.to_string()),
                };
            }
        };
        // What status recorded of each member: all there is to know of one that is down,
        // hung or loading (rules 2 and 7); status survives an operator restart.
        self.status.remember(&mut observed);
        let snapshot_policy = spec.snapshots.as_ref().and_then(|s| s.policy());
        let input = decide::Input {
            spec,
            observed: &observed,
            settings: &settings,
            snapshots: snapshot_policy.as_ref(),
            save_attempts: &self.save_attempts,
        };
        // A hook that failed waits out its backoff alone; the loop and the other hooks go on.
        let retrying = Retrying::new(
            policies,
            std::mem::take(&mut self.hook_retry),
            self.settings.policy_retry,
            now,
        );
        let mut plan = decide::decide(&input, &retrying).await;
        let retried = retrying.finish();
        self.hook_retry = retried.state;
        if let Some(w) = plan
            .wait
            .as_mut()
            .filter(|w| w.blocker == Blocker::PolicyFailed)
        {
            // The loop keeps watching the members at its usual pace: only the failed hook
            // waits (its backoff), never the detection of a lost primary.
            plan.requeue_after = plan.requeue_after.min(self.settings.steady_interval);
            if let Some(hook) = retried.last_failed
                && let Some((failures, left)) = self.hook_retry.state(hook, now)
            {
                w.reason = format!(
                    "{} ({failures} in a row; {hook} is tried again in {} s)",
                    w.reason,
                    left.as_secs()
                );
            }
        }
        // Only decisions that say something new become events (the snapshot schedule is
        // asked on every settled reconcile and mostly answers the same).
        let recorded = self.status.record(&observed, &plan, now);
        // A hook whose plugin cannot be bound is reported whether or not a decision needed
        // it this time (docs/architecture.md, rule 11).
        self.status.unusable_hooks(&policies.bind_problems());
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
        // An event per call that failed; a remembered failure (the hook backing off) is not
        // news.
        for f in &retried.failures {
            self.status.event(
                now,
                true,
                "PolicyFailed",
                format!(
                    "{} ({} in a row; {} is tried again in {} s)",
                    f.error,
                    f.failures,
                    f.hook,
                    f.retry_in.as_secs()
                ),
            );
        }
        if let Some(w) = plan
            .wait
            .as_ref()
            .filter(|w| w.blocker == Blocker::RolloutBlocked || w.blocker == Blocker::InvalidSpec)
        {
            self.status.event(now, true, "Waiting", w.reason.clone());
        }
        // A failure only counts against the action that failed: once decide asks for
        // something else, the earlier failure no longer describes the cluster.
        if self
            .failed_action
            .as_ref()
            .is_some_and(|f| plan.action.as_ref() != Some(&f.action))
        {
            self.failed_action = None;
        }
        let mut error = None;
        if let Some(f) = self.failed_action.as_ref().filter(|f| now < f.retry_at_ms) {
            // Woken early (a watch event, a file change): the backoff still holds.
            plan.requeue_after = Duration::from_millis(f.retry_at_ms - now);
            plan.action = None;
        }
        // Rule 9: the plan was made on an observation that may be old by now (this process
        // may have been paused); a process that does not lead any more drops it.
        if plan.action.is_some()
            && let Err(e) = self.leadership.check()
        {
            tracing::warn!(cluster = %self.name, error = %e, "not acting");
            self.status.event(now, true, "NotLeader", e.to_string());
            plan.action = None;
            return Outcome {
                plan,
                error: Some(e.to_string()),
            };
        }
        if let Some(action) = plan.action.as_ref() {
            tracing::info!(cluster = %self.name, action = %action.describe(), "acting");
            let result = act(
                action,
                &observed,
                spec,
                &self.platform,
                &self.clients,
                &*self.leadership,
            )
            .await;
            self.save_attempts.note(&observed, &plan);
            match result {
                Ok(()) => {
                    self.failed_action = None;
                    self.status
                        .fence_done(&crate::act::fenced(action, &observed));
                    self.status.event(now, false, "Action", action.describe());
                }
                Err(e) => {
                    tracing::warn!(cluster = %self.name, error = %e, "action failed");
                    let attempts = self.failed_action.as_ref().map_or(0, |f| f.attempts) + 1;
                    let cap = if action.is_rollout_step() {
                        MAX_ROLLOUT_ACTION_BACKOFF
                    } else {
                        MAX_ACTION_BACKOFF
                    };
                    plan.requeue_after = backoff(settings.probe_interval, attempts).min(cap);
                    let message = format!(
                        "{} failed ({attempts} in a row, next attempt in {} ms): {e}",
                        action.describe(),
                        plan.requeue_after.as_millis()
                    );
                    self.status.event(now, true, "ActionFailed", message);
                    self.failed_action = Some(FailedAction {
                        action: action.clone(),
                        attempts,
                        error: e.to_string(),
                        retry_at_ms: now.saturating_add(
                            u64::try_from(plan.requeue_after.as_millis()).unwrap_or(u64::MAX),
                        ),
                    });
                    error = Some(e.to_string());
                }
            }
        }
        if let Some(f) = &self.failed_action {
            self.status.action_failed(&f.action, f.attempts, &f.error);
        }
        Outcome { plan, error }
    }
}

/// Doubles the delay for each consecutive failure, up to [`MAX_BACKOFF`].
fn backoff(base: Duration, failures: u32) -> Duration {
    let factor = 2u32.saturating_pow(failures.saturating_sub(1).min(16));
    base.saturating_mul(factor).min(MAX_BACKOFF)
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
    fn action_backoff_starts_at_the_probe_interval() {
        let probe = Duration::from_millis(200);
        assert_eq!(backoff(probe, 1), probe);
        assert_eq!(backoff(probe, 4), Duration::from_millis(1600));
        assert_eq!(
            backoff(probe, 20).min(MAX_ROLLOUT_ACTION_BACKOFF),
            MAX_ROLLOUT_ACTION_BACKOFF
        );
    }
}
