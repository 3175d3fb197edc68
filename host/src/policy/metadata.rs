//! Plugin metadata embedded in the component: a custom section named [`SECTION`] holding
//! `{"hooks": [...], "configSchema": {...}}` as JSON. `kvpilot policy annotate` writes it
//! (custom sections are allowed anywhere in a component and ignored by the runtime, so the
//! plugin runs as before; only its sha256 changes); `kvpilot policy check` reads it and
//! validates a config against the schema (see `config_schema.rs`).

use super::Hook;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The custom section's name.
pub const SECTION: &str = "kvpilot-metadata";
/// The largest section read or written (a config schema is a few KiB).
pub const MAX_SECTION_BYTES: usize = 64 * 1024;

/// What the section holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Metadata {
    /// The hooks the plugin exports, when it was annotated.
    pub hooks: Vec<Hook>,
    /// A JSON Schema of the plugin's config (the subset `config_schema.rs` checks).
    pub config_schema: Value,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MetadataError {
    #[error("the {SECTION} section is {bytes} bytes; the limit is {MAX_SECTION_BYTES}")]
    TooLarge { bytes: usize },
    #[error("the {SECTION} section is not valid: {0}")]
    Invalid(String),
    #[error("the component already has a {SECTION} section: annotate the file as it was built")]
    AlreadyAnnotated,
}

/// The metadata of a component, if it has the section at its top level.
pub fn read(component: &[u8]) -> Result<Option<Metadata>, MetadataError> {
    use wasmparser::{Parser, Payload};
    // Nested modules and components are skipped (their sections are not ours): only the
    // outermost level is read.
    let mut depth = 0usize;
    let mut found = None;
    for payload in Parser::new(0).parse_all(component) {
        let Ok(payload) = payload else { break };
        match payload {
            Payload::ModuleSection { .. } | Payload::ComponentSection { .. } => depth += 1,
            Payload::End(_) => depth = depth.saturating_sub(1),
            Payload::CustomSection(c) if depth == 0 && c.name() == SECTION => {
                if c.data().len() > MAX_SECTION_BYTES {
                    return Err(MetadataError::TooLarge {
                        bytes: c.data().len(),
                    });
                }
                let metadata = serde_json::from_slice(c.data())
                    .map_err(|e| MetadataError::Invalid(e.to_string()))?;
                found = Some(metadata);
            }
            _ => {}
        }
    }
    Ok(found)
}

fn leb128(mut n: usize, out: &mut Vec<u8>) {
    loop {
        let byte = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

/// `component` with the section appended at its top level.
pub fn annotate(component: &[u8], metadata: &Metadata) -> Result<Vec<u8>, MetadataError> {
    if read(component)?.is_some() {
        return Err(MetadataError::AlreadyAnnotated);
    }
    let data = serde_json::to_vec(metadata).map_err(|e| MetadataError::Invalid(e.to_string()))?;
    if data.len() > MAX_SECTION_BYTES {
        return Err(MetadataError::TooLarge { bytes: data.len() });
    }
    let mut payload = Vec::with_capacity(data.len() + SECTION.len() + 8);
    leb128(SECTION.len(), &mut payload);
    payload.extend_from_slice(SECTION.as_bytes());
    payload.extend_from_slice(&data);
    let mut out = component.to_vec();
    out.push(0); // custom section id
    leb128(payload.len(), &mut out);
    out.extend_from_slice(&payload);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leb128_encodes_like_the_spec() {
        let enc = |n| {
            let mut v = Vec::new();
            leb128(n, &mut v);
            v
        };
        assert_eq!(enc(0), [0]);
        assert_eq!(enc(127), [127]);
        assert_eq!(enc(128), [0x80, 1]);
        assert_eq!(enc(624_485), [0xe5, 0x8e, 0x26]);
    }
}
