//! A real `clawrden-warden` in a temp dir, and the shim symlinks that talk to it.

use std::fs::{self, File};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::symlink;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::audit::{parse_audit, AuditEvent};
use crate::bins::binaries;
use crate::run::{self, Call, Output, BASE_HOME, SYSTEM_PATH};
use crate::tempdir::TempDir;
use crate::{poll_until, StreamDigest};

/// Tool names that get a shim symlink in every warden's `bin/`.
pub const SHIMMED_TOOLS: &[&str] = &[
    "cat", "echo", "sh", "printf", "true", "false", "head", "seq", "sleep", "tty", "stty", "env",
    "pwd", "od", "touch",
];

/// The descriptor [`WardenBuilder::stray_fd`] leaves open in the warden.
pub const STRAY_FD: i32 = 7;

/// How long a warden gets to accept connections, and to exit when told to.
const READY_DEADLINE: Duration = Duration::from_secs(10);
const EXIT_DEADLINE: Duration = Duration::from_secs(15);
/// How long the audit may lag behind the shim's exit.
const AUDIT_DEADLINE: Duration = Duration::from_secs(20);

/// A policy that allows everything with the local executor; ask times out after 1s.
pub fn policy_allow_all() -> String {
    "version: 1\n\
     default_action: allow\n\
     default_timeout: 2m\n\
     approval_timeout: 1s\n\
     default_executor: local\n\
     rules: []\n"
        .to_string()
}

/// A `127.0.0.1` address with a port that was free a moment ago (bound to port 0, then
/// released), for a warden's `--listen`.
pub fn free_local_addr() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0 to find a free port");
    l.local_addr().expect("local address of a bound listener")
}

/// Options for starting a warden.
#[derive(Debug, Clone)]
pub struct WardenBuilder {
    policy: String,
    stream_only: bool,
    policy_via_symlink: bool,
    executors: String,
    state_dir: Option<PathBuf>,
    socket: Option<PathBuf>,
    prisoners: Vec<String>,
    api: bool,
    allow_run_as_warden: bool,
    command_path: String,
    run_as: Option<String>,
    stray_fd: Option<PathBuf>,
    shims_in_command_path: bool,
    settings: Vec<(String, String)>,
    nofile: Option<(u64, u64)>,
}

impl WardenBuilder {
    /// Whether locally executed commands may run as the warden's own uid (default: yes,
    /// so that the tests run by any user, root included, can call through their own
    /// warden; the privilege tests turn it off and call as other users).
    pub fn allow_run_as_warden(mut self, yes: bool) -> Self {
        self.allow_run_as_warden = yes;
        self
    }

    /// The warden's `command_path` (default [`SYSTEM_PATH`], where direct runs look too).
    pub fn command_path(mut self, path: impl Into<String>) -> Self {
        self.command_path = path.into();
        self
    }

    /// Start the warden the way a careless parent would: with `path` open, inheritable, on
    /// descriptor [`STRAY_FD`] (a shell opens it and execs the warden).
    pub fn stray_fd(mut self, path: impl Into<PathBuf>) -> Self {
        self.stray_fd = Some(path.into());
        self
    }

    /// Put this warden's `bin/` of shims in front of its `command_path`, so that commands
    /// it runs make nested calls back through the shim.
    pub fn shims_in_command_path(mut self) -> Self {
        self.shims_in_command_path = true;
        self
    }

    /// The warden's `run_as` user.
    pub fn run_as(mut self, user: impl Into<String>) -> Self {
        self.run_as = Some(user.into());
        self
    }

    /// A scalar setting, given as `--KEY VALUE` in the flag form and `KEY: VALUE` in
    /// warden.yaml (underscores in `key` become dashes in the flag), e.g.
    /// `("max_pending_per_prisoner", "2")`.
    pub fn setting(mut self, key: &str, value: impl ToString) -> Self {
        self.settings.push((key.to_string(), value.to_string()));
        self
    }

    /// Starts the warden under `prlimit --nofile=SOFT:HARD`.
    pub fn nofile(mut self, soft: u64, hard: u64) -> Self {
        self.nofile = Some((soft, hard));
        self
    }

    /// Listen on this socket path instead of one in the fresh temp dir.
    pub fn socket(mut self, path: impl Into<PathBuf>) -> Self {
        self.socket = Some(path.into());
        self
    }

    /// Start from a `warden.yaml` (`--config`) with one socket per named prisoner
    /// (`<dir>/<name>.sock`) instead of from flags.
    pub fn prisoners(mut self, names: &[&str]) -> Self {
        self.prisoners = names.iter().map(|n| n.to_string()).collect();
        self
    }

