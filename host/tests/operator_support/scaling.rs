//! Changing a KvCluster's size and reading what its members say about replication.

use super::{get_cluster, patch_spec};
use kube::Client;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

/// Sets `spec.replicas` of KvCluster `name`, as `kubectl scale` would: a merge patch of that
/// one field, which (unlike a read-modify-replace) cannot conflict with the operator's status
/// writes.
pub async fn set_replicas(client: &Client, name: &str, replicas: u32) {
    patch_spec(client, name, serde_json::json!({ "replicas": replicas })).await;
    let kc = get_cluster(client, name).await;
    assert_eq!(kc.spec.replicas, replicas, "the patch took");
}

/// `INFO replication` of the server at `addr`, as fields.
pub async fn replication(addr: SocketAddr) -> Result<BTreeMap<String, String>, String> {
    let client =
        redis::Client::open(format!("redis://{addr}/")).map_err(|e| format!("{addr}: {e}"))?;
    let config = redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(2)))
        .set_response_timeout(Some(Duration::from_secs(2)));
    let mut conn = client
        .get_multiplexed_async_connection_with_config(&config)
        .await
        .map_err(|e| format!("{addr}: connect: {e}"))?;
    let text: String = redis::cmd("INFO")
        .arg("replication")
        .query_async(&mut conn)
        .await
        .map_err(|e| format!("{addr}: INFO: {e}"))?;
    Ok(text
        .lines()
        .filter_map(|l| l.trim().split_once(':'))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect())
}
