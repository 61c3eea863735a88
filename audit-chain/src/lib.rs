//! The warden's audit trail as a format: one JSON object per line, chained and keyed, in
//! files rotated by size. The warden writes it, `clawctl audit verify` and the tests read
//! it, all through this crate, so there is one definition of a valid chain.
//!
//! A line is `{"seq":N,"ts":"…","event":"…",<fields>,"prev":"<hex>","mac":"<hex>"}`:
//! - `seq` counts from 1 across rotations;
//! - `prev` is the SHA-256 of the previous line's bytes (64 zeros on the first line):
//!   anyone can check the chain's *integrity*, but anyone who can write the file can
//!   also recompute it;
//! - `mac` is the HMAC-SHA-256, under the warden's key (`<state-dir>/audit.key`), of the
//!   line's bytes up to `,"mac":"`. Since those bytes hold `prev`, which hashes the whole
//!   previous line with its own `mac`, the MACs chain: only a holder of the key can
//!   edit, insert, drop or reorder a line without a MAC failing. That is *authenticity*.
//!
//! Lines written before the audit was keyed have no `mac`; a keyed segment may follow
//! them, never the other way round (see README.md, "Audit").
#![forbid(unsafe_code)]

mod files;
mod key;
mod line;
mod verify;

pub use files::{audit_files_in, newest_rotated, rotated_first_seq, rotated_name, ACTIVE_FILE};
pub use key::{AuditKey, KeyError, KEY_FILE};
pub use line::{
    bytes_value, link_hash, parse_line, render, split_mac, Event, EventKind, LineHead, ZERO_HASH,
};
pub use verify::{expand_paths, verify_files, Authenticity, Chain, Failure, Report};
