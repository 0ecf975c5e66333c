//! The console end to end, as a user meets it: `lab run proj0` in a pseudo-terminal, keys
//! typed, the screen read back through a terminal emulator (vt100). Kill a node with `K`, see
//! it down; restart it with `r`, see it running again; add a node from the palette; quit with
//! `q y`: the terminal is back on the main screen and no node process survives.

use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::pty::{Winsize, openpty};

const LAB: &str = env!("CARGO_BIN_EXE_lab");

/// A program running in a pseudo-terminal, and the screen it drew.
struct Pty {
    child: Child,
    master: std::fs::File,
    screen: Arc<Mutex<vt100::Parser>>,
}

impl Pty {
    fn spawn(args: &[&str], cwd: &std::path::Path) -> Self {
        let size = Winsize {
            ws_row: 36,
            ws_col: 120,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        let pty = openpty(Some(&size), None).expect("openpty");
        let slave = |fd: &OwnedFd| Stdio::from(fd.try_clone().unwrap());
        // `setsid`: no controlling terminal, so the console finds its terminal on its stdio
        // (the pty), never the terminal `cargo test` may have been started from.
        let child = Command::new("setsid")
            .arg(LAB)
            .args(args)
            .current_dir(cwd)
            .env("TERM", "xterm-256color")
            .stdin(slave(&pty.slave))
            .stdout(slave(&pty.slave))
            .stderr(slave(&pty.slave))
            .spawn()
            .expect("spawning lab run");
        drop(pty.slave);
        let master = std::fs::File::from(pty.master);
        let screen = Arc::new(Mutex::new(vt100::Parser::new(36, 120, 0)));
        let mut reader = master.try_clone().unwrap();
        let parser = screen.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 8192];
            while let Ok(n) = reader.read(&mut buf) {
                if n == 0 {
                    return;
                }
                parser.lock().unwrap().process(&buf[..n]);
            }
        });
        Self {
            child,
            master,
            screen,
        }
    }

    fn contents(&self) -> String {
        self.screen.lock().unwrap().screen().contents()
    }

    /// Waits until the screen satisfies `holds`; fails with the screen after `timeout`.
    fn wait_for(&self, what: &str, timeout: Duration, holds: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let screen = self.contents();
            if holds(&screen) {
                return screen;
            }
            assert!(
                Instant::now() < deadline,
                "waited {timeout:?} for {what}; the screen:\n{screen}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn press(&mut self, keys: &str) {
        self.master.write_all(keys.as_bytes()).unwrap();
        self.master.flush().unwrap();
    }
}

impl Drop for Pty {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The node table's row for `id`: `▶n1     server    4001    ● running ...` (selected) or
/// ` n2     server ...`.
fn row<'a>(screen: &'a str, id: &str) -> Option<&'a str> {
    screen.lines().find(|l| {
        let cells: Vec<&str> = l.trim_matches('│').split_whitespace().collect();
        cells.first().map(|c| c.trim_start_matches('▶')) == Some(id)
    })
}

fn pid_in(row: &str) -> Option<u32> {
    row.split_whitespace().find_map(|w| w.parse().ok())
}

fn alive(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}

#[test]
fn kill_and_restart_from_the_keyboard_then_quit_cleanly() {
    let runs = tempfile::tempdir().unwrap();
    let mut lab = Pty::spawn(
        &["run", "proj0", "--nodes", "2", "--runs-dir", "runs"],
        runs.path(),
    );
    let up = Duration::from_secs(60);
    let screen = lab.wait_for("both nodes running", up, |s| {
        ["n1", "n2"]
            .iter()
            .all(|id| row(s, id).is_some_and(|r| r.contains("running")))
    });
    let pids: Vec<u32> = ["n1", "n2"]
        .iter()
        .map(|id| pid_in(row(&screen, id).unwrap()).expect("a pid in the row"))
        .collect();
    assert!(screen.contains("distlab proj0"), "{screen}");

    lab.press("K");
    lab.wait_for("n1 down after K", up, |s| {
        row(s, "n1").is_some_and(|r| r.contains("down"))
    });
    assert!(!alive(pids[0]), "K sent SIGKILL to n1's process");

    lab.press("r");
    let screen = lab.wait_for("n1 running again after r", up, |s| {
        row(s, "n1").is_some_and(|r| r.contains("running"))
    });
    let restarted = pid_in(row(&screen, "n1").unwrap()).unwrap();
    assert_ne!(restarted, pids[0], "r started a new process");
    lab.wait_for("the kill and the restart on the timeline", up, |s| {
        s.contains("kill (SIGKILL)") && s.contains("restart")
    });

    lab.press(":add-node\r");
    let screen = lab.wait_for("n3, added from the palette, running", up, |s| {
        row(s, "n3").is_some_and(|r| r.contains("running"))
    });
    let added = pid_in(row(&screen, "n3").unwrap()).unwrap();

    lab.press("q");
    lab.wait_for("the quit question", up, |s| s.contains("quit?"));
    lab.press("y");
    let deadline = Instant::now() + up;
    let status = loop {
        if let Some(status) = lab.child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "lab did not exit after q y");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "lab run exited with {status}");
    for pid in [pids[1], restarted, added] {
        assert!(!alive(pid), "node process {pid} outlived the console");
    }
    let screen = lab.screen.lock().unwrap();
    assert!(
        !screen.screen().alternate_screen(),
        "the terminal is back on the main screen"
    );
    assert!(
        screen.screen().contents().contains("run dir:"),
        "{}",
        screen.screen().contents()
    );
}

