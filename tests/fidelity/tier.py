#!/usr/bin/env python3
"""Terminal and descriptor fidelity tier: what an agent's shell sees through Clawrden is
byte for byte what it sees without it.

The same command list runs twice, once where the tools are the real ones ("direct") and
once where they are Clawrden shims ("clawrden"), and the bytes and exit statuses are
compared:

- through one persistent bash on a pseudo-terminal, driven with pexpect, as agent
  runtimes that keep state between commands do (session cases);
- through one-shot `bash -c` calls with pipes, as `subprocess` users do (one-shot cases).

Targets:

  tier.py local --shim SHIM --socket SOCK --bin DIR --workdir DIR [--path PATH]
      direct: bash with PATH; clawrden: bash with DIR (shim symlinks, made here) first
      in PATH and CLAWRDEN_SOCKET=SOCK (a warden with the local executor).
  tier.py docker --direct CONTAINER --clawrden CONTAINER [--user U] [--workdir DIR]
      the same commands in two containers of one image, the second hardened with the
      tools shimmed and a mirror warden serving it.
  tier.py tools
      prints the tools the cases need shimmed, one per line.

Prints one line per case and exits 1 if any case differs (0 when all match), so a
caller can pin it in a test. Cases that need a tool the target lacks are skipped with
the reason printed.
"""

import argparse
import os
import re
import shutil
import subprocess
import sys
import time

try:
    import pexpect
except ImportError:  # pragma: no cover - reported to the caller
    print("FAIL fidelity tier: python3-pexpect is missing (apt-get install -y python3-pexpect)")
    sys.exit(2)

# Tools the cases run that must be Clawrden shims on the "clawrden" side. (bash itself,
# `script` and `timeout` stay real, as an agent runtime's own shell and helpers would;
# so does `sleep`, which the test containers run as their PID 1.)
TOOLS = [
    "cat", "sort", "head", "tail", "python3", "ls", "grep", "diff", "xargs", "wc", "find",
    "stty", "tput", "printf", "tty", "git", "od",
]

PROMPT = re.compile(rb"@@rc=(\d+)@@ ")
# A generous terminal: commands never wrap, and the size is part of what is compared.
ROWS, COLS = 30, 160
SESSION_TIMEOUT = 60
CALC_PY = """def add(a, b):
    return a + b


def mul(a, b):
    return a * b
"""

# The command line of the long-running command the session interrupts.
TAIL = b"tail\x00-f\x00/dev/null\x00"

ISATTY = "python3 -c 'import sys; print(sys.stdin.isatty(), sys.stdout.isatty(), sys.stderr.isatty())'"


class Skip(Exception):
    """The target lacks something a case needs."""


class Local:
    """Both sides on this host: direct tools from PATH, or shims in front of them."""

    def __init__(self, args, shimmed):
        self.shimmed = shimmed
        self.workdir = args.workdir
        self.path = args.path
        self.name = "clawrden" if shimmed else "direct"
        env = {
            "HOME": args.workdir,
            "TERM": "xterm",
            "LANG": "C.UTF-8",
            "PATH": args.path,
            "PS1": "@@rc=$?@@ ",
            "PS2": "> ",
        }
        if shimmed:
            os.makedirs(args.bin, exist_ok=True)
            for tool in TOOLS:
                link = os.path.join(args.bin, tool)
                if not os.path.lexists(link):
                    os.symlink(args.shim, link)
            env["PATH"] = args.bin + ":" + args.path
            env["CLAWRDEN_SOCKET"] = args.socket
        self.env = env

    def has(self, tool):
        return shutil.which(tool, path=self.path) is not None

    def oneshot(self, script, stdin):
        return subprocess.run(
            ["bash", "--norc", "--noprofile", "-c", script],
            input=stdin, capture_output=True, env=self.env, cwd=self.workdir, timeout=120,
        )

    def spawn(self):
        return pexpect.spawn(
            "bash", ["--norc", "--noprofile", "--noediting"], env=self.env,
            cwd=self.workdir, dimensions=(ROWS, COLS), timeout=SESSION_TIMEOUT,
        )

    def running(self, needle):
        """Pids of processes on this host whose command line is `needle` (argv, NUL-joined)."""
        found = []
        for pid in os.listdir("/proc"):
            if not pid.isdigit():
                continue
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    if f.read() == needle:
                        found.append(pid)
            except OSError:
                pass
        return found


