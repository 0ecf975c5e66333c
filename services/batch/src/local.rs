//! `batch run-local`: a whole job in one process, one task after another, with the same map
//! and reduce code the workers run. It is the reference every distributed run is checked
//! against (equal output after sorting), and the "sequential" line of the benchmark.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;

use crate::partition::Ranges;
use crate::plugin::{Limits, Plugin};
use crate::split::{Split, input_files, plan, read_records};
use crate::task::{MapStats, Partitioner, ReduceStats, run_map, run_path, run_reduce};

/// A job, as `batch submit` and `batch run-local` take it.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct JobDef {
    /// A shipped plugin's name or a `.wasm`/`.wat` file.
    pub plugin: String,
    /// The plugin's `init` argument (grep's pattern, join's left-side prefix).
    #[serde(default)]
    pub arg: String,
    /// A file, a directory or a glob.
    pub input: PathBuf,
    pub reduces: u32,
    /// Bytes per map task.
    pub split_bytes: u64,
    /// Sampled key ranges instead of hashing: reduce outputs in order are sorted (`sort`).
    #[serde(default)]
    pub range_partition: bool,
}

/// What a local run did.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct LocalStats {
    pub maps: Vec<MapStats>,
    pub reduces: Vec<ReduceStats>,
}

/// The name of reduce task `r`'s output file.
pub fn output_name(r: u32) -> String {
    format!("part-r-{r:05}")
}

/// Plans a job's map tasks and its partitioner (sampling the input through the plugin's map
/// when the job asks for ranges).
pub fn prepare(job: &JobDef, plugin: &Plugin) -> Result<(Vec<Split>, Partitioner), String> {
    if job.reduces == 0 {
        return Err("a job needs at least one reduce task (R >= 1)".into());
    }
    let files = input_files(&job.input).map_err(|e| format!("input: {e}"))?;
    let splits = plan(&files, job.split_bytes.max(1));
    if splits.is_empty() {
        return Err(format!(
            "input {}: every file is empty",
            job.input.display()
        ));
    }
    let partitioner = if job.range_partition {
        Partitioner::Ranges(sample_ranges(job, plugin, &splits)?)
    } else {
        Partitioner::Hash
    };
    Ok((splits, partitioner))
}

/// Split points for range partitioning: the keys the plugin's map makes of up to 100 records
/// from the start of each split (a deterministic sample, so every run of a job agrees).
fn sample_ranges(job: &JobDef, plugin: &Plugin, splits: &[Split]) -> Result<Ranges, String> {
    let mut instance = plugin
        .instance(Limits::default(), job.arg.as_bytes(), 1)
        .map_err(|e| format!("sampling the input: {e}"))?;
    let mut sample = Vec::new();
    for split in splits {
        let file = split.path.to_string_lossy().into_owned();
        let mut taken = 0;
        let mut failed = None;
        let _ = read_records(split, |_, record| {
            if taken == 100 {
                return Err(std::io::Error::other("enough"));
            }
            taken += 1;
            match instance.map(file.as_bytes(), record) {
                Ok(pairs) => {
                    sample.extend(pairs.into_iter().map(|(k, _)| k));
                    Ok(())
                }
                Err(e) => {
                    failed = Some(format!("sampling {file}: {e}"));
                    Err(std::io::Error::other("failed"))
                }
            }
        });
        if let Some(e) = failed {
            return Err(e);
        }
    }
    Ok(Ranges::from_sample(sample, job.reduces))
}

