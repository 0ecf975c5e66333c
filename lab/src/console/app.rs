//! The console's state and what keys do to it. Nothing here draws or talks to the engine: a
//! key either changes what is shown (selection, view, filter, help) or becomes an [`Action`]
//! for the engine, the same steps a scenario file would take. So the key map is tested
//! without a terminal and without a cluster.

use std::collections::{BTreeMap, VecDeque};

use ratatui_crossterm::crossterm::event::{KeyCode, KeyEvent, KeyModifiers};

use super::palette;
use crate::engine::events::Event;
use crate::engine::model::{ClusterModel, Health, NodeView};
use crate::engine::project::Project;
use crate::engine::runner::Progress;
use crate::engine::scenario::{LoadStep, LoadSwitch, Selector, Step};
use crate::engine::supervisor::ProcessState;
use crate::engine::workload::LoadSample;

/// How many seconds of history the sparklines and state strips keep.
pub const HISTORY_SECS: usize = 60;
/// How many leadership marks are kept (elections included).
const LEADER_MARKS_KEPT: usize = 2000;

/// A change of leadership, or an election starting, read off the timeline: a node's
/// `became_leader` (with its term), `stepped_down` or `election_started` event, or the
/// leader's process stopping.
#[derive(Debug, Clone, PartialEq)]
pub struct LeaderMark {
    pub t: f64,
    /// Who leads from `t` on (for a mark that is not an election).
    pub leader: Option<String>,
    pub term: Option<u64>,
    /// An election started at `t` (the leader is unchanged by it).
    pub election: bool,
}

impl LeaderMark {
    /// The mark `event` makes, given who led before it and the highest term any node was
    /// seen to lead. A node that says it leads an older term (a restarted leader replaying its
    /// last term before it hears of the new one, an old leader cut off from the majority) does
    /// not take the lead from the leader of a newer term, and its stepping down clears nothing.
    fn of(event: &Event, leader: Option<&str>, newest_term: Option<u64>) -> Option<Self> {
        use crate::engine::events::EventKind;
        let node = event.node.as_deref()?;
        let term = event.fields.get("term").and_then(|t| t.as_u64());
        let mark = |leader: Option<&str>, election| LeaderMark {
            t: event.t,
            leader: leader.map(str::to_string),
            term,
            election,
        };
        let is_leader = leader == Some(node);
        let stale = matches!((term, newest_term), (Some(term), Some(newest)) if term < newest);
        match event.kind {
            EventKind::NodeEvent if event.what.starts_with("became_leader") && !stale => {
                Some(mark(Some(node), false))
            }
            EventKind::NodeEvent if event.what.starts_with("election_started") => {
                Some(mark(leader, true))
            }
            EventKind::NodeEvent if event.what.starts_with("stepped_down") && is_leader => {
                Some(mark(None, false))
            }
            EventKind::NodeStopped | EventKind::NodeCrashed if is_leader => Some(mark(None, false)),
            _ => None,
        }
    }
}

/// How many timeline events are kept for display.
const EVENTS_KEPT: usize = 300;
/// The workload rates `+` and `-` step through (ops/s).
pub const RATES: &[f64] = &[5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0, 2000.0];

/// What the console asks the engine to do.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Carry out a scenario step (every fault key and palette line is one).
    Run(Step),
    Quit,
}

/// What the keyboard is doing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mode {
    Normal,
    /// Typing a `:` command.
    Palette(String),
    /// Typing a `/` log filter.
    Filter(String),
    Help,
    /// `q` was pressed: `y` quits, anything else goes back.
    ConfirmQuit,
}

/// A node's state as the console shows it: what the process does, and whether it answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeState {
    Running,
    Paused,
    Down,
    /// Its process runs but it did not answer `/status` in time.
    Unresponsive,
}

impl NodeState {
    pub fn of(view: &NodeView) -> Self {
        match (view.node.state, view.health) {
            (ProcessState::Down, _) => NodeState::Down,
            (ProcessState::Paused, _) => NodeState::Paused,
            (ProcessState::Running, Health::Responsive) => NodeState::Running,
            (ProcessState::Running, _) => NodeState::Unresponsive,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            NodeState::Running => "running",
            NodeState::Paused => "paused",
            NodeState::Down => "down",
            NodeState::Unresponsive => "unresponsive",
        }
    }
}

