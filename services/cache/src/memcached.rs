//! A memcached-protocol endpoint over one node's [`Store`], so stock memcached clients and
//! tools (`memcslap`, `nc`, client libraries) work against a cache node.
//!
//! Each connection reads what arrived, answers every complete request in it (pipelining
//! costs nothing extra), and writes the replies in one go. A request that cannot be parsed is
//! answered as memcached answers it; if where the next request starts is unknown, the
//! connection is closed after the error.

use std::future::Future;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::protocol::{self, Command, Reply, Value};
use crate::store::Store;

/// What `version` answers.
pub const VERSION: &str = concat!("distlab-cache ", env!("CARGO_PKG_VERSION"));

/// memcached's rule for expiry times: at most this many seconds is relative to now; more is
/// an absolute Unix time.
const RELATIVE_EXPTIME_MAX: i64 = 60 * 60 * 24 * 30;

/// Accepts connections until the listener fails; each is served on its own task, every
/// request answered by `handler` (a node's coordinator).
pub async fn serve_with<H, F>(listener: TcpListener, handler: H) -> std::io::Result<()>
where
    H: Fn(Command) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Reply> + Send,
{
    loop {
        let (socket, peer) = listener.accept().await?;
        let handler = handler.clone();
        tokio::spawn(async move {
            if let Err(e) = connection(socket, handler).await {
                tracing::debug!(%peer, error = %e, "memcached connection ended");
            }
        });
    }
}

async fn connection<H, F>(mut socket: TcpStream, handler: H) -> std::io::Result<()>
where
    H: Fn(Command) -> F,
    F: Future<Output = Reply>,
{
    socket.set_nodelay(true)?;
    let mut input = BytesMut::with_capacity(16 * 1024);
    let mut output = Vec::with_capacity(16 * 1024);
    loop {
        if socket.read_buf(&mut input).await? == 0 {
            return Ok(());
        }
        let mut close = false;
        loop {
            match protocol::parse(&input) {
                Ok(None) => break,
                Ok(Some((command, used))) => {
                    input.advance(used);
                    if command == Command::Quit {
                        close = true;
                        break;
                    }
                    let noreply = command.noreply();
                    let reply = handler(command).await;
                    if !noreply || reply.is_error() {
                        reply.encode(&mut output);
                    }
                }
                Err(error) => {
                    output.extend_from_slice(error.reply.as_bytes());
                    output.extend_from_slice(b"\r\n");
                    match error.consumed {
                        Some(used) => input.advance(used),
                        None => {
                            close = true;
                            break;
                        }
                    }
                }
            }
        }
        if !output.is_empty() {
            socket.write_all(&output).await?;
            output.clear();
        }
        if close {
            return Ok(());
        }
    }
}

/// The time a request is served at, read once: monotonic for expiry, Unix for absolute
/// expiry times.
#[derive(Debug, Clone, Copy)]
pub struct Now {
    pub instant: Instant,
    pub unix: i64,
}

impl Now {
    pub fn read() -> Self {
        Self {
            instant: Instant::now(),
            unix: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs() as i64),
        }
    }

    /// When an item stored with memcached's `exptime` expires: 0 never; negative at once;
    /// up to 30 days, that many seconds from now; beyond, at that Unix time.
    pub fn expiry(&self, exptime: i64) -> Option<Instant> {
        let seconds = match exptime {
            0 => return None,
            e if e < 0 => 0,
            e if e <= RELATIVE_EXPTIME_MAX => e,
            e => (e - self.unix).max(0),
        };
        Some(self.instant + Duration::from_secs(seconds as u64))
    }
}

/// A multi-key `get`/`gets` answered key by key (each key has its own coordinator): `one`
/// gets each key with its single-key command, and the items are put back together in order;
/// the first answer that is not items is the answer.
pub async fn get_each<F, Fut>(keys: &[Bytes], cas: bool, mut one: F) -> Reply
where
    F: FnMut(Bytes, Command) -> Fut,
    Fut: Future<Output = Reply>,
{
    let mut items = Vec::new();
    for key in keys {
        let single = Command::Get {
            keys: vec![key.clone()],
            cas,
        };
        match one(key.clone(), single).await {
            Reply::Values { items: found, .. } => items.extend(found),
            error => return error,
        }
    }
    Reply::Values { cas, items }
}