/// Runs `job` sequentially: map outputs under `work`, reduce outputs `part-r-NNNNN` in `out`.
pub fn run_local(job: &JobDef, work: &Path, out: &Path) -> Result<LocalStats, String> {
    let bytes = crate::plugin::resolve(&job.plugin).map_err(|e| e.to_string())?;
    let plugin = Plugin::load(&bytes).map_err(|e| format!("plugin {}: {e}", job.plugin))?;
    let (splits, partitioner) = prepare(job, &plugin)?;
    let mut instance = plugin
        .instance(Limits::default(), job.arg.as_bytes(), 1)
        .map_err(|e| format!("plugin {}: {e}", job.plugin))?;
    let mut stats = LocalStats::default();
    let never = AtomicBool::new(false);
    for (i, split) in splits.iter().enumerate() {
        let dir = work.join(format!("map-{i}"));
        stats.maps.push(
            run_map(
                &mut instance,
                split,
                &split.path,
                &partitioner,
                job.reduces,
                &dir,
                &never,
            )
            .map_err(|e| format!("map task {i}: {e}"))?,
        );
    }
    std::fs::create_dir_all(out).map_err(|e| format!("{}: {e}", out.display()))?;
    for r in 0..job.reduces {
        let runs = (0..splits.len())
            .map(|i| {
                let path = run_path(&work.join(format!("map-{i}")), r);
                let file =
                    std::fs::File::open(&path).map_err(|e| format!("{}: {e}", path.display()))?;
                Ok((format!("map task {i}"), Box::new(file) as Box<dyn Read>))
            })
            .collect::<Result<Vec<_>, String>>()?;
        let path = out.join(output_name(r));
        let mut file =
            std::fs::File::create(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        stats.reduces.push(
            run_reduce(&mut instance, runs, &mut file, &never)
                .map_err(|e| format!("reduce task {r}: {e}"))?,
        );
    }
    Ok(stats)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn corpus(dir: &Path) -> PathBuf {
        let input = dir.join("input");
        std::fs::create_dir_all(&input).unwrap();
        let words = ["apple", "Banana", "cherry", "date", "elder", "fig", "grape"];
        for f in 0..3 {
            let mut text = String::new();
            for line in 0..200 {
                let n = (line * 7 + f * 13) % 11 + 1;
                let row: Vec<&str> = (0..n)
                    .map(|w| words[(line * w + f) % words.len()])
                    .collect();
                text += &row.join(" ");
                text += if line % 5 == 0 { ", end.\n" } else { "\n" };
            }
            std::fs::write(input.join(format!("doc{f}.txt")), text).unwrap();
        }
        input
    }

    fn lines(out: &Path, reduces: u32) -> Vec<String> {
        (0..reduces)
            .flat_map(|r| {
                std::fs::read_to_string(out.join(output_name(r)))
                    .unwrap()
                    .lines()
                    .map(String::from)
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    /// The word count equals one computed directly, whatever the split size and R.
    #[test]
    fn word_count_matches_a_direct_count_for_any_split_and_r() {
        let dir = tempfile::tempdir().unwrap();
        let input = corpus(dir.path());
        let mut expected: BTreeMap<String, u64> = BTreeMap::new();
        for entry in std::fs::read_dir(&input).unwrap() {
            let text = std::fs::read_to_string(entry.unwrap().path()).unwrap();
            for word in text
                .split(|c: char| !c.is_ascii_alphabetic())
                .filter(|w| !w.is_empty())
            {
                *expected.entry(word.to_string()).or_default() += 1;
            }
        }
        let expected: Vec<String> = expected.iter().map(|(w, n)| format!("{w}\t{n}")).collect();
        for (split_bytes, reduces) in [(100_000, 1), (700, 3), (97, 5)] {
            let out = dir.path().join(format!("out-{split_bytes}-{reduces}"));
            let job = JobDef {
                plugin: "wordcount".into(),
                arg: String::new(),
                input: input.clone(),
                reduces,
                split_bytes,
                range_partition: false,
            };
            let stats =
                run_local(&job, &dir.path().join(format!("work-{split_bytes}")), &out).unwrap();
            let mut got = lines(&out, reduces);
            got.sort();
            assert_eq!(got, expected, "split {split_bytes}, R {reduces}");
            assert_eq!(stats.reduces.len(), reduces as usize);
        }
    }

    /// With range partitioning the reduce outputs, read in order, are one sorted file.
    #[test]
    fn sort_with_ranges_is_globally_sorted() {
        let dir = tempfile::tempdir().unwrap();
        let input = dir.path().join("numbers.txt");
        let text: String = (0..2000u64)
            .map(|i| format!("{:06}\n", i.wrapping_mul(7919) % 100_003))
            .collect();
        std::fs::write(&input, &text).unwrap();
        let job = JobDef {
            plugin: "sort".into(),
            arg: String::new(),
            input,
            reduces: 4,
            split_bytes: 3000,
            range_partition: true,
        };
        let out = dir.path().join("out");
        run_local(&job, &dir.path().join("work"), &out).unwrap();
        let got = lines(&out, 4);
        let mut expected: Vec<String> = text.lines().map(String::from).collect();
        expected.sort();
        assert_eq!(got, expected);
        let sizes: Vec<usize> = (0..4)
            .map(|r| {
                std::fs::read_to_string(out.join(output_name(r)))
                    .unwrap()
                    .lines()
                    .count()
            })
            .collect();
        assert!(
            sizes.iter().all(|n| *n > 200),
            "balanced by the sample: {sizes:?}"
        );
    }

    #[test]
    fn bad_jobs_say_what_is_wrong() {
        let dir = tempfile::tempdir().unwrap();
        let job = |plugin: &str, input: PathBuf, reduces| JobDef {
            plugin: plugin.into(),
            arg: String::new(),
            input,
            reduces,
            split_bytes: 1000,
            range_partition: false,
        };
        let input = corpus(dir.path());
        let run =
            |j: JobDef| run_local(&j, &dir.path().join("w"), &dir.path().join("o")).unwrap_err();
        assert!(run(job("wordcount", input.clone(), 0)).contains("R >= 1"));
        assert!(run(job("wordcount", dir.path().join("missing"), 1)).contains("missing"));
        assert!(run(job("nope", input.clone(), 1)).contains("neither a shipped plugin"));
        let not_wasm = dir.path().join("bad.wasm");
        std::fs::write(&not_wasm, "garbage").unwrap();
        assert!(run(job(not_wasm.to_str().unwrap(), input, 1)).contains("not a usable plugin"),);
    }
}
