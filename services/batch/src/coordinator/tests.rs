use super::*;
use crate::scheduler::Config;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

struct Fixture {
    dir: tempfile::TempDir,
}

impl Fixture {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("in")).unwrap();
        std::fs::write(dir.path().join("in/a.txt"), "a b c\nb c\nc\n").unwrap();
        Self { dir }
    }

    fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }

    fn submission(&self, out: &str) -> Submission {
        Submission {
            def: JobDef {
                plugin: "wordcount".into(),
                arg: String::new(),
                input: self.path("in"),
                reduces: 2,
                split_bytes: 6,
                range_partition: false,
            },
            name: "count".into(),
            output: self.path(out),
            request_id: String::new(),
        }
    }

    fn coordinator(&self) -> Coordinator {
        Coordinator::open(Config::default(), Some(self.path("co")), ms(0)).unwrap()
    }

    fn submit(&self, c: &mut Coordinator, out: &str) -> JobId {
        let (plan, spec) =
            Coordinator::plan(self.submission(out), c.data_dir(), c.local_files()).unwrap();
        c.submit(plan, spec, ms(0)).unwrap()
    }
}

/// Runs every map of the running job on `worker`, committing each.
fn commit_maps(c: &mut Coordinator, worker: &str, now: Duration) {
    while let Some(work) = c.next_task(worker, now) {
        assert_eq!(work.task.phase, Phase::Map);
        c.complete(work.attempt, worker, Outcome::default(), now)
            .unwrap();
        if c.state.scheduler.jobs[&work.task.job].phase() == Phase::Reduce {
            return;
        }
    }
}

#[test]
fn a_reduce_commits_by_rename_and_a_late_one_leaves_nothing() {
    let f = Fixture::new();
    let mut c = f.coordinator();
    let job = f.submit(&mut c, "out");
    assert_eq!(c.state.plans[&job].splits.len(), 2);
    commit_maps(&mut c, "w1", ms(10));
    let r0 = c.next_task("w1", ms(20)).unwrap();
    let r1 = c.next_task("w2", ms(20)).unwrap();
    for r in [&r0, &r1] {
        let path = r.output_path.clone().unwrap();
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, format!("from attempt {}\n", r.attempt)).unwrap();
    }
    c.complete(r0.attempt, "w1", Outcome::default(), ms(30))
        .unwrap();
    let committed = f.path("out").join(output_name(r0.task.index));
    assert!(!committed.exists(), "not before the decision is durable");
    c.apply_all();
    // The worker did not hear the answer and asks again: still committed, nothing redone.
    c.complete(r0.attempt, "w1", Outcome::default(), ms(35))
        .unwrap();
    assert!(c.state.pending.is_empty());
    assert_eq!(
        std::fs::read_to_string(&committed).unwrap(),
        format!("from attempt {}\n", r0.attempt)
    );
    // w2 goes silent: its lease expires, and its answer, when it comes, does not count.
    c.heartbeat("w1", vec![], ms(4000));
    assert!(c.tick(ms(4000)), "w2's loss is a change");
    assert_eq!(
        c.complete(r1.attempt, "w2", Outcome::default(), ms(4100)),
        Err(Refusal::UnknownAttempt)
    );
    // (The worker removes a refused attempt's file; `_temporary` goes when the job is done.)
    assert!(!f.path("out").join(output_name(r1.task.index)).exists());
    // The reduce runs again on w1 and the job completes.
    let again = c.next_task("w1", ms(4200)).unwrap();
    assert_eq!(again.task, r1.task);
    let path = again.output_path.clone().unwrap();
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, "again\n").unwrap();
    c.complete(again.attempt, "w1", Outcome::default(), ms(4300))
        .unwrap();
    assert_eq!(c.job_state(job), Some(&JobState::Done));
    assert!(
        !f.path("out/_SUCCESS").exists(),
        "its last commit is not applied yet"
    );
    c.apply_all();
    assert!(f.path("out/_SUCCESS").exists());
    assert!(!f.path("out/_temporary").exists());
    assert_eq!(c.board(ms(5000)).refused_late, 1);
}

#[test]
fn a_commit_decided_before_a_crash_is_finished_by_the_restart() {
    let f = Fixture::new();
    let mut c = f.coordinator();
    let job = f.submit(&mut c, "out");
    commit_maps(&mut c, "w1", ms(10));
    let r = c.next_task("w1", ms(20)).unwrap();
    let path = r.output_path.clone().unwrap();
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, "the output\n").unwrap();
    c.complete(r.attempt, "w1", Outcome::default(), ms(30))
        .unwrap();
    // The decision reached the checkpoint; the coordinator died before renaming.
    let dir = f.path("co");
    std::fs::create_dir_all(&dir).unwrap();
    write_atomically(
        &checkpoint_path(&dir),
        &serde_json::to_vec(&c.state).unwrap(),
    )
    .unwrap();
    drop(c);
    let c = Coordinator::open(Config::default(), Some(dir), ms(100)).unwrap();
    let final_path = f.path("out").join(output_name(r.task.index));
    assert_eq!(std::fs::read_to_string(final_path).unwrap(), "the output\n");
    assert!(c.state.pending.is_empty());
    assert!(matches!(
        c.task_states(job, Phase::Reduce)[r.task.index as usize],
        TaskState::Done { .. }
    ));
}

