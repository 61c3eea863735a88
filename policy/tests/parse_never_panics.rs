//! `Policy::parse` is the entry point for untrusted text: it must return, never panic.
//! A small deterministic generator stands in for a fuzzer (no extra dependencies).

use clawrden_policy::{Call, Policy};

/// xorshift64*: deterministic, good enough to scatter mutations.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

const SEED: &str = r#"version: 1
default_action: deny
default_timeout: 2m
approval_timeout: 10m
default_executor: mirror
rules:
  - name: git-read
    command: git
    args: [status, "**"]
    action: allow
    timeout: 30s
  - name: no-force-push
    command: [git]
    args: ["**", push, "**", "--force*", "**"]
    action: deny
    reason: force-push is not allowed
  - name: fetch
    command: [curl, wget]
    args_regex: "curl( -[a-z]+)* https://[^ ]+"
    cwd: /work/**
    uid: [0, 1000]
    prisoner: agent-*
    action: ask
    executor: ghost
    ghost: { image: clawrden/fetch, network: egress, memory: 256m, cpus: 1, pids: 128 }
    env: { pass: [HTTP_PROXY, LC_*], drop: [TERM] }
"#;

const PIECES: &[&str] = &[
    "version",
    "rules",
    "name",
    "command",
    "args",
    "args_regex",
    "cwd",
    "uid",
    "prisoner",
    "action",
    "ghost",
    "env",
    "pass",
    "drop",
    "image",
    "memory",
    ":",
    ": ",
    "- ",
    "\n",
    "  ",
    "[",
    "]",
    "{",
    "}",
    ",",
    "\"",
    "'",
    "**",
    "*",
    "?",
    "[!a-z]",
    "\\",
    "&a",
    "*a",
    "!!str",
    "!!binary",
    "---",
    "...",
    "#",
    "|",
    ">",
    "%YAML 1.2",
    "1",
    "-1",
    "0s",
    "1h30m",
    "9999999999999999999999d",
    "(",
    ")",
    "(?i)",
    "a{999999}",
    "~",
    "null",
    "true",
    "1e400",
    "0x1f",
    "\t",
    "\u{feff}",
    "é",
    "\0",
];

fn check(src: &str) {
    if let Ok(policy) = Policy::parse(src, "fuzz.yaml") {
        for line in [
            "git push --force",
            "curl -s https://x",
            "",
            "/usr/bin/git status",
        ] {
            let argv: Vec<Vec<u8>> = line.split(' ').map(|t| t.as_bytes().to_vec()).collect();
            let call = Call {
                argv: &argv,
                cwd: b"/work/x",
                uid: 1000,
                prisoner: "agent-1",
            };
            let e = policy.explain(&call);
            assert_eq!(e.verdict, policy.decide(&call));
            e.render();
        }
    }
}

#[test]
fn parse_survives_mutated_policies() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    check(SEED);
    assert!(
        Policy::parse(SEED, "seed.yaml").is_ok(),
        "the seed itself must be valid"
    );
    for _ in 0..3000 {
        let mut bytes = SEED.as_bytes().to_vec();
        for _ in 0..1 + rng.below(6) {
            let at = rng.below(bytes.len() + 1);
            match rng.below(5) {
                0 => {
                    if at < bytes.len() {
                        bytes[at] = rng.next() as u8;
                    }
                }
                1 => {
                    let piece = PIECES[rng.below(PIECES.len())].as_bytes();
                    bytes.splice(at..at, piece.iter().copied());
                }
                2 => {
                    let end = (at + rng.below(40)).min(bytes.len());
                    bytes.drain(at..end);
                }
                3 => {
                    let end = (at + rng.below(60)).min(bytes.len());
                    let copy = bytes[at..end].to_vec();
                    let to = rng.below(bytes.len() + 1);
                    bytes.splice(to..to, copy);
                }
                _ => {
                    if at < bytes.len() {
                        bytes.truncate(at);
                    }
                }
            }
        }
        check(&String::from_utf8_lossy(&bytes));
    }
}

#[test]
fn parse_survives_random_token_soup_and_bytes() {
    let mut rng = Rng(0xdead_beef_cafe_f00d);
    for _ in 0..2000 {
        let mut src = String::new();
        for _ in 0..rng.below(40) {
            src.push_str(PIECES[rng.below(PIECES.len())]);
        }
        check(&src);
        let bytes: Vec<u8> = (0..rng.below(200)).map(|_| rng.next() as u8).collect();
        check(&String::from_utf8_lossy(&bytes));
    }
}

#[test]
fn parse_survives_pathological_yaml() {
    let deep = format!(
        "version: 1\nrules: {}{}\n",
        "[".repeat(10_000),
        "]".repeat(10_000)
    );
    assert!(Policy::parse(&deep, "deep.yaml").is_err());
    let mut laughs = String::from("version: 1\na0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
    for i in 1..12 {
        let prev = i - 1;
        laughs.push_str(&format!(
            "a{i}: &a{i} [*a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}]\n"
        ));
    }
    assert!(Policy::parse(&laughs, "laughs.yaml").is_err());
    let huge_regex =
        "version: 1\nrules:\n  - {name: r, args_regex: \"(a{1000}){1000}\", action: allow}\n";
    let e = Policy::parse(huge_regex, "re.yaml").unwrap_err();
    assert_eq!((e.line, e.column), (3, 27));
    assert!(
        e.message
            .starts_with("rules[0].args_regex: bad args_regex `(a{1000}){1000}`: "),
        "{}",
        e.message
    );
}
