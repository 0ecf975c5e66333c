//! The browser client (TypeScript in `web/src`, compiled to `web/dist` and served at `/`)
//! against the Rust side:
//! - the committed JavaScript is what `tsc` makes of the sources;
//! - conformance: the TypeScript replica, fed (by Node.js) the frames a Rust replica received
//!   in the same order (out of order, duplicated, partly held), ends with the same text and
//!   version, re-encodes every frame byte for byte, and the operations it makes itself
//!   concurrently are ones the Rust replica decodes, re-encodes identically and merges to the
//!   same text;
//! - end to end: two tabs of headless Chromium on one document see each other's typing, keep
//!   typing offline, merge on reconnect, and keep offline edits across a reload.
//!
//! Node.js, the npm packages (`npm ci` in `web/`) and Chromium are not part of a Rust
//! toolchain: where one is missing these tests say so and pass, unless
//! `DISTLAB_REQUIRE_BROWSER` is set (`.ci/run` installs them and sets it).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command as StdCommand;
use std::time::{Duration, Instant};

use distlab_collab::crypt::DocKey;
use distlab_collab::sync::{Frame, Message, PeerState};
use distlab_collab::{Doc, Op, ReplicaId, VersionVector, codec};
use distlab_runtime::launch::NodeProcess;
use futures_util::{SinkExt, StreamExt};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};
use tokio::process::Command;
use tokio_tungstenite::tungstenite::Message as WsMessage;

const DEADLINE: Duration = Duration::from_secs(30);

fn web() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("web")
}

/// A tool these tests need: found, or why not (a failure where the tools are required).
fn find(program: &str, hint: &str) -> Option<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|dir| dir.join(program))
            .find(|candidate| candidate.is_file())
    });
    if found.is_none() {
        assert!(
            std::env::var_os("DISTLAB_REQUIRE_BROWSER").is_none(),
            "{program} is required (DISTLAB_REQUIRE_BROWSER is set): {hint}"
        );
        eprintln!("skipped: {program} is not installed ({hint})");
    }
    found
}

fn node() -> Option<PathBuf> {
    find("node", "Debian's nodejs package")
}

#[test]
fn the_committed_javascript_is_what_tsc_makes_of_the_sources() {
    let Some(node) = node() else { return };
    let tsc = web().join("node_modules/typescript/bin/tsc");
    if !tsc.is_file() {
        assert!(
            std::env::var_os("DISTLAB_REQUIRE_BROWSER").is_none(),
            "TypeScript is required: run `npm ci` in {}",
            web().display()
        );
        eprintln!("skipped: TypeScript is not installed (npm ci in services/collab/web)");
        return;
    }
    let out = tempfile::tempdir().unwrap();
    let status = StdCommand::new(node)
        .arg(&tsc)
        .arg("-p")
        .arg(web())
        .arg("--outDir")
        .arg(out.path())
        .status()
        .expect("tsc runs");
    assert!(status.success(), "tsc failed on web/src");
    let listing = |dir: &Path| {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    };
    let dist = web().join("dist");
    assert_eq!(listing(out.path()), listing(&dist), "files in web/dist");
    for name in listing(&dist) {
        let fresh = std::fs::read_to_string(out.path().join(&name)).unwrap();
        let committed = std::fs::read_to_string(dist.join(&name)).unwrap();
        assert!(
            fresh == committed,
            "web/dist/{name} is stale: run `npm run build` in services/collab/web and commit it"
        );
    }
}

/// A random local edit: mostly typing a few characters (some outside the BMP), some deleting.
fn random_edit(doc: &mut Doc, rng: &mut SmallRng) -> Option<Op> {
    let alphabet = ['a', 'b', 'x', ' ', 'é', '🦀', '字', '\n'];
    let len = doc.len();
    if len > 0 && rng.random_bool(0.3) {
        let pos = rng.random_range(0..len);
        let count = rng.random_range(1..=3).min(len - pos);
        doc.delete(pos, count).unwrap()
    } else {
        let text: String = (0..rng.random_range(1..=4))
            .map(|_| alphabet[rng.random_range(0..alphabet.len())])
            .collect();
        doc.insert(rng.random_range(0..=len), &text).unwrap()
    }
}

