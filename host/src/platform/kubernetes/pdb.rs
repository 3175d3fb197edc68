//! One PodDisruptionBudget per shard, so node drains never take more members of a shard than
//! the spec allows (one by default) while kvpilot may have one in flight itself.

use super::{BuildError, LABEL_SHARD, owned_meta, shard_name, shard_selector};
use crate::api::KvCluster;
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::ResourceExt;
use std::collections::BTreeMap;

/// Shard `shard`'s PDB, named like its StatefulSet; `None` when `spec.pdb.enabled` is false.
pub fn pdb(kc: &KvCluster, shard: u32) -> Result<Option<PodDisruptionBudget>, BuildError> {
    if !kc.spec.pdb.enabled {
        return Ok(None);
    }
    let max_unavailable =
        i32::try_from(kc.spec.pdb.max_unavailable.max(1)).map_err(|_| BuildError::Invalid {
            name: kc.name_any(),
            message: "pdb.maxUnavailable is too large".into(),
        })?;
    Ok(Some(PodDisruptionBudget {
        metadata: owned_meta(
            kc,
            shard_name(&kc.name_any(), shard),
            BTreeMap::from([(LABEL_SHARD.to_string(), shard.to_string())]),
        )?,
        spec: Some(PodDisruptionBudgetSpec {
            max_unavailable: Some(IntOrString::Int(max_unavailable)),
            selector: Some(LabelSelector {
                match_labels: Some(shard_selector(kc, shard)),
                ..Default::default()
            }),
            ..Default::default()
        }),
        status: None,
    }))
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::*;
    use super::*;

    #[test]
    fn one_member_of_a_shard_at_a_time_by_default() {
        let p = pdb(&cluster(valkey("8.0")), 0).unwrap().unwrap();
        assert_eq!(p.metadata.name.as_deref(), Some("cache-s0"));
        let s = p.spec.unwrap();
        assert_eq!(s.max_unavailable, Some(IntOrString::Int(1)));
        let selector = s.selector.unwrap().match_labels.unwrap();
        assert_eq!(selector[LABEL_SHARD], "0");
        assert_eq!(selector[super::super::LABEL_CLUSTER], "cache");
    }

    #[test]
    fn disabled_means_no_pdb() {
        let mut spec = valkey("8.0");
        spec.pdb.enabled = false;
        assert_eq!(pdb(&cluster(spec), 0).unwrap(), None);
    }
}
