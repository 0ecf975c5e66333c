//! Project 6's checks, on the final reads of every replica (`final` operations of the
//! `FINAL_PROCESS`: each node's `/status` detail once the run's faults and typing are over,
//! taken when all agreed or at the deadline).
//!
//! - `collab_convergence`: strong eventual consistency: every replica, servers and editors,
//!   holds the same text (digest), and how long after the heal that took.
//! - `collab_acked`: no acknowledged edit lost: for each editor, every server holds at least
//!   the edits a server acknowledged to it (stored durably there before the `Ack`).
//! - `collab_intention`: intention preserved: on every server, each editor's characters stand
//!   in the order the editor typed them in (which it records apart from the CRDT,
//!   `distlab_collab::intent`), deleted ones included where they were.

use std::collections::BTreeMap;

use super::Verdict;
use crate::engine::history::{FINAL_PROCESS, Op, OpType};

/// The document the lab's editors share.
const DOC: &str = "notes";

struct Final<'a> {
    node: &'a str,
    role: String,
    /// The document's figures (a server's entry for it; an editor's detail).
    doc: Option<&'a serde_json::Value>,
    converge_ms: Option<u64>,
}

/// Each node's final read; the nodes whose read failed.
fn finals(history: &[Op]) -> (Vec<Final<'_>>, Vec<String>) {
    let mut finals = Vec::new();
    let mut missing = Vec::new();
    for op in history
        .iter()
        .filter(|op| op.process >= FINAL_PROCESS && op.f == "final")
    {
        let node = op.key.as_deref().unwrap_or("?");
        match op.kind {
            OpType::Ok => {
                let role = op.value["role"].as_str().unwrap_or_default().to_string();
                let detail = &op.value["detail"];
                let doc = if role == "server" {
                    detail["docs"]
                        .as_array()
                        .and_then(|docs| docs.iter().find(|d| d["name"] == DOC))
                } else {
                    detail.get("digest").map(|_| detail)
                };
                finals.push(Final {
                    node,
                    role,
                    doc,
                    converge_ms: op.value["converge_ms"].as_u64(),
                });
            }
            OpType::Fail | OpType::Info => missing.push(node.to_string()),
            OpType::Invoke => {}
        }
    }
    (finals, missing)
}

fn verdict(checker: &str, valid: bool, summary: String, evidence: Vec<String>) -> Verdict {
    Verdict {
        checker: checker.into(),
        valid,
        unknown: false,
        summary,
        evidence,
        figures: Vec::new(),
    }
}

fn describe(f: &Final) -> String {
    match f.doc {
        Some(doc) => format!(
            "{} ({}): digest {} · {} chars · {} ops · {} pending · {:?}",
            f.node,
            f.role,
            doc["digest"].as_str().unwrap_or("?"),
            doc["chars"],
            doc["ops"],
            doc["pending"],
            doc["excerpt"]
                .as_str()
                .unwrap_or_default()
                .chars()
                .take(40)
                .collect::<String>()
        ),
        None => format!("{} ({}): does not hold the document", f.node, f.role),
    }
}

pub fn convergence(history: &[Op]) -> Verdict {
    const CHECKER: &str = "collab_convergence";
    let (finals, missing) = finals(history);
    if finals.is_empty() {
        return verdict(
            CHECKER,
            false,
            "no final reads: nothing to compare".into(),
            missing,
        );
    }
    let mut evidence: Vec<String> = finals.iter().map(describe).collect();
    if !missing.is_empty() {
        evidence.push(format!("no final read from: {}", missing.join(", ")));
        return verdict(
            CHECKER,
            false,
            format!("{} replicas could not be read at the end", missing.len()),
            evidence,
        );
    }
    let digests: BTreeMap<Option<&str>, Vec<&str>> =
        finals.iter().fold(BTreeMap::new(), |mut by, f| {
            by.entry(f.doc.and_then(|d| d["digest"].as_str()))
                .or_insert_with(Vec::new)
                .push(f.node);
            by
        });
    let first = finals[0].doc;
    let converge_ms = finals
        .iter()
        .filter_map(|f| f.converge_ms)
        .max()
        .unwrap_or(0);
    if let (1, Some(doc)) = (digests.len(), first) {
        let mut v = verdict(
            CHECKER,
            true,
            format!(
                "{} replicas hold one text ({} chars, {} ops), {converge_ms} ms after the faults and the typing stopped",
                finals.len(),
                doc["chars"],
                doc["ops"]
            ),
            evidence,
        );
        v.figures = vec![
            ("converge_ms".into(), converge_ms.to_string()),
            ("chars".into(), doc["chars"].to_string()),
            ("ops".into(), doc["ops"].to_string()),
        ];
        return v;
    }
    verdict(
        CHECKER,
        false,
        format!(
            "the replicas hold {} different texts {converge_ms} ms after the faults stopped",
            digests.len()
        ),
        evidence,
    )
}

