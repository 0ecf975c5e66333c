//! The command palette (`:`): one line in the step grammar of scenario files, so what a user
//! types here is what a scenario says (`:partition n1,n2 | n3`, `:link n1->* delay 100ms`,
//! `:nemesis kill,pause 30s`, `:load rate 500`). A typo gets a message saying what was
//! expected; Tab completes the command word.

use std::time::Duration;

use crate::engine::scenario::{
    self, LoadStep, LoadSwitch, NemesisFault, NemesisStep, Selector, Span, Step, WaitStep,
};

/// Every command word, with the shape of its arguments (shown when a line is wrong).
pub const COMMANDS: &[(&str, &str)] = &[
    ("sleep", "sleep DURATION (e.g. sleep 2s)"),
    (
        "wait",
        "wait leader | one_leader | all_up | converged, or as a scenario writes it: wait {status: \"detail.keys >= 8\", on: n1, timeout: 10s}",
    ),
    (
        "assert",
        "assert CONDITION (what wait takes; it must hold now)",
    ),
    ("kill", "kill NODES"),
    ("terminate", "terminate NODES"),
    ("pause", "pause NODES"),
    ("resume", "resume NODES"),
    ("restart", "restart NODES"),
    ("start", "start NODES"),
    (
        "partition",
        "partition n1,n2 | n3 (or isolate n1, majority-minority, bridge, ring)",
    ),
    ("heal", "heal"),
    (
        "link",
        "link FROM->TO FAULTS (e.g. link n1->* delay 100ms 20ms loss 5%)",
    ),
    ("load", "load start | stop | rate N"),
    (
        "nemesis",
        "nemesis FAULTS DURATION [every D] (e.g. nemesis kill,pause 30s)",
    ),
    ("mark", "mark LABEL"),
    ("add-node", "add-node"),
    (
        "remove-node",
        "remove-node NODE (projects with membership: Raft)",
    ),
];

