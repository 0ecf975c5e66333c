//! Is a history of register operations linearizable?
//!
//! Linearizable means: there is one total order of the operations, consistent with real time
//! (an operation that finished before another started comes first), in which every operation's
//! result is what a single register would have returned. The search is Wing & Gong's, with
//! Lowe's memoisation (the same one Porcupine uses): walk the history's call and return events
//! in order; at a call, try to linearize that operation now (if the register allows its
//! result) and go on; at a return whose operation is not linearized yet, backtrack. States
//! already explored — (set of linearized operations, register value) — are never explored
//! twice, which is what makes it fast enough for real histories.
//!
//! Keys are independent registers, so the history is split per key first: small searches
//! instead of one huge one.
//!
//! Operations whose outcome is unknown (`info`: a timeout, a crash) may have happened at any
//! time after their call, or never. They are given a return at the end of time; an unknown
//! `cas` may also have failed. `fail` operations did not happen and are dropped, and so are
//! reads whose result is unknown (a read changes nothing).

use std::collections::{BTreeMap, HashSet};

use super::{Budget, Verdict};
use crate::engine::history::{Op, OpType};

/// A register's value: `None` when absent (never written, or deleted).
pub type Value = Option<i64>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Action {
    /// A read that returned this value.
    Read(Value),
    Write(i64),
    Cas {
        expect: i64,
        new: i64,
    },
    Delete,
}

#[derive(Debug, Clone)]
struct Operation {
    process: u64,
    action: Action,
    /// Its outcome is unknown: it may not have happened.
    unknown: bool,
    /// History index of its invocation.
    call: u64,
    /// History index of its completion; `None` for unknown outcomes.
    ret: Option<u64>,
}

impl Operation {
    /// The register after this operation, or `None` if the operation's result is impossible
    /// from `state`.
    fn step(&self, state: Value) -> Option<Value> {
        match self.action {
            Action::Read(seen) => (seen == state).then_some(state),
            Action::Write(v) => Some(Some(v)),
            Action::Delete => Some(None),
            Action::Cas { expect, new } if state == Some(expect) => Some(Some(new)),
            // An unknown cas that did not match simply failed: nothing changed.
            Action::Cas { .. } if self.unknown => Some(state),
            Action::Cas { .. } => None,
        }
    }

    /// `read -> 3`, `write 5`, `cas 1 -> 2`, `delete`.
    fn what(&self) -> String {
        match self.action {
            Action::Read(v) => format!("read -> {}", show(v)),
            Action::Write(v) => format!("write {v}"),
            Action::Cas { expect, new } => format!("cas {expect} -> {new}"),
            Action::Delete => "delete".to_string(),
        }
    }

    fn describe(&self) -> String {
        let what = self.what();
        let end = match self.ret {
            Some(r) => format!("ok at #{r}"),
            None => "outcome unknown".to_string(),
        };
        format!(
            "process {:>3}: {what:<16} called at #{}, {end}",
            self.process, self.call
        )
    }
}

fn show(v: Value) -> String {
    v.map_or("nil".to_string(), |v| v.to_string())
}

fn int(value: &serde_json::Value, op: &Op) -> Result<Option<i64>, String> {
    match value {
        serde_json::Value::Null => Ok(None),
        serde_json::Value::Number(n) => n
            .as_i64()
            .map(Some)
            .ok_or_else(|| format!("#{}: {n} is not an integer", op.index)),
        serde_json::Value::String(s) => s
            .parse()
            .map(Some)
            .map_err(|_| format!("#{}: {s:?} is not an integer", op.index)),
        other => Err(format!(
            "#{}: register values are integers, got {other}",
            op.index
        )),
    }
}

