//! The engine boundary against real `valkey-server` processes.

mod support;

use kvpilot::engine::{Dialect, ServerKind};

engine_tests!("valkey-server", Dialect::Valkey, ServerKind::Valkey);
