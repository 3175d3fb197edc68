//! A client that writes sequential keys through the primary endpoint and remembers every
//! acknowledged one, to count lost writes and measure write gaps and latency.
//!
//! It speaks raw RESP over one TCP connection so that nothing (pooling, retries inside a
//! client library) hides what the server acknowledged and when. A write that is not
//! acknowledged (an error, a reset, no answer within [`ACK_TIMEOUT`] or the limit the writer was
//! started with) is retried with the same
//! key on a fresh connection; the write's latency runs from its first try, so a stall that
//! outlasts the timeout still counts in full.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::sync::Mutex;
use tokio::time::timeout;

/// Longest wait for one acknowledgement; past it the connection is dropped and rebuilt.
pub const ACK_TIMEOUT: Duration = Duration::from_secs(2);
/// Pause after a failed write or connect, so a dead endpoint is not spun on.
const RETRY_PAUSE: Duration = Duration::from_millis(5);

/// One acknowledged write.
#[derive(Debug, Clone, Copy)]
pub struct Ack {
    pub seq: u64,
    pub at: Instant,
    /// From sending the write (its last try) to its acknowledgement.
    pub latency: Duration,
    /// From the write's first try to its acknowledgement: what the client waited, timeouts
    /// and retries included.
    pub since_first_try: Duration,
}

/// One try that was not acknowledged.
#[derive(Debug, Clone, Copy)]
pub struct Failure {
    /// When the try ended.
    pub at: Instant,
    /// How long it waited.
    pub waited: Duration,
    /// No answer within [`ACK_TIMEOUT`] (else an error reply, a reset or a failed connect).
    pub timed_out: bool,
}

/// What the writer saw.
#[derive(Debug, Default)]
pub struct Log {
    pub acks: Vec<Ack>,
    /// Every try that was not acknowledged, in order.
    pub failures: Vec<Failure>,
    pub errors: u64,
    /// The last error text (for the report when nothing is acknowledged).
    pub last_error: Option<String>,
    /// The write still unacknowledged when the writer stopped: (first try, stop).
    pub unfinished: Option<(Instant, Instant)>,
}

