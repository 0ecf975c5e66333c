//! The console: `lab run PROJ` starts a cluster and its workload and opens a k9s-style screen
//! on it; keys and the command palette inject faults. It renders only the engine's cluster
//! model, timeline and workload figures, and sends the engine steps; it never talks to a node
//! itself, so a paused node cannot freeze the screen.
//!
//! - [`app`]: the state and the key map (no drawing, no engine): tested without a terminal.
//! - [`chooser`]: `lab run` with no project: pick a project or a shipped scenario.
//! - [`ui`] draws the state; [`views`] is where projects add their key figures and views.
//! - [`palette`]: `:` commands in the scenario step grammar.
//! - [`cast`]: recording what is drawn as an asciicast.
//! - [`terminal`]: raw mode and the alternate screen, restored however the console ends.
//!
//! The loop redraws when something changed, at most 20 times a second; with nothing
//! happening it wakes 4 times a second (the clock, the rates, the log tail).

pub mod app;
pub mod cast;
pub mod chooser;
#[cfg(test)]
pub mod fixture;
pub mod palette;
pub mod terminal;
pub mod ui;
pub mod views;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use ratatui_core::layout::Rect;
use ratatui_core::terminal::{Terminal, TerminalOptions, Viewport};
use ratatui_crossterm::CrosstermBackend;
use ratatui_crossterm::crossterm::event::Event as TermEvent;
use tokio::sync::{mpsc, watch};

use self::app::{Action, App, LoadFigures, Message, ScenarioPane};
use self::cast::{Cast, Tee};
use crate::engine::project::{self, ClusterSpec};
use crate::engine::runner::{self, Progress, Report};
use crate::engine::scenario::{self, Step, Validated};
use crate::engine::session::Session;
use crate::engine::workload::WorkloadSpec;

/// The workload `lab run` starts with: slow enough to leave the machine to the cluster, fast
/// enough that something moves.
pub const CONSOLE_RATE: f64 = 20.0;

/// `lab run`'s arguments.
#[derive(Debug, Clone, clap::Args)]
pub struct RunArgs {
    /// The project: proj0... [default: pick one, or one of its scenarios, from a list]
    pub project: Option<String>,
    /// Nodes in the cluster [default: the project's own, at least 3; a scenario's own]
    #[arg(long)]
    pub nodes: Option<usize>,
    /// Play this scenario live (its project must be PROJ); the cluster stays up after.
    #[arg(long)]
    pub scenario: Option<PathBuf>,
    /// Seed for every random choice [default: the scenario's, or 1]
    #[arg(long)]
    pub seed: Option<u64>,
    /// Record what the console draws into this asciicast v2 file.
    #[arg(long)]
    pub record: Option<PathBuf>,
    /// Where run directories go.
    #[arg(long, default_value = "runs")]
    pub runs_dir: PathBuf,
    /// Service flags added to every node, after a scenario's own: `--node-flags "--read-mode
    /// lease"`.
    #[arg(long, value_name = "FLAGS", allow_hyphen_values = true)]
    pub node_flags: Option<String>,
    /// Add workers while tasks queue up and retire idle ones, keeping MIN..MAX of them
    /// (Project 4): `--autoscale 1..5`.
    #[arg(long, value_name = "MIN..MAX", value_parser = crate::engine::autoscale::Range::parse, conflicts_with = "nodes")]
    pub autoscale: Option<crate::engine::autoscale::Range>,
}

