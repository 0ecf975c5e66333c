//! Every shipped scenario runs headless and passes; broken scenario files are refused before
//! anything starts, with the file and line named.

use std::path::{Path, PathBuf};
use std::process::Command;

const LAB: &str = env!("CARGO_BIN_EXE_lab");

fn scenarios() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    files
}

/// Writes `text` as a scenario file in `dir` and runs it headless, its runs under `dir/runs`.
fn run_scenario(dir: &Path, name: &str, text: &str) -> std::process::Output {
    let file = dir.join(name);
    std::fs::write(&file, text).unwrap();
    Command::new(LAB)
        .arg("scenario")
        .arg(&file)
        .arg("--runs-dir")
        .arg(dir.join("runs"))
        .output()
        .unwrap()
}

/// The CI version of a shipped scenario: nemesis runs longer than 10 s are cut to 10 s
/// (`for: 60s` -> `for: 10s`); everything else is as shipped.
fn shortened(text: &str) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(at) = rest.find("for: ") {
        let (before, after) = rest.split_at(at + "for: ".len());
        out += before;
        let digits = after.chars().take_while(char::is_ascii_digit).count();
        let secs: Option<u64> = after[..digits].parse().ok();
        match secs {
            Some(n) if n > 10 && after[digits..].starts_with('s') => {
                out += "10";
                rest = &after[digits..];
            }
            _ => rest = after,
        }
    }
    out + rest
}

/// The read modes every Project 2 scenario must pass with (`--read-mode local` is caught by
/// the checker in a scenario of its own, which sets it itself).
fn variants(text: &str) -> Vec<Option<&'static str>> {
    if text.contains("project: proj2") && !text.contains("--read-mode") {
        vec![None, Some("--read-mode lease")]
    } else {
        vec![None]
    }
}

/// One after the other, not in parallel: each scenario measures availability, and two
/// clusters fighting for two cores would measure the machine instead. Project 2's run once
/// with read-index reads (the default) and once with lease reads.
#[test]
fn every_shipped_scenario_passes() {
    let files = scenarios();
    assert!(
        files.len() >= 3,
        "the proj0 scenarios are shipped: {files:?}"
    );
    assert_eq!(
        shortened("for: 60s, every: 2s, for: 8s"),
        "for: 10s, every: 2s, for: 8s"
    );
    for file in files {
        let text = shortened(&std::fs::read_to_string(&file).unwrap());
        for flags in variants(&text) {
            let runs = tempfile::tempdir().unwrap();
            let copy = runs.path().join(file.file_name().unwrap());
            std::fs::write(&copy, &text).unwrap();
            let mut lab = Command::new(LAB);
            lab.arg("scenario")
                .arg(&copy)
                .arg("--runs-dir")
                .arg(runs.path().join("runs"));
            if let Some(flags) = flags {
                lab.args(["--node-flags", flags]);
            }
            let out = lab.output().unwrap();
            let stdout = String::from_utf8_lossy(&out.stdout);
            let stderr = String::from_utf8_lossy(&out.stderr);
            let name = format!("{} {}", file.display(), flags.unwrap_or_default());
            assert!(out.status.success(), "{name} failed:\n{stdout}\n{stderr}");
            assert!(stdout.contains(": PASS"), "{stdout}");
            // The run left its traces.
            let run = std::fs::read_dir(runs.path().join("runs"))
                .unwrap()
                .next()
                .unwrap()
                .unwrap()
                .path();
            for trace in [
                "history.jsonl",
                "events.jsonl",
                "report.json",
                "scenario.yaml",
            ] {
                assert!(run.join(trace).exists(), "{name} has no {trace}");
            }
            // Every node's log, in a directory named for the node (n1, c1, b1...).
            let node_logs = std::fs::read_dir(&run)
                .unwrap()
                .filter_map(|e| e.ok())
                .filter(|e| e.path().join("node.log").exists())
                .count();
            assert!(node_logs >= 1, "{name} left no node log");
            let report: serde_json::Value =
                serde_json::from_str(&std::fs::read_to_string(run.join("report.json")).unwrap())
                    .unwrap();
            assert_eq!(report["passed"], true);
            // An operation of Project 4's is a whole job (seconds); of Project 5's a transfer
            // that its scenarios hold prepared on purpose; of the others, a request.
            let least = match report["project"].as_str() {
                Some("proj4") => 3,
                Some("proj5") => 20,
                _ => 50,
            };
            assert!(
                report["ops"]["ok"].as_u64().unwrap() >= least,
                "the workload ran: {report}"
            );
            // `lab check` agrees with the run on the saved history.
            let check = Command::new(LAB).arg("check").arg(&run).output().unwrap();
            assert!(
                check.status.success(),
                "{name}: {}",
                String::from_utf8_lossy(&check.stdout)
            );
        }
    }
}

#[test]
fn a_broken_scenario_is_refused_before_anything_starts() {
    let dir = tempfile::tempdir().unwrap();
    let out = run_scenario(
        dir.path(),
        "broken.yaml",
        "name: broken\nproject: proj0\nsteps:\n  - sleep: 1s\n  - kill: n5\n",
    );
    let runs = dir.path().join("runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("broken.yaml:5: step 2 (kill n5): unknown node \"n5\""),
        "{stderr}"
    );
    assert!(!runs.exists(), "nothing was started");
}

