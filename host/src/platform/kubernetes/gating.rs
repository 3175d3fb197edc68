//! Engine version gating: a server setting that only newer engines accept is rendered only for
//! them, since a server refuses to start on an option it does not know. The version comes from
//! `engine.version`, or else from the tag of the image the members actually run (the spec's
//! image, or kvpilot's default one); when neither says (`latest`, a digest), gated settings
//! are left out.

use super::statefulset::image_for;
use crate::api::{EngineSpec, KvClusterSpec};
use kvpilot_sdk::Engine;
use std::collections::BTreeMap;

/// A datastore release, `major.minor.patch` (missing parts are 0).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct EngineVersion {
    pub major: u32,
    pub minor: u32,
    pub patch: u32,
}

impl EngineVersion {
    pub const fn new(major: u32, minor: u32, patch: u32) -> Self {
        EngineVersion {
            major,
            minor,
            patch,
        }
    }

    /// Reads `9`, `9.0`, `v9.0.1`, `9.0.1-alpine`, `8.1-bookworm`; `None` for `latest` and
    /// other tags that name no version.
    pub fn parse(text: &str) -> Option<Self> {
        let text = text.strip_prefix('v').unwrap_or(text);
        let numeric = text.split(['-', '+', '_']).next()?;
        let mut parts = numeric.split('.');
        let major = parts.next()?.parse().ok()?;
        let mut next = || match parts.next() {
            None => Some(0),
            Some(p) => p.parse().ok(),
        };
        let minor = next()?;
        let patch = next()?;
        if parts.next().is_some() {
            return None;
        }
        Some(EngineVersion::new(major, minor, patch))
    }
}

/// The tag of an image reference: after the last `:` of the last path segment, without a
/// digest. `registry:5000/valkey/valkey:9.0` gives `9.0`; `valkey/valkey@sha256:…` gives `None`.
pub fn image_tag(image: &str) -> Option<&str> {
    let without_digest = image.split('@').next()?;
    let last_segment = without_digest.rsplit('/').next()?;
    last_segment
        .split_once(':')
        .map(|(_, tag)| tag)
        .filter(|t| !t.is_empty())
}

/// The version gating uses: the declared `engine.version`, else the tag of the image the
/// members run ([`image_for`]: the spec's image or the default one).
pub fn engine_version(engine: &EngineSpec) -> Option<EngineVersion> {
    engine
        .version
        .as_deref()
        .and_then(EngineVersion::parse)
        .or_else(|| image_tag(&image_for(engine)).and_then(EngineVersion::parse))
}

/// A setting, the engine that knows it, and the first release that accepts it.
struct Gate {
    engine: Engine,
    since: EngineVersion,
    name: &'static str,
    value: fn(&KvClusterSpec) -> String,
}

const GATES: &[Gate] = &[
    // How long a shutdown waits for replicas to catch up (and, with `failover`, for the
    // handover): the rollout's handover timeout.
    Gate {
        engine: Engine::Valkey,
        since: EngineVersion::new(7, 2, 0),
        name: "shutdown-timeout",
        value: handover_timeout,
    },
    Gate {
        engine: Engine::Redis,
        since: EngineVersion::new(7, 0, 0),
        name: "shutdown-timeout",
        value: handover_timeout,
    },
    // On SIGTERM (pod deletion, node drain) a primary hands over to a synced replica before
    // it exits, so even an eviction the operator did not plan is a graceful handover.
    Gate {
        engine: Engine::Valkey,
        since: EngineVersion::new(9, 0, 0),
        name: "shutdown-on-sigterm",
        value: |_| "failover".to_string(),
    },
];

fn handover_timeout(spec: &KvClusterSpec) -> String {
    spec.rollout.handover_timeout_seconds.to_string()
}

/// The gated settings this engine build accepts, by name.
pub fn gated_settings(spec: &KvClusterSpec) -> BTreeMap<String, String> {
    let Some(version) = engine_version(&spec.engine) else {
        return BTreeMap::new();
    };
    GATES
        .iter()
        .filter(|g| g.engine == spec.engine.kind && version >= g.since)
        .map(|g| (g.name.to_string(), (g.value)(spec)))
        .collect()
}