/// What one replica receives from three concurrent editors: single operations as made,
/// merged runs and suffixes (deltas since an older version), duplicates, all shuffled locally
/// so that many arrive before their history; plus the other kinds of frame.
fn deliveries(seed: u64) -> Vec<Frame> {
    let mut rng = SmallRng::seed_from_u64(seed);
    // One id above 2^63: JavaScript must order replicas as unsigned 64-bit numbers.
    let ids = [
        ReplicaId(rng.random::<u64>() | 1 << 63),
        ReplicaId(rng.random::<u64>() >> 1),
        ReplicaId(rng.random_range(1..1000)),
    ];
    let mut docs: Vec<Doc> = ids.iter().map(|&id| Doc::new(id)).collect();
    let mut snapshots = vec![VersionVector::new()];
    let mut batches: Vec<Vec<Op>> = Vec::new();
    for _ in 0..160 {
        let i = rng.random_range(0..docs.len());
        match rng.random_range(0..10) {
            0..=5 => {
                if let Some(op) = random_edit(&mut docs[i], &mut rng) {
                    batches.push(vec![op]);
                }
            }
            6 | 7 => {
                let j = (i + rng.random_range(1..docs.len())) % docs.len();
                let delta = docs[j].ops_since(docs[i].version());
                for op in delta {
                    docs[i].apply(op).unwrap();
                }
                snapshots.push(docs[i].version().clone());
            }
            8 => {
                let since = &snapshots[rng.random_range(0..snapshots.len())];
                batches.push(docs[i].ops_since(since));
            }
            _ if !batches.is_empty() => {
                let again = batches[rng.random_range(0..batches.len())].clone();
                batches.push(again);
            }
            _ => {}
        }
    }
    for k in 0..batches.len() {
        let other = (k + rng.random_range(0..6)).min(batches.len() - 1);
        batches.swap(k, other);
    }
    let version = docs[0].version().clone();
    let mut frames = vec![
        Frame::new(
            "conformance",
            Message::Hello {
                user: "zoë".into(),
                token: "t".into(),
                replica: ids[0],
                version: version.clone(),
            },
        ),
        Frame::new(
            "conformance",
            Message::Presence {
                replica: ids[1],
                user: "字".into(),
                cursor: Some(3),
            },
        ),
    ];
    frames.extend(
        batches
            .into_iter()
            .filter(|batch| !batch.is_empty())
            .map(|batch| Frame::new("conformance", Message::Ops(batch))),
    );
    frames.push(Frame::new("conformance", Message::Ack { version }));
    frames
}

/// The TypeScript replica's account of the same frames.
fn replay_in_typescript(
    node: &Path,
    frames: &[Frame],
    replica: ReplicaId,
    edits: usize,
    seed: u64,
    key: Option<&str>,
) -> Value {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("frames.bin");
    let mut bytes = Vec::new();
    for frame in frames {
        let encoded = frame.encode();
        let mut length = encoded.len();
        while length >= 0x80 {
            bytes.push((length as u8) | 0x80);
            length >>= 7;
        }
        bytes.push(length as u8);
        bytes.extend(encoded);
    }
    std::fs::write(&file, bytes).unwrap();
    let output = StdCommand::new(node)
        .arg(web().join("dist/conformance.js"))
        .arg(&file)
        .args(["--replica", &format!("{:x}", replica.0)])
        .args(["--edits", &edits.to_string()])
        .args(["--seed", &seed.to_string()])
        .args(["--split", &(frames.len() / 2).to_string()])
        .args(key.map(|key| ["--key", key]).into_iter().flatten())
        .output()
        .expect("node runs");
    assert!(
        output.status.success(),
        "conformance.js failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("one JSON line")
}

fn version_json(version: &VersionVector) -> Value {
    Value::Array(
        version
            .iter()
            .map(|(replica, held)| json!([format!("{:x}", replica.0), held]))
            .collect(),
    )
}

fn hex(text: &str) -> Vec<u8> {
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).expect("hex"))
        .collect()
}

