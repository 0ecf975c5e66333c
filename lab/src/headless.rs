//! `lab scenario FILE`: run a scenario with nobody watching, print a summary (or the report
//! as JSON), and exit 0 only if every check passed (1 if one failed, 2 for bad input).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;

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
}

pub fn run(args: ScenarioArgs) -> ExitCode {
    // Validate the whole file before starting anything.
    let validated = match scenario::load(&args.file) {
        Ok(validated) => validated,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    distlab_runtime::node::run_cli("lab", "warn", || async move {
        let report = match &args.record {
            None => {
                let exe = std::env::current_exe().context("finding the lab executable")?;
                let cluster = validated.cluster(args.seed, &args.node_flags);
                runner::run(&validated, &args.file, cluster, &args.runs_dir, exe).await?
            }
            Some((cast, size)) => {
                crate::console::record_scenario(
                    &validated,
                    &args.file,
                    validated.cluster(args.seed, &args.node_flags),
                    &args.runs_dir,
                    cast,
                    *size,
                )
                .await?
            }
        };
        if args.json {
            println!("{}", serde_json::to_string_pretty(&report)?);
        } else {
            print!("{}", runner::summary(&report));
        }
        let failed = report.checks.iter().filter(|c| !c.met()).count();
        anyhow::ensure!(
            failed == 0,
            "{failed} check(s) did not reach the verdict the scenario expects"
        );
        Ok(())
    })
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

/// Prints the shipped scenarios with their descriptions (for `lab list`).
pub fn list_scenarios() {
    let dir = scenarios_dir();
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return;
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    println!("\nscenarios ({}):", dir.display());
    for file in files {
        match scenario::load(&file) {
            Ok(v) => println!("  {:<32} {}", v.scenario.name, v.scenario.description),
            Err(e) => println!("  {:<32} (invalid: {e})", file.display()),
        }
    }
}
