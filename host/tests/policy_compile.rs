//! Loading and compiling a plugin is bounded (docs/architecture.md, rule 11): its size, its
//! preamble, the size of each function body and of all code, the compile time. A component
//! with one huge function is generated here with wasm-encoder.
//!
//! The figures of issue 11 (compile time and peak RSS of a 3 MiB function) come from the
//! ignored test at the end:
//! `cargo test --release -p kvpilot --test policy_compile -- --ignored --nocapture`.

use kvpilot::policy::{LoadLimits, PolicyError, PolicyRuntime};
use std::time::{Duration, Instant};
use wasm_encoder::{
    CodeSection, Component, Function, FunctionSection, Module, ModuleSection, TypeSection, ValType,
};

/// The shape of the generated function.
#[derive(Debug, Clone, Copy)]
pub enum Shape {
    /// A long straight run of arithmetic on 16 locals.
    Straight,
    /// Runs of 1000 values pushed on the operand stack and then summed: a thousand values
    /// alive at once, the worst case for register allocation.
    Deep,
}

/// A component holding one core module whose only function's body is at least `body_bytes`
/// long, of the given shape.
pub fn huge_function_component_shaped(body_bytes: usize, shape: Shape) -> Vec<u8> {
    let mut types = TypeSection::new();
    types.ty().function([ValType::I32], [ValType::I32]);
    let mut funcs = FunctionSection::new();
    funcs.function(0);
    let mut body = Function::new([(16, ValType::I32)]);
    let mut i: u32 = 0;
    while body.byte_len() < body_bytes {
        match shape {
            Shape::Straight => {
                let (a, b, c) = (1 + i % 16, 1 + (i * 7 + 3) % 16, 1 + (i * 11 + 5) % 16);
                body.instructions()
                    .local_get(a)
                    .local_get(b)
                    .i32_add()
                    .local_get(0)
                    .i32_xor()
                    .local_set(c);
            }
            Shape::Deep => {
                for k in 0..1000u32 {
                    body.instructions().local_get((i + k) % 17);
                }
                for _ in 0..999 {
                    body.instructions().i32_add();
                }
                body.instructions().local_set(1 + i % 16);
            }
        }
        i = i.wrapping_add(1);
    }
    body.instructions().local_get(1).end();
    let mut code = CodeSection::new();
    code.function(&body);
    let mut module = Module::new();
    module.section(&types).section(&funcs).section(&code);
    let mut component = Component::new();
    component.section(&ModuleSection(&module));
    component.finish()
}

/// [`huge_function_component_shaped`] with [`Shape::Straight`].
pub fn huge_function_component(body_bytes: usize) -> Vec<u8> {
    huge_function_component_shaped(body_bytes, Shape::Straight)
}

fn runtime(limits: LoadLimits) -> PolicyRuntime {
    PolicyRuntime::with_limits(limits).expect("runtime")
}

fn load_message(error: PolicyError) -> String {
    match error {
        PolicyError::Load { message, .. } => message,
        other => panic!("expected a load error, got {other}"),
    }
}

/// Peak resident set size of this process so far, in MiB (Linux `VmHWM`).
fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

#[tokio::test]
async fn a_function_body_past_the_limit_is_refused_before_compiling() {
    let bytes = huge_function_component(3 << 20);
    let runtime = runtime(LoadLimits::default());
    let started = Instant::now();
    let message = load_message(
        runtime
            .load_bytes("huge", &bytes)
            .await
            .expect_err("refused"),
    );
    assert!(
        message.contains("function 0 of core module 0 has a body of")
            && message.contains("the limit is 1048576 bytes"),
        "{message}"
    );
    // Refused by reading the code section, not by compiling it: well under the time the
    // compile of such a function takes (see the ignored measurement below).
    println!("refused in {:?}", started.elapsed());
    assert_eq!(runtime.cached_components(), 0, "nothing is cached");
}

#[tokio::test]
async fn all_code_past_the_limit_is_refused() {
    let bytes = huge_function_component(600 << 10);
    let runtime = runtime(LoadLimits {
        max_code_bytes: 512 << 10,
        ..LoadLimits::default()
    });
    let message = load_message(
        runtime
            .load_bytes("big", &bytes)
            .await
            .expect_err("refused"),
    );
    assert!(
        message.contains("code of more than 524288 bytes"),
        "{message}"
    );
}

/// A compile that outlasts its deadline is refused and not cached; the same bytes under a
/// generous deadline compile.
#[tokio::test]
async fn a_compile_past_its_deadline_is_refused_and_not_cached() {
    let bytes = huge_function_component(512 << 10);
    let hurried = runtime(LoadLimits {
        compile_timeout: Duration::from_millis(1),
        ..LoadLimits::default()
    });
    let message = load_message(
        hurried
            .load_bytes("slow", &bytes)
            .await
            .expect_err("refused"),
    );
    assert!(message.contains("did not compile within 1 ms"), "{message}");
    assert_eq!(hurried.cached_components(), 0);
    // It is not a component the host can call (no policy exports), but it compiled: the
    // error is about its exports, not its compile.
    let patient = runtime(LoadLimits::default());
    let message = load_message(
        patient
            .load_bytes("slow", &bytes)
            .await
            .expect_err("no exports"),
    );
    assert!(message.contains("does not export"), "{message}");
}

