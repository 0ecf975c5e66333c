//! Input split into map tasks. Files are cut into byte ranges of about `target` bytes; a range
//! owns every line (record) that *starts* inside it. A reader of a range that does not start
//! a file skips the partial line at its start (the previous range owns it) and reads past its
//! end to finish its last line, so every line belongs to exactly one map task however the cuts
//! fall, and no task needs to know where lines are before it starts (Hadoop's rule).

use std::io::{BufRead, BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

/// One map task's input: bytes `start..end` of a file.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Split {
    pub path: PathBuf,
    pub start: u64,
    pub end: u64,
}

/// Cuts files (path and size, in the order given) into splits of about `target` bytes (at
/// least 1). An empty file gets no split.
pub fn plan(files: &[(PathBuf, u64)], target: u64) -> Vec<Split> {
    let target = target.max(1);
    let mut splits = Vec::new();
    for (path, size) in files {
        let mut start = 0;
        while start < *size {
            let end = (start + target).min(*size);
            splits.push(Split {
                path: path.clone(),
                start,
                end,
            });
            start = end;
        }
    }
    splits
}

/// Calls `each` with every record (line, without its newline) the split owns, in order, and
/// its byte offset in the file.
pub fn read_records(
    split: &Split,
    mut each: impl FnMut(u64, &[u8]) -> std::io::Result<()>,
) -> std::io::Result<()> {
    let mut file = std::fs::File::open(&split.path)?;
    let mut offset = split.start;
    if split.start > 0 {
        // The line that straddles the cut belongs to the previous split: skip to its end. A
        // cut just after a newline starts a line, which is ours.
        file.seek(SeekFrom::Start(split.start - 1))?;
        let mut reader = BufReader::new(file.by_ref());
        let mut skipped = Vec::new();
        offset = split.start - 1 + reader.read_until(b'\n', &mut skipped)? as u64;
        file.seek(SeekFrom::Start(offset))?;
    }
    let mut reader = BufReader::with_capacity(256 * 1024, file);
    let mut line = Vec::new();
    while offset < split.end {
        line.clear();
        let read = reader.read_until(b'\n', &mut line)?;
        if read == 0 {
            break;
        }
        let record = line.strip_suffix(b"\n").unwrap_or(&line);
        let record = record.strip_suffix(b"\r").unwrap_or(record);
        each(offset, record)?;
        offset += read as u64;
    }
    Ok(())
}

/// The files a job's input names: a file, a directory (its files, sorted, not recursing), or a
/// glob's matches (`*` and `?` in the last component), each with its size. An input that
/// names nothing readable is an error naming it.
pub fn input_files(input: &Path) -> std::io::Result<Vec<(PathBuf, u64)>> {
    let not_found = || {
        std::io::Error::new(
            std::io::ErrorKind::NotFound,
            format!(
                "{}: no such file, directory or matching files",
                input.display()
            ),
        )
    };
    let name = input
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut files: Vec<PathBuf> = if name.contains(['*', '?']) {
        let dir = input
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        std::fs::read_dir(dir)
            .map_err(|e| std::io::Error::new(e.kind(), format!("{}: {e}", dir.display())))?
            .filter_map(|e| e.ok())
            .filter(|e| glob_match(&name, &e.file_name().to_string_lossy()))
            .map(|e| e.path())
            .filter(|p| p.is_file())
            .collect()
    } else if input.is_dir() {
        std::fs::read_dir(input)?
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .filter(|p| p.is_file())
            .collect()
    } else if input.is_file() {
        vec![input.to_path_buf()]
    } else {
        return Err(not_found());
    };
    if files.is_empty() {
        return Err(not_found());
    }
    files.sort();
    files
        .into_iter()
        .map(|path| {
            let size = std::fs::metadata(&path)
                .map_err(|e| std::io::Error::new(e.kind(), format!("{}: {e}", path.display())))?
                .len();
            Ok((path, size))
        })
        .collect()
}

/// `*` any run of characters, `?` any one.
fn glob_match(pattern: &str, name: &str) -> bool {
    let (p, n): (Vec<char>, Vec<char>) = (pattern.chars().collect(), name.chars().collect());
    // Classic two-pointer match with backtracking to the last `*`.
    let (mut i, mut j, mut star, mut mark) = (0, 0, None, 0);
    while j < n.len() {
        if i < p.len() && (p[i] == '?' || p[i] == n[j]) {
            i += 1;
            j += 1;
        } else if i < p.len() && p[i] == '*' {
            star = Some(i);
            mark = j;
            i += 1;
        } else if let Some(s) = star {
            i = s + 1;
            mark += 1;
            j = mark;
        } else {
            return false;
        }
    }
    p[i..].iter().all(|c| *c == '*')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn records(split: &Split) -> Vec<String> {
        let mut out = Vec::new();
        read_records(split, |_, r| {
            out.push(String::from_utf8_lossy(r).into_owned());
            Ok(())
        })
        .unwrap();
        out
    }

    /// Whatever the split size, every line is read once, in order: cuts mid-line, just after a
    /// newline, on the last byte, and a last line without a newline.
    #[test]
    fn every_line_belongs_to_exactly_one_split() {
        let dir = tempfile::tempdir().unwrap();
        let text = "alpha beta\n\ngamma\nlonger line with several words\nx\r\nlast without newline";
        let path = dir.path().join("in.txt");
        std::fs::write(&path, text).unwrap();
        let expected: Vec<String> = text.lines().map(String::from).collect();
        for target in 1..=text.len() as u64 + 1 {
            let splits = plan(&[(path.clone(), text.len() as u64)], target);
            assert_eq!(splits.first().unwrap().start, 0);
            assert_eq!(splits.last().unwrap().end, text.len() as u64);
            let all: Vec<String> = splits.iter().flat_map(records).collect();
            assert_eq!(all, expected, "split size {target}");
        }
    }

    #[test]
    fn inputs_are_files_directories_or_globs() {
        let dir = tempfile::tempdir().unwrap();
        for (name, text) in [("a.txt", "1\n"), ("b.txt", "22\n"), ("c.log", "333\n")] {
            std::fs::write(dir.path().join(name), text).unwrap();
        }
        std::fs::write(dir.path().join("empty.txt"), "").unwrap();
        let names = |files: Vec<(PathBuf, u64)>| -> Vec<(String, u64)> {
            files
                .into_iter()
                .map(|(p, s)| (p.file_name().unwrap().to_string_lossy().into_owned(), s))
                .collect()
        };
        assert_eq!(
            names(input_files(&dir.path().join("*.txt")).unwrap()),
            [
                ("a.txt".into(), 2),
                ("b.txt".into(), 3),
                ("empty.txt".into(), 0)
            ]
        );
        assert_eq!(names(input_files(dir.path()).unwrap()).len(), 4);
        assert_eq!(
            names(input_files(&dir.path().join("c.log")).unwrap()),
            [("c.log".into(), 4)]
        );
        let missing = input_files(&dir.path().join("nope/*.txt")).unwrap_err();
        assert!(missing.to_string().contains("nope"), "{missing}");
        let none = input_files(&dir.path().join("*.csv")).unwrap_err();
        assert!(none.to_string().contains("no such file"), "{none}");
        // The empty file has no split.
        let files = input_files(&dir.path().join("*.txt")).unwrap();
        assert_eq!(plan(&files, 100).len(), 2);
        assert!(glob_match("a*b?c", "axxbyc") && !glob_match("a*b?c", "axxbc"));
    }
}
