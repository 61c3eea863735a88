"""A real clawrden-warden with two prisoners, real shim calls, and a headless Chromium.

Nothing here is mocked: the warden is the built binary (target/debug, or CLAWRDEN_BIN_DIR),
its prisoners' calls come from the built shim symlinked under tool names, and the browser
is Debian's chromium driven through Debian's chromedriver.
"""

import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PRISONERS = ("agent-1", "agent-2")
TOOLS = ("echo", "printf", "cat", "sh", "true", "rm", "git", "curl", "kubectl", "sleep")

POLICY = """\
version: 1
default_action: ask
default_timeout: 2m
approval_timeout: 10m
default_executor: local
rules:
  - name: read-only-tools
    command: [printf, cat, true]
    action: allow
  - name: no-recursive-rm
    command: rm
    flags: [-r, -R, --recursive]
    action: deny
    reason: recursive delete needs a person; ask the operator
  - name: git-push
    command: git
    args: ["push", "**"]
    action: ask
    reason: pushing publishes code; a person checks the branch
  - name: network-fetch
    command: [curl]
    action: ask
    reason: network access leaves the prisoner
  # The commands sh runs reach this warden again: the shims come first in the warden's
  # command_path, and CLAWRDEN_SOCKET always reaches the command.
  - name: shell
    command: sh
    action: ask
"""


def bin_dir() -> Path:
    return Path(os.environ.get("CLAWRDEN_BIN_DIR", REPO / "target" / "debug"))


