//! Building the `Request` for an intercepted call: argv, env and cwd byte-exact, the path
//! of the shimmed tool that ran, and what the shim's descriptors are.

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use clawrden_protocol::{ExtraFd, FdKind, Request, Terminal, PARENT_REQUEST_ENV};
use nix::fcntl::{fcntl, open, FcntlArg, OFlag};
use nix::sys::stat::{fstat, stat, FileStat, Mode, SFlag};

use crate::descriptors;

/// `PATH` used when the variable is unset (musl's execvp default).
const DEFAULT_PATH: &str = "/usr/local/bin:/bin:/usr/bin";

/// What the shim found on its standard descriptors at start.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stdio {
    /// Kinds of fds 0, 1 and 2.
    pub kinds: [FdKind; 3],
}

impl Stdio {
    /// The first standard descriptor that is a terminal: the one the command's PTY is
    /// made like.
    pub fn terminal_fd(&self) -> Option<u8> {
        (0..3u8).find(|&i| self.kinds[i as usize] == FdKind::Terminal)
    }

    /// fd 0 was open.
    pub fn stdin_open(&self) -> bool {
        self.kinds[0] != FdKind::Closed
    }
}

/// Records what fds 0, 1, 2 are and points every closed one at /dev/null, so the warden
/// socket can never land on a standard descriptor (where command output written to
/// "stdout" would corrupt the protocol stream).
pub fn probe_stdio() -> Result<Stdio, String> {
    let stdin_closed = !is_open(0) || reopened_by_runtime(0);
    let mut kinds = [FdKind::Closed; 3];
    for fd in 0..=2 {
        if !is_open(fd) {
            // open() returns the lowest free descriptor, which is `fd` here.
            let got = open("/dev/null", OFlag::O_RDWR, Mode::empty())
                .map_err(|e| format!("fd {fd} is closed and /dev/null cannot be opened: {e}"))?;
            if got != fd {
                return Err(format!("fd {fd} is closed and could not be reopened"));
            }
        } else if !(fd == 0 && stdin_closed) {
            kinds[fd as usize] = descriptors::kind_of(fd);
        }
    }
    Ok(Stdio { kinds })
}

fn is_open(fd: i32) -> bool {
    fcntl(fd, FcntlArg::F_GETFD).is_ok()
}

/// Rust's runtime, before `main`, reopens a closed standard descriptor as /dev/null with
/// O_RDWR. A shell's `</dev/null` is O_RDONLY, so "/dev/null opened read-write" on fd 0
/// is taken to mean "fd 0 was closed". (A parent that deliberately passes a read-write
/// /dev/null as stdin is reported as closed too; both mean immediate end of input.)
fn reopened_by_runtime(fd: i32) -> bool {
    let read_write = fcntl(fd, FcntlArg::F_GETFL)
        .is_ok_and(|fl| OFlag::from_bits_truncate(fl) & OFlag::O_ACCMODE == OFlag::O_RDWR);
    let is_char_dev = |st: &FileStat| st.st_mode & SFlag::S_IFMT.bits() == SFlag::S_IFCHR.bits();
    read_write
        && match (fstat(fd), stat("/dev/null")) {
            (Ok(fd_st), Ok(null_st)) => {
                is_char_dev(&fd_st) && is_char_dev(&null_st) && fd_st.st_rdev == null_st.st_rdev
            }
            _ => false,
        }
}

/// Absolute path of the shimmed tool that ran. If `argv0` contains '/', it is made
/// absolute against `cwd` lexically (no symlink is resolved: the symlink *is* the tool
/// that ran). Otherwise it is the first `dir/argv0` in `path_var` (or the default PATH)
/// that `is_executable` accepts, which is what execvp/the shell ran; an empty PATH entry
/// means the current directory. `None` if nothing matches.
pub fn tool_path(
    argv0: &OsStr,
    cwd: &Path,
    path_var: Option<&OsStr>,
    is_executable: impl Fn(&Path) -> bool,
) -> Option<PathBuf> {
    let name = argv0.as_bytes();
    if name.is_empty() {
        return None;
    }
    if name.contains(&b'/') {
        return Some(absolute(cwd, Path::new(argv0)));
    }
    let path_var = path_var.unwrap_or(OsStr::new(DEFAULT_PATH));
    path_var
        .as_bytes()
        .split(|&c| c == b':')
        .map(|dir| {
            let dir = if dir.is_empty() { b"." as &[u8] } else { dir };
            absolute(cwd, &Path::new(OsStr::from_bytes(dir)).join(argv0))
        })
        .find(|candidate| is_executable(candidate))
}

