//! `scripts/up.sh` as a new user meets it: from a fresh `git clone` of this checkout, with a
//! Rust toolchain that lacks the musl target, no base image chosen and the shipped policy.
//! up.sh must add the target, pick or build the images, start the stack and print a login
//! that works: `/readyz` answers, a real call through the prisoner runs back in it and a
//! denied one exits 126, the printed clawctl line works with the saved token, the
//! dashboard accepts that token, the token itself never appears in up.sh's output, and
//! `scripts/up.sh --down` removes the containers.
//!
//! The toolchain without the target is a private RUSTUP_HOME whose toolchain directory is
//! hard links into the real one minus `lib/rustlib/x86_64-unknown-linux-musl` (metadata
//! files copied and edited, never linked), so the machine's own toolchain is never changed
//! and other builds running meanwhile are not disturbed. `rustup target add` then downloads
//! the target's standard library into the private copy.
//!
//! To keep warm runs short the clone sits at a fixed path per checkout and builds into a
//! target directory cached under the image cache (`<cache>/fresh-clone/`), without LTO,
//! with 16 codegen units and incremental compilation (CARGO_PROFILE_RELEASE_*):
//! dependencies are compiled once, the clone's own crates only where they changed. Cold
//! and warm timings are printed.
//!
//! Also here: up.sh's package step, in a Debian container that lacks curl and musl-tools:
//! as root it installs them with apt-get (from deb.debian.org), as another user it prints
//! the exact command and stops.
//!
//! Needs a Docker engine (skips without one unless CLAWRDEN_REQUIRE_DOCKER=1), root, git,
//! rustup and network access to static.rust-lang.org and deb.debian.org.

use std::ffi::OsString;
use std::fs;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use clawrden_e2e::api::Api;
use clawrden_e2e::docker::{
    checkout_tag, ensure_test_image, image_cache_dir, repo_root, require_docker_or_skip,
    ComposeOptions, ComposeStack, SHIM_TARGET,
};
use clawrden_e2e::tools::find_tool;
use serde_json::json;

