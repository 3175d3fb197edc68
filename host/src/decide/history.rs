//! Replication history (safety rule 2 in `docs/architecture.md`): whether one member holds
//! everything another held, and which of two histories is newer. Key counts alone cannot say:
//! a primary emptied by `FLUSHALL` holds no keys and the newest history, a replica restarted
//! from an old dump holds keys and an older one, and a member that is loading holds an
//! unknown number.
//!
//! A history is a replication ID and an offset in it, plus the ID it had before its last
//! change of ID (`master_replid2`) and the offset up to which that one holds
//! (`second_repl_offset`), which is what `PSYNC` itself goes by: member A holds member B's
//! history when B's (ID, offset) lies on A's current or previous stream. Pure: `topology`
//! decides with it.

use crate::observe::{History, ObservedMember};

/// What a member holds: its history and its key count, both known.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Held<'a> {
    pub history: &'a History,
    pub keys: u64,
}

/// What the operator can tell about what a member holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Standing<'a> {
    /// It answered now, with its dataset loaded.
    Now(Held<'a>),
    /// It is down, does not answer or is loading, but it was recorded when it last answered:
    /// it may hold at least that.
    Recorded(Held<'a>),
    /// It is down, does not answer or is loading, and nothing was recorded: it may hold
    /// anything.
    Unknown,
}

/// `m`'s standing: what it answered now, else what status recorded.
pub fn standing(m: &ObservedMember) -> Standing<'_> {
    let now = m.report.as_ref().filter(|r| m.running && !r.loading);
    if let Some(r) = now
        && let (Some(history), Some(keys)) = (r.history.as_ref(), r.keys)
    {
        return Standing::Now(Held { history, keys });
    }
    match &m.last_known {
        Some(k) => Standing::Recorded(Held {
            history: &k.history,
            keys: k.keys,
        }),
        None => Standing::Unknown,
    }
}

/// Holds nothing: no key and no replication history (a member started empty that never
/// synced). Every history holds it.
pub fn blank(h: Held<'_>) -> bool {
    h.keys == 0 && h.history.offset == 0
}

/// Whether `(id, offset)` lies on `a`'s current stream or on its previous one.
fn on_line(a: &History, id: &str, offset: u64) -> bool {
    (a.replid == id && offset <= a.offset)
        || (a.replid2.as_deref() == Some(id)
            && a.previous_until_offset.is_some_and(|until| offset < until))
}

/// The ID under which `h` last wrote. A member whose ID changed without a write since (a
/// replica just promoted, a primary that just loaded a snapshot) still holds exactly its
/// previous stream up to its offset: `second_repl_offset` is then the offset plus one.
fn wrote_under(h: &History) -> &str {
    match (&h.replid2, h.previous_until_offset) {
        (Some(previous), Some(until)) if until == h.offset.saturating_add(1) => previous,
        _ => &h.replid,
    }
}

/// `a` holds everything `b` holds.
pub fn contains(a: Held<'_>, b: Held<'_>) -> bool {
    blank(b)
        || on_line(a.history, &b.history.replid, b.history.offset)
        || on_line(a.history, wrote_under(b.history), b.history.offset)
}

/// `a` was promoted out of `b`'s stream (its previous ID is `b`'s) and has written since.
fn forked_from(a: &History, b: &History) -> bool {
    let writes_since = a
        .previous_until_offset
        .is_some_and(|until| a.offset >= until);
    writes_since
        && a.replid2
            .as_deref()
            .is_some_and(|previous| previous == b.replid || previous == wrote_under(b))
}

/// `a` is strictly newer than `b`:
/// - `a` holds all of `b` and `b` not all of `a`; or
/// - they diverged (each holds writes the other lacks) and `a` was promoted out of `b`'s
///   stream: the later promotion wins, so the writes a demoted primary took after it was
///   replaced are the ones dropped (that is what fencing prevents, rule 7); or
/// - unrelated streams: the longer one, then the one with more keys.
pub fn newer(a: Held<'_>, b: Held<'_>) -> bool {
    match (contains(a, b), contains(b, a)) {
        (true, false) => true,
        (false, true) | (true, true) => false,
        (false, false) => {
            let (ab, ba) = (
                forked_from(a.history, b.history),
                forked_from(b.history, a.history),
            );
            if ab != ba {
                return ab;
            }
            (a.history.offset, a.keys) > (b.history.offset, b.keys)
        }
    }
}