/// Parses one palette line against the cluster's node ids: the step it asks for.
pub fn parse(line: &str, nodes: &[String]) -> Result<Step, String> {
    let line = line.trim().trim_start_matches(':').trim();
    let (word, rest) = line.split_once(char::is_whitespace).unwrap_or((line, ""));
    let rest = rest.trim();
    let usage = |word: &str| {
        COMMANDS
            .iter()
            .find(|(w, _)| *w == word)
            .map_or(String::new(), |(_, u)| format!("usage: {u}"))
    };
    let need_args = |what: &str| -> Result<(), String> {
        if rest.is_empty() {
            Err(format!("{word} needs {what}; {}", usage(word)))
        } else {
            Ok(())
        }
    };
    let step = match word {
        "" => return Err("type a command; Tab completes, esc cancels".into()),
        "sleep" => {
            need_args("a duration")?;
            let duration = distlab_runtime::duration::parse(rest)
                .map_err(|e| format!("{rest:?}: {e}; {}", usage("sleep")))?;
            Step::Sleep(Span(duration))
        }
        "wait" | "assert" => {
            need_args("a condition")?;
            // The scenario file's own grammar: what follows `- wait:` there follows `wait` here.
            let wait: WaitStep = serde_yaml::from_str(rest)
                .map_err(|_| format!("{rest:?} is not a condition; {}", usage(word)))?;
            if word == "wait" {
                Step::Wait(wait)
            } else {
                Step::Assert(wait)
            }
        }
        "kill" | "terminate" | "pause" | "resume" | "restart" | "start" => {
            need_args("nodes (n1, n1,n3, all, random, down...)")?;
            let names: Vec<String> = rest
                .split([',', ' '])
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .collect();
            let selector = if names.len() == 1 {
                Selector::One(names[0].clone())
            } else {
                Selector::Many(names)
            };
            match word {
                "kill" => Step::Kill(selector),
                "terminate" => Step::Terminate(selector),
                "pause" => Step::Pause(selector),
                "resume" => Step::Resume(selector),
                "restart" => Step::Restart(selector),
                _ => Step::Start(selector),
            }
        }
        "partition" => {
            need_args("a shape")?;
            Step::Partition(rest.to_string())
        }
        "heal" => Step::Heal,
        "link" => {
            need_args("links and faults")?;
            Step::Link(rest.to_string())
        }
        "mark" => {
            need_args("a label")?;
            Step::Mark(rest.to_string())
        }
        "load" => Step::Load(parse_load(rest).map_err(|e| format!("{e}; {}", usage("load")))?),
        "nemesis" => {
            Step::Nemesis(parse_nemesis(rest).map_err(|e| format!("{e}; {}", usage("nemesis")))?)
        }
        "add-node" => Step::AddNode,
        "remove-node" => {
            need_args("a node")?;
            Step::RemoveNode(Selector::One(rest.to_string()))
        }
        other => {
            let close = complete(other);
            return Err(if close.is_empty() {
                format!(
                    "unknown command {other:?}; expected one of: {}",
                    COMMANDS
                        .iter()
                        .map(|(w, _)| *w)
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            } else {
                format!(
                    "unknown command {other:?}; did you mean {}?",
                    close.join(" or ")
                )
            });
        }
    };
    scenario::validate_step(&step, nodes)?;
    Ok(step)
}

fn parse_load(rest: &str) -> Result<LoadStep, String> {
    let words: Vec<&str> = rest.split_whitespace().collect();
    match words.as_slice() {
        ["start"] => Ok(LoadStep::Switch(LoadSwitch::Start)),
        ["stop"] => Ok(LoadStep::Switch(LoadSwitch::Stop)),
        ["rate", n] => n
            .parse::<f64>()
            .ok()
            .filter(|r| *r >= 0.0 && r.is_finite())
            .map(|rate| LoadStep::Rate { rate })
            .ok_or_else(|| format!("{n:?} is not a rate (ops/s, >= 0)")),
        _ => Err(format!("{rest:?} is not a load change")),
    }
}

/// `kill,pause 30s [every 3s]`: the faults, for how long, how often (default every 5s ± 2s).
fn parse_nemesis(rest: &str) -> Result<NemesisStep, String> {
    let words: Vec<&str> = rest.split_whitespace().collect();
    let (faults, duration, every) = match words.as_slice() {
        [faults, duration] => (*faults, *duration, "5s"),
        [faults, duration, "every", every] => (*faults, *duration, *every),
        _ => return Err(format!("{rest:?} is not FAULTS DURATION [every D]")),
    };
    let faults = faults
        .split(',')
        .map(|f| {
            serde_yaml::from_str::<NemesisFault>(f).map_err(|_| {
                format!(
                    "unknown fault {f:?}; expected kill, terminate, pause, partition, isolate, delay, loss"
                )
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let span = |text: &str| distlab_runtime::duration::parse(text).map(Span);
    let every = span(every)?;
    Ok(NemesisStep {
        faults,
        every,
        jitter: Some(Span(every.0 * 2 / 5)).filter(|j| j.0 > Duration::ZERO),
        duration: span(duration)?,
    })
}

/// The command words that start with `prefix` (or, if none does, those close to it).
pub fn complete(prefix: &str) -> Vec<&'static str> {
    let words = COMMANDS.iter().map(|(w, _)| *w);
    let starting: Vec<_> = words.clone().filter(|w| w.starts_with(prefix)).collect();
    if !starting.is_empty() || prefix.is_empty() {
        return starting;
    }
    words.filter(|w| edit_distance(w, prefix) <= 2).collect()
}

/// Completes the command word of `line` if exactly one command starts with it.
pub fn complete_line(line: &str) -> Option<String> {
    if line.contains(char::is_whitespace) {
        return None;
    }
    match complete(line).as_slice() {
        [one] if one.starts_with(line) => Some(format!("{one} ")),
        _ => None,
    }
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for j in 0..b.len() {
            let cost = usize::from(ca != b[j]);
            let next = (row[j + 1] + 1).min(row[j] + 1).min(prev + cost);
            prev = row[j + 1];
            row[j + 1] = next;
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nodes() -> Vec<String> {
        ["n1", "n2", "n3", "n4", "n5"].map(String::from).to_vec()
    }

    #[test]
    fn lines_become_the_steps_a_scenario_would_have() {
        assert_eq!(
            parse(":partition n1,n2 | n3,n4,n5", &nodes()),
            Ok(Step::Partition("n1,n2 | n3,n4,n5".into()))
        );
        assert_eq!(
            parse("link n1->* delay 100ms 20ms loss 5%", &nodes()),
            Ok(Step::Link("n1->* delay 100ms 20ms loss 5%".into()))
        );
        assert_eq!(
            parse("kill n1,n3", &nodes()),
            Ok(Step::Kill(Selector::Many(vec!["n1".into(), "n3".into()])))
        );
        assert_eq!(
            parse("load rate 500", &nodes()),
            Ok(Step::Load(LoadStep::Rate { rate: 500.0 }))
        );
        assert_eq!(parse("add-node", &nodes()), Ok(Step::AddNode));
        use crate::engine::scenario::Condition;
        assert_eq!(
            parse("sleep 1500ms", &nodes()),
            Ok(Step::Sleep(Span(Duration::from_millis(1500))))
        );
        assert_eq!(
            parse("wait leader", &nodes()),
            Ok(Step::Wait(WaitStep::Condition(Condition::Leader)))
        );
        assert_eq!(
            parse("wait {until: all_up, timeout: 20s}", &nodes()),
            Ok(Step::Wait(WaitStep::Full {
                until: Condition::AllUp,
                timeout: Some(Span(Duration::from_secs(20)))
            }))
        );
        let status = parse(r#"assert {status: "detail.keys >= 8", on: n1}"#, &nodes()).unwrap();
        assert_eq!(status.describe(), "assert status detail.keys >= 8 on n1");
        assert!(
            parse("wait leaderr", &nodes())
                .unwrap_err()
                .contains("not a condition; usage: wait leader | one_leader")
        );
        assert!(
            parse("sleep soon", &nodes())
                .unwrap_err()
                .contains("expected a duration")
        );
        assert!(
            parse(r#"wait {status: "detail.keys >= 8", on: n9}"#, &nodes())
                .unwrap_err()
                .contains("unknown node")
        );
        assert_eq!(
            parse("remove-node n2", &nodes()),
            Ok(Step::RemoveNode(Selector::One("n2".into())))
        );
        assert!(
            parse("remove-node", &nodes())
                .unwrap_err()
                .contains("needs a node")
        );
        let Ok(Step::Nemesis(n)) = parse("nemesis kill,pause 30s", &nodes()) else {
            panic!("nemesis parses");
        };
        assert_eq!(n.faults, [NemesisFault::Kill, NemesisFault::Pause]);
        assert_eq!(n.duration.0, Duration::from_secs(30));
    }

    #[test]
    fn mistakes_say_what_was_expected() {
        let e = parse("partiton n1 | n2", &nodes()).unwrap_err();
        assert!(e.contains("did you mean partition"), "{e}");
        let e = parse("kill n9", &nodes()).unwrap_err();
        assert!(e.contains("unknown node \"n9\""), "{e}");
        let e = parse("link n1->n2 delay fast", &nodes()).unwrap_err();
        assert!(e.contains("fast"), "{e}");
        let e = parse("load faster", &nodes()).unwrap_err();
        assert!(e.contains("usage: load start | stop | rate N"), "{e}");
        let e = parse("nemesis explode 10s", &nodes()).unwrap_err();
        assert!(e.contains("unknown fault \"explode\""), "{e}");
        let e = parse("zzz", &nodes()).unwrap_err();
        assert!(
            e.contains("expected one of: sleep, wait, assert, kill"),
            "{e}"
        );
        assert!(parse("kill", &nodes()).unwrap_err().contains("needs nodes"));
    }

    #[test]
    fn tab_completes_the_command_word() {
        assert_eq!(complete_line("part").as_deref(), Some("partition "));
        assert_eq!(complete_line("re"), None, "restart, resume or remove-node");
        assert_eq!(complete("re"), ["resume", "restart", "remove-node"]);
        assert_eq!(complete_line("kill n1"), None);
    }
}
