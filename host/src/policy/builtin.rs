//! The default plugins, built from `plugins/components` by `build.rs` and embedded in the
//! binary as `builtin:NAME`.

/// One embedded default plugin.
#[derive(Debug, Clone, Copy)]
pub struct Builtin {
    /// Short name, e.g. `most-caught-up` (the source is `builtin:most-caught-up`).
    pub name: &'static str,
    /// The component, as built for `wasm32-wasip2`.
    pub wasm: &'static [u8],
}

/// Every builtin, one per hook.
pub const BUILTINS: &[Builtin] = &[
    Builtin {
        name: "most-caught-up",
        wasm: include_bytes!(concat!(env!("OUT_DIR"), "/most-caught-up.wasm")),
    },
    Builtin {
        name: "stagger",
        wasm: include_bytes!(concat!(env!("OUT_DIR"), "/stagger.wasm")),
    },
    Builtin {
        name: "replicas-first",
        wasm: include_bytes!(concat!(env!("OUT_DIR"), "/replicas-first.wasm")),
    },
];

/// The builtin called `NAME` or `builtin:NAME`.
pub fn builtin(name: &str) -> Option<&'static Builtin> {
    let name = name.strip_prefix("builtin:").unwrap_or(name);
    BUILTINS.iter().find(|b| b.name == name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_builtins_by_name_with_or_without_prefix() {
        for b in BUILTINS {
            assert_eq!(builtin(b.name).map(|f| f.name), Some(b.name));
            assert_eq!(
                builtin(&format!("builtin:{}", b.name)).map(|f| f.name),
                Some(b.name)
            );
        }
        assert!(builtin("nope").is_none());
        assert!(builtin("builtin:").is_none());
        assert!(builtin("builtin:builtin:stagger").is_none());
    }

    #[test]
    fn embedded_plugins_are_components() {
        // A component's preamble: `\0asm`, version 0x0d, layer 1 (a core module has layer 0).
        for b in BUILTINS {
            assert_eq!(
                &b.wasm[..8],
                b"\0asm\x0d\0\x01\0",
                "{} is not a component",
                b.name
            );
        }
    }
}
