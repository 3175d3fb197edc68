//! How the operator reaches a KvCluster's members, read from its Secrets on every reconcile:
//! the password (and ACL user) it authenticates with, the CA it verifies members against and
//! the client certificate it presents, and the DNS name each member's certificate must carry.
//!
//! Nothing is cached between reconciles: a Secret created after its KvCluster, or changed
//! (a rotated password, a renewed certificate), is used from the next reconcile on. That costs
//! one GET per referenced Secret per reconcile and needs only `get` on Secrets (a watch would
//! need `list`/`watch` on every Secret of the namespace).

use super::services::headless_name;
use crate::api::{KvCluster, SecretKeyRef, TlsClientAuth};
use crate::engine::{ClientIdentity, Credentials, Dialect, TlsConfig, TlsConfigError};
use crate::observe::{Access, ServerNames};
use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;
use kube::{Client, ResourceExt};
use kvpilot_sdk::Engine;
use std::collections::BTreeMap;

/// The CA certificate(s) key of the TLS Secret.
pub const TLS_CA_KEY: &str = "ca.crt";
/// The certificate key of the TLS Secret (`kubernetes.io/tls`).
pub const TLS_CERT_KEY: &str = "tls.crt";
/// The private key key of the TLS Secret (`kubernetes.io/tls`).
pub const TLS_KEY_KEY: &str = "tls.key";

/// Why a referenced Secret cannot be used (yet). Members cannot start without it either, so
/// the reconcile waits and says which Secret and key it needs.
#[derive(Debug, thiserror::Error)]
pub enum SecretProblem {
    #[error("Secret {namespace}/{name} ({purpose}) does not exist")]
    Missing {
        namespace: String,
        name: String,
        purpose: &'static str,
    },
    #[error("Secret {namespace}/{name} ({purpose}) has no key {key:?}")]
    MissingKey {
        namespace: String,
        name: String,
        key: String,
        purpose: &'static str,
    },
    #[error("Secret {namespace}/{name} key {key:?} ({purpose}) is not UTF-8 text")]
    NotText {
        namespace: String,
        name: String,
        key: String,
        purpose: &'static str,
    },
    #[error("cannot read Secret {namespace}/{name} ({purpose}): {source}")]
    Unreadable {
        namespace: String,
        name: String,
        purpose: &'static str,
        /// Boxed: a `kube::Error` is large, and this travels in every `Result`.
        #[source]
        source: Box<kube::Error>,
    },
    #[error(
        "Secret {namespace}/{name} key {key:?} ({purpose}): a Dragonfly password must be one \
         word (its replicas send `AUTH <password>` as an inline command, which splits at \
         whitespace)"
    )]
    NotOneWord {
        namespace: String,
        name: String,
        key: String,
        purpose: &'static str,
    },
    #[error("Secret {namespace}/{name} (TLS): {source}")]
    Tls {
        namespace: String,
        name: String,
        #[source]
        source: TlsConfigError,
    },
}

/// The dialect of `kc`'s engine.
pub fn dialect(kc: &KvCluster) -> Dialect {
    match kc.spec.engine.kind {
        Engine::Valkey => Dialect::Valkey,
        Engine::Redis => Dialect::Redis,
        Engine::Dragonfly => Dialect::Dragonfly,
    }
}

/// The DNS domain under which each member of `kc` has the name `<pod>.<domain>`: its
/// headless Service, `<name>-headless.<namespace>.svc`. The operator verifies a member's TLS
/// certificate against that name while it dials the pod IP.
pub fn member_domain(kc: &KvCluster, namespace: &str) -> String {
    format!("{}.{namespace}.svc", headless_name(kc))
}

/// Reads `kc`'s auth and TLS Secrets (one GET each) and returns how to reach its members.
pub async fn read(
    client: &Client,
    kc: &KvCluster,
    namespace: &str,
) -> Result<Access, SecretProblem> {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let mut access = Access::default();
    if let Some(auth) = &kc.spec.auth
        && let Some(r) = &auth.password_secret
    {
        let data = get(&secrets, namespace, &r.name, "password").await?;
        let password = text(&data, namespace, r, "password")?;
        if kc.spec.engine.kind == Engine::Dragonfly
            && (password.is_empty() || password.contains(char::is_whitespace))
        {
            return Err(SecretProblem::NotOneWord {
                namespace: namespace.to_string(),
                name: r.name.clone(),
                key: r.key.clone(),
                purpose: "password",
            });
        }
        let acl = auth.acl_secret.is_some();
        access.credentials = Some(match (&auth.username, acl) {
            (Some(user), true) => Credentials::user(user.clone(), password),
            _ => Credentials::password(password),
        });
        access.acl = acl;
    }
    if let Some(tls) = &kc.spec.tls {
        let name = &tls.secret_name;
        let data = get(&secrets, namespace, name, "TLS").await?;
        let key = |key: &str| {
            data.get(key).ok_or_else(|| SecretProblem::MissingKey {
                namespace: namespace.to_string(),
                name: name.clone(),
                key: key.to_string(),
                purpose: "TLS",
            })
        };
        let ca = key(TLS_CA_KEY)?;
        // The member certificate doubles as the operator's client certificate, as it does for
        // replicas connecting to their primary; it is presented only when members demand one.
        let identity = match tls.client_auth {
            TlsClientAuth::Optional => None,
            TlsClientAuth::Required => Some((key(TLS_CERT_KEY)?, key(TLS_KEY_KEY)?)),
        };
        let config = TlsConfig::from_pem(
            ca,
            identity.map(|(cert_pem, key_pem)| ClientIdentity { cert_pem, key_pem }),
        )
        .map_err(|source| SecretProblem::Tls {
            namespace: namespace.to_string(),
            name: name.clone(),
            source,
        })?;
        access.tls = Some(config);
        access.server_names = ServerNames::MemberDns(member_domain(kc, namespace));
    }
    tracing::trace!(cluster = %kc.name_any(), ?access, "member access");
    Ok(access)
}

async fn get(
    secrets: &Api<Secret>,
    namespace: &str,
    name: &str,
    purpose: &'static str,
) -> Result<BTreeMap<String, Vec<u8>>, SecretProblem> {
    match secrets.get_opt(name).await {
        Ok(Some(secret)) => Ok(secret
            .data
            .unwrap_or_default()
            .into_iter()
            .map(|(k, v)| (k, v.0))
            .collect()),
        Ok(None) => Err(SecretProblem::Missing {
            namespace: namespace.to_string(),
            name: name.to_string(),
            purpose,
        }),
        Err(source) => Err(SecretProblem::Unreadable {
            namespace: namespace.to_string(),
            name: name.to_string(),
            purpose,
            source: Box::new(source),
        }),
    }
}

fn text(
    data: &BTreeMap<String, Vec<u8>>,
    namespace: &str,
    r: &SecretKeyRef,
    purpose: &'static str,
) -> Result<String, SecretProblem> {
    let bytes = data.get(&r.key).ok_or_else(|| SecretProblem::MissingKey {
        namespace: namespace.to_string(),
        name: r.name.clone(),
        key: r.key.clone(),
        purpose,
    })?;
    // Exactly the bytes the members get through their environment: no trimming, or a
    // password written with a trailing newline would differ from the member's.
    String::from_utf8(bytes.clone()).map_err(|_| SecretProblem::NotText {
        namespace: namespace.to_string(),
        name: r.name.clone(),
        key: r.key.clone(),
        purpose,
    })
}
