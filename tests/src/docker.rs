//! Docker harness for the tier-3 tests: locally built test images, hardened images and
//! throwaway containers, all driven through the `docker` CLI.
//!
//! Nothing is pulled from a registry: base images come from `scripts/images/build.sh` and
//! hardened ones from `scripts/harden-container.sh`. Tests call [`require_docker_or_skip`]
//! first: without a reachable engine they skip with a printed reason, unless
//! `CLAWRDEN_REQUIRE_DOCKER=1`, in which case they fail.

use std::fmt;
use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use nix::fcntl::{Flock, FlockArg};

use crate::audit::{parse_audit, AuditEvent};
use crate::bins::binaries;
use crate::tempdir::TempDir;

/// Rust target of the static shim that goes into images.
pub const SHIM_TARGET: &str = "x86_64-unknown-linux-musl";

/// The command that builds the static shim.
pub const SHIM_BUILD_COMMAND: &str =
    "cargo build --release -p clawrden-shim --target x86_64-unknown-linux-musl";

/// Where the shim lives inside a hardened image.
pub const SHIM_IN_IMAGE: &str = "/usr/lib/clawrden/bin/clawrden-shim";

/// Where install-clawrden.sh keeps the originals inside a hardened image.
pub const ORIGINALS_IN_IMAGE: &str = "/usr/lib/clawrden/originals";

/// Where harden-container.sh leaves the installer (and a copy of the shim) in the image.
pub const INSTALLER_IN_IMAGE: &str = "/usr/lib/clawrden-install/install-clawrden.sh";

/// Label that marks containers started by this harness (for cleaning up after a crash:
/// `docker rm -f $(docker ps -aq --filter label=org.clawrden.test)`).
pub const CONTAINER_LABEL: &str = "org.clawrden.test";

/// The workspace root (the parent of this crate's directory).
pub fn repo_root() -> PathBuf {
    let manifest_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest_dir.parent().unwrap_or(manifest_dir).to_path_buf()
}

/// The static musl shim built by [`SHIM_BUILD_COMMAND`], or an error that says how to build it.
pub fn musl_shim() -> Result<PathBuf, String> {
    let path = repo_root()
        .join("target")
        .join(SHIM_TARGET)
        .join("release")
        .join("clawrden-shim");
    if path.is_file() {
        Ok(path)
    } else {
        Err(format!(
            "static shim not found at {}; build it first with: {SHIM_BUILD_COMMAND}",
            path.display()
        ))
    }
}

/// Where rootfs tarballs and the build lock live (`CLAWRDEN_IMAGE_CACHE`, default
/// `/var/cache/clawrden-test`), the same directory `scripts/images/build.sh` uses.
pub fn image_cache_dir() -> PathBuf {
    std::env::var_os("CLAWRDEN_IMAGE_CACHE")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/cache/clawrden-test"))
}

/// Ok when the `docker` CLI is installed and its engine answers; else why not.
pub fn docker_available() -> Result<(), String> {
    let output = Command::new("docker")
        .args(["version", "--format", "{{.Server.Version}}"])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run the docker CLI: {e}"))?;
    if output.status.success() {
        Ok(())
    } else {
        let stderr = String::from_utf8_lossy(&output.stderr);
        Err(format!(
            "no Docker engine reachable (`docker version` exited with {}): {}",
            output.status,
            stderr.trim()
        ))
    }
}

/// True when `CLAWRDEN_REQUIRE_DOCKER=1`: a missing engine is then a failure, not a skip.
pub fn docker_required() -> bool {
    std::env::var("CLAWRDEN_REQUIRE_DOCKER").is_ok_and(|v| v == "1")
}

/// Whether `test_name` can run: false (after printing `SKIP <test>: <reason>`) when no
/// Docker engine is reachable. Panics with the reason instead when `CLAWRDEN_REQUIRE_DOCKER=1`.
pub fn require_docker_or_skip(test_name: &str) -> bool {
    match docker_available() {
        Ok(()) => true,
        Err(reason) if docker_required() => {
            panic!("{test_name}: CLAWRDEN_REQUIRE_DOCKER=1 but {reason}")
        }
        Err(reason) => {
            eprintln!("SKIP {test_name}: {reason}");
            false
        }
    }
}

/// Holds the image-build lock (flock on `<cache>/build.lock`) until dropped, so parallel
/// test processes build each image once.
struct BuildLock {
    _lock: Flock<File>,
}

