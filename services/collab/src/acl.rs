//! Per-document access control (`--acl FILE` on a server): who may connect, and per document
//! who may read it and who may write it. Without a file every editor may read and write every
//! document, as on a laptop.
//!
//! ```yaml
//! users:                  # who may connect, and the token each presents (`--token`)
//!   ada: ada-secret
//!   bob: bob-secret
//! docs:                   # per document; "*" is every document not named
//!   notes: {read: [bob], write: [ada]}
//!   "*": {write: [ada]}
//! servers: repl-secret    # what servers present to each other on /replicate
//! ```
//!
//! A writer may read. An editor that may not connect, or may not read the document, is
//! refused at its `Hello` and gets nothing; a reader's operations are refused and dropped.
//! Servers replicating to each other present the `servers` token (all of them are started with
//! the same file); without one, a server with an access list accepts no replication, so
//! nobody can read or write through `/replicate` around it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use anyhow::{Context, bail};

#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    users: BTreeMap<String, String>,
    #[serde(default)]
    docs: BTreeMap<String, Rule>,
    #[serde(default)]
    servers: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Rule {
    #[serde(default)]
    read: BTreeSet<String>,
    #[serde(default)]
    write: BTreeSet<String>,
}

/// What a user may do with a document.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    Read,
    Write,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Acl {
    file: File,
}

impl Acl {
    pub fn load(path: &Path) -> anyhow::Result<Acl> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("--acl {}: cannot read it", path.display()))?;
        Acl::parse(&text).with_context(|| format!("--acl {}", path.display()))
    }

    pub fn parse(text: &str) -> anyhow::Result<Acl> {
        let file: File =
            serde_yaml::from_str(text).context("not an access list (users:, docs:)")?;
        for (user, token) in &file.users {
            if token.is_empty() {
                bail!("users: {user} has an empty token");
            }
        }
        if file.servers.as_deref() == Some("") {
            bail!("servers: an empty token");
        }
        for (doc, rule) in &file.docs {
            if doc != "*" {
                crate::server::check_doc_name(doc).map_err(|e| anyhow::anyhow!("docs: {e}"))?;
            }
            if let Some(user) = rule
                .read
                .iter()
                .chain(&rule.write)
                .find(|u| !file.users.contains_key(*u))
            {
                bail!("docs: {doc} names user {user:?}, who is not under users:");
            }
        }
        Ok(Acl { file })
    }

    /// The token this server presents to the servers it replicates to.
    pub fn server_token(&self) -> &str {
        self.file.servers.as_deref().unwrap_or_default()
    }

    /// Whether a server that dialled us may replicate, presenting `token`.
    pub fn check_server(&self, token: &str) -> Result<(), String> {
        match &self.file.servers {
            Some(expected) if expected == token => Ok(()),
            Some(_) => Err("replication: wrong server token".into()),
            None => Err(
                "replication: this server's access list has no servers: token, so it accepts none"
                    .into(),
            ),
        }
    }

    /// What `user`, presenting `token`, may do with `doc`; why not, if nothing.
    pub fn check(&self, user: &str, token: &str, doc: &str) -> Result<Access, String> {
        match self.file.users.get(user) {
            Some(expected) if expected == token => {}
            Some(_) => return Err(format!("user {user:?}: wrong token")),
            None => return Err(format!("user {user:?} is not allowed to connect")),
        }
        let rule = self
            .file
            .docs
            .get(doc)
            .or_else(|| self.file.docs.get("*"))
            .cloned()
            .unwrap_or_default();
        if rule.write.contains(user) {
            Ok(Access::Write)
        } else if rule.read.contains(user) {
            Ok(Access::Read)
        } else {
            Err(format!("user {user:?} may not read document {doc:?}"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = "
users:
  ada: ada-secret
  bob: bob-secret
docs:
  notes: {read: [bob], write: [ada]}
  '*': {write: [ada]}
";

    #[test]
    fn users_tokens_and_documents_decide() {
        let acl = Acl::parse(FILE).unwrap();
        assert_eq!(acl.check("ada", "ada-secret", "notes"), Ok(Access::Write));
        assert_eq!(acl.check("bob", "bob-secret", "notes"), Ok(Access::Read));
        assert_eq!(acl.check("ada", "ada-secret", "plans"), Ok(Access::Write));
        assert!(
            acl.check("bob", "bob-secret", "plans")
                .unwrap_err()
                .contains("may not read document \"plans\"")
        );
        assert!(
            acl.check("bob", "ada-secret", "notes")
                .unwrap_err()
                .contains("wrong token")
        );
        assert!(
            acl.check("eve", "", "notes")
                .unwrap_err()
                .contains("not allowed to connect")
        );
    }

    #[test]
    fn a_bad_file_says_what_is_wrong() {
        let unknown = "users: {ada: x}\ndocs: {notes: {read: [bob]}}";
        assert!(format!("{:#}", Acl::parse(unknown).unwrap_err()).contains("names user \"bob\""));
        let typo = "users: {ada: x}\ndocs: {notes: {reed: [ada]}}";
        assert!(format!("{:#}", Acl::parse(typo).unwrap_err()).contains("unknown field `reed`"));
        let empty = "users: {ada: ''}";
        assert!(format!("{:#}", Acl::parse(empty).unwrap_err()).contains("empty token"));
        let name = "users: {ada: x}\ndocs: {'a b': {read: [ada]}}";
        assert!(format!("{:#}", Acl::parse(name).unwrap_err()).contains("contains ' '"));
    }
}