#[test]
fn typescript_and_rust_replicas_agree_on_the_same_operations() {
    let Some(node) = node() else { return };
    let ts_replica = ReplicaId(0xf00d_face_cafe_beef);
    for seed in 0..12 {
        let frames = deliveries(seed);
        // The same frames into a Rust replica.
        let mut rust = Doc::new(ReplicaId(1));
        let mut server = PeerState::new();
        let mut all = Vec::new();
        for frame in &frames {
            if let Message::Ops(ops) = &frame.message {
                all.extend(ops.iter().cloned());
                let received = server.receive(&mut rust, ops.clone());
                assert!(received.refused.is_empty(), "{:?}", received.refused);
            }
        }
        assert_eq!(rust.pending(), 0, "seed {seed}: everything was delivered");

        let ts = replay_in_typescript(&node, &frames, ts_replica, 0, seed, None);
        assert_eq!(ts["text"].as_str().unwrap(), rust.text(), "seed {seed}");
        assert_eq!(ts["version"], version_json(rust.version()), "seed {seed}");
        assert_eq!(ts["pending"], 0, "seed {seed}");
        assert_eq!(ts["refused"], json!([]), "seed {seed}");
        assert_eq!(
            ts["reencoded_differ"], 0,
            "seed {seed}: frames re-encode byte for byte"
        );

        // Now with edits of its own halfway through, concurrent with the second half.
        let ts = replay_in_typescript(&node, &frames, ts_replica, 25, seed, None);
        let made_bytes = hex(ts["made"].as_str().unwrap());
        let made = codec::decode_ops(&made_bytes).expect("TypeScript's operations decode");
        assert!(!made.is_empty(), "seed {seed}");
        assert!(made.iter().all(|op| op.id.replica == ts_replica));
        assert_eq!(
            codec::encode_ops(&made),
            made_bytes,
            "seed {seed}: same encoding"
        );
        let mut merged = Doc::new(ReplicaId(2));
        for op in all.iter().cloned().chain(made) {
            merged.apply(op).expect("TypeScript's operations are valid");
        }
        assert_eq!(merged.pending(), 0, "seed {seed}");
        assert_eq!(ts["text"].as_str().unwrap(), merged.text(), "seed {seed}");
        assert_eq!(ts["version"], version_json(merged.version()), "seed {seed}");
    }
}