impl BuildLock {
    fn acquire() -> Result<Self, String> {
        let dir = image_cache_dir();
        std::fs::create_dir_all(&dir)
            .map_err(|e| format!("cannot create the image cache {}: {e}", dir.display()))?;
        let path = dir.join("build.lock");
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| format!("cannot open the build lock {}: {e}", path.display()))?;
        let lock = Flock::lock(file, FlockArg::LockExclusive)
            .map_err(|(_, errno)| format!("cannot lock {}: {errno}", path.display()))?;
        Ok(BuildLock { _lock: lock })
    }
}

fn run_script(mut command: Command, what: &str) -> Result<Output, String> {
    let output = command
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run {what}: {e}"))?;
    if output.status.success() {
        Ok(output)
    } else {
        Err(format!(
            "{what} failed ({}):\n--- stdout\n{}--- stderr\n{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ))
    }
}

/// Builds (or finds cached) the base image `clawrden-test/<name>:latest` with
/// `scripts/images/build.sh`, serialized across processes; returns its tag.
pub fn ensure_test_image(name: &str) -> Result<String, String> {
    let _lock = BuildLock::acquire()?;
    let script = repo_root().join("scripts/images/build.sh");
    let mut command = Command::new(&script);
    command
        .arg(name)
        .env("CLAWRDEN_IMAGE_CACHE", image_cache_dir())
        .env("CLAWRDEN_IMAGE_LOCK_HELD", "1");
    let output = run_script(command, &format!("{} {name}", script.display()))?;
    eprint!("{}", String::from_utf8_lossy(&output.stdout));
    Ok(format!("clawrden-test/{name}:latest"))
}

/// `clawrden-test/<name>-<checkout>:latest`: a tag for an image this checkout builds from
/// its own shim and scripts. `<checkout>` is derived from the repository's path, so two
/// checkouts running the Docker tier at the same time never overwrite each other's
/// hardened images (the base images, identical for every checkout, keep plain tags).
pub fn checkout_tag(name: &str) -> String {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(repo_root().as_os_str().as_encoded_bytes());
    let short: String = digest[..4].iter().map(|b| format!("{b:02x}")).collect();
    format!("clawrden-test/{name}-{short}:latest")
}

/// Builds `tag` from `base` with `scripts/harden-container.sh`, intercepting `tools`, with
/// the static musl shim; returns the tag it printed.
pub fn harden_image(base: &str, tools: &[&str], tag: &str) -> Result<String, String> {
    harden_image_with(base, tools, tag, &[])
}

/// The option that lets harden-container.sh build from a base whose /bin/sh runs applets
/// in-process (the busybox-static test image); tests pass it explicitly.
pub const ACCEPT_SHELL_BYPASS: &str = "--accept-shell-bypass";

/// The harden-container.sh command for `base`, `tools`, `tag` and `extra` options.
pub fn harden_command(
    base: &str,
    tools: &[&str],
    tag: &str,
    extra: &[&str],
) -> Result<Command, String> {
    let shim = musl_shim()?;
    let mut command = Command::new(repo_root().join("scripts/harden-container.sh"));
    command
        .arg(base)
        .arg("--tools")
        .arg(tools.join(" "))
        .arg("--tag")
        .arg(tag)
        .arg("--shim")
        .arg(&shim)
        .args(extra);
    Ok(command)
}

/// [`harden_image`] with `extra` options for harden-container.sh.
pub fn harden_image_with(
    base: &str,
    tools: &[&str],
    tag: &str,
    extra: &[&str],
) -> Result<String, String> {
    let command = harden_command(base, tools, tag, extra)?;
    let output = run_script(command, &format!("scripts/harden-container.sh {base}"))?;
    let printed = String::from_utf8_lossy(&output.stdout).trim().to_string();
    if printed == tag {
        Ok(printed)
    } else {
        Err(format!(
            "harden-container.sh printed {printed:?} instead of the tag {tag:?}"
        ))
    }
}

/// What a command run in a container did.
#[derive(Clone, PartialEq, Eq)]
pub struct ExecOutput {
    /// Exit status as the docker CLI reports it (`None` if the CLI itself died of a signal).
    pub status: Option<i32>,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

impl ExecOutput {
    pub(crate) fn from_output(output: Output) -> Self {
        ExecOutput {
            status: output.status.code(),
            stdout: output.stdout,
            stderr: output.stderr,
        }
    }

    /// stdout as (lossy) UTF-8.
    pub fn stdout_text(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }

    /// stderr as (lossy) UTF-8.
    pub fn stderr_text(&self) -> String {
        String::from_utf8_lossy(&self.stderr).into_owned()
    }

    /// True when the command exited with status 0.
    pub fn success(&self) -> bool {
        self.status == Some(0)
    }
}

impl fmt::Debug for ExecOutput {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ExecOutput")
            .field("status", &self.status)
            .field("stdout", &self.stdout_text())
            .field("stderr", &self.stderr_text())
            .finish()
    }
}

/// A running container, named uniquely, removed (with `docker rm -f`) when dropped
/// (unless it is one that something else manages, see [`Container::managed_elsewhere`]).
pub struct Container {
    name: String,
    image: String,
    owned: bool,
}

impl fmt::Debug for Container {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Container")
            .field("name", &self.name)
            .field("image", &self.image)
            .finish()
    }
}

/// A container (or project) name no other test or checkout uses at the same time.
pub(crate) fn unique_container_name() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!(
        "clawrden-test-{}-{}-{nanos:09}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

impl Container {
    /// Starts `image` detached with no network, running `sleep` as PID 1 so that commands
    /// can be exec'd into it. `extra_args` go to `docker run` before the image.
    pub fn start(image: &str, extra_args: &[&str]) -> Result<Self, String> {
        Container::start_command(image, extra_args, "sleep", &["86400"])
    }

    /// Starts `image` detached with no network, running `entrypoint` with `args` as PID 1.
    /// `extra_args` go to `docker run` before the image.
    pub fn start_command(
        image: &str,
        extra_args: &[&str],
        entrypoint: &str,
        args: &[&str],
    ) -> Result<Self, String> {
        let name = unique_container_name();
        let output = Command::new("docker")
            .args(["run", "--detach", "--network", "none", "--name", &name])
            .args(["--label", CONTAINER_LABEL])
            .args(["--entrypoint", entrypoint])
            .args(extra_args)
            .arg(image)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("cannot run the docker CLI: {e}"))?;
        // From here on Drop removes it, even when starting failed half-way.
        let container = Container {
            name,
            image: image.to_string(),
            owned: true,
        };
        if output.status.success() {
            Ok(container)
        } else {
            Err(format!(
                "docker run of {image} failed ({}): {}",
                output.status,
                String::from_utf8_lossy(&output.stderr).trim()
            ))
        }
    }

    /// A handle on a container that something else (docker compose) created and removes;
    /// dropping the handle leaves the container alone.
    pub fn managed_elsewhere(name: &str, image: &str) -> Container {
        Container {
            name: name.to_string(),
            image: image.to_string(),
            owned: false,
        }
    }

    /// The container's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The image it runs.
    pub fn image(&self) -> &str {
        &self.image
    }

    /// Runs `argv` (no shell) as `user` ("root", "agent", "1000:1000", ...).
    pub fn exec(&self, user: &str, argv: &[&str]) -> Result<ExecOutput, String> {
        let output = Command::new("docker")
            .args(["exec", "--user", user, &self.name])
            .args(argv)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("cannot run the docker CLI: {e}"))?;
        Ok(ExecOutput::from_output(output))
    }

    /// Runs `argv` (no shell) as `user` with `input` on its stdin (written by a thread
    /// while the output is read, so large inputs cannot deadlock).
    pub fn exec_with_stdin(
        &self,
        user: &str,
        argv: &[&str],
        input: &[u8],
    ) -> Result<ExecOutput, String> {
        let mut child = Command::new("docker")
            .args(["exec", "--interactive", "--user", user, &self.name])
            .args(argv)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot run the docker CLI: {e}"))?;
        let mut stdin = child.stdin.take().ok_or("no stdin pipe")?;
        let input = input.to_vec();
        let writer = std::thread::spawn(move || {
            use std::io::Write;
            let result = stdin.write_all(&input);
            drop(stdin);
            result
        });
        let output = child
            .wait_with_output()
            .map_err(|e| format!("waiting for docker exec: {e}"))?;
        writer
            .join()
            .map_err(|_| "the stdin writer panicked".to_string())?
            .map_err(|e| format!("writing stdin to docker exec: {e}"))?;
        Ok(ExecOutput::from_output(output))
    }

    /// Runs `argv` (no shell) as `user` on a new pseudo-terminal (`docker exec --tty`);
    /// the terminal's output (line endings as the terminal made them) comes back as stdout.
    pub fn exec_tty(&self, user: &str, argv: &[&str]) -> Result<ExecOutput, String> {
        let output = Command::new("docker")
            .args(["exec", "--tty", "--user", user, &self.name])
            .args(argv)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("cannot run the docker CLI: {e}"))?;
        Ok(ExecOutput::from_output(output))
    }

    /// The container's processes as `docker top` lists them (`PID CMD` per line), seen
    /// from the host, so no program inside (shimmed or not) is needed.
    pub fn processes(&self) -> Result<Vec<String>, String> {
        let output = Command::new("docker")
            .args(["top", &self.name, "-o", "pid,args"])
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("cannot run the docker CLI: {e}"))?;
        if !output.status.success() {
            return Err(format!(
                "docker top {} failed: {}",
                self.name,
                String::from_utf8_lossy(&output.stderr).trim()
            ));
        }
        Ok(String::from_utf8_lossy(&output.stdout)
            .lines()
            .skip(1)
            .map(|l| l.trim().to_string())
            .collect())
    }

    /// `docker inspect -f FORMAT` of the container.
    pub fn inspect(&self, format: &str) -> Result<String, String> {
        let output = Command::new("docker")
            .args(["inspect", "-f", format, &self.name])
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("cannot run the docker CLI: {e}"))?;
        if output.status.success() {
            Ok(String::from_utf8_lossy(&output.stdout).trim().to_string())
        } else {
            Err(format!(
                "docker inspect {} failed: {}",
                self.name,
                String::from_utf8_lossy(&output.stderr).trim()
            ))
        }
    }

    /// Runs a `/bin/sh -c` script as `user`; `args` become `$1`, `$2`, ...
    pub fn sh(&self, user: &str, script: &str, args: &[&str]) -> Result<ExecOutput, String> {
        let mut argv = vec!["/bin/sh", "-c", script, "sh"];
        argv.extend_from_slice(args);
        self.exec(user, &argv)
    }

    /// Like [`Container::sh`], but a non-zero exit is an error carrying its output.
    pub fn sh_ok(&self, user: &str, script: &str, args: &[&str]) -> Result<String, String> {
        let out = self.sh(user, script, args)?;
        if out.success() {
            Ok(out.stdout_text())
        } else {
            Err(format!(
                "in {} ({}) as {user}, `sh -c {script:?}` with {args:?} failed: {out:?}",
                self.name, self.image
            ))
        }
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        if !self.owned {
            return;
        }
        let _ = Command::new("docker")
            .args(["rm", "--force", "--volumes", &self.name])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// A real `clawrden-warden` on the host running the `mirror` executor for one prisoner
/// container. Its socket directory is created first so that the container can mount it at
/// `/run/clawrden` ([`MirrorWarden::mount_arg`]) before the warden binds the socket.
pub struct MirrorWarden {
    dir: TempDir,
    state_dir: PathBuf,
    socket_dir: PathBuf,
    api_addr: std::net::SocketAddr,
    child: Option<std::process::Child>,
}

impl fmt::Debug for MirrorWarden {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MirrorWarden")
            .field("dir", &self.dir.path())
            .finish()
    }
}

