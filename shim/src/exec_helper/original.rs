//! `--original-root`: finding and opening the original of a shimmed command, as root, by
//! the command's *name* (the one the policy decided on), and seeing through script tools
//! whose interpreter is shimmed too.
//!
//! install-clawrden.sh moves each tool's original to `<root><physical path>` and leaves a
//! symlink to the shim in its place. The helper is given only the command name (the
//! basename of `argv[0]`, which the warden's policy matched); the path the shim saw is never
//! used to choose what runs. The original is the first `<root><DIR>/<NAME>` that exists,
//! for DIR in [`SEARCH_DIRS`] and then the directories of the other tools listed in the
//! install manifest (`<root>/../manifest`, root-owned), in manifest order. See
//! docs/docker.md ("Which original runs").

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};

use nix::fcntl::{fcntl, FcntlArg, FdFlag};

/// Longest `#!` line the kernel reads (BINPRM_BUF_SIZE).
const SHEBANG_MAX: usize = 256;
/// File name of the shim binary; a tool that is a symlink to it is shimmed.
const SHIM_FILE_NAME: &[u8] = b"clawrden-shim";
/// Longest manifest the helper reads (a line per shimmed tool).
const MANIFEST_MAX: u64 = 1 << 20;

/// Directories searched first, in this order, for the original of a command name: the
/// standard `PATH` of a Debian or Alpine root, so a name shimmed in several of them runs
/// the same original a default `PATH` lookup would have found.
pub const SEARCH_DIRS: [&str; 6] = [
    "/usr/local/sbin",
    "/usr/local/bin",
    "/usr/sbin",
    "/usr/bin",
    "/sbin",
    "/bin",
];

/// Why an original cannot be run.
#[derive(Debug, PartialEq, Eq)]
pub enum OriginalError {
    /// The name is not a plain command name, or no original of it is installed.
    NotFound(String),
    /// Opening or reading it failed.
    Unusable(String),
}

impl std::fmt::Display for OriginalError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            OriginalError::NotFound(m) | OriginalError::Unusable(m) => f.write_str(m),
        }
    }
}

/// What the helper executes for a command: an open original, and the argv it gets.
#[derive(Debug)]
pub struct Resolved {
    /// The file to execute (the original, or the original of its shimmed interpreter).
    pub program_fd: OwnedFd,
    /// Whether `program_fd` must stay open across exec (a script the kernel runs through
    /// `/dev/fd/N`).
    pub program_fd_inherited: bool,
    /// Path shown in messages: the original's path under the root.
    pub program: OsString,
    /// The original of the command's name (a script's own path, also when its
    /// interpreter's original is what executes), for the audit's `start.program`.
    pub original: OsString,
    /// The argv the program gets (the request's argv, or the interpreter's argv).
    pub argv: Vec<OsString>,
    /// The script, kept open (inheritable) when it runs under its interpreter's original.
    pub script_fd: Option<OwnedFd>,
}

/// A plain command name: not empty, not `.` or `..`, no `/`, no NUL or other control
/// character. Anything else can never name an original.
pub fn is_plain_command_name(name: &[u8]) -> bool {
    !name.is_empty()
        && name != b"."
        && name != b".."
        && !name.iter().any(|&b| b == b'/' || b < 0x20 || b == 0x7f)
}

/// `root` + `path` (path is absolute).
fn under(root: &Path, path: &Path) -> PathBuf {
    let mut joined = root.as_os_str().to_owned();
    joined.push(path.as_os_str());
    PathBuf::from(joined)
}

/// Whether `path` exists (a dangling symlink counts). Any error but "not found" (e.g. the
/// caller is not root and cannot search the originals directory) is a failure.
fn exists(path: &Path) -> Result<bool, OriginalError> {
    match path.symlink_metadata() {
        Ok(_) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(OriginalError::Unusable(format!(
            "cannot look up {}: {e}",
            path.display()
        ))),
    }
}

