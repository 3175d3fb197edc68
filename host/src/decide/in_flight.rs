//! Cluster mode, rules 4 and 8: how many shards a planned rollout may have in flight at once,
//! and which shard takes the next step. A shard is in flight while it is not settled (a
//! member restarting, resyncing or not yet released); only one member of a shard is ever in
//! flight, and no more shards than the setting, nor than a minority of the primaries: a
//! handover needs the votes of a majority of primaries, and a primary in flight may not
//! vote in time.

/// Shards that may be in flight at once: `setting`, capped at a minority of `primaries`
/// (fewer than half), but never below 1, without which no rollout could move (with two
/// primaries, one in flight is half: one shard at a time is then the least there is).
pub(super) fn shard_limit(setting: u32, primaries: usize) -> usize {
    let minority = primaries.saturating_sub(1) / 2;
    usize::try_from(setting)
        .unwrap_or(usize::MAX)
        .min(minority)
        .max(1)
}

/// The rollout's next move.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Next {
    /// Take a step in this shard.
    Step(usize),
    /// Wait: `in_flight` shards are in flight and no other may start (the limit is reached,
    /// or every stale shard is in flight).
    Wait { in_flight: usize },
    /// No shard is stale.
    Done,
}

/// Picks the shard for the next rollout step: the first stale shard that is not in flight,
/// while fewer than `limit` shards are in flight. `stale[i]`: shard `i` has a member off the
/// desired revision; `in_flight[i]`: shard `i` is not settled.
pub(super) fn next(stale: &[bool], in_flight: &[bool], limit: usize) -> Next {
    let busy = in_flight.iter().filter(|b| **b).count();
    if !stale.iter().any(|s| *s) {
        return if busy > 0 {
            Next::Wait { in_flight: busy }
        } else {
            Next::Done
        };
    }
    if busy >= limit {
        return Next::Wait { in_flight: busy };
    }
    stale
        .iter()
        .zip(in_flight.iter().chain(std::iter::repeat(&false)))
        .position(|(s, b)| *s && !*b)
        .map_or(Next::Wait { in_flight: busy }, Next::Step)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_limit_is_the_setting_within_a_minority_of_primaries_and_at_least_one() {
        assert_eq!(shard_limit(1, 3), 1);
        assert_eq!(shard_limit(5, 3), 1);
        assert_eq!(shard_limit(2, 5), 2);
        assert_eq!(shard_limit(3, 5), 2);
        assert_eq!(shard_limit(3, 7), 3);
        assert_eq!(shard_limit(9, 10), 4);
        // Two primaries: one in flight is half, yet the least a rollout can do.
        assert_eq!(shard_limit(4, 2), 1);
        assert_eq!(shard_limit(0, 9), 1);
        for primaries in 3..40 {
            for setting in 0..40 {
                let limit = shard_limit(setting, primaries);
                assert!(limit * 2 < primaries, "{setting} of {primaries}: {limit}");
                assert!(limit >= 1 && limit <= setting.max(1) as usize);
            }
        }
    }

    #[test]
    fn one_shard_at_a_time_by_default() {
        let stale = [true, true, true];
        assert_eq!(next(&stale, &[false, false, false], 1), Next::Step(0));
        assert_eq!(
            next(&stale, &[true, false, false], 1),
            Next::Wait { in_flight: 1 }
        );
        // A shard unsettled for another reason counts too.
        assert_eq!(
            next(&[false, true, true], &[true, false, false], 1),
            Next::Wait { in_flight: 1 }
        );
    }

    #[test]
    fn up_to_the_limit_other_shards_step_while_one_is_in_flight() {
        let stale = [true, true, true, false, false];
        assert_eq!(
            next(&stale, &[true, false, false, false, false], 2),
            Next::Step(1)
        );
        assert_eq!(
            next(&stale, &[true, true, false, false, false], 2),
            Next::Wait { in_flight: 2 }
        );
        // Every stale shard in flight: wait for them.
        assert_eq!(
            next(&[true, true, false], &[true, true, false], 3),
            Next::Wait { in_flight: 2 }
        );
    }

    #[test]
    fn done_only_when_nothing_is_stale_and_nothing_in_flight() {
        assert_eq!(next(&[false, false], &[false, false], 1), Next::Done);
        assert_eq!(
            next(&[false, false], &[false, true], 1),
            Next::Wait { in_flight: 1 }
        );
    }
}
