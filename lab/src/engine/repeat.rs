//! `lab scenario FILE --repeat N`: one scenario under N seeds (seed, seed+1, ...), because one
//! passing run of a distributed test says little: a table with a row per seed (its verdict,
//! throughput, p99, longest outage, each check), then how the figures spread over the runs
//! (min, median, max) and which seeds failed, each a command away from being run again.

use super::runner::Report;

/// The figures a run is compared on, as (label, value); a check's own figures follow.
fn figures(report: &Report) -> Vec<(String, String)> {
    let longest = report
        .outages
        .iter()
        .map(|o| o.secs)
        .fold(None, |m: Option<f64>, s| Some(m.map_or(s, |m| m.max(s))));
    let mut figures = vec![
        ("ok/s".to_string(), format!("{:.1}", report.ok_per_sec)),
        (
            "p99".to_string(),
            format!("{:.1} ms", report.latency_ms.p99),
        ),
        (
            "longest outage".to_string(),
            longest.map_or("-".into(), |s| format!("{s:.2} s")),
        ),
    ];
    for check in &report.checks {
        for (label, value) in &check.verdict.figures {
            figures.push((format!("{}: {label}", check.verdict.checker), value.clone()));
        }
    }
    figures
}

/// The number a figure starts with, and its unit when it is one short word (`12.5 ms`).
fn number(value: &str) -> Option<(f64, &str)> {
    let end = value
        .char_indices()
        .find(|(i, c)| !(c.is_ascii_digit() || *c == '.' || (*c == '-' && *i == 0)))
        .map_or(value.len(), |(i, _)| i);
    let n: f64 = value[..end].parse().ok()?;
    let rest = value[end..].trim();
    let unit = if rest.len() <= 3 && rest.chars().all(|c| c.is_alphabetic() || c == '%') {
        rest
    } else {
        ""
    };
    Some((n, unit))
}

fn spread(mut values: Vec<f64>) -> (f64, f64, f64) {
    values.sort_by(f64::total_cmp);
    let median = if values.len() % 2 == 1 {
        values[values.len() / 2]
    } else {
        (values[values.len() / 2 - 1] + values[values.len() / 2]) / 2.0
    };
    (values[0], median, values[values.len() - 1])
}

fn show(n: f64) -> String {
    if n.fract() == 0.0 && n.abs() < 1e15 {
        format!("{n:.0}")
    } else if n.abs() >= 100.0 {
        format!("{n:.1}")
    } else {
        format!("{n:.2}")
    }
}

