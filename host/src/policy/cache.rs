//! Compiled components by sha256 digest: the same bytes compile once per process. Entries
//! are only ever produced by this host's own compilation (nothing is deserialized).

use super::plugin::Compiled;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

/// An in-memory, process-wide map from digest to compiled component.
#[derive(Default)]
pub(crate) struct Cache {
    entries: Mutex<HashMap<[u8; 32], Arc<Compiled>>>,
}

impl Cache {
    pub fn get(&self, digest: &[u8; 32]) -> Option<Arc<Compiled>> {
        self.entries
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(digest)
            .cloned()
    }

    /// Inserts `compiled` unless another task compiled the same bytes first; returns the
    /// entry that is kept, so every caller shares one artifact.
    pub fn insert(&self, compiled: Arc<Compiled>) -> Arc<Compiled> {
        self.entries
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(compiled.sha256)
            .or_insert(compiled)
            .clone()
    }

    pub fn len(&self) -> usize {
        self.entries
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }
}
