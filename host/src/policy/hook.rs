//! Hook names, failure policies and the record every decision leaves behind.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::time::Duration;

/// A decision the reconciler delegates to a plugin.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Hook {
    ReplicaSelection,
    SnapshotSchedule,
    RolloutOrder,
}

impl Hook {
    pub const ALL: [Hook; 3] = [
        Hook::ReplicaSelection,
        Hook::SnapshotSchedule,
        Hook::RolloutOrder,
    ];

    /// The WIT interface name without package, e.g. `replica-selection`.
    pub fn as_str(self) -> &'static str {
        match self {
            Hook::ReplicaSelection => "replica-selection",
            Hook::SnapshotSchedule => "snapshot-schedule",
            Hook::RolloutOrder => "rollout-order",
        }
    }

    /// The builtin plugin that answers this hook by default.
    pub fn default_builtin(self) -> &'static str {
        match self {
            Hook::ReplicaSelection => "most-caught-up",
            Hook::SnapshotSchedule => "stagger",
            Hook::RolloutOrder => "replicas-first",
        }
    }

    pub fn parse(s: &str) -> Option<Hook> {
        Hook::ALL.into_iter().find(|h| h.as_str() == s)
    }
}

impl fmt::Display for Hook {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What happens when a hook's plugin fails (trap, timeout, invalid answer, error).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum FailurePolicy {
    /// Take no action: `PolicyFailed` condition and requeue with backoff.
    #[default]
    Fail,
    /// Use the builtin default for the hook, and say so in an event.
    Fallback,
}

/// A hook whose plugin could not be bound: it did not load, lacks the hook, or refused its
/// config. Under `Fail` every call of the hook fails until it is bound again (the other hooks
/// are not affected); under `Fallback` the builtin answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HookProblem {
    pub hook: Hook,
    /// The plugin the settings name for the hook (`builtin:NAME`, a path, a PolicyPlugin).
    pub plugin: String,
    pub failure: FailurePolicy,
    /// Why it could not be bound.
    pub message: String,
}

impl HookProblem {
    /// The event both platforms publish once per new problem: its reason and message. `retry`
    /// is when a failing hook is bound again.
    pub fn event(&self, retry: std::time::Duration) -> (&'static str, String) {
        match self.failure {
            FailurePolicy::Fail => (
                "PolicyFailed",
                format!(
                    "{self}; bound again in {} s, the other hooks keep working",
                    retry.as_secs()
                ),
            ),
            FailurePolicy::Fallback => (
                "PolicyFallback",
                format!(
                    "{self}; builtin:{} answers instead (failurePolicy Fallback)",
                    self.hook.default_builtin()
                ),
            ),
        }
    }
}

impl fmt::Display for HookProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.hook, self.message)
    }
}

/// The longest answer text a decision record keeps; longer answers are cut with a marker
/// (the decision itself used the whole answer). Twenty of these fit in a status with room.
pub const DECISION_ANSWER_BYTES: usize = 2 * 1024;

/// The longest request a decision record keeps a copy of, as compact JSON (a request of 20
/// members is ~7 KiB): what `kvpilot policy replay` re-runs. A longer request is not kept
/// (a part of it would not be the same question).
pub const DECISION_REQUEST_BYTES: usize = 8 * 1024;

/// Who decided what, on which request, how fast: goes to events, `status.lastDecisions` and
/// metrics. Every text in it is cleaned and bounded ([`DecisionRecord::new`]). The answer and
/// the request are held as compact JSON text and written as JSON values (see [`json_text`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DecisionRecord {
    pub hook: Hook,
    /// `builtin:NAME`, a PolicyPlugin name, or a file path.
    pub plugin: String,
    pub sha256: String,
    /// The answer as compact JSON (written as a JSON value).
    #[serde(with = "json_text")]
    pub answer: String,
    /// The request the plugin answered (config included), as compact JSON (written as a JSON
    /// value); absent when it was longer than [`DECISION_REQUEST_BYTES`].
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "json_text::option"
    )]
    pub request: Option<String>,
    #[serde(with = "micros")]
    pub latency: Duration,
    /// Set when the configured plugin failed and the builtin answered (`FailurePolicy::Fallback`):
    /// the failure message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fallback_from: Option<String>,
}

