//! Scenario files: a cluster, a workload, fault steps, checks. `lab scenario FILE` runs one
//! headless and ends with a verdict; the format is documented in `scenarios/README.md`.
//!
//! A file is parsed and validated whole before anything starts: unknown fields, unknown
//! steps, unknown nodes, bad durations and bad fault specs are reported as `FILE:LINE:COL:
//! what was expected`, and the exit code is 2.

use std::path::Path;
use std::time::Duration;

use serde::Deserialize;

use super::link::LinkFaults;
use super::partition::{self, Partition};
use super::predicate::StatusPredicate;
use super::project::{self, ClusterSpec, Project};
use super::supervisor::SPARE_NODES;
use super::workload::{WorkloadSpec, duration_text};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    pub name: String,
    /// What the scenario demonstrates, and what would fail if the system were wrong.
    #[serde(default)]
    pub description: String,
    pub project: String,
    #[serde(default)]
    pub nodes: Option<usize>,
    #[serde(default)]
    pub seed: Option<u64>,
    #[serde(default)]
    pub workload: Option<WorkloadSpec>,
    #[serde(with = "serde_yaml::with::singleton_map_recursive")]
    pub steps: Vec<Step>,
    #[serde(default, with = "serde_yaml::with::singleton_map_recursive")]
    pub check: Vec<CheckSpec>,
    /// Service flags added to every node: `node_flags: [--read-mode, lease]`.
    #[serde(default)]
    pub node_flags: Vec<String>,
    /// The verdict a check should reach, where it is not `valid`: a scenario made to show a
    /// checker catching a broken system says `expect: {linearizable: invalid}`, and passes
    /// only if the checker does catch it.
    #[serde(default)]
    pub expect: std::collections::BTreeMap<String, Expect>,
    /// Run the whole scenario once per variant, each with its own extra node flags, and
    /// print the runs side by side (ring vs rendezvous placement; one acks mode per run).
    #[serde(default)]
    pub variants: Vec<Variant>,
    /// `autoscale: 1..4`: the project's scaled role (Project 4's workers) grows and shrinks
    /// between these by queue depth; the cluster starts with the minimum.
    #[serde(default)]
    pub autoscale: Option<String>,
}

/// One run of a scenario with `variants:`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Variant {
    pub name: String,
    /// Added to every node's flags after the scenario's `node_flags`.
    #[serde(default)]
    pub node_flags: Vec<String>,
    /// Replaces the scenario's workload for this run (Project 3: one run per acks mode).
    #[serde(default)]
    pub workload: Option<WorkloadSpec>,
}

/// The verdict a scenario expects of a check.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Expect {
    /// The system is right: the check passes (every check's default).
    #[default]
    Valid,
    /// The system is wrong on purpose: the check must catch it.
    Invalid,
}

/// A duration written as text: `500ms`, `2s`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Span(#[serde(with = "duration_text")] pub Duration);

/// Which nodes a step acts on: `n1`, `[n1, n3]`, `all`, `random`, `minority`, `majority`,
/// `down` (every node that is down), `paused` (every node that is SIGSTOPped), `leader`,
/// `follower` (by the role nodes report), `random-follower` (one of those).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum Selector {
    One(String),
    Many(Vec<String>),
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Step {
    /// `- sleep: 2s`
    Sleep(Span),
    /// `- wait: all_up`, `- wait: leader`, `- wait: {until: all_up, timeout: 20s}`, or
    /// `- wait: {status: "detail.keys >= 8", on: n1, timeout: 10s}`
    Wait(WaitStep),
    /// `- assert: leader`, `- assert: {status: "detail.keys >= 8", on: n1}`: a condition
    /// (the same as `wait`'s) that must hold now; the run stops with an error if it does not.
    Assert(WaitStep),
    /// `- kill: n1` (SIGKILL)
    Kill(Selector),
    /// `- terminate: n1` (SIGTERM, SIGKILL after a grace period)
    Terminate(Selector),
    /// `- pause: n1` (SIGSTOP)
    Pause(Selector),
    /// `- resume: n1` (SIGCONT)
    Resume(Selector),
    /// `- restart: n1` (kill if up, start on the same data dir)
    Restart(Selector),
    /// `- start: n1` (start a node that is down)
    Start(Selector),
    /// `- partition: isolate n1` (any shape of `lab::engine::partition`), or groups as
    /// Jepsen writes them: `- partition: [[n1, n2], [n3, n4, n5]]`
    Partition(#[serde(deserialize_with = "partition_text")] String),
    /// `- heal` (every link healthy again)
    Heal,
    /// `- link: "client->n1 delay 100ms 20ms loss 5%"`
    Link(String),
    /// `- load: stop`, `- load: start`, `- load: {rate: 50}`
    Load(LoadStep),
    /// `- mark: before the storm` (a labelled moment on the timeline)
    Mark(String),
    /// `- nemesis: {faults: [kill, pause, partition], every: 2s, jitter: 1s, for: 20s}`
    Nemesis(NemesisStep),
    /// `- add-node` (membership growth: the next node, `n4` in a 3-node cluster, starts)
    #[serde(rename = "add-node")]
    AddNode,
    /// `- remove-node: n1` (membership shrink: the cluster is told the node leaves, then it
    /// is stopped; projects with membership only)
    #[serde(rename = "remove-node")]
    RemoveNode(Selector),
}

/// A partition as text, or as a list of groups (`[[n1, n2], [n3]]`, which becomes `n1,n2 | n3`).
fn partition_text<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Shape {
        Text(String),
        Groups(Vec<Vec<String>>),
    }
    match Shape::deserialize(d).map_err(|_| {
        serde::de::Error::custom(
            "a partition is text (isolate n1, n1,n2 | n3, bridge...) or groups ([[n1, n2], [n3]])",
        )
    })? {
        Shape::Text(text) => Ok(text),
        Shape::Groups(groups) => Ok(groups
            .iter()
            .map(|g| g.join(","))
            .collect::<Vec<_>>()
            .join(" | ")),
    }
}

