//! `clawctl audit verify`: check the hash chain of the warden's audit log.
//!
//! Files are read line by line (never whole). Each line must be a JSON object whose
//! `seq` is one more than the previous line's and whose `prev` is the SHA-256 of the
//! previous line's bytes (without the '\n'); the chain continues across rotated files.

use std::fmt;
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Subcommand;
use sha2::{Digest, Sha256};

/// `clawctl audit ...`
#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Verify the hash chain of audit files (a DIR means its rotated files, then audit.jsonl)
    Verify {
        /// Audit files or directories, oldest first
        #[arg(required = true, value_name = "FILE|DIR")]
        paths: Vec<PathBuf>,
    },
}

/// Runs an audit subcommand.
pub fn run(command: AuditCommand) -> anyhow::Result<ExitCode> {
    match command {
        AuditCommand::Verify { paths } => match verify_paths(&paths) {
            Ok(report) => {
                for note in &report.notes {
                    println!("{note}");
                }
                println!("{report}");
                Ok(ExitCode::SUCCESS)
            }
            Err(failure) => {
                eprintln!("{failure}");
                Ok(ExitCode::FAILURE)
            }
        },
    }
}

/// A verified chain.
#[derive(Debug, PartialEq, Eq)]
pub struct Report {
    /// Number of events (lines) checked.
    pub events: u64,
    /// Seq of the first line.
    pub first_seq: u64,
    /// Seq of the last line.
    pub last_seq: u64,
    /// SHA-256 of the last line: pin it to detect truncation later.
    pub head: String,
    /// Facts worth saying that are not errors ("chain starts at seq N").
    pub notes: Vec<String>,
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "ok: {} events, seq {}..{}, head {}",
            self.events, self.first_seq, self.last_seq, self.head
        )
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

/// Expands directories and verifies the files in order.
pub fn verify_paths(paths: &[PathBuf]) -> Result<Report, Failure> {
    let mut files = Vec::new();
    for path in paths {
        if path.is_dir() {
            files.extend(audit_files_in(path)?);
        } else {
            files.push(path.clone());
        }
    }
    let mut chain = Chain::default();
    for path in &files {
        let name = path.display().to_string();
        let file = File::open(path).map_err(|e| Failure {
            file: name.clone(),
            line: None,
            message: format!("cannot open: {e}"),
        })?;
        let first_seq = rotated_first_seq(path);
        chain.feed_reader(&name, BufReader::new(file), first_seq)?;
    }
    let what = files
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(", ");
    chain.finish(&what)
}

/// `audit.<seq>.jsonl` files sorted by seq, then `audit.jsonl`.
fn audit_files_in(dir: &Path) -> Result<Vec<PathBuf>, Failure> {
    let fail = |message: String| Failure {
        file: dir.display().to_string(),
        line: None,
        message,
    };
    let entries =
        std::fs::read_dir(dir).map_err(|e| fail(format!("cannot read directory: {e}")))?;
    let mut rotated = Vec::new();
    let mut current = None;
    for entry in entries {
        let entry = entry.map_err(|e| fail(format!("cannot read directory: {e}")))?;
        let path = entry.path();
        if entry.file_name() == "audit.jsonl" {
            current = Some(path);
        } else if let Some(seq) = rotated_first_seq(&path) {
            rotated.push((seq, path));
        }
    }
    rotated.sort();
    let mut files: Vec<PathBuf> = rotated.into_iter().map(|(_, p)| p).collect();
    files.extend(current);
    if files.is_empty() {
        let hint = if dir.join("audit").is_dir() {
            format!("; did you mean {}?", dir.join("audit").display())
        } else {
            String::new()
        };
        return Err(fail(format!(
            "no audit files (audit.jsonl or audit.<seq>.jsonl) in this directory{hint}"
        )));
    }
    Ok(files)
}