impl MirrorWarden {
    /// A temp dir with the prisoner's socket directory (mode 0755) and a state dir;
    /// nothing runs yet.
    pub fn prepare(prisoner: &str) -> MirrorWarden {
        let dir = TempDir::new("mirror");
        let socket_dir = dir.path().join("run").join(prisoner);
        std::fs::create_dir_all(&socket_dir).expect("create the socket dir");
        let state_dir = dir.path().join("state");
        std::fs::create_dir_all(&state_dir).expect("create the state dir");
        MirrorWarden {
            dir,
            state_dir,
            socket_dir,
            api_addr: crate::warden::free_local_addr(),
            child: None,
        }
    }

    /// `-v HOST_SOCKET_DIR:/run/clawrden` for `docker run`.
    pub fn mount_arg(&self) -> String {
        format!("{}:/run/clawrden", self.socket_dir.display())
    }

    /// The state directory (audit under `audit/`).
    pub fn state_dir(&self) -> &Path {
        &self.state_dir
    }

    /// Runs the real `clawctl` with `args` against this warden's HTTP API, authenticated
    /// with the admin token the warden wrote to `<state-dir>/admin.token`.
    pub fn clawctl(&self, args: &[&str]) -> Result<ExecOutput, String> {
        let bins = binaries();
        let output = Command::new(&bins.clawctl)
            .arg("--url")
            .arg(format!("http://{}", self.api_addr))
            .arg("--token-file")
            .arg(self.state_dir.join("admin.token"))
            .args(args)
            .env_remove("CLAWRDEN_URL")
            .env_remove("CLAWRDEN_TOKEN")
            .env_remove("CLAWRDEN_TOKEN_FILE")
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("cannot run {}: {e}", bins.clawctl.display()))?;
        Ok(ExecOutput::from_output(output))
    }

    /// Starts the warden (`--config`, executors local and mirror, the HTTP API on a free
    /// 127.0.0.1 port) for `prisoner` in `container` with `policy`, and waits for its
    /// socket to accept.
    pub fn start(&mut self, prisoner: &str, container: &str, policy: &str) -> Result<(), String> {
        self.launch(prisoner, &format!("container: {container}"), policy)
    }

    /// Like [`MirrorWarden::start`], but the prisoner's container is the single running
    /// one with `label` (`KEY=VALUE`, the config's `container_label:`).
    pub fn start_by_label(
        &mut self,
        prisoner: &str,
        label: &str,
        policy: &str,
    ) -> Result<(), String> {
        self.launch(prisoner, &format!("container_label: {label}"), policy)
    }

    fn launch(&mut self, prisoner: &str, container_line: &str, policy: &str) -> Result<(), String> {
        let bins = binaries();
        let policy_path = self.dir.path().join("policy.yaml");
        std::fs::write(&policy_path, policy).map_err(|e| format!("write policy: {e}"))?;
        let socket = self.socket_dir.join("warden.sock");
        let config = format!(
            "policy: {}\nstate_dir: {}\nexecutors: [local, mirror]\nexec_helper: {}\nlog_format: json\nlisten: {}\nprisoners:\n  - name: {prisoner}\n    socket: {}\n    {container_line}\n",
            policy_path.display(),
            self.state_dir.display(),
            bins.shim.display(),
            self.api_addr,
            socket.display(),
        );
        let config_path = self.dir.path().join("warden.yaml");
        std::fs::write(&config_path, config).map_err(|e| format!("write warden.yaml: {e}"))?;
        self.spawn(&socket)
    }

    /// Starts the warden from the config [`MirrorWarden::start`] wrote (again, after
    /// [`MirrorWarden::kill_hard`]: same state directory, same socket) and waits for its
    /// socket. Its stderr is appended to the same log.
    pub fn restart(&mut self) -> Result<(), String> {
        let socket = self.socket_dir.join("warden.sock");
        self.spawn(&socket)
    }

    /// SIGKILLs the warden (no clean-up of its own) and reaps it.
    pub fn kill_hard(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn spawn(&mut self, socket: &Path) -> Result<(), String> {
        let bins = binaries();
        let config_path = self.dir.path().join("warden.yaml");
        let stderr = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("warden.stderr"))
            .map_err(|e| format!("open the warden's stderr file: {e}"))?;
        let child = Command::new(&bins.warden)
            .arg("--config")
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", bins.warden.display()))?;
        self.child = Some(child);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            if std::os::unix::net::UnixStream::connect(socket).is_ok() {
                return Ok(());
            }
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    return Err(format!(
                        "the warden exited with {status} before listening:\n{}",
                        self.log()
                    ));
                }
            }
            if std::time::Instant::now() > deadline {
                return Err(format!(
                    "the warden did not listen on {} within 10 s:\n{}",
                    socket.display(),
                    self.log()
                ));
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }

    /// Stops the warden (SIGTERM) and waits for it.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(child.id() as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
            let _ = child.wait();
        }
    }

    /// The warden's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("warden.stderr")).unwrap_or_default()
    }

    /// The audit events written so far.
    pub fn audit(&self) -> Vec<AuditEvent> {
        let path = self.state_dir.join("audit").join("audit.jsonl");
        parse_audit(&std::fs::read_to_string(path).unwrap_or_default())
    }

    /// Polls the audit (bounded, 20 s) until `want` finds what it looks for.
    pub fn wait_audit<T>(&self, what: &str, mut want: impl FnMut(&[AuditEvent]) -> Option<T>) -> T {
        crate::poll_until(what, std::time::Duration::from_secs(20), || {
            want(&self.audit())
        })
    }
}

impl Drop for MirrorWarden {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The audit events in `dir/audit.jsonl` (an audit directory copied off a volume).
pub fn read_audit_dir(dir: &Path) -> Vec<AuditEvent> {
    parse_audit(&std::fs::read_to_string(dir.join("audit.jsonl")).unwrap_or_default())
}

pub use crate::compose::{compose_command, ComposeOptions, ComposeStack};
