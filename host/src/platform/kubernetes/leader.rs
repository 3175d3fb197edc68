//! Leader election through a `coordination.k8s.io/v1` Lease: the holder renews it every third
//! of the lease duration; another replica takes it over only after it expired. Updates carry
//! the resourceVersion read, so two candidates never both win one round.

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::Client;
use kube::api::{Api, PostParams};
use std::time::Duration;
use tokio::sync::watch;

/// One candidate for the lease `namespace/name`.
pub struct LeaderElector {
    api: Api<Lease>,
    name: String,
    identity: String,
    duration: Duration,
}

impl LeaderElector {
    pub fn new(
        client: Client,
        namespace: &str,
        name: &str,
        identity: &str,
        duration: Duration,
    ) -> Self {
        LeaderElector {
            api: Api::namespaced(client, namespace),
            name: name.to_string(),
            identity: identity.to_string(),
            duration,
        }
    }

    /// Takes or renews the lease; `Ok(true)` when this candidate holds it afterwards.
    pub async fn try_acquire_or_renew(&self) -> Result<bool, kube::Error> {
        let now = Timestamp::now();
        let seconds = i32::try_from(self.duration.as_secs().max(1)).unwrap_or(i32::MAX);
        let Some(mut lease) = self.api.get_opt(&self.name).await? else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.name.clone()),
                    ..Default::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(self.identity.clone()),
                    lease_duration_seconds: Some(seconds),
                    acquire_time: Some(MicroTime(now)),
                    renew_time: Some(MicroTime(now)),
                    lease_transitions: Some(0),
                    ..Default::default()
                }),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(true),
                Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
                Err(e) => Err(e),
            };
        };
        let spec = lease.spec.clone().unwrap_or_default();
        let ours = spec.holder_identity.as_deref() == Some(self.identity.as_str());
        let held_by_other = spec
            .holder_identity
            .as_deref()
            .is_some_and(|h| !h.is_empty())
            && !ours;
        let expires = spec.renew_time.as_ref().map(|t| {
            t.0 + SignedDuration::from_secs(i64::from(spec.lease_duration_seconds.unwrap_or(0)))
        });
        if held_by_other && expires.is_some_and(|e| e > now) {
            return Ok(false);
        }
        let transitions = spec.lease_transitions.unwrap_or(0);
        lease.spec = Some(LeaseSpec {
            holder_identity: Some(self.identity.clone()),
            lease_duration_seconds: Some(seconds),
            acquire_time: if ours {
                spec.acquire_time.clone()
            } else {
                Some(MicroTime(now))
            },
            renew_time: Some(MicroTime(now)),
            lease_transitions: Some(if ours { transitions } else { transitions + 1 }),
            ..spec
        });
        // `replace` sends the resourceVersion read above: a concurrent writer makes it a 409.
        match self
            .api
            .replace(&self.name, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Keeps trying every third of the lease duration, publishing whether this candidate
    /// leads. An API error counts as not leading: another replica may take over once the
    /// lease expires, so this one must stop reconciling.
    pub async fn run(self, leading: watch::Sender<bool>) {
        let period = self.duration / 3;
        loop {
            let now_leading = match self.try_acquire_or_renew().await {
                Ok(l) => l,
                Err(e) => {
                    tracing::warn!(lease = %self.name, error = %e, "lease renewal failed");
                    false
                }
            };
            if *leading.borrow() != now_leading {
                tracing::info!(lease = %self.name, identity = %self.identity, leading = now_leading, "leadership changed");
            }
            leading.send_replace(now_leading);
            tokio::time::sleep(period).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube_fake_client::ClientBuilder;

    #[tokio::test]
    async fn one_holder_until_the_lease_expires() {
        let client = ClientBuilder::new().build().await.unwrap();
        let a = LeaderElector::new(
            client.clone(),
            "ops",
            "kvpilot",
            "a",
            Duration::from_secs(2),
        );
        let b = LeaderElector::new(
            client.clone(),
            "ops",
            "kvpilot",
            "b",
            Duration::from_secs(2),
        );
        assert!(
            a.try_acquire_or_renew().await.unwrap(),
            "a creates the lease"
        );
        assert!(
            !b.try_acquire_or_renew().await.unwrap(),
            "b waits while a holds it"
        );
        assert!(a.try_acquire_or_renew().await.unwrap(), "a renews");
        // a stops renewing; after the lease duration b takes over.
        tokio::time::sleep(Duration::from_millis(2200)).await;
        assert!(
            b.try_acquire_or_renew().await.unwrap(),
            "b takes the expired lease"
        );
        assert!(!a.try_acquire_or_renew().await.unwrap(), "a lost it");
        let lease = Api::<Lease>::namespaced(client, "ops")
            .get("kvpilot")
            .await
            .unwrap();
        let spec = lease.spec.unwrap();
        assert_eq!(spec.holder_identity.as_deref(), Some("b"));
        assert_eq!(spec.lease_transitions, Some(1));
    }
}
