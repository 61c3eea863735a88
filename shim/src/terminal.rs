//! The caller's terminal while a command runs on a PTY of its own (see README, "What the
//! agent sees").
//!
//! The command's PTY does all terminal processing (echo, line editing, signals from
//! Ctrl-C, `\n` -> `\r\n`) with the caller's own settings, which the request carried. So
//! that nothing is processed twice, the shim switches off the same processing on the
//! caller's terminal: all of it (raw mode) when its stdin is the terminal and keystrokes
//! go to the command; output processing only (`OPOST`) when only stdout or stderr is the
//! terminal, so Ctrl-C still reaches the whole foreground job as a signal.
//!
//! When the call ends, the caller's terminal is left as the command left its PTY: the
//! bits the shim changed go back (unless someone else changed them meanwhile), then every
//! setting the command changed on its PTY (the `Termios` frames) is applied. Changes are
//! bit by bit rather than "restore the saved settings", so two shims of one pipeline
//! (`cat file | sort | head` with all three shimmed) cannot leave each other's changes on
//! the terminal, whatever order they end in.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use clawrden_protocol::{Termios, NCCS};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

use crate::sys::term;

/// Which processing the shim takes off the caller's terminal.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Takeover {
    /// stdin is the terminal: raw mode, keystrokes are forwarded.
    Raw,
    /// Only stdout/stderr are the terminal: output processing only.
    Output,
}

/// Which bits and control characters the shim owns on the caller's terminal, with the
/// values they had before it changed them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Owned {
    /// Masks of the owned bits, per flag word.
    pub mask: Termios,
    /// Which `c_cc` entries are owned (bit i: entry i).
    pub cc_mask: u32,
    /// The values before the shim's change (for the owned bits and entries).
    pub before: Termios,
    /// The values the shim set.
    pub applied: Termios,
}

fn words(t: &Termios) -> [u32; 4] {
    [t.iflag, t.oflag, t.cflag, t.lflag]
}

