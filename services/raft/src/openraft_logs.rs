//! openraft's own log lines, made readable. openraft logs an ordinary election's traffic as
//! WARN and ERROR (a vote request that timed out, a reply ignored because the term moved on,
//! appends to a peer that is down, a read-index round that could not reach a dead follower) and
//! names nodes by their 18-digit Raft ids: the first thing a newcomer saw in the lab's log pane
//! was a screen of ERRORs about numbers during a healthy failover. What Raft expects to happen
//! while nodes come and go is logged at DEBUG here (dropped unless `RUST_LOG` asks for
//! openraft's debug lines), and every id this node knows is written as the node's name.
//! Anything else openraft says keeps its level: a storage error is still an ERROR.

use distlab_runtime::telemetry;

use crate::member::Names;

/// What openraft logs at WARN or ERROR in the normal course of elections and of peers going
/// away and coming back, by the start of its message.
const EXPECTED: &[&str] = &[
    // A vote request that got no answer in time, or none at all (the peer is down).
    "timeout",
    "while requesting vote",
    // A vote reply or a higher-vote notice that arrived after the term moved on.
    "A message will be ignored because vote changed",
    // Appends and heartbeats to a peer that is down, partitioned or slow.
    "error replication to target",
    "RPCError",
    "update progress error",
    "heartbeat error",
    "openraft::replication::ReplicationCore<_, _, _>::backoff_drain_events backoff mode",
    // A read-index round that could not hear from a majority yet (a follower is down).
    "timeout while confirming leadership for read request",
];

/// Rewrites openraft's lines on this node's log from now on: expected election traffic to
/// DEBUG (dropped unless openraft's debug lines are asked for) and Raft ids to node names.
pub fn install(names: &Names) {
    let debug_shown = tracing::enabled!(target: "openraft", tracing::Level::DEBUG);
    let names = names.clone();
    telemetry::rewrite_lines(
        "openraft",
        Box::new(move |line| rewrite(line, &names, debug_shown)),
    );
}

/// One JSON line of openraft's: `false` drops it.
fn rewrite(line: &mut String, names: &Names, debug_shown: bool) -> bool {
    if is_expected(line) {
        if !debug_shown {
            return false;
        }
        telemetry::relevel(line, tracing::Level::DEBUG);
    }
    for (id, name) in names.iter() {
        // openraft writes a vote as `T3-N626983344707000793:committed`, a target as the bare id.
        *line = line
            .replace(&format!("N{id}"), name)
            .replace(&id.to_string(), name);
    }
    true
}

fn is_expected(line: &str) -> bool {
    let Ok(serde_json::Value::Object(fields)) = serde_json::from_str::<serde_json::Value>(line)
    else {
        return false;
    };
    let level = fields.get("level").and_then(|l| l.as_str());
    let message = fields
        .get("message")
        .and_then(|m| m.as_str())
        .unwrap_or_default();
    matches!(level, Some("WARN" | "ERROR")) && EXPECTED.iter().any(|e| message.starts_with(e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::member::raft_id;

    fn line(level: &str, message: &str, extra: &str) -> String {
        format!(
            r#"{{"timestamp":"2026-12-03T08:16:47.020130Z","level":"{level}","message":"{message}"{extra},"target":"openraft::core::raft_core"}}"#
        )
    }

    #[test]
    fn election_traffic_goes_below_warn_and_ids_become_names() {
        let names = Names::new(["n1", "n2", "n3"]);
        let (n1, n3) = (raft_id("n1"), raft_id("n3"));
        let vote_timeout = line(
            "ERROR",
            "timeout",
            &format!(r#","error":"timeout after 250ms when Vote {n1}->{n3}","target":"{n3}""#),
        );
        let mut shown = vote_timeout.clone();
        assert!(
            !rewrite(&mut shown.clone(), &names, false),
            "dropped at the default level"
        );
        assert!(rewrite(&mut shown, &names, true));
        assert!(shown.contains(r#""level":"DEBUG""#), "{shown}");
        assert!(shown.contains("when Vote n1->n3"), "{shown}");
        assert!(!shown.contains(&n1.to_string()), "{shown}");

        let mut ignored = line(
            "WARN",
            &format!(
                "A message will be ignored because vote changed: msg sent by vote: T2-N{n1}:uncommitted; current my vote: None; when (VoteResponse)"
            ),
            "",
        );
        assert!(rewrite(&mut ignored, &names, true));
        assert!(ignored.contains("T2-n1:uncommitted"), "{ignored}");

        // What openraft does not say in an ordinary election keeps its level, with names.
        let mut storage = line("ERROR", &format!("storage error on {n3}: disk full"), "");
        assert!(rewrite(&mut storage, &names, false));
        assert!(storage.contains(r#""level":"ERROR""#), "{storage}");
        assert!(
            storage.contains("storage error on n3: disk full"),
            "{storage}"
        );

        // An id this node does not know stays a number.
        let stranger = raft_id("n9");
        let mut unknown = line("ERROR", &format!("storage error on {stranger}"), "");
        assert!(rewrite(&mut unknown, &names, false));
        assert!(unknown.contains(&stranger.to_string()));
    }
}
