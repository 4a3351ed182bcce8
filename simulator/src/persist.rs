//! The state file: one JSON line with a full snapshot, then one JSON line per change.
//!
//! Appending a delta per ledger close keeps the cost of a close independent of history length.
//! On start the file is read (a torn last line from a crash is ignored: that change was never
//! acknowledged, because the simulator answers only after the line is written), folded into
//! one snapshot, and rewritten compactly through a temporary file and a rename. Lines are
//! written with `write_all` without fsync: state survives the process being killed, not the
//! machine losing power.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::state::{Delta, Snapshot};

#[derive(Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
enum Line {
    Snapshot(Box<Snapshot>),
    Delta(Box<Delta>),
}

/// An open state file, appended to after every change.
#[derive(Debug)]
pub struct Journal {
    file: File,
}

/// Reads the state file; `Ok(None)` if it does not exist.
pub fn load(path: &Path) -> io::Result<Option<Snapshot>> {
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let mut lines = BufReader::new(file).lines();
    let first = match lines.next() {
        Some(l) => l?,
        None => return Ok(None),
    };
    let mut snapshot = match serde_json::from_str::<Line>(&first) {
        Ok(Line::Snapshot(s)) => *s,
        Ok(Line::Delta(_)) => return Err(invalid(path, "the first line is not a snapshot")),
        Err(e) => return Err(invalid(path, &e.to_string())),
    };
    for line in lines {
        let line = line?;
        match serde_json::from_str::<Line>(&line) {
            Ok(Line::Delta(d)) => snapshot.apply(*d),
            Ok(Line::Snapshot(s)) => snapshot = *s,
            Err(e) => {
                // Only a crash mid-write leaves an unparsable line, and it can only be the last.
                tracing::warn!(path = %path.display(), error = %e, "ignoring a torn last line in the state file");
                break;
            }
        }
    }
    Ok(Some(snapshot))
}

/// Writes `snapshot` as the whole state file (temporary file + rename) and opens it for appends.
pub fn create(path: &Path, snapshot: &Snapshot) -> io::Result<Journal> {
    let tmp = temp_path(path);
    {
        let mut f = File::create(&tmp)?;
        write_line(&mut f, &Line::Snapshot(Box::new(snapshot.clone())))?;
        f.sync_all()?;
    }
    fs::rename(&tmp, path)?;
    let file = OpenOptions::new().append(true).open(path)?;
    Ok(Journal { file })
}

impl Journal {
    pub fn append(&mut self, delta: Delta) -> io::Result<()> {
        write_line(&mut self.file, &Line::Delta(Box::new(delta)))
    }
}

fn write_line(f: &mut File, line: &Line) -> io::Result<()> {
    let mut buf = serde_json::to_vec(line).map_err(io::Error::other)?;
    buf.push(b'\n');
    // One write_all of the whole line, so a crash leaves at most one torn line at the end.
    f.write_all(&buf)
}

fn temp_path(path: &Path) -> PathBuf {
    let mut name = path
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_default();
    name.push(".tmp");
    path.with_file_name(name)
}

fn invalid(path: &Path, why: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("state file {}: {why}", path.display()),
    )
}
