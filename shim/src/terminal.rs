//! The caller's terminal while a command runs on a PTY of its own (see README, "What the
//! agent sees").
//!
//! The command's PTY does all terminal processing (echo, line editing, signals from
//! Ctrl-C, `\n` -> `\r\n`) with the caller's own settings, which the request carried. So
//! that nothing is processed twice, the shim takes the same processing off the caller's
//! terminal: input and output processing (raw) when its stdin is the terminal and
//! keystrokes go to the command; output processing only (`OPOST`) when only stdout or
//! stderr is, so Ctrl-C still reaches the whole foreground job as a signal.
//!
//! Several shims often share one terminal at once (`cat f | sort | head`, all shimmed, all
//! with stderr on it). Each one clears only the bits it needs that are still set, and
//! records which bits it cleared in two control-character slots Linux keeps for every
//! terminal but never uses (`c_cc[17]` and `c_cc[18]`, after `VEOL2`). A shim that starts
//! meanwhile describes the caller's settings with those bits set again, so its command's
//! PTY starts as the caller's terminal really is; and a shim gives back only the bits it
//! cleared itself, and only if nobody changed them since. Whatever order shims of one
//! pipeline end in, the terminal ends as the caller had it, plus what the commands
//! changed on their PTYs (`stty -echo` in the command stays): every setting a command
//! changed (the `Termios` frames) is applied when its call ends.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use clawrden_protocol::{Termios, NCCS};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

use crate::sys::term;

/// Which processing the shim takes off the caller's terminal.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Takeover {
    /// stdin is the terminal: no input or output processing, keystrokes are forwarded.
    Raw,
    /// Only stdout/stderr are the terminal: no output processing.
    Output,
}

/// A flag word of `struct termios`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Word {
    Input,
    Output,
    Local,
}

/// The processing bits a shim may clear, in the order of their bits in the record.
/// Clearing all of them passes every byte through unchanged in both directions (as
/// cfmakeraw does for a PTY; break, parity and character size do not apply to one).
const TAKEN: [(Word, libc::tcflag_t); 11] = [
    (Word::Input, libc::ISTRIP),
    (Word::Input, libc::INLCR),
    (Word::Input, libc::IGNCR),
    (Word::Input, libc::ICRNL),
    (Word::Input, libc::IXON),
    (Word::Output, libc::OPOST),
    (Word::Local, libc::ECHO),
    (Word::Local, libc::ECHONL),
    (Word::Local, libc::ICANON),
    (Word::Local, libc::ISIG),
    (Word::Local, libc::IEXTEN),
];
/// Record bits of [`Takeover::Output`].
const OUTPUT_ONLY: u16 = 1 << 5;
/// Record bits of [`Takeover::Raw`].
const ALL: u16 = (1 << TAKEN.len()) - 1;
/// The two `c_cc` slots that hold the record (Linux uses indices 0..=16).
const RECORD_AT: [usize; 2] = [17, 18];
/// High nibble of `c_cc[17]` when it holds a record.
const RECORD_MAGIC: u8 = 0xa0;

fn word(t: &Termios, w: Word) -> libc::tcflag_t {
    match w {
        Word::Input => t.iflag,
        Word::Output => t.oflag,
        Word::Local => t.lflag,
    }
}

fn word_mut(t: &mut Termios, w: Word) -> &mut libc::tcflag_t {
    match w {
        Word::Input => &mut t.iflag,
        Word::Output => &mut t.oflag,
        Word::Local => &mut t.lflag,
    }
}

fn cc_at(t: &Termios, i: usize) -> Option<u8> {
    t.cc.get(i).copied()
}

fn set_cc(t: &mut Termios, i: usize, v: u8) {
    if t.cc.len() <= i {
        t.cc.resize(i + 1, 0);
    }
    t.cc[i] = v;
}

/// The record of bits shims cleared on `t` (0 when there is none).
fn record(t: &Termios) -> u16 {
    match (cc_at(t, RECORD_AT[0]), cc_at(t, RECORD_AT[1])) {
        (Some(hi), Some(lo)) if hi & 0xf0 == RECORD_MAGIC => {
            (u16::from(hi & 0x0f) << 8 | u16::from(lo)) & ALL
        }
        _ => 0,
    }
}

fn set_record(t: &mut Termios, bits: u16) {
    let (hi, lo) = if bits == 0 {
        (0, 0)
    } else {
        (RECORD_MAGIC | (bits >> 8) as u8, bits as u8)
    };
    set_cc(t, RECORD_AT[0], hi);
    set_cc(t, RECORD_AT[1], lo);
}