/// `lab run PROJ`: the interactive console (`lab run` alone: a chooser first).
pub fn run(mut args: RunArgs) -> ExitCode {
    let terminal = std::io::IsTerminal::is_terminal(&std::io::stdout());
    if args.project.is_none() {
        if !terminal {
            let known: Vec<&str> = project::all().map(|p| p.name).collect();
            eprintln!(
                "error: lab run needs a project ({}); `lab list` shows them and their scenarios",
                known.join(", ")
            );
            return ExitCode::from(2);
        }
        match chooser::choose(&crate::headless::scenarios_dir()) {
            Ok(chooser::Choice::Project(p)) => args.project = Some(p.to_string()),
            Ok(chooser::Choice::Scenario(p, file)) => {
                args.project = Some(p.to_string());
                args.scenario = Some(file);
            }
            Ok(chooser::Choice::Quit) => return ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e:#}");
                return ExitCode::FAILURE;
            }
        }
    }
    let (cluster, validated) = match plan(&args) {
        Ok(planned) => planned,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    if !terminal {
        eprintln!(
            "error: lab run needs a terminal; to run a scenario without one use `lab scenario FILE`"
        );
        return ExitCode::from(2);
    }
    // The lab's own log lines would scribble over the screen: off unless RUST_LOG asks.
    distlab_runtime::node::run_cli("lab", "off", || async move {
        eprintln!(
            "starting {} ({} nodes)…",
            cluster.project.name, cluster.nodes
        );
        let exe = std::env::current_exe().context("finding the lab executable")?;
        let session = Arc::new(Session::start(cluster, &args.runs_dir, exe).await?);
        let outcome = interactive(&session, &args, validated).await;
        eprintln!("stopping the cluster…");
        session.stop().await;
        eprintln!("run dir: {}", session.run_dir().display());
        outcome
    })
}

/// The cluster to start, and the scenario if one was given (it must be for that project).
fn plan(args: &RunArgs) -> Result<(ClusterSpec, Option<Validated>), String> {
    let project = project::find(args.project.as_deref().unwrap_or_default())?;
    let validated = match &args.scenario {
        Some(file) => {
            let validated = scenario::load(file)?;
            if validated.project.name != project.name {
                return Err(format!(
                    "{}: the scenario is for {}, not {}",
                    file.display(),
                    validated.project.name,
                    project.name
                ));
            }
            Some(validated)
        }
        None => None,
    };
    if let Some(nodes) = args.nodes {
        project.plan(nodes)?;
    }
    if let (Some(v), Some(n)) = (&validated, args.nodes)
        && v.nodes.len() != n
    {
        return Err(format!(
            "the scenario is written for {} nodes; leave out --nodes",
            v.nodes.len()
        ));
    }
    let flags = project::split_flags(args.node_flags.as_deref().unwrap_or_default());
    let mut cluster = match &validated {
        Some(v) => v.cluster(args.seed, &flags),
        None => ClusterSpec {
            node_flags: flags,
            ..ClusterSpec::new(
                project,
                args.nodes.unwrap_or(project.console_nodes()),
                args.seed.unwrap_or(1),
            )
        },
    };
    if let Some(range) = args.autoscale {
        if validated.is_some() {
            return Err("--autoscale: a scenario says its own (autoscale: MIN..MAX)".into());
        }
        cluster = ClusterSpec {
            node_flags: cluster.node_flags,
            ..ClusterSpec::autoscaled(project, range, cluster.seed)?
        };
    }
    cluster.check()?;
    Ok((cluster, validated))
}

async fn interactive(
    session: &Arc<Session>,
    args: &RunArgs,
    validated: Option<Validated>,
) -> anyhow::Result<()> {
    let guard = terminal::Guard::enter()?;
    let (width, height) = ratatui_crossterm::crossterm::terminal::size()?;
    let cast = match &args.record {
        Some(path) => Some(Arc::new(Mutex::new(Cast::create(
            path,
            width,
            height,
            &format!("distlab {}", session.supervisor().project().name),
        )?))),
        None => None,
    };
    let backend = CrosstermBackend::new(Tee::new(Some(std::io::stdout()), cast.clone()));
    // (Not `terminal.clear()`: it asks the terminal where the cursor is, and waits for it.)
    let mut terminal = Terminal::new(backend)?;
    let input = terminal::spawn_input();
    let mut console = Console::new(session.clone(), cast, args.record.clone());
    match validated {
        Some(v) => console.play(v, args.scenario.clone().unwrap_or_default()),
        None => {
            session
                .start_load(WorkloadSpec {
                    rate: CONSOLE_RATE,
                    ..WorkloadSpec::default()
                })
                .await?;
        }
    }
    let outcome = console.run(&mut terminal, Some(input), false, None).await;
    if outcome.is_ok() {
        console.app.stopping = true;
        let _ = terminal.draw(|frame| ui::draw(frame, &console.app, &console.ui));
    }
    drop(terminal);
    drop(guard);
    outcome
}