/// Pairs invocations with completions and groups the operations by key.
fn operations(history: &[Op]) -> Result<BTreeMap<String, Vec<Operation>>, String> {
    let mut pending: BTreeMap<u64, &Op> = BTreeMap::new();
    let mut pairs: Vec<(&Op, Option<&Op>)> = Vec::new();
    for op in history {
        match op.kind {
            OpType::Invoke => {
                if let Some(previous) = pending.insert(op.process, op) {
                    return Err(format!(
                        "#{}: process {} invoked again before #{} completed",
                        op.index, op.process, previous.index
                    ));
                }
            }
            _ => {
                let invoke = pending.remove(&op.process).ok_or_else(|| {
                    format!(
                        "#{}: process {} completed an operation it never invoked",
                        op.index, op.process
                    )
                })?;
                pairs.push((invoke, Some(op)));
            }
        }
    }
    // Invocations that never completed: unknown outcome.
    pairs.extend(pending.into_values().map(|invoke| (invoke, None)));

    let mut by_key: BTreeMap<String, Vec<Operation>> = BTreeMap::new();
    for (invoke, completion) in pairs {
        let kind = completion.map_or(OpType::Info, |c| c.kind);
        if kind == OpType::Fail {
            continue;
        }
        let unknown = kind == OpType::Info;
        let action = match invoke.f.as_str() {
            "read" if unknown => continue,
            "read" => Action::Read(int(
                &completion.expect("ok has a completion").value,
                invoke,
            )?),
            "write" => Action::Write(
                int(&invoke.value, invoke)?
                    .ok_or_else(|| format!("#{}: write of nil", invoke.index))?,
            ),
            "delete" => Action::Delete,
            "cas" => {
                let pair = invoke
                    .value
                    .as_array()
                    .filter(|a| a.len() == 2)
                    .ok_or_else(|| {
                        format!(
                            "#{}: cas takes [expected, new], got {}",
                            invoke.index, invoke.value
                        )
                    })?;
                match (int(&pair[0], invoke)?, int(&pair[1], invoke)?) {
                    (Some(expect), Some(new)) => Action::Cas { expect, new },
                    _ => return Err(format!("#{}: cas of nil", invoke.index)),
                }
            }
            other => {
                return Err(format!(
                    "#{}: the register model has no operation {other:?}",
                    invoke.index
                ));
            }
        };
        by_key
            .entry(invoke.key.clone().unwrap_or_default())
            .or_default()
            .push(Operation {
                process: invoke.process,
                action,
                unknown,
                call: invoke.index,
                ret: if unknown {
                    None
                } else {
                    completion.map(|c| c.index)
                },
            });
    }
    for ops in by_key.values_mut() {
        drop_unseen_unknown_writes(ops);
    }
    Ok(by_key)
}

/// Removes writes (and cas) of unknown outcome whose value no operation ever observed.
///
/// Sound: an unknown operation may not have happened, so leaving it out is always one of the
/// allowed explanations; and if it did happen, a value nobody read, compared or saw at the
/// end cannot make any read or cas legal that is not legal without it. Worth it: every
/// unknown operation stays concurrent with everything after it, and a crash leaves dozens of
/// them, which would make the search explode.
fn drop_unseen_unknown_writes(ops: &mut Vec<Operation>) {
    let seen: HashSet<i64> = ops
        .iter()
        .filter_map(|o| match o.action {
            Action::Read(Some(v)) => Some(v),
            Action::Cas { expect, .. } => Some(expect),
            _ => None,
        })
        .collect();
    ops.retain(|o| match o.action {
        Action::Write(v) | Action::Cas { new: v, .. } if o.unknown => seen.contains(&v),
        _ => true,
    });
}

/// Why a key's history is not linearizable.
#[derive(Debug)]
enum Unproven {
    Violation(Failure),
    /// The search ran out of budget before deciding.
    Undecided(Exhausted),
}

/// Which limit of the [`Budget`] a search reached, and how far it got.
#[derive(Debug)]
struct Exhausted {
    time: bool,
    steps: u64,
    /// Bytes the memo of visited states took.
    memory: usize,
}

/// What one check may still spend: the budget's deadline is shared by every key, its memory
/// limit applies to each key's search (one memo at a time).
struct Allowance {
    deadline: std::time::Instant,
    memory: usize,
    /// When to say how far it got next (a long search reports on stderr).
    report_at: std::time::Instant,
    started: std::time::Instant,
}

impl Allowance {
    fn new(budget: &Budget) -> Allowance {
        let now = std::time::Instant::now();
        Allowance {
            deadline: now + budget.time,
            memory: budget.memory,
            report_at: now + std::time::Duration::from_secs(5),
            started: now,
        }
    }

    #[cfg(test)]
    fn unlimited() -> Allowance {
        Allowance::new(&Budget {
            time: std::time::Duration::from_secs(3600),
            memory: usize::MAX,
        })
    }
}

#[derive(Debug)]
struct Failure {
    /// The operation no order could explain.
    stuck: usize,
    /// The register's value at the deepest point the search reached.
    state: Value,
    linearized: usize,
}

