//! The one error type of the engine boundary: every message names the member and the command.

use std::time::Duration;

use super::info::ParseError;

/// A failure talking to one member (kept at most 96 bytes so callers can wrap it). Every variant carries the member address (`addr`) and the
/// command (`command`, with secrets redacted) so a status line or log says exactly what failed.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// TCP connect, AUTH or the connection handshake failed.
    #[error("{addr}: `{command}` failed while connecting: {source}")]
    Connect {
        /// Member address (`host:port`).
        addr: String,
        /// What was being done (`connect`, `AUTH`).
        command: String,
        /// The client library's error.
        #[source]
        source: redis::RedisError,
    },
    /// The TLS session could not be established: the member's certificate is not from the
    /// trusted CA or not valid for `server_name`, or the member refused this client (it
    /// requires a client certificate, or does not accept the one presented).
    #[error(
        "{addr}: TLS with the member failed (its certificate must chain to the trusted CA and name `{server_name}`): {source}"
    )]
    Tls {
        /// Member address.
        addr: String,
        /// The name the member's certificate had to be valid for.
        server_name: String,
        /// The TLS library's error.
        #[source]
        source: std::io::Error,
    },
    /// The member refused `AUTH` (wrong password, unknown or disabled user, or no password
    /// set on the member).
    #[error("{addr}: the member refused `AUTH` as user `{user}`: {source}")]
    AuthRefused {
        /// Member address.
        addr: String,
        /// The user that was tried (`default` without a user name).
        user: String,
        /// The server's answer (never contains the password).
        #[source]
        source: redis::RedisError,
    },
    /// The server answered with an error, or the connection broke during the command.
    #[error("{addr}: `{command}` failed: {source}")]
    Command {
        /// Member address.
        addr: String,
        /// The command, secrets redacted.
        command: String,
        /// The client library's error (server error code and text, or I/O).
        #[source]
        source: redis::RedisError,
    },
    /// No answer within the client-side limit (the member may be dead, paused or partitioned).
    #[error("{addr}: `{command}` got no answer within {after:?}")]
    Timeout {
        /// Member address.
        addr: String,
        /// The command, secrets redacted.
        command: String,
        /// The client-side limit that expired.
        after: Duration,
    },
    /// The server answered, but not in the shape this dialect expects.
    #[error("{addr}: `{command}` answered something unexpected: {source}")]
    Reply {
        /// Member address.
        addr: String,
        /// The command, secrets redacted.
        command: String,
        /// Which field did not parse (boxed to keep the error small).
        #[source]
        source: Box<ParseError>,
    },
    /// A graceful handover was sent but did not complete; it was aborted where the dialect
    /// allows, and the old primary is still primary (or in an unknown state if `detail` says so).
    #[error("{addr}: `{command}` did not hand over to {target}: {detail}")]
    HandoverFailed {
        /// Member the handover was sent to.
        addr: String,
        /// The handover command, e.g. `FAILOVER TO 127.0.0.2 6379 TIMEOUT 2000`.
        command: String,
        /// Intended new primary.
        target: String,
        /// What was observed, and whether `FAILOVER ABORT` was sent (boxed to keep the
        /// error small).
        detail: Box<str>,
    },
    /// The dialect has no such command (e.g. `FAILOVER` on Dragonfly).
    #[error("{addr}: `{command}` is not supported by the {dialect} dialect")]
    Unsupported {
        /// Member address.
        addr: String,
        /// The command that was asked for.
        command: String,
        /// Dialect name.
        dialect: &'static str,
    },
}

impl EngineError {
    /// The member this error is about.
    pub fn addr(&self) -> &str {
        match self {
            Self::Connect { addr, .. }
            | Self::Tls { addr, .. }
            | Self::AuthRefused { addr, .. }
            | Self::Command { addr, .. }
            | Self::Timeout { addr, .. }
            | Self::Reply { addr, .. }
            | Self::HandoverFailed { addr, .. }
            | Self::Unsupported { addr, .. } => addr,
        }
    }

    /// The member did not answer at all (connect failure, broken connection or timeout):
    /// the signal a liveness probe counts, as opposed to an answer the member gave.
    pub fn is_unreachable(&self) -> bool {
        match self {
            Self::Connect { source, .. } => !is_server_answer(source),
            Self::Command { source, .. } => !is_server_answer(source),
            Self::Timeout { .. } => true,
            // rustls reports what it refused as `InvalidData`; anything else (a reset, an EOF
            // mid-handshake) means the member went away.
            Self::Tls { source, .. } => {
                source.kind() != std::io::ErrorKind::InvalidData
                    && source.kind() != std::io::ErrorKind::InvalidInput
                    && source.kind() != std::io::ErrorKind::Other
            }
            _ => false,
        }
    }

    /// The member refused the credentials, or wants some: `AUTH` was refused, or a command
    /// was answered `-NOAUTH` (the connection did not authenticate) or `-WRONGPASS`.
    pub fn is_auth_refused(&self) -> bool {
        match self {
            Self::AuthRefused { .. } => true,
            Self::Command { source, .. } => {
                matches!(source.code(), Some("NOAUTH") | Some("WRONGPASS"))
            }
            _ => false,
        }
    }

    /// The server said `-LOADING` (it is loading a dataset and refuses data commands).
    pub fn is_loading(&self) -> bool {
        match self {
            Self::Connect { source, .. } | Self::Command { source, .. } => {
                source.code() == Some("LOADING")
            }
            _ => false,
        }
    }
}

fn is_server_answer(e: &redis::RedisError) -> bool {
    e.code().is_some()
}

#[cfg(test)]
mod tests {
    #[test]
    fn stays_small_enough_to_wrap() {
        // Callers embed it in their own error enums; clippy's large-error limit is 128 bytes.
        assert!(size_of::<super::EngineError>() <= 96);
    }
}