class Docker:
    """One side in a container: `docker exec` as the agent user."""

    def __init__(self, container, args, name):
        self.shimmed = name == "clawrden"
        self.container = container
        self.user = args.user
        self.workdir = args.workdir
        self.name = name
        self.env = {"TERM": "xterm", "LANG": "C.UTF-8", "PS1": "@@rc=$?@@ ", "PS2": "> "}

    def _exec(self, tty):
        argv = ["docker", "exec", "-i", "-u", self.user, "-w", self.workdir]
        if tty:
            argv.append("-t")
        for k, v in self.env.items():
            argv += ["-e", f"{k}={v}"]
        return argv + [self.container]

    def has(self, tool):
        r = subprocess.run(
            ["docker", "exec", self.container, "sh", "-c", f"command -v {tool}"],
            capture_output=True,
        )
        return r.returncode == 0

    def oneshot(self, script, stdin):
        return subprocess.run(
            self._exec(False) + ["bash", "--norc", "--noprofile", "-c", script],
            input=stdin, capture_output=True, timeout=120,
        )

    def spawn(self):
        argv = self._exec(True) + ["bash", "--norc", "--noprofile", "--noediting"]
        return pexpect.spawn(
            argv[0], argv[1:], dimensions=(ROWS, COLS), timeout=SESSION_TIMEOUT,
            env=dict(os.environ),
        )

    def running(self, needle):
        script = (
            "for p in /proc/[0-9]*; do "
            "if [ \"$(tr '\\0' ' ' < $p/cmdline 2>/dev/null)\" = \"$1\" ]; then echo ${p#/proc/}; fi; "
            "done"
        )
        want = needle.replace(b"\0", b" ").decode()
        r = subprocess.run(
            ["docker", "exec", self.container, "sh", "-c", script, "sh", want],
            capture_output=True,
        )
        return r.stdout.split()


class Session:
    """One persistent bash on a pseudo-terminal."""

    def __init__(self, target):
        self.target = target
        self.child = target.spawn()
        self.child.expect(PROMPT)

    def run(self, line, interact=None):
        """Types `line`; `interact(child)` may drive the command; returns everything the
        terminal showed until the next prompt (the echo of the line included) and $?."""
        self.child.send(line.encode() + b"\n")
        shown = b""
        if interact is not None:
            shown += interact(self)
        self.child.expect(PROMPT)
        return shown + self.child.before, int(self.child.match.group(1))

    def wait_for(self, pattern, timeout=SESSION_TIMEOUT):
        """Output up to and including `pattern` (bytes regex)."""
        self.child.expect(pattern, timeout=timeout)
        return self.child.before + self.child.after

    def close(self):
        self.child.sendline(b"exit")
        self.child.expect(pexpect.EOF)
        self.child.close()


# ---- the cases ----------------------------------------------------------------------