/// One key's history cut at its quiescent points, where no operation is pending: every
/// operation called before the cut returned before it, and none with an unknown outcome has
/// been called (it stays pending to the end). Each part holds the indices of its operations
/// in `ops`, in call order. Nothing crosses a cut, so a linearization of the whole is one of
/// each part in turn, each starting where the one before can end: the parts are searched one
/// after the other, carrying the set of register values the part before can end with, and
/// their memos never grow with the whole history.
fn quiescent_parts(ops: &[Operation]) -> Vec<Vec<usize>> {
    let mut order: Vec<usize> = (0..ops.len()).collect();
    order.sort_by_key(|&i| ops[i].call);
    let mut parts: Vec<Vec<usize>> = Vec::new();
    // The latest return among the operations so far (an unknown outcome: never).
    let mut latest: Option<u64> = Some(0);
    for i in order {
        let quiet = latest.is_some_and(|r| r < ops[i].call);
        if quiet || parts.is_empty() {
            parts.push(Vec::new());
        }
        parts.last_mut().expect("pushed").push(i);
        latest = match (latest, ops[i].ret) {
            (Some(a), Some(b)) => Some(a.max(b)),
            _ => None,
        };
    }
    parts
}

/// Checks one key's operations, part by part between quiescent points, within `allowance`
/// (`key` names it in progress reports). A linearizable history returns the search steps it
/// took.
fn check_key(ops: &[Operation], key: &str, allowance: &mut Allowance) -> Result<u64, Unproven> {
    let parts = quiescent_parts(ops);
    let mut starts: Vec<Value> = vec![None];
    let mut steps = 0u64;
    let mut before = 0usize;
    let last = parts.len().saturating_sub(1);
    for (k, part) in parts.iter().enumerate() {
        let part_ops: Vec<Operation> = part.iter().map(|&i| ops[i].clone()).collect();
        let mut ends = std::collections::BTreeSet::new();
        let mut failure: Option<Failure> = None;
        for &start in &starts {
            // The last part only has to be placed once; the others report every end.
            let collect = (k < last).then_some(&mut ends);
            match search(&part_ops, start, key, allowance, &mut steps, collect) {
                Ok(()) if k == last => return Ok(steps),
                Ok(()) => {}
                Err(Unproven::Violation(f)) => {
                    if failure
                        .as_ref()
                        .is_none_or(|d| f.linearized >= d.linearized)
                    {
                        failure = Some(f);
                    }
                }
                Err(undecided) => return Err(undecided),
            }
        }
        if ends.is_empty() {
            let f = failure.expect("a part with no end failed from every start");
            return Err(Unproven::Violation(Failure {
                stuck: part[f.stuck],
                state: f.state,
                linearized: before + f.linearized,
            }));
        }
        before += part.len();
        starts = ends.into_iter().collect();
    }
    Ok(steps)
}

