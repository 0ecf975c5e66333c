//! The memcached text protocol: parsing requests from a byte buffer.
//!
//! The protocol as memcached's `protocol.txt` describes it: one command line ending in
//! `\r\n` (a bare `\n` is accepted, as memcached does), and for storage commands a data block
//! of the announced length followed by `\r\n`. Parsing is incremental: [`parse`] takes what
//! has arrived and answers "need more", a command and how many bytes it used, or an error to
//! send back (and whether the connection can go on). Pipelined requests are simply several
//! commands in one buffer.

use bytes::Bytes;

use crate::store::{MAX_KEY_LEN, Mode, Stored, Version};

/// The longest command line accepted (keys are at most 250 bytes; `get` takes many keys).
pub const MAX_LINE: usize = 8192;

/// The largest value accepted (memcached's default item size limit).
pub const MAX_VALUE: usize = 1024 * 1024;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// `get` (`cas: false`) or `gets` (`cas: true`) of one or more keys.
    Get {
        keys: Vec<Bytes>,
        cas: bool,
    },
    /// set, add, replace, append, prepend, cas.
    Store {
        mode: Mode,
        key: Bytes,
        flags: u32,
        exptime: i64,
        data: Bytes,
        noreply: bool,
    },
    Delete {
        key: Bytes,
        noreply: bool,
    },
    /// incr (`up`) or decr.
    Delta {
        key: Bytes,
        delta: u64,
        up: bool,
        noreply: bool,
    },
    Touch {
        key: Bytes,
        exptime: i64,
        noreply: bool,
    },
    FlushAll {
        delay: i64,
        noreply: bool,
    },
    Stats,
    Version,
    Verbosity {
        noreply: bool,
    },
    Quit,
}

/// An item as a retrieval returns it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Value {
    pub key: Bytes,
    pub value: Bytes,
    pub flags: u32,
    pub version: Version,
}

/// A reply, before it is written in the protocol's words (and what a node that coordinated a
/// forwarded request sends back).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Reply {
    /// `get`/`gets`: the items found (a missing key is simply absent), then `END`.
    Values {
        cas: bool,
        items: Vec<Value>,
    },
    Stored(Stored),
    /// `DELETED` or `NOT_FOUND`.
    Deleted(bool),
    /// incr/decr: the new value, or `NOT_FOUND`.
    Number(Option<u64>),
    /// `TOUCHED` or `NOT_FOUND`.
    Touched(bool),
    Ok,
    Stats(Vec<(String, String)>),
    Version(String),
    ClientError(String),
    ServerError(String),
}

impl Reply {
    pub fn encode(&self, out: &mut Vec<u8>) {
        let mut line = |text: &str| {
            out.extend_from_slice(text.as_bytes());
            out.extend_from_slice(b"\r\n");
        };
        match self {
            Reply::Values { cas, items } => {
                for item in items {
                    out.extend_from_slice(b"VALUE ");
                    out.extend_from_slice(&item.key);
                    let header = if *cas {
                        format!(" {} {} {}\r\n", item.flags, item.value.len(), item.version)
                    } else {
                        format!(" {} {}\r\n", item.flags, item.value.len())
                    };
                    out.extend_from_slice(header.as_bytes());
                    out.extend_from_slice(&item.value);
                    out.extend_from_slice(b"\r\n");
                }
                out.extend_from_slice(b"END\r\n");
            }
            Reply::Stored(outcome) => line(match outcome {
                Stored::Stored => "STORED",
                Stored::NotStored => "NOT_STORED",
                Stored::Exists => "EXISTS",
                Stored::NotFound => "NOT_FOUND",
                Stored::TooLarge => "SERVER_ERROR out of memory storing object",
            }),
            Reply::Deleted(true) => line("DELETED"),
            Reply::Touched(true) => line("TOUCHED"),
            Reply::Deleted(false) | Reply::Touched(false) | Reply::Number(None) => {
                line("NOT_FOUND")
            }
            Reply::Number(Some(n)) => line(&n.to_string()),
            Reply::Ok => line("OK"),
            Reply::Stats(stats) => {
                for (name, value) in stats {
                    line(&format!("STAT {name} {value}"));
                }
                line("END");
            }
            Reply::Version(version) => line(&format!("VERSION {version}")),
            Reply::ClientError(message) => line(&format!("CLIENT_ERROR {message}")),
            Reply::ServerError(message) => line(&format!("SERVER_ERROR {message}")),
        }
    }