/// `lab scenario FILE --record FILE.cast --size WxH`: plays the scenario with the console
/// drawn into the cast (no terminal needed) and returns its report.
pub async fn record_scenario(
    validated: &Validated,
    file: &Path,
    cluster: ClusterSpec,
    runs_dir: &Path,
    record: &Path,
    (width, height): (u16, u16),
) -> anyhow::Result<Report> {
    let exe = std::env::current_exe().context("finding the lab executable")?;
    let session = Arc::new(Session::start(cluster, runs_dir, exe).await?);
    let cast = Arc::new(Mutex::new(Cast::create(
        record,
        width,
        height,
        &format!("distlab: {}", validated.scenario.name),
    )?));
    let backend = CrosstermBackend::new(Tee::<std::io::Stdout>::new(None, Some(cast.clone())));
    let area = Rect::new(0, 0, width, height);
    let mut terminal = Terminal::with_options(
        backend,
        TerminalOptions {
            viewport: Viewport::Fixed(area),
        },
    )?;
    let mut console = Console::new(
        session.clone(),
        Some(cast.clone()),
        Some(record.display().to_string().into()),
    );
    console.play(validated.clone(), file.to_path_buf());
    let outcome = console.run(&mut terminal, None, true, None).await;
    cast.lock().unwrap().flush()?;
    session.stop().await;
    outcome?;
    console
        .report
        .take()
        .context("the scenario ended without a report")
}

/// `lab bench console`'s arguments.
#[derive(Debug, Clone, clap::Args)]
pub struct ConsoleBenchArgs {
    /// Nodes in the Project 0 cluster.
    #[arg(long, default_value_t = 5)]
    pub nodes: usize,
    /// Seconds measured without the console, then as many with it.
    #[arg(long, default_value_t = 15)]
    pub secs: u64,
    /// Workload rate (ops/s).
    #[arg(long, default_value_t = CONSOLE_RATE)]
    pub rate: f64,
}

/// The console's own CPU cost: the lab process's CPU time (getrusage) with a Project 0
/// cluster and its workload on, first with nobody watching, then with the console drawing a
/// 120x36 screen (into a sink: the cost of a real terminal's output is the terminal's). The
/// difference is the UI's. One line per figure.
pub async fn bench(args: &ConsoleBenchArgs, runs_root: &Path) -> anyhow::Result<()> {
    use nix::sys::resource::{UsageWho, getrusage};
    let cpu = || -> anyhow::Result<Duration> {
        let usage = getrusage(UsageWho::RUSAGE_SELF)?;
        let secs = |t: nix::sys::time::TimeVal| {
            Duration::from_secs(t.tv_sec() as u64) + Duration::from_micros(t.tv_usec() as u64)
        };
        Ok(secs(usage.user_time()) + secs(usage.system_time()))
    };
    let exe = std::env::current_exe().context("finding the lab executable")?;
    let project = project::find("proj0").map_err(distlab_runtime::BadInput)?;
    let session =
        Arc::new(Session::start(ClusterSpec::new(project, args.nodes, 1), runs_root, exe).await?);
    session
        .start_load(WorkloadSpec {
            rate: args.rate,
            ..WorkloadSpec::default()
        })
        .await?;
    let window = Duration::from_secs(args.secs.max(1));
    // Let the cluster settle first.
    tokio::time::sleep(Duration::from_secs(2)).await;

    let (cpu0, wall0) = (cpu()?, std::time::Instant::now());
    tokio::time::sleep(window).await;
    let engine = (cpu()? - cpu0).as_secs_f64() / wall0.elapsed().as_secs_f64();

    let backend = CrosstermBackend::new(Tee::new(Some(std::io::sink()), None));
    let mut terminal = Terminal::with_options(
        backend,
        TerminalOptions {
            viewport: Viewport::Fixed(Rect::new(0, 0, 120, 36)),
        },
    )?;
    let mut console = Console::new(session.clone(), None, None);
    let (cpu1, wall1) = (cpu()?, std::time::Instant::now());
    console
        .run(
            &mut terminal,
            None,
            false,
            Some(tokio::time::Instant::now() + window),
        )
        .await?;
    let with_ui = (cpu()? - cpu1).as_secs_f64() / wall1.elapsed().as_secs_f64();
    session.stop().await;
    let figure = |name: &str, value: f64| {
        println!(
            "bench=console figure={name} nodes={} rate={} seconds={} percent_of_one_core={value:.2}",
            args.nodes,
            args.rate,
            window.as_secs()
        );
    };
    figure("lab_cpu_without_console", engine * 100.0);
    figure("lab_cpu_with_console", with_ui * 100.0);
    figure("console_ui_cpu", (with_ui - engine).max(0.0) * 100.0);
    Ok(())
}