/// Random faults, one at a time: apply one, wait `every ± jitter`, undo it, wait again,
/// until `for` has passed. Which fault and which node come from the run's seed.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NemesisStep {
    pub faults: Vec<NemesisFault>,
    pub every: Span,
    #[serde(default)]
    pub jitter: Option<Span>,
    #[serde(rename = "for")]
    pub duration: Span,
}

/// What the nemesis may do, and how it undoes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum NemesisFault {
    /// SIGKILL a random running node; undo: start it.
    Kill,
    /// SIGTERM a random running node; undo: start it.
    Terminate,
    /// SIGSTOP a random running node; undo: SIGCONT.
    Pause,
    /// A random majority/minority partition; undo: heal.
    Partition,
    /// Cut one random node from the others; undo: heal.
    Isolate,
    /// 100 ms ± 50 ms on every link of a random node, both ways; undo: heal.
    Delay,
    /// 20% loss on every link of a random node, both ways; undo: heal.
    Loss,
}

impl NemesisFault {
    /// The word a scenario file uses.
    pub fn name(self) -> &'static str {
        match self {
            NemesisFault::Kill => "kill",
            NemesisFault::Terminate => "terminate",
            NemesisFault::Pause => "pause",
            NemesisFault::Partition => "partition",
            NemesisFault::Isolate => "isolate",
            NemesisFault::Delay => "delay",
            NemesisFault::Loss => "loss",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum WaitStep {
    Condition(Condition),
    Full {
        until: Condition,
        #[serde(default)]
        timeout: Option<Span>,
    },
    /// Until every selected node (default: all) is responsive and its status satisfies the
    /// predicate (see [`super::predicate`]).
    Status {
        status: String,
        #[serde(default)]
        on: Option<Selector>,
        /// At least this many of the `on` nodes (default: all of them).
        #[serde(default)]
        count: Option<usize>,
        #[serde(default)]
        timeout: Option<Span>,
    },
    /// Until every selected node (default: all) is responsive and reports one same value at
    /// a status path: `{equal: detail.applied}` (replicas that caught up with each other).
    Equal {
        equal: String,
        #[serde(default)]
        on: Option<Selector>,
        #[serde(default)]
        timeout: Option<Span>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Condition {
    /// Every node's current process runs and answers `/status`.
    AllUp,
    /// Some responsive node reports the role `leader`.
    Leader,
    /// Exactly one responsive node reports the role `leader` (an old leader cut off from
    /// the majority may still believe it leads until it hears of a newer term).
    OneLeader,
    /// Every node is up and its `/status` detail says `"converged": true` (what that means is
    /// the service's: a gossip ring that agrees on its members, replicas with equal state).
    Converged,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum LoadStep {
    Switch(LoadSwitch),
    Rate { rate: f64 },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LoadSwitch {
    Start,
    Stop,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum CheckSpec {
    /// The history is linearizable (register model).
    Linearizable,
    /// No write was applied twice (versions).
    #[serde(alias = "applied-once")]
    AppliedOnce,
    /// At most one leader per term (Raft's Election Safety), from the nodes' events.
    #[serde(alias = "election-safety")]
    ElectionSafety,
    /// Every acknowledged write (or something newer) is readable after the heal
    /// (last-writer-wins stores: Project 1).
    #[serde(alias = "no-lost-writes")]
    NoLostWrites,
    /// Each join or leave moved at most 1.25 x K/N keys' primaries, from `ring_changed` events.
    #[serde(alias = "key-movement")]
    KeyMovement,
    /// Every node holding hints delivered them all by the end.
    #[serde(alias = "hints-drained")]
    HintsDrained,
    /// Every message acknowledged with acks=all is read at the end, none twice, each
    /// producer's in order (loss with acks=1/0 is counted, not failed): Project 3.
    #[serde(alias = "log-delivery")]
    LogDelivery,
    /// The consumer group caught up and its members, together, read every message the
    /// partitions hold at the end (redeliveries counted; rebalances and lag measured):
    /// Project 3.
    #[serde(alias = "group-delivery")]
    GroupDelivery,
    /// Every job submitted completed, and each one's output equals the same job run
    /// sequentially (after sorting its lines; the sort job's also in order): Project 4.
    #[serde(alias = "batch-jobs")]
    BatchJobs,
    /// No task output committed from an attempt whose lease had expired, no reduce committed
    /// twice; speculation, lost map outputs and locality counted: Project 4.
    #[serde(alias = "batch-commits")]
    BatchCommits,
    /// Every whole-bank read saw exactly the bank's total (two-phase commit): Project 5.
    #[serde(alias = "bank-total")]
    BankTotal,
    /// No transfer applied twice, every committed one in the ledger's journal, no aborted
    /// one; the final balances equal the opening plus the journal: Project 5.
    #[serde(alias = "bank-transfers")]
    BankTransfers,
    /// Saga mode: every completed or compensated transfer notified exactly once, none other:
    /// Project 5.
    #[serde(alias = "bank-notifications")]
    BankNotifications,
    /// Once quiet, every replica (servers and editors) holds the same text: Project 6.
    #[serde(alias = "collab-convergence")]
    CollabConvergence,
    /// Every edit a server acknowledged to its editor is held by every server at the end:
    /// Project 6.
    #[serde(alias = "collab-acked")]
    CollabAcked,
    /// On every server, each editor's characters stand in the order it typed them: Project 6.
    #[serde(alias = "collab-intention")]
    CollabIntention,
    /// `- availability: {min: 0.8}`, or `- availability: {}` for no minimum.
    Availability {
        #[serde(default)]
        min: Option<f64>,
    },
}

impl CheckSpec {
    /// The name a scenario's `check:` list uses.
    pub fn name(&self) -> String {
        match self {
            CheckSpec::Linearizable => "linearizable",
            CheckSpec::AppliedOnce => "applied_once",
            CheckSpec::ElectionSafety => "election_safety",
            CheckSpec::NoLostWrites => "no_lost_writes",
            CheckSpec::KeyMovement => "key_movement",
            CheckSpec::HintsDrained => "hints_drained",
            CheckSpec::LogDelivery => "log_delivery",
            CheckSpec::GroupDelivery => "group_delivery",
            CheckSpec::BatchJobs => "batch_jobs",
            CheckSpec::BatchCommits => "batch_commits",
            CheckSpec::BankTotal => "bank_total",
            CheckSpec::BankTransfers => "bank_transfers",
            CheckSpec::BankNotifications => "bank_notifications",
            CheckSpec::CollabConvergence => "collab_convergence",
            CheckSpec::CollabAcked => "collab_acked",
            CheckSpec::CollabIntention => "collab_intention",
            CheckSpec::Availability { .. } => "availability",
        }
        .to_string()
    }
}

impl WaitStep {
    pub fn timeout(&self) -> Duration {
        match self {
            WaitStep::Full {
                timeout: Some(t), ..
            }
            | WaitStep::Status {
                timeout: Some(t), ..
            }
            | WaitStep::Equal {
                timeout: Some(t), ..
            } => t.0,
            _ => Duration::from_secs(30),
        }
    }

    /// As the scenario file spells it: `leader`, `all_up (timeout 20s)`, `status
    /// detail.keys >= 8 on n1`.
    pub fn describe(&self) -> String {
        let timeout = |t: &Option<Span>| {
            t.map(|t| format!(" (timeout {})", distlab_runtime::duration::format(t.0)))
                .unwrap_or_default()
        };
        let on = |on: &Option<Selector>| {
            on.as_ref()
                .map(|s| format!(" on {}", s.describe()))
                .unwrap_or_default()
        };
        match self {
            WaitStep::Condition(c) => c.name().to_string(),
            WaitStep::Full { until, timeout: t } => format!("{}{}", until.name(), timeout(t)),
            WaitStep::Status {
                status,
                on: nodes,
                count,
                timeout: t,
            } => format!(
                "status {status}{}{}{}",
                on(nodes),
                count
                    .map(|c| format!(" (at least {c})"))
                    .unwrap_or_default(),
                timeout(t)
            ),
            WaitStep::Equal {
                equal,
                on: nodes,
                timeout: t,
            } => format!("equal {equal}{}{}", on(nodes), timeout(t)),
        }
    }
}

impl Condition {
    /// The word a scenario file uses.
    pub fn name(self) -> &'static str {
        match self {
            Condition::AllUp => "all_up",
            Condition::Leader => "leader",
            Condition::OneLeader => "one_leader",
            Condition::Converged => "converged",
        }
    }
}

impl Selector {
    /// As a step names it: `n1`, `[n1,n3]`, `leader`.
    pub fn describe(&self) -> String {
        match self {
            Selector::One(x) => x.clone(),
            Selector::Many(xs) => format!("[{}]", xs.join(",")),
        }
    }
}

impl Step {
    /// How the step reads on the timeline and in the report.
    pub fn describe(&self) -> String {
        let sel = Selector::describe;
        match self {
            Step::Sleep(d) => format!("sleep {}", distlab_runtime::duration::format(d.0)),
            Step::Wait(w) => format!("wait {}", w.describe()),
            Step::Assert(w) => format!("assert {}", w.describe()),
            Step::Kill(s) => format!("kill {}", sel(s)),
            Step::Terminate(s) => format!("terminate {}", sel(s)),
            Step::Pause(s) => format!("pause {}", sel(s)),
            Step::Resume(s) => format!("resume {}", sel(s)),
            Step::Restart(s) => format!("restart {}", sel(s)),
            Step::Start(s) => format!("start {}", sel(s)),
            Step::Partition(p) => format!("partition {p}"),
            Step::Heal => "heal".to_string(),
            Step::AddNode => "add-node".to_string(),
            Step::RemoveNode(s) => format!("remove-node {}", sel(s)),
            Step::Link(l) => format!("link {l}"),
            Step::Load(LoadStep::Switch(LoadSwitch::Start)) => "load start".to_string(),
            Step::Load(LoadStep::Switch(LoadSwitch::Stop)) => "load stop".to_string(),
            Step::Load(LoadStep::Rate { rate }) => format!("load rate {rate}"),
            Step::Mark(m) => format!("mark {m}"),
            Step::Nemesis(n) => format!(
                "nemesis {} every {}{} for {}",
                n.faults
                    .iter()
                    .map(|f| f.name())
                    .collect::<Vec<_>>()
                    .join(","),
                distlab_runtime::duration::format(n.every.0),
                n.jitter
                    .map(|j| format!(" ± {}", distlab_runtime::duration::format(j.0)))
                    .unwrap_or_default(),
                distlab_runtime::duration::format(n.duration.0)
            ),
        }
    }
}

/// The selector names a step may use besides node ids.
pub const SELECTORS: &[&str] = &[
    "all",
    "random",
    "minority",
    "majority",
    "down",
    "paused",
    "leader",
    "follower",
    "random-follower",
];

/// What selectors are resolved against: the cluster at the moment a step runs.
#[derive(Debug, Clone, Default)]
pub struct ClusterNow {
    /// Every node of the cluster.
    pub ids: Vec<String>,
    /// The nodes whose process is down.
    pub down: Vec<String>,
    /// The nodes whose process is stopped (SIGSTOP).
    pub paused: Vec<String>,
    /// The role each responsive node reports (`leader`, `follower`, `server`...).
    pub roles: std::collections::BTreeMap<String, String>,
}

impl Selector {
    /// The node ids this selector names now, sorted; random picks come from `rng`.
    pub fn resolve(
        &self,
        now: &ClusterNow,
        rng: &mut rand::rngs::SmallRng,
    ) -> Result<Vec<String>, String> {
        use rand::seq::{IndexedRandom, SliceRandom};
        let names = match self {
            Selector::One(x) => vec![x.clone()],
            Selector::Many(xs) => xs.clone(),
        };
        let pick = |count: usize, rng: &mut rand::rngs::SmallRng| {
            let mut ids = now.ids.clone();
            ids.shuffle(rng);
            ids.truncate(count);
            ids
        };
        let with_role = |role: &str| -> Result<Vec<String>, String> {
            let ids: Vec<String> = now
                .roles
                .iter()
                .filter(|(_, r)| r.as_str() == role)
                .map(|(id, _)| id.clone())
                .collect();
            if ids.is_empty() {
                Err(format!("no responsive node reports the role {role:?} now"))
            } else {
                Ok(ids)
            }
        };
        let n = now.ids.len();
        let mut ids = Vec::new();
        for name in names {
            match name.as_str() {
                "all" => ids.extend(now.ids.iter().cloned()),
                "random" => ids.extend(pick(1, rng)),
                "minority" => ids.extend(pick(n / 2, rng)),
                "majority" => ids.extend(pick(n / 2 + 1, rng)),
                "down" => ids.extend(now.down.iter().cloned()),
                "paused" => ids.extend(now.paused.iter().cloned()),
                "leader" => ids.extend(with_role("leader")?),
                "follower" => ids.extend(with_role("follower")?),
                "random-follower" => {
                    let followers = with_role("follower")?;
                    ids.extend(followers.choose(rng).cloned());
                }
                id if now.ids.iter().any(|known| known == id) => ids.push(id.to_string()),
                id => {
                    return Err(format!(
                        "unknown node {id:?}; nodes: {}",
                        now.ids.join(", ")
                    ));
                }
            }
        }
        ids.sort();
        ids.dedup();
        Ok(ids)
    }
}

/// A scenario checked against its project: ready to run.
#[derive(Debug, Clone)]
pub struct Validated {
    pub scenario: Scenario,
    pub project: &'static Project,
    pub nodes: Vec<String>,
    pub autoscale: Option<super::autoscale::Range>,
    /// What its checkers may spend (`--check-budget`; not part of the file).
    pub check_budget: super::check::Budget,
}

impl Validated {
    /// The scenario as `variant` runs it: with the variant's workload, if it has one.
    pub fn for_variant(&self, variant: Option<&Variant>) -> Validated {
        let mut run = self.clone();
        if let Some(workload) = variant.and_then(|v| v.workload.clone()) {
            run.scenario.workload = Some(workload);
        }
        run
    }
}

/// Reads and validates a scenario file; errors are `FILE:LINE[:COL]: message`.
pub fn load(path: &Path) -> Result<Validated, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("{}: cannot read it: {e}", path.display()))?;
    parse(&text, &path.display().to_string())
}

/// [`load`] for text already read; `name` is what errors call the file.
pub fn parse(text: &str, name: &str) -> Result<Validated, String> {
    let mut scenario: Scenario = serde_yaml::from_str(text).map_err(|e| match e.location() {
        Some(at) => {
            let message = super::serde_message(&e);
            format!("{name}:{}:{}: {message}", at.line(), at.column())
        }
        None => format!("{name}: {e}"),
    })?;
    // Checks are named `election_safety` or `election-safety`, in `check:` and `expect:` alike.
    scenario.expect = std::mem::take(&mut scenario.expect)
        .into_iter()
        .map(|(check, expect)| (check.replace('-', "_"), expect))
        .collect();
    let top = |key: &str| line_of_key(text, key).map_or(String::new(), |l| format!(":{l}"));
    let project =
        project::find(&scenario.project).map_err(|e| format!("{name}{}: {e}", top("project")))?;
    let autoscale = match &scenario.autoscale {
        Some(text) => {
            let range = super::autoscale::Range::parse(text)
                .map_err(|e| format!("{name}{}: {e}", top("autoscale")))?;
            let spec = ClusterSpec::autoscaled(project, range, 1)
                .and_then(|spec| spec.check().map(|()| spec))
                .map_err(|e| format!("{name}{}: {e}", top("autoscale")))?;
            if scenario.nodes.is_some_and(|n| n != spec.nodes) {
                return Err(format!(
                    "{name}{}: with autoscale {range} the cluster starts with {} nodes; leave out nodes",
                    top("nodes"),
                    spec.nodes
                ));
            }
            scenario.nodes = Some(spec.nodes);
            Some(range)
        }
        None => None,
    };
    let nodes: Vec<String> = project
        .plan(scenario.nodes.unwrap_or(project.default_nodes))
        .map_err(|e| format!("{name}{}: {e}", top("nodes")))?
        .into_iter()
        .map(|n| n.id)
        .collect();
    let workloads = scenario.workload.iter().map(|w| (w, "workload")).chain(
        scenario
            .variants
            .iter()
            .filter_map(|v| Some((v.workload.as_ref()?, "variants"))),
    );
    for (w, key) in workloads {
        if w.clients == 0
            || w.keys == 0
            || !(0.0..=1.0).contains(&w.reads)
            || w.rate < 0.0
            || !(0.0..=10.0).contains(&w.zipf)
            || w.acks
                .as_deref()
                .is_some_and(|a| !["0", "1", "all", "-1"].contains(&a))
        {
            return Err(format!(
                "{name}{}: workload needs clients >= 1, keys >= 1, reads between 0 and 1, rate >= 0, zipf between 0 and 10, acks 0, 1 or all",
                top(key)
            ));
        }
    }
    // Steps may name the nodes that earlier `add-node` steps add.
    let mut grown = nodes.clone();
    for (i, step) in scenario.steps.iter().enumerate() {
        let at = step_line(text, i).map_or(String::new(), |l| format!(":{l}"));
        let describe = |e: String| format!("{name}{at}: step {} ({}): {e}", i + 1, step.describe());
        if *step == Step::AddNode {
            grown = project
                .plan(grown.len() + 1)
                .map_err(describe)?
                .into_iter()
                .map(|n| n.id)
                .collect();
            if grown.len() > nodes.len() + SPARE_NODES {
                return Err(describe(format!(
                    "a cluster grows by at most {SPARE_NODES} nodes"
                )));
            }
        }
        if matches!(step, Step::RemoveNode(_)) && project.remove_member.is_none() {
            return Err(describe(format!(
                "{} has no membership to remove a node from",
                project.name
            )));
        }
        validate_step(step, &grown).map_err(describe)?;
    }
    for check in &scenario.check {
        let offered = project
            .checks
            .iter()
            .any(|c| std::mem::discriminant(c) == std::mem::discriminant(check));
        if !offered {
            let names: Vec<String> = project.checks.iter().map(CheckSpec::name).collect();
            return Err(format!(
                "{name}{}: {} has no check {:?}; its checks: {}",
                top("check"),
                project.name,
                check.name(),
                names.join(", ")
            ));
        }
        if let CheckSpec::Availability { min: Some(m) } = check
            && !(0.0..=1.0).contains(m)
        {
            return Err(format!(
                "{name}{}: availability min must be between 0 and 1, got {m}",
                top("check")
            ));
        }
    }
    let names: Vec<String> = scenario.check.iter().map(CheckSpec::name).collect();
    if let Some(unknown) = scenario.expect.keys().find(|k| !names.contains(k)) {
        return Err(format!(
            "{name}{}: expect names {unknown:?}, which is not in this scenario's check list ({})",
            top("expect"),
            names.join(", ")
        ));
    }
    (project.check_node_flags)(&scenario.node_flags)
        .map_err(|e| format!("{name}{}: node_flags: {e}", top("node_flags")))?;
    let mut seen = std::collections::BTreeSet::new();
    for variant in &scenario.variants {
        let at = top("variants");
        if variant.name.trim().is_empty() || !seen.insert(variant.name.as_str()) {
            return Err(format!(
                "{name}{at}: every variant needs a name of its own (got {:?} twice or empty)",
                variant.name
            ));
        }
        let flags: Vec<String> = scenario
            .node_flags
            .iter()
            .chain(&variant.node_flags)
            .cloned()
            .collect();
        (project.check_node_flags)(&flags)
            .map_err(|e| format!("{name}{at}: variant {:?}: node_flags: {e}", variant.name))?;
    }
    Ok(Validated {
        scenario,
        project,
        nodes,
        autoscale,
        check_budget: Default::default(),
    })
}

impl Validated {
    /// The cluster to run it on: the scenario's seed unless `seed` overrides it, its node
    /// flags followed by `extra_flags` (which win where both set a flag).
    pub fn cluster(&self, seed: Option<u64>, extra_flags: &[String]) -> ClusterSpec {
        self.variant_cluster(None, seed, extra_flags)
    }

    /// The cluster for one of its variants: the scenario's node flags, then the variant's,
    /// then `extra_flags`.
    pub fn variant_cluster(
        &self,
        variant: Option<&Variant>,
        seed: Option<u64>,
        extra_flags: &[String],
    ) -> ClusterSpec {
        ClusterSpec {
            node_flags: self
                .scenario
                .node_flags
                .iter()
                .chain(variant.map_or(&[][..], |v| &v.node_flags[..]))
                .chain(extra_flags)
                .cloned()
                .collect(),
            autoscale: self.autoscale,
            ..ClusterSpec::new(
                self.project,
                self.nodes.len(),
                seed.or(self.scenario.seed).unwrap_or(1),
            )
        }
    }

    /// What the scenario expects of check `name`.
    pub fn expects(&self, name: &str) -> Expect {
        self.scenario.expect.get(name).copied().unwrap_or_default()
    }
}

/// Checks one step against the cluster's nodes: selectors, shapes, link specs, predicates. The
/// console's command palette checks its lines with it too.
pub fn validate_step(step: &Step, nodes: &[String]) -> Result<(), String> {
    let check_selector = |s: &Selector| -> Result<(), String> {
        let names = match s {
            Selector::One(x) => vec![x.clone()],
            Selector::Many(xs) => xs.clone(),
        };
        for n in names {
            if !nodes.contains(&n) && !SELECTORS.contains(&n.as_str()) {
                return Err(format!(
                    "unknown node {n:?}; expected a node ({}) or one of {}",
                    nodes.join(", "),
                    SELECTORS.join(", ")
                ));
            }
        }
        Ok(())
    };
    match step {
        Step::Kill(s)
        | Step::Terminate(s)
        | Step::Pause(s)
        | Step::Resume(s)
        | Step::Restart(s)
        | Step::Start(s)
        | Step::RemoveNode(s) => check_selector(s),
        Step::Partition(spec) => {
            // `leader` is known when the step runs; any node stands in for it now.
            let shape = Partition::parse(&partition::with_leader(spec, &nodes[0]))?;
            // Fixed shapes name nodes: check them now. Random shapes are checked for size.
            let mut rng = <rand::rngs::SmallRng as rand::SeedableRng>::seed_from_u64(0);
            shape.cuts(nodes, &mut rng).map(|_| ())
        }
        Step::Link(spec) => {
            let (links, faults) = spec.split_once(char::is_whitespace).ok_or_else(|| {
                format!("{spec:?}: expected FROM->TO then faults, e.g. \"client->n1 delay 100ms\"")
            })?;
            let (from, to) = links.split_once("->").ok_or_else(|| {
                format!("{links:?}: links are FROM->TO, e.g. n1->* or client->n2")
            })?;
            for end in [from, to] {
                if end != "*" && end != "client" && !nodes.iter().any(|n| n == end) {
                    return Err(format!(
                        "unknown link end {end:?}; expected a node ({}), client or *",
                        nodes.join(", ")
                    ));
                }
            }
            LinkFaults::parse(faults).map(|_| ())
        }
        Step::Load(LoadStep::Rate { rate }) if *rate < 0.0 => Err("rate must be >= 0".into()),
        Step::Nemesis(n) => {
            if n.faults.is_empty() {
                return Err("nemesis needs at least one fault: kill, terminate, pause, partition, isolate, delay, loss".into());
            }
            if n.every.0.is_zero() || n.duration.0.is_zero() {
                return Err("nemesis `every` and `for` must be greater than zero".into());
            }
            if n.jitter.is_some_and(|j| j.0 >= n.every.0) {
                return Err("nemesis `jitter` must be smaller than `every`".into());
            }
            Ok(())
        }
        Step::Assert(
            WaitStep::Full {
                timeout: Some(_), ..
            }
            | WaitStep::Status {
                timeout: Some(_), ..
            }
            | WaitStep::Equal {
                timeout: Some(_), ..
            },
        ) => Err("assert checks the condition now: it takes no timeout (use wait)".into()),
        Step::Wait(WaitStep::Equal { equal, on, .. })
        | Step::Assert(WaitStep::Equal { equal, on, .. }) => {
            super::predicate::check_path(equal)?;
            on.as_ref().map_or(Ok(()), check_selector)
        }
        Step::Wait(WaitStep::Status {
            status, on, count, ..
        })
        | Step::Assert(WaitStep::Status {
            status, on, count, ..
        }) => {
            StatusPredicate::parse(status)?;
            if *count == Some(0) {
                return Err("count must be at least 1".into());
            }
            on.as_ref().map_or(Ok(()), check_selector)
        }
        Step::Sleep(_)
        | Step::Wait(_)
        | Step::Assert(_)
        | Step::Heal
        | Step::Load(_)
        | Step::Mark(_)
        | Step::AddNode => Ok(()),
    }
}

/// The line (1-based) of a top-level `key:`.
fn line_of_key(text: &str, key: &str) -> Option<usize> {
    text.lines()
        .position(|l| l.starts_with(&format!("{key}:")))
        .map(|i| i + 1)
}

/// The line of the `index`-th item of the top-level `steps:` list.
fn step_line(text: &str, index: usize) -> Option<usize> {
    let start = line_of_key(text, "steps")?;
    let mut indent = None;
    let mut seen = 0;
    for (i, line) in text.lines().enumerate().skip(start) {
        let trimmed = line.trim_start();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let depth = line.len() - trimmed.len();
        if depth == 0 && !trimmed.starts_with('-') {
            return None; // the next top-level key
        }
        if trimmed.starts_with('-') && *indent.get_or_insert(depth) == depth {
            if seen == index {
                return Some(i + 1);
            }
            seen += 1;
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "\
name: demo
project: proj0
nodes: 1
workload: {clients: 2, rate: 50, keys: 4, timeout: 500ms}
steps:
  - sleep: 1s
  - kill: n1
  - restart: [n1]
  - wait: all_up
  - wait: {until: all_up, timeout: 5s}
  - wait: {status: 'detail.keys >= 0', on: n1, timeout: 5s}
  - link: client->n1 delay 10ms loss 5%
  - heal
  - load: {rate: 20}
  - load: stop
  - mark: done
  - nemesis: {faults: [kill, pause], every: 1s, jitter: 200ms, for: 3s}
check:
  - linearizable
  - applied_once
  - availability: {min: 0.5}
";

    #[test]
    fn a_good_scenario_parses() {
        let v = parse(GOOD, "demo.yaml").unwrap();
        assert_eq!(v.nodes, ["n1"]);
        assert_eq!(v.scenario.steps.len(), 12);
        assert_eq!(v.scenario.steps[1], Step::Kill(Selector::One("n1".into())));
        assert_eq!(v.scenario.steps[7], Step::Heal);
        assert_eq!(
            v.scenario.check[2],
            CheckSpec::Availability { min: Some(0.5) }
        );
    }

    fn error(text: &str) -> String {
        parse(text, "bad.yaml").unwrap_err()
    }

    #[test]
    fn selectors_name_nodes_by_id_state_role_and_chance() {
        use rand::SeedableRng;
        let now = ClusterNow {
            ids: ["n1", "n2", "n3", "n4", "n5"].map(String::from).to_vec(),
            down: vec!["n4".into()],
            paused: vec!["n5".into()],
            roles: [("n1", "follower"), ("n2", "leader"), ("n3", "follower")]
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .into(),
        };
        let mut rng = rand::rngs::SmallRng::seed_from_u64(9);
        let mut pick = |s: Selector| s.resolve(&now, &mut rng);
        let one = |x: &str| Selector::One(x.into());
        assert_eq!(pick(one("n3")).unwrap(), ["n3"]);
        assert_eq!(
            pick(Selector::Many(vec!["n5".into(), "n1".into(), "n5".into()])).unwrap(),
            ["n1", "n5"],
            "sorted, once each"
        );
        assert_eq!(pick(one("all")).unwrap().len(), 5);
        assert_eq!(pick(one("down")).unwrap(), ["n4"]);
        assert_eq!(pick(one("paused")).unwrap(), ["n5"]);
        assert_eq!(pick(one("leader")).unwrap(), ["n2"]);
        assert_eq!(pick(one("follower")).unwrap(), ["n1", "n3"]);
        let one_follower = pick(one("random-follower")).unwrap();
        assert!(
            one_follower == ["n1"] || one_follower == ["n3"],
            "{one_follower:?}"
        );
        assert_eq!(pick(one("minority")).unwrap().len(), 2);
        assert_eq!(pick(one("majority")).unwrap().len(), 3);
        assert_eq!(pick(one("random")).unwrap().len(), 1);
        assert!(pick(one("n9")).unwrap_err().contains("unknown node \"n9\""));

        let leaderless = ClusterNow {
            roles: Default::default(),
            ..now.clone()
        };
        let e = one("leader")
            .resolve(&leaderless, &mut rand::rngs::SmallRng::seed_from_u64(1))
            .unwrap_err();
        assert!(
            e.contains("no responsive node reports the role \"leader\""),
            "{e}"
        );

        // The same seed, the same random picks.
        let picks = |seed| {
            let mut rng = rand::rngs::SmallRng::seed_from_u64(seed);
            (0..5)
                .map(|_| one("minority").resolve(&now, &mut rng).unwrap())
                .collect::<Vec<_>>()
        };
        assert_eq!(picks(3), picks(3));
    }

    #[test]
    fn steps_may_name_the_nodes_added_before_them() {
        let grows = GOOD.replace("- kill: n1", "- add-node\n  - kill: n2");
        let v = parse(&grows, "grow.yaml").unwrap();
        assert_eq!(v.scenario.steps[2], Step::Kill(Selector::One("n2".into())));
        assert_eq!(v.nodes, ["n1"], "the cluster starts with its own size");

        let too_early = GOOD.replace("- kill: n1", "- kill: n2\n  - add-node");
        assert!(error(&too_early).contains("unknown node \"n2\""));

        let too_many = GOOD.replace("- kill: n1", "- add-node\n  - add-node\n  - add-node");
        assert!(
            error(&too_many).contains("grows by at most 2 nodes"),
            "{}",
            error(&too_many)
        );
    }

    #[test]
    fn partitions_may_be_written_as_groups() {
        let groups = GOOD.replace("  - heal\n", "  - partition: [[n1], []]\n");
        assert!(
            error(&groups).contains("an empty group"),
            "{}",
            error(&groups)
        );
        let text = GOOD.replace("  - heal\n", "  - partition: {n1: 2}\n");
        assert!(
            error(&text).contains("a partition is text"),
            "{}",
            error(&text)
        );
        let groups = "name: g\nproject: proj0\nnodes: 2\nsteps:\n  - partition: [[n1], [n2]]\n";
        let v = parse(groups, "g.yaml").unwrap();
        assert_eq!(v.scenario.steps[0], Step::Partition("n1 | n2".into()));
    }

    #[test]
    fn assert_steps_take_wait_conditions_but_no_timeout() {
        let with_asserts = GOOD.replace(
            "  - heal\n",
            "  - heal\n  - assert: all_up\n  - assert: {status: 'detail.keys >= 1', on: n1}\n",
        );
        let v = parse(&with_asserts, "demo.yaml").unwrap();
        assert_eq!(
            v.scenario.steps[8],
            Step::Assert(WaitStep::Condition(Condition::AllUp))
        );
        assert_eq!(
            v.scenario.steps[9].describe(),
            "assert status detail.keys >= 1 on n1"
        );

        let timed = GOOD.replace(
            "  - heal\n",
            "  - heal\n  - assert: {until: leader, timeout: 2s}\n",
        );
        assert!(
            error(&timed)
                .contains("step 9 (assert leader (timeout 2s)): assert checks the condition now")
        );
        let bad = GOOD.replace("  - heal\n", "  - heal\n  - assert: {status: 'keys'}\n");
        assert!(error(&bad).contains("PATH OP VALUE"), "{}", error(&bad));
    }

    #[test]
    fn node_flags_and_expectations_are_checked_before_anything_starts() {
        let text = "name: s\nproject: proj2\nsteps:\n  - sleep: 1s\ncheck:\n  - linearizable\nnode_flags: [--read-mode, local]\nexpect: {linearizable: invalid}\n";
        let v = parse(text, "s.yaml").unwrap();
        assert_eq!(v.expects("linearizable"), Expect::Invalid);
        assert_eq!(v.expects("availability"), Expect::Valid);
        let cluster = v.cluster(Some(9), &["--read-mode".into(), "lease".into()]);
        assert_eq!(cluster.seed, 9);
        assert_eq!(
            cluster.node_flags,
            ["--read-mode", "local", "--read-mode", "lease"],
            "the command line's flags come last, so they win"
        );
        cluster.check().unwrap();

        let e = error(&text.replace("local]", "sometimes]"));
        assert!(
            e.starts_with("bad.yaml:7: node_flags:") && e.contains("sometimes"),
            "{e}"
        );
        let e = error(&text.replace("--read-mode, local", "--no-such-flag"));
        assert!(e.contains("--no-such-flag"), "{e}");
        let e = error(&text.replace("{linearizable: invalid}", "{availability: invalid}"));
        assert!(
            e.starts_with("bad.yaml:8: expect names \"availability\""),
            "{e}"
        );
        let e = error(&text.replace("invalid}", "maybe}"));
        assert!(e.contains("unknown variant `maybe`"), "{e}");
        // Flags the node would refuse after parsing are refused too.
        let e = error(&text.replace("--read-mode, local", "--heartbeat, 1s"));
        assert!(e.contains("--heartbeat 1s must be"), "{e}");
    }

    /// `election_safety` as scenario files write it and `election-safety` as command lines do
    /// are the same check, in `check:` and in `expect:`.
    #[test]
    fn checks_may_be_spelled_with_dashes_or_underscores() {
        let text = "name: s\nproject: proj2\nsteps:\n  - sleep: 1500ms\n  - wait: {until: all_up, timeout: 20s}\ncheck:\n  - election-safety\n  - linearizable\nexpect: {election-safety: invalid}\n";
        let v = parse(text, "s.yaml").unwrap();
        assert_eq!(v.scenario.check[0], CheckSpec::ElectionSafety);
        assert_eq!(v.expects("election_safety"), Expect::Invalid);
        let underscores = parse(
            &text.replace("election-safety", "election_safety"),
            "s.yaml",
        )
        .unwrap();
        assert_eq!(underscores.scenario.check, v.scenario.check);
        // Steps read as the file spells them.
        let steps: Vec<String> = v.scenario.steps.iter().map(Step::describe).collect();
        assert_eq!(steps, ["sleep 1500ms", "wait all_up (timeout 20s)"]);
    }

    #[test]
    fn raft_steps_parse_and_are_refused_where_they_mean_nothing() {
        let text = "name: r\nproject: proj2\nnodes: 5\nsteps:\n  - partition: majority-minority leader\n  - wait: {status: 'role == \"leader\"', count: 2}\n  - wait: {equal: detail.applied, on: [n1, n2], timeout: 5s}\n  - wait: one_leader\n  - kill: random-follower\n  - remove-node: leader\n";
        let v = parse(text, "r.yaml").unwrap();
        assert_eq!(
            v.scenario.steps[5],
            Step::RemoveNode(Selector::One("leader".into()))
        );
        assert_eq!(
            v.scenario.steps[1].describe(),
            "wait status role == \"leader\" (at least 2)"
        );
        assert_eq!(
            v.scenario.steps[3],
            Step::Wait(WaitStep::Condition(Condition::OneLeader))
        );
        assert_eq!(
            v.scenario.steps[2].describe(),
            "wait equal detail.applied on [n1,n2] (timeout 5s)"
        );

        let proj0 = text
            .replace("proj2", "proj0")
            .replace("  - wait: one_leader\n", "");
        let e = error(&proj0);
        assert!(
            e.contains("step 5 (remove-node leader): proj0 has no membership"),
            "{e}"
        );
        let e = error(&text.replace("count: 2", "count: 0"));
        assert!(e.contains("count must be at least 1"), "{e}");
        let e = error(&text.replace("equal: detail.applied", "equal: applied"));
        assert!(e.contains("starts at role or detail"), "{e}");
        let e = error(&text.replace("majority-minority leader", "majority-minority leader,n2,n3"));
        assert!(e.contains("2 at most"), "{e}");
    }

    #[test]
    fn mistakes_are_named_with_their_place() {
        let unknown_field = GOOD.replace("nodes: 1", "nodez: 1");
        let e = error(&unknown_field);
        assert!(
            e.starts_with("bad.yaml:3:") && e.contains("unknown field `nodez`"),
            "{e}"
        );

        let unknown_step = GOOD.replace("- kill: n1", "- explode: n1");
        let e = error(&unknown_step);
        assert!(
            e.starts_with("bad.yaml:") && e.contains("unknown variant `explode`"),
            "{e}"
        );

        let unknown_node = GOOD.replace("- kill: n1", "- kill: n7");
        let e = error(&unknown_node);
        assert!(
            e.starts_with("bad.yaml:7: step 2 (kill n7): unknown node \"n7\""),
            "{e}"
        );

        let bad_duration = GOOD.replace("- sleep: 1s", "- sleep: soon");
        assert!(
            error(&bad_duration).contains("expected a duration"),
            "{}",
            error(&bad_duration)
        );

        let bad_link = GOOD.replace("delay 10ms", "delay fast");
        assert!(
            error(&bad_link).contains("bad.yaml:12: step 7"),
            "{}",
            error(&bad_link)
        );

        let bad_project = GOOD.replace("project: proj0", "project: proj42");
        assert!(
            error(&bad_project).starts_with("bad.yaml:2: unknown project"),
            "{}",
            error(&bad_project)
        );

        let bad_nemesis = GOOD.replace("faults: [kill, pause]", "faults: [kill, explode]");
        let e = error(&bad_nemesis);
        assert!(
            e.contains("unknown variant `explode`") && e.contains("`kill`"),
            "{e}"
        );
        let slow = GOOD.replace("jitter: 200ms", "jitter: 2s");
        assert!(
            error(&slow).contains("bad.yaml:17: step 12"),
            "{}",
            error(&slow)
        );

        let bad_wait = GOOD.replace("detail.keys >= 0", "detail.keys");
        let e = error(&bad_wait);
        assert!(
            e.contains("bad.yaml:11: step 6") && e.contains("PATH OP VALUE"),
            "{e}"
        );

        let bad_partition = GOOD.replace("- heal", "- partition: ring");
        assert!(error(&bad_partition).contains("ring needs at least 5 nodes"));
    }
}
