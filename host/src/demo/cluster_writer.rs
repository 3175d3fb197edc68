//! The cluster-mode writer: one write at a time through a [`ClusterClient`], cycling through
//! all 16384 slots, remembering every acknowledged key, in the style of (and with the log
//! types of) the replication-mode [`super::writer`].
//!
//! Write `n` goes to key `PREFIX:{TAG}:n`, where `TAG` is a hash tag ([`slot_tags`]) of slot
//! [`slot_of_seq`]`(n)`, so every slot gets a write every 16384 writes, consecutive writes
//! go to different shards, and the keys of any slot can be named afterwards. A write that is not acknowledged is retried with the same key, as in
//! replication mode; its wait runs from its first try.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::Mutex;

use super::cluster_client::{ClusterClient, ClusterClientError, Redirects};
use super::writer::{Ack, Log, note_failure};
use crate::engine::HostPort;
use crate::engine::slots::{SLOTS, slot_tags};

/// Pause after a write that was not acknowledged.
const RETRY_PAUSE: Duration = Duration::from_millis(5);

/// Step between the slots of consecutive writes: odd, so `seq * STRIDE mod 16384` visits
/// every slot once per 16384 writes, and about 16384/φ, so consecutive writes land far apart
/// (in different shards) instead of running through one shard's range for thousands of writes.
const STRIDE: u64 = 10127;

/// The key of write `seq`.
pub fn key_for(prefix: &str, seq: u64) -> String {
    let tag = &slot_tags()[usize::from(slot_of_seq(seq))];
    format!("{prefix}:{{{tag}}}:{seq}")
}

/// The slot write `seq` lands in.
pub fn slot_of_seq(seq: u64) -> u16 {
    (seq.wrapping_mul(STRIDE) % u64::from(SLOTS)) as u16
}

/// What the cluster writer saw: the replication-mode log plus the redirections followed.
#[derive(Debug, Default)]
pub struct ClusterLog {
    /// Acknowledged writes, failures and the unfinished write.
    pub log: Log,
    /// Redirections and map refreshes.
    pub redirects: Redirects,
}

impl ClusterLog {
    /// The longest any one key waited from its first try to its acknowledgement.
    pub fn max_key_wait(&self) -> Duration {
        let acked = self.log.acks.iter().map(|a| a.since_first_try);
        let unfinished = self.log.unfinished.map(|(first, stop)| stop - first);
        acked.chain(unfinished).max().unwrap_or_default()
    }

    /// Sequence numbers of the acknowledged writes.
    pub fn acked(&self) -> Vec<u64> {
        self.log.acks.iter().map(|a| a.seq).collect()
    }
}

/// A running cluster writer; stop it with [`ClusterWriter::stop`].
pub struct ClusterWriter {
    prefix: String,
    log: Arc<Mutex<Log>>,
    redirects: Arc<Mutex<Redirects>>,
    stop: Arc<AtomicBool>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl ClusterWriter {
    /// Reads the slot map from `seeds` and starts writing, one write at a time, for at most
    /// `limit`.
    pub async fn start(
        seeds: Vec<HostPort>,
        prefix: &str,
        limit: Duration,
    ) -> Result<ClusterWriter, ClusterClientError> {
        let client = ClusterClient::connect(seeds).await?;
        let log = Arc::new(Mutex::new(Log::default()));
        let redirects = Arc::new(Mutex::new(Redirects::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let task = tokio::spawn(write_loop(
            client,
            prefix.to_owned(),
            log.clone(),
            redirects.clone(),
            stop.clone(),
            limit,
        ));
        Ok(ClusterWriter {
            prefix: prefix.to_owned(),
            log,
            redirects,
            stop,
            task: Some(task),
        })
    }

    /// The key prefix.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Acknowledged writes so far.
    pub async fn acked(&self) -> usize {
        self.log.lock().await.acks.len()
    }

    /// Stops after the write in flight and returns the log.
    pub async fn stop(mut self) -> ClusterLog {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
        ClusterLog {
            log: std::mem::take(&mut *self.log.lock().await),
            redirects: *self.redirects.lock().await,
        }
    }
}

impl Drop for ClusterWriter {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

async fn write_loop(
    mut client: ClusterClient,
    prefix: String,
    log: Arc<Mutex<Log>>,
    redirects: Arc<Mutex<Redirects>>,
    stop: Arc<AtomicBool>,
    limit: Duration,
) {
    let started = Instant::now();
    let mut seq: u64 = 0;
    let mut first_try: Option<Instant> = None;
    while !stop.load(Ordering::SeqCst) && started.elapsed() < limit {
        let key = key_for(&prefix, seq);
        let value = seq.to_string();
        let sent = Instant::now();
        let first = *first_try.get_or_insert(sent);
        match client.set(key.as_bytes(), value.as_bytes()).await {
            Ok(()) => {
                let at = Instant::now();
                log.lock().await.acks.push(Ack {
                    seq,
                    at,
                    latency: at - sent,
                    since_first_try: at - first,
                });
                first_try = None;
                seq += 1;
            }
            Err(e) => {
                let timed_out = matches!(&e, ClusterClientError::GaveUp { last, .. } if last.contains("no answer"));
                note_failure(&log, sent, timed_out, e.to_string()).await;
                tokio::time::sleep(RETRY_PAUSE).await;
            }
        }
        *redirects.lock().await = client.redirects();
    }
    if let Some(first) = first_try {
        log.lock().await.unfinished = Some((first, Instant::now()));
    }
}

/// The sequence numbers in `acked` whose key is missing or holds another value, read through
/// a fresh [`ClusterClient`] from `seeds` (each key from the primary of its slot).
pub async fn missing(
    seeds: Vec<HostPort>,
    prefix: &str,
    acked: &[u64],
) -> Result<Vec<u64>, ClusterClientError> {
    let mut client = ClusterClient::connect(seeds).await?;
    let mut lost = Vec::new();
    for &seq in acked {
        let key = key_for(prefix, seq);
        let value = client.get(key.as_bytes()).await?;
        if value.as_deref() != Some(seq.to_string().as_bytes()) {
            lost.push(seq);
        }
    }
    Ok(lost)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::slots::key_slot;

    #[test]
    fn keys_cycle_through_every_slot() {
        for seq in [0u64, 1, 16383, 16384, 16385, 1_000_003, u64::MAX] {
            let key = key_for("w", seq);
            assert_eq!(key_slot(key.as_bytes()), slot_of_seq(seq), "{key}");
            assert!(key.ends_with(&format!(":{seq}")));
        }
        let slots: std::collections::BTreeSet<u16> = (0..16384u64)
            .map(|s| key_slot(key_for("w", s).as_bytes()))
            .collect();
        assert_eq!(slots.len(), 16384);
    }
}
