//! Running a command directly or through the shim and capturing what it did.

use std::ffi::{OsStr, OsString};
use std::fmt;
use std::io::{Read, Write};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use sha2::{Digest, Sha256};

use crate::bins::binaries;

/// Where the commands under test (and the warden) look up programs.
pub const SYSTEM_PATH: &str = "/usr/bin:/bin";
/// `HOME` given to every command under test.
pub const BASE_HOME: &str = "/";
/// A single command under test that takes longer than this has hung: it is killed and the
/// test fails saying so. Generous: the machine is shared and slow.
pub const RUN_DEADLINE: Duration = Duration::from_secs(180);

/// One command to run: a tool name (a shim symlink name, or a program found in
/// [`SYSTEM_PATH`] when run directly), its arguments, stdin bytes, cwd and extra env.
#[derive(Debug, Clone)]
pub struct Call {
    pub tool: String,
    pub args: Vec<OsString>,
    pub stdin: Vec<u8>,
    pub cwd: Option<PathBuf>,
    pub env: Vec<(OsString, OsString)>,
    /// Run the process as this uid (and the same gid) instead of the test's own.
    pub uid: Option<u32>,
}

impl Call {
    pub fn new(tool: &str) -> Call {
        Call {
            tool: tool.to_string(),
            args: Vec::new(),
            stdin: Vec::new(),
            cwd: None,
            env: Vec::new(),
            uid: None,
        }
    }

    pub fn arg(mut self, a: impl AsRef<OsStr>) -> Call {
        self.args.push(a.as_ref().to_os_string());
        self
    }

    pub fn args<I, S>(mut self, args: I) -> Call
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.args
            .extend(args.into_iter().map(|a| a.as_ref().to_os_string()));
        self
    }

    pub fn stdin(mut self, bytes: impl Into<Vec<u8>>) -> Call {
        self.stdin = bytes.into();
        self
    }

    pub fn cwd(mut self, dir: impl Into<PathBuf>) -> Call {
        self.cwd = Some(dir.into());
        self
    }

    pub fn env(mut self, k: impl AsRef<OsStr>, v: impl AsRef<OsStr>) -> Call {
        self.env
            .push((k.as_ref().to_os_string(), v.as_ref().to_os_string()));
        self
    }

    /// Runs the process as `uid` (gid the same number); the tests must run as root.
    pub fn as_uid(mut self, uid: u32) -> Call {
        self.uid = Some(uid);
        self
    }

    /// Applies args, a clean base environment plus this call's env, cwd and uid to `cmd`.
    pub fn configure_into(&self, cmd: &mut Command) {
        if let Some(uid) = self.uid {
            use std::os::unix::process::CommandExt;
            cmd.uid(uid).gid(uid);
        }
        cmd.args(&self.args)
            .env_clear()
            .env("PATH", SYSTEM_PATH)
            .env("HOME", BASE_HOME);
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        if let Some(dir) = &self.cwd {
            cmd.current_dir(dir);
        }
    }
}

/// The absolute path of `name` in [`SYSTEM_PATH`]; panics if it is not installed.
pub fn system_tool(name: &str) -> PathBuf {
    for dir in SYSTEM_PATH.split(':') {
        let p = Path::new(dir).join(name);
        if p.is_file() {
            return p;
        }
    }
    panic!("{name} is not installed in {SYSTEM_PATH}; the end-to-end tests need it")
}

/// `call` run directly, without Clawrden: the reference behaviour.
pub fn direct_command(call: &Call) -> Command {
    let mut cmd = Command::new(system_tool(&call.tool));
    call.configure_into(&mut cmd);
    cmd
}

/// What a finished command did.
pub struct Output {
    pub status: ExitStatus,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

impl Output {
    pub fn stdout_str(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }
    pub fn stderr_str(&self) -> String {
        String::from_utf8_lossy(&self.stderr).into_owned()
    }
}

fn excerpt(bytes: &[u8]) -> String {
    const MAX: usize = 2000;
    let s = String::from_utf8_lossy(&bytes[..bytes.len().min(MAX)]).into_owned();
    if bytes.len() > MAX {
        format!("{s:?}... ({} bytes)", bytes.len())
    } else {
        format!("{s:?}")
    }
}

impl fmt::Debug for Output {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Output {{ status: {:?}, stdout: {}, stderr: {} }}",
            self.status,
            excerpt(&self.stdout),
            excerpt(&self.stderr)
        )
    }
}

/// Kills a child that outlives [`RUN_DEADLINE`], so a hang fails the test instead of
/// blocking the suite forever.
pub struct Watchdog {
    done: Option<mpsc::Sender<()>>,
    fired: Arc<AtomicBool>,
    thread: Option<thread::JoinHandle<()>>,
}