/// A scenario played in the background while the console shows it.
struct ScenarioRun {
    name: String,
    steps: Vec<String>,
    progress: watch::Receiver<Progress>,
    report: tokio::sync::oneshot::Receiver<Report>,
}

fn play_scenario(session: Arc<Session>, validated: Validated, file: PathBuf) -> ScenarioRun {
    let (progress_tx, progress) = watch::channel(Progress::Step(0));
    let (report_tx, report) = tokio::sync::oneshot::channel();
    let name = validated.scenario.name.clone();
    let steps = validated
        .scenario
        .steps
        .iter()
        .map(|s| s.describe())
        .collect();
    tokio::spawn(async move {
        if let Err(e) = runner::play(&session, &validated, &file, &progress_tx).await {
            progress_tx.send_replace(Progress::Failed(format!("{e:#}")));
            return;
        }
        progress_tx.send_replace(Progress::Checking);
        let concluded = {
            let session = session.clone();
            tokio::task::spawn_blocking(move || runner::conclude(&session, &validated)).await
        };
        match concluded {
            Ok(Ok(report)) => {
                progress_tx.send_replace(Progress::Done {
                    outcome: report.outcome(),
                });
                let _ = report_tx.send(report);
            }
            Ok(Err(e)) => {
                progress_tx.send_replace(Progress::Failed(format!("{e:#}")));
            }
            Err(e) => {
                progress_tx.send_replace(Progress::Failed(format!("checking: {e}")));
            }
        }
    });
    ScenarioRun {
        name,
        steps,
        progress,
        report,
    }
}

/// The console's loop: engine updates and keys in, frames out.
struct Console {
    session: Arc<Session>,
    /// The timeline's events after those `app` got at the start.
    timeline: tokio::sync::broadcast::Receiver<crate::engine::events::Event>,
    app: App,
    ui: views::ProjectUi,
    cast: Option<Arc<Mutex<Cast>>>,
    scenario: Option<ScenarioRun>,
    report: Option<Report>,
    /// Answers to the shown view's probe, and whether one is outstanding.
    probes: (
        mpsc::UnboundedSender<app::Probed>,
        mpsc::UnboundedReceiver<app::Probed>,
    ),
    probing: bool,
    http: reqwest::Client,
}

impl Console {
    fn new(
        session: Arc<Session>,
        cast: Option<Arc<Mutex<Cast>>>,
        recording: Option<PathBuf>,
    ) -> Self {
        let project = session.supervisor().project();
        let ui = views::for_project(project);
        let mut app = App::new(project, ui.views.len());
        app.recording = recording.map(|p| p.display().to_string());
        let (past, timeline) = session.supervisor().timeline().follow();
        for event in past {
            app.push_event(event);
        }
        Self {
            session,
            timeline,
            app,
            ui,
            cast,
            scenario: None,
            report: None,
            probes: mpsc::unbounded_channel(),
            probing: false,
            http: reqwest::Client::new(),
        }
    }

