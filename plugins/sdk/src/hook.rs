//! The hooks a plugin can answer, by their WIT interface names.

use core::fmt;
use serde::{Deserialize, Serialize};

/// A decision the operator delegates to a plugin (a hook interface of the contract).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Hook {
    /// `replica-selection`: which replica becomes the primary.
    ReplicaSelection,
    /// `snapshot-schedule`: when each member takes a snapshot.
    SnapshotSchedule,
    /// `rollout-order`: in which order members move to a new revision.
    RolloutOrder,
}

impl Hook {
    /// Every hook, in the contract's order.
    pub const ALL: [Hook; 3] = [
        Hook::ReplicaSelection,
        Hook::SnapshotSchedule,
        Hook::RolloutOrder,
    ];

    /// The WIT interface name, e.g. `replica-selection`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Hook::ReplicaSelection => "replica-selection",
            Hook::SnapshotSchedule => "snapshot-schedule",
            Hook::RolloutOrder => "rollout-order",
        }
    }

    /// The hook named `name` (its WIT interface name).
    pub fn parse(name: &str) -> Option<Hook> {
        Hook::ALL.into_iter().find(|h| h.as_str() == name)
    }

    /// `a` and `b` hold the same hooks (in any order); usable in a `const` assertion.
    pub const fn same_set(a: &[Hook], b: &[Hook]) -> bool {
        let mut i = 0;
        while i < Hook::ALL.len() {
            let hook = Hook::ALL[i] as u8;
            if Self::holds(a, hook) != Self::holds(b, hook) {
                return false;
            }
            i += 1;
        }
        true
    }

    const fn holds(set: &[Hook], hook: u8) -> bool {
        let mut i = 0;
        while i < set.len() {
            if set[i] as u8 == hook {
                return true;
            }
            i += 1;
        }
        false
    }
}

impl fmt::Display for Hook {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::Hook;

    #[test]
    fn names_round_trip() {
        for hook in Hook::ALL {
            assert_eq!(Hook::parse(hook.as_str()), Some(hook));
        }
        assert_eq!(Hook::parse("replica_selection"), None);
    }

    #[test]
    fn same_set_ignores_order_only() {
        use Hook::*;
        assert!(Hook::same_set(
            &[ReplicaSelection, RolloutOrder],
            &[RolloutOrder, ReplicaSelection]
        ));
        assert!(!Hook::same_set(&[ReplicaSelection], &[RolloutOrder]));
        assert!(!Hook::same_set(&[ReplicaSelection], &[]));
    }
}