def session_cases():
    """(name, tools needed, line, interact, expect) for the PTY session. `expect` is None
    (same as direct) or a function (target name, bytes, rc) -> error or None for targets
    where Clawrden must differ on purpose."""

    def wait_running(needle):
        def drive(s):
            # Through Clawrden the shim itself carries the same command line: wait for the
            # command too, so Ctrl-C reaches a running command, not a shim still starting.
            want = 2 if s.target.shimmed else 1
            deadline = time.monotonic() + SESSION_TIMEOUT
            while len(s.target.running(needle)) < want:
                if time.monotonic() > deadline:
                    raise AssertionError(f"{needle!r} never started")
                time.sleep(0.05)
            s.child.send(b"\x03")
            return b""
        return drive

    def outlive_harness_timeout(s):
        # The harness gives up waiting after 1 s (pexpect.TIMEOUT); the output so far stays
        # buffered, and the command's end is then awaited as usual.
        try:
            s.child.expect(PROMPT, timeout=1)
        except pexpect.TIMEOUT:
            return b""
        raise AssertionError("the command ended within 1 s")

    # What the command prints, not the echo of the typed line (which holds the same words):
    # keys typed before the command is ready would be echoed, or flushed by it.
    def curses_key(s):
        shown = s.wait_for(rb"\x1b\[2Jhi")
        s.child.send(b"q")
        return shown

    def password(s):
        shown = s.wait_for(rb"\r\npw: ")
        s.child.send(b"secret\n")
        return shown

    no_fd_passing = (
        "clawrden: denied: argument /dev/fd/63 names descriptor 63 of the caller, which the "
        "mirror executor cannot pass to the command"
    )

    def denied_on_mirror(target, shown, rc):
        if target != "mirror":
            return "same as direct"
        if rc != 126 or no_fd_passing.encode() not in shown:
            return f"expected exit 126 and {no_fd_passing!r}, got {rc}: {shown!r}"
        return None

    return [
        # The rows.
        ("git diff into a pipe starts no pager", ["git", "head"],
         "git diff --color=always HEAD~1 | head -n 8", None, None),
        ("ls --color=auto into a pipe has no colour", ["ls", "head"],
         "ls --color=auto / | head -n 3", None, None),
        ("cat | sort | head keeps the terminal's newlines", ["cat", "sort", "head"],
         "cat calc.py | sort | head -n 3", None, None),
        ("python3 under script with stdin at EOF sees EOF, not a NUL", ["python3"],
         "for i in 1 2 3 4 5 6 7 8 9 10 11 12; do script -qec \"python3 -c 'print(1)'\" /dev/null < /dev/null; done",
         None, None),
        ("nested calls: find | xargs wc -l", ["find", "xargs", "wc"],
         "find . -name '*.py' | xargs wc -l", None, None),
        ("diff of two process substitutions", ["diff"],
         "diff <(printf 'a\\n') <(printf 'b\\n')", None, denied_on_mirror),
        # Each descriptor keeps its nature: all eight isatty combinations.
        ("isatty 0 1 2 = T T T", ["python3"], ISATTY, None, None),
        ("isatty 0 1 2 = F T T", ["python3"], ISATTY + " < /dev/null", None, None),
        ("isatty 0 1 2 = T F T", ["python3", "cat"], ISATTY + " | cat", None, None),
        ("isatty 0 1 2 = T T F", ["python3", "cat"], "{ " + ISATTY + " 2>&1 >&3 | cat >&2; } 3>&1", None, None),
        ("isatty 0 1 2 = F F T", ["python3", "cat"], ISATTY + " < /dev/null | cat", None, None),
        ("isatty 0 1 2 = F T F", ["python3", "cat"], "{ " + ISATTY + " < /dev/null 2>&1 >&3 | cat >&2; } 3>&1", None, None),
        ("isatty 0 1 2 = T F F", ["python3", "cat"], ISATTY + " 2>&1 | cat", None, None),
        ("isatty 0 1 2 = F F F", ["python3", "cat"], ISATTY + " < /dev/null 2>&1 | cat", None, None),
        # The command's terminal is the caller's.
        ("stty size and tput cols", ["stty", "tput"], "stty size; tput cols", None, None),
        ("onlcr off is the command's too", ["stty", "printf"],
         "stty -onlcr; printf 'a\\nb\\n'; stty onlcr", None, None),
        ("stty -echo inside a command stays after it", ["stty", "printf"],
         "stty -echo", None, None),
        ("typing while echo is off", ["printf"], "printf 'typed unseen\\n'", None, None),
        ("stty echo restores it", ["stty"], "stty echo", None, None),
        ("a password prompt with echo off", ["python3"],
         "python3 -c \"import getpass; print(repr(getpass.getpass('pw: ')))\"", password, None),
        ("a full-screen program started and quit", ["python3"],
         "python3 -c \"import curses; curses.wrapper(lambda s: (s.addstr(0, 0, 'hi'), s.refresh(), s.getch()))\"",
         curses_key, None),
        ("a pager that quits on one screen", ["git", "less"], "git log --oneline -3", None, None),
        ("colours forced into a pipe", ["grep", "cat"], "grep --color=always mul calc.py | cat", None, None),
        # Plain shell use.
        ("a here-document", ["cat"], "cat <<'EOF'\nline one\n  line two\nEOF", None, None),
        ("stdin from a file", ["sort", "wc"], "sort < calc.py; wc -l < calc.py", None, None),
        ("exit statuses", ["python3"], "python3 -c 'raise SystemExit(7)'", None, None),
        ("Ctrl-C kills the command with SIGINT and the prompt comes back", ["tail"],
         "tail -f /dev/null", wait_running(TAIL), None),
        ("nothing of it is left running", [], "echo after-ctrl-c", None, None),
        # timeout(1) runs the command in a process group of its own, in the terminal's
        # background: the command must still run (and print), not stop on SIGTTOU.
        ("a command outlives the harness's timeout, then timeout(1)'s", ["python3", "timeout"],
         "timeout 3 python3 -c \"import time; print('ran', flush=True); time.sleep(30)\"",
         outlive_harness_timeout, None),
    ]


