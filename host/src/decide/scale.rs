//! Scale-down: the members the spec no longer asks for (`retiring`) are removed once none of
//! them is the primary. A retiring primary is never on the desired revision, so the rollout
//! hands it over first (see `rollout::staying`): a scale-down never removes the member that
//! serves writes, and so never loses the writes only it acknowledged.

use super::Input;
use super::plan::Action;
use crate::observe::ObservedMember;

/// Removing the retiring members, when there are some and the primary stays.
pub(super) fn retire(input: &Input<'_>, primary: &ObservedMember) -> Option<Action> {
    let members: Vec<String> = input
        .observed
        .members
        .iter()
        .filter(|m| m.retiring)
        .map(|m| m.name.clone())
        .collect();
    (!members.is_empty() && !primary.retiring).then_some(Action::Retire { members })
}