/// One node's recent figures, a point per second.
#[derive(Debug, Clone, Default)]
pub struct NodeSeries {
    /// Successful operations per second.
    pub ok_rate: VecDeque<u64>,
    /// Failed or timed-out operations per second.
    pub err_rate: VecDeque<u64>,
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    /// The node's state at each second (oldest first).
    pub states: VecDeque<NodeState>,
    /// Its reported lag (`detail.total_lag`: a consumer's messages behind the high
    /// watermarks) at each second it reported one.
    pub lag: VecDeque<u64>,
    totals: Option<(u64, u64)>,
}

/// A message under the footer: what the last command did, or why it could not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub text: String,
    pub error: bool,
}

/// The scenario being played, for the scenario pane.
#[derive(Debug, Clone)]
pub struct ScenarioPane {
    pub name: String,
    pub steps: Vec<String>,
    pub progress: Progress,
    /// Each check's verdict line, once known.
    pub verdicts: Vec<(String, bool)>,
}

/// The workload as the header shows it.
#[derive(Debug, Clone, Copy, Default)]
pub struct LoadFigures {
    pub running: bool,
    /// The configured rate (ops/s; 0 = as fast as possible).
    pub rate: f64,
    pub ok_per_sec: u64,
    pub err_per_sec: u64,
}

pub struct App {
    pub project: &'static Project,
    pub model: ClusterModel,
    /// Newest last.
    pub events: VecDeque<Event>,
    /// Who led when, from the timeline (for leader strips); newest last.
    pub leadership: VecDeque<LeaderMark>,
    pub series: BTreeMap<String, NodeSeries>,
    /// Per partition, the lag the running nodes report for it (`detail.lag`, summed) at each
    /// second: Project 3's consumers.
    pub partition_lag: BTreeMap<String, VecDeque<u64>>,
    pub load: LoadFigures,
    pub selected: usize,
    /// Index into the project's views.
    pub view: usize,
    pub view_count: usize,
    pub mode: Mode,
    pub log_filter: String,
    /// The selected node's last log lines, raw.
    pub logs: Vec<String>,
    pub message: Option<Message>,
    pub scenario: Option<ScenarioPane>,
    /// The cast file being recorded, if any.
    pub recording: Option<String>,
    /// Set while the cluster is being stopped.
    pub stopping: bool,
    /// The answer to the shown view's [`Probe`](super::views::Probe), last received.
    pub probed: Option<Probed>,
    /// Which step of the shown view's history is shown (`[` `]`); `None` follows the latest.
    pub step: Option<u64>,
}

/// A view's probe and what the node answered (its JSON, or why there is none).
#[derive(Debug, Clone, PartialEq)]
pub struct Probed {
    pub probe: super::views::Probe,
    pub answer: Result<serde_json::Value, String>,
}

impl Probed {
    /// How many steps the answer says there are (its `of`).
    fn steps(&self) -> Option<u64> {
        self.answer.as_ref().ok()?.get("of")?.as_u64()
    }
}

impl App {
    pub fn new(project: &'static Project, view_count: usize) -> Self {
        Self {
            project,
            model: ClusterModel {
                project: project.name,
                elapsed_secs: 0.0,
                nodes: Vec::new(),
            },
            events: VecDeque::new(),
            leadership: VecDeque::new(),
            series: BTreeMap::new(),
            partition_lag: BTreeMap::new(),
            load: LoadFigures::default(),
            selected: 0,
            view: 0,
            view_count: view_count.max(1),
            mode: Mode::Normal,
            log_filter: String::new(),
            logs: Vec::new(),
            message: None,
            scenario: None,
            recording: None,
            stopping: false,
            probed: None,
            step: None,
        }
    }

