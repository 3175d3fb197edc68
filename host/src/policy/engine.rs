//! The wasmtime `Engine` shared by every plugin, and the epoch ticker that enforces deadlines.

use std::time::{Duration, Instant};
use wasmtime::{Config, Enabled, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

/// The largest memory limit a plugin may be given (per-plugin `memoryMiB` is capped here):
/// the pooling allocator reserves slots of this size.
pub const MAX_MEMORY_MIB: u64 = 256;

/// What one component may contain. A std Rust plugin has one memory and a handful of core
/// instances (its module plus wit-bindgen's shims); composed components have a few more. The
/// pool's defaults are unbounded, and every memory reserves a slot of `MAX_MEMORY_MIB`, so a
/// component beyond these is refused when it is compiled. (The per-call memory cap counts
/// every memory of the call together; see `sandbox.rs`.)
pub const MAX_MEMORIES_PER_COMPONENT: u32 = 4;
pub const MAX_CORE_INSTANCES_PER_COMPONENT: u32 = 32;
pub const MAX_TABLES_PER_COMPONENT: u32 = 32;

/// How often the ticker wakes. The engine epoch counts elapsed milliseconds, so a deadline
/// of N ms is N epochs, however late a wake-up is.
const TICK: Duration = Duration::from_millis(1);

/// Builds the engine: cranelift, epoch interruption, and a pooling allocator whose slots keep
/// a plugin's memory resident between calls so a fresh instance per call stays cheap.
pub fn new_engine() -> Result<Engine, String> {
    let mut pool = PoolingAllocationConfig::new();
    pool.total_component_instances(256)
        .total_core_instances(1024)
        .total_memories(256)
        .total_tables(1024)
        .total_stacks(256)
        .max_memory_size((MAX_MEMORY_MIB as usize) << 20)
        .max_memories_per_component(MAX_MEMORIES_PER_COMPONENT)
        .max_core_instances_per_component(MAX_CORE_INSTANCES_PER_COMPONENT)
        .max_tables_per_component(MAX_TABLES_PER_COMPONENT)
        // Between instances, reset the pages a guest dirtied by memset/memcpy instead of
        // unmapping them, so the next instance does not page-fault its stack, data and heap
        // back in. With PAGEMAP_SCAN (Linux 6.7+) only dirty pages are touched, which is what
        // makes a fresh instance per call cheap; without it, the first `keep_resident` bytes
        // are memset whole.
        .linear_memory_keep_resident(4 << 20)
        .table_keep_resident(1 << 20)
        .pagemap_scan(Enabled::Auto);

    let mut config = Config::new();
    config
        // One function at a time: the memory of a compile is then that of its largest
        // function, which the load limits bound (cranelift's memory grows with the function:
        // measured ~250 MiB peak RSS for a 1 MiB body, ~720 MiB for a 3 MiB one, in
        // tests/policy_compile.rs), instead of one such function per core at once. Plugins
        // are compiled rarely (once per digest), so the lost parallelism costs little.
        .parallel_compilation(false)
        .epoch_interruption(true)
        .allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    let engine = Engine::new(&config).map_err(|e| format!("cannot configure wasmtime: {e}"))?;
    spawn_ticker(&engine)?;
    Ok(engine)
}

/// Starts the thread that advances `engine`'s epoch once per elapsed millisecond. It holds
/// only a weak reference and stops when the engine is dropped.
fn spawn_ticker(engine: &Engine) -> Result<(), String> {
    let weak = engine.weak();
    std::thread::Builder::new()
        .name("kvpilot-epoch".into())
        .spawn(move || {
            let start = Instant::now();
            let mut ticks: u128 = 0;
            loop {
                std::thread::sleep(TICK);
                let Some(engine) = weak.upgrade() else {
                    return;
                };
                let elapsed = start.elapsed().as_millis();
                while ticks < elapsed {
                    engine.increment_epoch();
                    ticks += 1;
                }
            }
        })
        .map(|_| ())
        .map_err(|e| format!("cannot start the epoch ticker: {e}"))
}
