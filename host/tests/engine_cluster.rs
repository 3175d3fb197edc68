//! Cluster mode against real Valkey 8 and Redis 7: 3 shards × (1 primary + 1 replica),
//! bootstrapped by hand with the engine primitives.

mod support;

mod valkey {
    use super::support;
    use crate::cluster_tests;
    use kvpilot::engine::Dialect;

    cluster_tests!("valkey-server", Dialect::Valkey);
}

mod redis {
    use super::support;
    use crate::cluster_tests;
    use kvpilot::engine::Dialect;

    cluster_tests!("redis-server", Dialect::Redis);
}
