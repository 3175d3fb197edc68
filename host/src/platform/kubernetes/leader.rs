//! Leader election through a `coordination.k8s.io/v1` Lease, as client-go does it:
//!
//! - Every Lease call is bounded by [`LeaseTiming::call_timeout`], well under the lease
//!   duration: with the client's default (about 295 s) a leader whose API calls hang would go
//!   on reconciling long after its Lease expired and another replica took over.
//! - The holder tries to renew every [`LeaseTiming::retry_period`], and stops leading as soon
//!   as no renewal has succeeded within [`LeaseTiming::renew_deadline`] of the start of the
//!   last successful attempt, on this process's monotonic clock. The deadline is shorter than
//!   the lease duration, so it stops before anyone else may take over.
//! - Another holder's Lease counts as expired only once its record (holder, renewTime,
//!   transitions) has not changed for a whole lease duration *as observed here*, again on the
//!   local monotonic clock. Comparing its renewTime with our wall clock would trust two clocks
//!   to agree, and a skewed one would let two replicas lead at once.
//!
//! Updates carry the resourceVersion read, so two candidates never both win one round.
//!
//! What the elector publishes is not only "leading" but until when: [`LeaseGate`] answers
//! from the monotonic clock at the moment it is asked, right before every action (safety rule
//! 9). A process that was paused past that moment resumes with its elector task not yet run
//! and the published flag still true; the gate already says no.

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::Client;
use kube::api::{Api, PostParams};
use std::future::Future;
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::Instant;

/// Why a Lease call did not give an answer.
#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    #[error("lease {action} did not answer within {} ms", after.as_millis())]
    Timeout {
        action: &'static str,
        after: Duration,
    },
    #[error("lease {action}: {source}")]
    Api {
        action: &'static str,
        #[source]
        source: kube::Error,
    },
}

/// The timing of one election, derived from the lease duration (client-go's defaults are
/// 15 s, 10 s and 2 s).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseTiming {
    /// How long a Lease stays valid without renewal (written into the Lease).
    pub duration: Duration,
    /// The leader stops leading when no renewal succeeded for this long: 2/3 of `duration`.
    pub renew_deadline: Duration,
    /// Time between attempts: `duration` / 7.5.
    pub retry_period: Duration,
    /// The longest one Lease call may take: a quarter of `renew_deadline`, so an attempt
    /// (a get and a replace) fits twice in it.
    pub call_timeout: Duration,
}

impl LeaseTiming {
    pub fn for_duration(duration: Duration) -> LeaseTiming {
        let renew_deadline = duration * 2 / 3;
        LeaseTiming {
            duration,
            renew_deadline,
            retry_period: duration * 2 / 15,
            call_timeout: renew_deadline / 4,
        }
    }
}

/// What another holder's Lease said, to notice when it changes.
#[derive(Debug, Clone, PartialEq)]
struct Record {
    holder: String,
    renew_time: Option<MicroTime>,
    transitions: Option<i32>,
    duration: Duration,
}

/// When the current record of another holder was first seen here.
#[derive(Debug, Default)]
struct Observer {
    seen: Option<(Record, Instant)>,
}

impl Observer {
    /// Notes `record` as read at `now`; true when it has been unchanged for its whole
    /// duration as observed here. A record seen for the first time (or changed) is valid for
    /// a full duration from now, whatever its timestamps say.
    fn expired(&mut self, record: Record, now: Instant) -> bool {
        match &self.seen {
            Some((seen, at)) if *seen == record => {
                now.saturating_duration_since(*at) >= record.duration
            }
            _ => {
                self.seen = Some((record, now));
                false
            }
        }
    }
}

/// The outcome of one attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Attempt {
    /// This candidate holds the Lease (created, renewed or taken over).
    Held,
    /// Someone else holds it.
    NotHeld,
    /// No answer (an error or a timeout): what was known before stands.
    Failed,
}

/// Whether this candidate leads, from its attempts.
#[derive(Debug, Default)]
struct Leadership {
    /// The start of the last attempt that renewed the Lease, while no one else took it.
    renewed_at: Option<Instant>,
}

