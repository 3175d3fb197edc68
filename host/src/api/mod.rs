//! The user-facing API: the `KvCluster` spec (also the local platform's spec file) and its
//! validation.

mod spec;
mod validate;

pub use spec::*;
pub use validate::{SpecError, validate_spec};
