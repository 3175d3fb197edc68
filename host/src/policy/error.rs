//! The policy boundary's error type. Every variant names the plugin and, where there is one,
//! the hook, so a status message or CLI error is enough to act on.

use super::Hook;

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PolicyError {
    #[error("plugin {plugin}: cannot load: {message}")]
    Load { plugin: String, message: String },

    #[error("plugin {plugin}: imports `{import}`, which the host does not provide")]
    ForbiddenImport { plugin: String, import: String },

    #[error("plugin {plugin} does not export the {hook} hook")]
    MissingHook { plugin: String, hook: Hook },

    #[error("plugin {plugin}: config rejected: {message}")]
    InvalidConfig { plugin: String, message: String },

    #[error("plugin {plugin}: {hook}: trapped: {message}")]
    Trap {
        plugin: String,
        hook: Hook,
        message: String,
    },

    #[error("plugin {plugin}: {hook}: timed out after {after_ms} ms")]
    Timeout {
        plugin: String,
        hook: Hook,
        after_ms: u64,
    },

    #[error("plugin {plugin}: {hook}: exceeded its memory limit of {limit_mib} MiB")]
    Memory {
        plugin: String,
        hook: Hook,
        limit_mib: u64,
    },

    #[error("plugin {plugin}: {hook}: answer of {bytes} bytes exceeds the limit of {limit} bytes")]
    AnswerTooLarge {
        plugin: String,
        hook: Hook,
        bytes: usize,
        limit: usize,
    },

    #[error("plugin {plugin}: {hook}: invalid answer: {field}: {message}")]
    InvalidAnswer {
        plugin: String,
        hook: Hook,
        field: String,
        message: String,
    },

    #[error("plugin {plugin}: {hook}: returned an error: {message}")]
    Plugin {
        plugin: String,
        hook: Hook,
        message: String,
    },

    /// The hook's plugin could not be bound (it did not load, lacks the hook, or refused its
    /// config) and its failure policy is `Fail`: every call of the hook fails with this until
    /// it is bound again. `message` is the binding's own error.
    #[error("{hook}: {message}")]
    Unbound {
        plugin: String,
        hook: Hook,
        message: String,
    },
}

impl PolicyError {
    /// The plugin the error is about.
    pub fn plugin(&self) -> &str {
        match self {
            PolicyError::Load { plugin, .. }
            | PolicyError::ForbiddenImport { plugin, .. }
            | PolicyError::MissingHook { plugin, .. }
            | PolicyError::InvalidConfig { plugin, .. }
            | PolicyError::Trap { plugin, .. }
            | PolicyError::Timeout { plugin, .. }
            | PolicyError::Memory { plugin, .. }
            | PolicyError::AnswerTooLarge { plugin, .. }
            | PolicyError::InvalidAnswer { plugin, .. }
            | PolicyError::Plugin { plugin, .. }
            | PolicyError::Unbound { plugin, .. } => plugin,
        }
    }
}
