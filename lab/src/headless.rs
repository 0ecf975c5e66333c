//! `lab scenario FILE`: run a scenario with nobody watching, print a summary (or the report
//! as JSON), and exit 0 only if every check passed (1 if one failed, 2 for bad input, 3 if a
//! checker could not decide within `--check-budget` and none failed). A
//! scenario with `variants:` runs once per variant, and the runs are printed side by side.
//! `--repeat N` runs each N times, under consecutive seeds, and prints a table per variant
//! ([`crate::engine::repeat`]).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;

use crate::engine::runner::Outcome;
use crate::engine::scenario::Variant;
use crate::engine::{runner, scenario};

/// `lab scenario`'s arguments.
#[derive(Debug, Clone)]
pub struct ScenarioArgs {
    pub file: PathBuf,
    pub seed: Option<u64>,
    pub runs_dir: PathBuf,
    pub json: bool,
    /// Service flags added to every node after the scenario's `node_flags`.
    pub node_flags: Vec<String>,
    /// Draw the console into this asciicast, at this size.
    pub record: Option<(PathBuf, (u16, u16))>,
    /// Run only this one of the scenario's variants.
    pub variant: Option<String>,
    /// Run each variant this many times, seed after seed.
    pub repeat: Option<u32>,
    /// What each checker may spend before it answers "unknown".
    pub check_budget: crate::engine::check::Budget,
}

