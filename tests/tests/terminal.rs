//! The shim on a terminal: the command gets a pseudo-terminal of the caller's size, and
//! window resizes reach it. The caller's terminal is a pty opened by the test.

use std::fs::File;
use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use clawrden_e2e::{Call, TestWarden, Watchdog, RUN_DEADLINE};

fn warden() -> TestWarden {
    TestWarden::builder().start()
}

/// Runs a shim tool with stdin, stdout and stderr on a fresh pseudo-terminal of the given
/// size; returns everything written to the terminal, with '\r' removed.
fn run_on_pty(w: &TestWarden, tool: &str, args: &[&str], rows: u16, cols: u16) -> (String, i32) {
    let size = nix::pty::Winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    let pty = nix::pty::openpty(Some(&size), None).expect("openpty");
    let mut cmd = w.shim_command(&Call::new(tool).args(args).env("TERM", "xterm"));
    cmd.stdin(Stdio::from(pty.slave.try_clone().unwrap()))
        .stdout(Stdio::from(pty.slave.try_clone().unwrap()))
        .stderr(Stdio::from(pty.slave));
    let mut child = cmd.spawn().expect("start shim on a pty");
    drop(cmd); // closes our copies of the slave, so the master sees EOF/EIO at the end
    let dog = Watchdog::new(child.id(), RUN_DEADLINE);
    let mut master = File::from(pty.master);
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let mut all = Vec::new();
        let mut buf = [0u8; 4096];
        // EIO once every slave fd is closed: that is the end of the output.
        while let Ok(n) = master.read(&mut buf) {
            if n == 0 {
                break;
            }
            all.extend_from_slice(&buf[..n]);
        }
        let _ = tx.send(all);
    });
    let status = child.wait().unwrap();
    assert!(!dog.finish(), "{tool} on a pty hung");
    let bytes = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("the pty was still held open 60 s after the shim exited");
    let text = String::from_utf8_lossy(&bytes).replace('\r', "");
    (
        text,
        status
            .code()
            .unwrap_or_else(|| panic!("{tool} on a pty: {status:?}")),
    )
}

#[test]
fn on_a_terminal_tty_prints_a_pts_path_and_stty_reports_the_window_size() {
    let w = warden();
    let (text, code) = run_on_pty(&w, "tty", &[], 37, 91);
    assert_eq!(code, 0, "tty through the shim on a pty: {text:?}");
    let path = text
        .strip_suffix('\n')
        .unwrap_or_else(|| panic!("tty output is not one line: {text:?}"));
    let n = path
        .strip_prefix("/dev/pts/")
        .unwrap_or_else(|| panic!("tty through the shim did not print a /dev/pts path: {text:?}"));
    assert!(
        !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()),
        "tty printed {text:?}"
    );

    let (text, code) = run_on_pty(&w, "stty", &["size"], 37, 91);
    assert_eq!(code, 0, "stty size through the shim on a pty: {text:?}");
    assert_eq!(text, "37 91\n", "stty size through the shim");
}

/// Reads chunks from a pty master in the background.
fn pty_reader(master: std::os::fd::OwnedFd) -> mpsc::Receiver<Vec<u8>> {
    let mut master = File::from(master);
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = master.read(&mut buf) {
            if n == 0 || tx.send(buf[..n].to_vec()).is_err() {
                break;
            }
        }
    });
    rx
}

/// Accumulates pty output (without '\r') until it contains `want`.
fn read_pty_until(rx: &mpsc::Receiver<Vec<u8>>, seen: &mut String, want: &str) {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !seen.contains(want) {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match rx.recv_timeout(left) {
            Ok(chunk) => seen.push_str(&String::from_utf8_lossy(&chunk).replace('\r', "")),
            Err(e) => panic!("waiting for {want:?} on the pty ({e}); so far: {seen:?}"),
        }
    }
}

#[test]
fn window_resize_on_the_callers_terminal_reaches_the_command() {
    use nix::sys::signal::{kill, Signal};
    use nix::unistd::Pid;
    let w = warden();
    let size = nix::pty::Winsize {
        ws_row: 37,
        ws_col: 91,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    let pty = nix::pty::openpty(Some(&size), None).expect("openpty");
    let slave_path = nix::unistd::ttyname(&pty.slave).expect("ttyname of the pty slave");
    let mut cmd = w.shim_command(
        &Call::new("sh")
            .arg("-c")
            // The trap shows the command saw the resize before it gets its line.
            .arg("trap 'echo winch' WINCH; stty size; until read x; do :; done; stty size")
            .env("TERM", "xterm"),
    );
    cmd.stdin(Stdio::from(pty.slave.try_clone().unwrap()))
        .stdout(Stdio::from(pty.slave.try_clone().unwrap()))
        .stderr(Stdio::from(pty.slave));
    let mut child = cmd.spawn().expect("start shim on a pty");
    drop(cmd);
    let dog = Watchdog::new(child.id(), RUN_DEADLINE);
    let mut master_w = File::from(pty.master.try_clone().unwrap());
    let rx = pty_reader(pty.master);
    let mut seen = String::new();
    read_pty_until(&rx, &mut seen, "37 91\n");

    // Resize the caller's terminal, and tell the shim as the kernel would tell a
    // foreground process group.
    let out = Command::new(clawrden_e2e::system_tool("stty"))
        .arg("-F")
        .arg(&slave_path)
        .args(["rows", "50", "cols", "120"])
        .output()
        .unwrap();
    assert!(out.status.success(), "stty -F: {out:?}");
    kill(Pid::from_raw(child.id() as i32), Signal::SIGWINCH).unwrap();
    read_pty_until(&rx, &mut seen, "winch\n");
    master_w.write_all(b"go\r").unwrap();
    read_pty_until(&rx, &mut seen, "50 120\n");
    let status = child.wait().unwrap();
    assert!(!dog.finish(), "shim on a pty hung");
    assert_eq!(status.code(), Some(0), "output: {seen:?}");
}
