//! Plugins: the user's map and reduce functions, as WebAssembly modules the workers run
//! sandboxed (wasmtime, compiled with Cranelift). A plugin gets nothing but the records handed
//! to it: it may import only `batch.emit` (its output) and `batch.random_u32` (dice seeded per
//! task attempt), so it has no files, clock or network; its memory is capped, and each call has
//! a CPU budget (fuel, about one unit per WebAssembly instruction). A plugin that traps, loops
//! forever or allocates without end fails the call with an error saying which; the worker goes
//! on. The interface is written down for C in `plugins/batch.h`; the shipped plugins
//! (`plugins/*.c`) are built to WebAssembly by this crate's build script and embedded.

use std::sync::OnceLock;

use wasmtime::{
    Caller, Config, Engine, Linker, Memory, Module, ResourceLimiter, Store, Trap, TypedFunc,
};

/// The plugins built from `plugins/*.c` by the build script: (name, WebAssembly bytes).
pub const SHIPPED: &[(&str, &[u8])] = include!(concat!(env!("OUT_DIR"), "/shipped.rs"));

/// The bytes of a shipped plugin, or of the `.wasm` (or `.wat`) file at `name`.
pub fn resolve(name: &str) -> Result<Vec<u8>, PluginError> {
    if let Some((_, bytes)) = SHIPPED.iter().find(|(n, _)| *n == name) {
        return Ok(bytes.to_vec());
    }
    std::fs::read(name).map_err(|e| {
        PluginError::Invalid(format!(
            "{name:?} is neither a shipped plugin ({}) nor a readable file: {e}",
            SHIPPED
                .iter()
                .map(|(n, _)| *n)
                .collect::<Vec<_>>()
                .join(", ")
        ))
    })
}

/// What a call emitted: (key, value) pairs, in order.
pub type Emitted = Vec<(Vec<u8>, Vec<u8>)>;

/// What a plugin call may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Linear memory, in bytes.
    pub memory: usize,
    /// Fuel for one call (one `map` of a record, one `reduce` of a key).
    pub fuel: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            memory: 64 << 20,
            fuel: 2_000_000_000,
        }
    }
}

/// Why a plugin could not be loaded or a call failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PluginError {
    /// Not a WebAssembly module, or not a plugin (no `map`/`reduce`, other imports).
    Invalid(String),
    /// It trapped (its own `unreachable`, a bad memory access...).
    Trapped(String),
    /// It used its whole CPU budget for one call.
    OutOfFuel { fuel: u64 },
    /// It asked for more memory than its limit.
    OutOfMemory { limit: usize },
}

impl std::fmt::Display for PluginError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PluginError::Invalid(why) => write!(f, "not a usable plugin: {why}"),
            PluginError::Trapped(why) => write!(f, "the plugin trapped: {why}"),
            PluginError::OutOfFuel { fuel } => write!(
                f,
                "the plugin used its whole CPU budget ({fuel} fuel) on one call: an endless loop?"
            ),
            PluginError::OutOfMemory { limit } => write!(
                f,
                "the plugin asked for more than its {} MiB of memory",
                limit >> 20
            ),
        }
    }
}

impl std::error::Error for PluginError {}

fn engine() -> &'static Engine {
    static ENGINE: OnceLock<Engine> = OnceLock::new();
    ENGINE.get_or_init(|| {
        let mut config = Config::new();
        config.consume_fuel(true);
        Engine::new(&config).expect("a Cranelift engine with fuel")
    })
}

/// A compiled plugin: load once per job, make an [`Instance`] per task.
#[derive(Clone)]
pub struct Plugin {
    module: Module,
}

impl Plugin {
    /// Compiles `bytes` (a WebAssembly binary, or its text form) and checks it is a plugin: it
    /// exports `memory`, `batch_buffer`, `map` and `reduce` (and maybe `init`), and imports
    /// nothing but `batch.emit` and `batch.random_u32`.
    pub fn load(bytes: &[u8]) -> Result<Self, PluginError> {
        let module =
            Module::new(engine(), bytes).map_err(|e| PluginError::Invalid(format!("{e:#}")))?;
        for import in module.imports() {
            let known =
                import.module() == "batch" && ["emit", "random_u32"].contains(&import.name());
            if !known {
                return Err(PluginError::Invalid(format!(
                    "it imports {}.{}; a plugin may import only batch.emit and batch.random_u32 (no files, clock or network)",
                    import.module(),
                    import.name()
                )));
            }
        }
        let exports: Vec<&str> = module.exports().map(|e| e.name()).collect();
        for needed in ["memory", "batch_buffer", "map", "reduce"] {
            if !exports.contains(&needed) {
                return Err(PluginError::Invalid(format!(
                    "it does not export `{needed}` (a plugin exports memory, batch_buffer, map and reduce; see plugins/batch.h)"
                )));
            }
        }
        Ok(Self { module })
    }

