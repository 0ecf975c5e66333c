//! `lab check RUN`: run a checker again on a saved history, print its verdict and evidence.

use std::path::PathBuf;
use std::process::ExitCode;

use crate::engine::{check, history};

/// Exit 0 if the history is valid, 1 if not, 2 if it cannot be read.
pub fn run(run: PathBuf) -> ExitCode {
    let path = if run.is_dir() {
        run.join("history.jsonl")
    } else {
        run
    };
    let history = match history::load(&path) {
        Ok(history) => history,
        Err(e) => {
            eprintln!("error: {e:#}");
            return ExitCode::from(2);
        }
    };
    let verdict = check::linearizable::check(&history);
    println!("{}", verdict.summary);
    for line in &verdict.evidence {
        println!("{line}");
    }
    if verdict.valid {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
