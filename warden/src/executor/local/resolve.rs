//! Finding the program to run: `argv[0]`'s basename in the warden's own search path,
//! never the shim itself (a shimmed name on the warden's PATH would loop back to us).

use std::ffi::OsStr;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use nix::unistd::{access, AccessFlags};

/// File name of the shim binary; a candidate whose canonical path ends in it is skipped.
const SHIM_FILE_NAME: &str = "clawrden-shim";

/// Identity of the shim binary (the exec-helper), by device and inode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct ShimIdentity {
    dev: u64,
    ino: u64,
}

impl ShimIdentity {
    /// Reads the identity of the file at `path` (following symlinks).
    pub(super) fn of(path: &Path) -> std::io::Result<ShimIdentity> {
        let meta = fs::metadata(path)?;
        Ok(ShimIdentity {
            dev: meta.dev(),
            ino: meta.ino(),
        })
    }
}

/// The part of `argv0` after its last '/'.
pub(super) fn basename(argv0: &[u8]) -> &[u8] {
    match argv0.iter().rposition(|&b| b == b'/') {
        Some(slash) => &argv0[slash + 1..],
        None => argv0,
    }
}

/// Searches the absolute directories of `search_path` for an executable regular file
/// named `name` that is not the shim. Empty and relative entries are skipped: they would
/// resolve against the warden's own working directory, which means nothing to the caller.
pub(super) fn resolve(name: &[u8], search_path: &OsStr, shim: ShimIdentity) -> Option<PathBuf> {
    if name.is_empty() || name == b"." || name == b".." {
        return None;
    }
    search_path
        .as_bytes()
        .split(|&b| b == b':')
        .map(|dir| Path::new(OsStr::from_bytes(dir)))
        .filter(|dir| dir.is_absolute())
        .map(|dir| dir.join(OsStr::from_bytes(name)))
        .find(|candidate| is_runnable(candidate) && !is_shim(candidate, shim))
}

fn is_runnable(candidate: &Path) -> bool {
    match fs::metadata(candidate) {
        Ok(meta) => {
            meta.is_file()
                && meta.permissions().mode() & 0o111 != 0
                && access(candidate, AccessFlags::X_OK).is_ok()
        }
        Err(_) => false,
    }
}

fn is_shim(candidate: &Path, shim: ShimIdentity) -> bool {
    if ShimIdentity::of(candidate).is_ok_and(|id| id == shim) {
        return true;
    }
    fs::canonicalize(candidate)
        .is_ok_and(|real| real.file_name() == Some(OsStr::new(SHIM_FILE_NAME)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    /// A scratch directory removed on drop.
    struct Scratch(PathBuf);

    impl Scratch {
        fn new(tag: &str) -> Scratch {
            let dir =
                std::env::temp_dir().join(format!("clawrden-resolve-{tag}-{}", std::process::id()));
            let _ = fs::remove_dir_all(&dir);
            fs::create_dir_all(&dir).expect("create scratch dir");
            Scratch(dir)
        }
        fn file(&self, rel: &str, mode: u32) -> PathBuf {
            let path = self.0.join(rel);
            fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
            fs::write(&path, "#!/bin/sh\n").expect("write");
            fs::set_permissions(&path, fs::Permissions::from_mode(mode)).expect("chmod");
            path
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    fn path_of(dirs: &[&Path]) -> std::ffi::OsString {
        let joined: Vec<&[u8]> = dirs.iter().map(|d| d.as_os_str().as_bytes()).collect();
        std::ffi::OsString::from_vec(joined.join(&b':'))
    }

    use std::os::unix::ffi::OsStringExt;

    #[test]
    fn basename_strips_the_directory() {
        assert_eq!(basename(b"/usr/bin/git"), b"git");
        assert_eq!(basename(b"git"), b"git");
        assert_eq!(basename(b"./bin/"), b"");
    }

    #[test]
    fn resolve_skips_the_shim_by_inode_and_by_canonical_name() {
        let s = Scratch::new("shim");
        let shim = s.file("lib/clawrden-shim", 0o755);
        let shim_id = ShimIdentity::of(&shim).expect("stat shim");
        // Same inode under another name (a hard link), and a symlink to the shim.
        fs::create_dir_all(s.0.join("a")).expect("mkdir a");
        fs::hard_link(&shim, s.0.join("a/tool")).expect("hard link");
        fs::create_dir_all(s.0.join("b")).expect("mkdir b");
        symlink(&shim, s.0.join("b/tool")).expect("symlink");
        // A copy named clawrden-shim elsewhere is skipped by name even with another inode.
        let other_shim = s.file("other/clawrden-shim", 0o755);
        fs::create_dir_all(s.0.join("c")).expect("mkdir c");
        symlink(&other_shim, s.0.join("c/tool")).expect("symlink");
        let real = s.file("d/tool", 0o755);
        let search = path_of(&[
            &s.0.join("a"),
            &s.0.join("b"),
            &s.0.join("c"),
            &s.0.join("d"),
        ]);
        assert_eq!(resolve(b"tool", &search, shim_id), Some(real));
    }

    #[test]
    fn resolve_skips_non_executables_directories_and_relative_entries() {
        let s = Scratch::new("skip");
        let shim_id = ShimIdentity::of(&s.file("shim/clawrden-shim", 0o755)).expect("stat");
        s.file("a/tool", 0o644);
        fs::create_dir_all(s.0.join("b/tool")).expect("dir named like the tool");
        let real = s.file("c/tool", 0o700);
        let mut search = path_of(&[&s.0.join("a"), &s.0.join("b")]);
        search.push("::relative/dir:");
        search.push(s.0.join("c"));
        assert_eq!(resolve(b"tool", &search, shim_id), Some(real));
        assert_eq!(resolve(b"missing", &search, shim_id), None);
        assert_eq!(resolve(b"", &search, shim_id), None);
        assert_eq!(resolve(b"..", &search, shim_id), None);
    }
}