    /// `[` `]` `{` `}` `.`: move through the shown view's steps by `by` (`None`: back to the
    /// latest, followed live). Past the last step is the latest.
    fn move_step(&mut self, by: Option<i64>) {
        let Some(steps) = self.probed.as_ref().and_then(Probed::steps) else {
            self.message = Some(Message {
                text: "this view has no history to step through".into(),
                error: true,
            });
            return;
        };
        self.step = by.and_then(|by| {
            let from = self.step.unwrap_or(steps) as i64;
            let to = (from + by).max(0) as u64;
            (to < steps).then_some(to)
        });
    }

    /// A new cluster model snapshot.
    pub fn observe(&mut self, model: ClusterModel) {
        self.model = model;
        self.selected = self.selected.min(self.model.nodes.len().saturating_sub(1));
    }

    pub fn push_event(&mut self, event: Event) {
        if let Some(mark) = LeaderMark::of(&event, self.leader_now(), self.newest_leader_term()) {
            if self.leadership.len() == LEADER_MARKS_KEPT {
                self.leadership.pop_front();
            }
            self.leadership.push_back(mark);
        }
        if self.events.len() == EVENTS_KEPT {
            self.events.pop_front();
        }
        self.events.push_back(event);
    }

    /// The leader as of the newest leadership mark.
    pub fn leader_now(&self) -> Option<&str> {
        self.leadership
            .iter()
            .rev()
            .find(|m| !m.election)
            .and_then(|m| m.leader.as_deref())
    }

    /// The highest term any node was seen to become leader of.
    fn newest_leader_term(&self) -> Option<u64> {
        self.leadership
            .iter()
            .filter(|m| !m.election && m.leader.is_some())
            .filter_map(|m| m.term)
            .max()
    }

    /// Once a second: the workload's per-node totals, turned into rates, and every node's
    /// state for the state strips.
    pub fn sample(&mut self, samples: &[LoadSample]) {
        let (mut ok_sum, mut err_sum) = (0, 0);
        let mut lags: BTreeMap<String, u64> = BTreeMap::new();
        for view in &self.model.nodes {
            if NodeState::of(view) != NodeState::Running {
                continue;
            }
            for (partition, lag) in view
                .detail
                .get("lag")
                .and_then(|l| l.as_object())
                .into_iter()
                .flatten()
            {
                *lags.entry(partition.clone()).or_default() += lag.as_u64().unwrap_or(0);
            }
        }
        // A partition nobody reports this second (its member died) is not behind by nothing:
        // it keeps its last figure until someone reads it again.
        for (partition, series) in &mut self.partition_lag {
            let last = series.back().copied().unwrap_or(0);
            push_capped(series, lags.remove(partition).unwrap_or(last));
        }
        for (partition, lag) in lags {
            push_capped(self.partition_lag.entry(partition).or_default(), lag);
        }
        for view in &self.model.nodes {
            let series = self.series.entry(view.node.id.clone()).or_default();
            push_capped(&mut series.states, NodeState::of(view));
            if let Some(lag) = view.detail.get("total_lag").and_then(|l| l.as_u64()) {
                push_capped(&mut series.lag, lag);
            }
            let sample = samples.iter().find(|s| s.node == view.node.id);
            let totals = sample.map_or((0, 0), |s| (s.ok, s.errors));
            let (ok, err) = match series.totals {
                Some((ok0, err0)) => (totals.0.saturating_sub(ok0), totals.1.saturating_sub(err0)),
                None => (0, 0),
            };
            series.totals = Some(totals);
            push_capped(&mut series.ok_rate, ok);
            push_capped(&mut series.err_rate, err);
            if let Some(sample) = sample {
                series.p50_ms = sample.p50_ms.or(series.p50_ms.filter(|_| ok == 0));
                series.p99_ms = sample.p99_ms.or(series.p99_ms.filter(|_| ok == 0));
            }
            ok_sum += ok;
            err_sum += err;
        }
        self.load.ok_per_sec = ok_sum;
        self.load.err_per_sec = err_sum;
    }

    pub fn selected_node(&self) -> Option<&NodeView> {
        self.model.nodes.get(self.selected)
    }

