//! Locating the built Clawrden binaries.

use std::env;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// The three binaries under test, all from one target directory.
#[derive(Debug, Clone)]
pub struct Binaries {
    pub dir: PathBuf,
    pub warden: PathBuf,
    pub shim: PathBuf,
    pub clawctl: PathBuf,
}

/// The binaries next to this executable (or in `CLAWRDEN_BIN_DIR`). Panics with what to
/// do when they are missing: this crate never builds them itself.
pub fn binaries() -> &'static Binaries {
    static BINS: OnceLock<Binaries> = OnceLock::new();
    BINS.get_or_init(|| match locate(&bin_dir()) {
        Ok(b) => b,
        Err(e) => panic!("{e}"),
    })
}

/// The directory holding the binaries: `CLAWRDEN_BIN_DIR`, else the profile directory of
/// the target dir this executable was built into (`target/<profile>/deps/..` for a test,
/// `target/<profile>` for a binary such as `clawrden-bench`).
fn bin_dir() -> PathBuf {
    if let Some(dir) = env::var_os("CLAWRDEN_BIN_DIR") {
        return PathBuf::from(dir);
    }
    let exe = env::current_exe().expect("cannot find the path of the running executable");
    let parent = exe.parent().expect("executable has no parent directory");
    if parent.file_name().is_some_and(|n| n == "deps") {
        parent.parent().unwrap_or(parent).to_path_buf()
    } else {
        parent.to_path_buf()
    }
}

fn locate(dir: &Path) -> Result<Binaries, String> {
    let mut missing = Vec::new();
    // CLAWRDEN_SHIM picks another shim build (the benchmark uses the static musl one,
    // which is what prisoners run); it serves as both the shim and the exec-helper.
    let shim_override = env::var_os("CLAWRDEN_SHIM").map(PathBuf::from);
    if let Some(p) = &shim_override {
        if !p.is_file() {
            missing.push(format!("CLAWRDEN_SHIM={}", p.display()));
        }
    }
    let mut find = |name: &str| {
        let p = dir.join(name);
        if !p.is_file() {
            missing.push(name.to_string());
        }
        p
    };
    let shim = match shim_override {
        Some(p) => p,
        None => find("clawrden-shim"),
    };
    let b = Binaries {
        dir: dir.to_path_buf(),
        warden: find("clawrden-warden"),
        shim,
        clawctl: find("clawctl"),
    };
    if missing.is_empty() {
        Ok(b)
    } else {
        Err(format!(
            "Clawrden binaries missing from {} ({}): build them first: cargo build --workspace --bins \
             (for the benchmark: cargo build --release --workspace --bins), \
             or point CLAWRDEN_BIN_DIR at a directory holding them",
            dir.display(),
            missing.join(", ")
        ))
    }
}