/// The repeat table for `runs` of scenario `name` (`command` runs one seed again, `{seed}`
/// standing for it).
pub fn table(name: &str, runs: &[&Report], command: &str) -> String {
    let failed: Vec<u64> = runs.iter().filter(|r| !r.passed).map(|r| r.seed).collect();
    let unknown = runs.iter().filter(|r| r.unknown).count();
    let mut out = format!(
        "repeat {name}: {} runs, seeds {}..{}: {} passed, {} failed{}\n",
        runs.len(),
        runs.first().map_or(0, |r| r.seed),
        runs.last().map_or(0, |r| r.seed),
        runs.len() - failed.len(),
        failed.len() - unknown,
        if unknown > 0 {
            format!(", {unknown} unknown")
        } else {
            String::new()
        }
    );
    if runs.is_empty() {
        return out;
    }
    // A row per seed: the verdict, the headline figures, each check's mark.
    let checkers: Vec<String> = runs[0]
        .checks
        .iter()
        .map(|c| c.verdict.checker.clone())
        .collect();
    let mut header = vec!["seed", "verdict", "ok/s", "p99", "longest outage"];
    header.extend(checkers.iter().map(String::as_str));
    // Each run's figures, once.
    let all: Vec<Vec<(String, String)>> = runs.iter().map(|r| figures(r)).collect();
    let rows: Vec<Vec<String>> = runs
        .iter()
        .zip(&all)
        .map(|(r, f)| {
            let mut row = vec![
                r.seed.to_string(),
                r.outcome().word().to_string(),
                f[0].1.clone(),
                f[1].1.clone(),
                f[2].1.clone(),
            ];
            row.extend(checkers.iter().map(|name| {
                r.checks
                    .iter()
                    .find(|c| &c.verdict.checker == name)
                    .map_or("-".to_string(), |c| {
                        match (c.met(), c.unknown()) {
                            (true, _) => "PASS",
                            (false, true) => "UNKNOWN",
                            (false, false) => "FAIL",
                        }
                        .to_string()
                    })
            }));
            row
        })
        .collect();
    let widths: Vec<usize> = (0..header.len())
        .map(|i| {
            rows.iter()
                .map(|row| row[i].len())
                .chain([header[i].len()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let line = |cells: &[&str]| {
        let mut text = String::new();
        for (cell, width) in cells.iter().zip(&widths) {
            text += &format!("{cell:<width$}  ");
        }
        text.trim_end().to_string() + "\n"
    };
    out += &line(&header);
    for row in &rows {
        out += &line(&row.iter().map(String::as_str).collect::<Vec<_>>());
    }
    // How each numeric figure spreads over the runs that gave it.
    let mut labels: Vec<String> = Vec::new();
    for f in &all {
        for (label, _) in f {
            if !labels.contains(label) {
                labels.push(label.clone());
            }
        }
    }
    let mut spreads = Vec::new();
    for label in labels {
        let values: Vec<(f64, String)> = all
            .iter()
            .filter_map(|f| {
                let (_, value) = f.iter().find(|(l, _)| *l == label)?;
                number(value).map(|(n, unit)| (n, unit.to_string()))
            })
            .collect();
        if values.len() < 2 {
            continue;
        }
        let unit = values[0].1.clone();
        let (min, median, max) = spread(values.into_iter().map(|(n, _)| n).collect());
        let unit = if unit.is_empty() {
            String::new()
        } else {
            format!(" {unit}")
        };
        spreads.push((
            label,
            format!("{} / {} / {}{unit}", show(min), show(median), show(max)),
        ));
    }
    if !spreads.is_empty() {
        out += "\nover the runs (min / median / max):\n";
        let width = spreads.iter().map(|(l, _)| l.len()).max().unwrap_or(0);
        for (label, values) in spreads {
            out += &format!("  {label:<width$}  {values}\n");
        }
    }
    if !failed.is_empty() {
        out += &format!(
            "\nfailed (or unknown) seeds: {}; one again: {}\n",
            failed
                .iter()
                .map(u64::to_string)
                .collect::<Vec<_>>()
                .join(", "),
            command.replace("{seed}", &failed[0].to_string())
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::check::Verdict;
    use crate::engine::outage::Outage;
    use crate::engine::runner::{CheckResult, Latency, OpCounts};
    use crate::engine::scenario::Expect;

    fn report(seed: u64, passed: bool, ok_per_sec: f64, outage: f64, lost: &str) -> Report {
        Report {
            scenario: "s".into(),
            description: String::new(),
            project: "proj0".into(),
            seed,
            run_dir: format!("runs/{seed}").into(),
            duration_secs: 10.0,
            ops: OpCounts::default(),
            ok_per_sec,
            latency_ms: Latency {
                p99: 20.0 + seed as f64,
                ..Latency::default()
            },
            faults: Vec::new(),
            outages: vec![Outage {
                fault: "kill (SIGKILL)".into(),
                node: Some("n1".into()),
                at: 1.0,
                last_ok: 1.0,
                first_ok: 1.0 + outage,
                secs: outage,
            }],
            unknown: false,
            checks: vec![CheckResult {
                verdict: Verdict {
                    unknown: false,
                    checker: "durable".into(),
                    valid: passed,
                    summary: String::new(),
                    evidence: Vec::new(),
                    figures: vec![("lost writes".into(), lost.into())],
                },
                expected: Expect::Valid,
            }],
            passed,
        }
    }

    #[test]
    fn a_row_per_seed_the_spread_and_the_failing_seeds() {
        let runs = [
            report(7, true, 100.0, 0.5, "0"),
            report(8, false, 80.0, 1.5, "3"),
            report(9, true, 120.0, 0.7, "0"),
        ];
        let refs: Vec<&Report> = runs.iter().collect();
        let text = table("demo", &refs, "lab scenario demo.yaml --seed {seed}");
        assert!(
            text.starts_with("repeat demo: 3 runs, seeds 7..9: 2 passed, 1 failed\n"),
            "{text}"
        );
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[1].starts_with("seed  verdict  ok/s"), "{text}");
        assert!(lines[2].starts_with("7     PASS     100.0"), "{text}");
        assert!(lines[3].starts_with("8     FAIL     80.0"), "{text}");
        assert!(lines[3].ends_with("FAIL"), "{text}");
        assert!(
            text.contains("ok/s                  80 / 100 / 120\n"),
            "{text}"
        );
        assert!(
            text.contains("longest outage        0.50 / 0.70 / 1.50 s"),
            "{text}"
        );
        assert!(text.contains("durable: lost writes  0 / 0 / 3"), "{text}");
        assert!(
            text.contains("p99                   27 / 28 / 29 ms\n"),
            "{text}"
        );
        assert!(
            text.ends_with(
                "failed (or unknown) seeds: 8; one again: lab scenario demo.yaml --seed 8\n"
            ),
            "{text}"
        );
    }

    #[test]
    fn figures_that_are_not_numbers_have_no_spread() {
        assert_eq!(number("12.5 ms"), Some((12.5, "ms")));
        assert_eq!(number("-3"), Some((-3.0, "")));
        assert_eq!(number("99.1%"), Some((99.1, "%")));
        assert_eq!(number("3 of 4 (a while)"), Some((3.0, "")));
        assert_eq!(number("n1"), None);
        assert_eq!(number("-"), None);
    }
}