    /// Use an existing state directory (e.g. a previous warden's) instead of a fresh one.
    pub fn state_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.state_dir = Some(dir.into());
        self
    }

    /// The policy file's contents.
    pub fn policy(mut self, yaml: impl Into<String>) -> Self {
        self.policy = yaml.into();
        self
    }

    /// Start with `--stream-only`: never use passed fds, always stream frames.
    pub fn stream_only(mut self, yes: bool) -> Self {
        self.stream_only = yes;
        self
    }

    /// Make `--policy` a symlink into another directory, so editing the real file is not
    /// seen by a watch on the symlink's directory (only SIGHUP reloads it).
    pub fn policy_via_symlink(mut self) -> Self {
        self.policy_via_symlink = true;
        self
    }

    /// Also serve the HTTP API on a free `127.0.0.1` port (`--listen`, or `listen:` in
    /// the config file); [`TestWarden::api_addr`] says which.
    pub fn api(mut self) -> Self {
        self.api = true;
        self
    }

    /// Writes the files and starts the warden without waiting for its socket.
    pub fn launch(self) -> TestWarden {
        let bins = binaries();
        let dir = TempDir::new("warden");
        let root = dir.path().to_path_buf();
        let bin_dir = root.join("bin");
        let state_dir = match self.state_dir {
            Some(dir) => dir,
            None => {
                let dir = root.join("state");
                fs::create_dir(&dir).expect("create state dir");
                dir
            }
        };
        fs::create_dir(&bin_dir).expect("create bin dir");
        let command_path = if self.shims_in_command_path {
            format!("{}:{}", bin_dir.display(), self.command_path)
        } else {
            self.command_path.clone()
        };
        for tool in SHIMMED_TOOLS {
            symlink(&bins.shim, bin_dir.join(tool)).expect("create shim symlink");
        }
        let policy_path = root.join("policy.yaml");
        let real_policy = if self.policy_via_symlink {
            let real_dir = root.join("policies");
            fs::create_dir(&real_dir).expect("create policies dir");
            let real = real_dir.join("policy.yaml");
            symlink(&real, &policy_path).expect("create policy symlink");
            real
        } else {
            policy_path.clone()
        };
        fs::write(&real_policy, &self.policy).expect("write policy");
        let stderr_path = root.join("warden.stderr");
        let stdout_path = root.join("warden.stdout");
        let api_addr = self.api.then(free_local_addr);
        let mut cmd = match (&self.stray_fd, self.nofile) {
            (None, None) => Command::new(&bins.warden),
            (None, Some((soft, hard))) => {
                let mut c = Command::new("prlimit");
                c.arg(format!("--nofile={soft}:{hard}")).arg(&bins.warden);
                c
            }
            (Some(path), nofile) => {
                let mut sh = Command::new("/bin/sh");
                sh.arg("-c")
                    .arg(format!("exec {STRAY_FD}<\"$1\"; shift; exec \"$@\""))
                    .arg("sh")
                    .arg(path);
                if let Some((soft, hard)) = nofile {
                    sh.arg("prlimit").arg(format!("--nofile={soft}:{hard}"));
                }
                sh.arg(&bins.warden);
                sh
            }
        };
        let sockets: Vec<(String, PathBuf)> = if self.prisoners.is_empty() {
            let socket = self.socket.unwrap_or_else(|| root.join("warden.sock"));
            cmd.arg("--policy")
                .arg(&policy_path)
                .arg("--state-dir")
                .arg(&state_dir)
                .arg("--socket")
                .arg(&socket)
                .args(["--executor", &self.executors, "--log-format", "json"])
                .arg("--exec-helper")
                .arg(&bins.shim)
                .arg("--command-path")
                .arg(&command_path);
            if self.stream_only {
                cmd.arg("--stream-only");
            }
            if self.allow_run_as_warden {
                cmd.arg("--allow-run-as-warden");
            }
            if let Some(user) = &self.run_as {
                cmd.arg("--run-as").arg(user);
            }
            if let Some(addr) = api_addr {
                cmd.arg("--listen").arg(addr.to_string());
            }
            for (key, value) in &self.settings {
                cmd.arg(format!("--{}", key.replace('_', "-"))).arg(value);
            }
            vec![("default".to_string(), socket)]
        } else {
            let sockets: Vec<(String, PathBuf)> = self
                .prisoners
                .iter()
                .map(|n| (n.clone(), root.join(format!("{n}.sock"))))
                .collect();
            let mut yaml = format!(
                "policy: {}\nstate_dir: {}\nexecutors: [{}]\nlog_format: json\nstream_only: {}\nexec_helper: {}\ncommand_path: {}\nallow_run_as_warden: {}\n",
                policy_path.display(),
                state_dir.display(),
                self.executors,
                self.stream_only,
                bins.shim.display(),
                command_path,
                self.allow_run_as_warden,
            );
            if let Some(user) = &self.run_as {
                yaml.push_str(&format!("run_as: {user}\n"));
            }
            if let Some(addr) = api_addr {
                yaml.push_str(&format!("listen: {addr}\n"));
            }
            for (key, value) in &self.settings {
                yaml.push_str(&format!("{key}: {value}\n"));
            }
            yaml.push_str("prisoners:\n");
            for (name, socket) in &sockets {
                yaml.push_str(&format!(
                    "  - name: {name}\n    socket: {}\n",
                    socket.display()
                ));
            }
            let config = root.join("warden.yaml");
            fs::write(&config, yaml).expect("write warden.yaml");
            cmd.arg("--config").arg(&config);
            sockets
        };
        cmd.env_clear()
            .env("PATH", SYSTEM_PATH)
            .env("HOME", BASE_HOME)
            .stdin(Stdio::null())
            .stdout(File::create(&stdout_path).expect("create warden stdout file"))
            .stderr(File::create(&stderr_path).expect("create warden stderr file"));
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", bins.warden.display()));
        TestWarden {
            policy_path,
            real_policy,
            state_dir,
            socket: sockets[0].1.clone(),
            sockets,
            bin_dir,
            stderr_path,
            api_addr,
            child: Some(child),
            dir,
        }
    }

    /// Starts the warden and waits until its socket accepts connections.
    pub fn start(self) -> TestWarden {
        let mut w = self.launch();
        w.wait_ready();
        w
    }
}