/// Why `spec` cannot run in cluster mode on its engine version, naming the field; `None` when
/// it can, or when the version is unknown (the pods then say it, by not starting). Cluster mode
/// needs `cluster-announce-hostname` / `cluster-preferred-endpoint-type` (Valkey 7.2, its
/// first release; Redis 7.0) and `CLUSTER ADDSLOTSRANGE` (Redis 7.0).
pub fn cluster_mode_refusal(spec: &KvClusterSpec) -> Option<String> {
    if spec.shards <= 1 {
        return None;
    }
    let since = match spec.engine.kind {
        Engine::Valkey => EngineVersion::new(7, 2, 0),
        Engine::Redis => EngineVersion::new(7, 0, 0),
        // Refused by validation (naming `shards`).
        Engine::Dragonfly => return None,
    };
    let version = engine_version(&spec.engine)?;
    (version < since).then(|| {
        format!(
            "engine.version: cluster mode (shards: {}) needs {} {}.{} or later              (cluster-announce-hostname, CLUSTER ADDSLOTSRANGE); {}.{}.{} runs",
            spec.shards,
            match spec.engine.kind {
                Engine::Redis => "Redis",
                _ => "Valkey",
            },
            since.major,
            since.minor,
            version.major,
            version.minor,
            version.patch
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(kind: Engine, version: Option<&str>, image: Option<&str>) -> KvClusterSpec {
        KvClusterSpec {
            engine: EngineSpec {
                kind,
                version: version.map(String::from),
                image: image.map(String::from),
            },
            ..Default::default()
        }
    }

    #[test]
    fn versions_parse_from_declared_values_and_tags() {
        assert_eq!(EngineVersion::parse("9"), Some(EngineVersion::new(9, 0, 0)));
        assert_eq!(
            EngineVersion::parse("v8.1.2"),
            Some(EngineVersion::new(8, 1, 2))
        );
        assert_eq!(
            EngineVersion::parse("9.0.1-alpine"),
            Some(EngineVersion::new(9, 0, 1))
        );
        assert_eq!(EngineVersion::parse("latest"), None);
        assert_eq!(EngineVersion::parse("1.2.3.4"), None);
        assert_eq!(EngineVersion::parse("8.x"), None);
    }

    #[test]
    fn tags_skip_registry_ports_and_digests() {
        assert_eq!(
            image_tag("valkey/valkey:9.0-bookworm"),
            Some("9.0-bookworm")
        );
        assert_eq!(
            image_tag("registry.local:5000/valkey/valkey:8.1"),
            Some("8.1")
        );
        assert_eq!(image_tag("registry.local:5000/valkey/valkey"), None);
        assert_eq!(image_tag("valkey/valkey@sha256:abcd"), None);
        assert_eq!(image_tag("valkey/valkey:9.0@sha256:abcd"), Some("9.0"));
    }

    #[test]
    fn failover_on_sigterm_only_from_valkey_9() {
        let v9 = gated_settings(&spec(Engine::Valkey, Some("9.0"), None));
        assert_eq!(
            v9.get("shutdown-on-sigterm").map(String::as_str),
            Some("failover")
        );
        assert_eq!(v9.get("shutdown-timeout").map(String::as_str), Some("10"));
        let v8 = gated_settings(&spec(Engine::Valkey, Some("8.1.4"), None));
        assert!(!v8.contains_key("shutdown-on-sigterm"));
        assert!(v8.contains_key("shutdown-timeout"));
        let redis = gated_settings(&spec(Engine::Redis, Some("7.4"), None));
        assert!(!redis.contains_key("shutdown-on-sigterm"));
    }

    #[test]
    fn declared_version_wins_over_the_image_tag() {
        let declared = spec(Engine::Valkey, Some("8.0"), Some("valkey/valkey:9.0"));
        assert!(!gated_settings(&declared).contains_key("shutdown-on-sigterm"));
        let from_tag = spec(Engine::Valkey, None, Some("valkey/valkey:9.0.0-alpine"));
        assert!(gated_settings(&from_tag).contains_key("shutdown-on-sigterm"));
    }

    #[test]
    fn unknown_versions_get_no_gated_settings() {
        let latest = spec(Engine::Valkey, None, Some("valkey/valkey:latest"));
        assert!(gated_settings(&latest).is_empty());
        assert!(gated_settings(&spec(Engine::Redis, Some("6.2"), None)).is_empty());
        let pinned = spec(Engine::Valkey, None, Some("valkey/valkey@sha256:abcd"));
        assert!(gated_settings(&pinned).is_empty());
        // Dragonfly's default image is `latest`: no version to gate on.
        assert_eq!(
            engine_version(&spec(Engine::Dragonfly, None, None).engine),
            None
        );
    }

    /// Neither a version nor an image: members run kvpilot's default image, and gating reads
    /// its tag, so they get what that release accepts (and nothing it would refuse).
    #[test]
    fn the_default_image_is_gated_on_its_own_version() {
        let valkey = spec(Engine::Valkey, None, None);
        assert_eq!(
            image_for(&valkey.engine),
            format!(
                "docker.io/valkey/valkey:{}",
                super::super::statefulset::DEFAULT_VALKEY
            )
        );
        assert_eq!(
            engine_version(&valkey.engine),
            Some(EngineVersion::new(8, 1, 0))
        );
        let settings = gated_settings(&valkey);
        assert_eq!(
            settings.get("shutdown-timeout").map(String::as_str),
            Some("10")
        );
        assert!(
            !settings.contains_key("shutdown-on-sigterm"),
            "8.1 would refuse it"
        );
        let redis = gated_settings(&spec(Engine::Redis, None, None));
        assert!(redis.contains_key("shutdown-timeout"), "{redis:?}");
    }
}