fn is_set(t: &Termios, bit: usize) -> bool {
    let (w, mask) = TAKEN[bit];
    word(t, w) & mask != 0
}

fn set_bit(t: &mut Termios, bit: usize, on: bool) {
    let (w, mask) = TAKEN[bit];
    let v = word_mut(t, w);
    if on {
        *v |= mask;
    } else {
        *v &= !mask;
    }
}

/// The caller's settings as they are without any shim's takeover: every recorded bit set
/// again, no record.
pub fn as_the_caller_has_it(t: &Termios) -> Termios {
    let mut out = t.clone();
    let rec = record(t);
    for bit in 0..TAKEN.len() {
        if rec & (1 << bit) != 0 {
            set_bit(&mut out, bit, true);
        }
    }
    set_record(&mut out, 0);
    out
}

/// Clears the `wanted` bits that are set in `t` and records them. Returns the bits this
/// call cleared (which the caller now owns).
pub fn take(t: &mut Termios, wanted: u16) -> u16 {
    let mut taken = 0;
    for bit in 0..TAKEN.len() {
        if wanted & (1 << bit) != 0 && is_set(t, bit) {
            set_bit(t, bit, false);
            taken |= 1 << bit;
        }
    }
    let rec = record(t);
    set_record(t, rec | taken);
    taken
}

/// What the caller's terminal should become when a call ends: `current` with every bit
/// the shim `owned` given back (unless someone set it meanwhile) and taken off the record,
/// then every setting the command changed on its PTY (`command`, relative to `started`,
/// what the PTY started as) applied.
pub fn settle(
    current: &Termios,
    owned: u16,
    started: &Termios,
    command: Option<&Termios>,
) -> Termios {
    let mut out = current.clone();
    for bit in 0..TAKEN.len() {
        if owned & (1 << bit) != 0 {
            set_bit(&mut out, bit, true);
        }
    }
    let rec = record(&out) & !owned;
    if let Some(f) = command {
        for w in [Word::Input, Word::Output, Word::Local] {
            let changed = word(started, w) ^ word(f, w);
            let v = word_mut(&mut out, w);
            *v = (*v & !changed) | (word(f, w) & changed);
        }
        let changed = started.cflag ^ f.cflag;
        out.cflag = (out.cflag & !changed) | (f.cflag & changed);
        for i in (0..NCCS).filter(|i| !RECORD_AT.contains(i)) {
            if let Some(v) = cc_at(f, i) {
                if cc_at(started, i) != Some(v) {
                    set_cc(&mut out, i, v);
                }
            }
        }
    }
    // Bits still recorded by other shims stay cleared (they give them back themselves).
    for bit in 0..TAKEN.len() {
        if rec & (1 << bit) != 0 {
            set_bit(&mut out, bit, false);
        }
    }
    set_record(&mut out, rec);
    out
}

/// The caller's terminal during one call.
pub struct CallerTerminal {
    /// The terminal descriptor whose settings the shim changes (0, 1 or 2).
    fd: u8,
    /// The standard descriptor the command's terminal output is written to, unless `out`.
    output: u8,
    /// A descriptor of its own for that output (stdin's terminal reopened for writing).
    out: Option<OwnedFd>,
    /// The settings the request carried (what the command's PTY started as).
    started: Termios,
    /// Record bits this shim cleared and gives back.
    owned: u16,
    /// The latest settings of the command's PTY, from `Termios` frames.
    command: Option<Termios>,
    /// The shim may change the terminal (it is in its foreground). A background shim
    /// changes nothing: the terminal belongs to the foreground job.
    foreground: bool,
}

impl CallerTerminal {
    /// The caller's terminal on `fd` (whose settings were `started` when the request was
    /// built); the command's output is written to `out`, else to standard descriptor
    /// `output`. Unless `foreground`, its settings are never touched.
    pub fn new(
        fd: u8,
        output: u8,
        out: Option<OwnedFd>,
        started: Termios,
        foreground: bool,
    ) -> CallerTerminal {
        CallerTerminal {
            fd,
            output,
            out,
            started,
            owned: 0,
            command: None,
            foreground,
        }
    }