    /// Starts playing a scenario, shown in the scenario pane.
    fn play(&mut self, validated: Validated, file: PathBuf) {
        let scenario = play_scenario(self.session.clone(), validated, file);
        self.app.scenario = Some(ScenarioPane {
            name: scenario.name.clone(),
            steps: scenario.steps.clone(),
            progress: scenario.progress.borrow().clone(),
            verdicts: Vec::new(),
        });
        self.scenario = Some(scenario);
    }

    /// Runs until the user quits (or, `headless`, until the scenario is over), or until
    /// `deadline`.
    async fn run<W: Write>(
        &mut self,
        terminal: &mut Terminal<CrosstermBackend<W>>,
        mut input: Option<mpsc::UnboundedReceiver<TermEvent>>,
        headless: bool,
        deadline: Option<tokio::time::Instant>,
    ) -> anyhow::Result<()> {
        let mut model = self.session.model();
        let (done_tx, mut done) = mpsc::unbounded_channel::<Message>();
        let mut signals = terminal::quit_signals()?;
        let mut frame = tokio::time::interval(Duration::from_millis(50));
        let mut tick = tokio::time::interval(Duration::from_millis(250));
        frame.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        let mut ticks = 0u64;
        let mut dirty = true;
        let mut finished_at: Option<tokio::time::Instant> = None;
        loop {
            tokio::select! {
                _ = frame.tick() => {
                    if dirty {
                        terminal.draw(|f| ui::draw(f, &self.app, &self.ui))?;
                        dirty = false;
                    }
                    if let Some(at) = finished_at
                        && at.elapsed() > Duration::from_secs(2)
                    {
                        if let Some(pane) = &self.app.scenario
                            && let Progress::Failed(e) = &pane.progress
                        {
                            anyhow::bail!("{e}");
                        }
                        return Ok(());
                    }
                    if deadline.is_some_and(|d| tokio::time::Instant::now() >= d) {
                        return Ok(());
                    }
                    continue;
                }
                changed = model.changed() => {
                    if changed.is_ok() {
                        self.app.observe(model.borrow_and_update().clone());
                    }
                }
                event = self.timeline.recv() => {
                    if let Ok(event) = event {
                        if let Some(cast) = &self.cast
                            && event.what.starts_with("step ")
                        {
                            let _ = cast.lock().unwrap().marker(&event.what);
                        }
                        self.app.push_event(event);
                    }
                }
                _ = tick.tick() => {
                    ticks += 1;
                    if ticks.is_multiple_of(4) {
                        self.app.sample(&self.session.stats().sample());
                    }
                    self.refresh();
                }
                Some(message) = done.recv() => self.app.message = Some(message),
                Some(probed) = self.probes.1.recv() => {
                    self.probing = false;
                    self.app.probed = Some(probed);
                }
                Some(event) = recv(&mut input) => {
                    match event {
                        TermEvent::Key(key) if key.kind != ratatui_crossterm::crossterm::event::KeyEventKind::Release => {
                            match self.app.on_key(key) {
                                Some(Action::Quit) => return Ok(()),
                                Some(Action::Run(step)) => self.execute(step, done_tx.clone()),
                                None => {}
                            }
                        }
                        TermEvent::Resize(..) => terminal.autoresize()?,
                        _ => {}
                    }
                }
                _ = signals.recv() => return Ok(()),
            }
            dirty = true;
            if let Some(scenario) = &mut self.scenario {
                let progress = scenario.progress.borrow().clone();
                if let Some(pane) = &mut self.app.scenario {
                    pane.progress = progress.clone();
                }
                if let Ok(report) = scenario.report.try_recv() {
                    if let Some(pane) = &mut self.app.scenario {
                        pane.verdicts = report
                            .checks
                            .iter()
                            .map(|c| {
                                let v = &c.verdict;
                                let expect = match c.expected {
                                    scenario::Expect::Valid => "",
                                    scenario::Expect::Invalid => " (the scenario expects invalid)",
                                };
                                (format!("{}: {}{expect}", v.checker, v.summary), c.met())
                            })
                            .collect();
                    }
                    self.report = Some(report);
                }
                let over = matches!(progress, Progress::Failed(_))
                    || (matches!(progress, Progress::Done { .. }) && self.report.is_some());
                if headless && over && finished_at.is_none() {
                    finished_at = Some(tokio::time::Instant::now());
                }
            }
        }
    }