/// `p` made absolute against `cwd`, with `.` components and repeated slashes removed.
/// `..` is kept: resolving it lexically would be wrong across symlinks.
fn absolute(cwd: &Path, p: &Path) -> PathBuf {
    cwd.join(p).components().collect()
}

/// A regular file with an execute bit (after following symlinks), as execve needs.
pub fn is_executable_file(p: &Path) -> bool {
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Everything a request is built from, gathered by [`gather`] or given by tests.
#[derive(Debug)]
pub struct Inputs {
    pub argv: Vec<OsString>,
    pub env: Vec<(OsString, OsString)>,
    pub cwd: PathBuf,
    pub stdio: [FdKind; 3],
    pub terminal: Option<Terminal>,
    pub extra_fds: Vec<ExtraFd>,
    pub extra_fds_dropped: u32,
}

/// Builds the request from `inputs`; pure, so the byte-exactness is testable. Descriptors
/// are attached whenever there is one to attach (see [`Request::attached_fds`]).
pub fn build(inputs: Inputs) -> Request {
    let path_var = env_value(&inputs.env, "PATH");
    let tool_path = inputs
        .argv
        .first()
        .and_then(|argv0| tool_path(argv0, &inputs.cwd, path_var, is_executable_file))
        .map(|p| p.into_os_string().into_vec())
        .unwrap_or_default();
    let parent_request = env_value(&inputs.env, PARENT_REQUEST_ENV)
        .filter(|v| !v.is_empty())
        .map(|v| v.to_string_lossy().into_owned());
    let mut request = Request {
        argv: inputs.argv.into_iter().map(OsString::into_vec).collect(),
        tool_path,
        cwd: inputs.cwd.into_os_string().into_vec(),
        env: inputs
            .env
            .into_iter()
            .map(|(k, v)| (k.into_vec(), v.into_vec()))
            .collect(),
        parent_request,
        stdio: inputs.stdio,
        terminal: inputs.terminal,
        extra_fds: inputs.extra_fds,
        extra_fds_dropped: inputs.extra_fds_dropped,
        fds_attached: false,
    };
    request.fds_attached = !request.attached_fds().is_empty();
    request
}

fn env_value<'a>(env: &'a [(OsString, OsString)], name: &str) -> Option<&'a OsStr> {
    env.iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_os_str())
}