impl Leadership {
    fn after(&mut self, started: Instant, attempt: Attempt) {
        match attempt {
            Attempt::Held => self.renewed_at = Some(started),
            Attempt::NotHeld => self.renewed_at = None,
            Attempt::Failed => {}
        }
    }

    /// When leadership ends without another renewal.
    fn deadline(&self, timing: &LeaseTiming) -> Option<Instant> {
        self.renewed_at.map(|at| at + timing.renew_deadline)
    }

    fn leading(&self, now: Instant, timing: &LeaseTiming) -> bool {
        self.deadline(timing).is_some_and(|d| now < d)
    }

    /// How long the next attempt may take: two calls, and while leading no longer than the
    /// time left, so a hanging attempt ends leadership on time.
    fn attempt_limit(&self, now: Instant, timing: &LeaseTiming) -> Duration {
        let calls = timing.call_timeout * 2;
        match self.deadline(timing) {
            Some(d) if now < d => calls.min(d - now),
            _ => calls,
        }
    }
}

/// What the elector last published: whether it leads, and until when without another renewal
/// (the start of the last renewal plus the renew deadline, on this process's monotonic clock).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LeaseState {
    pub leading: bool,
    pub valid_until: Option<Instant>,
}

/// Leadership as the operator's actions ask for it: valid while the clock is before the
/// published deadline, whatever the flag says.
#[derive(Debug, Clone)]
pub struct LeaseGate {
    lease: watch::Receiver<LeaseState>,
}

impl LeaseGate {
    pub fn new(lease: watch::Receiver<LeaseState>) -> LeaseGate {
        LeaseGate { lease }
    }

    /// The flag as last published (what a check at the top of a loop would see).
    pub fn published_leading(&self) -> bool {
        self.lease.borrow().leading
    }
}

impl crate::leadership::Leadership for LeaseGate {
    fn check(&self) -> Result<(), crate::leadership::NotLeader> {
        let state = *self.lease.borrow();
        let now = Instant::now();
        match state.valid_until {
            Some(until) if state.leading && now < until => Ok(()),
            Some(until) if state.leading => Err(crate::leadership::NotLeader(format!(
                "the lease was last renewed more than the renew deadline ago ({} ms past it)",
                now.saturating_duration_since(until).as_millis()
            ))),
            _ => Err(crate::leadership::NotLeader(
                "this operator does not hold the lease".into(),
            )),
        }
    }
}

/// Without `--leader-election` the operator still takes the Lease, but does not stand by for
/// it: it waits only as long as a Lease left by an operator that is gone takes to expire (its
/// duration, as observed here, plus two attempts), and refuses to start when another
/// operator keeps renewing it. Two operators acting on the same clusters would undo each
/// other's steps (rule 9).
pub async fn acquire_exclusive(
    lease: &mut watch::Receiver<LeaseState>,
    timing: LeaseTiming,
    holder: impl Future<Output = Option<String>>,
) -> Result<(), String> {
    let wait = timing.duration + (timing.retry_period + timing.call_timeout) * 2;
    match tokio::time::timeout(wait, lease.wait_for(|l| l.leading)).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(_)) => Err("leader election stopped".into()),
        Err(_) => Err(match holder.await {
            Some(holder) => format!(
                "another kvpilot operator ({holder}) holds the Lease and kept renewing it for {} \
                 s: refusing to start a second one, which would act on the same clusters. Stop \
                 the other operator, or run every replica with --leader-election",
                wait.as_secs()
            ),
            None => format!(
                "could not take the Lease within {} s and cannot read who holds it: see the \
                 `lease renewal failed` warnings (the operator needs get, create and update on \
                 leases.coordination.k8s.io in the Lease's namespace)",
                wait.as_secs()
            ),
        }),
    }
}

/// The identity holding the Lease `namespace/name`, if it can be read.
pub async fn lease_holder(client: Client, namespace: &str, name: &str) -> Option<String> {
    let api: Api<Lease> = Api::namespaced(client, namespace);
    let lease = tokio::time::timeout(Duration::from_secs(5), api.get_opt(name))
        .await
        .ok()?
        .ok()??;
    lease.spec?.holder_identity
}

