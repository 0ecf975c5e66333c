//! `lab scenario FILE`: run a scenario with nobody watching, print a summary (or the report
//! as JSON), and exit 0 only if every check passed (1 if one failed, 2 for bad input).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;

use crate::engine::{runner, scenario};

pub fn run(file: PathBuf, seed: Option<u64>, runs_dir: PathBuf, json: bool) -> ExitCode {
    // Validate the whole file before starting anything.
    let validated = match scenario::load(&file) {
        Ok(validated) => validated,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    distlab_runtime::node::run_cli("lab", "warn", || async move {
        let exe = std::env::current_exe().context("finding the lab executable")?;
        let report = runner::run(&validated, &file, seed, &runs_dir, exe).await?;
        if json {
            println!("{}", serde_json::to_string_pretty(&report)?);
        } else {
            print!("{}", runner::summary(&report));
        }
        let failed = report.checks.iter().filter(|c| !c.valid).count();
        anyhow::ensure!(failed == 0, "{failed} check(s) failed");
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
            Ok(v) => println!("  {:<28} {}", v.scenario.name, v.scenario.description),
            Err(e) => println!("  {:<28} (invalid: {e})", file.display()),
        }
    }
}