/// A running writer; stop it with [`Writer::stop`]. Dropped without it (a demo that failed
/// half way), it stops writing too.
pub struct Writer {
    prefix: String,
    log: Arc<Mutex<Log>>,
    stop: Arc<AtomicBool>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Writer {
    /// Starts writing `PREFIX:SEQ = SEQ` to `endpoint`, one write at a time, as fast as the
    /// server acknowledges, for at most `limit` (a bound in case nobody stops it).
    pub fn start(endpoint: SocketAddr, prefix: &str, limit: Duration) -> Writer {
        Writer::start_with(endpoint, prefix, limit, ACK_TIMEOUT)
    }

    /// [`Writer::start`], waiting up to `ack_timeout` for each acknowledgement on the same
    /// connection before giving up on it. A long one keeps a write queued on a stalled
    /// primary's connection until it resumes, as a patient client would: the case fencing
    /// must cover (safety rule 7).
    pub fn start_with(
        endpoint: SocketAddr,
        prefix: &str,
        limit: Duration,
        ack_timeout: Duration,
    ) -> Writer {
        let log = Arc::new(Mutex::new(Log::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let task = tokio::spawn(write_loop(
            endpoint,
            prefix.to_string(),
            log.clone(),
            stop.clone(),
            limit,
            ack_timeout,
        ));
        Writer {
            prefix: prefix.to_string(),
            log,
            stop,
            task: Some(task),
        }
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Acknowledged writes so far.
    pub async fn acked(&self) -> usize {
        self.log.lock().await.acks.len()
    }

    /// Stops the writer (after the write in flight, at most [`ACK_TIMEOUT`]) and returns its
    /// log.
    pub async fn stop(mut self) -> Log {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
        let mut log = self.log.lock().await;
        std::mem::take(&mut *log)
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

async fn write_loop(
    endpoint: SocketAddr,
    prefix: String,
    log: Arc<Mutex<Log>>,
    stop: Arc<AtomicBool>,
    limit: Duration,
    ack_timeout: Duration,
) {
    let started = Instant::now();
    let mut seq: u64 = 0;
    let mut conn: Option<BufReader<TcpStream>> = None;
    // The first try of the write in flight (`seq`), while it is not acknowledged.
    let mut first_try: Option<Instant> = None;
    while !stop.load(Ordering::SeqCst) && started.elapsed() < limit {
        if conn.is_none() {
            let tried = Instant::now();
            first_try.get_or_insert(tried);
            match timeout(ACK_TIMEOUT, TcpStream::connect(endpoint)).await {
                Ok(Ok(stream)) => {
                    let _ = stream.set_nodelay(true);
                    conn = Some(BufReader::new(stream));
                }
                Ok(Err(e)) => {
                    note_failure(&log, tried, false, format!("connect: {e}")).await;
                    tokio::time::sleep(RETRY_PAUSE).await;
                    continue;
                }
                Err(_) => {
                    note_failure(&log, tried, true, "connect timed out".into()).await;
                    continue;
                }
            }
        }
        let Some(stream) = conn.as_mut() else {
            continue;
        };
        let key = format!("{prefix}:{seq}");
        let value = seq.to_string();
        let sent = Instant::now();
        let first = *first_try.get_or_insert(sent);
        match timeout(ack_timeout, set(stream, &key, &value)).await {
            Ok(Ok(())) => {
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
            Ok(Err(e)) => {
                // A -READONLY or a reset: this write is not acknowledged; retry the same key
                // on a fresh connection (which the endpoint sends to the current primary).
                note_failure(&log, sent, false, e).await;
                conn = None;
                tokio::time::sleep(RETRY_PAUSE).await;
            }
            Err(_) => {
                note_failure(&log, sent, true, "no acknowledgement in time".into()).await;
                conn = None;
            }
        }
    }
    if let Some(first) = first_try {
        log.lock().await.unfinished = Some((first, Instant::now()));
    }
}

/// Records a try that was not acknowledged (also used by the cluster writer).
pub(crate) async fn note_failure(log: &Mutex<Log>, tried: Instant, timed_out: bool, e: String) {
    let at = Instant::now();
    let mut log = log.lock().await;
    log.failures.push(Failure {
        at,
        waited: at - tried,
        timed_out,
    });
    log.errors += 1;
    log.last_error = Some(e);
}

/// `SET key value` and wait for `+OK`.
async fn set(stream: &mut BufReader<TcpStream>, key: &str, value: &str) -> Result<(), String> {
    let frame = frame(&[b"SET", key.as_bytes(), value.as_bytes()]);
    stream
        .get_mut()
        .write_all(&frame)
        .await
        .map_err(|e| format!("write: {e}"))?;
    match read_line(stream).await? {
        line if line.starts_with("+OK") => Ok(()),
        line => Err(line),
    }
}

/// One command as a RESP array of bulk strings.
pub(crate) fn frame(args: &[&[u8]]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for arg in args {
        out.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
        out.extend_from_slice(arg);
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// Reads one reply line (`+OK`, `-MOVED ...`), without its line end; a closed connection is
/// an error.
pub(crate) async fn read_line(stream: &mut BufReader<TcpStream>) -> Result<String, String> {
    let mut line = String::new();
    let n = stream
        .read_line(&mut line)
        .await
        .map_err(|e| format!("read: {e}"))?;
    if n == 0 {
        return Err("connection closed".into());
    }
    Ok(line.trim_end().to_string())
}

/// The longest time without an acknowledgement inside `[from, to]`, counting the edges.
pub fn max_gap(acks: &[Ack], from: Instant, to: Instant) -> Duration {
    let mut last = from;
    let mut worst = Duration::ZERO;
    for a in acks.iter().filter(|a| a.at >= from && a.at <= to) {
        worst = worst.max(a.at - last);
        last = a.at;
    }
    worst.max(to.saturating_duration_since(last))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_are_resp_arrays_of_bulk_strings() {
        assert_eq!(
            frame(&[b"SET", b"k", b"\xffv"]),
            b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$2\r\n\xffv\r\n"
        );
    }

    #[test]
    fn max_gap_counts_the_longest_silence_including_edges() {
        let t0 = Instant::now();
        let at = |ms| Ack {
            seq: 0,
            at: t0 + Duration::from_millis(ms),
            latency: Duration::ZERO,
            since_first_try: Duration::ZERO,
        };
        let acks = [at(10), at(20), at(250), at(260)];
        assert_eq!(
            max_gap(&acks, t0, t0 + Duration::from_millis(300)),
            Duration::from_millis(230)
        );
        assert_eq!(
            max_gap(&acks, t0, t0 + Duration::from_millis(700)),
            Duration::from_millis(440)
        );
    }
}