def oneshot_cases():
    """(name, tools, script, stdin, expect) for one-shot `bash -c` calls with pipes."""

    def denied_on_mirror(target, out, rc):
        if target != "mirror":
            return "same as direct"
        if b"clawrden: denied: argument /dev/fd/" not in out:
            return f"expected a /dev/fd denial, got {rc}: {out!r}"
        return None

    return [
        ("a pipeline of shimmed and plain tools", ["sort", "cat"],
         "printf 'b\\na\\n' | sort | tr a-z A-Z | cat -A", b"", None),
        ("isatty of pipes is F F F", ["python3"], ISATTY, b"x", None),
        ("isatty with stdin at /dev/null is F F F", ["python3"], ISATTY + " < /dev/null", b"", None),
        ("diff of two process substitutions", ["diff"],
         "diff <(printf 'a\\n') <(printf 'b\\n'); echo rc=$?", b"", denied_on_mirror),
        ("cat of a process substitution", ["cat"], "cat <(printf 'from a pipe\\n')", b"", denied_on_mirror),
        ("while read -u 3 with a shimmed tool inside", ["cat", "head"],
         "while read -u 3 l; do echo \"got $l\" | cat; head -n 1 /dev/fd/3; done 3< <(printf '1\\n2\\n3\\n4\\n')",
         b"", denied_on_mirror),
        ("exec 3>file; tool >&3", ["cat"],
         "exec 3>out.txt; printf 'to fd 3\\n' | cat >&3; exec 3>&-; cat out.txt", b"", None),
        ("a here-document", ["cat"], "cat <<'EOF'\nline one\n\tline two\nEOF", b"", None),
        ("stdin from a file and from the pipe", ["sort", "wc"],
         "sort < calc.py; wc -c", b"0123456789", None),
        ("colours: auto into a pipe, always forced", ["ls", "grep"],
         "ls --color=auto /; grep --color=always add calc.py", b"", None),
        ("stderr and exit status", ["python3"],
         "python3 -c 'import sys; sys.stderr.write(\"err\\n\"); sys.exit(3)'", b"", None),
        ("death by signal", ["tail"], "tail -f /dev/null & kill -TERM $!; wait $!; echo rc=$?", b"", None),
        ("nested calls: find | xargs wc -l", ["find", "xargs", "wc"],
         "find . -name '*.py' | xargs wc -l", b"", None),
        ("od of binary stdin", ["od"], "od -An -tx1", bytes(range(256)), None),
    ]


def prepare(target):
    """The workspace every case expects: calc.py, and a git repository when git exists."""
    script = (
        "cat > calc.py; "
        "if command -v git >/dev/null; then "
        "rm -rf .git; git init -q . && git add calc.py && "
        "git -c user.name=t -c user.email=t@t commit -qm first && "
        "sed -i 's/a \\* b/a * b * 1/' calc.py && "
        "git -c user.name=t -c user.email=t@t commit -qam second; fi"
    )
    r = target.oneshot(script, CALC_PY.encode())
    if r.returncode != 0:
        raise SystemExit(f"cannot prepare the workspace of {target.name}: {r.stderr!r}")