    /// Whether a `noreply` request still gets this reply: errors are sent anyway.
    pub fn is_error(&self) -> bool {
        matches!(
            self,
            Reply::ClientError(_) | Reply::ServerError(_) | Reply::Stored(Stored::TooLarge)
        )
    }
}

/// A request that cannot be served: what to answer, how many bytes to skip, whether the
/// connection can continue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProtocolError {
    /// The reply line, without its `\r\n`: `ERROR`, `CLIENT_ERROR ...`, `SERVER_ERROR ...`.
    pub reply: String,
    /// Bytes of the buffer the bad request took (skip them and go on), if known.
    pub consumed: Option<usize>,
}

impl ProtocolError {
    fn client(message: &str, consumed: usize) -> Self {
        Self {
            reply: format!("CLIENT_ERROR {message}"),
            consumed: Some(consumed),
        }
    }

    /// The connection cannot go on: where the next request starts is unknown.
    fn fatal(reply: String) -> Self {
        Self {
            reply,
            consumed: None,
        }
    }
}

/// Parses one request from the start of `buf`: `Ok(None)` if it is not all there yet,
/// `Ok(Some((command, bytes used)))`, or the error to answer.
pub fn parse(buf: &[u8]) -> Result<Option<(Command, usize)>, ProtocolError> {
    let Some(newline) = buf.iter().position(|&b| b == b'\n') else {
        if buf.len() > MAX_LINE {
            return Err(ProtocolError::fatal(
                "CLIENT_ERROR line too long".to_string(),
            ));
        }
        return Ok(None);
    };
    let line_len = newline + 1;
    if newline > MAX_LINE {
        return Err(ProtocolError::client("line too long", line_len));
    }
    let line = buf[..newline]
        .strip_suffix(b"\r")
        .unwrap_or(&buf[..newline]);
    let words: Vec<&[u8]> = line
        .split(|&b| b == b' ')
        .filter(|w| !w.is_empty())
        .collect();
    let Some((&name, args)) = words.split_first() else {
        return Err(ProtocolError {
            reply: "ERROR".into(),
            consumed: Some(line_len),
        });
    };
    let bad_format = || ProtocolError::client("bad command line format", line_len);
    let noreply = |rest: &[&[u8]]| match rest {
        [] => Ok(false),
        [b"noreply"] => Ok(true),
        _ => Err(bad_format()),
    };
    let command = match name {
        b"get" | b"gets" => {
            if args.is_empty() {
                return Err(ProtocolError {
                    reply: "ERROR".into(),
                    consumed: Some(line_len),
                });
            }
            let keys = args
                .iter()
                .map(|k| key(k).ok_or_else(bad_format))
                .collect::<Result<_, _>>()?;
            Command::Get {
                keys,
                cas: name == b"gets",
            }
        }
        b"set" | b"add" | b"replace" | b"append" | b"prepend" | b"cas" => {
            let is_cas = name == b"cas";
            let fixed = if is_cas { 5 } else { 4 };
            if args.len() < fixed {
                return Err(bad_format());
            }
            let key = key(args[0]).ok_or_else(bad_format)?;
            let flags: u32 = number(args[1]).ok_or_else(bad_format)?;
            let exptime: i64 = number(args[2]).ok_or_else(bad_format)?;
            let length: i64 = number(args[3]).ok_or_else(bad_format)?;
            let mode = match name {
                b"set" => Mode::Set,
                b"add" => Mode::Add,
                b"replace" => Mode::Replace,
                b"append" => Mode::Append,
                b"prepend" => Mode::Prepend,
                _ => Mode::Cas(number(args[4]).ok_or_else(bad_format)?),
            };
            let noreply = noreply(&args[fixed..])?;
            if length < 0 {
                return Err(bad_format());
            }
            let length = length as usize;
            if length > MAX_VALUE {
                // The data block follows anyway: skip it once it is all there.
                let total = line_len + length + 2;
                if buf.len() < total {
                    return Ok(None);
                }
                return Err(ProtocolError {
                    reply: "SERVER_ERROR object too large for cache".into(),
                    consumed: Some(total),
                });
            }
            let total = line_len + length + 2;
            if buf.len() < total {
                return Ok(None);
            }
            if &buf[line_len + length..total] != b"\r\n" {
                return Err(ProtocolError::fatal(
                    "CLIENT_ERROR bad data chunk".to_string(),
                ));
            }
            let data = Bytes::copy_from_slice(&buf[line_len..line_len + length]);
            return Ok(Some((
                Command::Store {
                    mode,
                    key,
                    flags,
                    exptime,
                    data,
                    noreply,
                },
                total,
            )));
        }
        b"delete" => match args {
            [k, rest @ ..] => Command::Delete {
                key: key(k).ok_or_else(bad_format)?,
                // memcached still accepts a legacy `0` time argument.
                noreply: match rest {
                    [b"0", more @ ..] => noreply(more)?,
                    _ => noreply(rest)?,
                },
            },
            [] => return Err(bad_format()),
        },
        b"incr" | b"decr" => match args {
            [k, delta, rest @ ..] => Command::Delta {
                key: key(k).ok_or_else(bad_format)?,
                delta: number(delta).ok_or_else(|| {
                    ProtocolError::client("invalid numeric delta argument", line_len)
                })?,
                up: name == b"incr",
                noreply: noreply(rest)?,
            },
            _ => return Err(bad_format()),
        },
        b"touch" => match args {
            [k, exptime, rest @ ..] => Command::Touch {
                key: key(k).ok_or_else(bad_format)?,
                exptime: number(exptime)
                    .ok_or_else(|| ProtocolError::client("invalid exptime argument", line_len))?,
                noreply: noreply(rest)?,
            },
            _ => return Err(bad_format()),
        },
        b"flush_all" => match args {
            [] => Command::FlushAll {
                delay: 0,
                noreply: false,
            },
            [b"noreply"] => Command::FlushAll {
                delay: 0,
                noreply: true,
            },
            [delay, rest @ ..] => Command::FlushAll {
                delay: number(delay).ok_or_else(bad_format)?,
                noreply: noreply(rest)?,
            },
        },
        b"stats" if args.is_empty() => Command::Stats,
        b"version" => Command::Version,
        b"verbosity" => match args {
            [_level, rest @ ..] => Command::Verbosity {
                noreply: noreply(rest)?,
            },
            [] => return Err(bad_format()),
        },
        b"quit" => Command::Quit,
        _ => {
            return Err(ProtocolError {
                reply: "ERROR".into(),
                consumed: Some(line_len),
            });
        }
    };
    Ok(Some((command, line_len)))
}