    /// Log lines of the selected node that pass the filter.
    pub fn visible_logs(&self) -> Vec<&str> {
        let filter = match &self.mode {
            Mode::Filter(typing) => typing.as_str(),
            _ => self.log_filter.as_str(),
        };
        self.logs
            .iter()
            .map(String::as_str)
            .filter(|l| filter.is_empty() || l.contains(filter))
            .collect()
    }

    /// What a key does: changes the state, and maybe asks the engine for something.
    pub fn on_key(&mut self, key: KeyEvent) -> Option<Action> {
        if key.modifiers.contains(KeyModifiers::CONTROL) && key.code == KeyCode::Char('c') {
            return Some(Action::Quit);
        }
        match std::mem::replace(&mut self.mode, Mode::Normal) {
            Mode::Normal => self.normal_key(key),
            Mode::Help => None,
            Mode::ConfirmQuit => match key.code {
                KeyCode::Char('y') | KeyCode::Char('q') | KeyCode::Enter => Some(Action::Quit),
                _ => None,
            },
            Mode::Palette(line) => self.palette_key(line, key),
            Mode::Filter(mut typing) => {
                match key.code {
                    KeyCode::Enter => self.log_filter = typing,
                    KeyCode::Esc => {}
                    KeyCode::Backspace => {
                        typing.pop();
                        self.mode = Mode::Filter(typing);
                    }
                    KeyCode::Char(c) => {
                        typing.push(c);
                        self.mode = Mode::Filter(typing);
                    }
                    _ => self.mode = Mode::Filter(typing),
                }
                None
            }
        }
    }

    fn palette_key(&mut self, mut line: String, key: KeyEvent) -> Option<Action> {
        match key.code {
            KeyCode::Esc => None,
            KeyCode::Enter => {
                let ids: Vec<String> = self.model.nodes.iter().map(|n| n.node.id.clone()).collect();
                match palette::parse(&line, &ids) {
                    Ok(step) => Some(Action::Run(step)),
                    Err(e) => {
                        self.message = Some(Message {
                            text: e,
                            error: true,
                        });
                        self.mode = Mode::Palette(line);
                        None
                    }
                }
            }
            KeyCode::Tab => {
                match palette::complete_line(&line) {
                    Some(done) => line = done,
                    None if !line.contains(' ') => {
                        let options = palette::complete(&line);
                        self.message = Some(Message {
                            text: format!("commands: {}", options.join(" ")),
                            error: false,
                        });
                    }
                    None => {}
                }
                self.mode = Mode::Palette(line);
                None
            }
            KeyCode::Backspace => {
                line.pop();
                self.mode = Mode::Palette(line);
                None
            }
            KeyCode::Char(c) => {
                line.push(c);
                self.mode = Mode::Palette(line);
                None
            }
            _ => {
                self.mode = Mode::Palette(line);
                None
            }
        }
    }

