//! Password rotation that completes whatever happens meanwhile.
//!
//! A member keeps the password it was started with until the operator moves it (`CONFIG SET`
//! over a session that still works, [`Clients::apply_credentials`]). A member that was
//! unreachable when the Secret changed (paused, partitioned) still accepts only the old
//! password when it answers again, and the operator must still know that password then, also
//! after a restart. So the operator keeps, in a Secret it owns (`<name>-kvpilot-auth`, owned
//! by the KvCluster and deleted with it), the credentials the members were given, newest
//! first:
//!
//! - when the user's Secret holds other credentials than the newest recorded ones, the new
//!   ones are recorded first, *before* any member is moved, so an operator that dies at any
//!   point after that finds the old password again;
//! - every reconcile, while earlier credentials are recorded, every running member that
//!   refuses the current ones is moved (derived from what each member accepts now, never
//!   from memory), and observation reaches it with the earlier ones meanwhile;
//! - once every member accepts the current credentials, the record shrinks to them alone.
//!
//! Why a Secret: a password cannot be recovered from a hash, and the status (readable by
//! whoever may read the KvCluster) must never hold one. The record needs `create` and
//! `patch` on Secrets; it is only ever written under the name above and never over a Secret
//! of that name that this KvCluster does not own.
//!
//! [`Clients::apply_credentials`]: crate::observe::Clients::apply_credentials

use super::access;
use super::apply::FIELD_MANAGER;
use super::platform::KubernetesPlatform;
use super::{BuildError, owned_meta};
use crate::api::KvCluster;
use crate::engine::Credentials;
use crate::observe::{Access, MAX_PREVIOUS};
use crate::platform::Platform;
use crate::reconcile::Reconciler;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, Patch, PatchParams};
use kube::{Client, ResourceExt};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The record's key in its Secret.
pub const RECORD_KEY: &str = "credentials.json";

/// The name of the Secret that records `kc`'s credentials.
pub fn record_name(kc: &KvCluster) -> String {
    format!("{}-kvpilot-auth", kc.name_any())
}

/// Why the record could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error(
        "Secret {namespace}/{name} exists but is not the credentials record of this KvCluster \
         (no owner reference to it): rename or delete it"
    )]
    NotOwned { namespace: String, name: String },
    #[error("Secret {namespace}/{name} key {RECORD_KEY}: {problem}")]
    Unreadable {
        namespace: String,
        name: String,
        problem: String,
    },
    #[error("cannot {verb} Secret {namespace}/{name}: {source}")]
    Api {
        verb: &'static str,
        namespace: String,
        name: String,
        #[source]
        source: Box<kube::Error>,
    },
    #[error(transparent)]
    Build(#[from] BuildError),
}

/// The recorded credentials, newest first; `None` is "no password".
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
struct Record {
    credentials: Vec<Option<Stored>>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Stored {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    username: Option<String>,
    password: String,
}

impl From<&Credentials> for Stored {
    fn from(c: &Credentials) -> Self {
        Stored {
            username: c.username.clone(),
            password: c.password.clone(),
        }
    }
}

impl From<&Stored> for Credentials {
    fn from(s: &Stored) -> Self {
        Credentials {
            username: s.username.clone(),
            password: s.password.clone(),
        }
    }
}

fn stored(c: &Option<Credentials>) -> Option<Stored> {
    c.as_ref().map(Stored::from)
}

impl Record {
    /// The record after the credentials became `current`: `current` first, then the earlier
    /// ones, bounded. `None` when nothing changes.
    fn after(&self, current: &Option<Credentials>) -> Option<Record> {
        let current = stored(current);
        if self.credentials.first() == Some(&current) {
            return None;
        }
        let mut credentials = vec![current.clone()];
        for c in &self.credentials {
            if *c != current && !credentials.contains(c) {
                credentials.push(c.clone());
            }
        }
        credentials.truncate(MAX_PREVIOUS + 1);
        Some(Record { credentials })
    }

