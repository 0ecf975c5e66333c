//! A coordinator and workers as real processes, in the spirit of 6.5840's test-mr.sh: every
//! job's output equals the sequential run's, each task runs once when nothing fails, maps and
//! reduces run in parallel, nobody exits before the output is complete; and through worker
//! kills, a coordinator restart, a straggler and a plugin that always traps.

use std::path::{Path, PathBuf};
use std::time::Duration;

use distlab_batch::board::{Board, CellState};
use distlab_batch::cluster::{LocalCluster, NodeCommand};
use distlab_proto::batch::v1 as pb;

const BATCH: &str = env!("CARGO_BIN_EXE_batch");

/// The library's local cluster, with what these tests ask of it.
struct Cluster(LocalCluster);

impl std::ops::Deref for Cluster {
    type Target = LocalCluster;
    fn deref(&self) -> &LocalCluster {
        &self.0
    }
}

impl std::ops::DerefMut for Cluster {
    fn deref_mut(&mut self) -> &mut LocalCluster {
        &mut self.0
    }
}

impl Cluster {
    async fn start(
        dir: &Path,
        workers: usize,
        coordinator_flags: &[&str],
        worker_flags: &dyn Fn(&str) -> Vec<String>,
    ) -> Self {
        let command = NodeCommand {
            program: BATCH.into(),
            args: vec!["serve".into()],
        };
        Self(
            LocalCluster::start(command, dir, workers, coordinator_flags, worker_flags)
                .await
                .unwrap(),
        )
    }

    async fn submit(&self, plugin: &str, arg: &str, input: &Path, out: &str, reduces: u32) -> u64 {
        let job = pb::JobDef {
            plugin: plugin.into(),
            arg: arg.into(),
            input: input.to_string_lossy().into_owned(),
            reduces,
            split_bytes: 40_000,
            range_partition: false,
            output: self.dir.join(out).to_string_lossy().into_owned(),
            name: out.into(),
            request_id: format!("test-{out}"),
        };
        self.0.submit(job).await.unwrap()
    }

    /// The job's status once it is over (60 s at most).
    async fn finished(&self, job: u64) -> pb::JobStatus {
        self.0.finished(job, Duration::from_secs(60)).await.unwrap()
    }

    /// Waits until `done` holds for the coordinator's board (30 s at most).
    async fn board_until(&self, what: &str, done: impl Fn(&Board) -> bool) -> Board {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(board) = self.board().await
                && done(&board)
            {
                return board;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "not within 30 s: {what}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn board(&self) -> Option<Board> {
        let admin = self.coordinator.as_ref()?.ready().admin;
        let status: serde_json::Value = reqwest::get(format!("http://{admin}/status"))
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        serde_json::from_value(status["detail"].clone()).ok()
    }

    /// The coordinator's log events named `event`.
    fn events(&self, event: &str) -> Vec<serde_json::Value> {
        let text = std::fs::read_to_string(self.dir.join("co.log")).unwrap_or_default();
        text.lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|v| v["event"] == event)
            .collect()
    }
}

/// The test's directory: removed after the test, unless `BATCH_TEST_KEEP` is set (then its
/// path is printed, with every node's log in it).
struct Scratch {
    /// Removes the directory when the test ends (none when it is kept).
    _removed: Option<tempfile::TempDir>,
    path: PathBuf,
}

impl Scratch {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        if std::env::var_os("BATCH_TEST_KEEP").is_some() {
            let path = dir.keep();
            eprintln!("test directory kept: {}", path.display());
            Self {
                _removed: None,
                path,
            }
        } else {
            let path = dir.path().to_path_buf();
            Self {
                _removed: Some(dir),
                path,
            }
        }
    }

    fn path(&self) -> &Path {
        &self.path
    }
}

/// Text files under `dir/in`: a deterministic corpus, in three files.
fn input(dir: &Path, bytes: u64) -> PathBuf {
    let input = dir.join("in");
    std::fs::create_dir_all(&input).unwrap();
    for (i, size) in [bytes / 2, bytes / 3, bytes / 6].into_iter().enumerate() {
        let mut file = std::fs::File::create(input.join(format!("doc{i}.txt"))).unwrap();
        distlab_batch::corpus::write(&mut file, size, 2_000, i as u64 + 1).unwrap();
    }
    input
}