    /// A fresh instance for one task: its own memory, `init` called with the job's `arg`, dice
    /// seeded with `seed`.
    pub fn instance(&self, limits: Limits, arg: &[u8], seed: u64) -> Result<Instance, PluginError> {
        let mut store = Store::new(
            engine(),
            Host {
                out: Vec::new(),
                rng: seed.max(1),
                memory_limit: limits.memory,
                denied: false,
                memory: None,
            },
        );
        store.limiter(|host| host);
        let mut linker = Linker::new(engine());
        linker
            .func_wrap(
                "batch",
                "emit",
                |mut caller: Caller<'_, Host>, k: i32, kl: i32, v: i32, vl: i32| {
                    let memory = match caller.data().memory {
                        Some(memory) => memory,
                        None => caller
                            .get_export("memory")
                            .and_then(|e| e.into_memory())
                            .ok_or_else(|| wasmtime::Error::msg("no memory"))?,
                    };
                    let data = memory.data(&caller);
                    let slice = |at: i32, len: i32| {
                        data.get(
                            at as u32 as usize
                                ..(at as u32 as usize).checked_add(len as u32 as usize)?,
                        )
                        .map(<[u8]>::to_vec)
                    };
                    let (Some(key), Some(value)) = (slice(k, kl), slice(v, vl)) else {
                        return Err(wasmtime::Error::msg("emit outside the plugin's memory"));
                    };
                    caller.data_mut().out.push((key, value));
                    Ok(())
                },
            )
            .map_err(|e| PluginError::Invalid(format!("{e:#}")))?;
        linker
            .func_wrap("batch", "random_u32", |mut caller: Caller<'_, Host>| {
                // xorshift64*: the dice of the chaos plugin, seeded per attempt.
                let host = caller.data_mut();
                host.rng ^= host.rng >> 12;
                host.rng ^= host.rng << 25;
                host.rng ^= host.rng >> 27;
                (host.rng.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 32) as u32
            })
            .map_err(|e| PluginError::Invalid(format!("{e:#}")))?;
        store.set_fuel(limits.fuel).expect("fuel is on");
        let instance = linker
            .instantiate(&mut store, &self.module)
            .map_err(|e| classify(e, &store, limits))?;
        let memory = instance
            .get_memory(&mut store, "memory")
            .ok_or_else(|| PluginError::Invalid("its `memory` is not a memory".into()))?;
        store.data_mut().memory = Some(memory);
        let typed = |name: &str| PluginError::Invalid(format!("`{name}` has the wrong signature"));
        let buffer = instance
            .get_typed_func::<i32, i32>(&mut store, "batch_buffer")
            .map_err(|_| typed("batch_buffer"))?;
        let map = instance
            .get_typed_func::<(i32, i32, i32, i32), ()>(&mut store, "map")
            .map_err(|_| typed("map"))?;
        let reduce = instance
            .get_typed_func::<(i32, i32, i32, i32, i32), ()>(&mut store, "reduce")
            .map_err(|_| typed("reduce"))?;
        let combine = match instance.get_func(&mut store, "combine") {
            Some(f) => Some(
                f.typed::<(i32, i32, i32, i32, i32), ()>(&store)
                    .map_err(|_| typed("combine"))?,
            ),
            None => None,
        };
        let mut plugin = Instance {
            store,
            memory,
            buffer,
            map,
            reduce,
            combine,
            limits,
        };
        if let Some(init) = instance.get_func(&mut plugin.store, "init") {
            let init = init
                .typed::<(i32, i32), ()>(&plugin.store)
                .map_err(|_| typed("init"))?;
            let at = plugin.put(&[arg])?;
            plugin.call(|store| init.call(store, (at[0], arg.len() as i32)))?;
        }
        Ok(plugin)
    }
}

/// What the host keeps for a plugin instance.
struct Host {
    out: Emitted,
    rng: u64,
    memory_limit: usize,
    /// A memory growth was refused.
    denied: bool,
    /// The plugin's memory, once instantiated (so `emit` need not look it up by name).
    memory: Option<Memory>,
}

impl ResourceLimiter for Host {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let allowed = desired <= self.memory_limit;
        self.denied |= !allowed;
        Ok(allowed)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= 10_000)
    }
}

/// `reduce` and `combine`: (key, key length, values, values length, count).
type ValuesFunc = TypedFunc<(i32, i32, i32, i32, i32), ()>;

