//! Each implementation behind [`Replica`]: ours and the libraries it is measured against,
//! through their ordinary public APIs. The trace is ASCII, so character, UTF-8 and UTF-16
//! positions agree.

use anyhow::{Context, anyhow};

use distlab_collab::trace::EditTrace;

use crate::{Grouping, Replica, replay_patches};

/// Ours: `distlab_collab::Doc`.
pub struct Distlab(distlab_collab::Doc);

impl Replica for Distlab {
    fn new(_: Grouping) -> anyhow::Result<Self> {
        Ok(Distlab(distlab_collab::Doc::new(distlab_collab::ReplicaId(1))))
    }

    fn splice(&mut self, pos: usize, deleted: usize, inserted: &str) -> anyhow::Result<()> {
        if deleted > 0 {
            self.0.delete(pos, deleted)?;
        }
        if !inserted.is_empty() {
            self.0.insert(pos, inserted)?;
        }
        Ok(())
    }

    fn text(&self) -> anyhow::Result<String> {
        Ok(self.0.text())
    }

    fn encode(&mut self) -> anyhow::Result<Vec<u8>> {
        Ok(distlab_collab::codec::encode_ops(self.0.history()))
    }

    fn load(bytes: &[u8]) -> anyhow::Result<Self> {
        let mut doc = distlab_collab::Doc::new(distlab_collab::ReplicaId(2));
        for op in distlab_collab::codec::Decoder::new(bytes) {
            doc.apply(op?)?;
        }
        Ok(Distlab(doc))
    }
}

/// diamond-types 1.0: the fastest text CRDT published, by the author of the trace collection.
pub struct DiamondTypes {
    doc: diamond_types::list::ListCRDT,
    agent: diamond_types::AgentId,
}

impl Replica for DiamondTypes {
    fn new(_: Grouping) -> anyhow::Result<Self> {
        let mut doc = diamond_types::list::ListCRDT::new();
        let agent = doc.get_or_create_agent_id("bench");
        Ok(DiamondTypes { doc, agent })
    }

    fn splice(&mut self, pos: usize, deleted: usize, inserted: &str) -> anyhow::Result<()> {
        if deleted > 0 {
            self.doc.delete(self.agent, pos..pos + deleted);
        }
        if !inserted.is_empty() {
            self.doc.insert(self.agent, pos, inserted);
        }
        Ok(())
    }

    fn text(&self) -> anyhow::Result<String> {
        Ok(self.doc.branch.content().to_string())
    }

    fn encode(&mut self) -> anyhow::Result<Vec<u8>> {
        Ok(self.doc.oplog.encode(Default::default()))
    }

    fn load(bytes: &[u8]) -> anyhow::Result<Self> {
        let mut doc = diamond_types::list::ListCRDT::load_from(bytes)
            .map_err(|e| anyhow!("diamond-types could not load: {e:?}"))?;
        let agent = doc.get_or_create_agent_id("loader");
        Ok(DiamondTypes { doc, agent })
    }
}

/// yrs 0.28: Yjs's Rust port (YATA).
pub struct Yrs {
    doc: yrs::Doc,
    text: yrs::TextRef,
    grouping: Grouping,
}

impl Yrs {
    fn with_doc(doc: yrs::Doc, grouping: Grouping) -> Yrs {
        use yrs::WriteTxn;
        let text = yrs::Transact::transact_mut(&doc).get_or_insert_text("text");
        Yrs {
            doc,
            text,
            grouping,
        }
    }

    fn edit(&self, txn: &mut yrs::TransactionMut, pos: usize, deleted: usize, inserted: &str) {
        use yrs::Text;
        if deleted > 0 {
            self.text.remove_range(txn, pos as u32, deleted as u32);
        }
        if !inserted.is_empty() {
            self.text.insert(txn, pos as u32, inserted);
        }
    }
}

impl Replica for Yrs {
    fn new(grouping: Grouping) -> anyhow::Result<Self> {
        Ok(Yrs::with_doc(yrs::Doc::new(), grouping))
    }

    fn replay(&mut self, trace: &EditTrace) -> anyhow::Result<()> {
        if self.grouping == Grouping::Patch {
            return replay_patches(self, trace);
        }
        let mut txn = yrs::Transact::transact_mut(&self.doc);
        self.edit(&mut txn, 0, 0, &trace.start);
        for patch in &trace.patches {
            self.edit(&mut txn, patch.pos, patch.deleted, &patch.inserted);
        }
        Ok(())
    }

