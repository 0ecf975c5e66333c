//! Recording what the console draws as an asciicast v2 file (`asciinema play FILE.cast`): a
//! JSON header line (width, height, timestamp, title), then one `[seconds, "o", text]` line
//! per frame the console wrote and `[seconds, "m", label]` markers at scenario steps.
//!
//! [`Tee`] is the writer the terminal backend draws into: it passes the bytes on to the real
//! terminal (if there is one) and, at every flush (the end of a frame), appends them to the
//! cast.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use anyhow::Context;
use serde_json::json;

pub struct Cast {
    file: BufWriter<File>,
    started: Instant,
}

impl Cast {
    /// Creates `path` and writes the header.
    pub fn create(path: &Path, width: u16, height: u16, title: &str) -> anyhow::Result<Self> {
        let file = File::create(path).with_context(|| format!("creating {}", path.display()))?;
        let mut cast = Self {
            file: BufWriter::new(file),
            started: Instant::now(),
        };
        let timestamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let header = json!({
            "version": 2,
            "width": width,
            "height": height,
            "timestamp": timestamp,
            "title": title,
            "env": {"TERM": "xterm-256color", "SHELL": "/bin/sh"},
        });
        writeln!(cast.file, "{header}")?;
        Ok(cast)
    }

    fn event(&mut self, code: &str, data: &str) -> std::io::Result<()> {
        let t = self.started.elapsed().as_secs_f64();
        writeln!(
            self.file,
            "{}",
            json!([(t * 1e6).round() / 1e6, code, data])
        )
    }

    /// Terminal output.
    pub fn output(&mut self, data: &str) -> std::io::Result<()> {
        self.event("o", data)
    }

    /// A marker (a scenario step), which players can jump to.
    pub fn marker(&mut self, label: &str) -> std::io::Result<()> {
        self.event("m", label)
    }

    pub fn flush(&mut self) -> std::io::Result<()> {
        self.file.flush()
    }
}

/// Writes to the terminal (if any) and records each flushed frame in the cast (if any).
pub struct Tee<W: Write> {
    pub terminal: Option<W>,
    pub cast: Option<Arc<Mutex<Cast>>>,
    pending: Vec<u8>,
}

impl<W: Write> Tee<W> {
    pub fn new(terminal: Option<W>, cast: Option<Arc<Mutex<Cast>>>) -> Self {
        Self {
            terminal,
            cast,
            pending: Vec::new(),
        }
    }
}

impl<W: Write> Write for Tee<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if let Some(terminal) = &mut self.terminal {
            terminal.write_all(buf)?;
        }
        if self.cast.is_some() {
            self.pending.extend_from_slice(buf);
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        if let Some(terminal) = &mut self.terminal {
            terminal.flush()?;
        }
        if let Some(cast) = &self.cast
            && !self.pending.is_empty()
        {
            // A frame ends at a flush, so it is whole UTF-8.
            let text = String::from_utf8_lossy(&self.pending).into_owned();
            self.pending.clear();
            cast.lock().unwrap().output(&text)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cast_has_a_header_frames_and_markers() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("demo.cast");
        let cast = Arc::new(Mutex::new(Cast::create(&path, 100, 30, "demo").unwrap()));
        let mut tee: Tee<Vec<u8>> = Tee::new(Some(Vec::new()), Some(cast.clone()));
        tee.write_all("héllo ".as_bytes()).unwrap();
        tee.write_all(b"world").unwrap();
        tee.flush().unwrap();
        cast.lock().unwrap().marker("step 1: kill n1").unwrap();
        cast.lock().unwrap().flush().unwrap();
        assert_eq!(tee.terminal.as_deref(), Some("héllo world".as_bytes()));

        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines[0]["version"], 2);
        assert_eq!(lines[0]["width"], 100);
        assert_eq!(lines[0]["height"], 30);
        assert_eq!(lines[0]["title"], "demo");
        assert_eq!(lines[1][1], "o");
        assert_eq!(lines[1][2], "héllo world", "one event per flushed frame");
        assert_eq!(lines[2][1], "m");
        assert_eq!(lines[2][2], "step 1: kill n1");
        assert!(lines[2][0].as_f64().unwrap() >= lines[1][0].as_f64().unwrap());
    }
}