fn output_of(cmd: &mut Command) -> Result<String, String> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run {cmd:?}: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    } else {
        Err(format!(
            "{cmd:?} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// A fresh clone of this checkout at `dest` (replacing whatever was there), at HEAD plus
/// the uncommitted changes to tracked files (`git stash create`), so a local run tests
/// what is being worked on; untracked files are not part of it.
fn fresh_clone(dest: &Path) -> Result<String, String> {
    let root = repo_root();
    let stash = output_of(
        Command::new("git")
            .arg("-C")
            .arg(&root)
            .args(["stash", "create"]),
    )?;
    let commit = if stash.is_empty() {
        output_of(
            Command::new("git")
                .arg("-C")
                .arg(&root)
                .args(["rev-parse", "HEAD"]),
        )?
    } else {
        stash
    };
    if dest.exists() {
        fs::remove_dir_all(dest).map_err(|e| format!("remove {}: {e}", dest.display()))?;
    }
    // A local clone copies the whole object store, the stash commit included.
    output_of(
        Command::new("git")
            .args(["clone", "--quiet", "--no-checkout"])
            .arg(&root)
            .arg(dest),
    )?;
    output_of(
        Command::new("git")
            .arg("-C")
            .arg(dest)
            .args(["checkout", "--quiet", "--detach", &commit]),
    )?;
    Ok(commit)
}

/// Recreates the tree `src` at `dst` with hard links (copies across file systems),
/// skipping the paths (relative to `src`) in `skip`.
fn link_tree(src: &Path, dst: &Path, rel: &Path, skip: &[&Path]) -> io::Result<()> {
    fs::create_dir_all(dst)?;
    for entry in fs::read_dir(src)? {
        let entry = entry?;
        let rel = rel.join(entry.file_name());
        if skip.contains(&rel.as_path()) {
            continue;
        }
        let (from, to) = (entry.path(), dst.join(entry.file_name()));
        let kind = entry.file_type()?;
        if kind.is_dir() {
            link_tree(&from, &to, &rel, skip)?;
        } else if kind.is_symlink() {
            std::os::unix::fs::symlink(fs::read_link(&from)?, &to)?;
        } else if fs::hard_link(&from, &to).is_err() {
            fs::copy(&from, &to)?;
        }
    }
    Ok(())
}

/// `text` without the blank-line-separated blocks that contain `needle`.
fn drop_blocks(text: &str, needles: &[&str]) -> String {
    text.split("\n\n")
        .filter(|block| !needles.iter().any(|n| block.contains(n)))
        .collect::<Vec<_>>()
        .join("\n\n")
}

/// A RUSTUP_HOME at `home` holding the active toolchain without the musl target and
/// without its documentation; returns the toolchain's name.
fn rustup_home_without_musl(home: &Path) -> Result<String, String> {
    let sysroot = PathBuf::from(output_of(
        Command::new("rustc").args(["--print", "sysroot"]),
    )?);
    let name = sysroot
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| format!("odd sysroot {}", sysroot.display()))?
        .to_string();
    if home.exists() {
        fs::remove_dir_all(home).map_err(|e| format!("remove {}: {e}", home.display()))?;
    }
    let toolchain = home.join("toolchains").join(&name);
    let rustlib = Path::new("lib/rustlib");
    let musl = rustlib.join(SHIM_TARGET);
    // Metadata files that `rustup target add` rewrites are copied below, never linked.
    let mut skip: Vec<PathBuf> = vec![musl, PathBuf::from("share/doc")];
    for entry in fs::read_dir(sysroot.join(rustlib)).map_err(|e| format!("{e}"))? {
        let entry = entry.map_err(|e| format!("{e}"))?;
        if entry.file_type().map_err(|e| format!("{e}"))?.is_file() {
            skip.push(rustlib.join(entry.file_name()));
        }
    }
    let skip_refs: Vec<&Path> = skip.iter().map(PathBuf::as_path).collect();
    link_tree(&sysroot, &toolchain, Path::new(""), &skip_refs)
        .map_err(|e| format!("linking {} into {}: {e}", sysroot.display(), home.display()))?;
    let dropped = [
        format!("rust-std-{SHIM_TARGET}"),
        "rust-docs-".to_string(),
        format!("target = \"{SHIM_TARGET}\""),
        "pkg = \"rust-docs\"".to_string(),
    ];
    let dropped: Vec<&str> = dropped.iter().map(String::as_str).collect();
    for entry in fs::read_dir(sysroot.join(rustlib)).map_err(|e| format!("{e}"))? {
        let entry = entry.map_err(|e| format!("{e}"))?;
        let file = entry.file_name();
        let file_name = file.to_string_lossy();
        if !entry.file_type().map_err(|e| format!("{e}"))?.is_file()
            || file_name.starts_with(&format!("manifest-rust-std-{SHIM_TARGET}"))
            || file_name.starts_with("manifest-rust-docs-")
        {
            continue;
        }
        let text = fs::read_to_string(entry.path()).map_err(|e| format!("{e}"))?;
        let text = match file_name.as_ref() {
            "components" => text
                .lines()
                .filter(|l| !dropped.iter().any(|d| l.starts_with(d)))
                .map(|l| format!("{l}\n"))
                .collect(),
            "multirust-config.toml" => drop_blocks(&text, &dropped),
            _ => text,
        };
        fs::write(toolchain.join(rustlib).join(&file), text).map_err(|e| format!("{e}"))?;
    }
    fs::write(
        home.join("settings.toml"),
        format!(
            "version = \"12\"\ndefault_toolchain = \"{name}\"\nprofile = \"minimal\"\nauto_self_update = \"disable\"\n"
        ),
    )
    .map_err(|e| format!("{e}"))?;
    Ok(name)
}

/// CARGO_HOME as this process sees it (the registry cache is shared: it only grows).
fn cargo_home() -> PathBuf {
    std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cargo")
        })
}

