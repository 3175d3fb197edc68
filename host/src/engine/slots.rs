//! Hash slots of Valkey/Redis Cluster (and Dragonfly's cluster mode): a key's slot, slot
//! ranges, and the contiguous balanced layout bootstrap assigns. Pure, no I/O.
//!
//! The slot of a key is `CRC16/XMODEM(tag) mod 16384`, where `tag` is the part between the
//! first `{` and the first `}` after it when that part is not empty, else the whole key.

use std::fmt;

/// Number of hash slots.
pub const SLOTS: u16 = 16384;
/// The highest slot number.
pub const MAX_SLOT: u16 = SLOTS - 1;

/// CRC16/XMODEM (polynomial 0x1021, initial value 0, no reflection), the checksum Redis
/// Cluster hashes keys with; a lookup table built at compile time.
const CRC16_TABLE: [u16; 256] = {
    let mut table = [0u16; 256];
    let mut i = 0;
    while i < 256 {
        let mut crc = (i as u16) << 8;
        let mut bit = 0;
        while bit < 8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
            bit += 1;
        }
        table[i] = crc;
        i += 1;
    }
    table
};

/// CRC16/XMODEM of `bytes`.
pub fn crc16(bytes: &[u8]) -> u16 {
    bytes.iter().fold(0u16, |crc, &b| {
        (crc << 8) ^ CRC16_TABLE[usize::from(((crc >> 8) as u8) ^ b)]
    })
}

/// The part of `key` that is hashed: the first non-empty `{hash tag}`, else the whole key.
pub fn hash_tag(key: &[u8]) -> &[u8] {
    if let Some(open) = key.iter().position(|&b| b == b'{')
        && let Some(len) = key[open + 1..].iter().position(|&b| b == b'}')
        && len > 0
    {
        return &key[open + 1..open + 1 + len];
    }
    key
}

/// The hash slot of `key`, as `CLUSTER KEYSLOT` answers it.
pub fn key_slot(key: &[u8]) -> u16 {
    crc16(hash_tag(key)) & MAX_SLOT
}

/// A closed range of slots, `start..=end`.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub struct SlotRange {
    /// First slot.
    pub start: u16,
    /// Last slot (inclusive).
    pub end: u16,
}

impl SlotRange {
    /// `start..=end`; `None` when `start > end` or `end` is past [`MAX_SLOT`].
    pub fn new(start: u16, end: u16) -> Option<Self> {
        (start <= end && end <= MAX_SLOT).then_some(Self { start, end })
    }

    /// One slot.
    pub fn single(slot: u16) -> Option<Self> {
        Self::new(slot, slot)
    }

    /// How many slots the range holds.
    pub fn len(&self) -> u32 {
        u32::from(self.end) - u32::from(self.start) + 1
    }

    /// Never empty (a range holds at least one slot); present for clippy's `len` rule.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// Whether `slot` is in the range.
    pub fn contains(&self, slot: u16) -> bool {
        (self.start..=self.end).contains(&slot)
    }
}

impl fmt::Display for SlotRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.start == self.end {
            write!(f, "{}", self.start)
        } else {
            write!(f, "{}-{}", self.start, self.end)
        }
    }
}

/// `shards` contiguous ranges that cover every slot, in order, with sizes that differ by at
/// most one (the layout `valkey-cli --cluster create` makes: 0-5460, 5461-10922,
/// 10923-16383 for three). Empty for 0 shards; more shards than slots is capped at
/// [`SLOTS`].
pub fn balanced_ranges(shards: usize) -> Vec<SlotRange> {
    let n = shards.min(usize::from(SLOTS)) as u32;
    let total = u32::from(SLOTS);
    // Rounded boundaries: start_i = round(i * 16384 / n).
    let start = |i: u32| (i * total * 2 + n) / (2 * n);
    (0..n)
        .filter_map(|i| {
            let first = u16::try_from(start(i)).ok()?;
            let last = u16::try_from(start(i + 1) - 1).ok()?;
            SlotRange::new(first, last)
        })
        .collect()
}

/// Sorted, merged ranges from a list of slots (duplicates dropped).
pub fn ranges_of(slots: impl IntoIterator<Item = u16>) -> Vec<SlotRange> {
    let mut slots: Vec<u16> = slots.into_iter().filter(|&s| s <= MAX_SLOT).collect();
    slots.sort_unstable();
    slots.dedup();
    let mut out: Vec<SlotRange> = Vec::new();
    for slot in slots {
        match out.last_mut() {
            Some(last) if u32::from(last.end) + 1 == u32::from(slot) => last.end = slot,
            _ => out.push(SlotRange {
                start: slot,
                end: slot,
            }),
        }
    }
    out
}