/// Wing–Gong–Lowe search over `ops` from register value `start`. With `ends`, every value a
/// complete linearization can end with is added to it (success if there is one); without,
/// the first complete linearization is enough. `steps` counts across calls.
fn search(
    ops: &[Operation],
    start: Value,
    key: &str,
    allowance: &mut Allowance,
    steps: &mut u64,
    mut ends: Option<&mut std::collections::BTreeSet<Value>>,
) -> Result<(), Unproven> {
    let n = ops.len();
    if n == 0 {
        if let Some(ends) = ends {
            ends.insert(start);
        }
        return Ok(());
    }
    // Events: (history position, op, is_call). Unknown returns go after everything.
    let mut events: Vec<(u64, usize, bool)> = Vec::with_capacity(2 * n);
    for (i, op) in ops.iter().enumerate() {
        events.push((op.call, i, true));
        events.push((op.ret.unwrap_or(u64::MAX - n as u64 + i as u64), i, false));
    }
    events.sort_unstable();
    // A doubly linked list over the events, with a head sentinel at index len.
    let len = events.len();
    let head = len;
    // next[e] / prev[e] for event e; usize::MAX ends the list; the head comes first.
    let mut next: Vec<usize> = (1..len).chain([usize::MAX, 0]).collect();
    let mut prev: Vec<usize> = (0..=len)
        .map(|e| if e == 0 { head } else { e - 1 })
        .collect();
    let mut return_of = vec![0usize; n];
    let mut call_of = vec![0usize; n];
    for (e, &(_, op, is_call)) in events.iter().enumerate() {
        if is_call {
            call_of[op] = e;
        } else {
            return_of[op] = e;
        }
    }
    let unlink = |e: usize, next: &mut Vec<usize>, prev: &mut Vec<usize>| {
        let (p, nx) = (prev[e], next[e]);
        next[p] = nx;
        if nx != usize::MAX {
            prev[nx] = p;
        }
    };
    let relink = |e: usize, next: &mut Vec<usize>, prev: &mut Vec<usize>| {
        let (p, nx) = (prev[e], next[e]);
        next[p] = e;
        if nx != usize::MAX {
            prev[nx] = e;
        }
    };

    let words = n.div_ceil(64);
    let mut linearized = vec![0u64; words];
    let mut count = 0usize;
    let mut state: Value = start;
    let mut seen: HashSet<(Vec<u64>, Value)> = HashSet::new();
    let mut stack: Vec<(usize, Value)> = Vec::new();
    let mut deepest = Failure {
        stuck: events[0].1,
        state: None,
        linearized: 0,
    };
    let mut entry = next[head];
    // What one memo entry takes: its bitset, the value, the set's own slot and control byte.
    let entry_bytes = words * 8 + std::mem::size_of::<(Vec<u64>, Value)>() + 1;
    loop {
        *steps += 1;
        let steps = *steps;
        if steps.is_multiple_of(1 << 14) {
            let now = std::time::Instant::now();
            let memory = seen.len() * entry_bytes;
            let time = now >= allowance.deadline;
            if time || memory > allowance.memory {
                return Err(Unproven::Undecided(Exhausted {
                    time,
                    steps,
                    memory,
                }));
            }
            if now >= allowance.report_at {
                eprintln!(
                    "linearizable: key {key:?} ({} operations): {steps} search steps, {} states ({} MiB), {:.0} s in",
                    ops.len(),
                    seen.len(),
                    memory >> 20,
                    (now - allowance.started).as_secs_f64()
                );
                allowance.report_at = now + std::time::Duration::from_secs(5);
            }
        }
        if next[head] == usize::MAX {
            // Every operation placed: a linearization, ending at `state`.
            match ends.as_deref_mut() {
                None => return Ok(()),
                // Go on for the other ends it could have.
                Some(ends) => {
                    ends.insert(state);
                }
            }
        } else {
            let (_, op, is_call) = events[entry];
            if is_call {
                if let Some(after) = ops[op].step(state) {
                    linearized[op / 64] |= 1 << (op % 64);
                    if seen.insert((linearized.clone(), after)) {
                        stack.push((op, state));
                        state = after;
                        count += 1;
                        unlink(call_of[op], &mut next, &mut prev);
                        unlink(return_of[op], &mut next, &mut prev);
                        entry = next[head];
                        continue;
                    }
                    linearized[op / 64] &= !(1 << (op % 64));
                }
                entry = next[entry];
                continue;
            }
            // A return whose operation is not linearized: this branch is dead.
            if count >= deepest.linearized {
                deepest = Failure {
                    stuck: op,
                    state,
                    linearized: count,
                };
            }
        }
        // Back up: undo the latest placement and try the next operation after it.
        let Some((undo, before)) = stack.pop() else {
            return match ends {
                Some(ends) if !ends.is_empty() => Ok(()),
                _ => Err(Unproven::Violation(deepest)),
            };
        };
        linearized[undo / 64] &= !(1 << (undo % 64));
        count -= 1;
        state = before;
        relink(return_of[undo], &mut next, &mut prev);
        relink(call_of[undo], &mut next, &mut prev);
        entry = next[call_of[undo]];
    }
}