/// The directories of the originals listed in the install manifest next to `root`, in
/// manifest order, without duplicates. Lines are `KIND<TAB>/ABSOLUTE/PATH[<TAB>...]`; other
/// lines are skipped. No manifest: none.
fn manifest_dirs(root: &Path) -> Vec<PathBuf> {
    let Some(manifest) = root.parent().map(|p| p.join("manifest")) else {
        return Vec::new();
    };
    let Ok(file) = File::open(&manifest) else {
        return Vec::new();
    };
    let mut text = Vec::new();
    if std::io::Read::read_to_end(&mut std::io::Read::take(file, MANIFEST_MAX), &mut text).is_err()
    {
        return Vec::new();
    }
    let mut dirs: Vec<PathBuf> = Vec::new();
    for line in text.split(|&b| b == b'\n') {
        let mut fields = line.split(|&b| b == b'\t');
        let (Some(_kind), Some(path)) = (fields.next(), fields.next()) else {
            continue;
        };
        let path = Path::new(OsStr::from_bytes(path));
        if !path.is_absolute() {
            continue;
        }
        if let Some(dir) = path.parent() {
            if !dirs.iter().any(|d| d == dir) {
                dirs.push(dir.to_path_buf());
            }
        }
    }
    dirs
}

/// The directories searched for an original, in order: [`SEARCH_DIRS`], then the other
/// directories of the install manifest.
pub fn search_dirs(root: &Path) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = SEARCH_DIRS.iter().map(PathBuf::from).collect();
    for dir in manifest_dirs(root) {
        if !dirs.contains(&dir) {
            dirs.push(dir);
        }
    }
    dirs
}

/// The original of the command `name`: the first `<root><DIR>/<name>` that exists for DIR
/// in [`search_dirs`], with the live path it was installed from (`<DIR>/<name>`).
pub fn find_by_name(root: &Path, name: &OsStr) -> Result<(PathBuf, PathBuf), OriginalError> {
    if !is_plain_command_name(name.as_bytes()) {
        return Err(OriginalError::NotFound(format!(
            "{:?} is not a plain command name",
            name.to_string_lossy()
        )));
    }
    let dirs = search_dirs(root);
    for dir in &dirs {
        let live = dir.join(name);
        let candidate = under(root, &live);
        if exists(&candidate)? {
            check_inside(root, &candidate)?;
            return Ok((candidate, live));
        }
    }
    Err(OriginalError::NotFound(format!(
        "{} has no original under {} (is it shimmed?)",
        name.to_string_lossy(),
        root.display()
    )))
}

/// Where the original of the tool at the absolute `tool` path lives under `root`:
/// `<root><tool>` if it exists, else `<root><physical directory of tool>/<name>`. Only
/// for interpreter paths read from a root-owned script's `#!` line, never for a path that
/// came with a request.
fn original_of_path(root: &Path, tool: &Path) -> Result<Option<PathBuf>, OriginalError> {
    let bytes = tool.as_os_str().as_bytes();
    // Checked on the bytes: `Path::components` silently drops inner `.` segments.
    let plain = tool.is_absolute()
        && !bytes.contains(&0)
        && bytes
            .split(|&b| b == b'/')
            .all(|segment| segment != b"." && segment != b"..");
    if !plain || tool.file_name().is_none() {
        return Ok(None);
    }
    let direct = under(root, tool);
    if exists(&direct)? {
        return Ok(Some(direct));
    }
    let (Some(dir), Some(name)) = (tool.parent(), tool.file_name()) else {
        return Ok(None);
    };
    let Ok(physical) = dir.canonicalize() else {
        return Ok(None);
    };
    let candidate = under(root, &physical.join(name));
    Ok(exists(&candidate)?.then_some(candidate))
}

