//! observe: read the platform and each member; never change anything.

mod model;

pub use model::{Observed, ObservedMember, Replication};