/// Why a set of per-shard slot ranges is not a valid slot map (safety rule 1: every slot is
/// placed exactly once).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SlotMapError {
    /// A slot belongs to two shards.
    #[error("slot {slot} is placed twice: in shard {first} and in shard {second}")]
    Duplicate {
        /// The slot.
        slot: u16,
        /// Index of the first shard that holds it.
        first: usize,
        /// Index of the second.
        second: usize,
    },
    /// A slot belongs to no shard.
    #[error("slot {slot} is placed in no shard ({missing} slots missing in all)")]
    Missing {
        /// The first missing slot.
        slot: u16,
        /// How many slots are missing.
        missing: usize,
    },
}

/// Checks that `shards` (each shard's ranges) place every slot 0..=16383 exactly once.
pub fn check_coverage(shards: &[Vec<SlotRange>]) -> Result<(), SlotMapError> {
    let mut owner: Vec<Option<usize>> = vec![None; usize::from(SLOTS)];
    for (index, ranges) in shards.iter().enumerate() {
        for range in ranges {
            for slot in range.start..=range.end.min(MAX_SLOT) {
                let cell = &mut owner[usize::from(slot)];
                if let Some(first) = *cell {
                    return Err(SlotMapError::Duplicate {
                        slot,
                        first,
                        second: index,
                    });
                }
                *cell = Some(index);
            }
        }
    }
    let missing: Vec<usize> = (0..owner.len()).filter(|&s| owner[s].is_none()).collect();
    match missing.first() {
        None => Ok(()),
        Some(&first) => Err(SlotMapError::Missing {
            slot: u16::try_from(first).unwrap_or(MAX_SLOT),
            missing: missing.len(),
        }),
    }
}

/// A node in a [`SlotMap`]: its id and the address clients and peers use.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct MapNode {
    /// Node id (`CLUSTER MYID`).
    pub id: String,
    /// IP or host name.
    pub host: String,
    /// Client port.
    pub port: u16,
}

/// One shard of a [`SlotMap`].
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct MapShard {
    /// The slots the shard owns.
    pub slots: Vec<SlotRange>,
    /// Its primary.
    pub primary: MapNode,
    /// Its replicas.
    pub replicas: Vec<MapNode>,
}

/// The desired placement of every slot: shards, each a primary with replicas and slot ranges.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SlotMap {
    /// The shards, in shard-index order.
    pub shards: Vec<MapShard>,
}

/// Why a [`SlotMap`] is not usable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SlotMapInvalid {
    /// The slots are not placed exactly once.
    #[error(transparent)]
    Slots(#[from] SlotMapError),
    /// A node id appears twice (as primaries, replicas, or both).
    #[error("node id {id:?} appears more than once")]
    DuplicateNode {
        /// The id.
        id: String,
    },
}

impl SlotMap {
    /// Checks that every slot is placed exactly once and that no node id appears twice.
    pub fn validate(&self) -> Result<(), SlotMapInvalid> {
        let per_shard: Vec<Vec<SlotRange>> = self.shards.iter().map(|s| s.slots.clone()).collect();
        check_coverage(&per_shard)?;
        let mut seen = std::collections::BTreeSet::new();
        for shard in &self.shards {
            for node in std::iter::once(&shard.primary).chain(&shard.replicas) {
                if !seen.insert(node.id.as_str()) {
                    return Err(SlotMapInvalid::DuplicateNode {
                        id: super::cluster_nodes::quote(&node.id),
                    });
                }
            }
        }
        Ok(())
    }
}