/// Checks a whole history within `budget`; invalid verdicts carry the offending window of the
/// first key that fails, as readable lines; a search the budget cannot finish is unknown.
pub fn check(history: &[Op], budget: &Budget) -> Verdict {
    let checker = "linearizable".to_string();
    let by_key = match operations(history) {
        Ok(by_key) => by_key,
        Err(e) => {
            return Verdict {
                unknown: false,
                figures: Vec::new(),
                checker,
                valid: false,
                summary: format!("malformed history: {e}"),
                evidence: vec![],
            };
        }
    };
    let total: usize = by_key.values().map(Vec::len).sum();
    let mut allowance = Allowance::new(budget);
    for (key, ops) in &by_key {
        match check_key(ops, key, &mut allowance) {
            Ok(_) => {}
            Err(Unproven::Undecided(spent)) => {
                let limit = if spent.time {
                    format!(
                        "its {} of time",
                        distlab_runtime::duration::format(budget.time)
                    )
                } else {
                    format!("its {} MiB of memory", budget.memory >> 20)
                };
                return Verdict {
                    unknown: true,
                    figures: Vec::new(),
                    checker,
                    valid: false,
                    summary: format!(
                        "unknown: budget exhausted: key {key:?} ({} operations) used {limit} undecided ({} search steps, {} MiB of states); --check-budget gives more",
                        ops.len(),
                        spent.steps,
                        spent.memory >> 20
                    ),
                    evidence: vec![format!(
                        "{} of them have an unknown outcome (each may or may not have happened: that is what makes the search long); neither valid nor invalid",
                        ops.iter().filter(|o| o.unknown).count()
                    )],
                };
            }
            Err(Unproven::Violation(failure)) => {
                let stuck = &ops[failure.stuck];
                // The window: the last few operations that finished before the stuck one began
                // (they fix what it should have seen), and everything concurrent with it.
                const CONTEXT: usize = 3;
                let end = stuck.ret.unwrap_or(u64::MAX);
                let mut before: Vec<&Operation> = ops
                    .iter()
                    .filter(|o| o.ret.is_some_and(|r| r < stuck.call))
                    .collect();
                before.sort_by_key(|o| o.ret);
                let context_start = before
                    .iter()
                    .rev()
                    .take(CONTEXT)
                    .map(|o| o.call)
                    .min()
                    .unwrap_or(stuck.call);
                let mut window: Vec<&Operation> = ops
                    .iter()
                    .filter(|o| o.call <= end && o.ret.is_none_or(|r| r >= stuck.call))
                    .chain(before.iter().rev().take(CONTEXT).copied())
                    .filter(|o| o.call >= context_start || o.ret.is_none_or(|r| r >= stuck.call))
                    .collect();
                window.sort_by_key(|o| o.call);
                window.dedup_by_key(|o| o.call);
                let mut evidence = vec![format!(
                    "key {key:?}: no order of these {} operations explains `{}`; the register could be {} after the {} operations before them",
                    window.len(),
                    stuck.what(),
                    show(failure.state),
                    failure.linearized,
                )];
                evidence.extend(window.iter().map(|o| format!("  {}", o.describe())));
                return Verdict {
                    unknown: false,
                    figures: Vec::new(),
                    checker,
                    valid: false,
                    summary: format!(
                        "NOT linearizable: key {key:?}, at operation #{}",
                        stuck.call
                    ),
                    evidence,
                };
            }
        }
    }
    Verdict {
        unknown: false,
        figures: Vec::new(),
        checker,
        valid: true,
        summary: format!(
            "linearizable: {total} operations over {} keys",
            by_key.len()
        ),
        evidence: vec![],
    }
}

