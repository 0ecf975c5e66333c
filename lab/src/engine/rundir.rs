//! Where a run leaves its traces: `runs/<YYYYMMDD-HHMMSS>-<name>/` with one folder per node
//! (its data dir and `node.log`), and the run's `events.jsonl`, `history.jsonl`, `report.json`.

use std::path::{Path, PathBuf};

use anyhow::Context;

#[derive(Debug, Clone)]
pub struct RunDir {
    path: PathBuf,
}

impl RunDir {
    /// Creates a fresh run directory under `root`, never reusing an existing one.
    pub fn create(root: &Path, name: &str) -> anyhow::Result<Self> {
        let stamp: String = humantime::format_rfc3339_seconds(std::time::SystemTime::now())
            .to_string()
            .chars()
            .filter_map(|c| match c {
                '0'..='9' => Some(c),
                'T' => Some('-'),
                _ => None,
            })
            .collect();
        std::fs::create_dir_all(root)
            .with_context(|| format!("creating the runs directory {}", root.display()))?;
        for attempt in 1.. {
            let suffix = if attempt == 1 {
                String::new()
            } else {
                format!("-{attempt}")
            };
            let path = root.join(format!("{stamp}-{name}{suffix}"));
            match std::fs::create_dir(&path) {
                Ok(()) => return Ok(Self { path }),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(e).with_context(|| format!("creating {}", path.display())),
            }
        }
        unreachable!("the loop returns")
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The folder of node `id` (the supervisor creates it when the node first starts): its
    /// data dir lives in `data/`, its output in `node.log`.
    pub fn node_path(&self, id: &str) -> PathBuf {
        self.path.join(id)
    }

    pub fn file(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_never_share_a_directory() {
        let root = tempfile::tempdir().unwrap();
        let a = RunDir::create(root.path(), "proj0").unwrap();
        let b = RunDir::create(root.path(), "proj0").unwrap();
        assert_ne!(a.path(), b.path());
        let name = a.path().file_name().unwrap().to_str().unwrap().to_string();
        assert!(
            name.ends_with("-proj0") && name.len() == "20261124-020800-proj0".len(),
            "{name}"
        );
        assert_eq!(a.node_path("n1"), a.path().join("n1"));
    }
}
