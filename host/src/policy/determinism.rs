//! Clocks and randomness that grant nothing. A std guest imports `wasi:random` as soon as it
//! builds a `HashMap` and `wasi:clocks` as soon as it reads `SystemTime` or `Instant`; refusing
//! those imports would reject ordinary plugins. Instead every call sees the same frozen time
//! and the same byte stream, so a decision stays a pure, reproducible function of its request
//! and a plugin learns nothing about the host (not even how long it has been running).

use std::time::Duration;
use wasmtime_wasi::random::Deterministic;
use wasmtime_wasi::{HostMonotonicClock, HostWallClock, WasiCtxBuilder};

/// The seed `wasi:random/insecure-seed` returns (std keys its `HashMap`s with it).
const INSECURE_SEED: u128 = 0x6b76_7069_6c6f_742d_7365_6564_0000_0001;

/// The largest `get-random-bytes` request served: enough for any seeding; a larger request
/// traps instead of making the host allocate it (wasmtime-wasi's default is 64 MiB).
pub const MAX_RANDOM_BYTES: u64 = 64 * 1024;

/// A clock that always reads 0: the Unix epoch for the wall clock, the start for the
/// monotonic clock. `subscribe-duration` still waits (in real time), which only spends the
/// call's deadline.
#[derive(Debug, Clone, Copy, Default)]
pub struct FrozenClock;

impl HostWallClock for FrozenClock {
    fn resolution(&self) -> Duration {
        Duration::from_nanos(1)
    }

    fn now(&self) -> Duration {
        Duration::ZERO
    }
}

impl HostMonotonicClock for FrozenClock {
    fn resolution(&self) -> u64 {
        1
    }

    fn now(&self) -> u64 {
        0
    }
}

/// The byte stream both `wasi:random/random` and `wasi:random/insecure` return, from the start
/// at every call: a fixed permutation of 0..=255, so it has no runs of zeros that a guest's
/// rejection sampling could loop on.
fn fixed_bytes() -> Vec<u8> {
    // 167 is odd, so i ↦ 167·i + 13 (mod 256) visits every byte once.
    (0..=255u8)
        .map(|i| i.wrapping_mul(167).wrapping_add(13))
        .collect()
}

/// Sets `builder`'s clocks and random sources to the ones above.
pub fn apply(builder: &mut WasiCtxBuilder) -> &mut WasiCtxBuilder {
    builder
        .wall_clock(FrozenClock)
        .monotonic_clock(FrozenClock)
        .secure_random(Deterministic::new(fixed_bytes()))
        .insecure_random(Deterministic::new(fixed_bytes()))
        .insecure_random_seed(INSECURE_SEED)
        .max_random_size(MAX_RANDOM_BYTES)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fixed_stream_is_a_permutation_of_every_byte() {
        let mut bytes = fixed_bytes();
        assert_ne!(bytes[0], bytes[1]);
        bytes.sort_unstable();
        assert_eq!(bytes, (0..=255u8).collect::<Vec<_>>());
    }

    #[test]
    fn frozen_clocks_read_zero() {
        assert_eq!(HostWallClock::now(&FrozenClock), Duration::ZERO);
        assert_eq!(HostMonotonicClock::now(&FrozenClock), 0);
    }
}