/// A running warden and its files. Killed (and its temp dir removed) on drop.
pub struct TestWarden {
    pub policy_path: PathBuf,
    /// The file actually holding the policy (differs from `policy_path` behind a symlink).
    pub real_policy: PathBuf,
    pub state_dir: PathBuf,
    pub socket: PathBuf,
    /// (prisoner, socket) pairs; the first is `socket`.
    pub sockets: Vec<(String, PathBuf)>,
    pub bin_dir: PathBuf,
    pub stderr_path: PathBuf,
    /// Where the HTTP API listens, when started with [`WardenBuilder::api`].
    pub api_addr: Option<SocketAddr>,
    child: Option<Child>,
    dir: TempDir,
}

impl TestWarden {
    pub fn builder() -> WardenBuilder {
        WardenBuilder {
            policy: policy_allow_all(),
            stream_only: false,
            policy_via_symlink: false,
            executors: "local".to_string(),
            state_dir: None,
            socket: None,
            prisoners: Vec::new(),
            api: false,
            allow_run_as_warden: true,
            command_path: SYSTEM_PATH.to_string(),
            run_as: None,
            stray_fd: None,
            shims_in_command_path: false,
            settings: Vec::new(),
            nofile: None,
        }
    }

    /// A warden with `policy` (fd-passing path), ready.
    pub fn start(policy: &str) -> TestWarden {
        Self::builder().policy(policy).start()
    }

