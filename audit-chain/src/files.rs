//! File names of the audit directory: the active `audit.jsonl`, and rotated files named
//! by the seq of their first line, `audit.<seq, 20 digits>.jsonl`, so that name order is
//! chain order.

use std::io;
use std::path::{Path, PathBuf};

/// Name of the file being written.
pub const ACTIVE_FILE: &str = "audit.jsonl";

/// Name of a rotated file whose first line has seq `first_seq`.
pub fn rotated_name(first_seq: u64) -> String {
    format!("audit.{first_seq:020}.jsonl")
}

/// The seq a rotated file's name says it starts at (`audit.00000000000000001001.jsonl`).
pub fn rotated_first_seq(path: &Path) -> Option<u64> {
    let name = path.file_name()?.to_str()?;
    let digits = name.strip_prefix("audit.")?.strip_suffix(".jsonl")?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// The audit files of a directory in chain order: rotated files by seq, then the active
/// file (each only if present).
pub fn audit_files_in(dir: &Path) -> io::Result<Vec<PathBuf>> {
    let mut rotated = Vec::new();
    let mut active = None;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let path = entry.path();
        if entry.file_name() == ACTIVE_FILE {
            active = Some(path);
        } else if let Some(seq) = rotated_first_seq(&path) {
            rotated.push((seq, path));
        }
    }
    rotated.sort();
    let mut files: Vec<PathBuf> = rotated.into_iter().map(|(_, p)| p).collect();
    files.extend(active);
    Ok(files)
}

/// The rotated file with the highest first seq, if any.
pub fn newest_rotated(dir: &Path) -> io::Result<Option<PathBuf>> {
    let files = audit_files_in(dir)?;
    Ok(files.into_iter().rfind(|p| rotated_first_seq(p).is_some()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotated_names_round_trip_and_sort_in_chain_order() {
        assert_eq!(rotated_name(1001), "audit.00000000000000001001.jsonl");
        assert_eq!(
            rotated_first_seq(Path::new("/x/audit.00000000000000001001.jsonl")),
            Some(1001)
        );
        assert_eq!(rotated_first_seq(Path::new("audit.jsonl")), None);
        assert_eq!(rotated_first_seq(Path::new("audit.x.jsonl")), None);
        assert_eq!(rotated_first_seq(Path::new("other.1.jsonl")), None);
    }
}