/// Every line of a job's output, sorted.
fn output_lines(out: &Path) -> Vec<String> {
    let mut lines = Vec::new();
    for entry in std::fs::read_dir(out).unwrap() {
        let path = entry.unwrap().path();
        if path
            .file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with("part-r-")
        {
            lines.extend(
                std::fs::read_to_string(&path)
                    .unwrap()
                    .lines()
                    .map(String::from),
            );
        }
    }
    lines.sort();
    lines
}

/// The sequential run's output lines, sorted.
fn reference(plugin: &str, input: &Path, dir: &Path, reduces: u32) -> Vec<String> {
    let job = distlab_batch::local::JobDef {
        plugin: plugin.into(),
        arg: String::new(),
        input: input.to_path_buf(),
        reduces,
        split_bytes: 40_000,
        range_partition: false,
    };
    let out = dir.join(format!("reference-{plugin}"));
    distlab_batch::local::run_local(&job, &dir.join(format!("work-{plugin}")), &out).unwrap();
    output_lines(&out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_match_the_sequential_run_and_each_task_runs_once() {
    let dir = Scratch::new();
    let input = input(dir.path(), 300_000);
    // No speculation: a backup is a second run of a task, and this test counts runs.
    let cluster = Cluster::start(dir.path(), 3, &["--no-speculation"], &|_| Vec::new()).await;
    // Two jobs queued at once: the second waits for workers the first leaves idle.
    let count = cluster.submit("wordcount", "", &input, "count", 3).await;
    let index = cluster.submit("indexer", "", &input, "index", 2).await;
    for job in [count, index] {
        let status = cluster.finished(job).await;
        assert_eq!(status.state, "done", "{status:?}");
    }
    assert!(
        cluster.all_alive(),
        "nobody exits before the output is complete"
    );
    assert_eq!(
        output_lines(&dir.path().join("count")),
        reference("wordcount", &input, dir.path(), 3)
    );
    assert_eq!(
        output_lines(&dir.path().join("index")),
        reference("indexer", &input, dir.path(), 2)
    );
    assert!(dir.path().join("count/_SUCCESS").exists());

    let board = cluster.board().await.unwrap();
    let job = board.job(count).unwrap();
    let maps = job.maps.len();
    assert!(maps >= 7, "{maps} map tasks");
    // Each task ran once: as many commits as tasks, no refusals, no second attempts.
    let committed = cluster.events("task_committed");
    let of_count = committed.iter().filter(|e| e["job"] == count).count();
    assert_eq!(of_count, maps + 3);
    assert_eq!(board.refused_late, 0);
    assert_eq!(job.backups_launched, 0);
    // Map and reduce parallelism: more than one worker committed each phase. (The reduces of
    // the last job: nothing else competes for the workers then, and every idle worker waiting
    // for work takes one the moment the last map commits.)
    let workers = |cells: &[distlab_batch::board::Cell]| {
        let mut w: Vec<&String> = cells.iter().flat_map(|c| &c.workers).collect();
        w.sort();
        w.dedup();
        w.len()
    };
    assert!(workers(&job.maps) > 1, "{:?}", job.maps);
    let last = board.job(index).unwrap();
    assert!(workers(&last.reduces) > 1, "{:?}", last.reduces);
    assert!(job.shuffle_bytes > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_finish_through_worker_kills_and_a_coordinator_restart() {
    let dir = Scratch::new();
    let input = input(dir.path(), 400_000);
    // (No speculation: a backup could beat slow w1 to every map it starts.)
    let mut cluster = Cluster::start(
        dir.path(),
        3,
        &["--lease", "1s", "--no-speculation"],
        &|id| {
            // w1 is slow, so it is still mapping when it is killed.
            if id == "w1" {
                vec!["--slow".into(), "3".into()]
            } else {
                Vec::new()
            }
        },
    )
    .await;
    let job = cluster.submit("wordcount", "", &input, "count", 3).await;

    // Kill w1 once it committed a map: its output must be recomputed.
    cluster
        .board_until("w1 committed a map", |b| {
            b.job(job).is_some_and(|j| {
                j.maps
                    .iter()
                    .any(|c| c.state == CellState::Done && c.workers == ["w1"])
            })
        })
        .await;
    cluster
        .workers
        .get_mut("w1")
        .unwrap()
        .take()
        .unwrap()
        .kill()
        .await
        .unwrap();
    cluster
        .board_until("w1's map output is lost", |b| {
            b.job(job).is_some_and(|j| j.lost_map_outputs > 0)
        })
        .await;

    // Kill -9 the coordinator once some maps are committed, and restart it on its data dir.
    let before = cluster
        .board_until("maps committed", |b| {
            b.job(job)
                .is_some_and(|j| j.maps.iter().filter(|c| c.state == CellState::Done).count() >= 3)
        })
        .await;
    cluster.coordinator.take().unwrap().kill().await.unwrap();
    let committed_before: Vec<u64> = cluster
        .events("task_committed")
        .iter()
        .map(|e| e["attempt"].as_u64().unwrap())
        .collect();
    cluster.start_coordinator().await.unwrap();
    // The killed worker comes back too, empty-handed.
    cluster.start_worker("w1", &[]).await.unwrap();
    let status = cluster.finished(job).await;
    assert_eq!(status.state, "done", "{status:?}");
    assert!(cluster.all_alive());
    assert_eq!(
        output_lines(&dir.path().join("count")),
        reference("wordcount", &input, dir.path(), 3)
    );
    // Maps committed before the restart were not run again after it.
    let done_before: Vec<usize> = before
        .job(job)
        .unwrap()
        .maps
        .iter()
        .enumerate()
        .filter(|(_, c)| c.state == CellState::Done)
        .map(|(i, _)| i)
        .collect();
    let log = std::fs::read_to_string(dir.path().join("co.log")).unwrap();
    let after_restart = log
        .split("\"event\":\"coordinator_recovered\"")
        .nth(1)
        .expect("the coordinator said it recovered");
    for line in after_restart.lines() {
        let Ok(event) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        if event["event"] == "task_committed" && event["phase"] == "map" {
            let task = event["task"].as_u64().unwrap() as usize;
            let attempt = event["attempt"].as_u64().unwrap();
            assert!(!committed_before.contains(&attempt));
            // A map committed before the restart runs again only if its worker's output was
            // lost (w1's): none of those that were done by the live workers.
            let by = &before.job(job).unwrap().maps[task].workers;
            assert!(
                !done_before.contains(&task) || by == &["w1".to_string()],
                "map {task} committed before the restart (by {by:?}) ran again"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_straggler_gets_a_backup_and_a_trapping_plugin_fails_only_its_job() {
    let dir = Scratch::new();
    let input = input(dir.path(), 300_000);
    let cluster = Cluster::start(dir.path(), 3, &[], &|id| {
        if id == "w3" {
            vec!["--slow".into(), "30".into()]
        } else {
            Vec::new()
        }
    })
    .await;
    let job = cluster.submit("wordcount", "", &input, "count", 2).await;
    let status = cluster.finished(job).await;
    assert_eq!(status.state, "done", "{status:?}");
    assert_eq!(
        output_lines(&dir.path().join("count")),
        reference("wordcount", &input, dir.path(), 2)
    );
    let board = cluster.board().await.unwrap();
    let stats = board.job(job).unwrap();
    assert!(stats.backups_launched >= 1, "{stats:?}");
    assert!(stats.backups_won >= 1, "{stats:?}");

    let bad = cluster.submit("chaos", "trap=1000", &input, "bad", 1).await;
    let status = cluster.finished(bad).await;
    assert_eq!(status.state, "failed");
    assert!(
        status.error.contains("failed 4 times")
            && status.error.contains("record 1 of")
            && status.error.contains("the plugin trapped"),
        "{}",
        status.error
    );
    assert!(!dir.path().join("bad/_SUCCESS").exists());
    // The cluster goes on serving.
    let again = cluster.submit("wordcount", "", &input, "again", 1).await;
    assert_eq!(cluster.finished(again).await.state, "done");
    assert!(cluster.all_alive());
}
