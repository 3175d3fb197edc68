//! `kvpilot policy replay`: "what would my plugin have decided". The recorded decisions of a
//! status (a local group's `status.json`, `kvpilot local status --json`, or a KvCluster's
//! status as `kubectl get -o json` prints it) each keep the request the plugin answered and
//! its answer, as JSON values; a candidate plugin is asked the same requests, and each answer
//! is compared with the recorded one.

use super::{Hook, Plugin, PolicyError, text};
use kvpilot_sdk::{RolloutRequest, ScheduleRequest, SelectionRequest};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

/// What is wrong with a status file.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ReplayError {
    #[error("no `lastDecisions` list (at the top, or under `status`)")]
    NoDecisions,
    #[error("lastDecisions[{index}].{field}: {message}")]
    Field {
        index: usize,
        field: &'static str,
        message: String,
    },
}

/// One recorded decision, as read back.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Recorded {
    pub hook: Hook,
    pub plugin: String,
    pub sha256: String,
    /// When it was taken, RFC 3339 (a local status's Unix milliseconds are converted).
    pub time: String,
    pub answer: Value,
    /// Absent when the request was too large to keep.
    pub request: Option<Value>,
}

/// How the candidate answered a recorded request.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "kebab-case", tag = "outcome")]
pub enum Outcome {
    Same,
    Differs { candidate: Value },
    Failed { error: String },
    NotReplayable { why: String },
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Replayed {
    pub recorded: Recorded,
    #[serde(flatten)]
    pub outcome: Outcome,
}

/// A JSON value held as text by an older record: the value it holds, else the text.
fn json_value(value: &Value) -> Value {
    match value {
        Value::String(s) => serde_json::from_str(s).unwrap_or_else(|_| value.clone()),
        other => other.clone(),
    }
}

/// The recorded decisions of a status document, oldest first.
pub fn recorded(status: &Value) -> Result<Vec<Recorded>, ReplayError> {
    let list = status
        .get("lastDecisions")
        .or_else(|| status.get("status").and_then(|s| s.get("lastDecisions")))
        .and_then(Value::as_array)
        .ok_or(ReplayError::NoDecisions)?;
    list.iter()
        .enumerate()
        .map(|(index, d)| {
            let field = |field: &'static str, message: &str| ReplayError::Field {
                index,
                field,
                message: message.to_string(),
            };
            let hook = d
                .get("hook")
                .and_then(Value::as_str)
                .ok_or_else(|| field("hook", "missing"))?;
            let hook = Hook::parse(hook).ok_or_else(|| {
                field(
                    "hook",
                    &format!("unknown hook `{}`", text::one_line(hook, text::NAME_BYTES)),
                )
            })?;
            let string = |name: &str| {
                d.get(name)
                    .and_then(Value::as_str)
                    .map(|s| text::one_line(s, text::NAME_BYTES))
                    .unwrap_or_default()
            };
            let time = match (d.get("time"), d.get("timeMs")) {
                (Some(Value::String(t)), _) => text::one_line(t, text::NAME_BYTES),
                (_, Some(ms)) => ms
                    .as_i64()
                    .and_then(|ms| k8s_openapi::jiff::Timestamp::from_millisecond(ms).ok())
                    .map_or_else(|| ms.to_string(), |t| t.to_string()),
                _ => String::new(),
            };
            Ok(Recorded {
                hook,
                plugin: string("plugin"),
                sha256: string("sha256"),
                time,
                answer: json_value(d.get("answer").ok_or_else(|| field("answer", "missing"))?),
                request: d.get("request").filter(|r| !r.is_null()).map(json_value),
            })
        })
        .collect()
}

/// Asks `plugin` each recorded request (with `config` instead of the recorded one, when
/// given) and compares its answer with the recorded answer.
pub async fn replay(
    plugin: &Plugin,
    decisions: Vec<Recorded>,
    config: Option<&str>,
) -> Vec<Replayed> {
    let mut out = Vec::with_capacity(decisions.len());
    for recorded in decisions {
        let outcome = outcome(plugin, &recorded, config).await;
        out.push(Replayed { recorded, outcome });
    }
    out
}

