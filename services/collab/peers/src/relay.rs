//! `distlab-collab-peers relay-yjs URL WRITERS CHARS WINDOW`: the relay benchmark's writers
//! and reader (`distlab_collab::relay_bench`) as Yjs clients (yrs, the y-sync protocol), against
//! a Yjs server (`lab bench proj6` starts y-websocket). Prints the benchmark's figure line.

use distlab_collab::relay_bench::{self, Protocol, Reader, Writer};
use yrs::sync::{Message, SyncMessage};
use yrs::updates::decoder::Decode;
use yrs::updates::encoder::Encode;
use yrs::{GetString, ReadTxn, StateVector, Text, TextRef, Transact, Update};

struct Yjs {
    url: String,
}

struct YjsWriter {
    doc: yrs::Doc,
    text: TextRef,
}

struct YjsReader {
    doc: yrs::Doc,
}

fn step1(doc: &yrs::Doc) -> Vec<u8> {
    Message::Sync(SyncMessage::SyncStep1(doc.transact().state_vector())).encode_v1()
}

impl Writer for YjsWriter {
    fn author(&self) -> u64 {
        self.doc.client_id().get()
    }

    fn hello(&mut self) -> Vec<Vec<u8>> {
        vec![step1(&self.doc)]
    }

    fn type_one(&mut self) -> anyhow::Result<(u64, Vec<u8>)> {
        let mut txn = self.doc.transact_mut();
        // Only this writer's characters are in its document: its length is its clock.
        let n = self.text.get_string(&txn).len() as u32;
        self.text.insert(&mut txn, n, "x");
        let update = txn.encode_update_v1();
        Ok((
            u64::from(n),
            Message::Sync(SyncMessage::Update(update)).encode_v1(),
        ))
    }

    fn receive(&mut self, _bytes: &[u8]) -> anyhow::Result<Option<u64>> {
        // A Yjs server does not say what it stored.
        Ok(None)
    }

    fn acknowledged(&self) -> bool {
        false
    }
}

impl Reader for YjsReader {
    fn hello(&mut self) -> Vec<Vec<u8>> {
        vec![step1(&self.doc)]
    }

    fn receive(&mut self, bytes: &[u8]) -> anyhow::Result<Vec<(u64, u64, u64)>> {
        let update = match Message::decode_v1(bytes)? {
            Message::Sync(SyncMessage::SyncStep2(update) | SyncMessage::Update(update)) => update,
            _ => return Ok(Vec::new()),
        };
        let before: StateVector = self.doc.transact().state_vector();
        self.doc
            .transact_mut()
            .apply_update(Update::decode_v1(&update)?)?;
        let after = self.doc.transact().state_vector();
        Ok(after
            .iter()
            .filter_map(|(&client, &clock)| {
                let old = before.get(&client);
                (clock > old).then(|| (client.get(), u64::from(old), u64::from(clock - old)))
            })
            .collect())
    }
}

impl Protocol for Yjs {
    type Writer = YjsWriter;
    type Reader = YjsReader;

    fn url(&self) -> String {
        self.url.clone()
    }

    fn writer(&self, w: usize) -> YjsWriter {
        let doc = yrs::Doc::with_client_id(w as u64 + 1);
        let text = doc.get_or_insert_text("text");
        YjsWriter { doc, text }
    }

    fn reader(&self) -> YjsReader {
        YjsReader {
            doc: yrs::Doc::with_client_id(u64::from(u32::MAX)),
        }
    }
}

pub fn main(args: &[String]) -> anyhow::Result<()> {
    let [url, writers, chars, window] = args else {
        anyhow::bail!("usage: distlab-collab-peers relay-yjs URL WRITERS CHARS WINDOW");
    };
    let (writers, chars, window): (usize, u64, u64) =
        (writers.parse()?, chars.parse()?, window.parse()?);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let figures = runtime.block_on(relay_bench::run(
        Yjs { url: url.clone() },
        writers,
        chars,
        window,
    ))?;
    println!("{}", figures.line("y-websocket", writers, window));
    Ok(())
}
