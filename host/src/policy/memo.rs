//! Memoized decisions. A plugin is a pure function of its request: its clocks are frozen, its
//! randomness is a fixed stream and it has no capability to reach anything else (see
//! `sandbox.rs`, `determinism.rs`). So an identical request (config included) to the same
//! component bytes (sha256) under the same limits gets the same answer, and the answer kept
//! from the first call is returned without making an instance.
//!
//! Only validated answers are kept: a trap, a timeout, the plugin's own error or an answer
//! refused by validation is never kept, so the next identical request calls the plugin again.
//! The memo is bounded by entries and by an estimate of the bytes each entry holds (rule 11,
//! docs/architecture.md); past either bound the least recently used entry goes first.
//!
//! The lookup hashes the request in place and compares it field by field with the kept one
//! (a hash collision can never return another request's answer); only a miss clones it.

use super::plugin::Limits;
use kvpilot_sdk::{
    Member, MemberSchedule, RolloutRequest, ScheduleRequest, Selection, SelectionRequest, Step,
};
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::{Mutex, PoisonError};

/// What the memo may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoLimits {
    /// Most answers kept.
    pub entries: usize,
    /// Most bytes kept (requests and answers, estimated), over all entries. An entry larger
    /// than this is not kept at all.
    pub bytes: usize,
}

impl Default for MemoLimits {
    fn default() -> Self {
        // A 1000-member request is ~200 KiB here: 32 MiB keeps ~150 of those, or every hook
        // of a few hundred small clusters.
        MemoLimits {
            entries: 1024,
            bytes: 32 << 20,
        }
    }
}

/// A request as asked (borrowed).
#[derive(Clone, Copy)]
pub(crate) enum Asked<'a> {
    Select(&'a SelectionRequest),
    Schedule(&'a ScheduleRequest),
    Next(&'a RolloutRequest),
}

/// A request as kept.
enum Kept {
    Select(SelectionRequest),
    Schedule(ScheduleRequest),
    Next(RolloutRequest),
}

/// A validated answer.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Answer {
    Selection(Selection),
    Schedules(Vec<MemberSchedule>),
    Step(Step),
}

impl Asked<'_> {
    fn matches(&self, kept: &Kept) -> bool {
        match (self, kept) {
            (Asked::Select(a), Kept::Select(k)) => *a == k,
            (Asked::Schedule(a), Kept::Schedule(k)) => *a == k,
            (Asked::Next(a), Kept::Next(k)) => *a == k,
            _ => false,
        }
    }

    fn keep(&self) -> Kept {
        match self {
            Asked::Select(r) => Kept::Select((*r).clone()),
            Asked::Schedule(r) => Kept::Schedule((*r).clone()),
            Asked::Next(r) => Kept::Next((*r).clone()),
        }
    }

    /// A fingerprint of the request, not all of it: every scalar of every member, the length
    /// and last bytes of its name, and the rest of the request in full. Zones, nodes and the
    /// middle of long names are left to the equality check (a request differing only there
    /// shares a bucket, never an answer). Four multiply-rounds a member keep a hit at 100
    /// members near a microsecond, where hashing every byte took several.
    fn hash_into(&self, h: &mut Fx) {
        fn members(h: &mut Fx, members: &[Member]) {
            h.add(members.len() as u64);
            for m in members {
                h.add(m.offset);
                h.add(m.lag_bytes ^ m.keys.rotate_left(32));
                let flags = u64::from(m.ready)
                    | u64::from(m.on_desired_revision) << 1
                    | u64::from(m.link_up) << 2
                    | u64::from(m.syncing) << 3
                    | (m.role as u64) << 4
                    | u64::from(m.shard) << 8
                    | u64::from(m.ordinal) << 32;
                h.add(flags);
                h.add(name_tail(&m.name));
            }
        }
        match self {
            Asked::Select(r) => {
                h.add(0);
                r.reason.hash(h);
                r.cluster.hash(h);
                r.config.hash(h);
                members(h, r.primary.as_slice());
                members(h, &r.candidates);
            }
            Asked::Schedule(r) => {
                h.add(1);
                r.mode.hash(h);
                r.cluster.hash(h);
                r.schedule.hash(h);
                h.add(u64::from(r.stagger_minutes));
                r.config.hash(h);
                members(h, &r.members);
            }
            Asked::Next(r) => {
                h.add(2);
                r.cluster.hash(h);
                h.add(u64::from(r.max_in_flight));
                h.add(r.max_lag_bytes);
                r.config.hash(h);
                members(h, &r.members);
            }
        }
    }

    /// An estimate of the heap and inline bytes a kept copy holds.
    fn bytes(&self) -> usize {
        let members = |m: &[Member]| -> usize {
            m.iter()
                .map(|m| {
                    size_of::<Member>()
                        + m.name.len()
                        + m.zone.as_ref().map_or(0, String::len)
                        + m.node.as_ref().map_or(0, String::len)
                })
                .sum()
        };
        size_of::<Kept>()
            + match self {
                Asked::Select(r) => {
                    members(&r.candidates)
                        + members(r.primary.as_slice())
                        + r.config.len()
                        + r.cluster.name.len()
                        + r.cluster.namespace.len()
                }
                Asked::Schedule(r) => {
                    members(&r.members)
                        + r.config.len()
                        + r.schedule.len()
                        + r.cluster.name.len()
                        + r.cluster.namespace.len()
                }
                Asked::Next(r) => {
                    members(&r.members)
                        + r.config.len()
                        + r.cluster.name.len()
                        + r.cluster.namespace.len()
                }
            }
    }
}