/// Gathers this process's argv/env/cwd/descriptor facts into [`Inputs`].
pub fn gather(argv: Vec<OsString>, stdio: Stdio) -> Result<Inputs, String> {
    let cwd = std::env::current_dir().map_err(|e| {
        format!("cannot read the current directory: {e}; cd into an existing directory")
    })?;
    let env: Vec<(OsString, OsString)> = std::env::vars_os().collect();
    let terminal = stdio
        .terminal_fd()
        .map(|fd| descriptors::terminal_of(fd, env_value(&env, "TERM").map(OsStr::as_bytes)))
        .transpose()?;
    let (extra_fds, extra_fds_dropped) = descriptors::inheritable_extra_fds();
    Ok(Inputs {
        argv,
        env,
        cwd,
        stdio: stdio.kinds,
        terminal,
        extra_fds,
        extra_fds_dropped,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn never(_: &Path) -> bool {
        false
    }

    #[test]
    fn relative_argv0_with_slash_is_made_absolute_without_resolving() {
        let p = tool_path(
            OsStr::new("./bin/git"),
            Path::new("/work/repo"),
            None,
            never,
        );
        assert_eq!(p, Some(PathBuf::from("/work/repo/bin/git")));
        let p = tool_path(OsStr::new("../x//git"), Path::new("/a/b"), None, never);
        assert_eq!(p, Some(PathBuf::from("/a/b/../x/git")));
    }

    #[test]
    fn absolute_argv0_is_kept() {
        let p = tool_path(OsStr::new("/usr/bin/curl"), Path::new("/tmp"), None, never);
        assert_eq!(p, Some(PathBuf::from("/usr/bin/curl")));
    }

    #[test]
    fn bare_name_takes_first_executable_in_path() {
        let exists = |p: &Path| p == Path::new("/opt/shims/git") || p == Path::new("/usr/bin/git");
        let p = tool_path(
            OsStr::new("git"),
            Path::new("/"),
            Some(OsStr::new("/nope:/opt/shims:/usr/bin")),
            exists,
        );
        assert_eq!(p, Some(PathBuf::from("/opt/shims/git")));
    }

    #[test]
    fn empty_path_entry_means_cwd() {
        let exists = |p: &Path| p == Path::new("/home/a/git");
        let p = tool_path(
            OsStr::new("git"),
            Path::new("/home/a"),
            Some(OsStr::new("/usr/bin::/bin")),
            exists,
        );
        assert_eq!(p, Some(PathBuf::from("/home/a/git")));
    }

    #[test]
    fn unset_path_uses_default_and_missing_tool_is_none() {
        let exists = |p: &Path| p == Path::new("/bin/ls");
        assert_eq!(
            tool_path(OsStr::new("ls"), Path::new("/"), None, exists),
            Some(PathBuf::from("/bin/ls"))
        );
        assert_eq!(
            tool_path(OsStr::new("nope"), Path::new("/"), None, exists),
            None
        );
        assert_eq!(
            tool_path(OsStr::new(""), Path::new("/"), None, exists),
            None
        );
    }

    #[test]
    fn request_keeps_non_utf8_bytes_exactly() {
        let raw = |b: &[u8]| OsStr::from_bytes(b).to_os_string();
        let inputs = Inputs {
            argv: vec![raw(b"/t/tool"), raw(b"\xff\xfe arg"), raw(b"")],
            env: vec![
                (raw(b"NAME\x80"), raw(b"val\xc3\x28")),
                (raw(b"CLAWRDEN_PARENT_REQUEST"), raw(b"req-17")),
            ],
            cwd: PathBuf::from(raw(b"/w/\xe9t\xe9")),
            stdio: [FdKind::Pipe, FdKind::Pipe, FdKind::File],
            terminal: None,
            extra_fds: vec![ExtraFd {
                fd: 63,
                kind: FdKind::Pipe,
            }],
            extra_fds_dropped: 0,
        };
        let r = build(inputs);
        assert_eq!(
            r.argv,
            vec![b"/t/tool".to_vec(), b"\xff\xfe arg".to_vec(), Vec::new()]
        );
        assert_eq!(r.tool_path, b"/t/tool".to_vec());
        assert_eq!(r.cwd, b"/w/\xe9t\xe9".to_vec());
        assert_eq!(
            r.env,
            vec![
                (b"NAME\x80".to_vec(), b"val\xc3\x28".to_vec()),
                (b"CLAWRDEN_PARENT_REQUEST".to_vec(), b"req-17".to_vec()),
            ]
        );
        assert_eq!(r.parent_request.as_deref(), Some("req-17"));
        assert!(r.stdin_open() && r.fds_attached && r.terminal.is_none());
        assert_eq!(r.attached_fds(), vec![0, 1, 2, 63]);
        // And it survives the wire unchanged.
        let mut frame = Vec::new();
        clawrden_protocol::Message::Request(r.clone())
            .encode(&mut frame)
            .unwrap();
        let (decoded, used) = clawrden_protocol::decode_frame(&frame).unwrap().unwrap();
        assert_eq!(used, frame.len());
        assert_eq!(decoded, clawrden_protocol::Message::Request(r));
    }

    #[test]
    fn empty_parent_request_is_absent_and_a_terminal_is_not_attached() {
        let terminal = Terminal {
            termios: clawrden_protocol::Termios {
                iflag: 1,
                oflag: 2,
                cflag: 3,
                lflag: 4,
                cc: vec![3, 28],
            },
            size: clawrden_protocol::WinSize {
                rows: 24,
                cols: 80,
                xpixel: 0,
                ypixel: 0,
            },
            term: b"xterm".to_vec(),
        };
        let inputs = Inputs {
            argv: vec!["/x".into()],
            env: vec![("CLAWRDEN_PARENT_REQUEST".into(), "".into())],
            cwd: "/".into(),
            stdio: [FdKind::Terminal, FdKind::Terminal, FdKind::Terminal],
            terminal: Some(terminal.clone()),
            extra_fds: Vec::new(),
            extra_fds_dropped: 0,
        };
        let r = build(inputs);
        assert_eq!(r.parent_request, None);
        assert_eq!(r.terminal, Some(terminal));
        assert!(
            !r.fds_attached,
            "nothing to attach when every descriptor is the terminal"
        );
    }
}
