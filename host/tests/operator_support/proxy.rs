//! A stand-in for kube-proxy and the `<name>-primary` Service: a TCP forwarder on 127.0.0.1
//! whose target follows the pod labelled `kvpilot.dev/role=primary`, so a new client of the
//! "Service" reaches the pod the operator's relabelling points at, and an established one stays
//! with the pod it reached, as behind a real Service (the forwarder keeps connections when its
//! target changes).

use super::pods;
use kube::{Client, ResourceExt};
use kvpilot::platform::local::forwarder::Forwarder;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// How often the forwarder's target is brought in line with the role label.
const FOLLOW_INTERVAL: Duration = Duration::from_millis(20);

/// Stops following (and forwarding) when dropped.
pub struct PrimaryProxy {
    forwarder: Arc<Forwarder>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for PrimaryProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl PrimaryProxy {
    /// Follows the primary pod of `cluster`, whose members serve on `port`.
    pub async fn start(client: &Client, cluster: &str, port: u16) -> PrimaryProxy {
        let forwarder = Arc::new(
            Forwarder::bind("127.0.0.1:0".parse().expect("addr"))
                .await
                .expect("bind the proxy"),
        );
        let (client, cluster, fw) = (client.clone(), cluster.to_string(), forwarder.clone());
        let task = tokio::spawn(async move {
            loop {
                let primary = pods(&client, &cluster).await.into_iter().find(|p| {
                    p.labels().get("kvpilot.dev/role").map(String::as_str) == Some("primary")
                });
                if let Some(ip) = primary
                    .and_then(|p| p.status)
                    .and_then(|s| s.pod_ip)
                    .and_then(|ip| ip.parse().ok())
                {
                    fw.set_target(Some(SocketAddr::new(ip, port)));
                }
                tokio::time::sleep(FOLLOW_INTERVAL).await;
            }
        });
        PrimaryProxy { forwarder, task }
    }

    /// Where clients connect.
    pub fn addr(&self) -> SocketAddr {
        self.forwarder.local_addr()
    }
}
