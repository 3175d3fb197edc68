//! The backoff of a failing hook, per hook.
//!
//! A hook that failed under `failurePolicy: Fail` (its call trapped, timed out, answered
//! something invalid, or its plugin could not be bound) is not called again before its
//! backoff has passed: `base` after the first failure, doubling with each failure in a row,
//! at most [`MAX_HOOK_BACKOFF`]. In between, its calls fail at once with the remembered
//! error. Only that hook waits: the reconcile loop keeps observing at its usual interval and
//! the other hooks answer as usual, so a broken rollout-order plugin never delays a failover
//! (docs/architecture.md, rules 6 and 11). The state is in memory and may be lost at any time;
//! losing it only means the hook is tried once more.

use super::{Decided, Hook, HookProblem, Policies, PolicyError};
use kvpilot_sdk::{
    MemberSchedule, RolloutRequest, ScheduleRequest, Selection, SelectionRequest, Step,
};
use std::collections::BTreeMap;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

/// Longest wait before a failing hook is tried again.
pub const MAX_HOOK_BACKOFF: Duration = Duration::from_secs(60);

/// `base`, doubled for each failure in a row after the first, at most [`MAX_HOOK_BACKOFF`].
pub fn backoff(base: Duration, failures: u32) -> Duration {
    let factor = 2u32.saturating_pow(failures.saturating_sub(1).min(16));
    base.saturating_mul(factor).min(MAX_HOOK_BACKOFF)
}

/// The failing hooks of one cluster.
#[derive(Debug, Clone, Default)]
pub struct HookRetry {
    failing: BTreeMap<Hook, Failing>,
}

#[derive(Debug, Clone)]
struct Failing {
    failures: u32,
    /// Not called again before this time (Unix ms).
    retry_at_ms: u64,
    error: PolicyError,
}

/// A call that failed in this reconcile (not a remembered failure), for an event.
#[derive(Debug, Clone, PartialEq)]
pub struct HookFailure {
    pub hook: Hook,
    pub error: PolicyError,
    /// Failures in a row, this one included.
    pub failures: u32,
    /// When the hook is called again, at the earliest.
    pub retry_in: Duration,
}

impl HookRetry {
    /// Forgets every failure: the policies were bound again, so each hook gets a fresh try.
    pub fn forget(&mut self) {
        self.failing.clear();
    }

    /// Failures in a row of `hook` and the time left before it is tried again at `now_ms`.
    pub fn state(&self, hook: Hook, now_ms: u64) -> Option<(u32, Duration)> {
        self.failing.get(&hook).map(|f| {
            (
                f.failures,
                Duration::from_millis(f.retry_at_ms.saturating_sub(now_ms)),
            )
        })
    }

    /// The remembered error of `hook` while it waits at `now_ms`.
    fn waiting(&self, hook: Hook, now_ms: u64) -> Option<PolicyError> {
        self.failing
            .get(&hook)
            .filter(|f| now_ms < f.retry_at_ms)
            .map(|f| f.error.clone())
    }

    /// Records the outcome of a call of `hook` at `now_ms`; returns the failure if it is one.
    fn note(
        &mut self,
        hook: Hook,
        error: Option<&PolicyError>,
        base: Duration,
        now_ms: u64,
    ) -> Option<HookFailure> {
        let Some(error) = error else {
            self.failing.remove(&hook);
            return None;
        };
        let failures = self
            .failing
            .get(&hook)
            .map_or(1, |f| f.failures.saturating_add(1));
        let wait = backoff(base, failures);
        self.failing.insert(
            hook,
            Failing {
                failures,
                retry_at_ms: now_ms
                    .saturating_add(u64::try_from(wait.as_millis()).unwrap_or(u64::MAX)),
                error: error.clone(),
            },
        );
        Some(HookFailure {
            hook,
            error: error.clone(),
            failures,
            retry_in: wait,
        })
    }
}

/// What one reconcile's hook calls left behind.
#[derive(Debug, Default)]
pub struct Retried {
    /// The state to keep for the next reconcile.
    pub state: HookRetry,
    /// The calls that failed in this reconcile (remembered failures are not repeated here).
    pub failures: Vec<HookFailure>,
    /// The hook of the last call that returned an error, remembered or fresh: the one a
    /// `PolicyFailed` wait of this reconcile is about (decide stops at a failed hook).
    pub last_failed: Option<Hook>,
}

/// [`Policies`] that skip a hook while it backs off (see the module docs). Built for one
/// reconcile; [`Retrying::finish`] hands back the state and what happened.
pub struct Retrying<'a, P> {
    inner: &'a P,
    base: Duration,
    now_ms: u64,
    state: Mutex<Retried>,
}

impl<'a, P: Policies> Retrying<'a, P> {
    /// `inner` behind the backoff `state`; a failure waits `base`, doubling.
    pub fn new(inner: &'a P, state: HookRetry, base: Duration, now_ms: u64) -> Self {
        Retrying {
            inner,
            base,
            now_ms,
            state: Mutex::new(Retried {
                state,
                ..Retried::default()
            }),
        }
    }