async fn outcome(plugin: &Plugin, recorded: &Recorded, config: Option<&str>) -> Outcome {
    let not = |why: String| Outcome::NotReplayable { why };
    let Some(request) = &recorded.request else {
        return not(
            "its request was not kept (larger than 8 KiB, or recorded by an older kvpilot)".into(),
        );
    };
    if !plugin.exports(recorded.hook) {
        return not(format!("the candidate has no {} hook", recorded.hook));
    }
    let answer = match recorded.hook {
        Hook::ReplicaSelection => {
            ask(request, config, |r: SelectionRequest| async move {
                plugin.select(&r).await
            })
            .await
        }
        Hook::SnapshotSchedule => {
            ask(request, config, |r: ScheduleRequest| async move {
                plugin.schedule(&r).await
            })
            .await
        }
        Hook::RolloutOrder => {
            ask(request, config, |r: RolloutRequest| async move {
                plugin.next(&r).await
            })
            .await
        }
    };
    match answer {
        Ok(candidate) if candidate == recorded.answer => Outcome::Same,
        Ok(candidate) => Outcome::Differs { candidate },
        Err(error) => Outcome::Failed { error },
    }
}

/// A request type with a `config` field to replace.
trait Configured {
    fn set_config(&mut self, config: &str);
}

macro_rules! configured {
    ($($t:ty),*) => {$(
        impl Configured for $t {
            fn set_config(&mut self, config: &str) {
                self.config = config.to_string();
            }
        }
    )*};
}
configured!(SelectionRequest, ScheduleRequest, RolloutRequest);

async fn ask<R, A, F, Fut>(request: &Value, config: Option<&str>, call: F) -> Result<Value, String>
where
    R: DeserializeOwned + Configured,
    A: Serialize,
    F: FnOnce(R) -> Fut,
    Fut: Future<Output = Result<A, PolicyError>>,
{
    let mut request: R = serde_json::from_value(request.clone())
        .map_err(|e| format!("the recorded request does not read as this hook's request: {e}"))?;
    if let Some(config) = config {
        request.set_config(config);
    }
    let answer = call(request).await.map_err(|e| e.to_string())?;
    serde_json::to_value(&answer).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn decisions_are_read_from_local_and_kubernetes_statuses() {
        let local = json!({"lastDecisions": [{
            "hook": "replica-selection", "plugin": "builtin:most-caught-up", "sha256": "ab",
            "answer": {"promote": "kv-1"}, "request": {"reason": "primary-lost"},
            "latency": 10, "timeMs": 1700000000000u64
        }]});
        let d = recorded(&local).expect("read");
        assert_eq!(d[0].hook, Hook::ReplicaSelection);
        assert_eq!(d[0].answer, json!({"promote": "kv-1"}));
        assert_eq!(d[0].time, "2023-11-14T22:13:20Z");
        // A KvCluster, and an older record whose answer is JSON in a string, without request.
        let kube = json!({"status": {"lastDecisions": [{
            "hook": "rollout-order", "plugin": "p", "sha256": "cd",
            "answer": "{\"restart\":\"kv-2\"}", "time": "2026-12-04T12:00:00Z"
        }]}});
        let d = recorded(&kube).expect("read");
        assert_eq!(d[0].answer, json!({"restart": "kv-2"}));
        assert_eq!(
            (d[0].request.clone(), d[0].time.as_str()),
            (None, "2026-12-04T12:00:00Z")
        );
        assert_eq!(
            recorded(&json!({"members": []})),
            Err(ReplayError::NoDecisions)
        );
        let bad = json!({"lastDecisions": [{"hook": "pick", "answer": 1}]});
        assert_eq!(
            recorded(&bad).expect_err("bad hook").to_string(),
            "lastDecisions[0].hook: unknown hook `pick`"
        );
    }
}
