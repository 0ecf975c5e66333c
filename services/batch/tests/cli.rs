//! The `batch` binary as a user runs it.

use std::path::Path;
use std::process::{Command, Output};

const BATCH: &str = env!("CARGO_BIN_EXE_batch");

/// `batch run-local ARGS --input INPUT --out OUT`.
fn run_local(args: &[&str], input: &Path, out: &Path) -> Output {
    Command::new(BATCH)
        .arg("run-local")
        .args(args)
        .arg("--input")
        .arg(input)
        .arg("--out")
        .arg(out)
        .output()
        .unwrap()
}

#[test]
fn run_local_counts_words_and_bad_input_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in");
    std::fs::create_dir(&input).unwrap();
    std::fs::write(input.join("a.txt"), "the quick fox\nthe lazy dog\n").unwrap();
    std::fs::write(input.join("b.txt"), "The fox\n").unwrap();
    let out = dir.path().join("out");
    let run = Command::new(BATCH)
        .args([
            "run-local",
            "--plugin",
            "wordcount",
            "--reduces",
            "2",
            "--split",
            "10",
        ])
        .arg("--input")
        .arg(&input)
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(
        run.status.success(),
        "{stdout} {}",
        String::from_utf8_lossy(&run.stderr)
    );
    assert!(stdout.contains("2 reduce tasks"), "{stdout}");
    let mut lines: Vec<String> = (0..2)
        .flat_map(|r| {
            std::fs::read_to_string(out.join(format!("part-r-{r:05}")))
                .unwrap()
                .lines()
                .map(String::from)
                .collect::<Vec<_>>()
        })
        .collect();
    lines.sort();
    assert_eq!(
        lines,
        [
            "The\t1", "dog\t1", "fox\t2", "lazy\t1", "quick\t1", "the\t2"
        ]
    );

    let bad = run_local(&["--plugin", "wordcount", "--reduces", "0"], &input, &out);
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("R >= 1"));
    let trap = run_local(&["--plugin", "chaos", "--arg", "trap=1000"], &input, &out);
    assert_eq!(trap.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&trap.stderr);
    assert!(
        stderr.contains("map task 0: record 1 of") && stderr.contains("the plugin trapped"),
        "{stderr}"
    );
}