#[test]
fn sigterm_stops_the_cluster_and_restores_the_terminal() {
    let runs = tempfile::tempdir().unwrap();
    let lab = Pty::spawn(
        &["run", "proj0", "--nodes", "1", "--runs-dir", "runs"],
        runs.path(),
    );
    let up = Duration::from_secs(60);
    let screen = lab.wait_for("n1 running", up, |s| {
        row(s, "n1").is_some_and(|r| r.contains("running"))
    });
    let node = pid_in(row(&screen, "n1").unwrap()).unwrap();
    // `setsid` execs the lab in place: the child's pid is the lab's.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(lab.child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let deadline = Instant::now() + up;
    let mut lab = lab;
    let status = loop {
        if let Some(status) = lab.child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "lab did not exit on SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "a clean stop: {status}");
    assert!(!alive(node), "the node went with the console");
    let parser = lab.screen.lock().unwrap();
    assert!(!parser.screen().alternate_screen());
    assert!(!parser.screen().hide_cursor(), "the cursor is shown again");
}

#[test]
fn a_scenario_plays_live_and_the_cluster_stays_up_for_inspection() {
    let runs = tempfile::tempdir().unwrap();
    let scenario = concat!(env!("CARGO_MANIFEST_DIR"), "/../scenarios/proj0-pause.yaml");
    let mut lab = Pty::spawn(
        &["run", "proj0", "--scenario", scenario, "--runs-dir", "runs"],
        runs.path(),
    );
    let up = Duration::from_secs(60);
    lab.wait_for("the scenario pane", up, |s| {
        s.contains("scenario proj0-pause")
    });
    let screen = lab.wait_for("the verdict", up, |s| s.contains("scenario PASS"));
    assert!(screen.contains("PASS linearizable"), "{screen}");
    let screen = lab.wait_for("n1 running after the scenario", up, |s| {
        row(s, "n1").is_some_and(|r| r.contains("running"))
    });
    let node = pid_in(row(&screen, "n1").unwrap()).unwrap();
    assert!(alive(node), "the cluster stays up until q");
    lab.press("qy");
    let deadline = Instant::now() + up;
    while lab.child.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "lab did not exit after q y");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(!alive(node));
}

#[test]
fn lab_run_refuses_what_it_cannot_do() {
    let out = Command::new(LAB).args(["run", "proj9"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown project \"proj9\""));

    let out = Command::new(LAB)
        .args(["run", "proj0"])
        .stdout(Stdio::piped())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("needs a terminal"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let out = Command::new(LAB)
        .args(["run"])
        .stdout(Stdio::piped())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("needs a project (proj0, proj1"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `lab run` alone shows the projects and their scenarios; Enter opens the console on the one
/// selected.
#[test]
fn lab_run_without_a_project_offers_a_choice() {
    let runs = tempfile::tempdir().unwrap();
    let mut lab = Pty::spawn(&["run", "--runs-dir", "runs", "--nodes", "1"], runs.path());
    let up = Duration::from_secs(60);
    let screen = lab.wait_for("the chooser", up, |s| s.contains("pick a project"));
    assert!(
        screen.contains("proj2") && screen.contains("proj0-crash-restart"),
        "{screen}"
    );
    lab.press("\r");
    let screen = lab.wait_for("the console on proj0", up, |s| {
        row(s, "n1").is_some_and(|r| r.contains("running"))
    });
    assert!(screen.contains("distlab proj0"), "{screen}");
    lab.press("qy");
    let deadline = Instant::now() + up;
    while lab.child.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "lab did not exit after q y");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_scenario_recorded_headless_makes_a_cast_with_a_marker_per_step() {
    let runs = tempfile::tempdir().unwrap();
    let cast = runs.path().join("demo.cast");
    let scenario = concat!(env!("CARGO_MANIFEST_DIR"), "/../scenarios/proj0-pause.yaml");
    let out = Command::new(LAB)
        .args(["scenario", scenario, "--size", "100x30", "--runs-dir"])
        .arg(runs.path())
        .arg("--record")
        .arg(&cast)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("PASS"), "the usual summary: {stdout}");

    let text = std::fs::read_to_string(&cast).unwrap();
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).expect("every line is JSON"))
        .collect();
    assert_eq!(lines[0]["version"], 2);
    assert_eq!(
        (lines[0]["width"].as_u64(), lines[0]["height"].as_u64()),
        (Some(100), Some(30))
    );
    let frames: Vec<&str> = lines[1..]
        .iter()
        .filter(|e| e[1] == "o")
        .map(|e| e[2].as_str().unwrap())
        .collect();
    let markers = lines[1..].iter().filter(|e| e[1] == "m").count();
    let steps = std::fs::read_to_string(scenario)
        .unwrap()
        .lines()
        .skip_while(|l| !l.starts_with("steps:"))
        .take_while(|l| !l.starts_with("check:"))
        .filter(|l| l.trim_start().starts_with("- "))
        .count();
    assert_eq!(markers, steps, "a marker per step");
    assert!(frames.len() > 5, "the console was drawn as it went");
    let mut screen = vt100::Parser::new(30, 100, 0);
    for frame in &frames {
        screen.process(frame.as_bytes());
    }
    let last = screen.screen().contents();
    assert!(
        last.contains("scenario PASS"),
        "the verdict on screen:\n{last}"
    );
    let times: Vec<f64> = lines[1..].iter().map(|e| e[0].as_f64().unwrap()).collect();
    assert!(
        times.windows(2).all(|w| w[0] <= w[1]),
        "times never go back"
    );
}
