//! Editing traces: real editing sessions recorded keystroke by keystroke, the standard
//! benchmark for sequence CRDTs (josephg/editing-traces' JSON format: a start text, the
//! expected end text, and transactions of `[position, deleted, inserted]` patches, positions
//! in characters). `lab bench proj6` replays `automerge-paper` (259,778 edits of a LaTeX
//! paper) into this CRDT and into the CRDT libraries it is compared with.

use std::io::Read;
use std::path::Path;

use anyhow::{Context, bail};

use crate::{Doc, EditError, Op, ReplicaId};

/// One patch: delete `deleted` characters at `pos`, then insert `inserted` there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Patch {
    pub pos: usize,
    pub deleted: usize,
    pub inserted: String,
}

impl Patch {
    /// Makes the patch on `doc` as its own local edits; the operations it made (the deletion,
    /// then the insertion), to send.
    pub fn apply(&self, doc: &mut Doc) -> Result<Vec<Op>, EditError> {
        let deleted = doc.delete(self.pos, self.deleted)?;
        let inserted = doc.insert(self.pos, &self.inserted)?;
        Ok(deleted.into_iter().chain(inserted).collect())
    }
}

#[derive(Debug, Clone)]
pub struct EditTrace {
    pub start: String,
    pub end: String,
    pub patches: Vec<Patch>,
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct TraceFile {
    start_content: String,
    end_content: String,
    txns: Vec<Txn>,
}

#[derive(serde::Deserialize)]
struct Txn {
    patches: Vec<(usize, usize, String)>,
}

impl EditTrace {
    /// Read a trace, gzip-compressed (`.gz`) or not.
    pub fn load(path: &Path) -> anyhow::Result<EditTrace> {
        let raw = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        let json = if raw.starts_with(&[0x1f, 0x8b]) {
            let mut json = Vec::new();
            flate2::read::GzDecoder::new(&raw[..])
                .read_to_end(&mut json)
                .with_context(|| format!("decompressing {}", path.display()))?;
            json
        } else {
            raw
        };
        let file: TraceFile = serde_json::from_slice(&json)
            .with_context(|| format!("{} is not an editing trace", path.display()))?;
        let patches = file
            .txns
            .into_iter()
            .flat_map(|txn| txn.patches)
            .map(|(pos, deleted, inserted)| Patch {
                pos,
                deleted,
                inserted,
            })
            .collect();
        Ok(EditTrace {
            start: file.start_content,
            end: file.end_content,
            patches,
        })
    }

    /// Replay every patch into a new document as one replica's local edits; the document,
    /// checked against the trace's end text.
    pub fn replay(&self) -> anyhow::Result<Doc> {
        let mut doc = Doc::new(ReplicaId(1));
        doc.insert(0, &self.start)?;
        for (i, patch) in self.patches.iter().enumerate() {
            patch
                .apply(&mut doc)
                .with_context(|| format!("patch {i}"))?;
        }
        if doc.len() != self.end.chars().count() || doc.text() != self.end {
            bail!(
                "the replayed text ({} characters) is not the trace's end text ({} characters)",
                doc.len(),
                self.end.chars().count()
            );
        }
        Ok(doc)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Kept in the repository (assets/traces/README.md says where it comes from).
    fn automerge_paper() -> std::path::PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../assets/traces/automerge-paper.json.gz")
    }

    #[test]
    fn the_automerge_paper_trace_replays_to_its_end_text() {
        let trace = EditTrace::load(&automerge_paper()).unwrap();
        assert_eq!(trace.patches.len(), 259_778);
        let doc = trace.replay().unwrap();
        assert_eq!(doc.len(), 104_852);
        // And a second replica that receives the history converges on the same text.
        let mut other = Doc::new(ReplicaId(2));
        for op in doc.history() {
            other.apply(op.clone()).unwrap();
        }
        assert_eq!(other.text(), trace.end);
    }

    #[test]
    fn a_file_that_is_not_a_trace_says_so() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.json");
        std::fs::write(&path, "{\"startContent\": 3}").unwrap();
        let error = format!("{:#}", EditTrace::load(&path).unwrap_err());
        assert!(
            error.contains("bad.json is not an editing trace"),
            "{error}"
        );
    }
}
