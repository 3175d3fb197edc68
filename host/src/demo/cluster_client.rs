//! A small cluster-aware client for the demo and the tests (not for the operator's own control
//! path, which talks to one member at a time through [`crate::engine::Client`]).
//!
//! It keeps a slot → primary table read from `CLUSTER SHARDS`, sends each command to the
//! primary of the key's slot over raw RESP (as the replication-mode writer does, so nothing
//! hides what a server acknowledged), and follows redirections:
//! - `-MOVED slot host:port`: the slot has a new owner; the table is updated for that slot
//!   and refreshed whole, then the command is sent again;
//! - `-ASK slot host:port`: only this command goes to the importing node, preceded by
//!   `ASKING`, once; the table is not changed.
//!
//! Every try is bounded by [`ACK_TIMEOUT`] and every command by [`MAX_TRIES`] tries.

use std::collections::HashMap;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::time::timeout;

use super::writer::{ACK_TIMEOUT, frame, read_line};
use crate::engine::slots::{SLOTS, key_slot};
use crate::engine::{Client, Dialect, HostPort, ShardHealth};

/// Tries of one command (redirections and reconnects included) before it is given up.
pub const MAX_TRIES: usize = 5;
/// Pause before trying again after a connection error or `-CLUSTERDOWN`/`-TRYAGAIN`.
const RETRY_PAUSE: Duration = Duration::from_millis(10);
/// Longest bulk reply [`ClusterClient::get`] accepts.
const MAX_VALUE: usize = 1 << 20;

/// Why a command was not acknowledged.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClusterClientError {
    /// No member answered `CLUSTER SHARDS`.
    #[error("no slot map: {0}")]
    NoMap(String),
    /// The slot has no owner in the table.
    #[error("slot {0} has no owner in the slot map")]
    Unowned(u16),
    /// Every try failed; the last failure is kept.
    #[error("gave up after {tries} tries: {last}")]
    GaveUp {
        /// Tries made.
        tries: usize,
        /// The last failure (an error reply, a reset, a timeout).
        last: String,
    },
}

/// Counters of what the client had to do.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Redirects {
    /// `-MOVED` replies followed.
    pub moved: u64,
    /// `-ASK` replies followed.
    pub ask: u64,
    /// Slot map refreshes.
    pub refreshes: u64,
}

/// A redirection in an error reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Redirect {
    /// `-MOVED slot host:port`.
    Moved(u16, HostPort),
    /// `-ASK slot host:port`.
    Ask(u16, HostPort),
}

/// Parses `MOVED slot host:port` / `ASK slot host:port` (with or without the leading `-`).
pub fn parse_redirect(line: &str) -> Option<Redirect> {
    let mut words = line.trim_start_matches('-').split(' ');
    let kind = words.next()?;
    let slot: u16 = words.next()?.parse().ok().filter(|&s| s < SLOTS)?;
    let addr = words.next()?;
    if words.next().is_some() {
        return None;
    }
    let (host, port) = addr.rsplit_once(':')?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() {
        return None;
    }
    let target = HostPort::new(host, port.parse().ok()?);
    match kind {
        "MOVED" => Some(Redirect::Moved(slot, target)),
        "ASK" => Some(Redirect::Ask(slot, target)),
        _ => None,
    }
}

/// A cluster client: a slot table and one connection per primary.
pub struct ClusterClient {
    seeds: Vec<HostPort>,
    table: Vec<Option<HostPort>>,
    conns: HashMap<HostPort, BufReader<TcpStream>>,
    redirects: Redirects,
}

impl ClusterClient {
    /// Reads the slot map from the first of `seeds` that answers.
    pub async fn connect(seeds: Vec<HostPort>) -> Result<Self, ClusterClientError> {
        let mut client = Self {
            seeds,
            table: vec![None; usize::from(SLOTS)],
            conns: HashMap::new(),
            redirects: Redirects::default(),
        };
        client.refresh().await?;
        Ok(client)
    }

    /// What the client had to do so far.
    pub fn redirects(&self) -> Redirects {
        self.redirects
    }

