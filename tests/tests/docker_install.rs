//! install-clawrden.sh and harden-container.sh in real containers, over the distro matrix:
//! busybox (ash + applet symlinks, standing in for Alpine), Debian bookworm and bullseye
//! (minbase), bookworm with python3 + pip (script tools) and with nodejs + npm.
//!
//! Each test hardens one base image, then checks every property in a container of it and
//! reports all the properties that failed for that image at once.
//!
//! Needs a Docker engine (skips without one unless CLAWRDEN_REQUIRE_DOCKER=1), root for the
//! image builders, and the static shim:
//! `cargo build --release -p clawrden-shim --target x86_64-unknown-linux-musl`.

use clawrden_e2e::docker::{
    checkout_tag, ensure_test_image, harden_command, harden_image_with, musl_shim,
    require_docker_or_skip, Container, ACCEPT_SHELL_BYPASS, INSTALLER_IN_IMAGE, ORIGINALS_IN_IMAGE,
    SHIM_IN_IMAGE,
};

const NO_WARDEN_PREFIX: &str = "clawrden: warden unavailable (/run/clawrden/warden.sock): ";

/// Prints `tool<TAB>path<TAB>file|link` for each tool: the first executable in PATH, with its
/// directory resolved physically, the way install-clawrden.sh records it.
const RESOLVE_TOOLS: &str = r#"
for t in "$@"; do
    found=
    IFS=:
    for d in $PATH; do
        if [ -f "$d/$t" ] && [ -x "$d/$t" ]; then found=$d; break; fi
    done
    unset IFS
    [ -n "$found" ] || { echo "$t not found in $PATH" >&2; exit 1; }
    p=$(cd -P "$found" && pwd -P)/$t
    if [ -L "$p" ]; then kind=link; else kind=file; fi
    printf '%s\t%s\t%s\n' "$t" "$p" "$kind"
done
"#;

/// Prints `path<TAB>file|link<TAB>link text or -<TAB>mode owner<TAB>sha256 of the
/// content<TAB>first 4 bytes in hex` for PREFIX+path of each path. Uses only programs that
/// are never shimmed here.
const FINGERPRINT: &str = r#"
prefix=$1
shift
for p in "$@"; do
    f=$prefix$p
    if [ ! -e "$f" ] && [ ! -L "$f" ]; then printf '%s\tmissing\n' "$p"; continue; fi
    if [ -L "$f" ]; then kind=link; text=$(readlink "$f"); else kind=file; text=-; fi
    meta=$(stat -c '%A %u:%g' "$f")
    sum=$(sha256sum <"$f" 2>/dev/null) || sum=unreadable
    magic=$(dd if="$f" bs=4 count=1 2>/dev/null | od -An -tx1 | tr -d ' \n')
    printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$p" "$kind" "$text" "$meta" "${sum%% *}" "$magic"
done
"#;

/// Everything under /usr/lib/clawrden and the tool paths, with inode and mtime: a second
/// install that changed anything at all shows up here.
const TREE_SNAPSHOT: &str = r#"
sed -n p /usr/lib/clawrden/manifest
find /usr/lib/clawrden -exec stat -c '%n %A %u:%g %s %Y %i' {} +
for p in "$@"; do stat -c '%n %A %u:%g %s %Y %i' "$p"; done
"#;

#[derive(Debug, Clone, PartialEq, Eq)]
struct Tool {
    name: String,
    path: String,
    kind: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Fingerprint {
    path: String,
    kind: String,
    link_text: String,
    meta: String,
    sha256: String,
    /// The first 4 bytes, hex (`7f454c46` for an ELF binary).
    magic: String,
}

impl Fingerprint {
    fn is_binary(&self) -> bool {
        self.kind == "file" && self.magic == "7f454c46"
    }
}

/// `-rwxr-xr-x 0:0` with the read bit of group and others removed: `-rwx--x--x 0:0`.
fn execute_only(meta: &str) -> String {
    meta.char_indices()
        .map(|(i, c)| {
            if (i == 4 || i == 7) && c == 'r' {
                '-'
            } else {
                c
            }
        })
        .collect()
}

fn parse_tools(out: &str) -> Result<Vec<Tool>, String> {
    out.lines()
        .map(|line| match line.split('\t').collect::<Vec<_>>()[..] {
            [name, path, kind] => Ok(Tool {
                name: name.to_string(),
                path: path.to_string(),
                kind: kind.to_string(),
            }),
            _ => Err(format!("unexpected tool line {line:?}")),
        })
        .collect()
}

fn fingerprints(c: &Container, prefix: &str, tools: &[Tool]) -> Result<Vec<Fingerprint>, String> {
    let mut args = vec![prefix];
    args.extend(tools.iter().map(|t| t.path.as_str()));
    let out = c.sh_ok("root", FINGERPRINT, &args)?;
    out.lines()
        .map(|line| match line.split('\t').collect::<Vec<_>>()[..] {
            [path, kind, link_text, meta, sha256, magic] => Ok(Fingerprint {
                path: path.to_string(),
                kind: kind.to_string(),
                link_text: link_text.to_string(),
                meta: meta.to_string(),
                sha256: sha256.to_string(),
                magic: magic.to_string(),
            }),
            _ => Err(format!("unexpected fingerprint line {line:?}")),
        })
        .collect()
}

/// Collects the properties that failed for one image.
struct Report {
    image: String,
    failures: Vec<String>,
}

impl Report {
    fn check(&mut self, property: &str, result: Result<(), String>) {
        if let Err(why) = result {
            self.failures.push(format!("{property}: {why}"));
        }
    }