/// Serves one request against this node's store alone (no other node involved).
pub fn apply(command: &Command, store: &mut Store, now: Now, started: Instant) -> Reply {
    match command {
        Command::Get { keys, cas } => Reply::Values {
            cas: *cas,
            items: keys
                .iter()
                .filter_map(|key| {
                    store.get(key, now.instant).map(|item| Value {
                        key: key.clone(),
                        value: item.value.clone(),
                        flags: item.flags,
                        version: item.version,
                    })
                })
                .collect(),
        },
        Command::Store {
            mode,
            key,
            flags,
            exptime,
            data,
            ..
        } => Reply::Stored(store.store(
            *mode,
            key.clone(),
            data.clone(),
            *flags,
            now.expiry(*exptime),
            now.instant,
        )),
        Command::Delete { key, .. } => Reply::Deleted(store.delete(key, now.instant)),
        Command::Delta { key, delta, up, .. } => {
            match store.add_delta(key, *delta, *up, now.instant) {
                Ok(value) => Reply::Number(value),
                Err(e) => Reply::ClientError(e.to_string()),
            }
        }
        Command::Touch { key, exptime, .. } => {
            Reply::Touched(store.touch(key, now.expiry(*exptime), now.instant))
        }
        Command::FlushAll { delay, .. } => {
            let at = if *delay <= 0 {
                now.instant
            } else {
                now.expiry(*delay).unwrap_or(now.instant)
            };
            store.flush_all(at, now.instant);
            Reply::Ok
        }
        Command::Stats => {
            let stats = store.stats();
            let stat = |name: &str, value: String| (name.to_string(), value);
            Reply::Stats(vec![
                stat("pid", std::process::id().to_string()),
                stat("uptime", started.elapsed().as_secs().to_string()),
                stat("time", now.unix.to_string()),
                stat("version", VERSION.to_string()),
                stat("curr_items", stats.items.to_string()),
                stat("total_items", stats.total_items.to_string()),
                stat("bytes", stats.bytes.to_string()),
                stat("limit_maxbytes", stats.limit.to_string()),
                stat("get_hits", stats.hits.to_string()),
                stat("get_misses", stats.misses.to_string()),
                stat("evictions", stats.evictions.to_string()),
                stat("expired_unfetched", stats.expired.to_string()),
            ])
        }
        Command::Version => Reply::Version(VERSION.to_string()),
        Command::Verbosity { .. } | Command::Quit => Reply::Ok,
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use tokio::io::{AsyncBufReadExt, BufReader};

    use super::*;

    fn run(store: &mut Store, request: &str, now: Now) -> String {
        let (command, _) = protocol::parse(request.as_bytes()).unwrap().unwrap();
        let reply = apply(&command, store, now, now.instant);
        let mut out = Vec::new();
        if !command.noreply() || reply.is_error() {
            reply.encode(&mut out);
        }
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn replies_are_memcached_shaped() {
        let now = Now::read();
        let mut s = Store::new(1 << 20);
        assert_eq!(run(&mut s, "set a 3 0 2\r\nhi\r\n", now), "STORED\r\n");
        assert_eq!(run(&mut s, "set b 0 0 1 noreply\r\nx\r\n", now), "");
        assert_eq!(
            run(&mut s, "get a zz b\r\n", now),
            "VALUE a 3 2\r\nhi\r\nVALUE b 0 1\r\nx\r\nEND\r\n"
        );
        let gets = run(&mut s, "gets a\r\n", now);
        let cas: u64 = gets.split_whitespace().nth(4).unwrap().parse().unwrap();
        assert_eq!(
            run(&mut s, &format!("cas a 0 0 1 {}\r\nz\r\n", cas + 100), now),
            "EXISTS\r\n"
        );
        assert_eq!(
            run(&mut s, &format!("cas a 0 0 1 {cas}\r\nz\r\n"), now),
            "STORED\r\n"
        );
        assert_eq!(run(&mut s, "add a 0 0 1\r\nq\r\n", now), "NOT_STORED\r\n");
        assert_eq!(run(&mut s, "set n 0 0 2\r\n41\r\n", now), "STORED\r\n");
        assert_eq!(run(&mut s, "incr n 1\r\n", now), "42\r\n");
        assert_eq!(
            run(&mut s, "incr a 1\r\n", now),
            "CLIENT_ERROR cannot increment or decrement non-numeric value\r\n"
        );
        assert_eq!(run(&mut s, "touch a 100\r\n", now), "TOUCHED\r\n");
        assert_eq!(run(&mut s, "delete a\r\n", now), "DELETED\r\n");
        assert_eq!(run(&mut s, "delete a\r\n", now), "NOT_FOUND\r\n");
        assert!(run(&mut s, "stats\r\n", now).contains("STAT curr_items 2\r\n"));
        assert_eq!(run(&mut s, "flush_all\r\n", now), "OK\r\n");
        assert_eq!(run(&mut s, "get n\r\n", now), "END\r\n");
        assert!(run(&mut s, "version\r\n", now).starts_with("VERSION distlab-cache"));
    }

    #[test]
    fn expiry_times_follow_memcached() {
        let now = Now::read();
        assert_eq!(now.expiry(0), None);
        assert_eq!(now.expiry(-1), Some(now.instant));
        assert_eq!(now.expiry(60), Some(now.instant + Duration::from_secs(60)));
        assert_eq!(
            now.expiry(now.unix + 90 * 86_400),
            Some(now.instant + Duration::from_secs(90 * 86_400))
        );
        assert_eq!(
            now.expiry(now.unix - 100),
            Some(now.instant),
            "a past Unix time"
        );
    }

    /// Over a real socket: pipelined requests, a bad one in the middle, then quit.
    #[tokio::test]
    async fn a_connection_serves_pipelined_requests_and_recovers_from_bad_ones() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let store = Arc::new(Mutex::new(Store::new(1 << 20)));
        let started = Instant::now();
        let server = tokio::spawn(serve_with(listener, move |command| {
            let store = store.clone();
            async move { apply(&command, &mut store.lock().unwrap(), Now::read(), started) }
        }));
        let mut socket = TcpStream::connect(addr).await.unwrap();
        socket
            .write_all(b"set k 0 0 5\r\nhello\r\nbogus\r\nget k\r\nquit\r\n")
            .await
            .unwrap();
        let mut lines = Vec::new();
        let mut reader = BufReader::new(socket);
        let mut line = String::new();
        while reader.read_line(&mut line).await.unwrap() > 0 {
            lines.push(line.trim_end().to_string());
            line.clear();
        }
        assert_eq!(lines, ["STORED", "ERROR", "VALUE k 0 5", "hello", "END"]);
        server.abort();
    }
}
