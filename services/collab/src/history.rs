//! Time travel: a document's causal history as a person reads it, and its text as it was
//! after any prefix of that history. The history is in the order the replica integrated the
//! operations, which is causal: every prefix is a version the document passed through.

use crate::causal::{Dot, VersionVector};
use crate::doc::Doc;
use crate::error::VersionError;
use crate::op::{Body, Op};

/// One operation of the history.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Entry {
    /// Its place in the history (0 is the first).
    pub index: usize,
    /// `replica@seq` of its first character.
    pub id: String,
    pub kind: String,
    /// Characters inserted or deleted.
    pub len: u64,
    /// The operations it was made after (its causal parents).
    pub parents: Vec<String>,
    /// An insertion: the characters it went between when it was made.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub origin_left: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub origin_right: Option<String>,
    /// An insertion: what it inserted.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub text: Option<String>,
    /// A deletion: the characters it deleted, as `replica@seq+len` spans.
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub targets: Vec<String>,
}

fn dot(d: Dot) -> String {
    d.to_string()
}

fn entry(index: usize, op: &Op) -> Entry {
    let (origin_left, origin_right, text, targets) = match &op.body {
        Body::Insert {
            origin_left,
            origin_right,
            text,
        } => (
            origin_left.map(dot),
            origin_right.map(dot),
            Some(text.clone()),
            Vec::new(),
        ),
        Body::Delete { targets } => (
            None,
            None,
            None,
            targets
                .iter()
                .map(|span| format!("{}+{}", span.start, span.len))
                .collect(),
        ),
    };
    Entry {
        index,
        id: dot(op.id),
        kind: op.kind().to_string(),
        len: op.len(),
        parents: op.parents.dots().iter().copied().map(dot).collect(),
        origin_left,
        origin_right,
        text,
        targets,
    }
}

/// Every operation of `doc`'s history.
pub fn entries(doc: &Doc) -> Vec<Entry> {
    doc.history()
        .iter()
        .enumerate()
        .map(|(i, op)| entry(i, op))
        .collect()
}

/// The version after the first `n` operations of the history.
pub fn version_after(doc: &Doc, n: usize) -> VersionVector {
    let mut version = VersionVector::new();
    for op in doc.history().iter().take(n) {
        version.advance(op.id.replica, op.end().seq);
    }
    version
}

/// The text after the first `n` operations (all of them if `n` is larger).
pub fn text_after(doc: &Doc, n: usize) -> Result<String, VersionError> {
    Ok(doc.at(&version_after(doc, n))?.text())
}

/// One version of the history as a viewer steps through it: the version after the first `at`
/// of `of` operations, the operation that made it (none for the empty document), and the
/// text then.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Step {
    pub at: usize,
    pub of: usize,
    pub entry: Option<Entry>,
    pub text: String,
    /// Where in `text` (characters) the operation changed it: its inserted text starts there,
    /// or its deleted text was there.
    pub pos: Option<usize>,
}

/// The `at`-th version (the latest where `at` is `None` or past the end).
pub fn step(doc: &Doc, at: Option<usize>) -> Result<Step, VersionError> {
    let of = doc.history().len();
    let at = at.unwrap_or(of).min(of);
    let text = if at == of {
        doc.text()
    } else {
        text_after(doc, at)?
    };
    let pos = match at.checked_sub(1) {
        Some(before) => {
            let before = text_after(doc, before)?;
            Some(
                before
                    .chars()
                    .zip(text.chars())
                    .take_while(|(a, b)| a == b)
                    .count(),
            )
        }
        None => None,
    };
    Ok(Step {
        at,
        of,
        entry: at.checked_sub(1).map(|i| entry(i, &doc.history()[i])),
        text,
        pos,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::causal::ReplicaId;

    #[test]
    fn every_prefix_of_the_history_is_a_past_text() {
        let mut a = Doc::new(ReplicaId(1));
        let mut b = Doc::new(ReplicaId(2));
        let first = a.insert(0, "hello").unwrap().unwrap();
        b.apply(first).unwrap();
        let b_op = b.insert(5, " world").unwrap().unwrap();
        a.delete(0, 1).unwrap();
        a.apply(b_op).unwrap();
        let history = entries(&a);
        assert_eq!(history.len(), 3);
        assert_eq!(history[0].text.as_deref(), Some("hello"));
        assert_eq!(history[1].kind, "delete");
        assert_eq!(
            history[1].targets,
            vec![format!("{}+1", Dot::new(ReplicaId(1), 0))]
        );
        assert_eq!(
            history[2].parents,
            vec![Dot::new(ReplicaId(1), 4).to_string()]
        );
        assert_eq!(
            history[2].origin_left,
            Some(Dot::new(ReplicaId(1), 4).to_string())
        );
        assert_eq!(text_after(&a, 0).unwrap(), "");
        assert_eq!(text_after(&a, 1).unwrap(), "hello");
        assert_eq!(text_after(&a, 2).unwrap(), "ello");
        assert_eq!(text_after(&a, 3).unwrap(), "ello world");
        assert_eq!(text_after(&a, 99).unwrap(), a.text());

        let first = step(&a, Some(0)).unwrap();
        assert_eq!(
            (first.at, first.of, first.entry, first.text.as_str()),
            (0, 3, None, "")
        );
        let second = step(&a, Some(2)).unwrap();
        assert_eq!(second.entry.unwrap().kind, "delete");
        assert_eq!((second.text.as_str(), second.pos), ("ello", Some(0)));
        assert_eq!(
            step(&a, Some(3)).unwrap().pos,
            Some(4),
            "\" world\" went in at 4"
        );
        let now = step(&a, None).unwrap();
        assert_eq!((now.at, now.text), (3, a.text()));
        assert_eq!(
            step(&a, Some(99)).unwrap().at,
            3,
            "past the end is the latest"
        );
    }
}