/// The seq a rotated file's name says it starts at (`audit.00000000000000001001.jsonl`).
fn rotated_first_seq(path: &Path) -> Option<u64> {
    let name = path.file_name()?.to_str()?;
    let digits = name.strip_prefix("audit.")?.strip_suffix(".jsonl")?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
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
#[derive(Default)]
pub struct Chain {
    last: Option<Link>,
    suspect: Option<Suspect>,
    first_seq: Option<u64>,
    events: u64,
    notes: Vec<String>,
}

const ZERO_PREV: &str = "0000000000000000000000000000000000000000000000000000000000000000";

impl Chain {
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
            let expect = if line_no == 1 { named_first_seq } else { None };
            self.feed_line(place, &buf, terminated, expect)?;
        }
    }

    fn feed_line(
        &mut self,
        place: Place,
        line: &[u8],
        terminated: bool,
        named_first_seq: Option<u64>,
    ) -> Result<(), Failure> {
        let parsed = parse_line(line, terminated);
        let hash = hex(&Sha256::digest(line));
        if let Some(suspect) = self.suspect.take() {
            // Settle which of the two earlier lines was altered before anything else.
            let links = matches!(&parsed, Ok((seq, prev))
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
        let (seq, prev) = parsed.map_err(fail)?;
        if let Some(named) = named_first_seq {
            if seq != named {
                return Err(fail(format!(
                    "seq is {seq}, but the file name says this file starts at seq {named}; its first lines were removed or the file was renamed"
                )));
            }
        }
        let this = Link {
            place: place.clone(),
            seq,
            hash,
        };
        match &self.last {
            None => {
                if prev == ZERO_PREV {
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

    /// Ends verification; `what` names the inputs for the empty case.
    pub fn finish(mut self, what: &str) -> Result<Report, Failure> {
        if let Some(suspect) = self.suspect.take() {
            return Err(altered(&suspect, false));
        }
        match (self.last, self.first_seq) {
            (Some(last), Some(first_seq)) => Ok(Report {
                events: self.events,
                first_seq,
                last_seq: last.seq,
                head: last.hash,
                notes: self.notes,
            }),
            _ => Err(Failure {
                file: what.to_owned(),
                line: None,
                message: "no audit events; a log the warden has written to is never empty"
                    .to_owned(),
            }),
        }
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

/// (seq, prev) of one line, or what is wrong with it.
fn parse_line(line: &[u8], terminated: bool) -> Result<(u64, String), String> {
    if !terminated {
        return Err("line is not terminated by a newline (truncated or partial write)".to_owned());
    }
    let value: serde_json::Value =
        serde_json::from_slice(line).map_err(|e| format!("not valid JSON: {e}"))?;
    let object = value
        .as_object()
        .ok_or_else(|| "not a JSON object".to_owned())?;
    let seq = match object.get("seq") {
        None => return Err("missing `seq`".to_owned()),
        Some(v) => v
            .as_u64()
            .ok_or_else(|| format!("`seq` is {v}, not an unsigned integer"))?,
    };
    let prev = match object.get("prev") {
        None => return Err("missing `prev`".to_owned()),
        Some(v) => v
            .as_str()
            .filter(|s| s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')))
            .ok_or_else(|| format!("`prev` is {v}, not 64 lowercase hex digits"))?,
    };
    Ok((seq, prev.to_owned()))
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for &b in bytes {
        out.push(DIGITS[usize::from(b >> 4)] as char);
        out.push(DIGITS[usize::from(b & 0xf)] as char);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    /// `n` chained lines starting at `first_seq` after `prev`; returns lines (no '\n').
    fn chain_lines(first_seq: u64, n: u64, prev: &str) -> Vec<String> {
        let mut prev = prev.to_owned();
        let mut out = Vec::new();
        for seq in first_seq..first_seq + n {
            let line = format!(
                r#"{{"seq":{seq},"ts":"2026-11-24T09:01:02.345Z","event":"request","request_id":"r{seq}","prev":"{prev}"}}"#
            );
            prev = hex(&Sha256::digest(line.as_bytes()));
            out.push(line);
        }
        out
    }

    fn text(lines: &[String]) -> String {
        lines.iter().map(|l| format!("{l}\n")).collect()
    }

    fn verify(files: &[(&str, String)]) -> Result<Report, Failure> {
        let mut chain = Chain::default();
        for (name, body) in files {
            chain.feed_reader(
                name,
                Cursor::new(body.as_bytes()),
                rotated_first_seq(Path::new(name)),
            )?;
        }
        chain.finish("input")
    }

    fn failure(files: &[(&str, String)]) -> String {
        verify(files)
            .expect_err("verification should fail")
            .to_string()
    }

    #[test]
    fn good_chain_reports_count_range_and_head() {
        let lines = chain_lines(1, 5, ZERO_PREV);
        let head = hex(&Sha256::digest(lines[4].as_bytes()));
        let report = verify(&[("audit.jsonl", text(&lines))]).unwrap();
        assert_eq!(
            report.to_string(),
            format!("ok: 5 events, seq 1..5, head {head}")
        );
        assert!(report.notes.is_empty());
    }

    #[test]
    fn edited_line_is_reported_at_that_line() {
        let mut lines = chain_lines(1, 5, ZERO_PREV);
        lines[2] = lines[2].replace("\"request\"", "\"exit\"");
        assert_eq!(
            failure(&[("a.jsonl", text(&lines))]),
            "a.jsonl:3: line was altered: its SHA-256 does not match the prev recorded at line 4, and the line after that confirms line 4 is intact"
        );
    }

    #[test]
    fn edited_prev_field_is_reported_at_the_line_holding_it() {
        let mut lines = chain_lines(1, 5, ZERO_PREV);
        let bogus = "1".repeat(64);
        let original_prev = hex(&Sha256::digest(lines[1].as_bytes()));
        lines[2] = lines[2].replace(&original_prev, &bogus);
        assert_eq!(
            failure(&[("a.jsonl", text(&lines))]),
            "a.jsonl:3: prev does not match the SHA-256 of the previous line (line 2)"
        );
    }

    #[test]
    fn edited_next_to_last_line_cannot_say_which_of_two() {
        let mut lines = chain_lines(1, 3, ZERO_PREV);
        lines[1] = lines[1].replace("r2", "r9");
        assert_eq!(
            failure(&[("a.jsonl", text(&lines))]),
            "a.jsonl:2: line does not match the prev recorded at line 3 (the last event): one of the two was altered"
        );
    }

    #[test]
    fn removed_line_is_a_seq_gap() {
        let mut lines = chain_lines(1, 5, ZERO_PREV);
        lines.remove(2);
        assert_eq!(
            failure(&[("a.jsonl", text(&lines))]),
            "a.jsonl:3: seq is 4, expected 3 after seq 2 at line 2: 1 event(s) missing here, or lines reordered"
        );
    }

    #[test]
    fn reordered_pair_is_reported_at_the_first_swapped_line() {
        let mut lines = chain_lines(1, 5, ZERO_PREV);
        lines.swap(1, 2);
        assert_eq!(
            failure(&[("a.jsonl", text(&lines))]),
            "a.jsonl:2: seq is 3, expected 2 after seq 1 at line 1: 1 event(s) missing here, or lines reordered"
        );
        let mut lines = chain_lines(1, 5, ZERO_PREV);
        lines.swap(3, 4);
        assert_eq!(
            failure(&[("a.jsonl", text(&lines))]),
            "a.jsonl:4: seq is 5, expected 4 after seq 3 at line 3: 1 event(s) missing here, or lines reordered"
        );
    }

    #[test]
    fn duplicated_line_is_reported() {
        let mut lines = chain_lines(1, 3, ZERO_PREV);
        lines.insert(2, lines[1].clone());
        assert_eq!(
            failure(&[("a.jsonl", text(&lines))]),
            "a.jsonl:3: seq is 2, expected 3 after seq 2 at line 2: lines reordered, repeated or inserted"
        );
    }

    #[test]
    fn truncated_last_line_is_reported() {
        let lines = chain_lines(1, 3, ZERO_PREV);
        let mut body = text(&lines);
        body.truncate(body.len() - 10);
        assert_eq!(
            failure(&[("a.jsonl", body)]),
            "a.jsonl:3: line is not terminated by a newline (truncated or partial write)"
        );
    }

    #[test]
    fn bad_json_and_missing_fields_are_reported() {
        let lines = chain_lines(1, 2, ZERO_PREV);
        let cases = [
            (
                "{\"seq\":3,",
                "a.jsonl:3: not valid JSON: EOF while parsing a value at line 1 column 9",
            ),
            ("[1,2]", "a.jsonl:3: not a JSON object"),
            ("{\"prev\":\"x\"}", "a.jsonl:3: missing `seq`"),
            (
                "{\"seq\":-3}",
                "a.jsonl:3: `seq` is -3, not an unsigned integer",
            ),
            ("{\"seq\":3}", "a.jsonl:3: missing `prev`"),
            (
                "{\"seq\":3,\"prev\":\"ABC\"}",
                "a.jsonl:3: `prev` is \"ABC\", not 64 lowercase hex digits",
            ),
        ];
        for (bad, want) in cases {
            let body = format!("{}{bad}\n", text(&lines));
            assert_eq!(failure(&[("a.jsonl", body)]), want);
        }
    }

    #[test]
    fn first_line_must_start_a_chain_or_is_noted_as_a_later_start() {
        let bad_zero = chain_lines(2, 2, ZERO_PREV);
        assert_eq!(
            failure(&[("a.jsonl", text(&bad_zero))]),
            "a.jsonl:1: prev is all zeros (the start of a chain), but seq is 2, not 1"
        );
        let bad_one = chain_lines(1, 2, &"a".repeat(64));
        assert_eq!(
            failure(&[("a.jsonl", text(&bad_one))]),
            format!("a.jsonl:1: the first event (seq 1) must have a prev of 64 zeros")
        );
        let all = chain_lines(1, 6, ZERO_PREV);
        let later = text(&all[3..]);
        let report = verify(&[("audit.jsonl", later)]).unwrap();
        assert_eq!(
            report.notes,
            ["audit.jsonl: chain starts at seq 4 (earlier events were not given, so the link to them is not checked)"]
        );
        assert_eq!(
            (report.events, report.first_seq, report.last_seq),
            (3, 4, 6)
        );
    }

    #[test]
    fn chain_continues_across_rotated_files() {
        let all = chain_lines(1, 6, ZERO_PREV);
        let report = verify(&[
            ("audit.00000000000000000001.jsonl", text(&all[..4])),
            ("audit.jsonl", text(&all[4..])),
        ])
        .unwrap();
        assert_eq!(
            (report.events, report.first_seq, report.last_seq),
            (6, 1, 6)
        );

        let mut edited = all.clone();
        edited[3] = edited[3].replace("r4", "rX");
        assert_eq!(
            failure(&[
                ("audit.00000000000000000001.jsonl", text(&edited[..4])),
                ("audit.jsonl", text(&edited[4..])),
            ]),
            "audit.00000000000000000001.jsonl:4: line was altered: its SHA-256 does not match the prev recorded at audit.jsonl:1, and the line after that confirms audit.jsonl:1 is intact"
        );
    }

    #[test]
    fn rotated_file_must_start_at_the_seq_in_its_name() {
        let all = chain_lines(1, 6, ZERO_PREV);
        assert_eq!(
            failure(&[("audit.00000000000000000003.jsonl", text(&all[3..]))]),
            "audit.00000000000000000003.jsonl:1: seq is 4, but the file name says this file starts at seq 3; its first lines were removed or the file was renamed"
        );
    }

    #[test]
    fn missing_middle_file_breaks_the_chain() {
        let all = chain_lines(1, 6, ZERO_PREV);
        assert_eq!(
            failure(&[
                ("audit.00000000000000000001.jsonl", text(&all[..2])),
                ("audit.jsonl", text(&all[4..])),
            ]),
            "audit.jsonl:1: seq is 5, expected 3 after seq 2 at audit.00000000000000000001.jsonl:2: 2 event(s) missing here, or lines reordered"
        );
    }

    #[test]
    fn empty_input_is_not_ok() {
        assert_eq!(
            failure(&[("audit.jsonl", String::new())]),
            "input: no audit events; a log the warden has written to is never empty"
        );
    }

    #[test]
    fn rotated_names_parse() {
        assert_eq!(
            rotated_first_seq(Path::new("/x/audit.00000000000000001001.jsonl")),
            Some(1001)
        );
        assert_eq!(rotated_first_seq(Path::new("audit.jsonl")), None);
        assert_eq!(rotated_first_seq(Path::new("audit.x.jsonl")), None);
        assert_eq!(rotated_first_seq(Path::new("other.1.jsonl")), None);
    }
}
