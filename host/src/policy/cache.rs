//! Compiled components by sha256 digest: the same bytes compile once per process. Entries
//! are only ever produced by this host's own compilation (nothing is deserialized).
//!
//! The cache is bounded (docs/architecture.md, rule 11): by count and by the bytes of
//! compiled code it holds. Past either bound the least recently used entry goes first. A
//! plugin still in use keeps its compiled component alive (it holds an `Arc`); eviction only
//! means the next load of the same bytes compiles them again.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

/// What the cache may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheLimits {
    /// Most entries.
    pub entries: usize,
    /// Most bytes of compiled code, over all entries.
    pub bytes: usize,
}

impl Default for CacheLimits {
    fn default() -> Self {
        // A cluster names at most three plugins; a few hundred clusters sharing a few dozen
        // plugins fit. A compiled Rust plugin is a few hundred KiB to a few MiB.
        CacheLimits {
            entries: 64,
            bytes: 256 << 20,
        }
    }
}

struct Entry<V> {
    value: Arc<V>,
    bytes: usize,
    /// When it was last inserted or returned (a counter, larger is more recent).
    used: u64,
}

struct Entries<V> {
    map: HashMap<[u8; 32], Entry<V>>,
    bytes: usize,
    clock: u64,
}

/// An in-memory, process-wide map from digest to compiled component, least recently used
/// first out.
pub(crate) struct Cache<V> {
    limits: CacheLimits,
    entries: Mutex<Entries<V>>,
}

impl<V> Cache<V> {
    pub fn new(limits: CacheLimits) -> Self {
        Cache {
            limits,
            entries: Mutex::new(Entries {
                map: HashMap::new(),
                bytes: 0,
                clock: 0,
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Entries<V>> {
        // A poisoned lock only means another thread panicked mid-update of a cache.
        self.entries.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub fn get(&self, digest: &[u8; 32]) -> Option<Arc<V>> {
        let mut entries = self.lock();
        entries.clock += 1;
        let now = entries.clock;
        entries.map.get_mut(digest).map(|e| {
            e.used = now;
            e.value.clone()
        })
    }

    /// Inserts `value` (holding `bytes` of compiled code) unless another task compiled the
    /// same bytes first; returns the entry that is kept, so every caller shares one artifact.
    /// Then evicts the least recently used entries past the limits (never the one just
    /// inserted: a single component larger than the byte bound is still returned, and goes
    /// at the next insertion).
    pub fn insert(&self, digest: [u8; 32], value: Arc<V>, bytes: usize) -> Arc<V> {
        let mut entries = self.lock();
        entries.clock += 1;
        let now = entries.clock;
        if let Some(e) = entries.map.get_mut(&digest) {
            e.used = now;
            return e.value.clone();
        }
        entries.map.insert(
            digest,
            Entry {
                value: value.clone(),
                bytes,
                used: now,
            },
        );
        entries.bytes = entries.bytes.saturating_add(bytes);
        while entries.map.len() > self.limits.entries
            || (entries.bytes > self.limits.bytes && entries.map.len() > 1)
        {
            let Some(oldest) = entries
                .map
                .iter()
                .filter(|(d, _)| **d != digest)
                .min_by_key(|(_, e)| e.used)
                .map(|(d, _)| *d)
            else {
                break;
            };
            if let Some(gone) = entries.map.remove(&oldest) {
                entries.bytes = entries.bytes.saturating_sub(gone.bytes);
            }
        }
        value
    }

    pub fn len(&self) -> usize {
        self.lock().map.len()
    }

    /// Bytes of compiled code held.
    pub fn bytes(&self) -> usize {
        self.lock().bytes
    }

    #[cfg(test)]
    pub fn contains(&self, digest: &[u8; 32]) -> bool {
        self.lock().map.contains_key(digest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digest(n: u8) -> [u8; 32] {
        [n; 32]
    }

    #[test]
    fn the_least_recently_used_entry_goes_first_past_the_count() {
        let cache = Cache::new(CacheLimits {
            entries: 2,
            bytes: usize::MAX,
        });
        cache.insert(digest(1), Arc::new("one"), 10);
        cache.insert(digest(2), Arc::new("two"), 10);
        // Using 1 makes 2 the least recently used.
        assert_eq!(cache.get(&digest(1)).as_deref(), Some(&"one"));
        cache.insert(digest(3), Arc::new("three"), 10);
        assert_eq!(cache.len(), 2);
        assert!(cache.contains(&digest(1)) && cache.contains(&digest(3)));
        assert!(!cache.contains(&digest(2)), "evicted");
        assert_eq!(cache.bytes(), 20);
    }

    #[test]
    fn entries_go_past_the_byte_bound_but_the_newest_stays() {
        let cache = Cache::new(CacheLimits {
            entries: 100,
            bytes: 25,
        });
        cache.insert(digest(1), Arc::new(1), 10);
        cache.insert(digest(2), Arc::new(2), 10);
        cache.insert(digest(3), Arc::new(3), 10);
        assert!(!cache.contains(&digest(1)), "the oldest went to make room");
        assert_eq!((cache.len(), cache.bytes()), (2, 20));
        // One entry larger than the bound: kept (and returned), the rest make room.
        assert_eq!(*cache.insert(digest(4), Arc::new(4), 100), 4);
        assert_eq!((cache.len(), cache.bytes()), (1, 100));
        // It goes at the next insertion.
        cache.insert(digest(5), Arc::new(5), 1);
        assert_eq!((cache.len(), cache.bytes()), (1, 1));
    }

    #[test]
    fn the_first_insertion_of_the_same_bytes_wins() {
        let cache = Cache::new(CacheLimits::default());
        let first = cache.insert(digest(7), Arc::new(String::from("first")), 1);
        let second = cache.insert(digest(7), Arc::new(String::from("second")), 1);
        assert!(Arc::ptr_eq(&first, &second));
        assert_eq!(cache.len(), 1);
    }
}