impl Command {
    /// The request as memcached's protocol writes it: what [`parse`] reads back. A node that
    /// is not a key's coordinator forwards the request in this form.
    pub fn encode(&self, out: &mut Vec<u8>) {
        let tail = |noreply: bool| if noreply { " noreply\r\n" } else { "\r\n" };
        match self {
            Command::Get { keys, cas } => {
                out.extend_from_slice(if *cas { b"gets" } else { b"get" });
                for key in keys {
                    out.push(b' ');
                    out.extend_from_slice(key);
                }
                out.extend_from_slice(b"\r\n");
            }
            Command::Store {
                mode,
                key,
                flags,
                exptime,
                data,
                noreply,
            } => {
                let name = match mode {
                    Mode::Set => "set",
                    Mode::Add => "add",
                    Mode::Replace => "replace",
                    Mode::Append => "append",
                    Mode::Prepend => "prepend",
                    Mode::Cas(_) => "cas",
                };
                out.extend_from_slice(name.as_bytes());
                out.push(b' ');
                out.extend_from_slice(key);
                let numbers = match mode {
                    Mode::Cas(unique) => format!(" {flags} {exptime} {} {unique}", data.len()),
                    _ => format!(" {flags} {exptime} {}", data.len()),
                };
                out.extend_from_slice(numbers.as_bytes());
                out.extend_from_slice(tail(*noreply).as_bytes());
                out.extend_from_slice(data);
                out.extend_from_slice(b"\r\n");
            }
            Command::Delete { key, noreply } => {
                out.extend_from_slice(b"delete ");
                out.extend_from_slice(key);
                out.extend_from_slice(tail(*noreply).as_bytes());
            }
            Command::Delta {
                key,
                delta,
                up,
                noreply,
            } => {
                out.extend_from_slice(if *up { b"incr " } else { b"decr " });
                out.extend_from_slice(key);
                out.extend_from_slice(format!(" {delta}").as_bytes());
                out.extend_from_slice(tail(*noreply).as_bytes());
            }
            Command::Touch {
                key,
                exptime,
                noreply,
            } => {
                out.extend_from_slice(b"touch ");
                out.extend_from_slice(key);
                out.extend_from_slice(format!(" {exptime}").as_bytes());
                out.extend_from_slice(tail(*noreply).as_bytes());
            }
            Command::FlushAll { delay, noreply } => {
                out.extend_from_slice(format!("flush_all {delay}").as_bytes());
                out.extend_from_slice(tail(*noreply).as_bytes());
            }
            Command::Stats => out.extend_from_slice(b"stats\r\n"),
            Command::Version => out.extend_from_slice(b"version\r\n"),
            Command::Verbosity { noreply } => {
                out.extend_from_slice(b"verbosity 1");
                out.extend_from_slice(tail(*noreply).as_bytes());
            }
            Command::Quit => out.extend_from_slice(b"quit\r\n"),
        }
    }