    fn finish(self) {
        assert!(
            self.failures.is_empty(),
            "image {}: {} propert{} failed:\n- {}",
            self.image,
            self.failures.len(),
            if self.failures.len() == 1 { "y" } else { "ies" },
            self.failures.join("\n- ")
        );
    }
}

fn ensure(cond: bool, why: impl FnOnce() -> String) -> Result<(), String> {
    if cond {
        Ok(())
    } else {
        Err(why())
    }
}

fn tools_are_shim_symlinks(c: &Container, tools: &[Tool]) -> Result<(), String> {
    let paths: Vec<&str> = tools.iter().map(|t| t.path.as_str()).collect();
    let out = c.sh_ok(
        "root",
        r#"for p; do printf '%s -> %s\n' "$p" "$(readlink "$p")"; done"#,
        &paths,
    )?;
    let want: String = tools
        .iter()
        .map(|t| format!("{} -> {SHIM_IN_IMAGE}\n", t.path))
        .collect();
    ensure(out == want, || format!("want\n{want}got\n{out}"))
}

fn manifest_lists_the_tools(c: &Container, tools: &[Tool]) -> Result<(), String> {
    let out = c.sh_ok("root", "sed -n p /usr/lib/clawrden/manifest", &[])?;
    let got: Vec<(String, String)> = out
        .lines()
        .map(|l| {
            let mut f = l.split('\t');
            let kind = f.next().unwrap_or_default().to_string();
            let path = f.next().unwrap_or_default().to_string();
            (kind, path)
        })
        .collect();
    let want: Vec<(String, String)> = tools
        .iter()
        .map(|t| (t.kind.clone(), t.path.clone()))
        .collect();
    ensure(got == want, || format!("want {want:?}, manifest is\n{out}"))
}

fn originals_keep_bytes_mode_and_owner(
    c: &Container,
    tools: &[Tool],
    base: &[Fingerprint],
) -> Result<(), String> {
    let saved = fingerprints(c, ORIGINALS_IN_IMAGE, tools)?;
    let mut problems = Vec::new();
    for (orig, want) in saved.iter().zip(base) {
        if orig.kind != want.kind {
            problems.push(format!(
                "{} was a {} but its original is a {}",
                want.path, want.kind, orig.kind
            ));
        }
        if orig.sha256 != want.sha256 {
            problems.push(format!(
                "{}: original content sha256 {} != base image's {}",
                want.path, orig.sha256, want.sha256
            ));
        }
        // Binaries become execute-only (nothing they spawn can reach them through /proc);
        // scripts keep their mode (their interpreter, as the caller, must read them).
        let want_meta = if want.is_binary() {
            execute_only(&want.meta)
        } else {
            want.meta.clone()
        };
        if want.kind == "file" && orig.meta != want_meta {
            problems.push(format!(
                "{}: original mode/owner {} != {want_meta} (base image: {})",
                want.path, orig.meta, want.meta
            ));
        }
    }
    ensure(saved.len() == base.len() && problems.is_empty(), || {
        format!("{problems:?} (saved: {saved:?})")
    })
}

/// Each binary original made execute-only has its mode before in its manifest line, so
/// that `--uninstall` can restore it.
fn manifest_records_the_mode_of_binaries_made_execute_only(
    c: &Container,
    base: &[Fingerprint],
) -> Result<(), String> {
    let out = c.sh_ok("root", "sed -n p /usr/lib/clawrden/manifest", &[])?;
    let mut problems = Vec::new();
    for want in base
        .iter()
        .filter(|f| f.is_binary() && f.meta != execute_only(&f.meta))
    {
        let line = out
            .lines()
            .find(|l| l.split('\t').nth(1) == Some(want.path.as_str()));
        let mode = line.and_then(|l| l.split('\t').nth(2));
        let octal = mode.and_then(|m| u32::from_str_radix(m, 8).ok());
        // The permission bits of e.g. `-rwxr-xr-x`: 0o755.
        let bits = want.meta[1..10]
            .chars()
            .fold(0u32, |acc, c| acc << 1 | u32::from(c != '-'));
        if octal != Some(bits) {
            problems.push(format!("{}: manifest line {line:?}", want.path));
        }
    }
    ensure(problems.is_empty(), || format!("{problems:?}\n{out}"))
}

fn originals_dir_is_root_0700(c: &Container) -> Result<(), String> {
    let out = c.sh_ok("root", "stat -c '%a %u %g' \"$1\"", &[ORIGINALS_IN_IMAGE])?;
    ensure(out == "700 0 0\n", || format!("stat says {out:?}"))
}

fn agent_cannot_run_or_read_an_original(c: &Container, tool: &Tool) -> Result<(), String> {
    let original = format!("{ORIGINALS_IN_IMAGE}{}", tool.path);
    let run = c.sh("agent", r#""$1" /etc/hostname"#, &[&original])?;
    ensure(
        run.status == Some(126)
            && run.stdout.is_empty()
            && run
                .stderr_text()
                .to_lowercase()
                .contains("permission denied"),
        || format!("running {original} as agent: {run:?}"),
    )?;
    let read = c.exec("agent", &["sha256sum", &original])?;
    ensure(
        !read.success()
            && read.stdout.is_empty()
            && read
                .stderr_text()
                .to_lowercase()
                .contains("permission denied"),
        || format!("reading {original} as agent: {read:?}"),
    )
}

fn shimmed_tools_fail_closed_without_warden(c: &Container, tools: &[Tool]) -> Result<(), String> {
    c.sh_ok("agent", ": >/workspace/marker", &[])?;
    let rm = c.exec("agent", &["rm", "/workspace/marker"])?;
    ensure(
        rm.status == Some(125)
            && rm.stdout.is_empty()
            && rm.stderr_text().starts_with(NO_WARDEN_PREFIX),
        || format!("rm /workspace/marker as agent: {rm:?}"),
    )?;
    c.sh_ok("agent", "test -e /workspace/marker", &[])
        .map_err(|e| format!("rm ran although the warden is unreachable: {e}"))?;
    for tool in tools {
        let out = c.exec("agent", &[&tool.name, "/etc/hostname"])?;
        ensure(
            out.status == Some(125)
                && out.stdout.is_empty()
                && out.stderr_text().starts_with(NO_WARDEN_PREFIX),
            || format!("{} as agent: {out:?}", tool.name),
        )?;
    }
    Ok(())
}

fn unshimmed_programs_still_work(c: &Container) -> Result<(), String> {
    let sed = c.exec("agent", &["sed", "-n", "1p", "/etc/passwd"])?;
    ensure(
        sed.success() && sed.stdout_text().starts_with("root:x:0:0:"),
        || format!("sed as agent: {sed:?}"),
    )?;
    let awk = c.exec("agent", &["awk", "BEGIN { print 6 * 7 }"])?;
    ensure(awk.success() && awk.stdout == b"42\n", || {
        format!("awk as agent: {awk:?}")
    })
}

fn second_install_changes_nothing(c: &Container, tools: &[Tool]) -> Result<(), String> {
    let paths: Vec<&str> = tools.iter().map(|t| t.path.as_str()).collect();
    let before = c.sh_ok("root", TREE_SNAPSHOT, &paths)?;
    let names: Vec<&str> = tools.iter().map(|t| t.name.as_str()).collect();
    let shim_copy = INSTALLER_IN_IMAGE.replace("install-clawrden.sh", "clawrden-shim");
    let again = c.sh_ok(
        "root",
        r#"sh "$1" --shim "$2" --tools "$3""#,
        &[INSTALLER_IN_IMAGE, &shim_copy, &names.join(" ")],
    )?;
    let mut want = format!("shim {SHIM_IN_IMAGE} is up to date\n");
    for t in tools {
        want.push_str(&format!("{}: {} is already shimmed\n", t.name, t.path));
    }
    ensure(again == want, || {
        format!("second install printed\n{again}wanted\n{want}")
    })?;
    let after = c.sh_ok("root", TREE_SNAPSHOT, &paths)?;
    ensure(before == after, || {
        format!("tree before the second install:\n{before}after:\n{after}")
    })
}

fn uninstall_restores_every_original(
    c: &Container,
    tools: &[Tool],
    base: &[Fingerprint],
) -> Result<(), String> {
    let out = c.sh_ok("root", r#"sh "$1" --uninstall"#, &[INSTALLER_IN_IMAGE])?;
    ensure(out.ends_with("removed /usr/lib/clawrden\n"), || {
        format!("uninstall printed {out:?}")
    })?;
    let restored = fingerprints(c, "", tools)?;
    ensure(restored == base, || {
        format!("restored {restored:#?}\nbase image {base:#?}")
    })?;
    c.sh_ok("root", "test ! -e /usr/lib/clawrden", &[])
        .map_err(|e| format!("/usr/lib/clawrden still exists: {e}"))?;
    let cat = c.exec("agent", &["cat", "/etc/passwd"])?;
    ensure(
        cat.success() && cat.stdout_text().starts_with("root:x:0:0:"),
        || format!("cat as agent after uninstall: {cat:?}"),
    )
}

/// `hardener_args`: extra options for harden-container.sh (the busybox image needs
/// `--accept-shell-bypass`).
fn hardening_matrix_case(test: &str, image: &str, tool_names: &[&str], hardener_args: &[&str]) {
    if !require_docker_or_skip(test) {
        return;
    }
    musl_shim().unwrap_or_else(|e| panic!("{test}: {e}"));
    let base_tag =
        ensure_test_image(image).unwrap_or_else(|e| panic!("{test}: base image {image}: {e}"));
    let hardened_tag = checkout_tag(&format!("{image}-hardened"));
    harden_image_with(&base_tag, tool_names, &hardened_tag, hardener_args)
        .unwrap_or_else(|e| panic!("{test}: hardening {base_tag}: {e}"));

    let base =
        Container::start(&base_tag, &["--user", "root"]).unwrap_or_else(|e| panic!("{test}: {e}"));
    let tools = base
        .sh_ok("root", RESOLVE_TOOLS, tool_names)
        .and_then(|out| parse_tools(&out))
        .unwrap_or_else(|e| panic!("{test}: resolving tools in {base_tag}: {e}"));
    let base_prints =
        fingerprints(&base, "", &tools).unwrap_or_else(|e| panic!("{test}: {base_tag}: {e}"));
    drop(base);

    let c = Container::start(&hardened_tag, &[]).unwrap_or_else(|e| panic!("{test}: {e}"));
    let mut report = Report {
        image: image.to_string(),
        failures: Vec::new(),
    };
    report.check(
        "each tool is a symlink to the shim",
        tools_are_shim_symlinks(&c, &tools),
    );
    report.check(
        "the manifest lists each tool once, in order",
        manifest_lists_the_tools(&c, &tools),
    );
    report.check(
        "originals keep their bytes, mode and owner",
        originals_keep_bytes_mode_and_owner(&c, &tools, &base_prints),
    );
    report.check(
        "the manifest records the mode of binaries made execute-only",
        manifest_records_the_mode_of_binaries_made_execute_only(&c, &base_prints),
    );
    report.check(
        "the originals directory is root:root 0700",
        originals_dir_is_root_0700(&c),
    );
    report.check(
        "the agent can neither run nor read an original",
        agent_cannot_run_or_read_an_original(&c, &tools[0]),
    );
    report.check(
        "without a warden a shimmed tool exits 125 and runs nothing",
        shimmed_tools_fail_closed_without_warden(&c, &tools),
    );
    report.check(
        "programs that are not shimmed (sed, awk) still work",
        unshimmed_programs_still_work(&c),
    );
    report.check(
        "a second install changes nothing",
        second_install_changes_nothing(&c, &tools),
    );
    report.check(
        "--uninstall restores every original byte for byte",
        uninstall_restores_every_original(&c, &tools, &base_prints),
    );
    report.finish();
}

#[test]
fn busybox_image_is_hardened_fails_closed_and_uninstalls_byte_for_byte() {
    hardening_matrix_case(
        "busybox_image_is_hardened_fails_closed_and_uninstalls_byte_for_byte",
        "busybox",
        &["cat", "head", "rm", "ls"],
        &[ACCEPT_SHELL_BYPASS],
    );
}

#[test]
fn bookworm_image_is_hardened_fails_closed_and_uninstalls_byte_for_byte() {
    hardening_matrix_case(
        "bookworm_image_is_hardened_fails_closed_and_uninstalls_byte_for_byte",
        "bookworm",
        &["cat", "head", "rm", "ls"],
        &[],
    );
}

#[test]
fn bullseye_image_is_hardened_fails_closed_and_uninstalls_byte_for_byte() {
    hardening_matrix_case(
        "bullseye_image_is_hardened_fails_closed_and_uninstalls_byte_for_byte",
        "bullseye",
        &["cat", "head", "rm", "ls"],
        &[],
    );
}

#[test]
fn bookworm_python_image_is_hardened_fails_closed_and_uninstalls_byte_for_byte() {
    hardening_matrix_case(
        "bookworm_python_image_is_hardened_fails_closed_and_uninstalls_byte_for_byte",
        "bookworm-python",
        &["cat", "head", "rm", "ls", "python3", "pip"],
        &[],
    );
}

#[test]
fn bookworm_node_image_is_hardened_fails_closed_and_uninstalls_byte_for_byte() {
    hardening_matrix_case(
        "bookworm_node_image_is_hardened_fails_closed_and_uninstalls_byte_for_byte",
        "bookworm-node",
        &["cat", "head", "rm", "ls", "node", "npm"],
        &[],
    );
}

/// harden-container.sh refuses a base whose /bin/sh runs applets in-process (Debian's
/// busybox-static: every shell there bypasses the shims), builds nothing, and says why;
/// `--accept-shell-bypass` builds it with a warning. Either way a multi-call busybox's
/// applets, still reachable as `busybox APPLET`, are listed.
#[test]
fn hardening_refuses_a_shell_that_runs_applets_in_process() {
    let test = "hardening_refuses_a_shell_that_runs_applets_in_process";
    if !require_docker_or_skip(test) {
        return;
    }
    musl_shim().unwrap_or_else(|e| panic!("{test}: {e}"));
    let base = ensure_test_image("busybox").unwrap_or_else(|e| panic!("{test}: {e}"));
    let tag = checkout_tag("busybox-refused");
    let _ = std::process::Command::new("docker")
        .args(["image", "rm", "--force", &tag])
        .output();
    let tools = ["cat", "rm", "curl"];
    let run = |extra: &[&str]| {
        harden_command(&base, &tools, &tag, extra)
            .and_then(|mut c| c.output().map_err(|e| e.to_string()))
            .unwrap_or_else(|e| panic!("{test}: {e}"))
    };
    let refused = run(&[]);
    let stderr = String::from_utf8_lossy(&refused.stderr).into_owned();
    assert_eq!(refused.status.code(), Some(1), "{test}: {stderr}");
    assert!(refused.stdout.is_empty(), "{test}: {refused:?}");
    let refusal = format!(
        "harden-container.sh: refusing {base}: its /bin/sh runs rm, cat and ls in-process without looking at PATH (a standalone busybox shell, as Debian's busybox-static builds it), so no command a shell runs (scripts, sh -c, the agent's own shell) ever reaches a shim. Use a base whose /bin/sh is dash or bash, or a busybox built without FEATURE_SH_STANDALONE and FEATURE_PREFER_APPLETS; --accept-shell-bypass builds it anyway.\n"
    );
    assert!(stderr.ends_with(&refusal), "{test}: stderr:\n{stderr}");
    let built = std::process::Command::new("docker")
        .args(["image", "inspect", &tag])
        .output()
        .unwrap();
    assert!(
        !built.status.success(),
        "{test}: a refused base was built as {tag}"
    );

    let accepted = run(&[ACCEPT_SHELL_BYPASS]);
    let stderr = String::from_utf8_lossy(&accepted.stderr).into_owned();
    assert_eq!(accepted.status.code(), Some(0), "{test}: {stderr}");
    assert_eq!(accepted.stdout, format!("{tag}\n").as_bytes());
    let lines: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("harden-container.sh: ") && !l.contains(": building "))
        .collect();
    assert_eq!(lines.len(), 4, "{test}: {lines:#?}");
    assert_eq!(
        lines[0],
        format!("harden-container.sh: WARNING: {base}'s /bin/sh runs applets in-process (--accept-shell-bypass): commands run by any shell in the hardened image bypass the shims")
    );
    let count_line = lines[1];
    assert!(
        count_line
            .starts_with("harden-container.sh: WARNING: /bin/busybox is a multi-call binary: its ")
            && count_line.ends_with(" applets stay reachable as `busybox APPLET` without any shim"),
        "{test}: {count_line}"
    );
    // curl is no applet of this busybox: only cat and rm are reachable around their shims.
    assert_eq!(
        lines[2],
        "harden-container.sh: intercepted tools reachable that way: cat rm"
    );
    assert!(
        lines[3].starts_with("harden-container.sh: all applets: [ [[ ")
            && lines[3].contains(" rm ")
            && lines[3].contains(" wget "),
        "{test}: {}",
        lines[3]
    );
    let _ = std::process::Command::new("docker")
        .args(["image", "rm", "--force", &tag])
        .output();
}