    /// The earlier credentials (all but the newest).
    fn previous(&self) -> Vec<Option<Credentials>> {
        self.credentials
            .iter()
            .skip(1)
            .map(|c| c.as_ref().map(Credentials::from))
            .collect()
    }
}

/// The credentials step of a reconcile (apply: observe never changes a member): takes the
/// `access` just read from the Secrets, records a change before acting on it, moves every
/// running member that refuses the current credentials, and shrinks the record once all
/// accept them. Returns warnings for Events (the record could not be used; the rotation then
/// still proceeds from what this operator remembers, but would not survive its restart).
pub async fn sync(
    client: &Client,
    kc: &KvCluster,
    namespace: &str,
    reconciler: &Reconciler<KubernetesPlatform>,
    access: Access,
) -> Vec<String> {
    let mut warnings = Vec::new();
    let current = access.credentials.clone();
    let clients = &reconciler.clients;
    let changed = clients.configure(access::dialect(kc), access);
    // Rule 9: a follower reads the record (to observe with it) but writes nothing and moves
    // no member.
    let leader = reconciler.leadership.check().is_ok();
    let secrets: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let record = match read(&secrets, kc, namespace).await {
        Ok(record) => Some(record),
        Err(e) => {
            warnings.push(format!(
                "{e}; a password rotation cannot be resumed after an operator restart until \
                 this is fixed"
            ));
            None
        }
    };
    // Recorded before any member is moved.
    if let Some(record) = &record {
        // Nothing to keep for a cluster that never had auth.
        let untouched = record.credentials.is_empty() && current.is_none();
        match record.after(&current).filter(|_| !untouched) {
            Some(next) if leader => match write(&secrets, kc, namespace, &next).await {
                Ok(()) => clients.remember(next.previous()),
                Err(e) => warnings.push(format!(
                    "{e}; the rotation goes on but would not survive an operator restart"
                )),
            },
            _ => clients.remember(record.previous()),
        }
    }
    if !leader || (!changed && clients.previous().is_empty()) {
        return warnings;
    }
    let members = match reconciler.platform.members().await {
        Ok(members) => members,
        Err(e) => {
            tracing::warn!(cluster = %reconciler.name, error = %e, "cannot list members to move them to new credentials");
            return warnings;
        }
    };
    // All at once: a paused member holds its attempt up to the response timeout.
    let results = futures::future::join_all(members.iter().map(|m| async move {
        if !m.running {
            return Err(format!("{} is not running", m.name));
        }
        clients
            .apply_credentials(&m.name, m.addr)
            .await
            .map(drop)
            .map_err(|e| format!("{}: {e}", m.name))
    }))
    .await;
    let waiting: Vec<String> = results.into_iter().filter_map(Result::err).collect();
    if !waiting.is_empty() {
        tracing::info!(cluster = %reconciler.name, ?waiting, "members not yet on the current credentials; tried again next reconcile");
        return warnings;
    }
    // Every member accepts the current credentials: the earlier ones are not needed any more.
    let settled = Record {
        credentials: vec![stored(&current)],
    };
    let had_previous = record.as_ref().is_some_and(|r| {
        r.credentials.len() > 1 || r.credentials.first() != Some(&stored(&current))
    });
    if had_previous && let Err(e) = write(&secrets, kc, namespace, &settled).await {
        warnings.push(e.to_string());
        return warnings;
    }
    clients.forget_previous();
    warnings
}

/// The record of `kc` (empty when there is none yet).
async fn read(
    secrets: &Api<Secret>,
    kc: &KvCluster,
    namespace: &str,
) -> Result<Record, RecordError> {
    let name = record_name(kc);
    let secret = match secrets.get_opt(&name).await {
        Ok(Some(s)) => s,
        Ok(None) => return Ok(Record::default()),
        Err(e) => {
            return Err(RecordError::Api {
                verb: "read",
                namespace: namespace.to_string(),
                name,
                source: Box::new(e),
            });
        }
    };
    let owned = kc.uid().is_some_and(|uid| {
        secret
            .owner_references()
            .iter()
            .any(|o| o.uid == uid && o.controller == Some(true))
    });
    if !owned {
        return Err(RecordError::NotOwned {
            namespace: namespace.to_string(),
            name,
        });
    }
    let Some(bytes) = secret.data.as_ref().and_then(|d| d.get(RECORD_KEY)) else {
        return Ok(Record::default());
    };
    serde_json::from_slice(&bytes.0).map_err(|e| RecordError::Unreadable {
        namespace: namespace.to_string(),
        name,
        problem: e.to_string(),
    })
}

async fn write(
    secrets: &Api<Secret>,
    kc: &KvCluster,
    namespace: &str,
    record: &Record,
) -> Result<(), RecordError> {
    let name = record_name(kc);
    let json = serde_json::to_vec(record).map_err(|e| RecordError::Unreadable {
        namespace: namespace.to_string(),
        name: name.clone(),
        problem: e.to_string(),
    })?;
    let mut metadata = owned_meta(kc, name.clone(), BTreeMap::new())?;
    metadata.annotations = Some(BTreeMap::from([(
        "kvpilot.dev/purpose".to_string(),
        "the passwords members of this KvCluster may still have during a rotation; kvpilot \
         keeps it until every member has moved"
            .to_string(),
    )]));
    let secret = Secret {
        metadata,
        type_: Some("Opaque".into()),
        data: Some(BTreeMap::from([(RECORD_KEY.to_string(), ByteString(json))])),
        ..Default::default()
    };
    secrets
        .patch(
            &name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&secret),
        )
        .await
        .map(drop)
        .map_err(|e| RecordError::Api {
            verb: "write",
            namespace: namespace.to_string(),
            name,
            source: Box::new(e),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pw(p: &str) -> Option<Credentials> {
        Some(Credentials::password(p))
    }

    #[test]
    fn a_change_is_recorded_first_and_earlier_ones_are_kept_bounded() {
        let empty = Record::default();
        let first = empty.after(&pw("a")).expect("recorded");
        assert_eq!(first.credentials, [stored(&pw("a"))]);
        assert!(first.previous().is_empty());
        assert_eq!(first.after(&pw("a")), None, "unchanged");
        let second = first.after(&pw("b")).unwrap();
        assert_eq!(second.previous(), [pw("a")]);
        // Auth turned off is a change too: members move to no password.
        let off = second.after(&None).unwrap();
        assert_eq!(off.credentials[0], None);
        assert_eq!(off.previous(), [pw("b"), pw("a")]);
        // Back to an earlier password: not listed twice.
        let back = off.after(&pw("a")).unwrap();
        assert_eq!(back.previous(), [None, pw("b")]);
        let mut many = Record::default();
        for p in ["1", "2", "3", "4", "5", "6"] {
            many = many.after(&pw(p)).unwrap();
        }
        assert_eq!(many.credentials.len(), MAX_PREVIOUS + 1);
        assert_eq!(many.previous(), [pw("5"), pw("4"), pw("3")]);
    }

    #[test]
    fn the_record_is_json_and_round_trips() {
        let r = Record::default().after(&pw("s3cret")).unwrap();
        let json = serde_json::to_string(&r).unwrap();
        assert_eq!(json, r#"{"credentials":[{"password":"s3cret"}]}"#);
        let back: Record = serde_json::from_str(&json).unwrap();
        assert_eq!(back, r);
    }
}