    fn normal_key(&mut self, key: KeyEvent) -> Option<Action> {
        let count = self.model.nodes.len();
        let step = |step: Step| Some(Action::Run(step));
        let selected = self.selected_node().map(|n| n.node.id.clone());
        let on_selected = |make: fn(Selector) -> Step| match &selected {
            Some(id) => step(make(Selector::One(id.clone()))),
            None => None,
        };
        match key.code {
            KeyCode::Char('j') | KeyCode::Down if count > 0 => {
                self.selected = (self.selected + 1) % count;
                self.step = None;
                None
            }
            KeyCode::Char('k') | KeyCode::Up if count > 0 => {
                self.selected = (self.selected + count - 1) % count;
                self.step = None;
                None
            }
            KeyCode::Char(c @ ('[' | ']' | '{' | '}')) => {
                let by = match c {
                    '[' => -1,
                    ']' => 1,
                    '{' => -10,
                    _ => 10,
                };
                self.move_step(Some(by));
                None
            }
            KeyCode::Char('.') => {
                self.move_step(None);
                None
            }
            KeyCode::Char('K') => on_selected(Step::Kill),
            KeyCode::Char('t') => on_selected(Step::Terminate),
            KeyCode::Char('r') => on_selected(Step::Restart),
            KeyCode::Char('p') => match self.selected_node().map(|n| n.node.state) {
                Some(ProcessState::Paused) => on_selected(Step::Resume),
                Some(ProcessState::Running) => on_selected(Step::Pause),
                Some(ProcessState::Down) => {
                    self.message = Some(Message {
                        text: "the node is down: r restarts it".into(),
                        error: true,
                    });
                    None
                }
                None => None,
            },
            KeyCode::Char('i') => {
                selected.and_then(|id| step(Step::Partition(format!("isolate {id}"))))
            }
            KeyCode::Char('h') => step(Step::Heal),
            KeyCode::Char('L') => {
                match self
                    .model
                    .nodes
                    .iter()
                    .position(|n| n.live_role() == Some("leader"))
                {
                    Some(i) => self.selected = i,
                    None => {
                        self.message = Some(Message {
                            text: format!("no node of {} reports itself leader", self.project.name),
                            error: true,
                        })
                    }
                }
                None
            }
            KeyCode::Char('l') => step(Step::Load(LoadStep::Switch(if self.load.running {
                LoadSwitch::Stop
            } else {
                LoadSwitch::Start
            }))),
            KeyCode::Char('+') | KeyCode::Char('=') => {
                let next = RATES
                    .iter()
                    .find(|r| **r > self.load.rate)
                    .copied()
                    .unwrap_or(self.load.rate);
                step(Step::Load(LoadStep::Rate { rate: next }))
            }
            KeyCode::Char('-') => {
                let next = RATES
                    .iter()
                    .rev()
                    .find(|r| **r < self.load.rate)
                    .copied()
                    .unwrap_or(RATES[0]);
                step(Step::Load(LoadStep::Rate { rate: next }))
            }
            KeyCode::Char(':') => {
                self.mode = Mode::Palette(String::new());
                None
            }
            KeyCode::Char('/') => {
                self.mode = Mode::Filter(self.log_filter.clone());
                None
            }
            KeyCode::Tab => {
                self.view = (self.view + 1) % self.view_count;
                self.step = None;
                self.probed = None;
                None
            }
            KeyCode::Char('?') => {
                self.mode = Mode::Help;
                None
            }
            KeyCode::Esc => {
                self.log_filter.clear();
                self.message = None;
                None
            }
            KeyCode::Char('q') => {
                self.mode = Mode::ConfirmQuit;
                None
            }
            _ => None,
        }
    }

    /// The keys that do something now, for the footer.
    pub fn footer_keys(&self) -> &'static [(&'static str, &'static str)] {
        match self.mode {
            // The most used first: on a narrow terminal the last ones are left out (`?`
            // lists every key).
            Mode::Normal => &[
                ("?", "help"),
                ("q", "quit"),
                ("j/k", "select"),
                ("L", "leader"),
                ("K", "kill"),
                ("p", "pause/resume"),
                ("r", "restart"),
                ("i", "isolate"),
                ("h", "heal"),
                (":", "command"),
                ("Tab", "view"),
                ("l", "load on/off"),
                ("+/-", "rate"),
                ("t", "terminate"),
                ("/", "filter"),
            ],
            Mode::Palette(_) => &[("Enter", "run"), ("Tab", "complete"), ("esc", "cancel")],
            Mode::Filter(_) => &[("Enter", "apply"), ("esc", "cancel")],
            Mode::Help => &[("any key", "back")],
            Mode::ConfirmQuit => &[
                ("y", "quit and stop the cluster"),
                ("any other key", "stay"),
            ],
        }
    }
}

fn push_capped<T>(queue: &mut VecDeque<T>, value: T) {
    if queue.len() == HISTORY_SECS {
        queue.pop_front();
    }
    queue.push_back(value);
}

/// Every key, for `?`.
pub const HELP: &[(&str, &str)] = &[
    ("j / k, ↓ / ↑", "select a node"),
    ("K", "kill the selected node (SIGKILL)"),
    ("p", "pause (SIGSTOP) or resume (SIGCONT) it"),
    ("r", "restart it on the same data dir"),
    ("t", "terminate it (SIGTERM, SIGKILL after a grace period)"),
    ("i", "isolate it (partition it from every other node)"),
    ("h", "heal every link (partitions, delays, losses)"),
    ("L", "select the leader"),
    ("l", "workload on / off"),
    ("+ / -", "workload rate up / down"),
    (":", "command palette: any scenario step, one line"),
    ("/", "filter the log pane"),
    ("Tab", "next view"),
    ("[ / ]", "a history view: one step back / on"),
    ("{ / }", "ten steps back / on"),
    (".", "back to the latest, followed live"),
    ("esc", "clear the filter and the message"),
    ("q", "quit (stops the cluster)"),
    ("Ctrl-C", "quit now"),
];

