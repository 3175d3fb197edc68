//! The engine boundary against real `redis-server` (7) processes.

mod support;

use kvpilot::engine::{Dialect, ServerKind};

engine_tests!("redis-server", Dialect::Redis, ServerKind::Redis);
