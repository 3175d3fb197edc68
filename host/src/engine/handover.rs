//! The steps of a planned handover (safety rule 3), per dialect, as data: act carries them out
//! in order, and the tests here assert each dialect's sequence without a server.
//!
//! - Valkey/Redis: `FAILOVER TO` on the primary pauses its writes, waits for the target to hold
//!   every write and swaps roles; the old primary then follows the target.
//! - Dragonfly (experimental): `REPLTAKEOVER` on the replica. The old master refuses every
//!   command of a normal connection from the moment it accepts the takeover, waits for the
//!   commands being executed to finish (a connection stuck in a command blocks that wait until
//!   the takeover times out), waits for the replica to catch up, answers, and **shuts down**
//!   (`DflyCmd::TakeOver` in src/server/dflycmd.cc). So its normal clients are closed just
//!   before the takeover (they lose nothing: the shutdown closes them anyway, and a command
//!   they had sent either completed before the takeover, and is replicated, or got an error),
//!   nobody waits for the old master to follow the new one, and it is fenced only if it still
//!   answers. The platform starts it again as a replica: the StatefulSet's container restarts
//!   with `--replicaof <name>-primary`, a local member is started as a replica of the primary
//!   by the next reconcile.

use super::{Dialect, EngineCommand, HandoverStyle};
use std::time::Duration;

/// A handover's two members: `From` the primary handing over, `To` the replica taking over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    From,
    To,
}

/// One step of a handover.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HandoverStep {
    /// Valkey/Redis: wait until just before the target's next replication ack, so the write
    /// pause is short (see [`super::ack`]).
    WaitAckWindow,
    /// Close every normal client connection on `on` (`CLIENT KILL`), not the replication
    /// links and not the operator's own connection.
    KillClients { on: Side },
    /// Send `command` on `on` and wait until the server reports the handover done or failed
    /// (client timeouts exceed the server's, rule 3).
    Handover { on: Side, command: EngineCommand },
    /// Wait (bounded) until `To` answers as primary and, with `old_follows`, `From` follows it.
    Confirm { old_follows: bool },
    /// Point the primary endpoint at `To`.
    PointEndpoint,
    /// Fence `From` (rule 7). `required`: a failure fails the step; otherwise a member that
    /// does not answer counts as fenced (a Dragonfly master shut down after the takeover).
    Fence { required: bool },
}

/// The steps that hand the primary role over to `to_host:to_port` in `dialect`, with the
/// server-side `timeout`.
pub fn steps(
    dialect: Dialect,
    to_host: &str,
    to_port: u16,
    timeout: Duration,
) -> Vec<HandoverStep> {
    match dialect.handover_style() {
        HandoverStyle::FailoverOnPrimary => vec![
            HandoverStep::WaitAckWindow,
            HandoverStep::Handover {
                on: Side::From,
                command: failover_command(dialect, to_host, to_port, timeout),
            },
            HandoverStep::Confirm { old_follows: true },
            // The endpoint moves before the fence so that clients the fence disconnects
            // reconnect straight to the new primary.
            HandoverStep::PointEndpoint,
            HandoverStep::Fence { required: true },
        ],
        HandoverStyle::TakeoverOnReplica => vec![
            HandoverStep::KillClients { on: Side::From },
            HandoverStep::Handover {
                on: Side::To,
                command: takeover_command(dialect, timeout),
            },
            HandoverStep::Confirm { old_follows: false },
            HandoverStep::PointEndpoint,
            HandoverStep::Fence { required: false },
        ],
    }
}

fn failover_command(dialect: Dialect, host: &str, port: u16, timeout: Duration) -> EngineCommand {
    dialect
        .failover_to(host, port, timeout)
        .unwrap_or_else(|| EngineCommand::new(["FAILOVER"]))
}

fn takeover_command(dialect: Dialect, timeout: Duration) -> EngineCommand {
    dialect
        .takeover(timeout)
        .unwrap_or_else(|| EngineCommand::new(["REPLTAKEOVER"]))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cmd(args: &[&str]) -> EngineCommand {
        EngineCommand::new(args.iter().copied())
    }

    #[test]
    fn valkey_and_redis_fail_over_on_the_primary_and_wait_for_it_to_follow() {
        for dialect in [Dialect::Valkey, Dialect::Redis] {
            assert_eq!(
                steps(dialect, "10.0.0.2", 6379, Duration::from_secs(5)),
                [
                    HandoverStep::WaitAckWindow,
                    HandoverStep::Handover {
                        on: Side::From,
                        command: cmd(&["FAILOVER", "TO", "10.0.0.2", "6379", "TIMEOUT", "5000"]),
                    },
                    HandoverStep::Confirm { old_follows: true },
                    HandoverStep::PointEndpoint,
                    HandoverStep::Fence { required: true },
                ]
            );
        }
    }

    #[test]
    fn dragonfly_clears_clients_takes_over_on_the_replica_and_does_not_wait_for_the_old_master() {
        assert_eq!(
            steps(
                Dialect::Dragonfly,
                "10.0.0.2",
                6379,
                Duration::from_millis(2500)
            ),
            [
                // Nothing may be mid-command on the old master when it locks down.
                HandoverStep::KillClients { on: Side::From },
                HandoverStep::Handover {
                    on: Side::To,
                    command: cmd(&["REPLTAKEOVER", "3"]),
                },
                // The old master shuts down after the takeover: only the new primary is
                // confirmed, and the fence of a master that is gone is not an error.
                HandoverStep::Confirm { old_follows: false },
                HandoverStep::PointEndpoint,
                HandoverStep::Fence { required: false },
            ]
        );
    }

    #[test]
    fn the_endpoint_moves_only_after_the_new_primary_is_confirmed() {
        for dialect in [Dialect::Valkey, Dialect::Redis, Dialect::Dragonfly] {
            let s = steps(dialect, "h", 1, Duration::from_secs(1));
            let at = |f: fn(&HandoverStep) -> bool| s.iter().position(f).unwrap();
            let confirm = at(|s| matches!(s, HandoverStep::Confirm { .. }));
            let handover = at(|s| matches!(s, HandoverStep::Handover { .. }));
            let endpoint = at(|s| matches!(s, HandoverStep::PointEndpoint));
            let fence = at(|s| matches!(s, HandoverStep::Fence { .. }));
            assert!(
                handover < confirm && confirm < endpoint && endpoint < fence,
                "{s:?}"
            );
        }
    }
}
