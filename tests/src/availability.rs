//! Watches members from outside the reconciler: how many were down at the same time.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::time::timeout;

/// Pause between two rounds of probes.
const ROUND_PAUSE: Duration = Duration::from_millis(10);
/// Limit for one PING (generous: a loaded machine is slow, not down).
const PING_TIMEOUT: Duration = Duration::from_secs(2);
/// A bound in case nobody stops the sampler.
const LIMIT: Duration = Duration::from_secs(600);

/// What the sampler saw.
#[derive(Debug, Default, Clone)]
pub struct Seen {
    pub rounds: u64,
    /// The most members that did not answer `+PONG` in one round.
    pub max_down: usize,
    /// The members down in that round.
    pub worst: Vec<SocketAddr>,
}

/// A background task that PINGs every member in rounds.
pub struct Availability {
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<Seen>,
}

impl Availability {
    pub fn start(members: Vec<SocketAddr>) -> Availability {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let task = tokio::spawn(async move {
            let started = std::time::Instant::now();
            let mut seen = Seen::default();
            while !flag.load(Ordering::SeqCst) && started.elapsed() < LIMIT {
                let mut down = Vec::new();
                for &m in &members {
                    // A second try, so a connection cut by a fence is not counted as down.
                    if !pong(m).await && !pong(m).await {
                        down.push(m);
                    }
                }
                seen.rounds += 1;
                if down.len() > seen.max_down {
                    seen.max_down = down.len();
                    seen.worst = down;
                }
                tokio::time::sleep(ROUND_PAUSE).await;
            }
            seen
        });
        Availability { stop, task }
    }

    pub async fn stop(self) -> Seen {
        self.stop.store(true, Ordering::SeqCst);
        self.task.await.expect("the availability sampler panicked")
    }
}

/// Whether `addr` answers `PING` with `+PONG` (`-LOADING` counts as down).
async fn pong(addr: SocketAddr) -> bool {
    let attempt = async {
        let stream = TcpStream::connect(addr).await.ok()?;
        let mut stream = BufReader::new(stream);
        stream
            .get_mut()
            .write_all(b"*1\r\n$4\r\nPING\r\n")
            .await
            .ok()?;
        let mut line = String::new();
        stream.read_line(&mut line).await.ok()?;
        Some(line.starts_with("+PONG"))
    };
    matches!(timeout(PING_TIMEOUT, attempt).await, Ok(Some(true)))
}
