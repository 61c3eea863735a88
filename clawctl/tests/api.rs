//! Runs the built `clawctl` against a real `clawrden-warden` serving its HTTP API on
//! 127.0.0.1, with real shims making the calls. The warden and shim binaries come from
//! the target directory this test lives in: build them first with
//! `cargo build --workspace --bins`.

use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::symlink;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;

/// How long anything in these tests may take before the test fails.
const DEADLINE: Duration = Duration::from_secs(20);

const POLICY: &str = "version: 1
default_action: deny
default_executor: local
approval_timeout: 2m
rules:
  - {name: ask-cat, command: cat, action: ask}
  - {name: allow-true, command: 'true', action: allow}
";

/// The directory holding the workspace's binaries (target/debug).
fn bin_dir() -> PathBuf {
    // target/debug/deps/api-HASH -> target/debug
    let exe = std::env::current_exe().expect("test executable path");
    exe.parent()
        .and_then(Path::parent)
        .expect("test executable lives in target/<profile>/deps")
        .to_path_buf()
}

fn required_bin(name: &str) -> PathBuf {
    let p = bin_dir().join(name);
    assert!(
        p.is_file(),
        "{} is missing; build it first: cargo build --workspace --bins",
        p.display()
    );
    p
}

/// A fresh directory for one test.
fn scratch(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join("clawctl-api")
        .join(name);
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap();
    dir
}

