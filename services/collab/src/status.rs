//! What servers and editors report of a document in `/status`: enough for the lab's
//! convergence view and checks to compare replicas without fetching whole texts.

use crate::doc::Doc;

/// Characters of the text shown as its excerpt.
const EXCERPT: usize = 80;

/// A digest of the text (FNV-1a, hex): equal digests, equal texts.
pub fn digest(text: &str) -> String {
    format!("{:016x}", distlab_runtime::hash::fnv1a(text.bytes()))
}

/// One document's figures, with `extra` fields merged in.
pub fn doc_detail(name: &str, doc: &Doc, extra: serde_json::Value) -> serde_json::Value {
    let text = doc.text();
    let version: serde_json::Map<String, serde_json::Value> = doc
        .version()
        .iter()
        .map(|(replica, held)| (replica.to_string(), held.into()))
        .collect();
    let mut detail = serde_json::json!({
        "name": name,
        "chars": doc.len(),
        "digest": digest(&text),
        "ops": doc.version().total(),
        "version": version,
        "pending": doc.pending(),
        "excerpt": text.chars().take(EXCERPT).collect::<String>(),
    });
    if let (Some(detail), serde_json::Value::Object(extra)) = (detail.as_object_mut(), extra) {
        detail.extend(extra);
    }
    detail
}