impl Answer {
    fn bytes(&self) -> usize {
        size_of::<Answer>()
            + match self {
                Answer::Selection(Selection::Promote(s) | Selection::Wait(s)) => s.len(),
                Answer::Schedules(v) => v
                    .iter()
                    .map(|m| {
                        size_of::<MemberSchedule>()
                            + m.member.len()
                            + m.cron.as_ref().map_or(0, String::len)
                    })
                    .sum(),
                Answer::Step(Step::Restart(s) | Step::Wait(s)) => s.len(),
                Answer::Step(Step::Handover { from, to }) => from.len() + to.len(),
                Answer::Step(Step::Done) => 0,
            }
    }
}

/// A name's length and its last (up to) 8 bytes, where member names differ (`cache-12`).
fn name_tail(name: &str) -> u64 {
    let bytes = name.as_bytes();
    let tail = &bytes[bytes.len().saturating_sub(8)..];
    let mut word = [0u8; 8];
    word[..tail.len()].copy_from_slice(tail);
    u64::from_le_bytes(word) ^ (bytes.len() as u64).rotate_left(56)
}

/// The multiply-rotate hash of rustc's `FxHasher`: a few cycles per word, which keeps a hit at
/// 100 members within a couple of microseconds (SipHash would take several). Its quality
/// only spreads entries: equality is checked in full.
#[derive(Default)]
struct Fx(u64);

impl Fx {
    #[inline]
    fn add(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
}

impl Hasher for Fx {
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for chunk in &mut chunks {
            let mut word = [0u8; 8];
            word.copy_from_slice(chunk);
            self.add(u64::from_le_bytes(word));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut word = [0u8; 8];
            word[..rest.len()].copy_from_slice(rest);
            self.add(u64::from_le_bytes(word));
        }
    }

    fn write_u8(&mut self, i: u8) {
        self.add(u64::from(i));
    }

    fn write_u32(&mut self, i: u32) {
        self.add(u64::from(i));
    }

    fn write_u64(&mut self, i: u64) {
        self.add(i);
    }