    /// The figures that are read rather than pushed: the workload's state, the log tail.
    fn refresh(&mut self) {
        let info = self.session.load_info();
        self.app.load = LoadFigures {
            running: info.running,
            rate: info.spec.map_or(CONSOLE_RATE, |s| s.rate),
            ..self.app.load
        };
        if let Some(node) = self.app.selected_node() {
            let log = self.session.run_dir().join(&node.node.id).join("node.log");
            self.app.logs = tail(&log, 200);
        }
        self.ask_probe();
    }

    /// Asks the shown view's question of its node, unless an answer is still outstanding.
    fn ask_probe(&mut self) {
        if self.probing {
            return;
        }
        let Some(probe) = self
            .ui
            .views
            .get(self.app.view)
            .and_then(|view| view.probe(&self.app))
        else {
            return;
        };
        let addr = self
            .app
            .model
            .nodes
            .iter()
            .find(|n| n.node.id == probe.node)
            .and_then(|n| n.node.grpc);
        let Some(addr) = addr else {
            self.app.probed = Some(app::Probed {
                answer: Err(format!("{} is not running", probe.node)),
                probe,
            });
            return;
        };
        self.probing = true;
        let (tx, http) = (self.probes.0.clone(), self.http.clone());
        tokio::spawn(async move {
            let url = format!("http://{addr}{}", probe.path);
            let answer = async {
                let response = http
                    .get(&url)
                    .timeout(Duration::from_secs(1))
                    .send()
                    .await
                    .map_err(|e| format!("{} did not answer: {e}", probe.node))?;
                let status = response.status();
                let body = response.text().await.map_err(|e| e.to_string())?;
                if !status.is_success() {
                    return Err(format!("{}: {status}: {body}", probe.node));
                }
                serde_json::from_str(&body).map_err(|e| format!("{url}: not JSON: {e}"))
            }
            .await;
            let _ = tx.send(app::Probed { probe, answer });
        });
    }

    /// Hands a step to the engine; its outcome comes back as a message.
    fn execute(&mut self, step: Step, done: mpsc::UnboundedSender<Message>) {
        let session = self.session.clone();
        let what = step.describe();
        self.app.message = Some(Message {
            text: format!("{what}…"),
            error: false,
        });
        tokio::spawn(async move {
            let message = match session.step(&step).await {
                Ok(()) => Message {
                    text: format!("done: {what}"),
                    error: false,
                },
                Err(e) => Message {
                    text: format!("{what}: {e:#}"),
                    error: true,
                },
            };
            let _ = done.send(message);
        });
    }
}

async fn recv<T>(input: &mut Option<mpsc::UnboundedReceiver<T>>) -> Option<T> {
    match input {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

/// The last `lines` lines of a file (reading at most its last 64 KiB).
fn tail(path: &Path, lines: usize) -> Vec<String> {
    use std::io::{Read, Seek, SeekFrom};
    let Ok(mut file) = std::fs::File::open(path) else {
        return Vec::new();
    };
    let len = file.metadata().map_or(0, |m| m.len());
    let start = len.saturating_sub(64 * 1024);
    if file.seek(SeekFrom::Start(start)).is_err() {
        return Vec::new();
    }
    let mut bytes = Vec::new();
    if file.read_to_end(&mut bytes).is_err() {
        return Vec::new();
    }
    let text = String::from_utf8_lossy(&bytes);
    let mut all: Vec<&str> = text.lines().collect();
    if start > 0 && !all.is_empty() {
        all.remove(0); // a partial line
    }
    all[all.len().saturating_sub(lines)..]
        .iter()
        .map(|l| l.to_string())
        .collect()
}
