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