    fn write_usize(&mut self, i: usize) {
        self.add(i as u64);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

struct Entry {
    sha256: [u8; 32],
    limits: Limits,
    request: Kept,
    answer: Answer,
    bytes: usize,
    /// When it was last kept or returned (a counter, larger is more recent).
    used: u64,
}

#[derive(Default)]
struct Entries {
    /// By hash; the rare collisions share a bucket.
    map: HashMap<u64, Vec<Entry>>,
    len: usize,
    bytes: usize,
    clock: u64,
    hits: u64,
    misses: u64,
}

/// What the memo holds and how it has been used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MemoStats {
    pub entries: usize,
    pub bytes: usize,
    pub hits: u64,
    pub misses: u64,
}

/// The process-wide memo of validated answers (one per [`super::PolicyRuntime`]).
pub(crate) struct Memo {
    limits: MemoLimits,
    entries: Mutex<Entries>,
}

fn key(sha256: &[u8; 32], limits: &Limits, asked: Asked<'_>) -> u64 {
    let mut h = Fx::default();
    h.write(sha256);
    limits.hash(&mut h);
    asked.hash_into(&mut h);
    h.finish()
}

impl Memo {
    pub fn new(limits: MemoLimits) -> Memo {
        Memo {
            limits,
            entries: Mutex::new(Entries::default()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Entries> {
        // A poisoned lock only means another thread panicked mid-update of the memo.
        self.entries.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The answer kept for this exact request, if any.
    pub fn get(&self, sha256: &[u8; 32], limits: &Limits, asked: Asked<'_>) -> Option<Answer> {
        let hash = key(sha256, limits, asked);
        let mut entries = self.lock();
        entries.clock += 1;
        let now = entries.clock;
        let found = entries.map.get_mut(&hash).and_then(|bucket| {
            bucket
                .iter_mut()
                .find(|e| e.sha256 == *sha256 && e.limits == *limits && asked.matches(&e.request))
                .map(|e| {
                    e.used = now;
                    e.answer.clone()
                })
        });
        match found {
            Some(_) => entries.hits += 1,
            None => entries.misses += 1,
        }
        found
    }

    /// Keeps a validated answer; then evicts the least recently used entries past the limits.
    /// An entry larger than the byte bound is not kept.
    pub fn put(&self, sha256: &[u8; 32], limits: &Limits, asked: Asked<'_>, answer: Answer) {
        let bytes = size_of::<Entry>() + asked.bytes() + answer.bytes();
        if bytes > self.limits.bytes || self.limits.entries == 0 {
            return;
        }
        let hash = key(sha256, limits, asked);
        let mut entries = self.lock();
        entries.clock += 1;
        let now = entries.clock;
        let bucket = entries.map.entry(hash).or_default();
        if let Some(e) = bucket
            .iter_mut()
            .find(|e| e.sha256 == *sha256 && e.limits == *limits && asked.matches(&e.request))
        {
            // Another task answered the same request meanwhile: the same answer.
            e.used = now;
            return;
        }
        bucket.push(Entry {
            sha256: *sha256,
            limits: *limits,
            request: asked.keep(),
            answer,
            bytes,
            used: now,
        });
        entries.len += 1;
        entries.bytes += bytes;
        while entries.len > self.limits.entries || entries.bytes > self.limits.bytes {
            let Some((hash, index)) = entries
                .map
                .iter()
                .flat_map(|(h, bucket)| bucket.iter().enumerate().map(move |(i, e)| (*h, i, e)))
                .min_by_key(|(_, _, e)| e.used)
                .map(|(h, i, _)| (h, i))
            else {
                break;
            };
            let Some(bucket) = entries.map.get_mut(&hash) else {
                break;
            };
            let gone = bucket.swap_remove(index);
            if bucket.is_empty() {
                entries.map.remove(&hash);
            }
            entries.len -= 1;
            entries.bytes = entries.bytes.saturating_sub(gone.bytes);
        }
    }

    pub fn stats(&self) -> MemoStats {
        let entries = self.lock();
        MemoStats {
            entries: entries.len,
            bytes: entries.bytes,
            hits: entries.hits,
            misses: entries.misses,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kvpilot_sdk::{Cluster, SelectionReason};

    fn request(config: &str, candidates: usize) -> SelectionRequest {
        SelectionRequest {
            reason: SelectionReason::PrimaryLost,
            cluster: Cluster {
                name: "c".into(),
                ..Cluster::default()
            },
            primary: None,
            candidates: (0..candidates)
                .map(|i| Member {
                    name: format!("c-{i}"),
                    ..Member::default()
                })
                .collect(),
            config: config.into(),
        }
    }

    fn promote(name: &str) -> Answer {
        Answer::Selection(Selection::Promote(name.into()))
    }

    #[test]
    fn only_the_same_request_bytes_and_limits_hit() {
        let memo = Memo::new(MemoLimits::default());
        let limits = Limits::default();
        let r = request("{}", 2);
        memo.put(&[1; 32], &limits, Asked::Select(&r), promote("c-0"));
        assert_eq!(
            memo.get(&[1; 32], &limits, Asked::Select(&r.clone())),
            Some(promote("c-0"))
        );
        // Another config, another member field, other bytes, other limits: misses.
        assert_eq!(
            memo.get(&[1; 32], &limits, Asked::Select(&request("{\"a\":1}", 2))),
            None
        );
        let mut lagging = r.clone();
        lagging.candidates[1].lag_bytes = 1;
        assert_eq!(memo.get(&[1; 32], &limits, Asked::Select(&lagging)), None);
        // What the fingerprint leaves out still misses: the equality check sees it.
        let mut zoned = r.clone();
        zoned.candidates[0].zone = Some("zone-a".into());
        assert_eq!(memo.get(&[1; 32], &limits, Asked::Select(&zoned)), None);
        let mut long = r.clone();
        long.candidates[0].name = "aaaa-cache-0".into();
        memo.put(
            &[1; 32],
            &limits,
            Asked::Select(&long),
            promote("aaaa-cache-0"),
        );
        let mut renamed = long.clone();
        renamed.candidates[0].name = "bbbb-cache-0".into(); // the same length and tail
        assert_eq!(memo.get(&[1; 32], &limits, Asked::Select(&renamed)), None);
        assert_eq!(memo.get(&[2; 32], &limits, Asked::Select(&r)), None);
        let slower = Limits {
            timeout: std::time::Duration::from_millis(1),
            ..limits
        };
        assert_eq!(memo.get(&[1; 32], &slower, Asked::Select(&r)), None);
        let stats = memo.stats();
        assert_eq!((stats.entries, stats.hits, stats.misses), (2, 1, 6));
    }

    #[test]
    fn the_least_recently_used_goes_past_the_entry_bound() {
        let memo = Memo::new(MemoLimits {
            entries: 2,
            bytes: usize::MAX,
        });
        let limits = Limits::default();
        let (a, b, c) = (request("{}", 1), request("{}", 2), request("{}", 3));
        memo.put(&[1; 32], &limits, Asked::Select(&a), promote("a"));
        memo.put(&[1; 32], &limits, Asked::Select(&b), promote("b"));
        assert!(memo.get(&[1; 32], &limits, Asked::Select(&a)).is_some());
        memo.put(&[1; 32], &limits, Asked::Select(&c), promote("c"));
        assert_eq!(memo.stats().entries, 2);
        assert!(
            memo.get(&[1; 32], &limits, Asked::Select(&b)).is_none(),
            "b was oldest"
        );
        assert!(memo.get(&[1; 32], &limits, Asked::Select(&a)).is_some());
        assert!(memo.get(&[1; 32], &limits, Asked::Select(&c)).is_some());
    }

    #[test]
    fn bytes_are_bounded_and_an_oversized_entry_is_not_kept() {
        let small = Asked::Select(&request("{}", 1)).bytes() + size_of::<Entry>() + 64;
        let memo = Memo::new(MemoLimits {
            entries: 100,
            bytes: 3 * small,
        });
        let limits = Limits::default();
        for n in 0..10u8 {
            memo.put(
                &[n; 32],
                &limits,
                Asked::Select(&request("{}", 1)),
                promote("x"),
            );
            assert!(memo.stats().bytes <= 3 * small);
        }
        assert_eq!(memo.stats().entries, 3);
        let huge = request("{}", 10_000);
        memo.put(&[99; 32], &limits, Asked::Select(&huge), promote("x"));
        assert!(memo.get(&[99; 32], &limits, Asked::Select(&huge)).is_none());
        assert_eq!(memo.stats().entries, 3);
    }
}