#[test]
fn sealed_operations_open_the_same_in_typescript_and_rust() {
    let Some(node) = node() else { return };
    let passphrase = "correct horse";
    let key = DocKey::new("conformance", passphrase);
    let ts_replica = ReplicaId(0x1234_5678_9abc_def0);
    for seed in 0..4 {
        let frames = deliveries(seed);
        let mut plain = Doc::new(ReplicaId(1));
        let mut all = Vec::new();
        // What a server relays for `--key` editors: every insertion sealed.
        let sealed: Vec<Frame> = frames
            .iter()
            .map(|frame| match &frame.message {
                Message::Ops(ops) => {
                    for op in ops {
                        all.push(op.clone());
                        plain.apply(op.clone()).unwrap();
                    }
                    let ops = ops.iter().map(|op| key.seal(op)).collect();
                    Frame::new(&frame.doc, Message::Ops(ops))
                }
                _ => frame.clone(),
            })
            .collect();
        let ts = replay_in_typescript(&node, &sealed, ts_replica, 0, seed, Some(passphrase));
        assert_eq!(ts["text"].as_str().unwrap(), plain.text(), "seed {seed}");
        let wrong = replay_in_typescript(&node, &sealed, ts_replica, 0, seed, Some("wrong"));
        assert_ne!(wrong["text"].as_str().unwrap(), plain.text(), "seed {seed}");

        // What the tab makes leaves sealed; a Rust editor with the key opens it.
        let ts = replay_in_typescript(&node, &sealed, ts_replica, 25, seed, Some(passphrase));
        let made = codec::decode_ops(&hex(ts["made"].as_str().unwrap())).unwrap();
        let mut merged = Doc::new(ReplicaId(2));
        for op in all.iter().cloned() {
            merged.apply(op).unwrap();
        }
        for op in &made {
            merged.apply(key.open(op)).unwrap();
        }
        assert_eq!(ts["text"].as_str().unwrap(), merged.text(), "seed {seed}");
        let texts = |ops: Vec<Op>| -> String {
            ops.into_iter()
                .filter_map(|op| match op.body {
                    distlab_collab::Body::Insert { text, .. } => Some(text),
                    _ => None,
                })
                .collect()
        };
        let sent = texts(made.clone());
        let typed = texts(made.iter().map(|op| key.open(op)).collect());
        assert_eq!(sent.chars().count(), typed.chars().count());
        assert_ne!(sent, typed, "seed {seed}: what leaves the tab is sealed");
    }
}

/// Chromium, headless, in its own process group, killed with everything it started.
struct Chromium {
    child: tokio::process::Child,
    _profile: tempfile::TempDir,
    devtools: String,
}