/// One candidate for the lease `namespace/name`.
pub struct LeaderElector {
    api: Api<Lease>,
    name: String,
    identity: String,
    timing: LeaseTiming,
    observer: Observer,
}

impl LeaderElector {
    pub fn new(
        client: Client,
        namespace: &str,
        name: &str,
        identity: &str,
        duration: Duration,
    ) -> Self {
        LeaderElector {
            api: Api::namespaced(client, namespace),
            name: name.to_string(),
            identity: identity.to_string(),
            timing: LeaseTiming::for_duration(duration),
            observer: Observer::default(),
        }
    }

    pub fn timing(&self) -> LeaseTiming {
        self.timing
    }

    /// `call`, bounded by the call timeout.
    async fn bounded<T>(
        &self,
        action: &'static str,
        call: impl Future<Output = Result<T, kube::Error>>,
    ) -> Result<T, LeaseError> {
        let after = self.timing.call_timeout;
        match tokio::time::timeout(after, call).await {
            Ok(result) => result.map_err(|source| LeaseError::Api { action, source }),
            Err(_) => Err(LeaseError::Timeout { action, after }),
        }
    }

    /// Takes or renews the lease at `now` (this process's monotonic clock); `Ok(true)` when
    /// this candidate holds it afterwards.
    pub async fn try_acquire_or_renew(&mut self, now: Instant) -> Result<bool, LeaseError> {
        let wall = Timestamp::now();
        let seconds = i32::try_from(self.timing.duration.as_secs().max(1)).unwrap_or(i32::MAX);
        let Some(mut lease) = self.bounded("get", self.api.get_opt(&self.name)).await? else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.name.clone()),
                    ..Default::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(self.identity.clone()),
                    lease_duration_seconds: Some(seconds),
                    acquire_time: Some(MicroTime(wall)),
                    renew_time: Some(MicroTime(wall)),
                    lease_transitions: Some(0),
                    ..Default::default()
                }),
            };
            return match self
                .bounded("create", self.api.create(&PostParams::default(), &lease))
                .await
            {
                Ok(_) => Ok(true),
                Err(LeaseError::Api {
                    source: kube::Error::Api(s),
                    ..
                }) if s.code == 409 => Ok(false),
                Err(e) => Err(e),
            };
        };
        let spec = lease.spec.clone().unwrap_or_default();
        let holder = spec.holder_identity.clone().unwrap_or_default();
        let ours = holder == self.identity;
        if !holder.is_empty() && !ours {
            let record = Record {
                holder,
                renew_time: spec.renew_time.clone(),
                transitions: spec.lease_transitions,
                duration: Duration::from_secs(
                    u64::try_from(spec.lease_duration_seconds.unwrap_or(0)).unwrap_or(0),
                ),
            };
            if !self.observer.expired(record, now) {
                return Ok(false);
            }
        }
        let transitions = spec.lease_transitions.unwrap_or(0);
        lease.spec = Some(LeaseSpec {
            holder_identity: Some(self.identity.clone()),
            lease_duration_seconds: Some(seconds),
            acquire_time: if ours {
                spec.acquire_time.clone()
            } else {
                Some(MicroTime(wall))
            },
            renew_time: Some(MicroTime(wall)),
            lease_transitions: Some(if ours { transitions } else { transitions + 1 }),
            ..spec
        });
        // `replace` sends the resourceVersion read above: a concurrent writer makes it a 409.
        match self
            .bounded(
                "replace",
                self.api.replace(&self.name, &PostParams::default(), &lease),
            )
            .await
        {
            Ok(_) => Ok(true),
            Err(LeaseError::Api {
                source: kube::Error::Api(s),
                ..
            }) if s.code == 409 => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Keeps trying every retry period, publishing whether this candidate leads and until
    /// when. A failed attempt keeps leadership only until the renew deadline; then this
    /// replica must stop acting, since another may take over once the Lease expires.
    pub async fn run(mut self, lease: watch::Sender<LeaseState>) {
        let timing = self.timing;
        let mut leadership = Leadership::default();
        loop {
            let started = Instant::now();
            let limit = leadership.attempt_limit(started, &timing);
            let attempt = match tokio::time::timeout(limit, self.try_acquire_or_renew(started))
                .await
            {
                Ok(Ok(true)) => Attempt::Held,
                Ok(Ok(false)) => Attempt::NotHeld,
                Ok(Err(e)) => {
                    tracing::warn!(lease = %self.name, error = %e, "lease renewal failed");
                    Attempt::Failed
                }
                Err(_) => {
                    tracing::warn!(lease = %self.name, "lease renewal did not finish before the renew deadline");
                    Attempt::Failed
                }
            };
            leadership.after(started, attempt);
            let now_leading = leadership.leading(Instant::now(), &timing);
            if lease.borrow().leading != now_leading {
                tracing::info!(lease = %self.name, identity = %self.identity, leading = now_leading, "leadership changed");
            }
            lease.send_replace(LeaseState {
                leading: now_leading,
                valid_until: leadership.deadline(&timing).filter(|_| now_leading),
            });
            // Wake for the next attempt, or at the renew deadline to give up leadership on
            // time.
            let next = started + timing.retry_period;
            let wake = match leadership.deadline(&timing) {
                Some(d) if now_leading => next.min(d),
                _ => next,
            };
            tokio::time::sleep_until(wake).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube_fake_client::ClientBuilder;

    const SECOND: Duration = Duration::from_secs(1);

    fn record(renew: Option<Timestamp>) -> Record {
        Record {
            holder: "a".into(),
            renew_time: renew.map(MicroTime),
            transitions: Some(0),
            duration: 15 * SECOND,
        }
    }

    #[test]
    fn timing_follows_client_go_for_15_seconds() {
        let t = LeaseTiming::for_duration(15 * SECOND);
        assert_eq!(t.renew_deadline, 10 * SECOND);
        assert_eq!(t.retry_period, 2 * SECOND);
        assert_eq!(t.call_timeout, Duration::from_millis(2500));
        assert!(t.call_timeout * 2 < t.renew_deadline && t.renew_deadline < t.duration);
    }

    #[test]
    fn another_holders_expiry_is_judged_by_local_observation() {
        let t0 = Instant::now();
        let mut o = Observer::default();
        // A renewTime hours in the past (a clock behind ours): still valid at first sight.
        let old = Timestamp::now() - k8s_openapi::jiff::SignedDuration::from_hours(3);
        assert!(!o.expired(record(Some(old)), t0));
        assert!(!o.expired(record(Some(old)), t0 + 14 * SECOND));
        assert!(o.expired(record(Some(old)), t0 + 15 * SECOND));
        // It renews (whatever its clock says): valid again for a full duration from now.
        let ahead = Timestamp::now() + k8s_openapi::jiff::SignedDuration::from_hours(3);
        assert!(!o.expired(record(Some(ahead)), t0 + 16 * SECOND));
        assert!(!o.expired(record(Some(ahead)), t0 + 30 * SECOND));
        // A renewTime in the future (a clock ahead of ours) does not keep it valid forever.
        assert!(o.expired(record(Some(ahead)), t0 + 31 * SECOND));
    }

    #[test]
    fn leadership_ends_at_the_renew_deadline_without_a_renewal() {
        let timing = LeaseTiming::for_duration(15 * SECOND);
        let t0 = Instant::now();
        let mut l = Leadership::default();
        assert!(!l.leading(t0, &timing));
        l.after(t0, Attempt::Held);
        assert!(l.leading(t0 + 9 * SECOND, &timing));
        // Failed attempts do not extend it.
        l.after(t0 + 2 * SECOND, Attempt::Failed);
        l.after(t0 + 4 * SECOND, Attempt::Failed);
        assert!(!l.leading(t0 + 10 * SECOND, &timing));
        // The attempt before the deadline may only use the time left.
        assert_eq!(l.attempt_limit(t0 + 8 * SECOND, &timing), 2 * SECOND);
        assert_eq!(l.attempt_limit(t0, &timing), 5 * SECOND);
        // A renewal moves the deadline; losing the Lease ends leadership at once.
        l.after(t0 + 6 * SECOND, Attempt::Held);
        assert!(l.leading(t0 + 15 * SECOND, &timing));
        l.after(t0 + 8 * SECOND, Attempt::NotHeld);
        assert!(!l.leading(t0 + 8 * SECOND, &timing));
    }

    #[tokio::test]
    async fn one_holder_until_the_lease_goes_unrenewed_for_its_duration() {
        let client = ClientBuilder::new().build().await.unwrap();
        let duration = 2 * SECOND;
        let mut a = LeaderElector::new(client.clone(), "ops", "kvpilot", "a", duration);
        let mut b = LeaderElector::new(client.clone(), "ops", "kvpilot", "b", duration);
        let t0 = Instant::now();
        assert!(
            a.try_acquire_or_renew(t0).await.unwrap(),
            "a creates the lease"
        );
        assert!(
            !b.try_acquire_or_renew(t0).await.unwrap(),
            "b waits while a holds it"
        );
        assert!(
            a.try_acquire_or_renew(t0 + SECOND).await.unwrap(),
            "a renews"
        );
        // b sees the renewal: a full duration from this observation before it may take over.
        assert!(!b.try_acquire_or_renew(t0 + 2 * SECOND).await.unwrap());
        assert!(!b.try_acquire_or_renew(t0 + 3 * SECOND).await.unwrap());
        assert!(
            b.try_acquire_or_renew(t0 + 4 * SECOND).await.unwrap(),
            "b takes the lease a stopped renewing"
        );
        assert!(
            !a.try_acquire_or_renew(t0 + 4 * SECOND).await.unwrap(),
            "a lost it"
        );
        let lease = Api::<Lease>::namespaced(client, "ops")
            .get("kvpilot")
            .await
            .unwrap();
        let spec = lease.spec.unwrap();
        assert_eq!(spec.holder_identity.as_deref(), Some("b"));
        assert_eq!(spec.lease_transitions, Some(1));
    }

    /// Polls `inner` only while `running` says so: a task of a process that is not scheduled
    /// (SIGSTOP, a long pause). Its timers expire meanwhile, but nothing of it runs.
    async fn freezable<F: Future>(inner: F, mut running: watch::Receiver<bool>) {
        tokio::pin!(inner);
        loop {
            if !*running.borrow_and_update() {
                if running.changed().await.is_err() {
                    return;
                }
                continue;
            }
            tokio::select! {
                _ = &mut inner => return,
                changed = running.changed() => if changed.is_err() { return },
            }
        }
    }

    fn candidate(
        client: &Client,
        identity: &str,
        duration: Duration,
    ) -> (
        LeaderElector,
        watch::Sender<LeaseState>,
        watch::Receiver<LeaseState>,
    ) {
        let elector = LeaderElector::new(client.clone(), "ops", "kvpilot", identity, duration);
        let (tx, rx) = watch::channel(LeaseState::default());
        (elector, tx, rx)
    }

    #[tokio::test(start_paused = true)]
    async fn a_leader_paused_past_its_lease_may_not_act_when_it_resumes() {
        use crate::leadership::Leadership;
        let client = ClientBuilder::new().build().await.unwrap();
        let duration = 3 * SECOND;
        let (a, a_tx, mut a_rx) = candidate(&client, "a", duration);
        let (a_running, a_runs) = watch::channel(true);
        tokio::spawn(freezable(a.run(a_tx), a_runs));
        a_rx.wait_for(|l| l.leading).await.unwrap();
        let gate = LeaseGate::new(a_rx.clone());
        assert_eq!(gate.check(), Ok(()));

        // a's process stops being scheduled; b takes the Lease once a stopped renewing it.
        a_running.send_replace(false);
        let (b, b_tx, mut b_rx) = candidate(&client, "b", duration);
        tokio::spawn(b.run(b_tx));
        tokio::time::timeout(10 * duration, b_rx.wait_for(|l| l.leading))
            .await
            .expect("b takes over")
            .unwrap();
        assert!(LeaseGate::new(b_rx.clone()).check().is_ok());

        // a resumes with a plan in hand. Its elector has not run yet, so the flag it last
        // published still says it leads: a check of that flag would let it act.
        a_running.send_replace(true);
        assert!(
            gate.published_leading(),
            "the stale flag is what a check at the top of the loop sees"
        );
        let refused = gate.check().expect_err("the gate goes by the clock");
        assert!(refused.0.contains("renew deadline"), "{refused}");
        // Once its elector runs, it learns it lost the Lease.
        tokio::time::timeout(10 * duration, a_rx.wait_for(|l| !l.leading))
            .await
            .expect("a gives up")
            .unwrap();
        assert!(gate.check().is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn without_election_a_second_operator_refuses_to_start() {
        let client = ClientBuilder::new().build().await.unwrap();
        let duration = 3 * SECOND;
        let (a, a_tx, mut a_rx) = candidate(&client, "a", duration);
        let (a_running, a_runs) = watch::channel(true);
        tokio::spawn(freezable(a.run(a_tx), a_runs));
        a_rx.wait_for(|l| l.leading).await.unwrap();

        // b finds the Lease renewed by a for longer than it could be stale: it refuses.
        let (b, b_tx, mut b_rx) = candidate(&client, "b", duration);
        let timing = b.timing();
        let b_task = tokio::spawn(b.run(b_tx));
        let holder = lease_holder(client.clone(), "ops", "kvpilot");
        let refused = acquire_exclusive(&mut b_rx, timing, holder)
            .await
            .expect_err("a second operator is refused");
        assert!(refused.contains("(a)"), "{refused}");
        assert!(refused.contains("--leader-election"), "{refused}");
        assert!(!b_rx.borrow().leading);
        b_task.abort();

        // a is gone (its Lease stays behind, unrenewed): the next operator takes over.
        a_running.send_replace(false);
        let (c, c_tx, mut c_rx) = candidate(&client, "c", duration);
        let timing = c.timing();
        tokio::spawn(c.run(c_tx));
        let holder = lease_holder(client.clone(), "ops", "kvpilot");
        acquire_exclusive(&mut c_rx, timing, holder)
            .await
            .expect("a stale Lease is taken over");
        assert_eq!(
            lease_holder(client, "ops", "kvpilot").await.as_deref(),
            Some("c")
        );
    }

    /// An API server that accepts connections and never answers (127.0.0.1).
    async fn silent_api() -> (Client, tokio::task::JoinHandle<()>) {
        // The test build links aws-lc-rs too (through kube-fake-client), so rustls cannot
        // pick a provider by itself; the operator's own build has ring only.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let task = tokio::spawn(async move {
            let mut held = Vec::new();
            // A handful of connections is all a test makes; keep them open, unanswered.
            while held.len() < 16 {
                match listener.accept().await {
                    Ok((stream, _)) => held.push(stream),
                    Err(_) => return,
                }
            }
        });
        let config = kube::Config::new(url.parse().unwrap());
        (Client::try_from(config).unwrap(), task)
    }

    #[tokio::test]
    async fn a_hanging_api_call_is_cut_off_and_leads_to_nothing() {
        let (client, server) = silent_api().await;
        let duration = 3 * SECOND;
        let mut elector = LeaderElector::new(client.clone(), "ops", "kvpilot", "a", duration);
        let timeout = elector.timing().call_timeout;
        let started = Instant::now();
        let e = elector.try_acquire_or_renew(started).await.unwrap_err();
        assert!(
            matches!(e, LeaseError::Timeout { action: "get", .. }),
            "{e}"
        );
        assert!(
            started.elapsed() < timeout + SECOND,
            "{:?}",
            started.elapsed()
        );

        // The loop publishes that it does not lead, and keeps trying.
        let elector = LeaderElector::new(client, "ops", "kvpilot", "a", duration);
        let (tx, mut rx) = watch::channel(LeaseState {
            leading: true,
            valid_until: None,
        });
        let run = tokio::spawn(elector.run(tx));
        tokio::time::timeout(5 * SECOND, rx.wait_for(|l| !l.leading))
            .await
            .expect("published within the bound")
            .unwrap();
        run.abort();
        server.abort();
    }
}
