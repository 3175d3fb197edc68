//! `zone-aware`: a replica-selection plugin for kvpilot.
//!
//! Promotes a candidate from the first zone in `zones` that has an eligible one; within a zone
//! (and among candidates in unlisted or unknown zones, which come last) the highest replication
//! offset wins, ties going to the lowest ordinal.
//!
//! Eligible: ready and not syncing; for a planned handover also on the desired revision with its
//! replication link up. An empty candidate is never chosen while another one holds data.
//!
//! Config: `{"zones": ["eu-west-1a", "eu-west-1b"]}` (optional).

wit_bindgen::generate!({
    world: "replica-selector",
    // Point this at your copy of kvpilot's `wit/0.1.0`.
    path: "../../wit/0.1.0",
});

use exports::kvpilot::policy::plugin::{Guest as Plugin, PluginInfo};
use exports::kvpilot::policy::replica_selection::{Decision, Guest as Selection, Reason, Request};
use kvpilot::policy::types::Member;

struct ZoneAware;

impl Plugin for ZoneAware {
    fn info() -> PluginInfo {
        PluginInfo {
            name: "zone-aware".into(),
            version: "0.1.0".into(),
            description: "Promotes the most caught-up replica of the first preferred zone.".into(),
        }
    }

    fn validate_config(config: String) -> Result<(), String> {
        zones(&config).map(|_| ())
    }
}

impl Selection for ZoneAware {
    fn select(request: Request) -> Result<Decision, String> {
        let zones = zones(&request.config)?;
        let planned = matches!(request.reason, Reason::PlannedHandover);
        let holds_data = request.candidates.iter().any(|m| m.keys > 0);
        let eligible = |m: &&Member| {
            m.ready
                && !m.syncing
                && (!planned || (m.on_desired_revision && m.link_up))
                && (m.keys > 0 || !holds_data)
                && (m.keys > 0 || !matches!(request.reason, Reason::PrimaryEmpty))
        };
        // Lower rank is better: the zone's position in `zones`, unlisted zones last.
        let rank = |m: &Member| {
            let zone = m.zone.as_deref();
            zones
                .iter()
                .position(|z| Some(z.as_str()) == zone)
                .unwrap_or(zones.len())
        };
        let best = request.candidates.iter().filter(eligible).min_by(|a, b| {
            rank(a)
                .cmp(&rank(b))
                .then(b.offset.cmp(&a.offset))
                .then(a.ordinal.cmp(&b.ordinal))
        });
        Ok(match best {
            Some(m) => Decision::Promote(m.name.clone()),
            None => Decision::Wait(format!(
                "none of the {} candidates is ready, in sync and holding data",
                request.candidates.len()
            )),
        })
    }
}

/// The `zones` setting; the error names the field, as kvpilot shows it in status.
fn zones(config: &str) -> Result<Vec<String>, String> {
    let value: serde_json::Value =
        serde_json::from_str(config).map_err(|e| format!("config is not valid JSON: {e}"))?;
    let object = value.as_object().ok_or("config must be a JSON object")?;
    if let Some(other) = object.keys().find(|k| *k != "zones") {
        return Err(format!("{other}: unknown field (known fields: zones)"));
    }
    let Some(zones) = object.get("zones") else {
        return Ok(Vec::new());
    };
    let list = zones
        .as_array()
        .ok_or("zones: expected a list of zone names")?;
    list.iter()
        .map(|z| {
            z.as_str()
                .map(str::to_string)
                .ok_or_else(|| format!("zones: `{z}` is not a string"))
        })
        .collect()
}

export!(ZoneAware);
