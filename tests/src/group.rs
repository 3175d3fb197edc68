//! [`Group`]: one local group under a temporary directory, driven step by step by the real
//! reconciler, with every step's outcome kept for the assertions.

use crate::spec::{Spec, server_binary};
use kvpilot::decide::{Action, Settings, Wait};
use kvpilot::platform::local::LocalCluster;
use kvpilot::platform::local::server::ServerGuard;
use kvpilot::policy::DecisionRecord;
use kvpilot::status::ClusterStatus;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Longest any phase of a test may take before it fails.
pub const PHASE_LIMIT: Duration = Duration::from_secs(60);
/// Most steps in one phase (a second bound besides time).
const MAX_STEPS: usize = 2000;
/// Longest sleep between two steps, whatever the requeue asks for.
const MAX_SLEEP: Duration = Duration::from_millis(500);

/// Short timings, as the demo uses; a failed snapshot is retried after 5 s instead of 30 s.
pub fn settings() -> Settings {
    Settings {
        probe_interval: Duration::from_millis(100),
        steady_interval: Duration::from_millis(500),
        snapshot_retry: Duration::from_secs(5),
        ..Settings::default()
    }
}

/// What one reconcile did and the status it left.
#[derive(Debug, Clone)]
pub struct StepRecord {
    /// Which `LocalCluster` ran it (0, then +1 after every [`Group::abort`]).
    pub run: usize,
    pub action: Option<Action>,
    pub error: Option<String>,
    pub wait: Option<Wait>,
    pub requeue_after: Duration,
    pub decisions: Vec<DecisionRecord>,
    pub status: ClusterStatus,
}

impl StepRecord {
    /// The action, if it was carried out without error.
    pub fn done(&self) -> Option<&Action> {
        self.action.as_ref().filter(|_| self.error.is_none())
    }

    pub fn condition(&self, kind: &str) -> bool {
        self.status.condition(kind).is_some_and(|c| c.status)
    }

    /// Ready, with a primary, every member on the desired revision.
    pub fn settled(&self) -> bool {
        let s = &self.status;
        self.condition("Ready")
            && s.primary.is_some()
            && !s.members.is_empty()
            && s.members
                .iter()
                .all(|m| m.revision.as_deref() == Some(s.desired_revision.as_str()))
    }

    fn summary(&self) -> String {
        format!(
            "run {} primary {:?}: action {:?} error {:?} wait {:?}",
            self.run,
            self.status.primary,
            self.action.as_ref().map(Action::describe),
            self.error,
            self.wait
        )
    }
}

/// A group of real servers on loopback and the reconciler that drives it.
pub struct Group {
    // Declared first so that it drops first: members die while their state files still exist.
    guard: ServerGuard,
    cluster: Option<LocalCluster>,
    spec: Spec,
    spec_path: PathBuf,
    state_root: PathBuf,
    run: usize,
    /// Every step taken, in order, across runs.
    pub history: Vec<StepRecord>,
    _dir: tempfile::TempDir,
}

impl Group {
    /// Writes the spec and opens the group (nothing is started until the first step).
    pub async fn open(spec: Spec) -> Group {
        let binary = server_binary(spec.engine);
        assert!(
            std::process::Command::new(binary)
                .arg("--version")
                .output()
                .is_ok(),
            "{binary} is not installed; the end-to-end tests need it"
        );
        let dir = tempfile::Builder::new()
            .prefix(&format!("kvpilot-e2e-{}-", spec.name))
            .tempdir()
            .expect("temporary directory");
        let spec_path = dir.path().join("cluster.yaml");
        let state_root = dir.path().join("state");
        std::fs::write(&spec_path, spec.yaml()).expect("write the spec");
        let guard = ServerGuard::new();
        // Members live in STATE/NAME/members/MEMBER/; the guard looks one level down.
        guard.track_dir(state_root.join(&spec.name).join("members"));
        let cluster = LocalCluster::open(
            &spec_path,
            &state_root,
            None,
            spec.password.clone(),
            settings(),
        )
        .await
        .expect("open the local group");
        Group {
            guard,
            cluster: Some(cluster),
            spec,
            spec_path,
            state_root,
            run: 0,
            history: Vec::new(),
            _dir: dir,
        }
    }

    /// Opens the group and reconciles until it is settled.
    pub async fn start(spec: Spec) -> Group {
        let mut group = Group::open(spec).await;
        group.settle("bootstrap").await;
        group
    }

    pub fn cluster(&self) -> &LocalCluster {
        self.cluster
            .as_ref()
            .expect("the group's reconciler was aborted and not reopened")
    }

    /// The reconciler, to change how it runs (its leadership, in tests of rule 9).
    pub fn cluster_mut(&mut self) -> &mut LocalCluster {
        self.cluster
            .as_mut()
            .expect("the group's reconciler was aborted and not reopened")
    }

    pub fn spec(&self) -> &Spec {
        &self.spec
    }

    /// The guard that kills the members on drop (to track servers a test starts itself).
    pub fn guard(&self) -> &ServerGuard {
        &self.guard
    }

    /// The primary endpoint's address.
    pub fn endpoint(&self) -> SocketAddr {
        self.cluster().endpoint()
    }

