//! Verification of a chain over one or more files, read line by line (never whole),
//! reporting the first bad line as `FILE:LINE: what is wrong`.
//!
//! Integrity: each line's `seq` is one more than the previous line's and its `prev` is
//! the previous line's [`link_hash`]; the chain continues across rotated files.
//! Authenticity (with a key): each line's `mac` matches. A chain may start with lines
//! that have no `mac` (written before the audit was keyed); once a line has a `mac`,
//! every later one must.

use std::fmt;
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};

use crate::files::{audit_files_in, rotated_first_seq};
use crate::key::AuditKey;
use crate::line::{link_hash, parse_line, split_mac, LineHead, ZERO_HASH};

/// A verified chain.
#[derive(Debug, PartialEq, Eq)]
pub struct Report {
    /// Number of events (lines) checked.
    pub events: u64,
    /// Seq of the first line.
    pub first_seq: u64,
    /// Seq of the last line.
    pub last_seq: u64,
    /// Link hash of the last line: pin it to detect truncation later.
    pub head: String,
    /// Facts worth saying that are not errors ("chain starts at seq N").
    pub notes: Vec<String>,
    /// What was established beyond integrity.
    pub authenticity: Authenticity,
}

/// Whether the lines were shown to come from the holder of the key.
#[derive(Debug, PartialEq, Eq)]
pub enum Authenticity {
    /// No key was given: `macs` lines carry a MAC that was not checked.
    NotChecked { macs: u64 },
    /// Every MAC matched `key_id`; `keyed` is the seq range of lines with a MAC, and
    /// `unkeyed` the range before them that has none.
    Checked {
        key_id: String,
        keyed: (u64, u64),
        unkeyed: Option<(u64, u64)>,
    },
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "ok: {} events, seq {}..{}, head {}",
            self.events, self.first_seq, self.last_seq, self.head
        )?;
        match &self.authenticity {
            Authenticity::NotChecked { macs: 0 } => write!(
                f,
                "integrity only: the hash chain is intact, but no line carries a mac (written before the audit was keyed), so whoever could write the file could have recomputed it"
            ),
            Authenticity::NotChecked { macs } => write!(
                f,
                "integrity only: the hash chain is intact, but whoever can write the file can recompute it; pass --key FILE to check the mac of {macs} line(s)"
            ),
            Authenticity::Checked {
                key_id,
                keyed,
                unkeyed,
            } => {
                write!(
                    f,
                    "authentic: the mac of every line of seq {}..{} matches key {key_id}",
                    keyed.0, keyed.1
                )?;
                if let Some((a, b)) = unkeyed {
                    write!(
                        f,
                        "\nintegrity only: seq {a}..{b} carry no mac (written before the audit was keyed)"
                    )?;
                }
                Ok(())
            }
        }
    }
}

/// The first bad line (or a file that cannot be read).
#[derive(Debug, PartialEq, Eq)]
pub struct Failure {
    /// File as given (or joined from a given directory).
    pub file: String,
    /// 1-based line; `None` when the problem is the whole file.
    pub line: Option<u64>,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(line) => write!(f, "{}:{}: {}", self.file, line, self.message),
            None => write!(f, "{}: {}", self.file, self.message),
        }
    }
}

/// Replaces each directory by its audit files in chain order (rotated files, then
/// `audit.jsonl`); files stay as given.
pub fn expand_paths(paths: &[PathBuf]) -> Result<Vec<PathBuf>, Failure> {
    let mut files = Vec::new();
    for path in paths {
        if !path.is_dir() {
            files.push(path.clone());
            continue;
        }
        let found = audit_files_in(path).map_err(|e| Failure {
            file: path.display().to_string(),
            line: None,
            message: format!("cannot read directory: {e}"),
        })?;
        if found.is_empty() {
            let hint = if path.join("audit").is_dir() {
                format!("; did you mean {}?", path.join("audit").display())
            } else {
                String::new()
            };
            return Err(Failure {
                file: path.display().to_string(),
                line: None,
                message: format!(
                    "no audit files (audit.jsonl or audit.<seq>.jsonl) in this directory{hint}"
                ),
            });
        }
        files.extend(found);
    }
    Ok(files)
}