#[test]
fn a_completion_without_its_output_fails_the_attempt() {
    let f = Fixture::new();
    let mut c = f.coordinator();
    f.submit(&mut c, "out");
    commit_maps(&mut c, "w1", ms(10));
    let r = c.next_task("w1", ms(20)).unwrap();
    assert_eq!(
        c.complete(r.attempt, "w1", Outcome::default(), ms(30)),
        Err(Refusal::UnknownAttempt)
    );
    let task = &c.state.scheduler.jobs[&r.task.job].reduces[r.task.index as usize];
    assert_eq!(task.failures, 1);
    assert!(task.last_error.as_ref().unwrap().contains("is missing"));
}

#[test]
fn a_restart_resumes_from_the_checkpoint_without_rerunning_committed_tasks() {
    let f = Fixture::new();
    let mut c = f.coordinator();
    let job = f.submit(&mut c, "out");
    let first = c.next_task("w1", ms(10)).unwrap();
    c.complete(first.attempt, "w1", Outcome::default(), ms(20))
        .unwrap();
    let second = c.next_task("w1", ms(30)).unwrap();
    let dir = f.path("co");
    std::fs::create_dir_all(&dir).unwrap();
    write_atomically(
        &checkpoint_path(&dir),
        &serde_json::to_vec(&c.state).unwrap(),
    )
    .unwrap();
    drop(c);

    let mut c = Coordinator::open(Config::default(), Some(dir.clone()), ms(1000)).unwrap();
    let maps = c.task_states(job, Phase::Map);
    assert!(matches!(
        maps[first.task.index as usize],
        TaskState::Done { .. }
    ));
    assert!(matches!(
        maps[second.task.index as usize],
        TaskState::Idle { .. }
    ));
    // The attempt from before the restart is refused; the map is handed out anew.
    assert_eq!(
        c.complete(second.attempt, "w1", Outcome::default(), ms(1100)),
        Err(Refusal::UnknownAttempt)
    );
    let again = c.next_task("w2", ms(1200)).unwrap();
    assert_eq!(again.task, second.task);
    assert!(again.attempt > second.attempt, "attempt ids never repeat");
    assert_eq!(
        c.plugin(job).unwrap(),
        crate::plugin::resolve("wordcount").unwrap()
    );

    // A checkpoint that is not one stops the coordinator, naming the file.
    std::fs::write(checkpoint_path(&dir), "{ not json").unwrap();
    let e = Coordinator::open(Config::default(), Some(dir.clone()), ms(0))
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.contains("coordinator.json: not a coordinator checkpoint"),
        "{e}"
    );
    assert_eq!(
        std::fs::read_to_string(checkpoint_path(&dir)).unwrap(),
        "{ not json",
        "left as it was"
    );
}

#[test]
fn bad_submissions_say_what_is_wrong() {
    let f = Fixture::new();
    let c = f.coordinator();
    let plan = |s: Submission| {
        Coordinator::plan(s, c.data_dir(), c.local_files())
            .map(|_| ())
            .unwrap_err()
    };
    let mut s = f.submission("out");
    s.def.input = "in".into();
    assert!(plan(s).contains("give an absolute path"));
    std::fs::create_dir_all(f.path("full")).unwrap();
    std::fs::write(f.path("full/part-r-00000"), "old").unwrap();
    let e = plan(f.submission("full"));
    assert!(e.contains("is not empty"), "{e}");
    assert_eq!(
        std::fs::read_to_string(f.path("full/part-r-00000")).unwrap(),
        "old"
    );
    let mut s = f.submission("out");
    s.def.plugin = "nope".into();
    assert!(plan(s).contains("neither a shipped plugin"));
    let mut s = f.submission("out");
    s.def.input = f.path("missing");
    assert!(plan(s).contains("missing"));
    let bad = f.path("bad.wat");
    std::fs::write(&bad, "(module)").unwrap();
    let mut s = f.submission("out");
    s.def.plugin = bad.to_string_lossy().into_owned();
    let e = plan(s);
    assert!(e.contains("does not export `memory`"), "{e}");
}

#[test]
fn maps_go_to_workers_holding_their_split() {
    let f = Fixture::new();
    let mut c = f.coordinator();
    c.heartbeat("w1", vec![], ms(0));
    c.heartbeat("w2", vec!["a.txt".into()], ms(0));
    let job = f.submit(&mut c, "out");
    assert_eq!(
        c.state.scheduler.jobs[&job].spec.holders,
        [vec!["w2".to_string()], vec!["w2".to_string()]]
    );
}

#[test]
fn old_finished_jobs_are_forgotten_but_counted() {
    let f = Fixture::new();
    let mut c = f.coordinator();
    for i in 0..KEEP_FINISHED + 3 {
        let job = f.submit(&mut c, &format!("out-{i}"));
        let failed = c.next_task("w1", ms(1)).unwrap();
        // Fail it for good: quicker than running it.
        for _ in 0..Config::default().max_attempts {
            let a = c.state.scheduler.jobs[&job].maps[failed.task.index as usize]
                .running
                .first()
                .copied();
            let attempt = match a {
                Some(a) => a,
                None => c.next_task("w1", ms(100_000)).unwrap().attempt,
            };
            c.fail(attempt, "w1", "boom", Blame::Task, ms(2));
        }
        assert!(matches!(c.job_state(job), Some(JobState::Failed { .. })));
    }
    f.submit(&mut c, "last");
    assert_eq!(c.state.scheduler.jobs.len(), KEEP_FINISHED + 1);
    assert_eq!(c.state.plans.len(), KEEP_FINISHED + 1);
    let board = c.board(ms(3));
    assert_eq!(board.submitted, KEEP_FINISHED as u64 + 4);
    assert_eq!(board.failed, KEEP_FINISHED as u64 + 3);
}