pub fn acked(history: &[Op]) -> Verdict {
    const CHECKER: &str = "collab_acked";
    let (finals, missing) = finals(history);
    let servers: Vec<&Final> = finals.iter().filter(|f| f.role == "server").collect();
    let editors: Vec<&Final> = finals.iter().filter(|f| f.role == "editor").collect();
    if servers.is_empty() || editors.is_empty() {
        return verdict(
            CHECKER,
            false,
            "no final reads of servers and editors to compare".into(),
            missing,
        );
    }
    let mut evidence = Vec::new();
    let mut lost = 0;
    let (mut acked_total, mut made_total) = (0, 0);
    for editor in &editors {
        let Some(doc) = editor.doc else { continue };
        let replica = doc["replica"].as_u64().unwrap_or_default();
        let acked = doc["acked_ops"].as_u64().unwrap_or_default();
        acked_total += acked;
        made_total += doc["own_ops"].as_u64().unwrap_or_default();
        // Version vectors are keyed by the replica id in hex.
        let key = format!("{replica:016x}");
        for server in &servers {
            let held = server
                .doc
                .and_then(|d| d["version"][&key].as_u64())
                .unwrap_or(0);
            if held < acked {
                lost += acked - held;
                evidence.push(format!(
                    "{} holds {held} of {}'s edits; {acked} were acknowledged",
                    server.node, editor.node
                ));
            }
        }
    }
    for node in &missing {
        evidence.push(format!("no final read from {node}"));
    }
    if lost == 0 && missing.is_empty() {
        let mut v = verdict(
            CHECKER,
            true,
            format!(
                "every acknowledged edit ({acked_total} of the {made_total} the editors made) is held by all {} servers",
                servers.len()
            ),
            evidence,
        );
        v.figures = vec![
            ("acked".into(), acked_total.to_string()),
            ("made".into(), made_total.to_string()),
        ];
        return v;
    }
    let summary = if lost > 0 {
        format!("{lost} acknowledged edits missing from a server")
    } else {
        format!("{} nodes could not be read at the end", missing.len())
    };
    verdict(CHECKER, false, summary, evidence)
}