/// Checks that `candidate`'s directory really is inside `root` (symlinked directories in
/// the originals tree could otherwise point anywhere). The file itself may be a symlink
/// (busybox applets, `python3 -> python3.11`): its target is what runs.
fn check_inside(root: &Path, candidate: &Path) -> Result<(), OriginalError> {
    let outside = || {
        OriginalError::NotFound(format!(
            "original {} is not inside {}",
            candidate.display(),
            root.display()
        ))
    };
    let root = root
        .canonicalize()
        .map_err(|e| OriginalError::Unusable(format!("originals root {}: {e}", root.display())))?;
    let dir = candidate
        .parent()
        .ok_or_else(outside)?
        .canonicalize()
        .map_err(|_| outside())?;
    if dir.starts_with(&root) {
        Ok(())
    } else {
        Err(outside())
    }
}

/// The original of an absolute interpreter path, when that interpreter is shimmed (a
/// symlink to the shim, or a path with an original under `root`).
fn shimmed_interpreter(root: &Path, path: &Path) -> Result<Option<PathBuf>, OriginalError> {
    let original = original_of_path(root, path)?;
    let links_to_shim = std::fs::read_link(path)
        .is_ok_and(|t| t.file_name().map(OsStr::as_bytes) == Some(SHIM_FILE_NAME));
    match original {
        Some(found) => {
            check_inside(root, &found)?;
            Ok(Some(found))
        }
        None if links_to_shim => Err(OriginalError::NotFound(format!(
            "interpreter {} is shimmed but has no original under {}",
            path.display(),
            root.display()
        ))),
        None => Ok(None),
    }
}

/// Opens a file to execute. `inheritable` leaves it open across exec (a script's
/// interpreter reads it through `/dev/fd/N`).
fn open_file(path: &Path, inheritable: bool) -> Result<OwnedFd, OriginalError> {
    let file = File::open(path)
        .map_err(|e| OriginalError::Unusable(format!("cannot open {}: {e}", path.display())))?;
    let fd = OwnedFd::from(file);
    if inheritable {
        fcntl(fd.as_raw_fd(), FcntlArg::F_SETFD(FdFlag::empty())).map_err(|e| {
            OriginalError::Unusable(format!(
                "cannot keep {} open for its interpreter: {}",
                path.display(),
                e.desc()
            ))
        })?;
    }
    Ok(fd)
}

/// The interpreter and optional argument of a `#!` line, as the kernel splits it: the
/// path up to the first blank, then the rest of the line (trimmed) as one argument.
pub fn parse_shebang(head: &[u8]) -> Option<(OsString, Option<OsString>)> {
    let line = head.strip_prefix(b"#!")?;
    let end = line.iter().position(|&b| b == b'\n').unwrap_or(line.len());
    let line = &line[..end];
    let is_blank = |b: &u8| *b == b' ' || *b == b'\t';
    let start = line.iter().position(|b| !is_blank(b))?;
    let line = &line[start..];
    let split = line.iter().position(is_blank).unwrap_or(line.len());
    let interpreter = &line[..split];
    let rest = &line[split..];
    let rest_start = rest.iter().position(|b| !is_blank(b));
    let argument = rest_start.map(|s| {
        let r = &rest[s..];
        let trimmed_end = r.iter().rposition(|b| !is_blank(b)).map_or(0, |e| e + 1);
        OsString::from_vec(r[..trimmed_end].to_vec())
    });
    Some((OsString::from_vec(interpreter.to_vec()), argument))
}

/// For a `#!/usr/bin/env NAME` line (one plain word, no options): NAME.
fn env_target<'a>(interpreter: &OsStr, argument: Option<&'a OsStr>) -> Option<&'a OsStr> {
    if Path::new(interpreter).file_name()? != "env" {
        return None;
    }
    let name = argument?;
    let bytes = name.as_bytes();
    let plain = is_plain_command_name(bytes)
        && bytes[0] != b'-'
        && !bytes.iter().any(|&b| b == b' ' || b == b'\t' || b == b'=');
    plain.then_some(name)
}