#[tokio::test]
async fn a_plugin_file_past_the_size_limit_or_without_the_preamble_is_refused_unread() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let runtime = runtime(LoadLimits {
        max_plugin_bytes: 1024,
        ..LoadLimits::default()
    });
    // A sparse file of 1 GiB: refused by its size, without reading it.
    let big = dir.path().join("big.wasm");
    let file = std::fs::File::create(&big).expect("create");
    file.set_len(1 << 30).expect("grow");
    let message = load_message(runtime.load_file(&big).await.expect_err("too large"));
    assert!(
        message.contains("1073741824 bytes") && message.contains("the limit is 1024 bytes"),
        "{message}"
    );
    // Not WebAssembly at all: refused on its first bytes.
    let text = dir.path().join("text.wasm");
    std::fs::write(&text, "#!/bin/sh\necho not a plugin\n").expect("write");
    let message = load_message(runtime.load_file(&text).await.expect_err("no preamble"));
    assert!(message.contains("not a WebAssembly file"), "{message}");
    // A core module: named as such.
    let core = dir.path().join("core.wasm");
    std::fs::write(&core, b"\0asm\x01\0\0\0").expect("write");
    let message = load_message(runtime.load_file(&core).await.expect_err("core module"));
    assert!(message.contains("core WebAssembly module"), "{message}");
}

/// The figures of issue 11: compile time and peak RSS of a component with one 3 MiB
/// function (and, for comparison, one at the 1 MiB limit), of both shapes, with the size
/// limits lifted (they refuse a 3 MiB body in milliseconds otherwise). The peak is reset
/// between runs (`/proc/self/clear_refs`), but memory the allocator kept from an earlier run
/// hides part of the next one: for clean figures run one case per process with
/// `KVPILOT_MEASURE=straight:3072` (shape:KiB).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement: run with --ignored --nocapture, alone"]
async fn measure_compiling_a_3_mib_function() {
    let all = [
        (Shape::Straight, 3 << 20),
        (Shape::Deep, 3 << 20),
        (Shape::Straight, 1 << 20),
        (Shape::Deep, 1 << 20),
    ];
    let chosen: Vec<(Shape, usize)> = match std::env::var("KVPILOT_MEASURE") {
        Ok(case) => {
            let (shape, kib) = case.split_once(':').expect("shape:KiB");
            let shape = if shape == "deep" {
                Shape::Deep
            } else {
                Shape::Straight
            };
            vec![(shape, kib.parse::<usize>().expect("KiB") << 10)]
        }
        Err(_) => all.to_vec(),
    };
    for (shape, size) in chosen {
        let bytes = huge_function_component_shaped(size, shape);
        // A fresh runtime each time: nothing cached, and its own engine.
        let runtime = runtime(LoadLimits {
            max_function_bytes: usize::MAX,
            max_code_bytes: usize::MAX,
            compile_timeout: Duration::from_secs(600),
            ..LoadLimits::default()
        });
        let _ = std::fs::write("/proc/self/clear_refs", "5");
        let before = peak_rss_mib();
        let started = Instant::now();
        let result = runtime.load_bytes("huge", &bytes).await;
        let elapsed = started.elapsed();
        println!(
            "{shape:?} body of {} KiB (component {} bytes): compile {:.2} s; peak RSS {:.0} MiB \
             (before: {:.0} MiB); {}",
            size >> 10,
            bytes.len(),
            elapsed.as_secs_f64(),
            peak_rss_mib().unwrap_or(0.0),
            before.unwrap_or(0.0),
            result
                .err()
                .map(|e| e.to_string())
                .unwrap_or_else(|| "ok".into())
        );
    }
}

/// The compile cache is bounded and evicts the least recently used component; a plugin
/// already loaded keeps working, and loading evicted bytes again compiles them again.
#[tokio::test]
async fn the_compile_cache_is_bounded_and_evicts_the_least_recently_used() {
    let runtime = runtime(LoadLimits {
        cache: kvpilot::policy::CacheLimits {
            entries: 2,
            bytes: usize::MAX,
        },
        ..LoadLimits::default()
    });
    let a = runtime.load("builtin:most-caught-up").await.expect("a");
    let b = runtime.load("builtin:stagger").await.expect("b");
    assert_eq!(runtime.cached_components(), 2);
    assert!(runtime.cached_bytes() > 0);
    // `a` used again: `b` is now the least recently used.
    assert!(
        runtime
            .load("builtin:most-caught-up")
            .await
            .expect("a")
            .shares_compiled(&a)
    );
    let _c = runtime.load("builtin:replicas-first").await.expect("c");
    assert_eq!(runtime.cached_components(), 2, "bounded");
    assert!(
        runtime
            .load("builtin:most-caught-up")
            .await
            .expect("a")
            .shares_compiled(&a),
        "a was kept"
    );
    let b_again = runtime.load("builtin:stagger").await.expect("b");
    assert!(
        !b_again.shares_compiled(&b),
        "b was evicted and compiled again"
    );
    // The plugin loaded before the eviction still works.
    assert_eq!(b.hooks(), b_again.hooks());

    // By bytes: a bound smaller than two components keeps one.
    let one = runtime_with_cache_bytes(runtime.cached_bytes() / 2 + 1);
    one.load("builtin:most-caught-up").await.expect("a");
    one.load("builtin:stagger").await.expect("b");
    assert_eq!(one.cached_components(), 1);
}

fn runtime_with_cache_bytes(bytes: usize) -> PolicyRuntime {
    runtime(LoadLimits {
        cache: kvpilot::policy::CacheLimits {
            entries: 100,
            bytes,
        },
        ..LoadLimits::default()
    })
}
