//! One task's work, the same on a worker and in `batch run-local`.
//!
//! - A **map task** runs every record of its split through the plugin's `map`, sends each pair
//!   to its reduce partition, sorts each partition by key (stably: values keep their order) and
//!   writes it as a *run* file, `part-R`, in its output directory.
//! - A **reduce task** merges the runs of its partition from every map task (a k-way merge of
//!   sorted files), calls the plugin's `reduce` once per key with all its values, and writes
//!   `key<TAB>value` lines (just `key` when the value is empty).
//!
//! A run is a sequence of `[u32 LE key length][key][u32 LE value length][value]`.

use std::collections::BinaryHeap;
use std::io::{BufRead, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use crate::partition::{Ranges, by_hash};
use crate::plugin::{Emitted, Instance, PluginError};
use crate::split::{Split, read_records};

/// How map output is spread over reduce tasks.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Partitioner {
    /// FNV-1a of the key, modulo R.
    Hash,
    /// Sampled key ranges: the output read in partition order is sorted.
    Ranges(Ranges),
}

impl Partitioner {
    pub fn of(&self, key: &[u8], reduces: u32) -> u32 {
        match self {
            Partitioner::Hash => by_hash(key, reduces),
            Partitioner::Ranges(ranges) => ranges.of(key).min(reduces.saturating_sub(1)),
        }
    }
}

/// Why a task failed: where (the record, the file) and what.
#[derive(Debug)]
pub enum TaskError {
    /// The plugin failed on a record (map) or a key (reduce).
    Plugin {
        at: String,
        error: PluginError,
    },
    Io {
        at: String,
        error: std::io::Error,
    },
    /// Told to stop (the coordinator cancelled the attempt: its twin won, or its job failed).
    Cancelled,
}

impl std::fmt::Display for TaskError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TaskError::Plugin { at, error } => write!(f, "{at}: {error}"),
            TaskError::Io { at, error } => write!(f, "{at}: {error}"),
            TaskError::Cancelled => f.write_str("cancelled"),
        }
    }
}

impl std::error::Error for TaskError {}

fn io(at: impl std::fmt::Display) -> impl FnOnce(std::io::Error) -> TaskError {
    let at = at.to_string();
    move |error| TaskError::Io { at, error }
}

/// What a map task did.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct MapStats {
    pub records: u64,
    pub input_bytes: u64,
    pub pairs: u64,
    /// Bytes written to the partition runs.
    pub output_bytes: u64,
}

/// The run file of partition `reduce` in a map task's output directory.
pub fn run_path(dir: &Path, reduce: u32) -> PathBuf {
    dir.join(format!("part-{reduce}"))
}

/// Runs a map task over `split` into `dir` (created), one run per partition of `reduces`.
/// The records are read from `read_from` (the split's file, or a local copy of it); the plugin
/// is told the split's own path. Setting `stop` ends it early with [`TaskError::Cancelled`].
#[allow(clippy::too_many_arguments)]
pub fn run_map(
    plugin: &mut Instance,
    split: &Split,
    read_from: &Path,
    partitioner: &Partitioner,
    reduces: u32,
    dir: &Path,
    stop: &AtomicBool,
) -> Result<MapStats, TaskError> {
    let mut partitions: Vec<Partition> = (0..reduces)
        .map(|_| Partition::new(plugin.can_combine()))
        .collect();
    let mut stats = MapStats::default();
    let file = split.path.to_string_lossy().into_owned();
    let source = Split {
        path: read_from.to_path_buf(),
        ..split.clone()
    };
    let mut failure = None;
    read_records(&source, |offset, record| {
        if stop.load(Ordering::Relaxed) {
            failure = Some(TaskError::Cancelled);
            return Err(std::io::Error::other("cancelled"));
        }
        stats.records += 1;
        stats.input_bytes += record.len() as u64 + 1;
        let emitted = match plugin.map(file.as_bytes(), record) {
            Ok(pairs) => pairs,
            Err(error) => {
                failure = Some(TaskError::Plugin {
                    at: format!(
                        "record {} of {file} (byte {offset}): {:?}",
                        stats.records,
                        preview(record)
                    ),
                    error,
                });
                return Err(std::io::Error::other("the plugin failed"));
            }
        };
        for (key, value) in emitted {
            let r = partitioner.of(&key, reduces) as usize;
            stats.pairs += 1;
            if let Err(e) = partitions[r].add(plugin, key, value) {
                failure = Some(e);
                return Err(std::io::Error::other("the combiner failed"));
            }
        }
        Ok(())
    })
    .map_err(|e| failure.take().unwrap_or_else(|| io(&file)(e)))?;
    std::fs::create_dir_all(dir).map_err(io(dir.display()))?;
    for (r, partition) in partitions.into_iter().enumerate() {
        let pairs = partition.into_sorted(plugin)?;
        let path = run_path(dir, r as u32);
        let mut out = BufWriter::new(std::fs::File::create(&path).map_err(io(path.display()))?);
        for (key, value) in &pairs {
            write_pair(&mut out, key, value).map_err(io(path.display()))?;
            stats.output_bytes += 8 + key.len() as u64 + value.len() as u64;
        }
        out.flush().map_err(io(path.display()))?;
    }
    Ok(stats)
}

