//! Project 6 in the lab: collaborative documents (`services/collab`): two servers (`s1`, `s2`:
//! two regions replicating to each other) and editors (`e1`..: e1 and e3 on s1, e2 on s2),
//! a typing workload, the convergence checks and the convergence view.
//!
//! The workload: one client per editor, each operation a burst of the editor's simulated
//! typist (`POST /type`: letters at its cursor, some backspaces, now and then a jump), made
//! on the editor's own replica whether or not it can reach a server: an editor cut off keeps
//! typing. The final reads wait for every replica (servers and editors) to report the same
//! text digest, measuring how long that took after the faults and the typing stopped, then
//! record each node's figures: `collab_convergence`, `collab_acked` and `collab_intention`
//! check them.

pub mod bench;
pub mod convergence_view;
pub mod history_view;
mod relay;

use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::Rng;
use rand::rngs::SmallRng;
use serde_json::json;

use crate::console::views::{ClusterView, Figure, ProjectUi};
use crate::engine::history::{FINAL_PROCESS, OpType, Recorder};
use crate::engine::model::NodeView;
use crate::engine::project::{Count, PeerLinks, Project, Role};
use crate::engine::scenario::CheckSpec;
use crate::engine::workload::{BoxFuture, Client, Driver, Target, WorkloadSpec};

pub const PROJECT: Project = Project {
    name: "proj6",
    title: "CRDT collaborative documents: a sequence CRDT (FugueMax), servers in two regions replicating by anti-entropy, editors that type offline and merge",
    service: "collab",
    roles: &[
        Role {
            name: "server",
            count: Count::Fixed(2),
            id_prefix: "s",
            service: None,
            flags: &["--role", "server", "--servers", "s1,s2"],
        },
        Role {
            name: "editor",
            count: Count::Rest,
            id_prefix: "e",
            service: None,
            flags: &["--role", "editor", "--servers", "s1,s2"],
        },
    ],
    default_nodes: 5,
    peer_links: PeerLinks::Tcp,
    node_flags: &["--anti-entropy", "500ms"],
    initial_members_flag: None,
    node_main: distlab_collab::node::main,
    check_node_flags: distlab_collab::node::check_flags,
    scaling: None,
    remove_member: None,
    workload: &Typing,
    checks: &[
        CheckSpec::CollabConvergence,
        CheckSpec::CollabAcked,
        CheckSpec::CollabIntention,
        CheckSpec::Availability { min: None },
    ],
};

/// The document the lab's editors share.
pub const DOC: &str = "notes";

/// A node's figures for its document: a server's entry for [`DOC`], an editor's detail.
pub fn doc_figures(n: &NodeView) -> Option<serde_json::Value> {
    if n.node.role == "server" {
        n.detail["docs"]
            .as_array()?
            .iter()
            .find(|d| d["name"] == DOC)
            .cloned()
    } else {
        n.detail.get("digest").map(|_| n.detail.clone())
    }
}

fn figure(n: &NodeView, key: &str) -> String {
    doc_figures(n).map_or(String::new(), |d| match &d[key] {
        serde_json::Value::String(s) => s.chars().take(8).collect(),
        serde_json::Value::Null => String::new(),
        other => other.to_string(),
    })
}

/// The node table's figures and the views of a Project 6 console (it opens on the
/// convergence view).
pub fn console() -> ProjectUi {
    ProjectUi {
        figures: &[
            Figure {
                header: "chars",
                value: |n| figure(n, "chars"),
            },
            Figure {
                header: "ops",
                value: |n| figure(n, "ops"),
            },
            Figure {
                header: "digest",
                value: |n| figure(n, "digest"),
            },
            Figure {
                header: "unacked",
                value: |n| figure(n, "unacked_ops"),
            },
        ],
        views: vec![
            Box::new(convergence_view::ConvergenceView),
            Box::new(history_view::HistoryView),
            Box::new(ClusterView),
        ],
        quiet_events: &[],
    }
}

/// The typing workload.
pub struct Typing;

struct Typist {
    http: reqwest::Client,
    editor: Target,
    recorder: Arc<Recorder>,
}

