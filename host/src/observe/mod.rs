//! observe: read the platform and each member; never change anything.

mod clients;
mod collect;
mod model;

pub use clients::{Access, Clients, MAX_PREVIOUS, ServerNames};
pub use collect::{Tracker, collect};
pub use model::{
    ClusterView, History, KnownRole, LastKnown, Observed, ObservedMember, Replication,
};