/// Values of one key a combiner folds at once.
const COMBINE_EVERY: usize = 64;

/// One partition of a map task's output, as it is collected: every pair in emission order, or,
/// when the plugin has a combiner, the values of each key, folded whenever
/// [`COMBINE_EVERY`] of them pile up.
enum Partition {
    Plain(Vec<(Vec<u8>, Vec<u8>)>),
    /// (FxHash: keys are the plugin's, hashed once per pair; no need for DoS resistance.)
    Combining(rustc_hash::FxHashMap<Vec<u8>, Vec<Vec<u8>>>),
}

impl Partition {
    fn new(combining: bool) -> Self {
        if combining {
            Partition::Combining(rustc_hash::FxHashMap::default())
        } else {
            Partition::Plain(Vec::new())
        }
    }

    fn add(
        &mut self,
        plugin: &mut Instance,
        key: Vec<u8>,
        value: Vec<u8>,
    ) -> Result<(), TaskError> {
        match self {
            Partition::Plain(pairs) => pairs.push((key, value)),
            Partition::Combining(keys) => match keys.get_mut(&key) {
                Some(values) => {
                    values.push(value);
                    if values.len() >= COMBINE_EVERY {
                        *values = combine(plugin, &key, values)?;
                    }
                }
                None => {
                    keys.insert(key, vec![value]);
                }
            },
        }
        Ok(())
    }

    /// The pairs, sorted by key (stably: a key's values keep their order), combined last.
    fn into_sorted(self, plugin: &mut Instance) -> Result<Emitted, TaskError> {
        match self {
            Partition::Plain(mut pairs) => {
                pairs.sort_by(|a, b| a.0.cmp(&b.0));
                Ok(pairs)
            }
            Partition::Combining(keys) => {
                let mut keys: Vec<(Vec<u8>, Vec<Vec<u8>>)> = keys.into_iter().collect();
                keys.sort_by(|a, b| a.0.cmp(&b.0));
                let mut pairs = Vec::with_capacity(keys.len());
                for (key, values) in keys {
                    let values = if values.len() > 1 {
                        combine(plugin, &key, &values)?
                    } else {
                        values
                    };
                    pairs.extend(values.into_iter().map(|v| (key.clone(), v)));
                }
                Ok(pairs)
            }
        }
    }
}

/// Folds `values` of `key` with the plugin's combiner, which must emit only `key`.
fn combine(
    plugin: &mut Instance,
    key: &[u8],
    values: &[Vec<u8>],
) -> Result<Vec<Vec<u8>>, TaskError> {
    let borrowed: Vec<&[u8]> = values.iter().map(Vec::as_slice).collect();
    let at = || format!("combining key {:?} ({} values)", preview(key), values.len());
    let emitted = plugin
        .combine(key, &borrowed)
        .map_err(|error| TaskError::Plugin { at: at(), error })?;
    emitted
        .into_iter()
        .map(|(k, v)| {
            if k == key {
                Ok(v)
            } else {
                Err(TaskError::Plugin {
                    at: at(),
                    error: crate::plugin::PluginError::Trapped(format!(
                        "combine emitted key {:?}: a combiner may emit only the key it was given",
                        preview(&k)
                    )),
                })
            }
        })
        .collect()
}