pub fn intention(history: &[Op]) -> Verdict {
    const CHECKER: &str = "collab_intention";
    let (finals, missing) = finals(history);
    let servers: Vec<&Final> = finals.iter().filter(|f| f.role == "server").collect();
    let editors: Vec<&Final> = finals.iter().filter(|f| f.role == "editor").collect();
    let mut evidence = Vec::new();
    let (mut compared, mut broken, mut chars) = (0, 0, 0);
    for editor in &editors {
        let Some(doc) = editor.doc else { continue };
        let replica = format!("{:016x}", doc["replica"].as_u64().unwrap_or_default());
        let typed = &doc["intent"]["order"];
        let Some(digest) = typed["digest"].as_str() else {
            evidence.push(format!("{} reports no record of its typing", editor.node));
            continue;
        };
        let made = doc["own_ops"].as_u64().unwrap_or_default();
        chars += typed["chars"].as_u64().unwrap_or_default();
        if doc["intent"]["resumed"] == true {
            evidence.push(format!(
                "{} restarted from its store: its record covers what it typed since",
                editor.node
            ));
        }
        for server in &servers {
            let Some(held_doc) = server.doc else { continue };
            let held = held_doc["version"][&replica].as_u64().unwrap_or(0);
            if held != made {
                evidence.push(format!(
                    "{} holds {held} of {}'s {made} edits: not compared",
                    server.node, editor.node
                ));
                continue;
            }
            compared += 1;
            let order = &held_doc["orders"][&replica];
            if order["digest"].as_str() != Some(digest) || order["chars"] != typed["chars"] {
                broken += 1;
                evidence.push(format!(
                    "{}: {}'s characters stand in another order than it typed them (digest {} over {} chars there; typed {digest} over {})",
                    server.node, editor.node, order["digest"], order["chars"], typed["chars"]
                ));
            }
        }
    }
    for node in &missing {
        evidence.push(format!("no final read from {node}"));
    }
    if broken > 0 {
        return verdict(
            CHECKER,
            false,
            format!("{broken} server copies put an editor's characters out of its typing order"),
            evidence,
        );
    }
    if compared == 0 {
        return verdict(
            CHECKER,
            false,
            "no server held all of an editor's edits at the end: nothing to compare".into(),
            evidence,
        );
    }
    let mut v = verdict(
        CHECKER,
        true,
        format!(
            "on every server, the {chars} characters the editors typed stand in the order each editor typed its own ({compared} comparisons)"
        ),
        evidence,
    );
    v.figures = vec![("typed_chars".into(), chars.to_string())];
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::history::Recorder;
    use serde_json::json;

    fn history(server_holds: u64, editor_digest: &str) -> Vec<Op> {
        history_with_order(server_holds, editor_digest, "0f")
    }

    /// The server holds the editor's characters in the order `server_order` (the editor
    /// typed them in order "0f").
    fn history_with_order(server_holds: u64, editor_digest: &str, server_order: &str) -> Vec<Op> {
        let recorder = Recorder::create(None).unwrap();
        let server = json!({
            "role": "server",
            "converge_ms": 120,
            "detail": {"docs": [{"name": "notes", "digest": "aa", "chars": 5, "ops": 5, "pending": 0,
                "version": {"0000000000000007": server_holds},
                "orders": {"0000000000000007": {"digest": server_order, "chars": 5}}}]},
        });
        let editor = json!({
            "role": "editor",
            "converge_ms": 120,
            "detail": {"name": "notes", "digest": editor_digest, "chars": 5, "ops": 5, "pending": 0,
                "replica": 7, "own_ops": 5, "acked_ops": 4,
                "intent": {"order": {"digest": "0f", "chars": 5}, "resumed": false}},
        });
        for (node, value) in [("s1", server), ("e1", editor)] {
            recorder.record(
                FINAL_PROCESS,
                OpType::Invoke,
                "final",
                Some(node),
                json!(null),
                None,
            );
            recorder.record(FINAL_PROCESS, OpType::Ok, "final", Some(node), value, None);
        }
        recorder.ops()
    }

    #[test]
    fn one_digest_everywhere_is_convergence() {
        let v = convergence(&history(5, "aa"));
        assert!(v.valid, "{v:?}");
        assert!(
            v.summary.contains("2 replicas hold one text"),
            "{}",
            v.summary
        );
        assert_eq!(v.figures[0], ("converge_ms".into(), "120".into()));
    }

    #[test]
    fn two_digests_are_not() {
        let v = convergence(&history(5, "bb"));
        assert!(!v.valid);
        assert!(v.summary.contains("2 different texts"), "{}", v.summary);
    }

    #[test]
    fn a_server_missing_an_acknowledged_edit_is_a_loss() {
        assert!(acked(&history(4, "aa")).valid);
        let v = acked(&history(3, "aa"));
        assert!(!v.valid);
        assert!(
            v.evidence[0].contains("s1 holds 3 of e1's edits; 4 were acknowledged"),
            "{:?}",
            v.evidence
        );
    }

    #[test]
    fn an_editors_characters_out_of_its_typing_order_break_intention() {
        let v = intention(&history(5, "aa"));
        assert!(v.valid, "{v:?}");
        assert!(v.summary.contains("the 5 characters"), "{}", v.summary);
        let v = intention(&history_with_order(5, "aa", "f0"));
        assert!(!v.valid);
        assert!(v.evidence[0].contains("another order"), "{:?}", v.evidence);
        // A server that does not hold all of the editor's edits is not compared.
        let v = intention(&history_with_order(4, "aa", "f0"));
        assert!(
            !v.valid && v.summary.contains("nothing to compare"),
            "{v:?}"
        );
    }
}