def run(direct, clawrden, label):
    failures = []
    ran = 0

    def report(kind, name, problem, expected=False):
        nonlocal ran
        ran += 1
        if problem:
            failures.append(f"{kind}: {name}: {problem}")
            print(f"DIFF {kind}: {name}\n     {problem}")
        elif expected:
            print(f"OK   {kind}: {name} (differs from a direct run as it must here)")
        else:
            print(f"SAME {kind}: {name}")

    def missing(tools):
        return [t for t in tools if not (direct.has(t) and clawrden.has(t))]

    for name, tools, script, stdin, expect in oneshot_cases():
        lacking = missing(tools)
        if lacking:
            print(f"SKIP one-shot: {name}: no {', '.join(lacking)} here")
            continue
        d = direct.oneshot(script, stdin)
        c = clawrden.oneshot(script, stdin)
        if expect is not None:
            problem = expect(label, c.stdout + c.stderr, c.returncode)
            if problem != "same as direct":
                report("one-shot", name, problem, expected=True)
                continue
        problem = None
        if (d.returncode, d.stdout, d.stderr) != (c.returncode, c.stdout, c.stderr):
            problem = (
                f"direct: rc={d.returncode} out={d.stdout!r} err={d.stderr!r}\n"
                f"     clawrden: rc={c.returncode} out={c.stdout!r} err={c.stderr!r}"
            )
        report("one-shot", name, problem)

    sessions = {}
    try:
        for side in (direct, clawrden):
            sessions[side.name] = Session(side)
        for name, tools, line, interact, expect in session_cases():
            lacking = missing(tools)
            if lacking:
                print(f"SKIP session: {name}: no {', '.join(lacking)} here")
                continue
            got = {}
            for side in (direct, clawrden):
                try:
                    got[side.name] = sessions[side.name].run(line, interact)
                except (pexpect.TIMEOUT, pexpect.EOF, AssertionError) as e:
                    got[side.name] = (f"<{type(e).__name__}: {e}>".encode(), -1)
            (d_out, d_rc), (c_out, c_rc) = got["direct"], got["clawrden"]
            if expect is not None:
                problem = expect(label, c_out, c_rc)
                if problem != "same as direct":
                    report("session", name, problem, expected=True)
                    continue
            problem = None
            if (d_out, d_rc) != (c_out, c_rc):
                problem = (
                    f"direct: rc={d_rc} shown={d_out!r}\n"
                    f"     clawrden: rc={c_rc} shown={c_out!r}"
                )
            report("session", name, problem)
            if name.startswith("Ctrl-C"):
                for side in (direct, clawrden):
                    left = side.running(TAIL)
                    if left:
                        report("session", f"{name} ({side.name})", f"still running: pids {left}")
    finally:
        for s in sessions.values():
            try:
                s.close()
            except Exception:  # noqa: BLE001 - a broken session is already reported
                pass

    print(f"{ran} cases compared, {len(failures)} differ ({label})")
    return 1 if failures else 0


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="target", required=True)
    local = sub.add_parser("local")
    local.add_argument("--shim", required=True)
    local.add_argument("--socket", required=True)
    local.add_argument("--bin", required=True)
    local.add_argument("--workdir", required=True)
    local.add_argument("--path", default="/usr/local/bin:/usr/bin:/bin")
    docker = sub.add_parser("docker")
    docker.add_argument("--direct", required=True)
    docker.add_argument("--clawrden", required=True)
    docker.add_argument("--user", default="agent")
    docker.add_argument("--workdir", default="/workspace")
    sub.add_parser("tools")
    args = parser.parse_args()

    if args.target == "tools":
        print("\n".join(TOOLS))
        return 0
    if args.target == "local":
        direct, clawrden = Local(args, False), Local(args, True)
        label = "local"
    else:
        direct = Docker(args.direct, args, "direct")
        clawrden = Docker(args.clawrden, args, "clawrden")
        label = "mirror"
    prepare(direct)
    if args.target == "docker":
        # Locally both sides share one workspace.
        prepare(clawrden)
    return run(direct, clawrden, label)


if __name__ == "__main__":
    sys.exit(main())