/// What a reduce task did.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ReduceStats {
    pub keys: u64,
    pub values: u64,
    pub output_bytes: u64,
}

/// Runs a reduce task: merges `runs` (each sorted by key), reduces each key, writes lines to
/// `out`. Each run comes with the name errors call it by. Setting `stop` ends it early with
/// [`TaskError::Cancelled`].
pub fn run_reduce(
    plugin: &mut Instance,
    runs: Vec<(String, Box<dyn Read>)>,
    out: &mut dyn Write,
    stop: &AtomicBool,
) -> Result<ReduceStats, TaskError> {
    let mut readers: Vec<Named> = runs
        .into_iter()
        .map(|(name, r)| (name, Run(BufReader::with_capacity(256 * 1024, r))))
        .collect();
    // A min-heap of each run's next pair, by key, then run (so values keep map order).
    let mut heap = BinaryHeap::new();
    for (i, (name, run)) in readers.iter_mut().enumerate() {
        if let Some((key, value)) = run.next_pair().map_err(io(&*name))? {
            heap.push(std::cmp::Reverse((key, i, value)));
        }
    }
    let mut stats = ReduceStats::default();
    let mut out = BufWriter::new(out);
    while let Some(std::cmp::Reverse((key, i, value))) = heap.pop() {
        if stop.load(Ordering::Relaxed) {
            return Err(TaskError::Cancelled);
        }
        let mut values = vec![value];
        refill(&mut readers, &mut heap, i)?;
        while heap
            .peek()
            .is_some_and(|std::cmp::Reverse((next, ..))| *next == key)
        {
            let std::cmp::Reverse((_, j, value)) = heap.pop().expect("peeked");
            values.push(value);
            refill(&mut readers, &mut heap, j)?;
        }
        stats.keys += 1;
        stats.values += values.len() as u64;
        let borrowed: Vec<&[u8]> = values.iter().map(Vec::as_slice).collect();
        let pairs = plugin
            .reduce(&key, &borrowed)
            .map_err(|error| TaskError::Plugin {
                at: format!("key {:?} ({} values)", preview(&key), values.len()),
                error,
            })?;
        for (k, v) in pairs {
            out.write_all(&k).map_err(io("the output"))?;
            if !v.is_empty() {
                out.write_all(b"\t").map_err(io("the output"))?;
                out.write_all(&v).map_err(io("the output"))?;
            }
            out.write_all(b"\n").map_err(io("the output"))?;
            stats.output_bytes += (k.len() + v.len() + 2) as u64;
        }
    }
    out.flush().map_err(io("the output"))?;
    Ok(stats)
}

/// A run with the name errors call it by.
type Named = (String, Run<BufReader<Box<dyn Read>>>);

type Heap = BinaryHeap<std::cmp::Reverse<(Vec<u8>, usize, Vec<u8>)>>;

fn refill(readers: &mut [Named], heap: &mut Heap, i: usize) -> Result<(), TaskError> {
    let (name, run) = &mut readers[i];
    if let Some((key, value)) = run.next_pair().map_err(io(&*name))? {
        heap.push(std::cmp::Reverse((key, i, value)));
    }
    Ok(())
}

fn write_pair(out: &mut impl Write, key: &[u8], value: &[u8]) -> std::io::Result<()> {
    out.write_all(&(key.len() as u32).to_le_bytes())?;
    out.write_all(key)?;
    out.write_all(&(value.len() as u32).to_le_bytes())?;
    out.write_all(value)
}

/// A run being read.
struct Run<R>(R);

impl<R: BufRead> Run<R> {
    fn next_pair(&mut self) -> std::io::Result<Option<(Vec<u8>, Vec<u8>)>> {
        if self.0.fill_buf()?.is_empty() {
            return Ok(None);
        }
        let key = self.field()?;
        let value = self.field()?;
        Ok(Some((key, value)))
    }

    fn field(&mut self) -> std::io::Result<Vec<u8>> {
        let mut len = [0u8; 4];
        self.0.read_exact(&mut len).map_err(truncated)?;
        let mut bytes = vec![0; u32::from_le_bytes(len) as usize];
        self.0.read_exact(&mut bytes).map_err(truncated)?;
        Ok(bytes)
    }
}