    fn borrowed(&self) -> BorrowedFd<'static> {
        crate::sys::std_fd(self.fd)
    }

    /// The descriptor the command's terminal output is written to.
    pub fn output_fd(&self) -> BorrowedFd<'_> {
        match &self.out {
            Some(fd) => fd.as_fd(),
            None => crate::sys::std_fd(self.output),
        }
    }

    /// With stdin on a terminal in canonical mode, reads what was typed ahead before the
    /// shim goes raw: complete lines, and end-of-file marks (Ctrl-D, or `script` finding
    /// its own input at its end). A mark is what the terminal keeps for VEOF; read after
    /// raw mode is on, it would come out as a NUL byte and reach the command as one. It is
    /// forwarded as the VEOF character instead, which the command's PTY (in the same
    /// canonical mode) turns back into end of file.
    pub fn drain_typed_ahead(&self) -> Vec<u8> {
        let mut out = Vec::new();
        if self.fd != 0 || !self.foreground {
            return out;
        }
        let Ok(current) = term::get_termios(self.borrowed()) else {
            return out;
        };
        if current.lflag & libc::ICANON == 0 {
            return out;
        }
        let veof = cc_at(&current, libc::VEOF).unwrap_or(0);
        let mut buf = [0u8; 4096];
        // Bounded: a terminal that keeps producing complete lines cannot hold the call.
        for _ in 0..64 {
            let mut fds = [PollFd::new(self.borrowed(), PollFlags::POLLIN)];
            let readable = matches!(poll(&mut fds, PollTimeout::ZERO), Ok(1))
                && fds[0].revents().is_some_and(|r| r == PollFlags::POLLIN);
            if !readable {
                break;
            }
            match nix::unistd::read(0, &mut buf) {
                Ok(0) if veof != 0 => out.push(veof),
                Ok(0) => {}
                Ok(n) => out.extend_from_slice(&buf[..n]),
                Err(nix::errno::Errno::EINTR) => {}
                Err(_) => break,
            }
        }
        out
    }

    /// Takes the processing `how` says off the caller's terminal (the bits still set).
    pub fn take_over(&mut self, how: Takeover) -> nix::Result<()> {
        if !self.foreground {
            return Ok(());
        }
        let current = term::get_termios(self.borrowed()).map_err(errno)?;
        let mut wanted = current.clone();
        let bits = match how {
            Takeover::Raw => ALL,
            Takeover::Output => OUTPUT_ONLY,
        };
        let taken = take(&mut wanted, bits);
        if wanted != current {
            term::set_termios(self.borrowed(), &wanted).map_err(errno)?;
        }
        self.owned |= taken;
        Ok(())
    }

    /// Before writing the command's terminal output: if output processing is on again
    /// (a shim that had cleared it ended meanwhile), takes it off again, so the bytes the
    /// PTY already processed are not processed twice.
    pub fn keep_output_raw(&mut self) {
        if !self.foreground {
            return;
        }
        let Ok(current) = term::get_termios(self.borrowed()) else {
            return;
        };
        if current.oflag & libc::OPOST == 0 {
            return;
        }
        let mut wanted = current;
        let taken = take(&mut wanted, OUTPUT_ONLY);
        if term::set_termios(self.borrowed(), &wanted).is_ok() {
            self.owned |= taken;
        }
    }

    /// Records the command's latest terminal settings.
    pub fn command_settings(&mut self, settings: Termios) {
        self.command = Some(settings);
    }

    /// Leaves the caller's terminal as the command left its PTY (see [`settle`]). Nothing
    /// useful can be done if this fails (terminal gone): the shim is ending.
    pub fn settle(&mut self) {
        if !self.foreground || (self.owned == 0 && self.command.is_none()) {
            return;
        }
        let Ok(current) = term::get_termios(self.borrowed()) else {
            return;
        };
        let target = settle(&current, self.owned, &self.started, self.command.as_ref());
        if target != current {
            let _ = term::set_termios(self.borrowed(), &target);
        }
        self.owned = 0;
        self.command = None;
    }
}

impl Drop for CallerTerminal {
    fn drop(&mut self) {
        self.settle();
    }
}

