//! A memcached-protocol endpoint over one node's [`Store`], so stock memcached clients and
//! tools (`memcslap`, `nc`, client libraries) work against a cache node.
//!
//! Each connection reads what arrived, answers every complete request in it (pipelining
//! costs nothing extra), and writes the replies in one go. A request that cannot be parsed is
//! answered as memcached answers it; if where the next request starts is unknown, the
//! connection is closed after the error.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::protocol::{self, Command};
use crate::store::{Store, Stored};

/// What `version` answers.
pub const VERSION: &str = concat!("distlab-cache ", env!("CARGO_PKG_VERSION"));

/// memcached's rule for expiry times: at most this many seconds is relative to now; more is
/// an absolute Unix time.
const RELATIVE_EXPTIME_MAX: i64 = 60 * 60 * 24 * 30;

/// The store shared by every connection of a node.
pub type SharedStore = Arc<Mutex<Store>>;

/// Accepts connections until the listener fails; each is served on its own task.
pub async fn serve(listener: TcpListener, store: SharedStore) -> std::io::Result<()> {
    let started = Instant::now();
    loop {
        let (socket, peer) = listener.accept().await?;
        let store = store.clone();
        tokio::spawn(async move {
            if let Err(e) = connection(socket, store, started).await {
                tracing::debug!(%peer, error = %e, "memcached connection ended");
            }
        });
    }
}

async fn connection(
    mut socket: TcpStream,
    store: SharedStore,
    started: Instant,
) -> std::io::Result<()> {
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
                    let now = Now::read();
                    let mut store = store.lock().expect("the store lock is never poisoned");
                    execute(&command, &mut store, now, started, &mut output);
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

/// Serves one parsed request against the store, appending the reply to `out`.
pub fn execute(
    command: &Command,
    store: &mut Store,
    now: Now,
    started: Instant,
    out: &mut Vec<u8>,
) {
    let mut line = |reply: &str, noreply: bool| {
        if !noreply {
            out.extend_from_slice(reply.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
    };
    match command {
        Command::Get { keys, cas } => {
            for key in keys {
                if let Some(item) = store.get(key, now.instant) {
                    out.extend_from_slice(b"VALUE ");
                    out.extend_from_slice(key);
                    let header = if *cas {
                        format!(" {} {} {}\r\n", item.flags, item.value.len(), item.version)
                    } else {
                        format!(" {} {}\r\n", item.flags, item.value.len())
                    };
                    out.extend_from_slice(header.as_bytes());
                    out.extend_from_slice(&item.value);
                    out.extend_from_slice(b"\r\n");
                }
            }
            out.extend_from_slice(b"END\r\n");
        }
        Command::Store {
            mode,
            key,
            flags,
            exptime,
            data,
            noreply,
        } => {
            let outcome = store.store(
                *mode,
                key.clone(),
                data.clone(),
                *flags,
                now.expiry(*exptime),
                now.instant,
            );
            let reply = match outcome {
                Stored::Stored => "STORED",
                Stored::NotStored => "NOT_STORED",
                Stored::Exists => "EXISTS",
                Stored::NotFound => "NOT_FOUND",
                Stored::TooLarge => "SERVER_ERROR out of memory storing object",
            };
            // noreply means no reply, whatever the outcome (as memcached does).
            line(reply, *noreply);
        }
        Command::Delete { key, noreply } => {
            let reply = if store.delete(key, now.instant) {
                "DELETED"
            } else {
                "NOT_FOUND"
            };
            line(reply, *noreply);
        }
        Command::Delta {
            key,
            delta,
            up,
            noreply,
        } => match store.add_delta(key, *delta, *up, now.instant) {
            Ok(Some(value)) => line(&value.to_string(), *noreply),
            Ok(None) => line("NOT_FOUND", *noreply),
            Err(e) => line(&format!("CLIENT_ERROR {e}"), *noreply),
        },
        Command::Touch {
            key,
            exptime,
            noreply,
        } => {
            let reply = if store.touch(key, now.expiry(*exptime), now.instant) {
                "TOUCHED"
            } else {
                "NOT_FOUND"
            };
            line(reply, *noreply);
        }
        Command::FlushAll { delay, noreply } => {
            let at = if *delay <= 0 {
                now.instant
            } else {
                now.expiry(*delay).unwrap_or(now.instant)
            };
            store.flush_all(at, now.instant);
            line("OK", *noreply);
        }
        Command::Stats => {
            let stats = store.stats();
            let uptime = started.elapsed().as_secs();
            let mut stat = |name: &str, value: String| {
                out.extend_from_slice(format!("STAT {name} {value}\r\n").as_bytes());
            };
            stat("pid", std::process::id().to_string());
            stat("uptime", uptime.to_string());
            stat("time", now.unix.to_string());
            stat("version", VERSION.to_string());
            stat("curr_items", stats.items.to_string());
            stat("total_items", stats.total_items.to_string());
            stat("bytes", stats.bytes.to_string());
            stat("limit_maxbytes", stats.limit.to_string());
            stat("get_hits", stats.hits.to_string());
            stat("get_misses", stats.misses.to_string());
            stat("evictions", stats.evictions.to_string());
            stat("expired_unfetched", stats.expired.to_string());
            out.extend_from_slice(b"END\r\n");
        }
        Command::Version => line(&format!("VERSION {VERSION}"), false),
        Command::Verbosity { noreply } => line("OK", *noreply),
        Command::Quit => {}
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncBufReadExt, BufReader};

    use super::*;

    fn run(store: &mut Store, request: &str, now: Now) -> String {
        let (command, _) = protocol::parse(request.as_bytes()).unwrap().unwrap();
        let mut out = Vec::new();
        execute(&command, store, now, now.instant, &mut out);
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
        let server = tokio::spawn(serve(listener, Arc::new(Mutex::new(Store::new(1 << 20)))));
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