    /// The primary the table names for `slot`.
    pub fn owner(&self, slot: u16) -> Option<&HostPort> {
        self.table.get(usize::from(slot)).and_then(Option::as_ref)
    }

    /// Reads `CLUSTER SHARDS` from the seeds and the primaries already known (in that order)
    /// and rebuilds the table from the first answer. Slots without a primary in that answer
    /// keep their previous owner.
    pub async fn refresh(&mut self) -> Result<(), ClusterClientError> {
        self.redirects.refreshes += 1;
        let mut candidates = self.seeds.clone();
        for known in self.table.iter().flatten() {
            if !candidates.contains(known) {
                candidates.push(known.clone());
            }
        }
        let mut last = String::from("no seeds");
        for addr in candidates {
            let shards = match Client::connect(addr.clone(), None, Dialect::Valkey).await {
                Ok(client) => client.cluster_shards().await,
                Err(e) => Err(e),
            };
            match shards {
                Ok(shards) => {
                    for shard in shards {
                        let Some(primary) = shard.primary() else {
                            continue;
                        };
                        let Some(port) = primary.port else {
                            continue;
                        };
                        if primary.health == ShardHealth::Failed && shard.slots.is_empty() {
                            continue;
                        }
                        let owner = HostPort::new(primary.ip.clone(), port);
                        for range in &shard.slots {
                            for slot in range.start..=range.end {
                                self.table[usize::from(slot)] = Some(owner.clone());
                            }
                        }
                    }
                    return Ok(());
                }
                Err(e) => last = e.to_string(),
            }
        }
        Err(ClusterClientError::NoMap(last))
    }

    async fn connection(&mut self, addr: &HostPort) -> Result<&mut BufReader<TcpStream>, String> {
        if !self.conns.contains_key(addr) {
            let stream = timeout(
                ACK_TIMEOUT,
                TcpStream::connect((addr.host.as_str(), addr.port)),
            )
            .await
            .map_err(|_| format!("{addr}: connect timed out"))?
            .map_err(|e| format!("{addr}: connect: {e}"))?;
            let _ = stream.set_nodelay(true);
            self.conns.insert(addr.clone(), BufReader::new(stream));
        }
        self.conns
            .get_mut(addr)
            .ok_or_else(|| format!("{addr}: no connection"))
    }

    /// Sends `args` to `addr` (after `ASKING` when `asking`), and reads the reply's first
    /// line; a bulk reply's value is read too and returned after the line.
    async fn send(
        &mut self,
        addr: &HostPort,
        args: &[&[u8]],
        asking: bool,
    ) -> Result<(String, Option<Vec<u8>>), String> {
        let stream = self.connection(addr).await?;
        let exchange = async {
            let mut bytes = Vec::new();
            if asking {
                bytes.extend(frame(&[b"ASKING"]));
            }
            bytes.extend(frame(args));
            stream
                .get_mut()
                .write_all(&bytes)
                .await
                .map_err(|e| format!("write: {e}"))?;
            if asking {
                let ok = read_line(stream).await?;
                if ok != "+OK" {
                    return Err(format!("ASKING: {ok}"));
                }
            }
            let line = read_line(stream).await?;
            let value = match line.strip_prefix('$').map(str::parse::<i64>) {
                Some(Ok(len)) if len >= 0 => {
                    let len = usize::try_from(len).unwrap_or(usize::MAX);
                    if len > MAX_VALUE {
                        return Err(format!("a {len}-byte value is over the limit"));
                    }
                    let mut buf = vec![0; len + 2];
                    stream
                        .read_exact(&mut buf)
                        .await
                        .map_err(|e| format!("read: {e}"))?;
                    buf.truncate(len);
                    Some(buf)
                }
                _ => None,
            };
            Ok((line, value))
        };
        let result = match timeout(ACK_TIMEOUT, exchange).await {
            Ok(result) => result,
            Err(_) => Err(format!("no answer within {ACK_TIMEOUT:?}")),
        };
        if result.is_err() {
            // A broken or out-of-step connection is never reused.
            self.conns.remove(addr);
        }
        result.map_err(|e| format!("{addr}: {e}"))
    }