/// The original a script's `#!` line leads to, when that interpreter is shimmed: the
/// interpreter's original and the argv[0] (its live path) and optional argument it gets.
fn interpreter_original(
    root: &Path,
    interpreter: &OsStr,
    argument: Option<OsString>,
) -> Result<Option<(PathBuf, OsString, Option<OsString>)>, OriginalError> {
    // `#!/usr/bin/env node`: the interpreter is the original of `node`, found by the same
    // fixed search as any command (never through a PATH from the caller's environment).
    // No original: the script runs itself and env searches the command's own PATH, as the
    // caller, exactly as without Clawrden.
    if let Some(name) = env_target(interpreter, argument.as_deref()) {
        return match find_by_name(root, name) {
            Ok((original, live)) => Ok(Some((original, live.into_os_string(), None))),
            Err(OriginalError::NotFound(_)) => Ok(None),
            Err(e) => Err(e),
        };
    }
    let path = Path::new(interpreter);
    if !path.is_absolute() {
        return Ok(None);
    }
    Ok(shimmed_interpreter(root, path)?
        .map(|original| (original, interpreter.to_owned(), argument)))
}

/// Finds and opens the original of the command `name` (call while still root). A script
/// whose interpreter is itself shimmed runs under the interpreter's original instead, with
/// the script passed as `/dev/fd/N`, because executing the script directly would start
/// the shimmed interpreter and turn the call into a nested call of a path that means
/// nothing outside this process.
pub fn resolve(root: &Path, name: &OsStr, argv: &[OsString]) -> Result<Resolved, OriginalError> {
    let (path, _live) = find_by_name(root, name)?;
    let probe = File::open(&path)
        .map_err(|e| OriginalError::Unusable(format!("cannot open {}: {e}", path.display())))?;
    let mut head = [0u8; SHEBANG_MAX];
    let n = nix::sys::uio::pread(&probe, &mut head, 0).unwrap_or(0);
    drop(probe);
    let head = &head[..n];
    if let Some((interpreter, argument)) = parse_shebang(head) {
        if let Some((original, argv0, argument)) =
            interpreter_original(root, &interpreter, argument)?
        {
            let script_fd = open_file(&path, true)?;
            let program_fd = open_file(&original, false)?;
            let mut new_argv = vec![argv0];
            new_argv.extend(argument);
            new_argv.push(format!("/dev/fd/{}", script_fd.as_raw_fd()).into());
            new_argv.extend(argv.iter().skip(1).cloned());
            return Ok(Resolved {
                program_fd,
                program_fd_inherited: false,
                program: original.into_os_string(),
                original: path.into_os_string(),
                argv: new_argv,
                script_fd: Some(script_fd),
            });
        }
        // A script under an interpreter that is not shimmed: the kernel runs it through
        // /dev/fd/N, so the fd stays open across exec.
        return Ok(Resolved {
            program_fd: open_file(&path, true)?,
            program_fd_inherited: true,
            program: path.clone().into_os_string(),
            original: path.into_os_string(),
            argv: argv.to_vec(),
            script_fd: None,
        });
    }
    Ok(Resolved {
        program_fd: open_file(&path, false)?,
        program_fd_inherited: false,
        program: path.clone().into_os_string(),
        original: path.into_os_string(),
        argv: argv.to_vec(),
        script_fd: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn os(s: &str) -> OsString {
        OsString::from(s)
    }

    struct Dir(PathBuf);
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
    fn temp_dir(tag: &str) -> Dir {
        let p = std::env::temp_dir().join(format!(
            "clawrden-original-{tag}-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        Dir(p.canonicalize().unwrap())
    }

    /// Writes `<root><live>` (creating its directory).
    fn original(root: &Path, live: &str, contents: &[u8]) -> PathBuf {
        let path = under(root, Path::new(live));
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, contents).unwrap();
        path
    }

    #[test]
    fn plain_command_names_only() {
        for good in ["cat", "git-upload-pack", "python3.11", "a b", "é"] {
            assert!(is_plain_command_name(good.as_bytes()), "{good}");
        }
        for bad in [
            "",
            ".",
            "..",
            "/usr/bin/rm",
            "rm/",
            "/usr/bin/rm/.",
            "a\nb",
            "a\x7f",
            "a\0b",
        ] {
            assert!(!is_plain_command_name(bad.as_bytes()), "{bad:?}");
        }
    }

    #[test]
    fn the_original_is_found_by_name_in_the_fixed_order_never_by_a_path() {
        let d = temp_dir("order");
        let root = d.0.join("originals");
        original(&root, "/bin/tool", b"from /bin");
        let usr_bin = original(&root, "/usr/bin/tool", b"from /usr/bin");
        let (found, live) = find_by_name(&root, OsStr::new("tool")).unwrap();
        assert_eq!((found, live), (usr_bin, PathBuf::from("/usr/bin/tool")));
        let local = original(&root, "/usr/local/bin/tool", b"from /usr/local/bin");
        assert_eq!(find_by_name(&root, OsStr::new("tool")).unwrap().0, local);
        for forged in ["/usr/bin/tool", "../tool", "/usr/bin/tool/.", ".."] {
            assert!(
                matches!(
                    find_by_name(&root, OsStr::new(forged)),
                    Err(OriginalError::NotFound(_))
                ),
                "{forged}"
            );
        }
        assert!(matches!(
            find_by_name(&root, OsStr::new("other")),
            Err(OriginalError::NotFound(_))
        ));
    }

    #[test]
    fn directories_of_the_manifest_are_searched_after_the_fixed_ones() {
        let d = temp_dir("manifest");
        let root = d.0.join("originals");
        let opt = original(&root, "/opt/tools/bin/tool", b"x");
        std::fs::write(
            d.0.join("manifest"),
            "file\t/usr/bin/cat\nlink\t/opt/tools/bin/tool\t../x\t/opt/x\t0:0\ngarbage\n",
        )
        .unwrap();
        assert_eq!(
            search_dirs(&root)[SEARCH_DIRS.len()..],
            [PathBuf::from("/opt/tools/bin")]
        );
        assert_eq!(find_by_name(&root, OsStr::new("tool")).unwrap().0, opt);
        let bin = original(&root, "/bin/tool", b"y");
        assert_eq!(find_by_name(&root, OsStr::new("tool")).unwrap().0, bin);
    }

    #[test]
    fn an_original_outside_the_root_is_refused() {
        let d = temp_dir("outside");
        let root = d.0.join("originals");
        std::fs::create_dir_all(root.join("usr")).unwrap();
        std::fs::create_dir_all(d.0.join("elsewhere")).unwrap();
        std::fs::write(d.0.join("elsewhere/tool"), b"x").unwrap();
        symlink(d.0.join("elsewhere"), root.join("usr/bin")).unwrap();
        let err = find_by_name(&root, OsStr::new("tool")).unwrap_err();
        assert!(
            matches!(err, OriginalError::NotFound(ref m) if m.contains("is not inside")),
            "{err:?}"
        );
    }

    #[test]
    fn shebang_splits_like_the_kernel() {
        assert_eq!(
            parse_shebang(b"#!/usr/bin/python3\nimport sys\n"),
            Some((os("/usr/bin/python3"), None))
        );
        assert_eq!(
            parse_shebang(b"#! /usr/bin/env  python3 -u \n"),
            Some((os("/usr/bin/env"), Some(os("python3 -u"))))
        );
        assert_eq!(
            parse_shebang(b"#!/bin/sh -e"),
            Some((os("/bin/sh"), Some(os("-e"))))
        );
        assert_eq!(parse_shebang(b"#!\n"), None);
        assert_eq!(parse_shebang(b"\x7fELF"), None);
    }

    #[test]
    fn env_shebang_names_only_a_plain_word() {
        let env = os("/usr/bin/env");
        assert_eq!(env_target(&os("/usr/bin/python3"), Some(&os("sh"))), None);
        assert_eq!(env_target(&env, None), None);
        assert_eq!(env_target(&env, Some(&os("-S node -x"))), None);
        assert_eq!(env_target(&env, Some(&os("A=1"))), None);
        assert_eq!(env_target(&env, Some(&os("./node"))), None);
        assert_eq!(
            env_target(&env, Some(&os("node"))),
            Some(OsStr::new("node"))
        );
    }

    #[test]
    fn script_with_shimmed_interpreter_runs_under_the_interpreters_original() {
        let d = temp_dir("script");
        let root = d.0.join("originals");
        let bin = d.0.join("bin");
        std::fs::create_dir_all(&bin).unwrap();
        // The live interpreter is a symlink to "the shim"; its original is saved.
        let shim = d.0.join("clawrden-shim");
        std::fs::write(&shim, b"shim").unwrap();
        symlink(&shim, bin.join("py")).unwrap();
        let py = original(&root, bin.join("py").to_str().unwrap(), b"\x7fELFinterp");
        let script = format!("#!{} -I\nprint(1)\n", bin.join("py").display());
        let pip = original(&root, "/usr/bin/pip", script.as_bytes());
        let r = resolve(
            &root,
            OsStr::new("pip"),
            &[os("pip"), os("install"), os("x")],
        )
        .unwrap();
        let fd = r.script_fd.as_ref().expect("script fd").as_raw_fd();
        assert_eq!(r.program, py.into_os_string());
        // What the audit says runs: pip's original, not the interpreter.
        assert_eq!(r.original, pip.into_os_string());
        assert!(!r.program_fd_inherited);
        assert_eq!(
            r.argv,
            [
                bin.join("py").into_os_string(),
                os("-I"),
                os(&format!("/dev/fd/{fd}")),
                os("install"),
                os("x")
            ]
        );
        let flags = fcntl(fd, FcntlArg::F_GETFD).unwrap();
        assert_eq!(flags & libc::FD_CLOEXEC, 0, "script fd must survive exec");
    }

    #[test]
    fn env_shebang_runs_under_the_original_found_by_name_without_any_path_variable() {
        let d = temp_dir("env");
        let root = d.0.join("originals");
        let node = original(&root, "/usr/bin/node", b"\x7fELFnode");
        original(
            &root,
            "/usr/bin/npm",
            b"#!/usr/bin/env node\nrequire('x')\n",
        );
        let r = resolve(&root, OsStr::new("npm"), &[os("npm"), os("-v")]).unwrap();
        let fd = r.script_fd.as_ref().expect("script fd").as_raw_fd();
        assert_eq!(r.program, node.into_os_string());
        assert_eq!(
            r.argv,
            [os("/usr/bin/node"), os(&format!("/dev/fd/{fd}")), os("-v")]
        );
        // No original of the interpreter: the script runs itself, env finds it as usual.
        original(&root, "/usr/bin/tool", b"#!/usr/bin/env perl\n");
        let r = resolve(&root, OsStr::new("tool"), &[os("tool")]).unwrap();
        assert!(r.script_fd.is_none() && r.program_fd_inherited);
        assert_eq!(r.argv, [os("tool")]);
    }

    #[test]
    fn script_with_unshimmed_interpreter_is_executed_itself() {
        let d = temp_dir("plain");
        let root = d.0.join("originals");
        let tool = original(&root, "/usr/bin/tool", b"#!/bin/sh\necho hi\n");
        let r = resolve(&root, OsStr::new("tool"), &[os("tool"), os("a")]).unwrap();
        assert!(r.script_fd.is_none());
        assert!(r.program_fd_inherited);
        assert_eq!(r.argv, [os("tool"), os("a")]);
        assert_eq!(r.original, tool.clone().into_os_string());
        assert_eq!(r.program, tool.into_os_string());
    }

    #[test]
    fn missing_original_is_not_found() {
        let d = temp_dir("missing");
        let err = resolve(&d.0, OsStr::new("nothing-here"), &[os("x")]).unwrap_err();
        assert!(matches!(err, OriginalError::NotFound(_)), "{err:?}");
    }
}