/// One task's running plugin.
pub struct Instance {
    store: Store<Host>,
    memory: Memory,
    buffer: TypedFunc<i32, i32>,
    map: TypedFunc<(i32, i32, i32, i32), ()>,
    reduce: ValuesFunc,
    /// The optional combiner: `reduce`'s signature, run on a map's own output.
    combine: Option<ValuesFunc>,
    limits: Limits,
}

impl Instance {
    /// `map` of one record of `file`; returns what it emitted.
    pub fn map(&mut self, file: &[u8], record: &[u8]) -> Result<Emitted, PluginError> {
        let at = self.put(&[file, record])?;
        let map = self.map.clone();
        self.call(|store| {
            map.call(
                store,
                (at[0], file.len() as i32, at[1], record.len() as i32),
            )
        })?;
        Ok(std::mem::take(&mut self.store.data_mut().out))
    }

    /// `reduce` of one key and all its values; returns what it emitted.
    pub fn reduce(&mut self, key: &[u8], values: &[&[u8]]) -> Result<Emitted, PluginError> {
        let reduce = self.reduce.clone();
        self.call_with_values(&reduce, key, values)
    }

    /// Whether the plugin has a combiner: a `combine` export (reduce's signature) that folds
    /// some of a key's values into fewer on the map side, such that reducing its output gives
    /// what reducing the values would (word count: partial sums). It cuts what is sorted,
    /// spilled and shuffled, as the MapReduce paper's combiner function does.
    pub fn can_combine(&self) -> bool {
        self.combine.is_some()
    }

    /// `combine` of some values of one key (see [`Instance::can_combine`]).
    pub fn combine(&mut self, key: &[u8], values: &[&[u8]]) -> Result<Emitted, PluginError> {
        let combine = self
            .combine
            .clone()
            .ok_or_else(|| PluginError::Invalid("it has no `combine`".into()))?;
        self.call_with_values(&combine, key, values)
    }

    fn call_with_values(
        &mut self,
        f: &ValuesFunc,
        key: &[u8],
        values: &[&[u8]],
    ) -> Result<Emitted, PluginError> {
        let mut encoded = Vec::with_capacity(values.iter().map(|v| v.len() + 4).sum());
        for value in values {
            encoded.extend_from_slice(&(value.len() as u32).to_le_bytes());
            encoded.extend_from_slice(value);
        }
        let at = self.put(&[key, &encoded])?;
        self.call(|store| {
            f.call(
                store,
                (
                    at[0],
                    key.len() as i32,
                    at[1],
                    encoded.len() as i32,
                    values.len() as i32,
                ),
            )
        })?;
        Ok(std::mem::take(&mut self.store.data_mut().out))
    }

    /// Copies `parts` into one buffer the plugin hands out; returns where each starts.
    fn put(&mut self, parts: &[&[u8]]) -> Result<Vec<i32>, PluginError> {
        let total: usize = parts.iter().map(|p| p.len()).sum();
        let len = i32::try_from(total).map_err(|_| PluginError::OutOfMemory {
            limit: self.limits.memory,
        })?;
        let buffer = self.buffer.clone();
        let base = self.call(|store| buffer.call(store, len))?;
        let mut at = Vec::with_capacity(parts.len());
        let mut offset = base as u32 as usize;
        for part in parts {
            self.memory
                .write(&mut self.store, offset, part)
                .map_err(|_| {
                    PluginError::Trapped("batch_buffer returned memory it does not have".into())
                })?;
            at.push(offset as i32);
            offset += part.len();
        }
        Ok(at)
    }

    /// A call with a full CPU budget, its failure said in plugin terms.
    fn call<T>(
        &mut self,
        f: impl FnOnce(&mut Store<Host>) -> wasmtime::Result<T>,
    ) -> Result<T, PluginError> {
        self.store.set_fuel(self.limits.fuel).expect("fuel is on");
        self.store.data_mut().denied = false;
        self.store.data_mut().out.clear();
        f(&mut self.store).map_err(|e| classify(e, &self.store, self.limits))
    }
}