fn errno(e: std::io::Error) -> nix::errno::Errno {
    nix::errno::Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A cooked terminal as `stty sane` leaves it.
    fn cooked() -> Termios {
        let mut cc = vec![0u8; NCCS];
        cc[libc::VINTR] = 3;
        cc[libc::VEOF] = 4;
        cc[libc::VMIN] = 1;
        Termios {
            iflag: libc::ICRNL | libc::IXON | libc::BRKINT,
            oflag: libc::OPOST | libc::ONLCR,
            cflag: libc::CS8 | libc::CREAD,
            lflag: libc::ISIG | libc::ICANON | libc::ECHO | libc::ECHOE | libc::IEXTEN,
            cc,
        }
    }

    fn taken(t: &Termios, bits: u16) -> (Termios, u16) {
        let mut t = t.clone();
        let owned = take(&mut t, bits);
        (t, owned)
    }

    #[test]
    fn raw_takes_all_processing_and_records_what_was_set() {
        let (raw, owned) = taken(&cooked(), ALL);
        assert_eq!(raw.iflag, libc::BRKINT);
        assert_eq!(raw.oflag, libc::ONLCR);
        assert_eq!(raw.lflag, libc::ECHOE);
        assert_eq!(raw.cflag, cooked().cflag);
        assert_ne!(record(&raw), 0);
        assert_eq!(record(&raw), owned);
        assert_eq!(as_the_caller_has_it(&raw), cooked());
    }

    #[test]
    fn a_call_that_changed_nothing_gives_back_exactly_what_was_there() {
        let t0 = cooked();
        let (raw, owned) = taken(&t0, ALL);
        assert_eq!(settle(&raw, owned, &t0, None), t0);
        assert_eq!(settle(&raw, owned, &t0, Some(&t0)), t0);
    }

    #[test]
    fn what_the_command_changed_on_its_pty_ends_on_the_callers_terminal() {
        let t0 = cooked();
        let (raw, owned) = taken(&t0, ALL);
        // `stty raw` in the command.
        let mut f = t0.clone();
        take(&mut f, ALL);
        set_record(&mut f, 0);
        let got = settle(&raw, owned, &t0, Some(&f));
        assert_eq!(got, f);
        // `stty -echo intr ^X`: only those change.
        let mut f = t0.clone();
        f.lflag &= !libc::ECHO;
        f.cc[libc::VINTR] = 0x18;
        let got = settle(&raw, owned, &t0, Some(&f));
        assert_eq!(got, f);
    }

    #[test]
    fn a_shim_starting_meanwhile_sees_the_callers_settings() {
        let t0 = cooked();
        // `cat f | sort`: cat's shim (stdin is the terminal) went raw first...
        let (now, _) = taken(&t0, ALL);
        // ... sort's shim describes the terminal as the caller has it.
        assert_eq!(as_the_caller_has_it(&now), t0);
        // And after a second takeover (OPOST was already off: nothing more recorded).
        let (now2, owned2) = taken(&now, OUTPUT_ONLY);
        assert_eq!(owned2, 0);
        assert_eq!(as_the_caller_has_it(&now2), t0);
    }

    #[test]
    fn two_shims_of_one_pipeline_end_sane_in_either_order() {
        let t0 = cooked();
        // A (stdin is the terminal) goes raw, then B (stdout only) finds OPOST off.
        let (after_a, a) = taken(&t0, ALL);
        let (after_b, b) = taken(&after_a, OUTPUT_ONLY);
        let b_started = as_the_caller_has_it(&after_b);
        // A ends first: everything but what B... B owns nothing; all comes back.
        let end_a = settle(&after_b, a, &t0, None);
        assert_eq!(end_a, t0);
        assert_eq!(settle(&end_a, b, &b_started, None), t0);

        // Other order: B clears OPOST first, then A goes raw on top of that.
        let (after_b, b) = taken(&t0, OUTPUT_ONLY);
        let (after_a, a) = taken(&after_b, ALL);
        assert_eq!(a & OUTPUT_ONLY, 0, "OPOST is B's");
        // B ends first: gives OPOST back... but A's output must stay unprocessed, so A
        // takes it over again before its next write.
        let end_b = settle(&after_a, b, &t0, None);
        assert_ne!(end_b.oflag & libc::OPOST, 0);
        assert_eq!(as_the_caller_has_it(&end_b), t0);
        let (now, more) = taken(&end_b, OUTPUT_ONLY);
        assert_eq!(settle(&now, a | more, &t0, None), t0);
    }

    #[test]
    fn a_bit_someone_else_changed_meanwhile_is_left_to_them() {
        let t0 = cooked();
        let (raw, owned) = taken(&t0, ALL);
        // Meanwhile another shim recorded and cleared nothing new, but a command's
        // settings changed ISIG off on purpose: the command's change wins.
        let mut f = t0.clone();
        f.lflag &= !libc::ISIG;
        let got = settle(&raw, owned, &t0, Some(&f));
        assert_eq!(got.lflag & libc::ISIG, 0);
        assert_eq!(record(&got), 0);
    }

    #[test]
    fn garbage_in_the_spare_slots_is_not_a_record() {
        let mut t = cooked();
        t.cc[17] = 0x12;
        t.cc[18] = 0xff;
        assert_eq!(record(&t), 0);
        assert_eq!(as_the_caller_has_it(&t).cc[17], 0);
    }
}