impl Client for Typist {
    fn operate<'a>(
        &'a mut self,
        process: u64,
        rng: &'a mut SmallRng,
    ) -> BoxFuture<'a, (String, OpType)> {
        Box::pin(async move {
            let steps: u32 = rng.random_range(1..=8);
            let key = self.editor.node.clone();
            self.recorder.record(
                process,
                OpType::Invoke,
                "type",
                Some(&key),
                json!({"steps": steps}),
                None,
            );
            let url = format!("http://{}/type", self.editor.addr);
            let answer = async {
                let response = self
                    .http
                    .post(url)
                    .json(&json!({"steps": steps}))
                    .send()
                    .await?;
                let status = response.status();
                let body = response.text().await?;
                anyhow::ensure!(status.is_success(), "{status}: {body}");
                Ok(body.trim().parse::<u64>().unwrap_or_default())
            };
            let kind = match answer.await {
                Ok(own_ops) => {
                    self.recorder.record(
                        process,
                        OpType::Ok,
                        "type",
                        Some(&key),
                        json!({"steps": steps, "own_ops": own_ops}),
                        None,
                    );
                    OpType::Ok
                }
                Err(error) => {
                    // Typing is local to the editor: it failed only if the editor did not
                    // answer (down, or paused), and then typed nothing.
                    self.recorder.record(
                        process,
                        OpType::Fail,
                        "type",
                        Some(&key),
                        json!({"steps": steps}),
                        Some(format!("{error:#}")),
                    );
                    OpType::Fail
                }
            };
            (key, kind)
        })
    }
}

/// A node's `/status` detail, read directly (the admin port has no link proxy).
async fn detail(
    http: &reqwest::Client,
    admin: std::net::SocketAddr,
) -> anyhow::Result<serde_json::Value> {
    let status: serde_json::Value = http
        .get(format!("http://{admin}/status"))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    Ok(status["detail"].clone())
}

impl Driver for Typing {
    fn clients(
        &self,
        spec: &WorkloadSpec,
        targets: &[Target],
        recorder: &Arc<Recorder>,
    ) -> anyhow::Result<Vec<Box<dyn Client>>> {
        let editors: Vec<&Target> = targets.iter().filter(|t| t.role == "editor").collect();
        anyhow::ensure!(!editors.is_empty(), "the typing workload needs an editor");
        let http = reqwest::Client::builder().timeout(spec.timeout).build()?;
        // One typist per editor at least; more clients share the editors.
        let clients = spec.clients.max(editors.len());
        Ok((0..clients)
            .map(|i| {
                Box::new(Typist {
                    http: http.clone(),
                    editor: editors[i % editors.len()].clone(),
                    recorder: recorder.clone(),
                }) as Box<dyn Client>
            })
            .collect())
    }

    fn final_reads<'a>(
        &'a self,
        _spec: &'a WorkloadSpec,
        targets: &'a [Target],
        recorder: &'a Recorder,
        deadline: Duration,
    ) -> BoxFuture<'a, anyhow::Result<()>> {
        Box::pin(async move {
            let http = reqwest::Client::builder()
                .timeout(Duration::from_secs(2))
                .build()?;
            let started = Instant::now();
            // Until every replica reports one digest, or the deadline.
            let mut details = Vec::new();
            let converged = loop {
                details.clear();
                for target in targets {
                    details.push(match target.admin {
                        Some(admin) => detail(&http, admin).await.ok(),
                        None => None,
                    });
                }
                let digests: Vec<Option<String>> = details
                    .iter()
                    .zip(targets)
                    .map(|(d, t)| {
                        let d = d.as_ref()?;
                        let doc = if t.role == "server" {
                            d["docs"]
                                .as_array()?
                                .iter()
                                .find(|x| x["name"] == DOC)?
                                .clone()
                        } else {
                            d.clone()
                        };
                        Some(doc["digest"].as_str()?.to_string())
                    })
                    .collect();
                if digests[0].is_some() && digests.iter().all(|d| *d == digests[0]) {
                    break true;
                }
                if started.elapsed() >= deadline {
                    break false;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            };
            let converge_ms = started.elapsed().as_millis() as u64;
            for (target, detail) in targets.iter().zip(&details) {
                recorder.record(
                    FINAL_PROCESS,
                    OpType::Invoke,
                    "final",
                    Some(&target.node),
                    json!(null),
                    None,
                );
                match detail {
                    Some(detail) => recorder.record(
                        FINAL_PROCESS,
                        OpType::Ok,
                        "final",
                        Some(&target.node),
                        json!({
                            "role": target.role,
                            "detail": detail,
                            "converged": converged,
                            "converge_ms": converge_ms,
                        }),
                        None,
                    ),
                    None => recorder.record(
                        FINAL_PROCESS,
                        OpType::Fail,
                        "final",
                        Some(&target.node),
                        json!(null),
                        Some("its /status did not answer".into()),
                    ),
                };
            }
            Ok(())
        })
    }
}
