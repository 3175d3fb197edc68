//! The Services of a cluster:
//! - `<name>-headless`: every member, ready or not, for the StatefulSet's pod DNS names;
//! - `<name>-primary`: the pod labelled `role=primary` (clients write here; members replicate
//!   from here);
//! - `<name>-replicas`: the pods labelled `role=replica` (read-only traffic);
//! - with `service.perPod`, one Service per member pod, named after the pod.
//!
//! In cluster mode (`spec.shards` > 1) there is no primary endpoint (each shard has its own
//! primary, and clients follow MOVED/ASK), so `-primary` and `-replicas` are not built (and
//! pruned if they exist); `<name>-seeds` (every member, ready ones only, client port) is the
//! one stable address a cluster client starts from. The headless Service also names the
//! cluster bus port, and gives each pod the stable DNS name it announces.

use super::config::{BUS_PORT, PORT};
use super::{
    BuildError, LABEL_POD_NAME, LABEL_ROLE, ROLE_PRIMARY, ROLE_REPLICA, cluster_selector,
    member_name, owned_meta,
};
use crate::api::{KvCluster, ServiceType};
use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::ResourceExt;
use std::collections::BTreeMap;

/// `<name>-headless`, the StatefulSets' governing Service.
pub fn headless_name(kc: &KvCluster) -> String {
    format!("{}-headless", kc.name_any())
}

/// `<name>-primary`.
pub fn primary_name(kc: &KvCluster) -> String {
    format!("{}-primary", kc.name_any())
}

/// `<name>-replicas`.
pub fn replicas_name(kc: &KvCluster) -> String {
    format!("{}-replicas", kc.name_any())
}

/// `<name>-seeds`: cluster mode's client entry point.
pub fn seeds_name(kc: &KvCluster) -> String {
    format!("{}-seeds", kc.name_any())
}

/// `<pod>.<name>-headless.<namespace>.svc`: the stable DNS name of a member, which it
/// announces in cluster mode (`cluster-announce-hostname`).
pub fn member_host(kc: &KvCluster, pod: &str) -> String {
    format!(
        "{pod}.{}.{}",
        headless_name(kc),
        kc.namespace()
            .map(|ns| format!("{ns}.svc"))
            .unwrap_or_else(|| "svc".into())
    )
}

/// Every Service of `kc`.
pub fn services(kc: &KvCluster) -> Result<Vec<Service>, BuildError> {
    let mut out = vec![headless(kc)?];
    if kc.spec.shards > 1 {
        out.push(client_service(kc, seeds_name(kc), cluster_selector(kc))?);
    } else {
        out.push(client_service(
            kc,
            primary_name(kc),
            role_selector(kc, ROLE_PRIMARY),
        )?);
        out.push(client_service(
            kc,
            replicas_name(kc),
            role_selector(kc, ROLE_REPLICA),
        )?);
    }
    if kc.spec.service.per_pod {
        for shard in 0..kc.spec.shards {
            for ordinal in 0..=kc.spec.replicas {
                let pod = member_name(&kc.name_any(), shard, ordinal);
                let selector = BTreeMap::from([(LABEL_POD_NAME.to_string(), pod.clone())]);
                out.push(client_service(kc, pod, selector)?);
            }
        }
    }
    Ok(out)
}

/// Whether `existing` must be deleted and created again to become `desired`: a Service's
/// `clusterIP` is immutable, so switching between headless and not cannot be a patch.
pub fn must_recreate(existing: &Service, desired: &Service) -> bool {
    is_headless(existing) != is_headless(desired)
}

/// A Service without a cluster IP.
pub fn is_headless(service: &Service) -> bool {
    service
        .spec
        .as_ref()
        .and_then(|s| s.cluster_ip.as_deref())
        .is_some_and(|ip| ip == "None")
}

fn role_selector(kc: &KvCluster, role: &str) -> BTreeMap<String, String> {
    let mut s = cluster_selector(kc);
    s.insert(LABEL_ROLE.to_string(), role.to_string());
    s
}

fn port() -> ServicePort {
    named_port("resp", PORT)
}

fn named_port(name: &str, number: i32) -> ServicePort {
    ServicePort {
        name: Some(name.into()),
        port: number,
        target_port: Some(IntOrString::String(name.into())),
        protocol: Some("TCP".into()),
        ..Default::default()
    }
}

fn headless(kc: &KvCluster) -> Result<Service, BuildError> {
    Ok(Service {
        metadata: owned_meta(kc, headless_name(kc), BTreeMap::new())?,
        spec: Some(ServiceSpec {
            cluster_ip: Some("None".into()),
            // Members must resolve each other while starting, before they are ready.
            publish_not_ready_addresses: Some(true),
            selector: Some(cluster_selector(kc)),
            ports: Some(if kc.spec.shards > 1 {
                // Members reach each other's bus by pod IP; naming it here documents it and
                // gives it an SRV record (`_bus._tcp.<name>-headless`).
                vec![port(), named_port("bus", BUS_PORT)]
            } else {
                vec![port()]
            }),
            ..Default::default()
        }),
        status: None,
    })
}

