//! Where a plugin comes from: `builtin:NAME` (embedded in the binary) or a file path.

/// The prefix naming an embedded default plugin.
pub const BUILTIN_PREFIX: &str = "builtin:";

/// A parsed plugin source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source<'a> {
    /// A builtin, by short name.
    Builtin(&'a str),
    /// A `.wasm` file.
    File(&'a str),
}

/// `builtin:NAME` or a path.
pub fn parse(source: &str) -> Source<'_> {
    match source.strip_prefix(BUILTIN_PREFIX) {
        Some(name) => Source::Builtin(name),
        None => Source::File(source),
    }
}

/// The embedded component bytes of a builtin, by short name.
pub fn builtin_bytes(name: &str) -> Option<&'static [u8]> {
    super::builtin::builtin(name).map(|b| b.wasm)
}

/// The short names of the builtins.
pub fn builtin_names() -> Vec<&'static str> {
    super::builtin::BUILTINS.iter().map(|b| b.name).collect()
}