#[test]
fn up_sh_from_a_fresh_clone_without_the_musl_target_starts_a_stack_that_answers() {
    let test = "up_sh_from_a_fresh_clone_without_the_musl_target_starts_a_stack_that_answers";
    if !require_docker_or_skip(test) {
        return;
    }
    let cargo_bin = cargo_home().join("bin");
    if find_tool("rustup").is_none() && !cargo_bin.join("rustup").is_file() {
        panic!("{test}: rustup is needed (up.sh's promise is a machine with rustup and Docker)");
    }
    // Per checkout, so two checkouts running this at once never share a clone.
    let tag = checkout_tag("fresh-clone");
    let checkout = tag
        .trim_start_matches("clawrden-test/")
        .trim_end_matches(":latest");
    let base = image_cache_dir().join("fresh-clone");
    let work = base.join(checkout);
    let clone = work.join("clawrden");
    let target_dir = base.join("target");
    let cold = !target_dir.exists();

    let started = Instant::now();
    let commit = fresh_clone(&clone).unwrap_or_else(|e| panic!("{test}: {e}"));
    eprintln!("git clone ({commit}): {:?}", started.elapsed());
    let started = Instant::now();
    let rustup_home = work.join("rustup");
    let toolchain =
        rustup_home_without_musl(&rustup_home).unwrap_or_else(|e| panic!("{test}: {e}"));
    eprintln!(
        "private RUSTUP_HOME ({toolchain}, hard links): {:?}",
        started.elapsed()
    );

    let path = format!(
        "{}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        cargo_bin.display()
    );
    let mut env: Vec<(OsString, OsString)> = vec![
        ("PATH".into(), path.clone().into()),
        ("HOME".into(), std::env::var_os("HOME").unwrap_or_default()),
        ("LANG".into(), "C.UTF-8".into()),
        ("RUSTUP_HOME".into(), rustup_home.clone().into()),
        ("CARGO_HOME".into(), cargo_home().into()),
        ("CARGO_TARGET_DIR".into(), target_dir.clone().into()),
        // A build for a test, not for shipping: no LTO, parallel codegen, and incremental
        // (the clone's path is the same every run, so unchanged code is not recompiled).
        ("CARGO_PROFILE_RELEASE_LTO".into(), "false".into()),
        ("CARGO_PROFILE_RELEASE_CODEGEN_UNITS".into(), "16".into()),
        ("CARGO_PROFILE_RELEASE_INCREMENTAL".into(), "true".into()),
        ("CLAWRDEN_IMAGE_CACHE".into(), image_cache_dir().into()),
    ];
    if let Some(host) = std::env::var_os("DOCKER_HOST") {
        env.push(("DOCKER_HOST".into(), host));
    }
    // The targets the private toolchain has, as rustup lists them.
    let installed = || {
        output_of(
            Command::new("rustup")
                .args(["target", "list", "--installed"])
                .env_clear()
                .envs(env.iter().map(|(k, v)| (k, v)))
                .current_dir(&clone),
        )
        .unwrap_or_else(|e| panic!("{test}: {e}"))
    };
    let before = installed();
    assert!(
        !before.lines().any(|l| l == SHIM_TARGET),
        "{test}: the private toolchain still has {SHIM_TARGET}: {before}"
    );

    let stack = ComposeStack::start(ComposeOptions {
        root: Some(clone.clone()),
        clear_env: true,
        env: env.clone(),
        ..ComposeOptions::default()
    })
    .unwrap_or_else(|e| panic!("{test}: {e}"));
    eprintln!(
        "scripts/up.sh from the fresh clone ({} target dir): {:?}",
        if cold { "cold" } else { "warm" },
        stack.took
    );
    eprintln!("--- up.sh's log\n{}{}---", stack.up_stderr, stack.up_stdout);
    assert!(
        stack.up_stderr.contains(&format!(
            "up.sh: adding the Rust target {SHIM_TARGET} (rustup target add)\n"
        )),
        "up.sh did not add the target"
    );
    let after = installed();
    assert!(after.lines().any(|l| l == SHIM_TARGET), "{after}");

    // The login up.sh printed.
    let url = format!("http://127.0.0.1:{}", stack.api_port);
    let token_file = stack
        .token_dir()
        .join(format!("admin-{}.token", stack.api_port));
    let out = &stack.up_stdout;
    for line in [
        "Clawrden is up.".to_string(),
        format!("  Dashboard:  {url}/"),
        format!(
            "  Log in with the admin token in {} (mode 0600, not shown here); to paste it:",
            token_file.display()
        ),
        format!("      cat {}", token_file.display()),
        format!(
            "  clawctl:    export CLAWRDEN_URL={url} CLAWRDEN_TOKEN_FILE={}",
            token_file.display()
        ),
        format!(
            "              {}/{SHIM_TARGET}/release/clawctl queue",
            target_dir.display()
        ),
        format!(
            "  The agent:  docker exec -it {} sh",
            stack.prisoner_container
        ),
    ] {
        assert!(
            out.lines().any(|l| l == line),
            "up.sh's output lacks the line {line:?}:\n{out}"
        );
    }
    let token = stack
        .admin_token()
        .unwrap_or_else(|e| panic!("{test}: {e}"));
    let saved = fs::read_to_string(&token_file)
        .unwrap_or_else(|e| panic!("{test}: {}: {e}", token_file.display()));
    assert_eq!(saved.trim(), token, "the saved token is the warden's");
    let mode = fs::metadata(&token_file)
        .expect("token file")
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600, "token file mode {mode:o}");
    assert!(
        !stack.up_stdout.contains(&token) && !stack.up_stderr.contains(&token),
        "up.sh printed the admin token"
    );

    // The stack answers.
    let api = Api {
        addr: format!("127.0.0.1:{}", stack.api_port)
            .parse()
            .expect("addr"),
        token: None,
    };
    let ready = api.get("/readyz");
    assert_eq!(ready.status, 200, "/readyz: {}", ready.text());
    let c = stack.prisoner();
    let out = c
        .exec("agent", &["cat", "/etc/hostname"])
        .unwrap_or_else(|e| panic!("{test}: {e}"));
    assert_eq!(
        (out.status, out.stdout.as_slice(), out.stderr.as_slice()),
        (Some(0), &b"prisoner\n"[..], &b""[..]),
        "cat through the prisoner's shim: {out:?}"
    );
    let out = c
        .exec("agent", &["rm", "-r", "/workspace"])
        .unwrap_or_else(|e| panic!("{test}: {e}"));
    assert_eq!(
        (out.status, out.stderr_text().as_str()),
        (
            Some(126),
            "clawrden: denied: recursive delete needs a person; ask the operator\n"
        ),
        "{out:?}"
    );

    // The printed clawctl line, as pasted.
    let clawctl = target_dir.join(SHIM_TARGET).join("release").join("clawctl");
    let queue = Command::new(&clawctl)
        .arg("queue")
        .env_clear()
        .env("PATH", &path)
        .env("CLAWRDEN_URL", &url)
        .env("CLAWRDEN_TOKEN_FILE", &token_file)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("{test}: {}: {e}", clawctl.display()));
    assert_eq!(queue.status.code(), Some(0), "clawctl queue: {queue:?}");

    // The dashboard's login form takes the saved token.
    let login = api.request(
        "POST",
        "/api/v1/session",
        Some((
            "application/json",
            json!({ "token": saved.trim() }).to_string().as_bytes(),
        )),
        &[("Origin", &url)],
    );
    assert_eq!(login.status, 200, "dashboard login: {}", login.text());
    assert_eq!(login.json()["scope"], "admin", "{}", login.text());

    // And the stop line it printed.
    let down = stack
        .run_up_sh(&["--down"])
        .unwrap_or_else(|e| panic!("{test}: {e}"));
    assert!(down.success(), "scripts/up.sh --down: {down:?}");
    let left = output_of(Command::new("docker").args([
        "ps",
        "-aq",
        "--filter",
        &format!("label=com.docker.compose.project={}", stack.project),
    ]))
    .unwrap_or_else(|e| panic!("{test}: {e}"));
    assert_eq!(left, "", "containers left after scripts/up.sh --down");

    drop(stack);
    let _ = fs::remove_dir_all(&work);
}