    /// Whether the client asked for no reply.
    pub fn noreply(&self) -> bool {
        match self {
            Command::Store { noreply, .. }
            | Command::Delete { noreply, .. }
            | Command::Delta { noreply, .. }
            | Command::Touch { noreply, .. }
            | Command::FlushAll { noreply, .. }
            | Command::Verbosity { noreply } => *noreply,
            Command::Get { .. } | Command::Stats | Command::Version | Command::Quit => false,
        }
    }

    /// The command's name, as memcached's `stats` counts them (`cmd_get`, `cmd_set`...)
    /// and the metrics label operations.
    pub fn kind(&self) -> &'static str {
        use crate::store::Mode;
        match self {
            Command::Get { cas: false, .. } => "get",
            Command::Get { cas: true, .. } => "gets",
            Command::Store { mode, .. } => match mode {
                Mode::Set => "set",
                Mode::Add => "add",
                Mode::Replace => "replace",
                Mode::Append => "append",
                Mode::Prepend => "prepend",
                Mode::Cas(_) => "cas",
            },
            Command::Delete { .. } => "delete",
            Command::Delta { up: true, .. } => "incr",
            Command::Delta { up: false, .. } => "decr",
            Command::Touch { .. } => "touch",
            Command::FlushAll { .. } => "flush_all",
            Command::Stats => "stats",
            Command::Version => "version",
            Command::Verbosity { .. } => "verbosity",
            Command::Quit => "quit",
        }
    }

    /// The key a command is about (`None` for multi-key gets and commands without a key).
    pub fn key(&self) -> Option<&Bytes> {
        match self {
            Command::Get { keys, .. } if keys.len() == 1 => keys.first(),
            Command::Store { key, .. }
            | Command::Delete { key, .. }
            | Command::Delta { key, .. }
            | Command::Touch { key, .. } => Some(key),
            _ => None,
        }
    }
}

/// A key as memcached allows it: 1 to 250 bytes, no control characters (spaces already
/// split the line).
fn key(word: &[u8]) -> Option<Bytes> {
    let ok =
        !word.is_empty() && word.len() <= MAX_KEY_LEN && !word.iter().any(u8::is_ascii_control);
    ok.then(|| Bytes::copy_from_slice(word))
}

