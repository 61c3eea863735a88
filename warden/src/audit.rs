//! The tamper-evident audit trail: `<state-dir>/audit/audit.jsonl`, one JSON object per
//! event, each line carrying `seq`, `prev` (SHA-256 of the previous line) and `mac`
//! (HMAC-SHA-256 under `<state-dir>/audit.key`), so `clawctl audit verify --key` finds
//! any edit or cut, even one whose author recomputed the hashes. The line format and the
//! chain are defined once, in the `clawrden-audit` crate; this module writes the files.
//!
//! Every line goes out as one `write(2)` on an `O_APPEND` file, with no userspace buffer:
//! once [`Audit::record`] returns, the line is in the kernel, so a `decision` recorded
//! before a command starts survives a warden crash. A failed write is returned to the
//! caller (the session then denies) and the file is reopened on the next call, re-reading
//! the tail, so the chain stays intact when the disk comes back.

use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

pub use clawrden_audit::{bytes_value, AuditKey, Event, EventKind, ACTIVE_FILE, ZERO_HASH};
use clawrden_audit::{link_hash, newest_rotated, parse_line, render, rotated_name};

use crate::clock::Clock;

/// Default size at which the active file is rotated.
pub const DEFAULT_MAX_SIZE: u64 = 64 * 1024 * 1024;

/// Why an audit line could not be written.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("cannot {op} {}: {source}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{}: last line is not a valid audit line ({message}); check it with `clawctl audit verify`", path.display())]
    CorruptTail { path: PathBuf, message: String },
    #[error("refusing to rotate {} onto existing {}", from.display(), to.display())]
    RotationTargetExists { from: PathBuf, to: PathBuf },
}

fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> AuditError + 'a {
    move |source| AuditError::Io {
        op,
        path: path.to_owned(),
        source,
    }
}

/// Handle to the audit writer, shared by every session (cheap to clone).
#[derive(Clone)]
pub struct Audit {
    writer: Arc<Mutex<Writer>>,
    failures: Arc<AtomicU64>,
}

impl std::fmt::Debug for Audit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Audit")
            .field("failures", &self.failures())
            .finish_non_exhaustive()
    }
}

struct Writer {
    dir: PathBuf,
    max_size: u64,
    clock: Arc<dyn Clock>,
    key: Arc<AuditKey>,
    open: Option<OpenFile>,
    last_error: Option<String>,
    /// Gets a copy of every line written (off-host forwarding).
    forward: Option<crate::audit_forward::Forwarder>,
}

struct OpenFile {
    file: File,
    size: u64,
    /// Seq of the last line written (0 before the first).
    seq: u64,
    prev: String,
    /// Seq of the first line of the active file, once it has one.
    first_seq: Option<u64>,
}

