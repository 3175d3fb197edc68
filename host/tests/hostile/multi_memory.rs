//! A hostile replica-selection plugin with several linear memories, encoded by the test with
//! wasm-encoder: a Rust guest has exactly one memory, so no crate in this folder can be one.
//!
//! The component holds one `plugin` core module (the memory the canonical ABI uses) and
//! `hogs` instances of a `hog` core module, each with its own memory of `hog_pages` pages.
//! With config `{}` it promotes the first candidate. With a longer config it grows its own
//! memory by `grow_pages`, then asks every hog to grow by as much; a refused growth traps,
//! as a Rust guest's allocation failure would.

use wasm_encoder::{
    Alias, BlockType, CanonicalFunctionSection, CanonicalOption, CodeSection, Component,
    ComponentAliasSection, ComponentExportKind, ComponentExportSection, ComponentInstanceSection,
    ComponentTypeSection, ComponentValType, ConstExpr, DataSection, EntityType, ExportKind,
    ExportSection, Function, FunctionSection, GlobalSection, GlobalType, ImportSection,
    InstanceSection, MemArg, MemorySection, MemoryType, Module, ModuleArg, ModuleSection,
    PrimitiveValType, TypeSection, ValType,
};

/// Where the `plugin` module keeps its static data (its memory starts zeroed).
const INFO_RECORD: u32 = 64;
const VALIDATE_OK: u32 = 128;
const SELECT_ANSWER: u32 = 192;
const STRINGS: u32 = 256;
const HEAP_START: i32 = 1024;

/// Canonical ABI offsets in `replica-selection.request` (size 136, align 8).
const REQUEST_CANDIDATES_PTR: u64 = 120;
const REQUEST_CONFIG_LEN: u64 = 132;

fn mem(offset: u64, align: u32) -> MemArg {
    MemArg {
        offset,
        align,
        memory_index: 0,
    }
}

fn memory(pages: u64) -> MemoryType {
    MemoryType {
        minimum: pages,
        maximum: None,
        memory64: false,
        shared: false,
        page_size_log2: None,
    }
}

/// `hog(pages)`: grows this module's own memory, trapping when the growth is refused.
fn hog_module(initial_pages: u64) -> Module {
    let mut types = TypeSection::new();
    types.ty().function([ValType::I32], []);
    let mut funcs = FunctionSection::new();
    funcs.function(0);
    let mut memories = MemorySection::new();
    memories.memory(memory(initial_pages));
    let mut exports = ExportSection::new();
    exports.export("hog", ExportKind::Func, 0);
    let mut hog = Function::new([]);
    hog.instructions()
        .local_get(0)
        .memory_grow(0)
        .i32_const(-1)
        .i32_eq()
        .if_(BlockType::Empty)
        .unreachable()
        .end()
        .end();
    let mut code = CodeSection::new();
    code.function(&hog);
    let mut module = Module::new();
    module
        .section(&types)
        .section(&funcs)
        .section(&memories)
        .section(&exports)
        .section(&code);
    module
}