    /// The state to keep for the next reconcile, and what this one's calls did.
    pub fn finish(self) -> Retried {
        self.state
            .into_inner()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Retried> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    async fn call<T>(
        &self,
        hook: Hook,
        call: impl Future<Output = Result<Decided<T>, PolicyError>>,
    ) -> Result<Decided<T>, PolicyError> {
        let remembered = self.lock().state.waiting(hook, self.now_ms);
        if let Some(error) = remembered {
            self.lock().last_failed = Some(hook);
            return Err(error);
        }
        // No lock is held across the call: the future stays `Send`.
        let result = call.await;
        let mut retried = self.lock();
        let fresh = retried
            .state
            .note(hook, result.as_ref().err(), self.base, self.now_ms);
        if fresh.is_some() {
            retried.last_failed = Some(hook);
        }
        retried.failures.extend(fresh);
        result
    }
}

impl<P: Policies> Policies for Retrying<'_, P> {
    fn bind_problems(&self) -> Vec<HookProblem> {
        self.inner.bind_problems()
    }

    async fn select_replica(
        &self,
        request: SelectionRequest,
    ) -> Result<Decided<Selection>, PolicyError> {
        self.call(Hook::ReplicaSelection, self.inner.select_replica(request))
            .await
    }

    async fn schedule_snapshots(
        &self,
        request: ScheduleRequest,
    ) -> Result<Decided<Vec<MemberSchedule>>, PolicyError> {
        self.call(
            Hook::SnapshotSchedule,
            self.inner.schedule_snapshots(request),
        )
        .await
    }

    async fn rollout_step(&self, request: RolloutRequest) -> Result<Decided<Step>, PolicyError> {
        self.call(Hook::RolloutOrder, self.inner.rollout_step(request))
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::native::NativePolicies;

    fn request() -> RolloutRequest {
        RolloutRequest {
            cluster: kvpilot_sdk::Cluster::default(),
            members: vec![],
            max_in_flight: 1,
            max_lag_bytes: 0,
            config: kvpilot_sdk::empty_config(),
        }
    }

    #[test]
    fn backoff_doubles_and_is_bounded() {
        let base = Duration::from_secs(2);
        assert_eq!(backoff(base, 1), Duration::from_secs(2));
        assert_eq!(backoff(base, 2), Duration::from_secs(4));
        assert_eq!(backoff(base, 3), Duration::from_secs(8));
        assert_eq!(backoff(base, 40), MAX_HOOK_BACKOFF);
    }

    /// A failing hook is not called during its backoff (its remembered error answers), is
    /// called again once it has passed, waits twice as long after a second failure, and
    /// starts over after a success. Other hooks are never held.
    #[tokio::test]
    async fn a_failing_hook_waits_alone_and_is_retried_after_its_backoff() {
        // `{"order": "random"}` makes the native rollout-order fail every call.
        let failing = NativePolicies {
            rollout_order_config: r#"{"order": "random"}"#.into(),
            ..NativePolicies::default()
        };
        let base = Duration::from_secs(2);
        let run = async |policies: &NativePolicies, state: HookRetry, now_ms: u64| {
            let retrying = Retrying::new(policies, state, base, now_ms);
            let result = retrying.rollout_step(request()).await;
            let other = retrying
                .select_replica(SelectionRequest {
                    reason: kvpilot_sdk::SelectionReason::PrimaryLost,
                    cluster: kvpilot_sdk::Cluster::default(),
                    primary: None,
                    candidates: vec![],
                    config: kvpilot_sdk::empty_config(),
                })
                .await;
            assert!(other.is_ok(), "replica-selection is not held: {other:?}");
            let retried = retrying.finish();
            if result.is_err() {
                assert_eq!(retried.last_failed, Some(Hook::RolloutOrder));
            }
            (result, retried.state, retried.failures)
        };

        let (result, state, fresh) = run(&failing, HookRetry::default(), 0).await;
        let error = result.expect_err("fails");
        assert_eq!(fresh.len(), 1);
        assert_eq!(fresh[0].failures, 1);
        assert_eq!(fresh[0].retry_in, base);
        assert_eq!(
            state.state(Hook::RolloutOrder, 500),
            Some((1, Duration::from_millis(1500)))
        );

        // During the backoff: the remembered error, no call (nothing fresh to report).
        let (result, state, fresh) = run(&failing, state, 1_999).await;
        assert_eq!(result.expect_err("remembered"), error);
        assert!(fresh.is_empty(), "{fresh:?}");

        // After it: called again, fails again, waits twice as long.
        let (_, state, fresh) = run(&failing, state, 2_000).await;
        assert_eq!((fresh[0].failures, fresh[0].retry_in), (2, 2 * base));

        // Fixed (here: a good config) and due: the call succeeds and the failures are gone.
        let (result, state, fresh) = run(&NativePolicies::default(), state, 6_000).await;
        assert!(result.is_ok() && fresh.is_empty());
        assert_eq!(state.state(Hook::RolloutOrder, 6_000), None);
    }
}