    /// The temp dir this warden lives in; tests may put their own files there.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn pid(&self) -> Pid {
        Pid::from_raw(self.child.as_ref().expect("warden was reaped").id() as i32)
    }

    /// Waits until the socket accepts a connection; panics with the warden's log if it
    /// exits first or takes more than 10 s.
    pub fn wait_ready(&mut self) {
        let start = Instant::now();
        loop {
            if self
                .sockets
                .iter()
                .all(|(_, s)| UnixStream::connect(s).is_ok())
                && self.api_addr.iter().all(|a| TcpStream::connect(a).is_ok())
            {
                return;
            }
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!(
                    "clawrden-warden exited with {status} before accepting connections on {}; its stderr:\n{}",
                    self.socket.display(),
                    self.log()
                );
            }
            if start.elapsed() > READY_DEADLINE {
                panic!(
                    "clawrden-warden did not accept connections on {} within {READY_DEADLINE:?}; its stderr:\n{}",
                    self.socket.display(),
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The first admin token, which the warden writes to `<state-dir>/admin.token` on its
    /// first start (bounded poll: the file appears while the warden starts).
    pub fn admin_token(&self) -> String {
        let path = self.state_dir.join("admin.token");
        poll_until(
            &format!("the admin token in {}", path.display()),
            READY_DEADLINE,
            || {
                // Complete once its '\n' is written.
                fs::read_to_string(&path)
                    .ok()
                    .filter(|t| t.ends_with('\n'))
                    .map(|t| t.trim().to_string())
                    .filter(|t| !t.is_empty())
            },
        )
    }

    /// Waits for the warden to exit by itself (bounded), returning its status.
    pub fn wait_exit(&mut self) -> ExitStatus {
        let child = self.child.as_mut().expect("warden was reaped");
        let start = Instant::now();
        loop {
            if let Some(status) = child.try_wait().expect("try_wait on warden") {
                return status;
            }
            if start.elapsed() > EXIT_DEADLINE {
                let _ = child.kill();
                panic!(
                    "clawrden-warden did not exit within {EXIT_DEADLINE:?}; its stderr:\n{}",
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends `sig` to the warden.
    pub fn signal(&self, sig: Signal) {
        kill(self.pid(), sig).expect("signal the warden");
    }

    /// SIGKILLs the warden and reaps it.
    pub fn kill_hard(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// The warden's stderr so far (JSON log lines).
    pub fn log(&self) -> String {
        fs::read(&self.stderr_path)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }

    /// Absolute path of the shim symlink for `tool` (created on first use).
    pub fn tool(&self, tool: &str) -> PathBuf {
        let p = self.bin_dir.join(tool);
        if fs::symlink_metadata(&p).is_err() {
            symlink(&binaries().shim, &p).expect("create shim symlink");
        }
        p
    }

    /// `call` through the shim: the symlink by absolute path, `CLAWRDEN_SOCKET` set.
    pub fn shim_command(&self, call: &Call) -> Command {
        let mut cmd = Command::new(self.tool(&call.tool));
        call.configure_into(&mut cmd);
        cmd.env(clawrden_protocol::SOCKET_ENV, &self.socket);
        cmd
    }

    /// `call` through the shim of `prisoner`'s socket.
    pub fn shim_command_as(&self, prisoner: &str, call: &Call) -> Command {
        let socket = self
            .sockets
            .iter()
            .find(|(n, _)| n == prisoner)
            .map(|(_, s)| s)
            .unwrap_or_else(|| panic!("this warden has no prisoner {prisoner}"));
        let mut cmd = self.shim_command(call);
        cmd.env(clawrden_protocol::SOCKET_ENV, socket);
        cmd
    }

    /// Runs `call` through the shim as `uid`:`gid` (no supplementary groups); needs root.
    pub fn run_as_user(&self, call: &Call, uid: u32, gid: u32) -> Output {
        use std::os::unix::process::CommandExt;
        let mut cmd = self.shim_command(call);
        cmd.uid(uid).gid(gid);
        run::run_command(
            cmd,
            &call.stdin,
            &format!("shim {} {:?} as uid {uid}", call.tool, call.args),
        )
    }

    /// Runs `call` through the shim from a caller that has only descriptors 0, 1 and 2
    /// open (as `subprocess` with `close_fds`, the default, starts its commands): a bash
    /// closes every other descriptor it inherited from the test runner, then execs the
    /// shim. The shim passes a caller's open descriptors on (README, "What the agent
    /// sees"), so without this the runner's own would reach the command.
    pub fn run_from_clean_caller(&self, call: &Call) -> Output {
        const CLOSE_THEN_EXEC: &str = r#"for fd in /proc/$$/fd/*; do n=${fd##*/}; if [ "$n" -gt 2 ]; then eval "exec $n>&-"; fi; done; exec "$@""#;
        let shim = self.shim_command(call);
        let mut cmd = Command::new("/bin/bash");
        cmd.arg("-c")
            .arg(CLOSE_THEN_EXEC)
            .arg("bash")
            .arg(shim.get_program())
            .args(shim.get_args())
            .env_clear();
        for (k, v) in shim.get_envs() {
            if let Some(v) = v {
                cmd.env(k, v);
            }
        }
        if let Some(dir) = shim.get_current_dir() {
            cmd.current_dir(dir);
        }
        run::run_command(
            cmd,
            &call.stdin,
            &format!("shim {} {:?} from a clean caller", call.tool, call.args),
        )
    }

    /// Runs `call` through the shim to completion.
    pub fn run(&self, call: &Call) -> Output {
        run::run_command(
            self.shim_command(call),
            &call.stdin,
            &format!("shim {} {:?}", call.tool, call.args),
        )
    }

    /// Runs `call` through the shim, hashing stdout instead of keeping it.
    pub fn run_hashing(&self, call: &Call) -> (StreamDigest, Vec<u8>, ExitStatus) {
        run::run_hashing(
            self.shim_command(call),
            &format!("shim {} {:?}", call.tool, call.args),
        )
    }

    /// Replaces the policy the way editors do: write a new file, rename it over the old.
    pub fn replace_policy_atomically(&self, yaml: &str) {
        let tmp = self.dir().join(".policy.yaml.new");
        fs::write(&tmp, yaml).expect("write new policy");
        fs::rename(&tmp, &self.policy_path).expect("rename new policy into place");
    }

    /// Rewrites the real policy file in place.
    pub fn write_policy_in_place(&self, yaml: &str) {
        fs::write(&self.real_policy, yaml).expect("rewrite policy");
    }

    pub fn audit_path(&self) -> PathBuf {
        self.state_dir.join("audit").join("audit.jsonl")
    }

    /// The warden's audit key (`<state-dir>/audit.key`).
    pub fn audit_key_path(&self) -> PathBuf {
        self.state_dir.join(clawrden_audit::KEY_FILE)
    }

    /// Verifies the whole audit directory, MACs included, with the one chain definition
    /// the warden writes with; panics with the first bad line.
    pub fn verify_audit(&self) -> clawrden_audit::Report {
        let key = clawrden_audit::AuditKey::read(&self.audit_key_path())
            .unwrap_or_else(|e| panic!("{e}"));
        let files = clawrden_audit::expand_paths(&[self.state_dir.join("audit")])
            .unwrap_or_else(|f| panic!("{f}"));
        clawrden_audit::verify_files(&files, Some(&key))
            .unwrap_or_else(|f| panic!("audit does not verify: {f}"))
    }

    /// Every complete line of the audit file so far, parsed.
    pub fn audit_events(&self) -> Vec<AuditEvent> {
        match fs::read(self.audit_path()) {
            Ok(b) => parse_audit(&String::from_utf8(b).expect("audit file is not UTF-8")),
            Err(_) => Vec::new(),
        }
    }

    /// The request id of the (single) audited request whose argv holds `token`.
    pub fn request_id_for(&self, token: &str) -> String {
        poll_until(
            &format!("a `request` audit event with argv token {token:?}"),
            AUDIT_DEADLINE,
            || {
                let events = self.audit_events();
                let ids: Vec<String> = events
                    .iter()
                    .filter(|e| e.event() == "request")
                    .filter(|e| {
                        e.get("argv").is_some_and(|a| {
                            crate::argv_strings(a).iter().any(|t| t == token.as_bytes())
                        })
                    })
                    .filter_map(|e| e.request_id().map(str::to_string))
                    .collect();
                match ids.len() {
                    0 => None,
                    1 => ids.into_iter().next(),
                    _ => panic!("argv token {token:?} is in several requests: {ids:?}"),
                }
            },
        )
    }

    /// All events of `request_id`, once one satisfies `done` (bounded poll).
    pub fn events_when(
        &self,
        request_id: &str,
        what: &str,
        done: impl Fn(&AuditEvent) -> bool,
    ) -> Vec<AuditEvent> {
        poll_until(
            &format!("audit of request {request_id}: {what}"),
            AUDIT_DEADLINE,
            || {
                let evs: Vec<AuditEvent> = self
                    .audit_events()
                    .into_iter()
                    .filter(|e| e.request_id() == Some(request_id))
                    .collect();
                evs.iter().any(&done).then_some(evs)
            },
        )
    }

    /// All events of `request_id` once its outcome (`exit`, `timeout_violation`, `cancel`,
    /// `error`) is written.
    pub fn events_after_outcome(&self, request_id: &str) -> Vec<AuditEvent> {
        self.events_when(request_id, "an outcome event", |e| {
            matches!(e.event(), "exit" | "timeout_violation" | "cancel" | "error")
        })
    }
}

impl Drop for TestWarden {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let pid = Pid::from_raw(child.id() as i32);
            let _ = kill(pid, Signal::SIGTERM);
            let start = Instant::now();
            loop {
                match child.try_wait() {
                    Ok(Some(_)) | Err(_) => break,
                    Ok(None) if start.elapsed() > EXIT_DEADLINE => {
                        let _ = child.kill();
                        let _ = child.wait();
                        break;
                    }
                    Ok(None) => std::thread::sleep(Duration::from_millis(20)),
                }
            }
        }
        if std::thread::panicking() {
            let log = fs::read(&self.stderr_path).unwrap_or_default();
            let tail = String::from_utf8_lossy(&log[log.len().saturating_sub(8000)..]);
            eprintln!(
                "--- clawrden-warden stderr ({}), last 8000 bytes ---\n{tail}",
                self.stderr_path.display()
            );
        }
    }
}