fn truncated(e: std::io::Error) -> std::io::Error {
    if e.kind() == std::io::ErrorKind::UnexpectedEof {
        std::io::Error::new(e.kind(), "a map output run ends in the middle of a pair")
    } else {
        e
    }
}

/// The start of a record or key, for an error message.
fn preview(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(&bytes[..bytes.len().min(60)]).into_owned();
    if bytes.len() > 60 { text + "…" } else { text }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugin::{Limits, Plugin, resolve};

    fn instance(name: &str) -> Instance {
        Plugin::load(&resolve(name).unwrap())
            .unwrap()
            .instance(Limits::default(), b"", 1)
            .unwrap()
    }

    #[test]
    fn map_runs_are_sorted_by_partition_and_reduce_merges_them() {
        let dir = tempfile::tempdir().unwrap();
        let input = dir.path().join("in.txt");
        std::fs::write(&input, "b a c\na b\n").unwrap();
        let split = Split {
            path: input.clone(),
            start: 0,
            end: 10,
        };
        let mut wc = instance("wordcount");
        let stats = run_map(
            &mut wc,
            &split,
            &split.path,
            &Partitioner::Hash,
            1,
            &dir.path().join("m0"),
            &AtomicBool::new(false),
        )
        .unwrap();
        assert_eq!((stats.records, stats.pairs), (2, 5));
        let second = dir.path().join("in2.txt");
        std::fs::write(&second, "c c\n").unwrap();
        let split2 = Split {
            path: second,
            start: 0,
            end: 4,
        };
        run_map(
            &mut wc,
            &split2,
            &split2.path,
            &Partitioner::Hash,
            1,
            &dir.path().join("m1"),
            &AtomicBool::new(false),
        )
        .unwrap();
        let runs: Vec<(String, Box<dyn Read>)> = ["m0", "m1"]
            .iter()
            .map(|m| {
                let path = run_path(&dir.path().join(m), 0);
                (
                    m.to_string(),
                    Box::new(std::fs::File::open(path).unwrap()) as Box<dyn Read>,
                )
            })
            .collect();
        let mut out = Vec::new();
        let stats = run_reduce(&mut wc, runs, &mut out, &AtomicBool::new(false)).unwrap();
        assert_eq!(String::from_utf8(out).unwrap(), "a\t2\nb\t2\nc\t3\n");
        // Word count combines on the map side: each map wrote each word once, with its count.
        assert_eq!((stats.keys, stats.values), (3, 4));
    }

    #[test]
    fn a_plugin_failure_names_the_record_and_a_torn_run_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let input = dir.path().join("in.txt");
        std::fs::write(&input, "fine\nthis one\n").unwrap();
        let mut chaos = Plugin::load(&resolve("chaos").unwrap())
            .unwrap()
            .instance(Limits::default(), b"trap=1000", 3)
            .unwrap();
        let split = Split {
            path: input.clone(),
            start: 0,
            end: 14,
        };
        let never = AtomicBool::new(false);
        let err = run_map(
            &mut chaos,
            &split,
            &input,
            &Partitioner::Hash,
            2,
            dir.path(),
            &never,
        )
        .unwrap_err()
        .to_string();
        assert!(err.starts_with("record 1 of "), "{err}");
        assert!(
            err.contains("(byte 0): \"fine\": the plugin trapped"),
            "{err}"
        );

        let mut torn = Vec::new();
        write_pair(&mut torn, b"key", b"value").unwrap();
        torn.truncate(torn.len() - 2);
        let mut wc = instance("wordcount");
        let err = run_reduce(
            &mut wc,
            vec![(
                "map 3".into(),
                Box::new(std::io::Cursor::new(torn)) as Box<dyn Read>,
            )],
            &mut Vec::new(),
            &never,
        )
        .unwrap_err()
        .to_string();
        assert_eq!(err, "map 3: a map output run ends in the middle of a pair");

        // A stopped task ends at its next record.
        let stopped = AtomicBool::new(true);
        let err = run_map(
            &mut wc,
            &split,
            &input,
            &Partitioner::Hash,
            2,
            dir.path(),
            &stopped,
        );
        assert!(matches!(err, Err(TaskError::Cancelled)), "{err:?}");
    }
}