/// A failed call's error, in plugin terms.
fn classify(error: wasmtime::Error, store: &Store<Host>, limits: Limits) -> PluginError {
    if store.data().denied {
        return PluginError::OutOfMemory {
            limit: limits.memory,
        };
    }
    match error.downcast_ref::<Trap>() {
        Some(Trap::OutOfFuel) => PluginError::OutOfFuel { fuel: limits.fuel },
        Some(trap) => PluginError::Trapped(trap.to_string()),
        None => PluginError::Trapped(format!("{error:#}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shipped(name: &str) -> Plugin {
        Plugin::load(&resolve(name).unwrap()).unwrap()
    }

    fn text(pairs: Vec<(Vec<u8>, Vec<u8>)>) -> Vec<(String, String)> {
        pairs
            .into_iter()
            .map(|(k, v)| (String::from_utf8(k).unwrap(), String::from_utf8(v).unwrap()))
            .collect()
    }

    #[test]
    fn word_count_maps_words_and_reduces_counts() {
        let mut wc = shipped("wordcount")
            .instance(Limits::default(), b"", 1)
            .unwrap();
        assert_eq!(
            text(wc.map(b"in.txt", b"The cat, the hat.").unwrap()),
            [("The", "1"), ("cat", "1"), ("the", "1"), ("hat", "1")]
                .map(|(k, v)| (k.to_string(), v.to_string()))
        );
        assert_eq!(
            text(wc.reduce(b"the", &[b"1", b"1", b"1"]).unwrap()),
            [("the".to_string(), "3".to_string())]
        );
        assert!(wc.map(b"in.txt", b"").unwrap().is_empty());
    }

    #[test]
    fn the_indexer_lists_the_distinct_files_sorted() {
        let mut ix = shipped("indexer")
            .instance(Limits::default(), b"", 1)
            .unwrap();
        assert_eq!(
            text(ix.map(b"/data/b.txt", b"to be").unwrap()),
            [("to", "b.txt"), ("be", "b.txt")].map(|(k, v)| (k.to_string(), v.to_string()))
        );
        assert_eq!(
            text(ix.reduce(b"be", &[b"b.txt", b"a.txt", b"b.txt"]).unwrap()),
            [("be".to_string(), "2 a.txt,b.txt".to_string())]
        );
    }

    #[test]
    fn grep_and_join_take_the_jobs_argument() {
        let mut grep = shipped("grep")
            .instance(Limits::default(), b"needle", 1)
            .unwrap();
        assert!(grep.map(b"f", b"hay stack").unwrap().is_empty());
        assert_eq!(
            text(grep.map(b"dir/f", b"a needle here").unwrap()),
            [("f".to_string(), "a needle here".to_string())]
        );
        let mut join = shipped("join")
            .instance(Limits::default(), b"users", 1)
            .unwrap();
        let left = join.map(b"users.csv", b"7,ann").unwrap();
        let right = join.map(b"orders.csv", b"7,book,12").unwrap();
        assert_eq!(left[0].0, b"7");
        let values: Vec<&[u8]> = vec![&left[0].1, &right[0].1];
        assert_eq!(
            text(join.reduce(b"7", &values).unwrap()),
            [("7".to_string(), "ann|book,12".to_string())]
        );
    }

    /// An endless loop, a memory hog and a trap each fail their call with an error saying so,
    /// and the instance (and the worker) go on.
    #[test]
    fn runaway_plugins_are_stopped_and_say_why() {
        let limits = Limits {
            memory: 2 << 20,
            fuel: 5_000_000,
        };
        let mut chaos = shipped("chaos").instance(limits, b"spin=1000", 7).unwrap();
        assert_eq!(
            chaos.map(b"f", b"a b").unwrap_err(),
            PluginError::OutOfFuel { fuel: 5_000_000 }
        );
        let mut trap = shipped("chaos").instance(limits, b"trap=1000", 7).unwrap();
        let err = trap.map(b"f", b"a b").unwrap_err();
        assert!(matches!(err, PluginError::Trapped(_)), "{err}");
        // A record bigger than the memory limit: the plugin's allocator cannot grow.
        let mut wc = shipped("wordcount").instance(limits, b"", 1).unwrap();
        let big = vec![b'a'; 3 << 20];
        assert_eq!(
            wc.map(b"f", &big).unwrap_err(),
            PluginError::OutOfMemory { limit: 2 << 20 }
        );
        assert_eq!(wc.map(b"f", b"still works").unwrap().len(), 2);
    }

    #[test]
    fn what_is_not_a_plugin_is_refused_with_a_reason() {
        let err = |bytes: &[u8]| match Plugin::load(bytes) {
            Err(PluginError::Invalid(why)) => why,
            other => panic!("{:?}", other.map(|_| ())),
        };
        assert!(!err(b"not wasm at all").is_empty());
        let no_reduce = r#"(module (memory (export "memory") 1)
            (func (export "batch_buffer") (param i32) (result i32) i32.const 0)
            (func (export "map") (param i32 i32 i32 i32)))"#;
        assert!(err(no_reduce.as_bytes()).contains("does not export `reduce`"));
        let sneaky = r#"(module (import "wasi_snapshot_preview1" "fd_write"
            (func (param i32 i32 i32 i32) (result i32))))"#;
        assert!(err(sneaky.as_bytes()).contains("may import only batch.emit"));
        let missing = resolve("no-such-plugin").unwrap_err().to_string();
        assert!(missing.contains("wordcount"), "{missing}");
    }
}