/// The `plugin` module: `cabi_realloc`, `info`, `validate-config` and `select`.
fn plugin_module(hogs: u32, grow_pages: i32) -> Module {
    let mut types = TypeSection::new();
    types.ty().function([ValType::I32], []); // 0: hog
    types.ty().function([ValType::I32; 4], [ValType::I32]); // 1: cabi_realloc
    types.ty().function([], [ValType::I32]); // 2: info
    types.ty().function([ValType::I32; 2], [ValType::I32]); // 3: validate-config
    types.ty().function([ValType::I32], [ValType::I32]); // 4: select

    let mut imports = ImportSection::new();
    for i in 0..hogs {
        imports.import(&format!("hog{i}"), "hog", EntityType::Function(0));
    }
    let realloc = hogs;
    let mut funcs = FunctionSection::new();
    for ty in [1, 2, 3, 4] {
        funcs.function(ty);
    }
    let mut memories = MemorySection::new();
    memories.memory(memory(1));
    let mut globals = GlobalSection::new();
    globals.global(
        GlobalType {
            val_type: ValType::I32,
            mutable: true,
            shared: false,
        },
        &ConstExpr::i32_const(HEAP_START),
    );
    let mut exports = ExportSection::new();
    exports
        .export("memory", ExportKind::Memory, 0)
        .export("cabi_realloc", ExportKind::Func, realloc)
        .export("info", ExportKind::Func, realloc + 1)
        .export("validate-config", ExportKind::Func, realloc + 2)
        .export("select", ExportKind::Func, realloc + 3);

    // A bump allocator: align the heap pointer, advance it, grow the memory to cover it.
    let mut alloc = Function::new([(1, ValType::I32)]);
    alloc
        .instructions()
        .global_get(0)
        .local_get(2)
        .i32_add()
        .i32_const(1)
        .i32_sub()
        .i32_const(0)
        .local_get(2)
        .i32_sub()
        .i32_and()
        .local_tee(4)
        .local_get(3)
        .i32_add()
        .global_set(0)
        .block(BlockType::Empty)
        .loop_(BlockType::Empty)
        .global_get(0)
        .memory_size(0)
        .i32_const(16)
        .i32_shl()
        .i32_le_u()
        .br_if(1)
        .i32_const(1)
        .memory_grow(0)
        .i32_const(-1)
        .i32_eq()
        .if_(BlockType::Empty)
        .unreachable()
        .end()
        .br(0)
        .end()
        .end()
        .local_get(4)
        .end();

    let mut info = Function::new([]);
    info.instructions().i32_const(INFO_RECORD as i32).end();

    // `ok`: the result's discriminant at VALIDATE_OK is 0 in a fresh memory.
    let mut validate = Function::new([]);
    validate.instructions().i32_const(VALIDATE_OK as i32).end();

    let mut select = Function::new([]);
    let mut sink = select.instructions();
    sink.local_get(0)
        .i32_load(mem(REQUEST_CONFIG_LEN, 2))
        .i32_const(2)
        .i32_gt_u()
        .if_(BlockType::Empty)
        .i32_const(grow_pages)
        .memory_grow(0)
        .i32_const(-1)
        .i32_eq()
        .if_(BlockType::Empty)
        .unreachable()
        .end();
    for hog in 0..hogs {
        sink.i32_const(grow_pages).call(hog);
    }
    // ok(promote(candidates[0].name)): result tag @0, decision tag @4, string @8.
    sink.end()
        .i32_const(SELECT_ANSWER as i32)
        .i32_const(0)
        .i32_store8(mem(0, 0))
        .i32_const(SELECT_ANSWER as i32)
        .i32_const(0)
        .i32_store8(mem(4, 0))
        .i32_const(SELECT_ANSWER as i32)
        .local_get(0)
        .i32_load(mem(REQUEST_CANDIDATES_PTR, 2))
        .i32_load(mem(0, 2))
        .i32_store(mem(8, 2))
        .i32_const(SELECT_ANSWER as i32)
        .local_get(0)
        .i32_load(mem(REQUEST_CANDIDATES_PTR, 2))
        .i32_load(mem(4, 2))
        .i32_store(mem(12, 2))
        .i32_const(SELECT_ANSWER as i32)
        .end();

    let mut code = CodeSection::new();
    code.function(&alloc)
        .function(&info)
        .function(&validate)
        .function(&select);

    // plugin-info: three strings, and the record of (pointer, length) pairs pointing at them.
    let texts = [
        "hostile-multi-memory",
        "0.1.0",
        "Several core modules with a memory each: the memory cap is their total.",
    ];
    let mut strings = Vec::new();
    let mut record = Vec::new();
    for text in texts {
        let at = STRINGS + strings.len() as u32;
        record.extend_from_slice(&at.to_le_bytes());
        record.extend_from_slice(&(text.len() as u32).to_le_bytes());
        strings.extend_from_slice(text.as_bytes());
    }
    let mut data = DataSection::new();
    data.active(0, &ConstExpr::i32_const(INFO_RECORD as i32), record)
        .active(0, &ConstExpr::i32_const(STRINGS as i32), strings);

    let mut module = Module::new();
    module
        .section(&types)
        .section(&imports)
        .section(&funcs)
        .section(&memories)
        .section(&globals)
        .section(&exports)
        .section(&code)
        .section(&data);
    module
}