    /// The status after the last step.
    pub fn status(&self) -> ClusterStatus {
        self.cluster().reconciler.status.clone()
    }

    /// A member's data directory.
    pub fn member_dir(&self, member: &str) -> PathBuf {
        self.state_root
            .join(&self.spec.name)
            .join("members")
            .join(member)
    }

    /// Every member's address, by name, from the last status.
    pub fn members(&self) -> Vec<(String, SocketAddr)> {
        self.status()
            .members
            .iter()
            .map(|m| {
                let addr = m.address.parse().expect("member address");
                (m.name.clone(), addr)
            })
            .collect()
    }

    pub fn addresses(&self) -> Vec<SocketAddr> {
        self.members().into_iter().map(|(_, a)| a).collect()
    }

    pub fn addr(&self, member: &str) -> SocketAddr {
        self.members()
            .into_iter()
            .find(|(n, _)| n == member)
            .map(|(_, a)| a)
            .unwrap_or_else(|| panic!("no member {member}"))
    }

    /// The current primary's name, from the last status.
    pub fn primary(&self) -> String {
        self.status().primary.expect("a primary")
    }

    /// One reconcile, recorded in [`Group::history`].
    pub async fn step(&mut self) -> StepRecord {
        let run = self.run;
        let cluster = self
            .cluster
            .as_mut()
            .expect("the group's reconciler was aborted and not reopened");
        let outcome = cluster.step().await;
        let record = StepRecord {
            run,
            action: outcome.plan.action.clone(),
            error: outcome.error.clone(),
            wait: outcome.plan.wait.clone(),
            requeue_after: outcome.plan.requeue_after,
            decisions: outcome.plan.decisions.clone(),
            status: cluster.reconciler.status.clone(),
        };
        self.history.push(record.clone());
        record
    }

    /// Steps (sleeping as the reconciler asks, at most [`MAX_SLEEP`]) until `done` holds for a
    /// step; fails after [`PHASE_LIMIT`] or [`MAX_STEPS`] with the recent history.
    pub async fn run_until(
        &mut self,
        what: &str,
        done: impl Fn(&StepRecord) -> bool,
    ) -> StepRecord {
        self.run_until_within(what, PHASE_LIMIT, done).await
    }

    /// [`Group::run_until`] with another time limit (a phase that waits for a cron minute).
    pub async fn run_until_within(
        &mut self,
        what: &str,
        limit: Duration,
        done: impl Fn(&StepRecord) -> bool,
    ) -> StepRecord {
        let started = Instant::now();
        let first = self.history.len();
        for _ in 0..MAX_STEPS {
            let record = self.step().await;
            if done(&record) {
                return record;
            }
            if started.elapsed() >= limit {
                break;
            }
            tokio::time::sleep(record.requeue_after.min(MAX_SLEEP)).await;
        }
        let recent: Vec<String> = self.history[first..]
            .iter()
            .rev()
            .take(15)
            .map(StepRecord::summary)
            .collect();
        let status = self.status();
        panic!(
            "{what}: not reached after {:?} / {} steps.\nconditions: {:#?}\nmembers: {:#?}\nlast steps (newest first):\n{}",
            started.elapsed(),
            self.history.len() - first,
            status.conditions,
            status.members,
            recent.join("\n")
        );
    }

    /// Steps until the group is Ready with every member on the desired revision.
    pub async fn settle(&mut self, what: &str) -> StepRecord {
        self.run_until(what, StepRecord::settled).await
    }

    /// Replaces the spec file (the reconciler rereads it on its next step).
    pub fn write_spec(&mut self, spec: Spec) {
        assert_eq!(spec.name, self.spec.name, "the group's name is fixed");
        std::fs::write(&self.spec_path, spec.yaml()).expect("write the spec");
        self.spec = spec;
    }

    /// Drops the reconciler as a killed operator would: no shutdown, the members keep running.
    pub async fn abort(&mut self) {
        drop(self.cluster.take());
        self.run += 1;
        // The endpoint's listener closes when its accept task notices.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    /// Opens a new reconciler on the same state directory (after [`Group::abort`]).
    pub async fn reopen(&mut self) {
        assert!(self.cluster.is_none(), "reopen only after abort");
        let started = Instant::now();
        loop {
            let password = self.spec.password.clone();
            match LocalCluster::open(
                &self.spec_path,
                &self.state_root,
                None,
                password,
                settings(),
            )
            .await
            {
                Ok(c) => {
                    self.cluster = Some(c);
                    return;
                }
                Err(e) if started.elapsed() < Duration::from_secs(10) => {
                    eprintln!("reopen: {e}; retrying");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => panic!("reopen the group: {e}"),
            }
        }
    }

    /// Stops every member and the endpoint.
    pub async fn shutdown(mut self) {
        if let Some(c) = self.cluster.take() {
            c.shutdown().await.expect("shut the group down");
        }
    }

    /// Every action carried out without error, in order, across runs.
    pub fn done_actions(&self) -> Vec<&Action> {
        self.history.iter().filter_map(StepRecord::done).collect()
    }

    /// The manifest file the reconciler reads.
    pub fn spec_path(&self) -> &Path {
        &self.spec_path
    }

    /// The state root (for tests that read `layout.json` or member files).
    pub fn state_root(&self) -> &Path {
        &self.state_root
    }
}