def browser_paths():
    """(chromium, chromedriver) or raises RuntimeError saying what is missing."""
    chromium = os.environ.get("CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    driver = os.environ.get("CHROMEDRIVER") or shutil.which("chromedriver")
    missing = []
    if not chromium:
        missing.append("chromium (apt-get install -y chromium)")
    if not driver:
        missing.append("chromedriver (apt-get install -y chromium-driver)")
    try:
        import selenium  # noqa: F401
    except ImportError:
        missing.append("selenium (pip install selenium)")
    if missing:
        raise RuntimeError("missing " + ", ".join(missing))
    return chromium, driver


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Warden:
    """One running warden in a temp dir; stop() ends it."""

    def __init__(self):
        bins = bin_dir()
        self.warden_bin = bins / "clawrden-warden"
        self.shim_bin = bins / "clawrden-shim"
        for b in (self.warden_bin, self.shim_bin):
            if not b.is_file():
                raise RuntimeError(f"{b} is missing; build it with `cargo build --workspace --bins`")
        self.dir = Path(tempfile.mkdtemp(prefix="clawrden-browser-"))
        self.state = self.dir / "state"
        self.state.mkdir()
        self.bin = self.dir / "bin"
        self.bin.mkdir()
        for tool in TOOLS:
            (self.bin / tool).symlink_to(self.shim_bin)
        self.work = self.dir / "work"
        self.work.mkdir()
        (self.dir / "policy.yaml").write_text(POLICY)
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.sockets = {p: self.dir / f"{p}.sock" for p in PRISONERS}
        config = [
            f"policy: {self.dir / 'policy.yaml'}",
            f"state_dir: {self.state}",
            "executors: [local]",
            # The test's own user calls and runs the commands (as any user, root included).
            "allow_run_as_warden: true",
            f"command_path: {self.bin}:/usr/bin:/bin",
            f"exec_helper: {self.shim_bin}",
            "log_format: json",
            f"listen: 127.0.0.1:{self.port}",
            "prisoners:",
        ]
        for name, sock in self.sockets.items():
            config += [f"  - name: {name}", f"    socket: {sock}"]
        (self.dir / "warden.yaml").write_text("\n".join(config) + "\n")
        self.log = open(self.dir / "warden.log", "wb")
        self.proc = subprocess.Popen(
            [str(self.warden_bin), "--config", str(self.dir / "warden.yaml")],
            stdin=subprocess.DEVNULL, stdout=self.log, stderr=subprocess.STDOUT,
            env={"PATH": "/usr/bin:/bin", "HOME": "/"},
        )
        deadline = time.monotonic() + 15
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the warden exited with {self.proc.returncode}: {self.log_text()}")
            try:
                with urllib.request.urlopen(self.base + "/healthz", timeout=1) as r:
                    if r.status == 200 and all(s.exists() for s in self.sockets.values()):
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("the warden did not answer /healthz within 15 s: " + self.log_text())
            time.sleep(0.05)
        self.admin_token = (self.state / "admin.token").read_text().strip()
        self.calls = []

    def log_text(self) -> str:
        try:
            return (self.dir / "warden.log").read_text()[-4000:]
        except OSError:
            return ""

    def create_token(self, name: str, scope: str) -> str:
        out = subprocess.run(
            [str(self.warden_bin), "token", "create", "--state-dir", str(self.state),
             "--name", name, "--scope", scope],
            check=True, capture_output=True, text=True, timeout=30,
        )
        token = out.stdout.strip().splitlines()[-1].strip()
        assert token.startswith("clwd_"), out.stdout
        return token

    def call(self, tool: str, *args: str, prisoner: str = "agent-1", env=None) -> subprocess.Popen:
        """Starts a shim call as `tool args...` from the given prisoner (with `env` added
        to its environment)."""
        # argv[0] is the bare tool name, as when a prisoner finds the shim through PATH.
        p = subprocess.Popen(
            [tool, *args], executable=str(self.bin / tool), cwd=self.work,
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            env={"PATH": f"{self.bin}:/usr/bin:/bin", "HOME": "/",
                 "CLAWRDEN_SOCKET": str(self.sockets[prisoner]), **(env or {})},
        )
        self.calls.append(p)
        return p

    def run(self, tool: str, *args: str, prisoner: str = "agent-1"):
        """Runs a shim call to completion: (status, stdout, stderr)."""
        p = self.call(tool, *args, prisoner=prisoner)
        out, err = p.communicate(timeout=60)
        return p.returncode, out.decode(), err.decode()

    def api(self, method: str, path: str, body=None, token=None, headers=None):
        """(status, parsed JSON or text) of an API call with a bearer token (admin by default)."""
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.base + path, data=data, method=method)
        req.add_header("Authorization", "Bearer " + (token or self.admin_token))
        if data is not None:
            req.add_header("Content-Type", "application/json")
        for k, v in (headers or {}).items():
            req.add_header(k, v)
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                return r.status, _decode(r.read(), r.headers), r.headers
        except urllib.error.HTTPError as e:
            return e.code, _decode(e.read(), e.headers), e.headers

    def raw(self, method: str, path: str, body=None, headers=None):
        """(status, text, headers) of a request with only the given headers."""
        data = None if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
        req = urllib.request.Request(self.base + path, data=data, method=method)
        for k, v in (headers or {}).items():
            req.add_header(k, v)
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                return r.status, r.read().decode(), r.headers
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode(), e.headers

    def pending(self):
        status, data, _ = self.api("GET", "/api/v1/requests?state=pending&limit=500")
        assert status == 200, data
        return data["requests"]

    def wait_pending(self, marker: str, timeout: float = 10.0, parent=None) -> dict:
        """The pending request whose argv contains `marker` (and whose parent_request is
        `parent`, when given), by a bounded poll."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for r in self.pending():
                if parent is not None and r["parent_request"] != parent:
                    continue
                if any(isinstance(t, str) and marker in t for t in r["argv"]):
                    return r
            time.sleep(0.05)
        raise AssertionError(f"no pending request with {marker!r} within {timeout}s")

    def deny_all_pending(self):
        for r in self.pending():
            self.api("POST", f"/api/v1/requests/{r['id']}/deny", {"reason": "test cleanup"})

    def stop(self):
        self.deny_all_pending() if self.proc.poll() is None else None
        for p in self.calls:
            if p.poll() is None:
                p.kill()
            p.wait()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
        shutil.rmtree(self.dir, ignore_errors=True)


def _decode(raw: bytes, headers):
    text = raw.decode()
    if "json" in (headers.get("Content-Type") or ""):
        try:
            return json.loads(text)
        except ValueError:
            return text
    return text


def start_browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    chromium, driver = browser_paths()
    opts = webdriver.ChromeOptions()
    opts.binary_location = chromium
    for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
              "--window-size=1280,800", "--hide-scrollbars", "--force-color-profile=srgb",
              "--lang=en-US", "--no-first-run", "--disable-extensions",
              "--disable-background-networking", "--disable-component-update"):
        opts.add_argument(a)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(executable_path=driver), options=opts)