/// Emits component types, each record/enum/variant exported by name right after it is
/// defined (the component model requires the types an exported function uses to be named),
/// and hands out type indices in order.
struct Types<'a> {
    component: &'a mut Component,
    next: u32,
}

impl Types<'_> {
    fn define(&mut self, build: impl FnOnce(&mut ComponentTypeSection)) -> u32 {
        let mut section = ComponentTypeSection::new();
        build(&mut section);
        self.component.section(&section);
        self.next += 1;
        self.next - 1
    }

    /// Defines a type and exports it as `name`; the exported index is the one to use.
    fn named(&mut self, name: &str, build: impl FnOnce(&mut ComponentTypeSection)) -> u32 {
        let defined = self.define(build);
        let mut exports = ComponentExportSection::new();
        exports.export(name, ComponentExportKind::Type, defined, None);
        self.component.section(&exports);
        self.next += 1;
        self.next - 1
    }
}

const STRING: ComponentValType = ComponentValType::Primitive(PrimitiveValType::String);
const U32: ComponentValType = ComponentValType::Primitive(PrimitiveValType::U32);
const U64: ComponentValType = ComponentValType::Primitive(PrimitiveValType::U64);
const BOOL: ComponentValType = ComponentValType::Primitive(PrimitiveValType::Bool);