fn number<T: std::str::FromStr>(word: &[u8]) -> Option<T> {
    std::str::from_utf8(word).ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(input: &str) -> Command {
        let (command, used) = parse(input.as_bytes()).unwrap().unwrap();
        assert_eq!(used, input.len(), "{input:?}");
        command
    }

    fn error(input: &str) -> ProtocolError {
        parse(input.as_bytes()).unwrap_err()
    }

    #[test]
    fn retrievals_and_storage_commands_parse() {
        assert_eq!(
            one("gets a bb\r\n"),
            Command::Get {
                keys: vec![Bytes::from("a"), Bytes::from("bb")],
                cas: true
            }
        );
        assert_eq!(
            one("set k 5 100 3 noreply\r\nabc\r\n"),
            Command::Store {
                mode: Mode::Set,
                key: Bytes::from("k"),
                flags: 5,
                exptime: 100,
                data: Bytes::from("abc"),
                noreply: true
            }
        );
        assert!(matches!(
            one("cas k 0 -1 2 42\r\nhi\r\n"),
            Command::Store {
                mode: Mode::Cas(42),
                exptime: -1,
                ..
            }
        ));
        // data may hold \r\n itself: its length says where it ends
        assert!(matches!(
            one("append k 0 0 4\r\n\r\n\r\n\r\n"),
            Command::Store { data, .. } if data == "\r\n\r\n"
        ));
        assert!(matches!(one("get k\n"), Command::Get { .. }), "bare \\n");
    }

    #[test]
    fn other_commands_parse() {
        assert_eq!(
            one("delete k noreply\r\n"),
            Command::Delete {
                key: Bytes::from("k"),
                noreply: true
            }
        );
        assert_eq!(
            one("decr n 7\r\n"),
            Command::Delta {
                key: Bytes::from("n"),
                delta: 7,
                up: false,
                noreply: false
            }
        );
        assert!(matches!(
            one("touch k 10\r\n"),
            Command::Touch { exptime: 10, .. }
        ));
        assert_eq!(
            one("flush_all 30\r\n"),
            Command::FlushAll {
                delay: 30,
                noreply: false
            }
        );
        assert_eq!(
            one("flush_all noreply\r\n"),
            Command::FlushAll {
                delay: 0,
                noreply: true
            }
        );
        assert_eq!(one("stats\r\n"), Command::Stats);
        assert_eq!(one("version\r\n"), Command::Version);
        assert_eq!(
            one("verbosity 1\r\n"),
            Command::Verbosity { noreply: false }
        );
        assert_eq!(one("quit\r\n"), Command::Quit);
    }

    #[test]
    fn every_command_encodes_to_what_parses_back_to_it() {
        let requests = [
            "get a\r\n",
            "gets a b c\r\n",
            "set k 1 2 3\r\nabc\r\n",
            "add k 0 -1 0 noreply\r\n\r\n",
            "replace k 0 0 1\r\nx\r\n",
            "append k 0 0 2\r\n\r\n\r\n",
            "prepend k 0 0 1\r\nx\r\n",
            "cas k 9 0 1 77 noreply\r\nx\r\n",
            "delete k\r\n",
            "delete k noreply\r\n",
            "incr n 5\r\n",
            "decr n 18446744073709551615 noreply\r\n",
            "touch k 30\r\n",
            "flush_all 0\r\n",
            "flush_all 10 noreply\r\n",
            "stats\r\n",
            "version\r\n",
            "verbosity 1 noreply\r\n",
            "quit\r\n",
        ];
        for request in requests {
            let command = one(request);
            let mut encoded = Vec::new();
            command.encode(&mut encoded);
            assert_eq!(String::from_utf8_lossy(&encoded), request);
        }
        assert_eq!(one("incr n 1\r\n").key(), Some(&Bytes::from("n")));
        assert_eq!(one("get a b\r\n").key(), None);
        assert_eq!(one("stats\r\n").key(), None);
    }

    #[test]
    fn partial_input_waits_for_more() {
        for partial in ["get", "set k 0 0 5\r\nab", "set k 0 0 5\r\nabcde\r"] {
            assert_eq!(parse(partial.as_bytes()), Ok(None), "{partial:?}");
        }
    }

    #[test]
    fn pipelined_requests_come_one_at_a_time() {
        let input = b"set a 0 0 1\r\nx\r\nget a\r\ndelete a\r\n";
        let mut at = 0;
        let mut names = Vec::new();
        while let Some((command, used)) = parse(&input[at..]).unwrap() {
            names.push(
                format!("{command:?}")
                    .split([' ', '{'])
                    .next()
                    .unwrap()
                    .to_string(),
            );
            at += used;
        }
        assert_eq!(names, ["Store", "Get", "Delete"]);
        assert_eq!(at, input.len());
    }

    /// Parses everything in `input`, skipping what errors say to skip.
    fn all(input: &[u8]) -> Vec<Result<Command, String>> {
        let mut at = 0;
        let mut out = Vec::new();
        loop {
            match parse(&input[at..]) {
                Ok(None) => return out,
                Ok(Some((command, used))) => {
                    assert!(used > 0);
                    out.push(Ok(command));
                    at += used;
                }
                Err(e) => {
                    out.push(Err(e.reply));
                    match e.consumed {
                        Some(used) => at += used,
                        None => return out,
                    }
                }
            }
        }
    }

    /// However the bytes arrive (a socket read ends anywhere), the same requests come out.
    #[test]
    fn a_request_split_anywhere_parses_the_same() {
        let input =
            b"set a 1 2 5\r\nab\r\nc\r\ngets a b\r\nbogus\r\nincr n 5 noreply\r\ndelete a\r\n";
        let whole = all(input);
        assert_eq!(whole.len(), 5);
        for split in 0..input.len() {
            // What a connection does: parse what arrived, keep the rest for the next read.
            let mut buffer = input[..split].to_vec();
            let mut got = Vec::new();
            let mut rest = &input[split..];
            loop {
                match parse(&buffer) {
                    Ok(Some((command, used))) => {
                        got.push(Ok(command));
                        buffer.drain(..used);
                    }
                    Err(e) => {
                        got.push(Err(e.reply));
                        buffer.drain(..e.consumed.unwrap());
                    }
                    Ok(None) if rest.is_empty() => break,
                    Ok(None) => {
                        buffer.extend_from_slice(rest);
                        rest = &[];
                    }
                }
            }
            assert_eq!(got, whole, "split at {split}");
        }
    }

    /// Garbage never panics and never loops: every step uses bytes or stops.
    #[test]
    fn random_bytes_get_errors_not_panics() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let words: [&[u8]; 10] = [
            b"set ", b"get ", b"cas ", b"incr ", b"\r\n", b"\n", b"12 ", b"-1 ", b"k ", b"\x00",
        ];
        for _ in 0..2_000 {
            let mut input = Vec::new();
            for _ in 0..rng.random_range(0..20) {
                if rng.random_bool(0.7) {
                    input.extend_from_slice(words[rng.random_range(0..words.len())]);
                } else {
                    input.push(rng.random());
                }
            }
            all(&input);
        }
    }

    #[test]
    fn bad_requests_get_memcached_errors_and_say_what_to_skip() {
        let unknown = error("frobnicate k\r\nget k\r\n");
        assert_eq!(unknown.reply, "ERROR");
        assert_eq!(unknown.consumed, Some("frobnicate k\r\n".len()));
        assert_eq!(error("\r\n").reply, "ERROR");
        assert_eq!(error("get\r\n").reply, "ERROR");
        for bad in [
            "set k x 0 1\r\na\r\n",
            "set k 0 0\r\n",
            "set k 0 0 -1\r\n",
            "delete\r\n",
            "touch k\r\n",
            "delete k maybe\r\n",
        ] {
            assert_eq!(
                error(bad).reply,
                "CLIENT_ERROR bad command line format",
                "{bad:?}"
            );
        }
        let long_key = format!("get {}\r\n", "k".repeat(251));
        assert_eq!(
            error(&long_key).reply,
            "CLIENT_ERROR bad command line format"
        );
        assert_eq!(
            error("incr n x\r\n").reply,
            "CLIENT_ERROR invalid numeric delta argument"
        );
        // a data block longer than announced: where the next request starts is unknown
        let chunk = error("set k 0 0 1\r\nabc\r\n");
        assert_eq!(
            (chunk.reply.as_str(), chunk.consumed),
            ("CLIENT_ERROR bad data chunk", None)
        );
        // a value over the item size limit is skipped whole
        let big = format!(
            "set k 0 0 {}\r\n{}\r\nget k\r\n",
            MAX_VALUE + 1,
            "v".repeat(MAX_VALUE + 1)
        );
        let too_large = error(&big);
        assert_eq!(too_large.reply, "SERVER_ERROR object too large for cache");
        assert_eq!(too_large.consumed, Some(big.len() - "get k\r\n".len()));
        // a line without an end that is already too long
        assert_eq!(error(&"g".repeat(MAX_LINE + 1)).consumed, None);
    }
}