fn client_service(
    kc: &KvCluster,
    name: String,
    selector: BTreeMap<String, String>,
) -> Result<Service, BuildError> {
    let (type_, cluster_ip) = match kc.spec.service.service_type {
        ServiceType::ClusterIP => ("ClusterIP", None),
        ServiceType::NodePort => ("NodePort", None),
        ServiceType::LoadBalancer => ("LoadBalancer", None),
        ServiceType::Headless => ("ClusterIP", Some("None".to_string())),
    };
    Ok(Service {
        metadata: owned_meta(kc, name, BTreeMap::new())?,
        spec: Some(ServiceSpec {
            type_: Some(type_.into()),
            cluster_ip,
            selector: Some(selector),
            ports: Some(vec![port()]),
            ..Default::default()
        }),
        status: None,
    })
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::*;
    use super::*;

    fn by_name(services: &[Service], name: &str) -> Service {
        services
            .iter()
            .find(|s| s.metadata.name.as_deref() == Some(name))
            .cloned()
            .unwrap_or_else(|| panic!("no Service {name}"))
    }

    fn selector(s: &Service) -> BTreeMap<String, String> {
        s.spec.as_ref().unwrap().selector.clone().unwrap()
    }

    #[test]
    fn headless_primary_and_replicas() {
        let services = services(&cluster(valkey("8.0"))).unwrap();
        assert_eq!(services.len(), 3);
        let headless = by_name(&services, "cache-headless");
        assert!(is_headless(&headless));
        assert_eq!(
            headless.spec.as_ref().unwrap().publish_not_ready_addresses,
            Some(true)
        );
        assert!(!selector(&headless).contains_key(LABEL_ROLE));
        let primary = by_name(&services, "cache-primary");
        assert_eq!(selector(&primary)[LABEL_ROLE], "primary");
        assert!(!is_headless(&primary));
        assert_eq!(
            selector(&by_name(&services, "cache-replicas"))[LABEL_ROLE],
            "replica"
        );
    }

    #[test]
    fn per_pod_services_select_one_pod_each() {
        let mut spec = valkey("8.0");
        spec.service.per_pod = true;
        spec.service.service_type = ServiceType::LoadBalancer;
        let services = services(&cluster(spec)).unwrap();
        assert_eq!(services.len(), 3 + 3);
        for ordinal in 0..3 {
            let name = format!("cache-s0-{ordinal}");
            let s = by_name(&services, &name);
            assert_eq!(
                selector(&s),
                BTreeMap::from([(LABEL_POD_NAME.to_string(), name)])
            );
            assert_eq!(s.spec.unwrap().type_.as_deref(), Some("LoadBalancer"));
        }
    }

    #[test]
    fn cluster_mode_has_seeds_instead_of_primary_and_replicas_and_names_the_bus_port() {
        let mut spec = valkey("8.0");
        spec.shards = 3;
        let kc = cluster(spec);
        let services = services(&kc).unwrap();
        let names: Vec<String> = services.iter().map(|s| s.name_any()).collect();
        assert_eq!(names, ["cache-headless", "cache-seeds"]);
        let seeds = by_name(&services, "cache-seeds");
        assert_eq!(selector(&seeds), cluster_selector(&kc));
        let ports = |s: &Service| -> Vec<(String, i32)> {
            s.spec
                .as_ref()
                .unwrap()
                .ports
                .iter()
                .flatten()
                .map(|p| (p.name.clone().unwrap(), p.port))
                .collect()
        };
        assert_eq!(ports(&seeds), [("resp".to_string(), 6379)]);
        let headless = by_name(&services, "cache-headless");
        assert_eq!(
            ports(&headless),
            [("resp".to_string(), 6379), ("bus".to_string(), 16379)]
        );
        assert_eq!(
            member_host(&kc, "cache-s2-1"),
            "cache-s2-1.cache-headless.shop.svc"
        );
        // Replication mode names no bus port.
        let one = services_of(valkey("8.0"));
        assert_eq!(ports(&by_name(&one, "cache-headless")).len(), 1);
    }

    fn services_of(spec: crate::api::KvClusterSpec) -> Vec<Service> {
        services(&cluster(spec)).unwrap()
    }

    #[test]
    fn switching_to_or_from_headless_needs_a_recreate() {
        let mut spec = valkey("8.0");
        let clusterip = by_name(&services(&cluster(spec.clone())).unwrap(), "cache-primary");
        spec.service.service_type = ServiceType::Headless;
        let headless = by_name(&services(&cluster(spec.clone())).unwrap(), "cache-primary");
        assert!(is_headless(&headless));
        assert!(must_recreate(&clusterip, &headless));
        assert!(must_recreate(&headless, &clusterip));
        spec.service.service_type = ServiceType::NodePort;
        let nodeport = by_name(&services(&cluster(spec)).unwrap(), "cache-primary");
        assert!(!must_recreate(&clusterip, &nodeport));
        assert!(!must_recreate(&headless, &headless));
    }
}
