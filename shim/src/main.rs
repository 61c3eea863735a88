//! clawrden-shim: symlinked over tools inside a prisoner, it forwards every call to the
//! warden and mirrors the outcome. Invoked as `clawrden-shim`, it offers `run`,
//! `exec-helper`, `--version` and `--help`.
//!
//! `unsafe` is denied everywhere but `sys`.
#![deny(unsafe_code)]

mod cli;
mod descriptors;
mod exec_helper;
mod request;
mod session;
mod stream;
#[allow(unsafe_code)]
mod sys;
mod terminal;

use std::io::Write;

use cli::Invocation;

fn main() {
    match cli::parse(std::env::args_os().collect()) {
        Ok(Invocation::Forward(argv)) => session::conclude(session::forward(argv)),
        Ok(Invocation::ExecHelper(args)) => exec_helper::main(args),
        Ok(Invocation::Version) => println!("{}", cli::version_line()),
        Ok(Invocation::Help) => print!("{}", cli::help_text()),
        Err(e) => {
            let _ = writeln!(std::io::stderr(), "{e}");
            std::process::exit(2);
        }
    }
}