impl Audit {
    /// A writer for `dir` (normally `<state-dir>/audit`) that MACs every line with `key`.
    /// Opening is attempted on the first [`Audit::record`] (and by [`Audit::open_now`]); a
    /// directory that cannot be written makes calls fail, not the warden.
    pub fn new(dir: PathBuf, max_size: u64, clock: Arc<dyn Clock>, key: Arc<AuditKey>) -> Audit {
        Audit {
            writer: Arc::new(Mutex::new(Writer {
                dir,
                max_size,
                clock,
                key,
                open: None,
                last_error: None,
                forward: None,
            })),
            failures: Arc::new(AtomicU64::new(0)),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Writer> {
        // A panic while holding the lock leaves `open` either intact or None; both are safe.
        self.writer.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Opens the active file now (resuming seq and prev from its tail), so startup can
    /// report a broken audit directory early.
    pub fn open_now(&self) -> Result<(), AuditError> {
        let mut w = self.lock();
        match w.ensure_open() {
            Ok(()) => Ok(()),
            Err(e) => {
                w.last_error = Some(e.to_string());
                Err(e)
            }
        }
    }

    /// Appends one event; returns its seq. On failure nothing is half-written (a short
    /// write is cut back) and the next call reopens the file.
    pub fn record(&self, event: &Event) -> Result<u64, AuditError> {
        let mut w = self.lock();
        match w.write(event) {
            Ok(seq) => {
                w.last_error = None;
                Ok(seq)
            }
            Err(e) => {
                self.failures.fetch_add(1, Ordering::Relaxed);
                w.open = None;
                w.last_error = Some(e.to_string());
                Err(e)
            }
        }
    }

    /// Sends a copy of every line written from now on to `forward` (`None`: stop).
    pub fn set_forwarder(&self, forward: Option<crate::audit_forward::Forwarder>) {
        self.lock().forward = forward;
    }

    /// Flushes the active file to disk (on shutdown).
    pub fn sync(&self) -> Result<(), AuditError> {
        let w = self.lock();
        if let Some(open) = &w.open {
            let path = w.dir.join(ACTIVE_FILE);
            open.file.sync_all().map_err(io_err("sync", &path))?;
        }
        Ok(())
    }

    /// How many writes have failed since start.
    pub fn failures(&self) -> u64 {
        self.failures.load(Ordering::Relaxed)
    }

    /// The cause of the last failure, if the last attempt failed.
    pub fn last_error(&self) -> Option<String> {
        self.lock().last_error.clone()
    }

    /// The public id of the key lines are MAC'd with.
    pub fn key_id(&self) -> String {
        self.lock().key.id()
    }

    /// Seq and hash of the last line written, if the file is open.
    pub fn head(&self) -> Option<(u64, String)> {
        self.lock().open.as_ref().map(|o| (o.seq, o.prev.clone()))
    }
}

impl Writer {
    fn active(&self) -> PathBuf {
        self.dir.join(ACTIVE_FILE)
    }

    fn ensure_open(&mut self) -> Result<(), AuditError> {
        if self.open.is_none() {
            self.open = Some(open_active(&self.dir)?);
        }
        Ok(())
    }

    fn write(&mut self, event: &Event) -> Result<u64, AuditError> {
        self.ensure_open()?;
        let ts = format_ts(self.clock.now());
        let (seq, line) = {
            let open = self.open.as_ref().expect("opened above");
            let seq = open.seq + 1;
            (seq, render(seq, &ts, event, &open.prev, &self.key))
        };
        let need_rotation = {
            let open = self.open.as_ref().expect("opened above");
            open.size > 0 && open.size + line.len() as u64 + 1 > self.max_size
        };
        if need_rotation {
            self.rotate()?;
        }
        let path = self.active();
        let open = self.open.as_mut().expect("opened above");
        let mut buf = Vec::with_capacity(line.len() + 1);
        buf.extend_from_slice(line.as_bytes());
        buf.push(b'\n');
        let written = loop {
            match open.file.write(&buf) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                other => break other,
            }
        };
        match written {
            Ok(n) if n == buf.len() => {}
            Ok(n) => {
                // Cut the partial line so the file still ends on a line boundary.
                let _ = open.file.set_len(open.size);
                return Err(AuditError::Io {
                    op: "append to",
                    path,
                    source: io::Error::new(
                        io::ErrorKind::WriteZero,
                        format!("short write ({n} of {} bytes; disk full?)", buf.len()),
                    ),
                });
            }
            Err(e) => return Err(io_err("append to", &path)(e)),
        }
        open.size += buf.len() as u64;
        open.seq = seq;
        open.prev = link_hash(line.as_bytes());
        open.first_seq.get_or_insert(seq);
        if let Some(f) = &self.forward {
            f.offer(&line);
        }
        Ok(seq)
    }

    fn rotate(&mut self) -> Result<(), AuditError> {
        let active = self.active();
        let open = self.open.as_mut().expect("rotate needs an open file");
        let first = open.first_seq.unwrap_or(open.seq);
        let target = self.dir.join(rotated_name(first));
        if target.symlink_metadata().is_ok() {
            return Err(AuditError::RotationTargetExists {
                from: active,
                to: target,
            });
        }
        open.file.sync_all().map_err(io_err("sync", &active))?;
        fs::rename(&active, &target).map_err(io_err("rotate", &active))?;
        sync_dir(&self.dir);
        let file = open_append(&active)?;
        open.file = file;
        open.size = 0;
        open.first_seq = None;
        Ok(())
    }
}

fn sync_dir(dir: &Path) {
    // Best effort: makes the rename durable; a failure here loses nothing written.
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
}

fn open_append(path: &Path) -> Result<File, AuditError> {
    OpenOptions::new()
        .read(true)
        .append(true)
        .create(true)
        .mode(0o640)
        .open(path)
        .map_err(io_err("open", path))
}

fn open_active(dir: &Path) -> Result<OpenFile, AuditError> {
    DirBuilder::new()
        .recursive(true)
        .mode(0o750)
        .create(dir)
        .map_err(io_err("create directory", dir))?;
    let path = dir.join(ACTIVE_FILE);
    let file = open_append(&path)?;
    let meta = file.metadata().map_err(io_err("stat", &path))?;
    if !meta.is_file() {
        return Err(AuditError::Io {
            op: "open",
            path,
            source: io::Error::other("not a regular file"),
        });
    }
    let mut size = meta.len();
    let tail = read_tail(&file, size).map_err(io_err("read", &path))?;
    if tail.torn_bytes > 0 {
        // A line without its '\n' was never completely written (crash or full disk
        // mid-write); the call it described was denied. Cut it so the chain continues.
        size -= tail.torn_bytes;
        file.set_len(size)
            .map_err(io_err("truncate torn line of", &path))?;
        tracing::warn!(
            file = %path.display(),
            bytes = tail.torn_bytes,
            "audit file ended in an incomplete line; cut it"
        );
    }
    if let Some(last) = tail.last_line {
        let seq = line_seq(&last).map_err(|message| AuditError::CorruptTail {
            path: path.clone(),
            message,
        })?;
        let first = read_first_line(&file)
            .map_err(io_err("read", &path))?
            .map(|l| line_seq(&l))
            .transpose()
            .map_err(|message| AuditError::CorruptTail {
                path: path.clone(),
                message,
            })?;
        return Ok(OpenFile {
            file,
            size,
            seq,
            prev: link_hash(&last),
            first_seq: first,
        });
    }
    // Empty active file: continue from the newest rotated file, if any.
    let (seq, prev) = match newest_rotated(dir).map_err(io_err("list", dir))? {
        Some(rotated) => {
            let f = File::open(&rotated).map_err(io_err("open", &rotated))?;
            let len = f.metadata().map_err(io_err("stat", &rotated))?.len();
            let t = read_tail(&f, len).map_err(io_err("read", &rotated))?;
            match t.last_line {
                Some(last) => (
                    line_seq(&last).map_err(|message| AuditError::CorruptTail {
                        path: rotated.clone(),
                        message,
                    })?,
                    link_hash(&last),
                ),
                None => (0, ZERO_HASH.to_owned()),
            }
        }
        None => (0, ZERO_HASH.to_owned()),
    };
    Ok(OpenFile {
        file,
        size,
        seq,
        prev,
        first_seq: None,
    })
}

fn line_seq(line: &[u8]) -> Result<u64, String> {
    parse_line(line).map(|head| head.seq)
}

struct Tail {
    last_line: Option<Vec<u8>>,
    torn_bytes: u64,
}

/// Finds the last complete line (without its '\n') and how many bytes follow the last '\n'.
fn read_tail(file: &File, size: u64) -> io::Result<Tail> {
    const CHUNK: u64 = 64 * 1024;
    let mut end = size;
    let mut collected: Vec<u8> = Vec::new(); // bytes [end, size)
    let mut newlines: Vec<u64> = Vec::new(); // absolute offsets, descending
    while end > 0 && newlines.len() < 2 {
        let start = end.saturating_sub(CHUNK);
        let mut chunk = vec![0u8; (end - start) as usize];
        file.read_exact_at(&mut chunk, start)?;
        for (i, b) in chunk.iter().enumerate().rev() {
            if *b == b'\n' {
                newlines.push(start + i as u64);
                if newlines.len() == 2 {
                    break;
                }
            }
        }
        chunk.extend_from_slice(&collected);
        collected = chunk;
        end = start;
    }
    let base = end; // absolute offset of collected[0]
    let Some(&last_nl) = newlines.first() else {
        return Ok(Tail {
            last_line: None,
            torn_bytes: size,
        });
    };
    let torn_bytes = size - last_nl - 1;
    let line_start = newlines.get(1).map_or(0, |p| p + 1);
    let line = collected[(line_start - base) as usize..(last_nl - base) as usize].to_vec();
    Ok(Tail {
        last_line: Some(line),
        torn_bytes,
    })
}

fn read_first_line(file: &File) -> io::Result<Option<Vec<u8>>> {
    let mut line = Vec::new();
    let mut off = 0u64;
    let mut chunk = vec![0u8; 16 * 1024];
    loop {
        let n = file.read_at(&mut chunk, off)?;
        if n == 0 {
            return Ok(None);
        }
        if let Some(i) = chunk[..n].iter().position(|&b| b == b'\n') {
            line.extend_from_slice(&chunk[..i]);
            return Ok(Some(line));
        }
        line.extend_from_slice(&chunk[..n]);
        off += n as u64;
    }
}

/// `YYYY-MM-DDTHH:MM:SS.mmmZ` (RFC 3339, UTC, milliseconds). Times before 1970 print as
/// the epoch.
pub fn format_ts(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let ms = d.subsec_millis();
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let (y, m, day) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{day:02}T{:02}:{:02}:{:02}.{ms:03}Z",
        rem / 3600,
        (rem / 60) % 60,
        rem % 60
    )
}

/// Proleptic Gregorian (year, month, day) of a day count since 1970-01-01
/// (Howard Hinnant's `civil_from_days`).
pub fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097); // [0, 146096]
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365; // [0, 399]
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // [0, 365]
    let mp = (5 * doy + 2) / 153; // [0, 11]
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32; // [1, 31]
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32; // [1, 12]
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests;
