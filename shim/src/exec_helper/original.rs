//! `--original-root`: finding and opening the original of a shimmed tool, as root, and
//! seeing through script tools whose interpreter is shimmed too.
//!
//! install-clawrden.sh moves each tool's original to `<root><physical path>` (directory
//! resolved physically, the file name left alone) and leaves a symlink to the shim in its
//! place. The helper gets the tool path the shim saw (its PATH lookup, so possibly through
//! a symlinked directory such as a merged `/bin`), finds the original under the root, and
//! opens it while still privileged.

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

/// Why an original cannot be run.
#[derive(Debug, PartialEq, Eq)]
pub enum OriginalError {
    /// The tool path is not one the helper accepts (relative, `..`, not shimmed).
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

/// What the helper executes for a tool: an open original, and the argv it gets.
#[derive(Debug)]
pub struct Resolved {
    /// The file to execute (the original, or the original of its shimmed interpreter).
    pub program_fd: OwnedFd,
    /// Path shown in messages: the original's path under the root.
    pub program: OsString,
    /// The argv the program gets (the request's argv, or the interpreter's argv).
    pub argv: Vec<OsString>,
    /// The script, kept open (inheritable) when it runs under its interpreter's original.
    pub script_fd: Option<OwnedFd>,
}

/// A tool path the helper accepts: absolute, no `.`/`..` components, no NUL.
fn check_tool_path(tool: &Path) -> Result<(), OriginalError> {
    let bytes = tool.as_os_str().as_bytes();
    // Checked on the bytes: `Path::components` silently drops inner `.` segments.
    let ok = tool.is_absolute()
        && !bytes.contains(&0)
        && bytes
            .split(|&b| b == b'/')
            .all(|segment| segment != b"." && segment != b"..");
    if ok && tool.file_name().is_some() {
        Ok(())
    } else {
        Err(OriginalError::NotFound(format!(
            "tool path {} is not an absolute path without `.` or `..` components",
            tool.display()
        )))
    }
}

/// `root` + `path` (path is absolute).
fn under(root: &Path, path: &Path) -> PathBuf {
    let mut joined = root.as_os_str().to_owned();
    joined.push(path.as_os_str());
    PathBuf::from(joined)
}

/// Where the original of `tool` lives under `root`: `<root><tool>` if it exists, else
/// `<root><physical directory of tool>/<name>`. None when the tool has no original.
pub fn original_path(root: &Path, tool: &Path) -> Result<Option<PathBuf>, OriginalError> {
    check_tool_path(tool)?;
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

/// Whether `path` (a path in the live tree) is a shimmed tool: a symlink to the shim, or
/// a tool whose original is saved under `root`.
fn is_shimmed(root: &Path, path: &Path) -> bool {
    if let Ok(target) = std::fs::read_link(path) {
        if target.file_name().map(OsStr::as_bytes) == Some(SHIM_FILE_NAME) {
            return true;
        }
    }
    matches!(original_path(root, path), Ok(Some(_)))
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

fn find(root: &Path, tool: &Path) -> Result<PathBuf, OriginalError> {
    let path = original_path(root, tool)?.ok_or_else(|| {
        OriginalError::NotFound(format!(
            "{} has no original under {} (is it shimmed?)",
            tool.display(),
            root.display()
        ))
    })?;
    check_inside(root, &path)?;
    Ok(path)
}

/// For a `#!/usr/bin/env NAME` line (one plain word, no options): the first `NAME` in the
/// helper's PATH (the caller's, passed by the executor), as env would pick it. Executing
/// the script directly would make env start a shimmed NAME, a nested call whose
/// `/dev/fd/N` script path means nothing outside this process.
fn via_env(interpreter: &OsStr, argument: Option<&OsStr>) -> Option<OsString> {
    if Path::new(interpreter).file_name()? != "env" {
        return None;
    }
    let name = argument?;
    let bytes = name.as_bytes();
    if bytes.is_empty()
        || bytes[0] == b'-'
        || bytes
            .iter()
            .any(|&b| b == b'/' || b == b' ' || b == b'\t' || b == b'=')
    {
        return None;
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .filter(|dir| dir.is_absolute())
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.symlink_metadata().is_ok())
        .map(PathBuf::into_os_string)
}

/// Finds and opens the original of `tool` (call while still root). A script whose
/// interpreter is itself shimmed runs under the interpreter's original instead, with the
/// script passed as `/dev/fd/N`, because executing the script directly would start the
/// shimmed interpreter and turn the call into a nested call of a path that means nothing
/// outside this process.
pub fn resolve(root: &Path, tool: &Path, argv: &[OsString]) -> Result<Resolved, OriginalError> {
    let path = find(root, tool)?;
    let probe = File::open(&path)
        .map_err(|e| OriginalError::Unusable(format!("cannot open {}: {e}", path.display())))?;
    let mut head = [0u8; SHEBANG_MAX];
    let n = nix::sys::uio::pread(&probe, &mut head, 0).unwrap_or(0);
    drop(probe);
    let head = &head[..n];
    if let Some((interpreter, argument)) = parse_shebang(head) {
        // `#!/usr/bin/env node`: the interpreter that matters is the one env finds.
        let (interpreter, argument) = match via_env(&interpreter, argument.as_deref()) {
            Some(found) => (found, None),
            None => (interpreter, argument),
        };
        let interpreter_path = Path::new(&interpreter);
        if interpreter_path.is_absolute() && is_shimmed(root, interpreter_path) {
            let interpreter_original = find(root, interpreter_path)?;
            let script_fd = open_file(&path, true)?;
            let program_fd = open_file(&interpreter_original, false)?;
            let mut new_argv = vec![interpreter.clone()];
            new_argv.extend(argument);
            new_argv.push(format!("/dev/fd/{}", script_fd.as_raw_fd()).into());
            new_argv.extend(argv.iter().skip(1).cloned());
            return Ok(Resolved {
                program_fd,
                program: interpreter_original.into_os_string(),
                argv: new_argv,
                script_fd: Some(script_fd),
            });
        }
        // A script under an interpreter that is not shimmed: the kernel runs it through
        // /dev/fd/N, so the fd stays open across exec.
        return Ok(Resolved {
            program_fd: open_file(&path, true)?,
            program: path.into_os_string(),
            argv: argv.to_vec(),
            script_fd: None,
        });
    }
    Ok(Resolved {
        program_fd: open_file(&path, false)?,
        program: path.into_os_string(),
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

    #[test]
    fn env_shebang_names_the_program_found_in_path_only_for_a_plain_word() {
        assert_eq!(via_env(&os("/usr/bin/python3"), Some(&os("sh"))), None);
        assert_eq!(via_env(&os("/usr/bin/env"), None), None);
        assert_eq!(via_env(&os("/usr/bin/env"), Some(&os("-S node -x"))), None);
        assert_eq!(via_env(&os("/usr/bin/env"), Some(&os("A=1"))), None);
        assert_eq!(via_env(&os("/usr/bin/env"), Some(&os("./node"))), None);
        let found = via_env(&os("/usr/bin/env"), Some(&os("sh"))).expect("sh is in PATH");
        assert!(Path::new(&found).is_absolute() && found.as_bytes().ends_with(b"/sh"));
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
    fn tool_paths_with_dot_dot_or_relative_are_refused() {
        let root = Path::new("/nonexistent-root");
        for bad in ["bin/cat", "/bin/../etc/shadow", "/bin/./cat", "/"] {
            assert!(
                matches!(
                    original_path(root, Path::new(bad)),
                    Err(OriginalError::NotFound(_))
                ),
                "{bad}"
            );
        }
    }

    #[test]
    fn original_is_found_directly_or_through_the_physical_directory() {
        let d = temp_dir("find");
        let root = d.0.join("originals");
        std::fs::create_dir_all(root.join(d.0.join("real").strip_prefix("/").unwrap())).unwrap();
        std::fs::create_dir_all(d.0.join("real")).unwrap();
        symlink(d.0.join("real"), d.0.join("alias")).unwrap();
        let saved = under(&root, &d.0.join("real/tool"));
        std::fs::write(&saved, b"x").unwrap();
        assert_eq!(
            original_path(&root, &d.0.join("real/tool")),
            Ok(Some(saved.clone()))
        );
        assert_eq!(
            original_path(&root, &d.0.join("alias/tool")),
            Ok(Some(saved))
        );
        assert_eq!(original_path(&root, &d.0.join("real/other")), Ok(None));
    }

    #[test]
    fn script_with_shimmed_interpreter_runs_under_the_interpreters_original() {
        let d = temp_dir("script");
        let root = d.0.join("originals");
        let bin = d.0.join("bin");
        std::fs::create_dir_all(&bin).unwrap();
        std::fs::create_dir_all(under(&root, &bin)).unwrap();
        // The live interpreter is a symlink to "the shim"; its original is saved.
        let shim = d.0.join("clawrden-shim");
        std::fs::write(&shim, b"shim").unwrap();
        symlink(&shim, bin.join("py")).unwrap();
        std::fs::write(under(&root, &bin.join("py")), b"\x7fELFinterp").unwrap();
        let script = format!("#!{} -I\nprint(1)\n", bin.join("py").display());
        std::fs::write(under(&root, &bin.join("pip")), script).unwrap();
        let r = resolve(
            &root,
            &bin.join("pip"),
            &[os("pip"), os("install"), os("x")],
        )
        .unwrap();
        let fd = r.script_fd.as_ref().expect("script fd").as_raw_fd();
        assert_eq!(r.program, under(&root, &bin.join("py")).into_os_string());
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
    fn script_with_unshimmed_interpreter_is_executed_itself() {
        let d = temp_dir("plain");
        let root = d.0.join("originals");
        std::fs::create_dir_all(under(&root, &d.0)).unwrap();
        std::fs::write(under(&root, &d.0.join("tool")), "#!/bin/sh\necho hi\n").unwrap();
        let r = resolve(&root, &d.0.join("tool"), &[os("tool"), os("a")]).unwrap();
        assert!(r.script_fd.is_none());
        assert_eq!(r.argv, [os("tool"), os("a")]);
        assert_eq!(r.program, under(&root, &d.0.join("tool")).into_os_string());
    }

    #[test]
    fn missing_original_is_not_found() {
        let d = temp_dir("missing");
        let err = resolve(&d.0, Path::new("/usr/bin/nothing-here"), &[os("x")]).unwrap_err();
        assert!(matches!(err, OriginalError::NotFound(_)), "{err:?}");
    }
}
