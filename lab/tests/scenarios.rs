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

/// One after the other, not in parallel: each scenario measures availability, and two
/// clusters fighting for two cores would measure the machine instead.
#[test]
fn every_shipped_scenario_passes() {
    let files = scenarios();
    assert!(
        files.len() >= 3,
        "the proj0 scenarios are shipped: {files:?}"
    );
    for file in files {
        let runs = tempfile::tempdir().unwrap();
        let out = Command::new(LAB)
            .arg("scenario")
            .arg(&file)
            .arg("--runs-dir")
            .arg(runs.path())
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success(),
            "{} failed:\n{stdout}\n{stderr}",
            file.display()
        );
        assert!(stdout.contains(": PASS"), "{stdout}");
        // The run left its traces.
        let run = std::fs::read_dir(runs.path())
            .unwrap()
            .next()
            .unwrap()
            .unwrap()
            .path();
        for name in [
            "history.jsonl",
            "events.jsonl",
            "report.json",
            "scenario.yaml",
            "n1/node.log",
        ] {
            assert!(run.join(name).exists(), "{} has no {name}", file.display());
        }
        let report: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(run.join("report.json")).unwrap())
                .unwrap();
        assert_eq!(report["passed"], true);
        assert!(
            report["ops"]["ok"].as_u64().unwrap() > 50,
            "the workload ran: {report}"
        );
        // `lab check` agrees with the run on the saved history.
        let check = Command::new(LAB).arg("check").arg(&run).output().unwrap();
        assert!(
            check.status.success(),
            "{}",
            String::from_utf8_lossy(&check.stdout)
        );
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
        stderr.contains("step 3 (assert status detail.keys >= 1000000): not true now"),
        "{stderr}"
    );
}