    fn splice(&mut self, pos: usize, deleted: usize, inserted: &str) -> anyhow::Result<()> {
        let mut txn = yrs::Transact::transact_mut(&self.doc);
        self.edit(&mut txn, pos, deleted, inserted);
        Ok(())
    }

    fn text(&self) -> anyhow::Result<String> {
        use yrs::GetString;
        Ok(self.text.get_string(&yrs::Transact::transact(&self.doc)))
    }

    fn encode(&mut self) -> anyhow::Result<Vec<u8>> {
        use yrs::ReadTxn;
        Ok(yrs::Transact::transact(&self.doc).encode_state_as_update_v1(&yrs::StateVector::default()))
    }

    fn load(bytes: &[u8]) -> anyhow::Result<Self> {
        use yrs::updates::decoder::Decode;
        let doc = yrs::Doc::new();
        let update = yrs::Update::decode_v1(bytes).context("yrs could not decode")?;
        yrs::Transact::transact_mut(&doc)
            .apply_update(update)
            .context("yrs could not apply")?;
        Ok(Yrs::with_doc(doc, Grouping::Patch))
    }
}

/// automerge 0.12 (RGA-based, columnar storage).
pub struct Automerge {
    doc: automerge::AutoCommit,
    text: automerge::ObjId,
    grouping: Grouping,
}

impl Replica for Automerge {
    fn new(grouping: Grouping) -> anyhow::Result<Self> {
        use automerge::transaction::Transactable;
        let mut doc = automerge::AutoCommit::new();
        let text = doc.put_object(automerge::ROOT, "text", automerge::ObjType::Text)?;
        doc.commit();
        Ok(Automerge {
            doc,
            text,
            grouping,
        })
    }

    fn splice(&mut self, pos: usize, deleted: usize, inserted: &str) -> anyhow::Result<()> {
        use automerge::transaction::Transactable;
        self.doc
            .splice_text(&self.text, pos, deleted as isize, inserted)?;
        if self.grouping == Grouping::Patch {
            self.doc.commit();
        }
        Ok(())
    }

    fn replay(&mut self, trace: &EditTrace) -> anyhow::Result<()> {
        replay_patches(self, trace)?;
        self.doc.commit();
        Ok(())
    }

    fn text(&self) -> anyhow::Result<String> {
        use automerge::ReadDoc;
        Ok(self.doc.text(&self.text)?)
    }

    fn encode(&mut self) -> anyhow::Result<Vec<u8>> {
        Ok(self.doc.save())
    }

    fn load(bytes: &[u8]) -> anyhow::Result<Self> {
        use automerge::ReadDoc;
        let doc = automerge::AutoCommit::load(bytes)?;
        let text = match doc.get(automerge::ROOT, "text")? {
            Some((automerge::Value::Object(automerge::ObjType::Text), id)) => id,
            other => anyhow::bail!("automerge's loaded document has no text: {other:?}"),
        };
        Ok(Automerge {
            doc,
            text,
            grouping: Grouping::Patch,
        })
    }
}

/// loro 1.17 (Fugue, with an event graph).
pub struct Loro {
    doc: loro::LoroDoc,
    text: loro::LoroText,
    grouping: Grouping,
}

impl Replica for Loro {
    fn new(grouping: Grouping) -> anyhow::Result<Self> {
        let doc = loro::LoroDoc::new();
        let text = doc.get_text("text");
        Ok(Loro {
            doc,
            text,
            grouping,
        })
    }

    fn splice(&mut self, pos: usize, deleted: usize, inserted: &str) -> anyhow::Result<()> {
        if deleted > 0 {
            self.text.delete(pos, deleted)?;
        }
        if !inserted.is_empty() {
            self.text.insert(pos, inserted)?;
        }
        if self.grouping == Grouping::Patch {
            self.doc.commit();
        }
        Ok(())
    }

    fn replay(&mut self, trace: &EditTrace) -> anyhow::Result<()> {
        replay_patches(self, trace)?;
        self.doc.commit();
        Ok(())
    }

    fn text(&self) -> anyhow::Result<String> {
        Ok(self.text.to_string())
    }

    fn encode(&mut self) -> anyhow::Result<Vec<u8>> {
        Ok(self.doc.export(loro::ExportMode::Snapshot)?)
    }

    fn load(bytes: &[u8]) -> anyhow::Result<Self> {
        let doc = loro::LoroDoc::new();
        doc.import(bytes)?;
        let text = doc.get_text("text");
        Ok(Loro {
            doc,
            text,
            grouping: Grouping::Patch,
        })
    }
}