#[test]
fn up_sh_installs_missing_packages_as_root_and_prints_the_command_otherwise() {
    let test = "up_sh_installs_missing_packages_as_root_and_prints_the_command_otherwise";
    if !require_docker_or_skip(test) {
        return;
    }
    // Debian minbase: apt-get, but neither curl nor musl-tools.
    let image = ensure_test_image("bookworm").unwrap_or_else(|e| panic!("{test}: {e}"));
    let mount = format!(
        "{}:/checkout/scripts/up.sh:ro",
        repo_root().join("scripts/up.sh").display()
    );
    let run = |user: &str, script: &str| {
        let out = Command::new("docker")
            .args([
                "run",
                "--rm",
                "--label",
                "org.clawrden.test",
                "--user",
                user,
            ])
            .args(["-v", &mount, &image, "sh", "-c", script])
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("{test}: docker run: {e}"));
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };

    let (status, stdout, stderr) = run("65534:65534", "/checkout/scripts/up.sh");
    assert_eq!(
        (status, stdout.as_str(), stderr.as_str()),
        (
            Some(1),
            "",
            "up.sh: missing packages: curl musl-tools; install them as root, then run scripts/up.sh again:\n    apt-get update && apt-get install -y curl musl-tools\n"
        )
    );

    let started = Instant::now();
    let (status, stdout, stderr) = run(
        "0:0",
        "/checkout/scripts/up.sh; echo \"up.sh exited $?\"; command -v curl; command -v musl-gcc",
    );
    eprintln!(
        "apt-get update + install in the container: {:?}",
        started.elapsed()
    );
    assert_eq!(
        (status, stdout.as_str()),
        (
            Some(0),
            "up.sh exited 1\n/usr/bin/curl\n/usr/bin/musl-gcc\n"
        ),
        "as root:\n{stderr}"
    );
    assert!(
        stderr.starts_with("up.sh: installing curl musl-tools (apt-get)\n"),
        "{stderr}"
    );
    // With the packages in place it goes on, and stops at the next missing prerequisite.
    assert!(
        stderr.ends_with(
            "up.sh: docker not found: install Docker Engine and compose (Debian: apt-get install docker.io docker-compose), then run scripts/up.sh again\n"
        ),
        "{stderr}"
    );
}