/// A linearizable history by construction: `clients` processes doing random reads, writes
/// and cas on `keys` registers, each operation taking effect at a random instant between its
/// call and its return. For tests and the checker's benchmark.
pub fn synthetic_history(seed: u64, operations: usize, keys: usize, clients: usize) -> Vec<Op> {
    use rand::{Rng, SeedableRng};
    let mut rng = rand::rngs::SmallRng::seed_from_u64(seed);
    // (time, sequence, process, is_call, f, key, value) events, then sorted by time.
    struct Planned {
        at: f64,
        process: u64,
        kind: OpType,
        f: &'static str,
        key: String,
        value: serde_json::Value,
    }
    let mut registers: Vec<Value> = vec![None; keys];
    let mut clock = vec![0.0f64; clients];
    // Effects must be applied in time order: plan each op's call, effect and return times
    // first, then apply effects in effect order.
    struct Plan {
        process: usize,
        call: f64,
        effect: f64,
        ret: f64,
        key: usize,
        f: &'static str,
        arg: (i64, i64),
    }
    let mut plans = Vec::with_capacity(operations);
    for i in 0..operations {
        let process = i % clients;
        let call = clock[process] + rng.random_range(0.0..1.0);
        let ret = call + rng.random_range(0.1..3.0);
        clock[process] = ret;
        let f = match rng.random_range(0..10) {
            0..=3 => "read",
            4..=7 => "write",
            _ => "cas",
        };
        plans.push(Plan {
            process,
            call,
            effect: rng.random_range(call..ret),
            ret,
            key: rng.random_range(0..keys),
            f,
            arg: (rng.random_range(0..5), rng.random_range(0..5)),
        });
    }
    let mut order: Vec<usize> = (0..plans.len()).collect();
    order.sort_by(|a, b| plans[*a].effect.total_cmp(&plans[*b].effect));
    let mut results: Vec<(OpType, serde_json::Value)> =
        vec![(OpType::Ok, serde_json::Value::Null); plans.len()];
    for i in order {
        let p = &plans[i];
        let register = &mut registers[p.key];
        results[i] = match p.f {
            "read" => (
                OpType::Ok,
                register.map_or(serde_json::Value::Null, Into::into),
            ),
            "write" => {
                *register = Some(p.arg.0);
                (OpType::Ok, p.arg.0.into())
            }
            _ => {
                if *register == Some(p.arg.0) {
                    *register = Some(p.arg.1);
                    (OpType::Ok, serde_json::json!([p.arg.0, p.arg.1]))
                } else {
                    (OpType::Fail, serde_json::json!([p.arg.0, p.arg.1]))
                }
            }
        };
    }
    let mut planned = Vec::with_capacity(2 * plans.len());
    for (i, p) in plans.iter().enumerate() {
        let argument = match p.f {
            "read" => serde_json::Value::Null,
            "write" => p.arg.0.into(),
            _ => serde_json::json!([p.arg.0, p.arg.1]),
        };
        let key = format!("k{}", p.key);
        planned.push(Planned {
            at: p.call,
            process: p.process as u64,
            kind: OpType::Invoke,
            f: p.f,
            key: key.clone(),
            value: argument,
        });
        planned.push(Planned {
            at: p.ret,
            process: p.process as u64,
            kind: results[i].0,
            f: p.f,
            key,
            value: results[i].1.clone(),
        });
    }
    planned.sort_by(|a, b| a.at.total_cmp(&b.at));
    planned
        .into_iter()
        .enumerate()
        .map(|(index, p)| Op {
            index: index as u64,
            time: p.at,
            process: p.process,
            kind: p.kind,
            f: p.f.to_string(),
            key: Some(p.key),
            value: p.value,
            error: None,
            meta: None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// Builds a history from `(process, type, f, value)` rows on one key.
    fn history(rows: &[(u64, OpType, &str, serde_json::Value)]) -> Vec<Op> {
        rows.iter()
            .enumerate()
            .map(|(i, (p, t, f, v))| Op {
                index: i as u64,
                time: i as f64,
                process: *p,
                kind: *t,
                f: f.to_string(),
                key: Some("x".into()),
                value: v.clone(),
                error: None,
                meta: None,
            })
            .collect()
    }

    use OpType::{Fail, Info, Invoke, Ok};

    #[test]
    fn sequential_and_concurrent_histories_that_are_fine() {
        let h = history(&[
            (1, Invoke, "write", json!(1)),
            (1, Ok, "write", json!(1)),
            (2, Invoke, "read", json!(null)),
            (2, Ok, "read", json!(1)),
        ]);
        assert!(check(&h, &Budget::default()).valid);
        // A read concurrent with a write may see either value.
        for seen in [json!(null), json!(2)] {
            let h = history(&[
                (1, Invoke, "write", json!(2)),
                (2, Invoke, "read", json!(null)),
                (2, Ok, "read", seen),
                (1, Ok, "write", json!(2)),
            ]);
            assert!(check(&h, &Budget::default()).valid);
        }
    }

    #[test]
    fn a_stale_read_is_caught() {
        let h = history(&[
            (1, Invoke, "write", json!(1)),
            (1, Ok, "write", json!(1)),
            (1, Invoke, "write", json!(2)),
            (1, Ok, "write", json!(2)),
            (2, Invoke, "read", json!(null)),
            (2, Ok, "read", json!(1)),
        ]);
        let verdict = check(&h, &Budget::default());
        assert!(!verdict.valid, "{verdict:?}");
        assert!(
            verdict.evidence[0].contains("explains `read -> 1`"),
            "{:#?}",
            verdict.evidence
        );
        assert!(
            verdict.evidence.iter().any(|l| l.contains("write 2")),
            "the window shows the write it missed"
        );
    }

    #[test]
    fn a_lost_write_is_caught() {
        // Write 3 was acknowledged, but a later read sees the value from before it.
        let h = history(&[
            (1, Invoke, "write", json!(1)),
            (1, Ok, "write", json!(1)),
            (2, Invoke, "write", json!(3)),
            (2, Ok, "write", json!(3)),
            (1, Invoke, "read", json!(null)),
            (1, Ok, "read", json!(1)),
        ]);
        assert!(!check(&h, &Budget::default()).valid);
    }

    #[test]
    fn a_phantom_cas_is_caught() {
        // The cas succeeded, but the register never held its expected value.
        let h = history(&[
            (1, Invoke, "write", json!(1)),
            (1, Ok, "write", json!(1)),
            (2, Invoke, "cas", json!([5, 6])),
            (2, Ok, "cas", json!([5, 6])),
        ]);
        assert!(!check(&h, &Budget::default()).valid);
        // The same cas reported as failed is fine: it did not happen.
        let h = history(&[
            (1, Invoke, "write", json!(1)),
            (1, Ok, "write", json!(1)),
            (2, Invoke, "cas", json!([5, 6])),
            (2, Fail, "cas", json!([5, 6])),
            (2, Invoke, "read", json!(null)),
            (2, Ok, "read", json!(1)),
        ]);
        assert!(check(&h, &Budget::default()).valid);
    }

    #[test]
    fn unknown_outcomes_may_or_may_not_have_happened() {
        // A write that timed out, seen later: it happened.
        let seen = history(&[
            (1, Invoke, "write", json!(7)),
            (1, Info, "write", json!(7)),
            (2, Invoke, "read", json!(null)),
            (2, Ok, "read", json!(7)),
        ]);
        assert!(check(&seen, &Budget::default()).valid);
        // ... never seen: it may not have happened.
        let unseen = history(&[
            (1, Invoke, "write", json!(7)),
            (1, Info, "write", json!(7)),
            (2, Invoke, "read", json!(null)),
            (2, Ok, "read", json!(null)),
        ]);
        assert!(check(&unseen, &Budget::default()).valid);
        // ... but it cannot un-happen: seen, then gone without another write.
        let flicker = history(&[
            (1, Invoke, "write", json!(7)),
            (1, Info, "write", json!(7)),
            (2, Invoke, "read", json!(null)),
            (2, Ok, "read", json!(7)),
            (2, Invoke, "read", json!(null)),
            (2, Ok, "read", json!(null)),
        ]);
        assert!(!check(&flicker, &Budget::default()).valid);
    }

    #[test]
    fn many_unknown_writes_nobody_saw_do_not_blow_up_the_search() {
        // A crash leaves 300 writes of unknown outcome, all concurrent with what follows.
        let mut rows = vec![
            (1000, Invoke, "write", json!(1)),
            (1000, Ok, "write", json!(1)),
        ];
        for p in 0..300u64 {
            rows.push((p, Invoke, "write", json!(100 + p as i64)));
        }
        for p in 0..300u64 {
            rows.push((p, Info, "write", json!(100 + p as i64)));
        }
        rows.push((1001, Invoke, "read", json!(null)));
        rows.push((1001, Ok, "read", json!(1)));
        let h = history(&rows);
        assert!(check(&h, &Budget::default()).valid);
        // Decided in a handful of steps, not an exponential search.
        let ops = operations(&h).unwrap().remove("x").unwrap();
        assert_eq!(ops.len(), 2, "the unseen unknown writes were set aside");
        let steps = check_key(&ops, "x", &mut Allowance::unlimited()).unwrap();
        assert!(steps < 100, "{steps} steps");
    }

    #[test]
    fn an_unseen_unknown_write_does_not_excuse_a_stale_read() {
        let h = history(&[
            (1, Invoke, "write", json!(1)),
            (1, Ok, "write", json!(1)),
            (1, Invoke, "write", json!(2)),
            (1, Ok, "write", json!(2)),
            (3, Invoke, "write", json!(3)),
            (3, Info, "write", json!(3)),
            (2, Invoke, "read", json!(null)),
            (2, Ok, "read", json!(1)),
        ]);
        assert!(!check(&h, &Budget::default()).valid);
    }

    /// A search its budget cannot finish is unknown: neither a pass nor a failure.
    #[test]
    fn a_search_over_budget_is_unknown_not_passed() {
        let h = synthetic_history(4, 150, 1, 20);
        let ops = operations(&h).unwrap().remove("k0").unwrap();
        let steps = check_key(&ops, "k0", &mut Allowance::unlimited()).unwrap();
        assert!(
            steps > 1 << 14,
            "{steps} steps: too few to meet a budget check"
        );
        let tight = Budget {
            time: std::time::Duration::from_secs(3600),
            memory: 1,
        };
        let verdict = check(&h, &tight);
        assert!(verdict.unknown && !verdict.valid, "{verdict:?}");
        assert!(
            verdict
                .summary
                .starts_with("unknown: budget exhausted: key \"k0\"")
                && verdict.summary.contains("memory"),
            "{}",
            verdict.summary
        );
        assert!(check(&h, &Budget::default()).valid);
    }

    /// Quiescent points cut a key's history: nothing crosses them, and an operation with an
    /// unknown outcome stays pending to the end.
    #[test]
    fn a_history_is_cut_where_nothing_is_pending() {
        let h = history(&[
            (1, Invoke, "write", json!(1)),
            (2, Invoke, "read", json!(null)),
            (1, Ok, "write", json!(1)),
            (2, Ok, "read", json!(1)),
            (1, Invoke, "write", json!(2)),
            (1, Ok, "write", json!(2)),
            (3, Invoke, "write", json!(3)),
            (3, Info, "write", json!(3)),
            (1, Invoke, "read", json!(null)),
            (1, Ok, "read", json!(3)),
            (2, Invoke, "read", json!(null)),
            (2, Ok, "read", json!(3)),
        ]);
        let ops = operations(&h).unwrap().remove("x").unwrap();
        let parts: Vec<usize> = quiescent_parts(&ops).iter().map(Vec::len).collect();
        assert_eq!(parts, vec![2, 1, 3]);
        assert!(check(&h, &Budget::default()).valid);
    }

    /// Across a cut the search carries every value the part before can end with: here the
    /// first part can end at 1 or 2, and only 2 explains the read after the cut.
    #[test]
    fn every_end_of_a_part_is_a_start_of_the_next() {
        let h = history(&[
            (1, Invoke, "write", json!(1)),
            (2, Invoke, "write", json!(2)),
            (1, Ok, "write", json!(1)),
            (2, Ok, "write", json!(2)),
            (1, Invoke, "read", json!(null)),
            (1, Ok, "read", json!(2)),
        ]);
        assert!(check(&h, &Budget::default()).valid);
        let stale = history(&[
            (1, Invoke, "write", json!(1)),
            (1, Ok, "write", json!(1)),
            (2, Invoke, "write", json!(2)),
            (2, Ok, "write", json!(2)),
            (1, Invoke, "read", json!(null)),
            (1, Ok, "read", json!(1)),
        ]);
        let verdict = check(&stale, &Budget::default());
        assert!(!verdict.valid && !verdict.unknown, "{verdict:?}");
        assert!(
            verdict.evidence[0].contains("read -> 1"),
            "{:?}",
            verdict.evidence
        );
    }

    #[test]
    fn keys_are_independent_registers() {
        let mut h = history(&[
            (1, Invoke, "write", json!(1)),
            (1, Ok, "write", json!(1)),
            (2, Invoke, "read", json!(null)),
            (2, Ok, "read", json!(null)),
        ]);
        h[2].key = Some("y".into());
        h[3].key = Some("y".into());
        assert!(check(&h, &Budget::default()).valid);
    }

    #[test]
    fn malformed_histories_are_reported_not_judged() {
        let h = history(&[(1, Ok, "write", json!(1))]);
        let verdict = check(&h, &Budget::default());
        assert!(
            !verdict.valid && verdict.summary.contains("never invoked"),
            "{verdict:?}"
        );
        let h = history(&[(1, Invoke, "append", json!(1)), (1, Ok, "append", json!(1))]);
        assert!(
            check(&h, &Budget::default())
                .summary
                .contains("no operation \"append\"")
        );
    }

    #[test]
    fn synthetic_histories_are_linearizable_and_tampering_is_caught() {
        for seed in 0..5 {
            let h = synthetic_history(seed, 2000, 5, 10);
            let verdict = check(&h, &Budget::default());
            assert!(verdict.valid, "seed {seed}: {verdict:?}");
        }
        // Change one read's result to a value never written: caught.
        let mut h = synthetic_history(1, 2000, 5, 10);
        let read = h
            .iter()
            .position(|o| o.kind == Ok && o.f == "read")
            .unwrap();
        h[read].value = json!(99);
        assert!(!check(&h, &Budget::default()).valid);
    }
}