/// Verifies `files` in order as one chain; with `key`, also every line's MAC.
pub fn verify_files(files: &[PathBuf], key: Option<&AuditKey>) -> Result<Report, Failure> {
    let mut chain = Chain::new(key.cloned());
    for path in files {
        let name = path.display().to_string();
        let file = File::open(path).map_err(|e| Failure {
            file: name.clone(),
            line: None,
            message: format!("cannot open: {e}"),
        })?;
        chain.feed_reader(&name, BufReader::new(file), rotated_first_seq(path))?;
    }
    let what = files
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(", ");
    chain.finish(&what)
}

/// Where a line is, for messages.
#[derive(Clone, Debug)]
struct Place {
    file: String,
    line: u64,
}

/// The last accepted line.
#[derive(Clone, Debug)]
struct Link {
    place: Place,
    seq: u64,
    hash: String,
}

/// A `prev` mismatch between two lines; which of them was altered is settled by the
/// line after them (if it links to the second, the first was altered).
#[derive(Debug)]
struct Suspect {
    earlier: Link,
    later: Link,
}

/// Verification state carried across lines and files.
#[derive(Debug)]
pub struct Chain {
    key: Option<AuditKey>,
    last: Option<Link>,
    suspect: Option<Suspect>,
    first_seq: Option<u64>,
    events: u64,
    notes: Vec<String>,
    /// Seq range of lines without a MAC (only before the first line with one).
    unkeyed: Option<(u64, u64)>,
    /// Seq range of lines with a MAC.
    keyed: Option<(u64, u64)>,
    macs: u64,
}

impl Chain {
    /// A verifier; with a key it also checks every MAC.
    pub fn new(key: Option<AuditKey>) -> Chain {
        Chain {
            key,
            last: None,
            suspect: None,
            first_seq: None,
            events: 0,
            notes: Vec::new(),
            unkeyed: None,
            keyed: None,
            macs: 0,
        }
    }

    /// Feeds every line of one file. `named_first_seq` is the seq the file's name says
    /// its first line has (rotated files), checked when present.
    pub fn feed_reader(
        &mut self,
        file: &str,
        mut reader: impl BufRead,
        named_first_seq: Option<u64>,
    ) -> Result<(), Failure> {
        let mut buf = Vec::new();
        let mut line_no = 0u64;
        loop {
            buf.clear();
            let n = reader.read_until(b'\n', &mut buf).map_err(|e| Failure {
                file: file.to_owned(),
                line: Some(line_no + 1),
                message: format!("cannot read: {e}"),
            })?;
            if n == 0 {
                return Ok(());
            }
            line_no += 1;
            let terminated = buf.last() == Some(&b'\n');
            if terminated {
                buf.pop();
            }
            let place = Place {
                file: file.to_owned(),
                line: line_no,
            };
            let named = if line_no == 1 { named_first_seq } else { None };
            self.feed_line(&buf, terminated, place, named)?;
        }
    }