    /// Sends a command on `key` to the primary of its slot, following redirections, and
    /// returns the reply's first line (and a bulk value), or the error after [`MAX_TRIES`].
    pub async fn command(
        &mut self,
        key: &[u8],
        args: &[&[u8]],
    ) -> Result<(String, Option<Vec<u8>>), ClusterClientError> {
        let slot = key_slot(key);
        let mut ask: Option<HostPort> = None;
        let mut last = String::new();
        for _ in 0..MAX_TRIES {
            let (addr, asking) = match ask.take() {
                Some(target) => (target, true),
                None => match self.owner(slot) {
                    Some(owner) => (owner.clone(), false),
                    None => {
                        let _ = self.refresh().await;
                        match self.owner(slot) {
                            Some(owner) => (owner.clone(), false),
                            None => return Err(ClusterClientError::Unowned(slot)),
                        }
                    }
                },
            };
            match self.send(&addr, args, asking).await {
                Ok((line, value)) if !line.starts_with('-') => return Ok((line, value)),
                Ok((line, _)) => {
                    match parse_redirect(&line) {
                        Some(Redirect::Moved(moved_slot, to)) => {
                            self.redirects.moved += 1;
                            // The rest of the table may have moved too. The redirect is the
                            // freshest word on its slot (a refresh may come from a member
                            // with an older view), so it is applied last.
                            let _ = self.refresh().await;
                            if let Some(cell) = self.table.get_mut(usize::from(moved_slot)) {
                                *cell = Some(to);
                            }
                        }
                        Some(Redirect::Ask(_, to)) => {
                            self.redirects.ask += 1;
                            ask = Some(to);
                        }
                        None => {
                            // -CLUSTERDOWN, -TRYAGAIN, -READONLY (a demoted primary), -LOADING:
                            // wait a little, re-read the map, try again.
                            tokio::time::sleep(RETRY_PAUSE).await;
                            let _ = self.refresh().await;
                        }
                    }
                    last = line;
                }
                Err(e) => {
                    last = e;
                    tokio::time::sleep(RETRY_PAUSE).await;
                    let _ = self.refresh().await;
                }
            }
        }
        Err(ClusterClientError::GaveUp {
            tries: MAX_TRIES,
            last,
        })
    }

    /// `SET key value`; `Ok` only on `+OK`.
    pub async fn set(&mut self, key: &[u8], value: &[u8]) -> Result<(), ClusterClientError> {
        match self.command(key, &[b"SET", key, value]).await? {
            (line, _) if line == "+OK" => Ok(()),
            (line, _) => Err(ClusterClientError::GaveUp {
                tries: 1,
                last: line,
            }),
        }
    }

    /// `GET key`: the value, or `None` for a missing key.
    pub async fn get(&mut self, key: &[u8]) -> Result<Option<Vec<u8>>, ClusterClientError> {
        let (line, value) = self.command(key, &[b"GET", key]).await?;
        match (line.as_str(), value) {
            ("$-1", _) => Ok(None),
            (_, Some(v)) => Ok(Some(v)),
            (other, None) => Err(ClusterClientError::GaveUp {
                tries: 1,
                last: other.to_owned(),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redirects_parse() {
        assert_eq!(
            parse_redirect("-MOVED 3999 127.0.0.6:7001"),
            Some(Redirect::Moved(3999, HostPort::new("127.0.0.6", 7001)))
        );
        assert_eq!(
            parse_redirect("ASK 16383 db-1.kv:6379"),
            Some(Redirect::Ask(16383, HostPort::new("db-1.kv", 6379)))
        );
        assert_eq!(
            parse_redirect("-MOVED 1 ::1:7000"),
            Some(Redirect::Moved(1, HostPort::new("::1", 7000)))
        );
        for bad in [
            "-MOVED 16384 a:1",
            "-MOVED x a:1",
            "-MOVED 1 a",
            "-MOVED 1 :1",
            "-MOVED 1 a:99999",
            "-MOVED 1 a:1 extra",
            "-ERR nope",
            "-CLUSTERDOWN The cluster is down",
        ] {
            assert_eq!(parse_redirect(bad), None, "{bad}");
        }
    }
}