#[cfg(test)]
mod tests {
    use super::*;
    use crate::console::fixture::{node, with_nodes};

    fn app() -> App {
        with_nodes(vec![
            node("n1", ProcessState::Running, Health::Responsive),
            node("n2", ProcessState::Paused, Health::Unresponsive),
            node("n3", ProcessState::Down, Health::Down),
        ])
    }

    fn press(app: &mut App, code: KeyCode) -> Option<Action> {
        app.on_key(KeyEvent::new(code, KeyModifiers::NONE))
    }

    fn typed(app: &mut App, text: &str) {
        for c in text.chars() {
            assert_eq!(press(app, KeyCode::Char(c)), None);
        }
    }

    fn one(id: &str) -> Selector {
        Selector::One(id.into())
    }

    fn step(s: Step) -> Option<Action> {
        Some(Action::Run(s))
    }

    #[test]
    fn step_keys_move_through_a_views_history_and_back_to_the_latest() {
        let mut app = app();
        press(&mut app, KeyCode::Char('['));
        assert!(app.message.as_ref().unwrap().error, "no history yet");
        assert_eq!(app.step, None);
        app.probed = Some(Probed {
            probe: crate::console::views::Probe {
                node: "n1".into(),
                path: "/h".into(),
            },
            answer: Ok(serde_json::json!({"of": 20})),
        });
        press(&mut app, KeyCode::Char('['));
        assert_eq!(app.step, Some(19));
        press(&mut app, KeyCode::Char('{'));
        press(&mut app, KeyCode::Char('{'));
        assert_eq!(app.step, Some(0), "not before the first");
        press(&mut app, KeyCode::Char('}'));
        press(&mut app, KeyCode::Char(']'));
        assert_eq!(app.step, Some(11));
        press(&mut app, KeyCode::Char('}'));
        assert_eq!(app.step, None, "past the last is the latest");
        press(&mut app, KeyCode::Char('['));
        press(&mut app, KeyCode::Char('.'));
        assert_eq!(app.step, None);
        press(&mut app, KeyCode::Char('['));
        press(&mut app, KeyCode::Char('j'));
        assert_eq!(
            app.step, None,
            "another node, its own history from the latest"
        );
    }

    #[test]
    fn fault_keys_act_on_the_selected_node() {
        let mut app = app();
        assert_eq!(
            press(&mut app, KeyCode::Char('K')),
            step(Step::Kill(one("n1")))
        );
        assert_eq!(
            press(&mut app, KeyCode::Char('p')),
            step(Step::Pause(one("n1")))
        );
        press(&mut app, KeyCode::Char('j'));
        assert_eq!(
            press(&mut app, KeyCode::Char('p')),
            step(Step::Resume(one("n2"))),
            "p on a paused node resumes it"
        );
        assert_eq!(
            press(&mut app, KeyCode::Char('t')),
            step(Step::Terminate(one("n2")))
        );
        press(&mut app, KeyCode::Down);
        assert_eq!(
            press(&mut app, KeyCode::Char('r')),
            step(Step::Restart(one("n3")))
        );
        assert_eq!(
            press(&mut app, KeyCode::Char('p')),
            None,
            "a down node cannot pause"
        );
        assert!(app.message.as_ref().unwrap().error);
        assert_eq!(
            press(&mut app, KeyCode::Char('i')),
            step(Step::Partition("isolate n3".into()))
        );
        press(&mut app, KeyCode::Char('j'));
        assert_eq!(app.selected, 0, "selection wraps around");
        press(&mut app, KeyCode::Char('k'));
        assert_eq!(app.selected, 2);
        assert_eq!(press(&mut app, KeyCode::Char('h')), step(Step::Heal));
    }