    fn feed_line(
        &mut self,
        line: &[u8],
        terminated: bool,
        place: Place,
        named_first_seq: Option<u64>,
    ) -> Result<(), Failure> {
        let hash = link_hash(line);
        let parsed = if terminated {
            parse_line(line)
        } else {
            Err("line is not terminated by a newline (truncated or partial write)".to_owned())
        };
        // A pending prev mismatch is settled by this line, whatever else is wrong with it.
        if let Some(suspect) = self.suspect.take() {
            let links = matches!(&parsed, Ok(LineHead { seq, prev, .. })
                if *prev == suspect.later.hash && *seq == suspect.later.seq.wrapping_add(1));
            return Err(if links {
                altered(&suspect, true)
            } else {
                prev_mismatch(&suspect)
            });
        }
        let fail = |message: String| Failure {
            file: place.file.clone(),
            line: Some(place.line),
            message,
        };
        let LineHead { seq, prev, mac } = parsed.map_err(fail)?;
        if let Some(named) = named_first_seq {
            if seq != named {
                return Err(fail(format!(
                    "seq is {seq}, but the file name says this file starts at seq {named}; its first lines were removed or the file was renamed"
                )));
            }
        }
        match &mac {
            Some(mac) => {
                if let Some(key) = &self.key {
                    let (covered, _) = split_mac(line).expect("parse_line checked the mac field");
                    if !key.verify(covered, mac) {
                        return Err(fail(format!(
                            "mac does not match key {}: this line was altered or rewritten, or the audit was written with another key",
                            key.id()
                        )));
                    }
                }
                self.macs += 1;
                self.keyed = Some(match self.keyed {
                    None => (seq, seq),
                    Some((a, _)) => (a, seq),
                });
            }
            None => {
                if let Some((first, _)) = self.keyed {
                    return Err(fail(format!(
                        "line has no mac, but the lines since seq {first} do: it was inserted or rewritten by someone without the key"
                    )));
                }
                self.unkeyed = Some(match self.unkeyed {
                    None => (seq, seq),
                    Some((a, _)) => (a, seq),
                });
            }
        }
        let this = Link {
            place: place.clone(),
            seq,
            hash,
        };
        match &self.last {
            None => {
                if prev == ZERO_HASH {
                    if seq != 1 {
                        return Err(fail(format!(
                            "prev is all zeros (the start of a chain), but seq is {seq}, not 1"
                        )));
                    }
                } else if seq <= 1 {
                    return Err(fail(format!(
                        "the first event (seq {seq}) must have a prev of 64 zeros"
                    )));
                } else {
                    self.notes.push(format!(
                        "{}: chain starts at seq {seq} (earlier events were not given, so the link to them is not checked)",
                        place.file
                    ));
                }
                self.first_seq = Some(seq);
            }
            Some(last) => {
                if Some(seq) != last.seq.checked_add(1) {
                    let gap = if seq > last.seq {
                        format!(
                            "{} event(s) missing here, or lines reordered",
                            seq - last.seq - 1
                        )
                    } else {
                        "lines reordered, repeated or inserted".to_owned()
                    };
                    return Err(fail(format!(
                        "seq is {seq}, expected {} after seq {} at {}: {gap}",
                        last.seq.wrapping_add(1),
                        last.seq,
                        where_is(&last.place, &place)
                    )));
                }
                if prev != last.hash {
                    self.suspect = Some(Suspect {
                        earlier: last.clone(),
                        later: this.clone(),
                    });
                }
            }
        }
        self.events += 1;
        self.last = Some(this);
        Ok(())
    }

    /// Ends verification; `what` names the inputs for the empty and unkeyed cases.
    pub fn finish(mut self, what: &str) -> Result<Report, Failure> {
        if let Some(suspect) = self.suspect.take() {
            return Err(altered(&suspect, false));
        }
        let (Some(last), Some(first_seq)) = (self.last, self.first_seq) else {
            return Err(Failure {
                file: what.to_owned(),
                line: None,
                message: "no audit events; a log the warden has written to is never empty"
                    .to_owned(),
            });
        };
        let authenticity = match (&self.key, self.keyed) {
            (None, _) => Authenticity::NotChecked { macs: self.macs },
            (Some(key), Some(keyed)) => Authenticity::Checked {
                key_id: key.id(),
                keyed,
                unkeyed: self.unkeyed,
            },
            (Some(_), None) => {
                return Err(Failure {
                    file: what.to_owned(),
                    line: None,
                    message: "no line carries a mac, so none can be authenticated with --key (written before the audit was keyed, or the macs were stripped)".to_owned(),
                })
            }
        };
        Ok(Report {
            events: self.events,
            first_seq,
            last_seq: last.seq,
            head: last.hash,
            notes: self.notes,
            authenticity,
        })
    }
}

/// "line 3" in the same file, "FILE:3" across files.
fn where_is(target: &Place, from: &Place) -> String {
    if target.file == from.file {
        format!("line {}", target.line)
    } else {
        format!("{}:{}", target.file, target.line)
    }
}

fn altered(s: &Suspect, confirmed: bool) -> Failure {
    let next = where_is(&s.later.place, &s.earlier.place);
    let message = if confirmed {
        format!(
            "line was altered: its SHA-256 does not match the prev recorded at {next}, and the line after that confirms {next} is intact"
        )
    } else {
        format!(
            "line does not match the prev recorded at {next} (the last event): one of the two was altered"
        )
    };
    Failure {
        file: s.earlier.place.file.clone(),
        line: Some(s.earlier.place.line),
        message,
    }
}

fn prev_mismatch(s: &Suspect) -> Failure {
    Failure {
        file: s.later.place.file.clone(),
        line: Some(s.later.place.line),
        message: format!(
            "prev does not match the SHA-256 of the previous line ({})",
            where_is(&s.earlier.place, &s.later.place)
        ),
    }
}

/// For callers that verify text they hold (tests): feeds `text` as the file `name`.
impl Chain {
    pub fn feed_text(&mut self, name: &str, text: &[u8]) -> Result<(), Failure> {
        self.feed_reader(name, text, rotated_first_seq(Path::new(name)))
    }
}

#[cfg(test)]
mod tests;