/// A run whose check failed: the scenario exits 1, and `lab check` on its run dir repeats the
/// scenario's own checks (not some default) and fails the same way; `--checker` picks others.
#[test]
fn lab_check_repeats_the_runs_own_checks() {
    let dir = tempfile::tempdir().unwrap();
    let out = run_scenario(
        dir.path(),
        "strict.yaml",
        "name: strict\nproject: proj0\nworkload: {clients: 2, rate: 100}\nsteps:\n  - sleep: 300ms\n  - kill: n1\n  - sleep: 500ms\ncheck:\n  - availability: {min: 1.0}\n",
    );
    let runs = dir.path().join("runs");
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let run = std::fs::read_dir(&runs)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();

    let check = Command::new(LAB).arg("check").arg(&run).output().unwrap();
    let stdout = String::from_utf8_lossy(&check.stdout);
    assert_eq!(check.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("check availability: FAIL"), "{stdout}");
    assert!(
        !stdout.contains("linearizable"),
        "only the scenario's checks: {stdout}"
    );

    let chosen = Command::new(LAB)
        .args(["check", "--checker", "linearizable"])
        .arg(&run)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&chosen.stdout);
    assert_eq!(chosen.status.code(), Some(0), "{stdout}");
    assert!(stdout.contains("check linearizable: PASS"), "{stdout}");

    let missing = Command::new(LAB)
        .arg("check")
        .arg(dir.path().join("no-such-run"))
        .output()
        .unwrap();
    assert_eq!(missing.status.code(), Some(2));
}

/// An `assert` step that does not hold stops the run: exit 1, the step named.
#[test]
fn a_false_assertion_stops_the_run() {
    let dir = tempfile::tempdir().unwrap();
    let out = run_scenario(
        dir.path(),
        "assert.yaml",
        "name: assert\nproject: proj0\nsteps:\n  - wait: all_up\n  - assert: all_up\n  - assert: {status: 'detail.keys >= 1000000', on: n1}\n  - mark: never reached\n",
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("step 3 (assert status detail.keys >= 1000000 on n1): not true now"),
        "{stderr}"
    );
}

/// `--repeat N` runs the scenario under N consecutive seeds and prints a row per seed, the
/// spread of its figures and the seeds that failed; it exits 1 if any did.
#[test]
fn repeat_runs_each_seed_and_names_the_failing_ones() {
    let dir = tempfile::tempdir().unwrap();
    let repeat = |name: &str, text: &str| {
        let file = dir.path().join(name);
        std::fs::write(&file, text).unwrap();
        Command::new(LAB)
            .arg("scenario")
            .arg(&file)
            .args(["--repeat", "2", "--seed", "5", "--runs-dir"])
            .arg(dir.path().join("runs"))
            .output()
            .unwrap()
    };
    let calm = repeat(
        "calm.yaml",
        "name: calm\nproject: proj0\nworkload: {clients: 2, rate: 100}\nsteps:\n  - sleep: 500ms\ncheck:\n  - linearizable\n",
    );
    let stdout = String::from_utf8_lossy(&calm.stdout);
    assert_eq!(calm.status.code(), Some(0), "{stdout}");
    assert!(
        stdout.starts_with("repeat calm: 2 runs, seeds 5..6: 2 passed, 0 failed\n"),
        "{stdout}"
    );
    let rows: Vec<&str> = stdout.lines().filter(|l| l.contains("PASS")).collect();
    assert_eq!(rows.len(), 2, "{stdout}");
    assert!(
        rows[0].starts_with("5 ") && rows[1].starts_with("6 "),
        "{stdout}"
    );
    assert!(
        stdout.contains("over the runs (min / median / max):"),
        "{stdout}"
    );

    let strict = repeat(
        "strict.yaml",
        "name: strict\nproject: proj0\nworkload: {clients: 2, rate: 100}\nsteps:\n  - sleep: 300ms\n  - kill: n1\n  - sleep: 500ms\ncheck:\n  - availability: {min: 1.0}\n",
    );
    let stdout = String::from_utf8_lossy(&strict.stdout);
    assert_eq!(strict.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("0 passed, 2 failed"), "{stdout}");
    assert!(
        stdout.contains("failed (or unknown) seeds: 5, 6; one again: lab scenario")
            && stdout.contains("strict.yaml --seed 5"),
        "{stdout}"
    );
    // Four runs were asked for; each left its own directory.
    let runs = std::fs::read_dir(dir.path().join("runs")).unwrap().count();
    assert_eq!(runs, 4);
}

/// A checker that cannot decide within `--check-budget` says "unknown", and so does the exit
/// code (3): a script can tell "could not tell" from "wrong" (1). With the default budget the
/// same history passes.
#[test]
fn a_check_over_its_budget_is_unknown_with_its_own_exit_code() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("history.jsonl");
    let history = lab::engine::check::linearizable::synthetic_history(4, 150, 1, 20);
    let lines: Vec<String> = history
        .iter()
        .map(|op| serde_json::to_string(op).unwrap())
        .collect();
    std::fs::write(&file, lines.join("\n")).unwrap();
    let check = |budget: &str| {
        Command::new(LAB)
            .arg("check")
            .arg(&file)
            .args(["--check-budget", budget])
            .output()
            .unwrap()
    };
    let tight = check("60s,1");
    let stdout = String::from_utf8_lossy(&tight.stdout);
    assert_eq!(tight.status.code(), Some(3), "{stdout}");
    assert!(
        stdout.contains("check linearizable: UNKNOWN — unknown: budget exhausted"),
        "{stdout}"
    );
    let roomy = check("60s");
    assert_eq!(
        roomy.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&roomy.stdout)
    );
    let bad = check("soon");
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("--check-budget"));
}