    /// `L` goes to the node that leads now, never to a dead or paused one that last said so.
    #[test]
    fn l_selects_the_live_leader() {
        let mut app = with_nodes(vec![
            node("n1", ProcessState::Running, Health::Responsive),
            node("n2", ProcessState::Paused, Health::Unresponsive),
            node("n3", ProcessState::Down, Health::Down),
            node("n4", ProcessState::Running, Health::Unresponsive),
        ]);
        for i in 1..4 {
            app.model.nodes[i].role = Some("leader".into()); // paused, down, unresponsive
        }
        press(&mut app, KeyCode::Char('L'));
        assert!(
            app.message.as_ref().unwrap().error,
            "none of them leads now"
        );
        assert_eq!(app.selected, 0);
        app.model.nodes[0].role = Some("leader".into());
        press(&mut app, KeyCode::Down);
        press(&mut app, KeyCode::Char('L'));
        assert_eq!(app.selected, 0, "the one that answers");
    }

    /// The leader strip's marks through a failover: n1 leads term 1, is killed, n2 wins
    /// term 2; n1 restarts, says it leads its old term 1 for a moment and steps down. The
    /// stale mark must not take the lead from n2 (the strip showed "none" from then on).
    #[test]
    fn a_restarted_leader_of_an_older_term_does_not_take_the_strip() {
        use crate::engine::events::EventKind;
        let mut app = app();
        let event = |t: f64, kind: EventKind, node: &str, what: &str, term: Option<u64>| Event {
            t,
            kind,
            node: Some(node.into()),
            what: what.into(),
            fields: term
                .map(|term| serde_json::json!({ "term": term }))
                .and_then(|f| f.as_object().cloned())
                .unwrap_or_default(),
        };
        app.push_event(event(
            1.0,
            EventKind::NodeEvent,
            "n1",
            "became_leader in term 1",
            Some(1),
        ));
        assert_eq!(app.leader_now(), Some("n1"));
        app.push_event(event(2.0, EventKind::NodeCrashed, "n1", "killed", None));
        assert_eq!(app.leader_now(), None);
        app.push_event(event(
            3.0,
            EventKind::NodeEvent,
            "n2",
            "election_started",
            Some(2),
        ));
        app.push_event(event(
            3.2,
            EventKind::NodeEvent,
            "n2",
            "became_leader in term 2",
            Some(2),
        ));
        assert_eq!(app.leader_now(), Some("n2"));
        app.push_event(event(
            5.0,
            EventKind::NodeEvent,
            "n1",
            "became_leader in term 1",
            Some(1),
        ));
        assert_eq!(app.leader_now(), Some("n2"), "a mark of an older term");
        app.push_event(event(
            5.1,
            EventKind::NodeEvent,
            "n1",
            "stepped_down",
            Some(2),
        ));
        assert_eq!(app.leader_now(), Some("n2"), "n1 was not the leader");
        // A newer term's leader does take over, and its stepping down clears it.
        app.push_event(event(
            9.0,
            EventKind::NodeEvent,
            "n1",
            "became_leader in term 3",
            Some(3),
        ));
        assert_eq!(app.leader_now(), Some("n1"));
        app.push_event(event(
            9.5,
            EventKind::NodeEvent,
            "n1",
            "stepped_down",
            Some(3),
        ));
        assert_eq!(app.leader_now(), None);
    }

    #[test]
    fn load_keys_switch_and_step_the_rate() {
        let mut app = app();
        app.load = LoadFigures {
            running: true,
            rate: 20.0,
            ..LoadFigures::default()
        };
        assert_eq!(
            press(&mut app, KeyCode::Char('l')),
            step(Step::Load(LoadStep::Switch(LoadSwitch::Stop)))
        );
        assert_eq!(
            press(&mut app, KeyCode::Char('+')),
            step(Step::Load(LoadStep::Rate { rate: 50.0 }))
        );
        assert_eq!(
            press(&mut app, KeyCode::Char('-')),
            step(Step::Load(LoadStep::Rate { rate: 10.0 }))
        );
        app.load.running = false;
        assert_eq!(
            press(&mut app, KeyCode::Char('l')),
            step(Step::Load(LoadStep::Switch(LoadSwitch::Start)))
        );
    }