impl DecisionRecord {
    /// The record of `answer`, its texts cleaned and cut (docs/architecture.md, rule 10).
    pub fn new<T: Serialize, R: Serialize>(
        hook: Hook,
        plugin: &str,
        sha256: String,
        answer: &T,
        request: Option<&R>,
        latency: Duration,
        fallback_from: Option<&str>,
    ) -> DecisionRecord {
        use super::text;
        DecisionRecord {
            hook,
            plugin: text::one_line(plugin, text::NAME_BYTES),
            sha256,
            answer: text::clean(
                &serde_json::to_string(answer).unwrap_or_default(),
                DECISION_ANSWER_BYTES,
            ),
            request: request.and_then(|r| kept_request(json_within(r, DECISION_REQUEST_BYTES))),
            latency,
            fallback_from: fallback_from.map(|f| text::clean(f, text::MESSAGE_BYTES)),
        }
    }

    /// The same record with every text cleaned and cut again: for records that were not made
    /// by [`DecisionRecord::new`] (read back from a status file, built by a test).
    pub fn bounded(&self) -> DecisionRecord {
        use super::text;
        DecisionRecord {
            hook: self.hook,
            plugin: text::one_line(&self.plugin, text::NAME_BYTES),
            sha256: text::one_line(&self.sha256, 64),
            answer: text::clean(&self.answer, DECISION_ANSWER_BYTES),
            request: kept_request(self.request.clone()),
            latency: self.latency,
            fallback_from: self
                .fallback_from
                .as_deref()
                .map(|f| text::clean(f, text::MESSAGE_BYTES)),
        }
    }
}

/// `value` as compact JSON if that is at most `max` bytes. The writing stops past `max`, so a
/// large request costs no more than a small one.
fn json_within<T: Serialize + ?Sized>(value: &T, max: usize) -> Option<String> {
    struct Bounded {
        bytes: Vec<u8>,
        max: usize,
    }
    impl std::io::Write for Bounded {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            if self.bytes.len() + buf.len() > self.max {
                return Err(std::io::Error::other("too long"));
            }
            self.bytes.extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut out = Bounded {
        bytes: Vec::new(),
        max,
    };
    serde_json::to_writer(&mut out, value).ok()?;
    String::from_utf8(out.bytes).ok()
}

/// A request's JSON text if it is short enough to keep, cleaned (serde has escaped every
/// C0 control already; the others are replaced).
fn kept_request(json: Option<String>) -> Option<String> {
    json.filter(|j| j.len() <= DECISION_REQUEST_BYTES)
        .map(|j| super::text::clean(&j, DECISION_REQUEST_BYTES))
}

/// JSON text held in a `String`, written as the JSON value it is (not as a string holding
/// JSON); text that does not parse (an answer cut with a marker) is written as a string.
/// Read back, a JSON string is taken as the text itself (what older records wrote) and any
/// other value as its compact JSON.
pub mod json_text {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};
    use serde_json::Value;

    pub fn serialize<S: Serializer>(text: &str, s: S) -> Result<S::Ok, S::Error> {
        match serde_json::from_str::<Value>(text) {
            Ok(value) => value.serialize(s),
            Err(_) => s.serialize_str(text),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
        Ok(match Value::deserialize(d)? {
            Value::String(text) => text,
            other => other.to_string(),
        })
    }

    pub mod option {
        use serde::{Deserialize, Deserializer, Serializer};
        use serde_json::Value;

        pub fn serialize<S: Serializer>(text: &Option<String>, s: S) -> Result<S::Ok, S::Error> {
            match text {
                Some(text) => super::serialize(text, s),
                None => s.serialize_none(),
            }
        }

        pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
            Ok(match Option::<Value>::deserialize(d)? {
                None | Some(Value::Null) => None,
                Some(Value::String(text)) => Some(text),
                Some(other) => Some(other.to_string()),
            })
        }
    }
}

/// A validated answer and its record.
#[derive(Debug, Clone, PartialEq)]
pub struct Decided<T> {
    pub answer: T,
    pub record: DecisionRecord,
}

mod micros {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        Ok(Duration::from_micros(u64::deserialize(d)?))
    }
}