/// Polls `probe` until `Some` (bounded): for a socket or file to appear.
fn poll<T>(what: &str, mut probe: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = probe() {
            return v;
        }
        assert!(start.elapsed() < DEADLINE, "gave up waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A running warden with the API on a free loopback port. Killed on drop.
struct Warden {
    dir: PathBuf,
    url: String,
    socket: PathBuf,
    token_file: PathBuf,
    bin: PathBuf,
    child: Child,
}

impl Warden {
    fn start(name: &str) -> Warden {
        let warden = required_bin("clawrden-warden");
        let shim = required_bin("clawrden-shim");
        let dir = scratch(name);
        let state = dir.join("state");
        let bin = dir.join("bin");
        fs::create_dir_all(&state).unwrap();
        fs::create_dir_all(&bin).unwrap();
        for tool in ["cat", "true"] {
            symlink(&shim, bin.join(tool)).unwrap();
        }
        fs::write(dir.join("policy.yaml"), POLICY).unwrap();
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let socket = dir.join("warden.sock");
        let child = Command::new(&warden)
            .arg("--policy")
            .arg(dir.join("policy.yaml"))
            .arg("--state-dir")
            .arg(&state)
            .arg("--socket")
            .arg(&socket)
            .arg("--exec-helper")
            .arg(&shim)
            .args(["--executor", "local", "--log-format", "json"])
            // The test's own user calls and runs the commands (as any user, root included).
            .arg("--allow-run-as-warden")
            .arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            .env_clear()
            .env("PATH", "/usr/local/bin:/usr/bin:/bin")
            .stdin(Stdio::null())
            .stdout(fs::File::create(dir.join("warden.stdout")).unwrap())
            .stderr(fs::File::create(dir.join("warden.stderr")).unwrap())
            .spawn()
            .expect("start clawrden-warden");
        let mut w = Warden {
            url: format!("http://127.0.0.1:{port}"),
            token_file: state.join("admin.token"),
            socket,
            bin,
            dir,
            child,
        };
        w.wait_ready(port);
        w
    }

    fn wait_ready(&mut self, port: u16) {
        let start = Instant::now();
        loop {
            let token = fs::read_to_string(&self.token_file).unwrap_or_default();
            if UnixStream::connect(&self.socket).is_ok()
                && TcpStream::connect(("127.0.0.1", port)).is_ok()
                && token.ends_with('\n')
            {
                return;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "the warden exited with {status} while starting:\n{}",
                    self.log()
                );
            }
            assert!(
                start.elapsed() < DEADLINE,
                "the warden did not start within {DEADLINE:?}:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn log(&self) -> String {
        fs::read_to_string(self.dir.join("warden.stderr")).unwrap_or_default()
    }

    /// clawctl with --url and --token-file of this warden's admin.
    fn clawctl(&self, args: &[&str]) -> Output {
        let out = self.clawctl_cmd(args).output().expect("run clawctl");
        if out.status.code() != Some(0) {
            eprintln!(
                "clawctl {args:?} exited {:?}; stderr: {}",
                out.status.code(),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        out
    }

    fn clawctl_cmd(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_clawctl"));
        cmd.arg("--url")
            .arg(&self.url)
            .arg("--token-file")
            .arg(&self.token_file)
            .args(args)
            .env_remove("CLAWRDEN_TOKEN")
            .env_remove("CLAWRDEN_TOKEN_FILE")
            .env_remove("CLAWRDEN_URL");
        cmd
    }

    fn json(&self, args: &[&str]) -> Value {
        let mut all = vec!["--json"];
        all.extend_from_slice(args);
        let out = self.clawctl(&all);
        assert_eq!(out.status.code(), Some(0), "clawctl {args:?}");
        serde_json::from_slice(&out.stdout).expect("clawctl --json prints JSON")
    }

    /// Starts a shimmed call; it is decided by this warden.
    fn shim(&self, tool: &str, args: &[&str]) -> Running {
        Running(
            Command::new(self.bin.join(tool))
                .args(args)
                .current_dir(&self.dir)
                .env("CLAWRDEN_SOCKET", &self.socket)
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("start the shim"),
        )
    }

    /// Starts `cat FILE` through the shim (an `ask`) and returns it with its approval id.
    fn pending_cat(&self, content: &str) -> (Running, String, Lines) {
        let file = self.dir.join("note.txt");
        fs::write(&file, content).unwrap();
        let mut child = self.shim("cat", &[file.to_str().unwrap()]);
        let mut lines = Lines::spawn(child.stderr.take().unwrap());
        let line = lines.until("the shim's `waiting for approval` line", |l| {
            l.starts_with("clawrden: waiting for approval ")
        });
        let id = line["clawrden: waiting for approval ".len()..]
            .split(':')
            .next()
            .unwrap()
            .to_owned();
        (child, id, lines)
    }
}

impl Drop for Warden {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A child process killed (and reaped) when the test ends, even by a panic, so no
/// clawctl or shim outlives its test.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl std::ops::Deref for Running {
    type Target = Child;
    fn deref(&self) -> &Child {
        &self.0
    }
}

impl std::ops::DerefMut for Running {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.0
    }
}

/// Lines of a child's output, read on a thread so waits are bounded.
struct Lines {
    rx: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Lines {
    fn spawn<R: Read + Send + 'static>(r: R) -> Lines {
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(r).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Lines {
            rx,
            seen: Vec::new(),
        }
    }

    fn stdout(c: &mut Child) -> Lines {
        let out: ChildStdout = c.stdout.take().unwrap();
        Lines::spawn(out)
    }

    /// The next line matching `pred`, within the deadline.
    fn until(&mut self, what: &str, pred: impl Fn(&str) -> bool) -> String {
        let end = Instant::now() + DEADLINE;
        loop {
            let left = end.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if pred(&line) {
                        return line;
                    }
                }
                Err(_) => panic!("no line with {what}; saw: {:#?}", self.seen),
            }
        }
    }

    /// Everything after the output closes.
    fn rest(&mut self) -> Vec<String> {
        let end = Instant::now() + DEADLINE;
        let mut out = Vec::new();
        loop {
            let left = end.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(left) {
                Ok(l) => out.push(l),
                Err(mpsc::RecvTimeoutError::Disconnected) => return out,
                Err(mpsc::RecvTimeoutError::Timeout) => panic!("output did not close"),
            }
        }
    }
}

/// Waits for a child (bounded) and returns its exit code.
fn wait_code(child: &mut Child) -> Option<i32> {
    let status = poll("the child to exit", || child.try_wait().unwrap());
    status.code()
}

fn stdout(o: &Output) -> String {
    String::from_utf8(o.stdout.clone()).unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8(o.stderr.clone()).unwrap()
}

#[test]
fn status_shows_the_warden_and_json_is_the_api_view() {
    let w = Warden::start("status");
    let out = w.clawctl(&["status"]);
    assert_eq!(out.status.code(), Some(0));
    let text = stdout(&out);
    assert!(text.starts_with("warden    "), "{text}");
    assert!(text.contains("\nlockdown  off\n"), "{text}");
    assert!(
        text.contains("\nqueue     0 pending, 0 running\n"),
        "{text}"
    );
    let v = w.json(&["status"]);
    assert_eq!(v["lockdown"]["on"], Value::Bool(false));
    assert_eq!(v["queue"]["pending"], 0);
    assert_eq!(v["prisoners"][0]["name"], "default");
}

#[test]
fn approve_runs_the_pending_call_and_a_second_approve_conflicts() {
    let w = Warden::start("approve");
    let (mut shim, id, _lines) = w.pending_cat("approved content\n");

    let queue = w.clawctl(&["queue"]);
    assert_eq!(queue.status.code(), Some(0));
    let q = stdout(&queue);
    assert!(q.starts_with("ID "), "{q}");
    assert!(
        q.contains(&id) && q.contains("ask-cat") && q.contains("note.txt"),
        "{q}"
    );
    let qj = w.json(&["queue"]);
    assert_eq!(qj["requests"][0]["id"], Value::String(id.clone()));

    let out = w.clawctl(&["approve", &id, "--note", "looks fine"]);
    assert_eq!(out.status.code(), Some(0));
    assert!(
        stdout(&out).starts_with(&format!("approved {id} (default): ")),
        "{}",
        stdout(&out)
    );

    let mut shim_out = String::new();
    shim.stdout
        .take()
        .unwrap()
        .read_to_string(&mut shim_out)
        .unwrap();
    assert_eq!(wait_code(&mut shim), Some(0));
    assert_eq!(shim_out, "approved content\n");

    let again = w.clawctl(&["approve", &id]);
    assert_eq!(again.status.code(), Some(5), "{}", stderr(&again));
    assert!(stderr(&again).starts_with(&format!("clawctl: approve {id}: the warden answered 409 ")));

    let hist = w.json(&["history", "--command", "cat"]);
    let reqs = hist["requests"].as_array().unwrap();
    assert_eq!(reqs.len(), 1, "{hist:#}");
    assert_eq!(reqs[0]["id"], Value::String(id.clone()));
    assert_eq!(reqs[0]["state"], "done");
    assert_eq!(reqs[0]["exit_code"], 0);
    assert_eq!(reqs[0]["approval"]["approver"], "admin");
    assert_eq!(reqs[0]["approval"]["note"], "looks fine");

    let csv = w.clawctl(&["history", "--csv"]);
    assert_eq!(csv.status.code(), Some(0));
    let csv = stdout(&csv);
    let mut rows = csv.lines();
    assert!(rows.next().unwrap().starts_with("id,"), "{csv}");
    assert!(csv.contains(&id), "{csv}");

    let table = stdout(&w.clawctl(&["history"]));
    assert!(table.starts_with("ID "), "{table}");
    assert!(table.contains(&id) && table.contains(" admin "), "{table}");
}

#[test]
fn deny_gives_the_agent_126_and_the_reason() {
    let w = Warden::start("deny");
    let (mut shim, id, mut lines) = w.pending_cat("secret\n");
    let out = w.clawctl(&["deny", &id, "--reason", "not now"]);
    assert_eq!(out.status.code(), Some(0));
    assert!(
        stdout(&out).starts_with(&format!("denied {id} (default): ")),
        "{}",
        stdout(&out)
    );
    assert_eq!(wait_code(&mut shim), Some(126));
    assert_eq!(
        lines.rest(),
        vec!["clawrden: denied: denied by admin: not now".to_owned()]
    );
    let again = w.clawctl(&["deny", &id]);
    assert_eq!(again.status.code(), Some(5));
}

#[test]
fn remember_creates_a_grant_that_allows_the_same_call_until_revoked() {
    let w = Warden::start("grants");
    let (mut shim, id, _l) = w.pending_cat("x\n");
    let out = w.clawctl(&["approve", &id, "--remember", "1h"]);
    assert_eq!(out.status.code(), Some(0));
    assert!(stdout(&out).trim_end().ends_with("; remembered for 1h"));
    assert_eq!(wait_code(&mut shim), Some(0));

    let grants = w.json(&["grants"]);
    let list = grants["grants"].as_array().unwrap();
    assert_eq!(list.len(), 1, "{grants:#}");
    assert_eq!(list[0]["created_by"], "admin");
    let grant_id = list[0]["id"].to_string().trim_matches('"').to_owned();
    let table = stdout(&w.clawctl(&["grants"]));
    assert!(
        table.starts_with("ID ") && table.contains("in 59m"),
        "{table}"
    );

    // The same call now runs without asking.
    let file = w.dir.join("note.txt");
    let mut again = w.shim("cat", &[file.to_str().unwrap()]);
    assert_eq!(wait_code(&mut again), Some(0));

    let out = w.clawctl(&["grants", "revoke", &grant_id]);
    assert_eq!(out.status.code(), Some(0));
    assert!(
        stdout(&out).starts_with(&format!("revoked grant {grant_id} (default: ")),
        "{}",
        stdout(&out)
    );
    let missing = w.clawctl(&["grants", "revoke", "999999"]);
    assert_eq!(missing.status.code(), Some(3));

    let too_long = w.clawctl(&["approve", "whatever", "--remember", "48h"]);
    assert_eq!(too_long.status.code(), Some(2));
}

#[test]
fn lockdown_on_denies_new_calls_and_off_restores_the_policy() {
    let w = Warden::start("lockdown");
    let on = w.clawctl(&["lockdown", "on", "--reason", "drill"]);
    assert_eq!(on.status.code(), Some(0));
    assert!(
        stdout(&on).starts_with("lockdown ON since "),
        "{}",
        stdout(&on)
    );
    assert!(stdout(&on).trim_end().ends_with("by admin: drill"));
    assert!(stdout(&w.clawctl(&["status"])).contains("\nlockdown  ON since "));

    let mut t = w.shim("true", &[]);
    let mut err = String::new();
    t.stderr.take().unwrap().read_to_string(&mut err).unwrap();
    assert_eq!(wait_code(&mut t), Some(126));
    assert_eq!(err, "clawrden: denied: lockdown\n");

    let off = w.clawctl(&["lockdown", "off"]);
    assert_eq!(off.status.code(), Some(0));
    assert_eq!(stdout(&off), "lockdown off\n");
    let mut t = w.shim("true", &[]);
    assert_eq!(wait_code(&mut t), Some(0));

    let kill_off = w.clawctl(&["lockdown", "off", "--kill"]);
    assert_eq!(kill_off.status.code(), Some(2));
}

#[test]
fn tokens_are_created_once_listed_scoped_and_revoked() {
    let w = Warden::start("tokens");
    let out = w.clawctl(&["token", "create", "--name", "ci", "--scope", "read"]);
    assert_eq!(out.status.code(), Some(0));
    let token = stdout(&out).trim_end().to_owned();
    assert!(
        token.starts_with("clwd_") && !token.contains('\n'),
        "{token}"
    );
    assert!(stderr(&out).starts_with("created token "));
    assert!(stderr(&out).contains("(name ci, scope read); it is shown only this once"));

    let list = stdout(&w.clawctl(&["token", "list"]));
    assert!(list.starts_with("ID "), "{list}");
    assert!(list.contains(" ci ") && list.contains(" read "), "{list}");
    assert!(!list.contains("clwd_"), "token list must not show secrets");
    let tokens = w.json(&["token", "list"]);
    let ci = tokens["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "ci")
        .expect("ci token listed")
        .clone();
    let ci_id = ci["id"].to_string();

    // The read token reads but may not switch lockdown (403 -> 4).
    let with_ci = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_clawctl"))
            .args(["--url", &w.url])
            .args(args)
            .env("CLAWRDEN_TOKEN", &token)
            .env_remove("CLAWRDEN_TOKEN_FILE")
            .output()
            .unwrap()
    };
    assert_eq!(with_ci(&["status"]).status.code(), Some(0));
    let forbidden = with_ci(&["lockdown", "on"]);
    assert_eq!(forbidden.status.code(), Some(4));
    assert!(
        !stderr(&forbidden).contains(&token),
        "the token must never be printed"
    );

    let revoke = w.clawctl(&["token", "revoke", &ci_id]);
    assert_eq!(revoke.status.code(), Some(0));
    assert_eq!(
        stdout(&revoke),
        format!("revoked token {ci_id} (name ci, scope read)\n")
    );
    let after = with_ci(&["status"]);
    assert_eq!(after.status.code(), Some(4));
    assert!(!stderr(&after).contains(&token));
}

#[test]
fn wrong_token_exits_4_and_is_not_echoed() {
    let w = Warden::start("wrong-token");
    let bad = "clwd_0000000000000000000000000000000000000000000000000000000000000000";
    let out = Command::new(env!("CARGO_BIN_EXE_clawctl"))
        .args(["--url", &w.url, "--token", bad, "status"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(4));
    let err = stderr(&out);
    assert!(
        err.starts_with("clawctl: the warden answered 401 unauthorized"),
        "{err}"
    );
    assert!(!err.contains(bad));
    let none = Command::new(env!("CARGO_BIN_EXE_clawctl"))
        .args(["--url", &w.url, "status"])
        .env_remove("CLAWRDEN_TOKEN")
        .env_remove("CLAWRDEN_TOKEN_FILE")
        .output()
        .unwrap();
    assert_eq!(none.status.code(), Some(4));
    assert!(
        stderr(&none).contains("no token given"),
        "{}",
        stderr(&none)
    );
}

#[test]
fn unknown_request_id_exits_3() {
    let w = Warden::start("unknown-id");
    for cmd in ["approve", "deny"] {
        let out = w.clawctl(&[cmd, "01JNOSUCHREQUEST0000000000"]);
        assert_eq!(out.status.code(), Some(3), "{cmd}");
        assert!(
            stderr(&out).starts_with(&format!(
                "clawctl: {cmd} 01JNOSUCHREQUEST0000000000: the warden answered 404 not_found: "
            )),
            "{}",
            stderr(&out)
        );
    }
}

#[test]
fn unreachable_warden_exits_6_naming_the_url() {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}");
    let out = Command::new(env!("CARGO_BIN_EXE_clawctl"))
        .args(["--url", &url, "--token", "clwd_x", "status"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(6));
    let err = stderr(&out);
    assert!(
        err.starts_with(&format!(
            "clawctl: cannot reach the warden at {url}: connecting to 127.0.0.1:{port}: "
        )),
        "{err}"
    );
    assert!(
        err.contains("check that the warden is running with --listen"),
        "{err}"
    );
    assert!(!err.contains("clwd_x"));
}

#[test]
fn doctor_passes_against_a_healthy_warden_and_probes_for_real() {
    let w = Warden::start("doctor");
    let socket = w.socket.to_str().unwrap().to_owned();
    let policy = w.dir.join("policy.yaml");
    let out = w.clawctl(&[
        "doctor",
        "--socket",
        &socket,
        "--policy",
        policy.to_str().unwrap(),
    ]);
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(0), "{text}");
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 4, "{text}");
    assert!(lines[0].starts_with("ok    socket  "), "{text}");
    assert!(lines[1].starts_with("ok    policy  "), "{text}");
    assert!(
        lines[2].starts_with(&format!("ok    ready   {}/readyz: ready (", w.url)),
        "{text}"
    );
    assert!(
        lines[3].starts_with("ok    token   authenticates"),
        "{text}"
    );

    let probe = w.clawctl(&["doctor", "--socket", &socket, "--probe", "--", "true"]);
    let text = stdout(&probe);
    assert_eq!(probe.status.code(), Some(0), "{text}");
    let last = text.lines().last().unwrap();
    assert!(
        last.starts_with("ok    probe   true: allow by allow-true: "),
        "{text}"
    );
    assert!(last.contains(", exit status 0 ("), "{text}");

    let bad = w.clawctl(&["doctor", "--socket", "/nonexistent/warden.sock"]);
    assert_eq!(bad.status.code(), Some(1));
    assert!(stdout(&bad).starts_with("FAIL  socket  /nonexistent/warden.sock: cannot connect: "));
}

#[test]
fn tail_prints_one_line_per_event_and_queue_watch_refreshes() {
    let w = Warden::start("tail");
    let mut tail = Running(
        w.clawctl_cmd(&["tail"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let mut tail_lines = Lines::stdout(&mut tail);
    let mut watch = Running(
        w.clawctl_cmd(&["queue", "--watch"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let mut watch_lines = Lines::stdout(&mut watch);
    watch_lines.until("the empty queue", |l| {
        l == "no requests waiting for approval"
    });

    // tail is connected once it has printed something; make sure it sees the first event
    // by waiting for the lockdown event it must print.
    poll("tail to connect", || {
        let out = w.clawctl(&["lockdown", "off", "--reason", "ping"]);
        assert_eq!(out.status.code(), Some(0));
        tail_lines
            .rx
            .recv_timeout(Duration::from_millis(200))
            .ok()
            .filter(|l| l.contains("  control  "))
    });

    let (mut shim, id, _l) = w.pending_cat("t\n");
    let pending = tail_lines.until("request.pending", |l| l.contains("  request.pending  "));
    assert!(
        pending.contains(&id) && pending.ends_with("(rule ask-cat) waits for approval"),
        "{pending}"
    );
    watch_lines.until("the pending request in the watched queue", |l| {
        l.starts_with(&id)
    });

    assert_eq!(w.clawctl(&["deny", &id]).status.code(), Some(0));
    let decided = tail_lines.until("request.decided", |l| l.contains("  request.decided  "));
    assert!(
        decided.ends_with(&format!(
            "request.decided  {id} deny by admin: denied by admin"
        )),
        "{decided}"
    );
    watch_lines.until("the emptied queue", |l| {
        l == "no requests waiting for approval"
    });
    assert_eq!(wait_code(&mut shim), Some(126));
}

#[test]
fn kill_pause_resume_ask_first_and_need_a_container_runtime() {
    let w = Warden::start("prisoners");
    // Declined (or no answer at all): nothing is sent.
    for answer in ["n\n", ""] {
        let mut cmd = w.clawctl_cmd(&["kill", "default", "--reason", "drill"]);
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run clawctl kill");
        child
            .stdin
            .take()
            .unwrap()
            .write_all(answer.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert_eq!(out.status.code(), Some(1), "answer {answer:?}");
        let err = stderr(&out);
        assert!(
            err.starts_with(
                "Kill prisoner default? Its container stops and its running and waiting calls are cancelled. [y/N] "
            ),
            "{err}"
        );
        assert!(err.ends_with("aborted: nothing was sent\n"), "{err}");
        assert_eq!(stdout(&out), "");
    }
    // Confirmed: this warden runs no container runtime, so the API answers 409 -> exit 5.
    for args in [
        vec!["kill", "default", "--yes"],
        vec!["pause", "default", "--for", "10m", "-y"],
        vec!["resume", "default", "--yes"],
    ] {
        let out = w.clawctl(&args);
        assert_eq!(out.status.code(), Some(5), "{args:?}");
        assert!(
            stderr(&out).contains("no container runtime"),
            "{}",
            stderr(&out)
        );
    }
    let status = w.json(&["status"]);
    assert_eq!(status["prisoners"][0]["state"], "active");
    // An unknown prisoner is not found (exit 3).
    let out = w.clawctl(&["resume", "nobody", "--yes"]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
}