    #[test]
    fn the_palette_runs_a_step_or_says_what_is_wrong() {
        let mut app = app();
        press(&mut app, KeyCode::Char(':'));
        typed(&mut app, "part");
        press(&mut app, KeyCode::Tab);
        assert_eq!(app.mode, Mode::Palette("partition ".into()));
        typed(&mut app, "n1 | n2,n3");
        assert_eq!(
            press(&mut app, KeyCode::Enter),
            step(Step::Partition("n1 | n2,n3".into()))
        );
        assert_eq!(app.mode, Mode::Normal);

        press(&mut app, KeyCode::Char(':'));
        typed(&mut app, "kill n7");
        assert_eq!(press(&mut app, KeyCode::Enter), None);
        assert!(app.message.as_ref().unwrap().text.contains("unknown node"));
        assert_eq!(
            app.mode,
            Mode::Palette("kill n7".into()),
            "the line stays to fix"
        );
        press(&mut app, KeyCode::Esc);
        assert_eq!(app.mode, Mode::Normal);
    }

    #[test]
    fn quitting_asks_first_and_filters_apply_to_logs() {
        let mut app = app();
        assert_eq!(press(&mut app, KeyCode::Char('q')), None);
        assert_eq!(app.mode, Mode::ConfirmQuit);
        assert_eq!(press(&mut app, KeyCode::Char('n')), None);
        assert_eq!(app.mode, Mode::Normal);
        press(&mut app, KeyCode::Char('q'));
        assert_eq!(press(&mut app, KeyCode::Char('y')), Some(Action::Quit));
        assert_eq!(
            app.on_key(KeyEvent::new(KeyCode::Char('c'), KeyModifiers::CONTROL)),
            Some(Action::Quit)
        );

        app.logs = vec!["alpha".into(), "beta".into(), "alphabet".into()];
        press(&mut app, KeyCode::Char('/'));
        typed(&mut app, "alph");
        assert_eq!(
            app.visible_logs(),
            ["alpha", "alphabet"],
            "filters as you type"
        );
        press(&mut app, KeyCode::Enter);
        assert_eq!(app.log_filter, "alph");
        press(&mut app, KeyCode::Esc);
        assert_eq!(app.visible_logs().len(), 3);
    }

    /// Running consumers' per-partition lags are sampled each second (a paused node's figure
    /// is stale and left out); a partition nobody reports (its member died) keeps its last
    /// figure.
    #[test]
    fn partition_lag_is_sampled_from_the_nodes_that_report_it() {
        let mut app = app();
        app.model.nodes[0].detail["lag"] = serde_json::json!({"t/0": 5, "t/1": 2});
        app.model.nodes[1].detail["lag"] = serde_json::json!({"t/1": 100});
        app.sample(&[]);
        app.model.nodes[0].detail["lag"] = serde_json::json!({"t/0": 7});
        app.sample(&[]);
        assert_eq!(app.partition_lag["t/0"], [5, 7]);
        assert_eq!(app.partition_lag["t/1"], [2, 2]);
    }

    #[test]
    fn samples_become_per_second_rates_and_state_strips() {
        let mut app = app();
        let sample = |ok, errors| LoadSample {
            node: "n1".into(),
            ok,
            errors,
            p50_ms: Some(1.0),
            p99_ms: Some(4.0),
        };
        app.sample(&[sample(10, 1)]);
        app.sample(&[sample(25, 3)]);
        let n1 = &app.series["n1"];
        assert_eq!(n1.ok_rate, [0, 15]);
        assert_eq!(n1.err_rate, [0, 2]);
        assert_eq!(n1.p99_ms, Some(4.0));
        assert_eq!(app.load.ok_per_sec, 15);
        assert_eq!(
            app.series["n2"].states,
            [NodeState::Paused, NodeState::Paused]
        );
        assert_eq!(app.series["n3"].states.back(), Some(&NodeState::Down));
    }
}