impl Chromium {
    async fn start(program: &Path) -> Chromium {
        let profile = tempfile::tempdir().unwrap();
        let mut command = Command::new(program);
        command
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--disable-background-timer-throttling",
                "--disable-renderer-backgrounding",
                "--disable-backgrounding-occluded-windows",
                "--remote-debugging-port=0",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg("about:blank");
        let log = profile.path().join("chromium.log");
        let child = distlab_runtime::launch::spawn_program(command, &log).expect("chromium starts");
        let port_file = profile.path().join("DevToolsActivePort");
        let started = Instant::now();
        let devtools = loop {
            if let Ok(text) = std::fs::read_to_string(&port_file)
                && let [port, path] = text.lines().collect::<Vec<_>>()[..]
            {
                break format!("ws://127.0.0.1:{port}{path}");
            }
            assert!(
                started.elapsed() < DEADLINE,
                "chromium did not open its DevTools port: {}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        Chromium {
            child,
            _profile: profile,
            devtools,
        }
    }
}

impl Drop for Chromium {
    fn drop(&mut self) {
        if let Some(pid) = self.child.id() {
            // The renderers and helpers are in the browser's process group.
            let _ = nix::sys::signal::killpg(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// The Chrome DevTools Protocol, as much as the test needs: commands answered in turn.
struct Devtools {
    socket: Socket,
    next: u64,
}

impl Devtools {
    async fn connect(url: &str) -> Devtools {
        let (socket, _) = tokio_tungstenite::connect_async(url)
            .await
            .expect("DevTools connects");
        Devtools { socket, next: 0 }
    }

    async fn call(&mut self, session: Option<&str>, method: &str, params: Value) -> Value {
        let reply = self.try_call(session, method, params).await;
        assert!(reply["error"].is_null(), "{method}: {}", reply["error"]);
        reply["result"].clone()
    }

    /// The whole reply, errors included (a tab that is navigating has no page to evaluate in).
    async fn try_call(&mut self, session: Option<&str>, method: &str, params: Value) -> Value {
        self.next += 1;
        let id = self.next;
        let mut command = json!({"id": id, "method": method, "params": params});
        if let Some(session) = session {
            command["sessionId"] = json!(session);
        }
        self.socket
            .send(WsMessage::Text(command.to_string().into()))
            .await
            .expect("DevTools send");
        loop {
            let message = tokio::time::timeout(DEADLINE, self.socket.next())
                .await
                .unwrap_or_else(|_| panic!("no answer to {method}"))
                .expect("DevTools open")
                .expect("DevTools message");
            let WsMessage::Text(text) = message else {
                continue;
            };
            let reply: Value = serde_json::from_str(&text).expect("DevTools JSON");
            if reply["id"] == id {
                return reply;
            }
        }
    }

    /// A new tab at `url`; its session.
    async fn open(&mut self, url: &str) -> String {
        let target = self
            .call(None, "Target.createTarget", json!({"url": url}))
            .await;
        let attached = self
            .call(
                None,
                "Target.attachToTarget",
                json!({"targetId": target["targetId"], "flatten": true}),
            )
            .await;
        attached["sessionId"].as_str().unwrap().to_string()
    }

    async fn eval(&mut self, tab: &str, expression: &str) -> Value {
        let result = self
            .call(
                Some(tab),
                "Runtime.evaluate",
                json!({"expression": expression, "returnByValue": true, "awaitPromise": true}),
            )
            .await;
        assert!(
            result["exceptionDetails"].is_null(),
            "{expression}: {}",
            result["exceptionDetails"]
        );
        result["result"]["value"].clone()
    }

    /// Whether `expression` is true in `tab` now (false while it has no page).
    async fn holds(&mut self, tab: &str, expression: &str) -> bool {
        let reply = self
            .try_call(
                Some(tab),
                "Runtime.evaluate",
                json!({"expression": expression, "returnByValue": true}),
            )
            .await;
        reply["result"]["result"]["value"] == json!(true)
    }

    /// Waits until `expression` is true in `tab`.
    async fn until(&mut self, tab: &str, expression: &str) {
        let started = Instant::now();
        while !self.holds(tab, expression).await {
            let text = self
                .try_call(
                    Some(tab),
                    "Runtime.evaluate",
                    json!({"expression": "window.collab ? window.collab.text() : '(no client)'", "returnByValue": true}),
                )
                .await;
            assert!(
                started.elapsed() < DEADLINE,
                "timed out waiting for {expression}; the tab shows {text}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Types `text` at character `at` of the tab's text area, as a person's keyboard does.
    async fn type_at(&mut self, tab: &str, at: &str, text: &str) {
        self.eval(
            tab,
            &format!("(() => {{ const a = document.getElementById('text'); a.focus(); const n = {at}; a.setSelectionRange(n, n); return true; }})()"),
        )
        .await;
        self.call(Some(tab), "Input.insertText", json!({"text": text}))
            .await;
    }

    async fn text(&mut self, tab: &str) -> String {
        self.eval(tab, "window.collab.text()")
            .await
            .as_str()
            .unwrap()
            .to_string()
    }
}

async fn server(dir: &Path) -> NodeProcess {
    let mut command = Command::new(env!("CARGO_BIN_EXE_collab"));
    command
        .args(["serve", "--id", "s1", "--role", "server"])
        .args(["--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0"])
        .arg("--data-dir")
        .arg(dir.join("s1"));
    NodeProcess::spawn(command, Duration::from_secs(20))
        .await
        .expect("server starts")
}

async fn server_text(addr: SocketAddr) -> String {
    reqwest::get(format!("http://{addr}/docs/notes/text"))
        .await
        .expect("server text")
        .text()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_browser_tabs_edit_live_offline_and_merge() {
    let Some(program) = find("chromium", "Debian's chromium package") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let server = server(dir.path()).await;
    let addr = server.ready().grpc;
    let browser = Chromium::start(&program).await;
    let mut devtools = Devtools::connect(&browser.devtools).await;
    let ada = devtools
        .open(&format!("http://{addr}/?doc=notes&user=ada"))
        .await;
    let bob = devtools
        .open(&format!("http://{addr}/?doc=notes&user=bob"))
        .await;
    for tab in [&ada, &bob] {
        devtools
            .until(tab, "!!window.collab && window.collab.online()")
            .await;
    }

    // Live: each sees the other's typing.
    devtools.type_at(&ada, "0", "Hello from ada. ").await;
    devtools
        .until(&bob, "window.collab.text() === 'Hello from ada. '")
        .await;
    devtools
        .type_at(&bob, "window.collab.text().length", "Bob 🦀 here.")
        .await;
    let both = "Hello from ada. Bob 🦀 here.";
    devtools
        .until(&ada, &format!("window.collab.text() === {}", json!(both)))
        .await;
    devtools
        .until(&bob, "window.collab.people().includes('ada')")
        .await;

    // Ada goes offline; both keep typing at the same place.
    devtools.eval(&ada, "window.collab.setOffline(true)").await;
    devtools.type_at(&ada, "16", "[ada offline] ").await;
    devtools.type_at(&bob, "16", "[bob online] ").await;
    devtools.until(&bob, "window.collab.saved()").await;
    assert!(
        !devtools.text(&ada).await.contains("bob online"),
        "an offline tab receives nothing"
    );
    devtools.eval(&ada, "window.collab.setOffline(false)").await;
    for tab in [&ada, &bob] {
        devtools
            .until(
                tab,
                "window.collab.text().includes('[ada offline] ') && window.collab.text().includes('[bob online] ')",
            )
            .await;
    }
    let merged = devtools.text(&ada).await;
    assert_eq!(devtools.text(&bob).await, merged);
    assert!(
        merged == "Hello from ada. [ada offline] [bob online] Bob 🦀 here."
            || merged == "Hello from ada. [bob online] [ada offline] Bob 🦀 here.",
        "concurrent insertions at one place do not interleave: {merged:?}"
    );
    devtools.until(&ada, "window.collab.saved()").await;
    assert_eq!(server_text(addr).await, merged);

    // Offline edits survive a reload of the tab, and reach the server after it.
    devtools.eval(&ada, "window.collab.setOffline(true)").await;
    devtools.type_at(&ada, "0", ">> ").await;
    devtools.until(&ada, "window.collab.storedLocally()").await;
    devtools.call(Some(&ada), "Page.reload", json!({})).await;
    devtools
        .until(
            &ada,
            "!!window.collab && window.collab.online() && window.collab.saved()",
        )
        .await;
    let expected = format!(">> {merged}");
    devtools
        .until(
            &bob,
            &format!("window.collab.text() === {}", json!(expected)),
        )
        .await;
    assert_eq!(server_text(addr).await, expected);

    // Time travel in the tab: the empty document, then each step of the history.
    assert_eq!(devtools.eval(&bob, "window.collab.textAfter(0)").await, "");
    let steps = devtools.eval(&bob, "window.collab.historyLength()").await;
    let last = devtools
        .eval(&bob, &format!("window.collab.textAfter({steps})"))
        .await;
    assert_eq!(last, json!(expected));

    // An encrypted document: the key in the fragment, which the server never sees.
    let secret = |user: &str, key: &str| format!("http://{addr}/?doc=secret&user={user}#key={key}");
    let ada = devtools.open(&secret("ada", "sesame")).await;
    let bob = devtools.open(&secret("bob", "sesame")).await;
    let eve = devtools
        .open(&format!("http://{addr}/?doc=secret&user=eve"))
        .await;
    for tab in [&ada, &bob, &eve] {
        devtools
            .until(tab, "!!window.collab && window.collab.online()")
            .await;
    }
    devtools.type_at(&ada, "0", "meet at noon").await;
    devtools
        .until(&bob, "window.collab.text() === 'meet at noon'")
        .await;
    devtools.until(&ada, "window.collab.saved()").await;
    let stored = reqwest::get(format!("http://{addr}/docs/secret/text"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(stored.chars().count(), "meet at noon".chars().count());
    assert!(
        !stored.contains("meet"),
        "the server holds ciphertext: {stored:?}"
    );
    devtools
        .until(&eve, &format!("window.collab.text() === {}", json!(stored)))
        .await;
}