/// For each slot, a short hash tag (a decimal number) whose slot is that slot: a key
/// `prefix:{TAG}:n` lands in the slot, so a writer can cycle through every slot in turn.
/// Computed once, deterministically (the smallest such number).
pub fn slot_tags() -> &'static [String] {
    static TAGS: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();
    TAGS.get_or_init(|| {
        let mut tags: Vec<Option<String>> = vec![None; usize::from(SLOTS)];
        let mut left = usize::from(SLOTS);
        let mut n: u64 = 0;
        while left > 0 {
            let tag = n.to_string();
            let slot = usize::from(key_slot(tag.as_bytes()));
            if tags[slot].is_none() {
                tags[slot] = Some(tag);
                left -= 1;
            }
            n += 1;
        }
        tags.into_iter().map(Option::unwrap_or_default).collect()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `CLUSTER KEYSLOT` answers captured from a real server (see the file's header).
    const KEYSLOT: &str = include_str!("testdata/cluster/keyslot.txt");

    #[test]
    fn crc16_matches_the_xmodem_check_value() {
        // The standard CRC-16/XMODEM check value for "123456789".
        assert_eq!(crc16(b"123456789"), 0x31C3);
        assert_eq!(crc16(b""), 0);
    }

    #[test]
    fn key_slot_matches_a_real_server() {
        let mut checked = 0;
        for line in KEYSLOT.lines().filter(|l| !l.starts_with('#')) {
            let (slot, key) = line.split_once('\t').expect("slot<TAB>key");
            let slot: u16 = slot.parse().expect("slot number");
            assert_eq!(key_slot(key.as_bytes()), slot, "key {key:?}");
            checked += 1;
        }
        assert!(checked > 100, "only {checked} captured keys");
    }

    #[test]
    fn hash_tags_follow_the_first_brace_pair() {
        assert_eq!(hash_tag(b"{user1000}.following"), b"user1000");
        assert_eq!(hash_tag(b"foo{}{bar}"), b"foo{}{bar}");
        assert_eq!(hash_tag(b"foo{{bar}}zap"), b"{bar");
        assert_eq!(hash_tag(b"foo{bar}{zap}"), b"bar");
        assert_eq!(hash_tag(b"}{a}"), b"a");
        assert_eq!(hash_tag(b"{"), b"{");
        assert_eq!(key_slot(b"x{a}y"), key_slot(b"a"));
    }

    #[test]
    fn balanced_ranges_cover_every_slot_like_valkey_cli() {
        assert_eq!(
            balanced_ranges(3),
            vec![
                SlotRange::new(0, 5460).unwrap(),
                SlotRange::new(5461, 10922).unwrap(),
                SlotRange::new(10923, 16383).unwrap(),
            ]
        );
        for n in [1, 2, 3, 5, 7, 100, 1000, 16383, 16384] {
            let ranges = balanced_ranges(n);
            assert_eq!(ranges.len(), n);
            let per: Vec<Vec<SlotRange>> = ranges.iter().map(|r| vec![*r]).collect();
            check_coverage(&per).unwrap();
            let (min, max) = ranges
                .iter()
                .fold((u32::MAX, 0), |(a, b), r| (a.min(r.len()), b.max(r.len())));
            assert!(max - min <= 1, "{n}: sizes {min}..{max}");
        }
        assert!(balanced_ranges(0).is_empty());
        assert_eq!(balanced_ranges(20000).len(), 16384);
    }

    #[test]
    fn coverage_names_the_duplicate_or_missing_slot() {
        let r = |a, b| SlotRange::new(a, b).unwrap();
        assert_eq!(
            check_coverage(&[vec![r(0, 100)], vec![r(100, 16383)]]),
            Err(SlotMapError::Duplicate {
                slot: 100,
                first: 0,
                second: 1
            })
        );
        assert_eq!(
            check_coverage(&[vec![r(0, 99)], vec![r(101, 16000)]]),
            Err(SlotMapError::Missing {
                slot: 100,
                missing: 1 + 383
            })
        );
    }

    #[test]
    fn ranges_merge_and_display() {
        assert_eq!(
            ranges_of([5, 3, 4, 9, 9, 20000]),
            vec![SlotRange::new(3, 5).unwrap(), SlotRange::single(9).unwrap()]
        );
        assert_eq!(SlotRange::new(3, 5).unwrap().to_string(), "3-5");
        assert_eq!(SlotRange::single(9).unwrap().to_string(), "9");
        assert_eq!(SlotRange::new(5, 3), None);
        assert_eq!(SlotRange::new(0, 16384), None);
    }

    #[test]
    fn slot_tags_hit_every_slot() {
        let tags = slot_tags();
        assert_eq!(tags.len(), usize::from(SLOTS));
        for (slot, tag) in tags.iter().enumerate() {
            assert_eq!(usize::from(key_slot(tag.as_bytes())), slot);
            let key = format!("w:{{{tag}}}:42");
            assert_eq!(usize::from(key_slot(key.as_bytes())), slot);
        }
    }
}