fn set_words(t: &mut Termios, w: [u32; 4]) {
    t.iflag = w[0];
    t.oflag = w[1];
    t.cflag = w[2];
    t.lflag = w[3];
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

/// `t` in raw mode, as cfmakeraw(3) makes it.
pub fn raw(t: &Termios) -> Termios {
    let mut r = t.clone();
    r.iflag &= !(libc::IGNBRK
        | libc::BRKINT
        | libc::PARMRK
        | libc::ISTRIP
        | libc::INLCR
        | libc::IGNCR
        | libc::ICRNL
        | libc::IXON);
    r.oflag &= !libc::OPOST;
    r.lflag &= !(libc::ECHO | libc::ECHONL | libc::ICANON | libc::ISIG | libc::IEXTEN);
    r.cflag &= !(libc::CSIZE | libc::PARENB);
    r.cflag |= libc::CS8;
    set_cc(&mut r, libc::VMIN, 1);
    set_cc(&mut r, libc::VTIME, 0);
    r
}

/// `t` without output processing.
pub fn without_output_processing(t: &Termios) -> Termios {
    let mut r = t.clone();
    r.oflag &= !libc::OPOST;
    r
}

impl Owned {
    /// Ownership of the difference between `before` and `applied`.
    pub fn of_change(before: &Termios, applied: &Termios) -> Owned {
        let b = words(before);
        let a = words(applied);
        let mut mask = Termios {
            iflag: 0,
            oflag: 0,
            cflag: 0,
            lflag: 0,
            cc: Vec::new(),
        };
        set_words(
            &mut mask,
            [b[0] ^ a[0], b[1] ^ a[1], b[2] ^ a[2], b[3] ^ a[3]],
        );
        let mut cc_mask = 0u32;
        for i in 0..NCCS {
            if cc_at(before, i) != cc_at(applied, i) {
                cc_mask |= 1 << i;
            }
        }
        Owned {
            mask,
            cc_mask,
            before: before.clone(),
            applied: applied.clone(),
        }
    }

    /// Takes `OPOST` over (again): `current` has it set, the shim clears it and from now
    /// on owns it, with "set" as the value to give back.
    pub fn take_output_processing(&mut self, current: &Termios) {
        self.mask.oflag |= libc::OPOST;
        self.before.oflag |= current.oflag & libc::OPOST;
        self.applied.oflag &= !libc::OPOST;
    }
}

/// What the caller's terminal should become when the call ends: `current` with every bit
/// the shim owns and that still has the value the shim set given back, then every setting
/// the command changed on its PTY (`command`, relative to `started`, what the PTY started
/// as) applied.
pub fn settle(
    current: &Termios,
    owned: Option<&Owned>,
    started: &Termios,
    command: Option<&Termios>,
) -> Termios {
    let mut out = current.clone();
    let mut w = words(&out);
    if let Some(o) = owned {
        let (mask, before, applied) = (words(&o.mask), words(&o.before), words(&o.applied));
        for f in 0..4 {
            // Owned bits someone else has changed since are theirs now.
            let still_ours = mask[f] & !(w[f] ^ applied[f]);
            w[f] = (w[f] & !still_ours) | (before[f] & still_ours);
        }
        set_words(&mut out, w);
        for i in 0..NCCS {
            if o.cc_mask & (1 << i) != 0 && cc_at(&out, i) == cc_at(&o.applied, i) {
                if let Some(v) = cc_at(&o.before, i) {
                    set_cc(&mut out, i, v);
                }
            }
        }
    }
    if let Some(c) = command {
        let (s, f) = (words(started), words(c));
        let mut w = words(&out);
        for i in 0..4 {
            let changed = s[i] ^ f[i];
            w[i] = (w[i] & !changed) | (f[i] & changed);
        }
        set_words(&mut out, w);
        for i in 0..NCCS {
            if let Some(v) = cc_at(c, i) {
                if cc_at(started, i) != Some(v) {
                    set_cc(&mut out, i, v);
                }
            }
        }
    }
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
    owned: Option<Owned>,
    /// The latest settings of the command's PTY, from `Termios` frames.
    command: Option<Termios>,
}

impl CallerTerminal {
    /// The caller's terminal on `fd` (whose settings were `started` when the request was
    /// built); the command's output is written to `out`, else to standard descriptor
    /// `output`.
    pub fn new(fd: u8, output: u8, out: Option<OwnedFd>, started: Termios) -> CallerTerminal {
        CallerTerminal {
            fd,
            output,
            out,
            started,
            owned: None,
            command: None,
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
        if self.fd != 0 || self.started.lflag & libc::ICANON == 0 {
            return out;
        }
        let veof = cc_at(&self.started, libc::VEOF).unwrap_or(0);
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

    /// Takes the processing `how` says off the caller's terminal.
    pub fn take_over(&mut self, how: Takeover) -> nix::Result<()> {
        let current = term::get_termios(self.borrowed()).map_err(errno)?;
        let wanted = match how {
            Takeover::Raw => raw(&current),
            Takeover::Output => without_output_processing(&current),
        };
        if wanted != current {
            term::set_termios(self.borrowed(), &wanted).map_err(errno)?;
        }
        self.owned = Some(Owned::of_change(&current, &wanted));
        Ok(())
    }

    /// Before writing the command's terminal output: if someone switched output
    /// processing back on meanwhile (another shim ending), switch it off again, so the
    /// bytes the PTY already processed are not processed twice.
    pub fn keep_output_raw(&mut self) {
        let Ok(current) = term::get_termios(self.borrowed()) else {
            return;
        };
        if current.oflag & libc::OPOST == 0 {
            return;
        }
        if term::set_termios(self.borrowed(), &without_output_processing(&current)).is_ok() {
            match &mut self.owned {
                Some(o) => o.take_output_processing(&current),
                None => {
                    self.owned = Some(Owned::of_change(
                        &current,
                        &without_output_processing(&current),
                    ))
                }
            }
        }
    }

    /// Records the command's latest terminal settings.
    pub fn command_settings(&mut self, settings: Termios) {
        self.command = Some(settings);
    }

    /// Leaves the caller's terminal as the command left its PTY (see [`settle`]). Nothing
    /// useful can be done if this fails (terminal gone): the shim is ending.
    pub fn settle(&mut self) {
        if self.owned.is_none() && self.command.is_none() {
            return;
        }
        let Ok(current) = term::get_termios(self.borrowed()) else {
            return;
        };
        let target = settle(
            &current,
            self.owned.as_ref(),
            &self.started,
            self.command.as_ref(),
        );
        if target != current {
            let _ = term::set_termios(self.borrowed(), &target);
        }
        self.owned = None;
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

    #[test]
    fn raw_mode_is_cfmakeraw() {
        let r = raw(&cooked());
        assert_eq!(r.iflag, 0);
        assert_eq!(r.oflag, libc::ONLCR);
        assert_eq!(r.lflag, libc::ECHOE);
        assert_eq!(r.cflag, libc::CS8 | libc::CREAD);
        assert_eq!((r.cc[libc::VMIN], r.cc[libc::VTIME]), (1, 0));
    }

    #[test]
    fn a_call_that_changed_nothing_gives_back_exactly_what_was_there() {
        let t0 = cooked();
        let owned = Owned::of_change(&t0, &raw(&t0));
        assert_eq!(settle(&raw(&t0), Some(&owned), &t0, None), t0);
        assert_eq!(settle(&raw(&t0), Some(&owned), &t0, Some(&t0)), t0);
    }

    #[test]
    fn what_the_command_changed_on_its_pty_ends_on_the_callers_terminal() {
        let t0 = cooked();
        let owned = Owned::of_change(&t0, &raw(&t0));
        // `stty raw` in the command.
        let got = settle(&raw(&t0), Some(&owned), &t0, Some(&raw(&t0)));
        assert_eq!(got, raw(&t0));
        // `stty -echo intr ^X`: only those change.
        let mut f = t0.clone();
        f.lflag &= !libc::ECHO;
        f.cc[libc::VINTR] = 0x18;
        let got = settle(&raw(&t0), Some(&owned), &t0, Some(&f));
        assert_eq!(got, f);
    }

    #[test]
    fn two_shims_of_one_pipeline_end_sane_in_either_order() {
        let t0 = cooked();
        // A (stdin is the terminal) goes raw first; B (stdout only) then finds OPOST off.
        let a = Owned::of_change(&t0, &raw(&t0));
        let seen_by_b = raw(&t0);
        let b = Owned::of_change(&seen_by_b, &without_output_processing(&seen_by_b));
        let after_a = settle(&raw(&t0), Some(&a), &t0, None);
        assert_eq!(after_a, t0);
        // B ends later: OPOST was never its own, so nothing of A's is undone or redone.
        assert_eq!(settle(&after_a, Some(&b), &seen_by_b, None), t0);

        // Other order: B clears OPOST first, then A goes raw on top of that.
        let b = Owned::of_change(&t0, &without_output_processing(&t0));
        let seen_by_a = without_output_processing(&t0);
        let a = Owned::of_change(&seen_by_a, &raw(&seen_by_a));
        // B ends first: gives OPOST back (A keeps its output raw by taking it over).
        let after_b = settle(&raw(&t0), Some(&b), &t0, None);
        assert_eq!(after_b.oflag & libc::OPOST, libc::OPOST);
        let mut a = a;
        a.take_output_processing(&after_b);
        let now = without_output_processing(&after_b);
        // A ends: its raw bits and the OPOST it took over go back.
        assert_eq!(settle(&now, Some(&a), &seen_by_a, None), t0);
    }

    #[test]
    fn a_bit_someone_else_changed_meanwhile_is_left_alone() {
        let t0 = cooked();
        let owned = Owned::of_change(&t0, &raw(&t0));
        // Meanwhile someone switched ISIG back on: it stays on; the rest comes back.
        let mut current = raw(&t0);
        current.lflag |= libc::ISIG;
        let got = settle(&current, Some(&owned), &t0, None);
        assert_eq!(got, t0);
        // Someone set VMIN to 5: theirs.
        let mut current = raw(&t0);
        current.cc[libc::VMIN] = 5;
        let got = settle(&current, Some(&owned), &t0, None);
        assert_eq!(got.cc[libc::VMIN], 5);
    }
}