/// The component bytes; see the module docs. `hog_pages` and `grow_pages` are in 64 KiB
/// wasm pages.
pub fn component(hogs: u32, hog_pages: u64, grow_pages: u64) -> Vec<u8> {
    let grow = i32::try_from(grow_pages).expect("grow_pages fits in i32");
    let mut component = Component::new();
    component.section(&ModuleSection(&plugin_module(hogs, grow)));
    component.section(&ModuleSection(&hog_module(hog_pages)));

    let mut instances = InstanceSection::new();
    for _ in 0..hogs {
        instances.instantiate(1, Vec::<(&str, ModuleArg)>::new());
    }
    let args: Vec<(String, ModuleArg)> = (0..hogs)
        .map(|i| (format!("hog{i}"), ModuleArg::Instance(i)))
        .collect();
    instances.instantiate(0, args.iter().map(|(n, a)| (n.as_str(), *a)));
    component.section(&instances);
    let plugin_instance = hogs;

    // Core memory 0 and core functions 0..=3: realloc, info, validate-config, select.
    let mut aliases = ComponentAliasSection::new();
    for (name, kind) in [
        ("memory", ExportKind::Memory),
        ("cabi_realloc", ExportKind::Func),
        ("info", ExportKind::Func),
        ("validate-config", ExportKind::Func),
        ("select", ExportKind::Func),
    ] {
        aliases.alias(Alias::CoreInstanceExport {
            instance: plugin_instance,
            kind,
            name,
        });
    }
    component.section(&aliases);

    let mut t = Types {
        component: &mut component,
        next: 0,
    };
    let plugin_info = t.named("plugin-info", |s| {
        s.defined_type().record([
            ("name", STRING),
            ("version", STRING),
            ("description", STRING),
        ])
    });
    let role = t.named("role", |s| {
        s.defined_type()
            .enum_type(["primary", "replica", "unknown"])
    });
    let engine = t.named("engine", |s| {
        s.defined_type().enum_type(["valkey", "redis", "dragonfly"])
    });
    let opt_string = t.define(|s| s.defined_type().option(STRING));
    let member = t.named("member", |s| {
        s.defined_type().record([
            ("name", STRING),
            ("shard", U32),
            ("ordinal", U32),
            ("role", ComponentValType::Type(role)),
            ("ready", BOOL),
            ("on-desired-revision", BOOL),
            ("link-up", BOOL),
            ("syncing", BOOL),
            ("offset", U64),
            ("lag-bytes", U64),
            ("keys", U64),
            ("zone", ComponentValType::Type(opt_string)),
            ("node", ComponentValType::Type(opt_string)),
        ])
    });
    let cluster = t.named("cluster", |s| {
        s.defined_type().record([
            ("name", STRING),
            ("namespace", STRING),
            ("engine", ComponentValType::Type(engine)),
            ("engine-version", STRING),
            ("shards", U32),
            ("replicas-per-shard", U32),
        ])
    });
    let reason = t.named("reason", |s| {
        s.defined_type()
            .enum_type(["planned-handover", "primary-lost", "primary-empty"])
    });
    let opt_member = t.define(|s| s.defined_type().option(ComponentValType::Type(member)));
    let members = t.define(|s| s.defined_type().list(ComponentValType::Type(member)));
    let request = t.named("request", |s| {
        s.defined_type().record([
            ("reason", ComponentValType::Type(reason)),
            ("cluster", ComponentValType::Type(cluster)),
            ("primary", ComponentValType::Type(opt_member)),
            ("candidates", ComponentValType::Type(members)),
            ("config", STRING),
        ])
    });
    let decision = t.named("decision", |s| {
        s.defined_type()
            .variant([("promote", Some(STRING)), ("wait", Some(STRING))])
    });
    let select_result = t.define(|s| {
        s.defined_type()
            .result(Some(ComponentValType::Type(decision)), Some(STRING))
    });
    let unit_result = t.define(|s| s.defined_type().result(None, Some(STRING)));
    let info_ty = t.define(|s| {
        s.function()
            .params(Vec::<(&str, ComponentValType)>::new())
            .result(Some(ComponentValType::Type(plugin_info)));
    });
    let validate_ty = t.define(|s| {
        s.function()
            .params([("config", STRING)])
            .result(Some(ComponentValType::Type(unit_result)));
    });
    let select_ty = t.define(|s| {
        s.function()
            .params([("request", ComponentValType::Type(request))])
            .result(Some(ComponentValType::Type(select_result)));
    });

    let (memory, realloc) = (0, 0);
    let mut canon = CanonicalFunctionSection::new();
    canon
        .lift(
            1,
            info_ty,
            [CanonicalOption::UTF8, CanonicalOption::Memory(memory)],
        )
        .lift(
            2,
            validate_ty,
            [
                CanonicalOption::UTF8,
                CanonicalOption::Memory(memory),
                CanonicalOption::Realloc(realloc),
            ],
        )
        .lift(
            3,
            select_ty,
            [
                CanonicalOption::UTF8,
                CanonicalOption::Memory(memory),
                CanonicalOption::Realloc(realloc),
            ],
        );
    component.section(&canon);

    let mut interfaces = ComponentInstanceSection::new();
    interfaces
        .export_items([
            ("info", ComponentExportKind::Func, 0),
            ("validate-config", ComponentExportKind::Func, 1),
        ])
        .export_items([("select", ComponentExportKind::Func, 2)]);
    component.section(&interfaces);
    let mut exports = ComponentExportSection::new();
    exports
        .export(
            "kvpilot:policy/plugin@0.1.0",
            ComponentExportKind::Instance,
            0,
            None,
        )
        .export(
            "kvpilot:policy/replica-selection@0.1.0",
            ComponentExportKind::Instance,
            1,
            None,
        );
    component.section(&exports);
    component.finish()
}