/// Promoting `c` loses at most `max_lag` bytes of what `m` holds: `c` holds all of `m`, or
/// `c` is behind on `m`'s stream by at most `max_lag`, or `c` was promoted out of `m`'s
/// stream and `m` wrote at most `max_lag` past that point. Replicas lag a little behind
/// their primary; that is the loss `rollout.maxLagBytes` accepts, never more.
pub fn covers(c: Held<'_>, m: Held<'_>, max_lag: u64) -> bool {
    if contains(c, m) {
        return true;
    }
    let within = |behind: u64| m.history.offset <= behind.saturating_add(max_lag);
    // `c` is an earlier point of `m`'s stream (an empty member is on no stream).
    let (c_id, c_offset) = (&c.history.replid, c.history.offset);
    if !blank(c)
        && (on_line(m.history, c_id, c_offset)
            || on_line(m.history, wrote_under(c.history), c_offset))
    {
        return within(c_offset);
    }
    forked_from(c.history, m.history)
        && c.history
            .previous_until_offset
            .is_some_and(|until| within(until.saturating_sub(1)))
}

#[cfg(test)]
mod tests {
    use super::*;

    const R1: &str = "1111111111111111111111111111111111111111";
    const R2: &str = "2222222222222222222222222222222222222222";
    const R3: &str = "3333333333333333333333333333333333333333";
    const FRESH: &str = "ffffffffffffffffffffffffffffffffffffffff";
    const OTHER_FRESH: &str = "eeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee";

    fn on(id: &str, offset: u64) -> History {
        History {
            replid: id.into(),
            replid2: None,
            previous_until_offset: None,
            offset,
        }
    }

    /// Promoted out of `previous` at `at` (its last offset there), now at `offset`.
    fn promoted(id: &str, previous: &str, at: u64, offset: u64) -> History {
        History {
            replid: id.into(),
            replid2: Some(previous.into()),
            previous_until_offset: Some(at + 1),
            offset,
        }
    }

