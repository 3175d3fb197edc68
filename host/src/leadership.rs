//! Safety rule 9 (`docs/architecture.md`): only the leader acts. Leadership is checked right
//! before every action — each platform call and each command that changes a member — not only
//! when a reconcile starts: an operator that was paused (a long GC-like stall, SIGSTOP) past its
//! lease resumes in the middle of an old plan, and must drop it.

/// Whether this process may act now.
pub trait Leadership: Send + Sync {
    /// `Ok` while this process may change anything; asked right before every action, so it
    /// must answer from what is known now (a clock and the last lease renewal), never from a
    /// flag that only changes when some other task runs.
    fn check(&self) -> Result<(), NotLeader>;
}

/// This process may not act: it does not hold the lease (any more).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not the leader: {0}; the plan is dropped")]
pub struct NotLeader(pub String);

/// The only operator there is: the local platform, whose state directory admits one
/// `kvpilot local up` at a time.
#[derive(Debug, Clone, Copy, Default)]
pub struct Alone;

impl Leadership for Alone {
    fn check(&self) -> Result<(), NotLeader> {
        Ok(())
    }
}