pub fn run(args: ScenarioArgs) -> ExitCode {
    // Validate the whole file before starting anything.
    let validated = match scenario::load(&args.file) {
        Ok(validated) => scenario::Validated {
            check_budget: args.check_budget,
            ..validated
        },
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    if args.repeat.is_some() && args.record.is_some() {
        eprintln!("error: --repeat and --record: a recording is of one run");
        return ExitCode::from(2);
    }
    let variants = match pick_variants(&validated.scenario.variants, args.variant.as_deref()) {
        Ok(mut variants) if args.record.is_some() && variants.len() > 1 => {
            // A recording is one run: the first variant, unless --variant says another.
            variants.truncate(1);
            if let Some(Some(first)) = variants.first() {
                eprintln!(
                    "recording variant {} (the first; --variant picks one of {})",
                    first.name,
                    names(&validated.scenario.variants)
                );
            }
            variants
        }
        Ok(variants) => variants,
        Err(e) => {
            eprintln!("error: {}: {e}", args.file.display());
            return ExitCode::from(2);
        }
    };
    if let Some(times) = args.repeat {
        return repeat(&args, &validated, &variants, times);
    }
    let outcome = std::sync::Mutex::new(Outcome::Pass);
    let exit = distlab_runtime::node::run_cli("lab", "warn", || async {
        let mut reports = Vec::new();
        for variant in &variants {
            let validated = validated.for_variant(variant.as_ref());
            let cluster = validated.variant_cluster(variant.as_ref(), args.seed, &args.node_flags);
            let report = match &args.record {
                None => {
                    let exe = std::env::current_exe().context("finding the lab executable")?;
                    runner::run(&validated, &args.file, cluster, &args.runs_dir, exe).await?
                }
                Some((cast, size)) => {
                    crate::console::record_scenario(
                        &validated,
                        &args.file,
                        cluster,
                        &args.runs_dir,
                        cast,
                        *size,
                    )
                    .await?
                }
            };
            if !args.json {
                if let Some(v) = &variant {
                    println!("variant {}:", v.name);
                }
                print!("{}", runner::summary(&report));
            }
            reports.push((variant.as_ref().map(|v| v.name.clone()), report));
        }
        if args.json {
            match &reports[..] {
                [(None, report)] => println!("{}", serde_json::to_string_pretty(report)?),
                _ => {
                    let runs: Vec<serde_json::Value> = reports
                        .iter()
                        .map(
                            |(name, report)| serde_json::json!({"variant": name, "report": report}),
                        )
                        .collect();
                    println!("{}", serde_json::to_string_pretty(&runs)?);
                }
            }
        } else if reports.len() > 1 {
            let runs: Vec<(&str, &runner::Report)> = reports
                .iter()
                .map(|(name, report)| (name.as_deref().unwrap_or_default(), report))
                .collect();
            print!("\n{}", runner::side_by_side(&runs));
        }
        let failed: usize = reports
            .iter()
            .map(|(_, r)| r.checks.iter().filter(|c| !c.met() && !c.unknown()).count())
            .sum();
        anyhow::ensure!(
            failed == 0,
            "{failed} check(s) did not reach the verdict the scenario expects"
        );
        *outcome.lock().expect("never poisoned") =
            Outcome::worst(reports.iter().map(|(_, r)| r.outcome()));
        Ok(())
    });
    unknown_exit(exit, &outcome)
}

/// The exit code: `run_cli`'s (0, 1 for a failure, 2 for bad input), or 3 when it succeeded
/// and a checker could not decide.
fn unknown_exit(exit: ExitCode, outcome: &std::sync::Mutex<Outcome>) -> ExitCode {
    let outcome = *outcome.lock().expect("never poisoned");
    if exit == ExitCode::SUCCESS && outcome == Outcome::Unknown {
        eprintln!("unknown: a checker could not decide within --check-budget (exit 3)");
        return outcome.exit_code();
    }
    exit
}

/// `--repeat N`: each variant under N consecutive seeds, a line per run as it ends, then a
/// table per variant; fails if any run did.
fn repeat(
    args: &ScenarioArgs,
    validated: &scenario::Validated,
    variants: &[Option<Variant>],
    times: u32,
) -> ExitCode {
    let first = args.seed.or(validated.scenario.seed).unwrap_or(1);
    let outcome = std::sync::Mutex::new(Outcome::Pass);
    let exit = distlab_runtime::node::run_cli("lab", "warn", || async {
        let exe = std::env::current_exe().context("finding the lab executable")?;
        let mut failed = 0;
        let mut tables = Vec::new();
        let mut all = Vec::new();
        for variant in variants {
            let validated = validated.for_variant(variant.as_ref());
            let mut reports = Vec::new();
            for seed in (first..).take(times as usize) {
                let cluster =
                    validated.variant_cluster(variant.as_ref(), Some(seed), &args.node_flags);
                let report =
                    runner::run(&validated, &args.file, cluster, &args.runs_dir, exe.clone())
                        .await?;
                if !args.json {
                    eprintln!(
                        "{}seed {seed}: {} ({})",
                        variant
                            .as_ref()
                            .map_or(String::new(), |v| format!("variant {}, ", v.name)),
                        report.outcome().word(),
                        report.run_dir.display()
                    );
                }
                failed += usize::from(report.outcome() == Outcome::Fail);
                reports.push(report);
            }
            let mut again = format!("lab scenario {} --seed {{seed}}", args.file.display());
            if let Some(v) = variant {
                again += &format!(" --variant {}", v.name);
            }
            let name = match variant {
                Some(v) => format!("{} (variant {})", validated.scenario.name, v.name),
                None => validated.scenario.name.clone(),
            };
            let refs: Vec<&runner::Report> = reports.iter().collect();
            tables.push(crate::engine::repeat::table(&name, &refs, &again));
            all.push((variant.as_ref().map(|v| v.name.clone()), reports));
        }
        if args.json {
            let runs: Vec<serde_json::Value> = all
                .iter()
                .flat_map(|(name, reports)| {
                    reports
                        .iter()
                        .map(move |r| serde_json::json!({"variant": name, "report": r}))
                })
                .collect();
            println!("{}", serde_json::to_string_pretty(&runs)?);
        } else {
            println!("{}", tables.join("\n"));
        }
        anyhow::ensure!(failed == 0, "{failed} run(s) failed");
        *outcome.lock().expect("never poisoned") = Outcome::worst(
            all.iter()
                .flat_map(|(_, reports)| reports.iter().map(runner::Report::outcome)),
        );
        Ok(())
    });
    unknown_exit(exit, &outcome)
}

/// The variants to run: the one named, or every one (`[None]`: a scenario without any).
fn pick_variants(
    variants: &[Variant],
    chosen: Option<&str>,
) -> Result<Vec<Option<Variant>>, String> {
    match chosen {
        Some(name) => variants
            .iter()
            .find(|v| v.name == name)
            .map(|v| vec![Some(v.clone())])
            .ok_or_else(|| {
                if variants.is_empty() {
                    format!("--variant {name}: the scenario has no variants")
                } else {
                    format!(
                        "--variant {name}: no such variant; its variants: {}",
                        names(variants)
                    )
                }
            }),
        None if variants.is_empty() => Ok(vec![None]),
        None => Ok(variants.iter().cloned().map(Some).collect()),
    }
}

fn names(variants: &[Variant]) -> String {
    variants
        .iter()
        .map(|v| v.name.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Where the shipped scenarios are: `./scenarios` when run from the repository, else the
/// copy beside the sources this binary was built from.
pub fn scenarios_dir() -> PathBuf {
    let here = PathBuf::from("scenarios");
    if here.is_dir() {
        return here;
    }
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scenarios")
}

/// The scenario files in `dir`, sorted, each loaded (or why it could not be).
pub fn scenarios_in(dir: &Path) -> Vec<(PathBuf, Result<scenario::Validated, String>)> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
                .collect()
        })
        .unwrap_or_default();
    files.sort();
    files
        .into_iter()
        .map(|file| {
            let loaded = scenario::load(&file);
            (file, loaded)
        })
        .collect()
}

/// The shipped scenarios, a line each, under a heading (for `lab list`).
pub fn list_scenarios() -> String {
    let dir = scenarios_dir();
    let mut out = format!(
        "\nshipped scenarios, in {}/ (`lab scenario FILE` runs one headless, `lab run PROJ --scenario FILE` in the console):\n",
        dir.display()
    );
    for (file, loaded) in scenarios_in(&dir) {
        out += &match loaded {
            Ok(v) => format!("  {:<32} {}\n", v.scenario.name, v.scenario.description),
            Err(e) => format!("  {:<32} (invalid: {e})\n", file.display()),
        };
    }
    out
}
