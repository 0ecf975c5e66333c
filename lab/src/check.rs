//! `lab check RUN`: run the checkers again on a saved run, print each verdict and its evidence.
//!
//! By default a run directory is checked the way its scenario asked (`scenario.yaml`'s
//! `check:` list, over `history.jsonl` and `events.jsonl`), so the verdicts match the run's
//! own, and judged against what the scenario expects (`expect:`). `--checker` picks checkers
//! instead; a bare history file gets `linearizable`. A checker that cannot decide within
//! `--check-budget` says "unknown", and the exit code (3) says so too.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use crate::engine::check::Budget;
use crate::engine::runner::Outcome;
use crate::engine::scenario::CheckSpec;
use crate::engine::{events, history, runner, scenario};

/// Exit 0 if every check passed, 1 if one failed, 3 if one could not decide (and none
/// failed), 2 if the run cannot be read.
pub fn run(run: PathBuf, chosen: Vec<CheckSpec>, budget: &Budget) -> ExitCode {
    match check(&run, chosen, budget) {
        Ok(outcome) => outcome.exit_code(),
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn check(run: &Path, chosen: Vec<CheckSpec>, budget: &Budget) -> anyhow::Result<Outcome> {
    let (dir, history_file) = if run.is_dir() {
        (Some(run), run.join("history.jsonl"))
    } else {
        (run.parent(), run.to_path_buf())
    };
    let history = history::load(&history_file)?;
    let saved = |name: &str| dir.map(|d| d.join(name)).filter(|p| p.exists());
    let scenario = match saved("scenario.yaml") {
        Some(file) if run.is_dir() => {
            Some(scenario::load(&file).map_err(anyhow::Error::msg)?.scenario)
        }
        _ => None,
    };
    let checks = match (chosen.is_empty(), &scenario) {
        (false, _) => chosen,
        (true, Some(scenario)) => scenario.check.clone(),
        (true, None) => vec![CheckSpec::Linearizable],
    };
    let expect = scenario.map(|s| s.expect).unwrap_or_default();
    let timeline = match saved("events.jsonl") {
        Some(file) => events::load(&file)?,
        None => Vec::new(),
    };
    let results = runner::run_checks(&checks, &expect, &history, &timeline, budget);
    for result in &results {
        let verdict = &result.verdict;
        println!(
            "check {}: {} — {}",
            verdict.checker,
            result.mark(),
            verdict.summary
        );
        for line in &verdict.evidence {
            println!("      {line}");
        }
    }
    Ok(Outcome::of(&results))
}