    fn held(h: &History, keys: u64) -> Held<'_> {
        Held { history: h, keys }
    }

    #[test]
    fn a_stream_holds_every_earlier_point_of_itself() {
        let (a, b) = (on(R1, 1000), on(R1, 400));
        assert!(contains(held(&a, 10), held(&b, 7)));
        assert!(!contains(held(&b, 7), held(&a, 10)));
        assert!(newer(held(&a, 10), held(&b, 7)));
        assert!(!newer(held(&b, 7), held(&a, 10)));
        // The same point both ways: neither is newer.
        let c = on(R1, 1000);
        assert!(contains(held(&a, 10), held(&c, 10)) && contains(held(&c, 10), held(&a, 10)));
        assert!(!newer(held(&a, 10), held(&c, 10)) && !newer(held(&c, 10), held(&a, 10)));
    }

    #[test]
    fn a_flushed_primary_is_newer_than_a_replica_restarted_from_an_old_dump() {
        // FLUSHALL is replicated: the primary moved on in the same stream with no keys left.
        let primary = on(R1, 5000);
        let old_dump = on(R1, 1200);
        assert!(newer(held(&primary, 0), held(&old_dump, 800)));
        assert!(!newer(held(&old_dump, 800), held(&primary, 0)));
        assert!(!blank(held(&primary, 0)), "no keys, but a history");
    }

    #[test]
    fn an_empty_member_holds_nothing_and_is_held_by_everyone() {
        let fresh = on(FRESH, 0);
        let data = on(R1, 300);
        assert!(blank(held(&fresh, 0)));
        assert!(contains(held(&data, 5), held(&fresh, 0)));
        assert!(!contains(held(&fresh, 0), held(&data, 5)));
        assert!(newer(held(&data, 5), held(&fresh, 0)));
        // Keys without any history (an engine that reports no offsets, a snapshot without
        // replication info) are not nothing. (Every server starts with an ID of its own.)
        let keys_only = on(OTHER_FRESH, 0);
        assert!(!blank(held(&keys_only, 3)));
        assert!(!contains(held(&data, 5), held(&keys_only, 3)));
        assert!(newer(held(&keys_only, 3), held(&fresh, 0)));
    }

    #[test]
    fn a_promoted_member_holds_its_old_stream_up_to_the_promotion() {
        let new_primary = promoted(R2, R1, 1000, 1500);
        assert!(contains(held(&new_primary, 9), held(&on(R1, 1000), 9)));
        assert!(contains(held(&new_primary, 9), held(&on(R1, 10), 1)));
        // The old primary went on past the promotion point (writes it took while it was
        // hung and resumed): they diverged, and the later promotion wins.
        let resumed = on(R1, 1040);
        assert!(!contains(held(&new_primary, 9), held(&resumed, 9)));
        assert!(!contains(held(&resumed, 9), held(&new_primary, 9)));
        assert!(newer(held(&new_primary, 9), held(&resumed, 9)));
        assert!(!newer(held(&resumed, 9), held(&new_primary, 9)));
        // Even when the old primary's offset is larger than the new one's.
        let busy = on(R1, 90_000);
        let quiet = promoted(R2, R1, 1000, 1001);
        assert!(newer(held(&quiet, 9), held(&busy, 9)));
    }

    #[test]
    fn a_promotion_without_writes_since_is_only_its_old_stream() {
        // A replica promoted (or a primary restarted from a snapshot) that took no write
        // since holds exactly its old stream up to its offset: a member further along that
        // stream is newer, whatever the new ID says.
        let idle = promoted(R2, R1, 500, 500);
        let further = on(R1, 1000);
        assert!(contains(held(&further, 9), held(&idle, 5)));
        assert!(newer(held(&further, 9), held(&idle, 5)));
        assert!(!newer(held(&idle, 5), held(&further, 9)));
        // ...and one behind it is older.
        assert!(newer(held(&idle, 5), held(&on(R1, 100), 2)));
    }

    #[test]
    fn a_chain_of_promotions_is_followed_one_step_back() {
        // R1 → R2 (promoted at 1000) → R3 (promoted at 2000): R3 knows R2, not R1.
        let latest = promoted(R3, R2, 2000, 2500);
        let middle = promoted(R2, R1, 1000, 1800);
        assert!(contains(held(&latest, 1), held(&middle, 1)));
        assert!(newer(held(&latest, 1), held(&middle, 1)));
        // R1 alone is an unrelated stream to R3: the longer one.
        let oldest = on(R1, 900);
        assert!(newer(held(&latest, 1), held(&oldest, 1)));
    }

    #[test]
    fn unrelated_streams_are_ordered_by_length_then_keys() {
        let (a, b) = (on(R1, 700), on(R2, 300));
        assert!(newer(held(&a, 1), held(&b, 99)));
        assert!(!newer(held(&b, 99), held(&a, 1)));
        let (c, d) = (on(R1, 300), on(R2, 300));
        assert!(newer(held(&c, 5), held(&d, 4)));
        assert!(!newer(held(&c, 4), held(&d, 4)) && !newer(held(&d, 4), held(&c, 4)));
    }

    #[test]
    fn covering_allows_the_lag_the_spec_accepts_and_no_more() {
        let primary = on(R1, 10_000);
        let close = on(R1, 9_500);
        let far = on(R1, 2_000);
        assert!(covers(held(&close, 5), held(&primary, 5), 1024));
        assert!(!covers(held(&far, 5), held(&primary, 5), 1024));
        assert!(covers(held(&far, 5), held(&primary, 5), 8_000));
        // Ahead is always fine.
        assert!(covers(held(&primary, 5), held(&far, 5), 0));
        // An empty member covers nothing that holds data, whatever the lag.
        let fresh = on(FRESH, 0);
        assert!(!covers(held(&fresh, 0), held(&primary, 5), u64::MAX));
        assert!(covers(held(&primary, 5), held(&fresh, 0), 0));
        // Behind the other's promotion point on its old stream.
        let new_primary = promoted(R2, R1, 9_800, 10_100);
        assert!(covers(held(&close, 5), held(&new_primary, 5), 1024));
        assert!(!covers(held(&close, 5), held(&new_primary, 5), 100));
        // Promoted out of the other's stream, which went on a little past that point.
        let old = on(R1, 9_900);
        assert!(covers(held(&new_primary, 5), held(&old, 5), 1024));
        assert!(!covers(held(&new_primary, 5), held(&old, 5), 50));
        // Unrelated streams never cover each other.
        assert!(!covers(
            held(&on(R3, 50), 5),
            held(&on(R2, 40), 5),
            u64::MAX
        ));
    }
}