impl Watchdog {
    pub fn new(pid: u32, deadline: Duration) -> Watchdog {
        let (tx, rx) = mpsc::channel::<()>();
        let fired = Arc::new(AtomicBool::new(false));
        let flag = fired.clone();
        let thread = thread::spawn(move || {
            if let Err(mpsc::RecvTimeoutError::Timeout) = rx.recv_timeout(deadline) {
                flag.store(true, Ordering::SeqCst);
                let _ = kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
            }
        });
        Watchdog {
            done: Some(tx),
            fired,
            thread: Some(thread),
        }
    }

    /// Stops the watchdog; true if it had to kill the child.
    pub fn finish(mut self) -> bool {
        self.stop();
        self.fired.load(Ordering::SeqCst)
    }

    fn stop(&mut self) {
        drop(self.done.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        self.stop();
    }
}

fn spawn_piped(mut cmd: Command, what: &str) -> Child {
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd.spawn()
        .unwrap_or_else(|e| panic!("cannot start {what} ({cmd:?}): {e}"))
}

fn feed_stdin(child: &mut Child, stdin: Vec<u8>) -> thread::JoinHandle<()> {
    let mut pipe = child.stdin.take().expect("stdin is piped");
    thread::spawn(move || {
        // The command may exit without reading everything: a broken pipe is its business.
        let _ = pipe.write_all(&stdin);
    })
}

/// Runs `cmd` to completion with `stdin` on a pipe, collecting stdout and stderr.
pub fn run_command(cmd: Command, stdin: &[u8], what: &str) -> Output {
    let mut child = spawn_piped(cmd, what);
    let dog = Watchdog::new(child.id(), RUN_DEADLINE);
    let feeder = feed_stdin(&mut child, stdin.to_vec());
    let out = child
        .wait_with_output()
        .unwrap_or_else(|e| panic!("waiting for {what}: {e}"));
    let _ = feeder.join();
    if dog.finish() {
        panic!(
            "{what} hung for more than {RUN_DEADLINE:?} and was killed; partial output: {:?}",
            Output {
                status: out.status,
                stdout: out.stdout,
                stderr: out.stderr
            }
        );
    }
    Output {
        status: out.status,
        stdout: out.stdout,
        stderr: out.stderr,
    }
}

/// Length and SHA-256 of a stream too large to keep in memory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamDigest {
    pub len: u64,
    pub sha256: String,
}

/// Runs `cmd` (stdin empty) hashing its stdout on the fly; returns the digest, stderr and status.
pub fn run_hashing(cmd: Command, what: &str) -> (StreamDigest, Vec<u8>, ExitStatus) {
    let mut child = spawn_piped(cmd, what);
    drop(child.stdin.take());
    let dog = Watchdog::new(child.id(), RUN_DEADLINE);
    let mut out = child.stdout.take().expect("stdout is piped");
    let mut err = child.stderr.take().expect("stderr is piped");
    let err_thread = thread::spawn(move || {
        let mut v = Vec::new();
        let _ = err.read_to_end(&mut v);
        v
    });
    let mut hasher = Sha256::new();
    let mut len = 0u64;
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        match out.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                hasher.update(&buf[..n]);
                len += n as u64;
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => panic!("reading stdout of {what}: {e}"),
        }
    }
    let status = child
        .wait()
        .unwrap_or_else(|e| panic!("waiting for {what}: {e}"));
    let stderr = err_thread.join().expect("stderr reader");
    if dog.finish() {
        panic!("{what} hung for more than {RUN_DEADLINE:?} and was killed");
    }
    let digest = StreamDigest {
        len,
        sha256: crate::sha256_hex(&hasher.finalize()),
    };
    (digest, stderr, status)
}

/// Asserts that the command behaved the same through the shim as directly: exit status
/// (code or signal), stdout and stderr, byte for byte.
pub fn assert_same_output(direct: &Output, shim: &Output, what: &str) {
    assert_eq!(
        (shim.status.code(), shim.status.signal()),
        (direct.status.code(), direct.status.signal()),
        "{what}: exit status differs (left: shim, right: direct)\n shim: {shim:?}\n direct: {direct:?}"
    );
    assert!(
        shim.stdout == direct.stdout,
        "{what}: stdout differs\n shim:   {}\n direct: {}",
        excerpt(&shim.stdout),
        excerpt(&direct.stdout)
    );
    assert!(
        shim.stderr == direct.stderr,
        "{what}: stderr differs\n shim:   {}\n direct: {}",
        excerpt(&shim.stderr),
        excerpt(&direct.stderr)
    );
}

/// Runs `clawctl ARGS` with a clean environment.
pub fn clawctl<I, S>(args: I) -> Output
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let mut cmd = Command::new(&binaries().clawctl);
    cmd.args(args)
        .env_clear()
        .env("PATH", SYSTEM_PATH)
        .env("HOME", BASE_HOME);
    run_command(cmd, b"", "clawctl")
}
