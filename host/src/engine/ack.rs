//! Timing a Valkey/Redis `FAILOVER` so that writes pause as briefly as possible.
//!
//! `FAILOVER` pauses writes on the primary, then waits until the target replica *acknowledges*
//! the primary's final offset. Replicas acknowledge once per second (`REPLCONF ACK` from their
//! replication cron), and the primary does not ask for an early ack while writes are paused.
//! Sent at a random moment, a handover therefore pauses writes for up to a second. Sent just
//! before the target's next ack, it pauses them for a few milliseconds. Timing only changes
//! when the server-side handover starts, never whether it is safe: if the ack is missed,
//! `FAILOVER` simply waits for the next one.

use super::{Client, EngineError, HostPort};
use std::time::{Duration, Instant};

/// Interval between a replica's acknowledgements (Valkey/Redis replication cron).
pub const ACK_PERIOD: Duration = Duration::from_millis(1000);
/// How long before the expected ack the handover is sent.
pub const ACK_LEAD: Duration = Duration::from_millis(40);
/// How often the primary's view of the target's ack is sampled.
const SAMPLE_EVERY: Duration = Duration::from_millis(4);

/// Waits until just before `target`'s next acknowledgement to `primary`, as far as it can be
/// told from the acknowledged offset the primary reports. Returns at most
/// `ACK_PERIOD * 2` later; returns at once when the phase cannot be found (no traffic).
pub async fn wait_for_ack_window(primary: &Client, target: &HostPort) -> Result<(), EngineError> {
    let started = Instant::now();
    let first = acked_offset(primary, target).await?;
    let mut seen_change = None;
    while started.elapsed() < ACK_PERIOD + ACK_PERIOD / 5 {
        tokio::time::sleep(SAMPLE_EVERY).await;
        if acked_offset(primary, target).await? != first {
            seen_change = Some(Instant::now());
            break;
        }
    }
    let Some(acked_at) = seen_change else {
        // Offsets do not move: there are no writes, so the replica is already caught up
        // and FAILOVER does not wait for an ack at all.
        return Ok(());
    };
    let send_at = acked_at + ACK_PERIOD - ACK_LEAD;
    tokio::time::sleep_until(send_at.into()).await;
    Ok(())
}

async fn acked_offset(primary: &Client, target: &HostPort) -> Result<Option<u64>, EngineError> {
    let info = primary.replication().await?;
    Ok(info
        .replicas
        .iter()
        .find(|r| r.ip == target.host && r.port == target.port)
        .and_then(|r| r.offset))
}
