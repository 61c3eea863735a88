//! `clawctl kill|pause|resume NAME`: stop, freeze or thaw a prisoner's container.
//!
//! Each asks for confirmation on stdin unless `--yes`: these act on the agent's whole
//! container, so a mistyped name in a shell history should not be one Enter away.

use std::io::{self, BufRead, Write};
use std::process::ExitCode;

use clap::Args;
use serde_json::json;

use crate::client::Ctx;
use crate::table;

/// Which control action.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Kill,
    Pause,
    Resume,
}

impl Action {
    fn path(self) -> &'static str {
        match self {
            Action::Kill => "kill",
            Action::Pause => "pause",
            Action::Resume => "resume",
        }
    }

    fn question(self, name: &str, pause_for: Option<&str>) -> String {
        match self {
            Action::Kill => format!(
                "Kill prisoner {name}? Its container stops and its running and waiting calls are cancelled."
            ),
            Action::Pause => match pause_for {
                Some(d) => format!(
                    "Pause prisoner {name} for {d}? Its container freezes and its new calls are denied."
                ),
                None => format!(
                    "Pause prisoner {name} until resumed? Its container freezes and its new calls are denied."
                ),
            },
            Action::Resume => format!("Resume prisoner {name}?"),
        }
    }
}

/// `clawctl kill|pause|resume NAME`
#[derive(Debug, Args)]
pub struct PrisonerArgs {
    /// The prisoner's name (as in `clawctl status`)
    name: String,
    /// Why (audited with your token's name)
    #[arg(long)]
    reason: Option<String>,
    /// Do not ask for confirmation
    #[arg(long, short = 'y')]
    yes: bool,
}

/// `clawctl pause NAME [--for 10m]`
#[derive(Debug, Args)]
pub struct PauseArgs {
    #[command(flatten)]
    common: PrisonerArgs,
    /// Resume by itself after this long (e.g. 10m, 1h); default: until `clawctl resume`
    #[arg(long = "for", value_name = "DURATION")]
    duration: Option<String>,
}

impl PauseArgs {
    /// Splits into the shared arguments and the duration.
    pub fn into_parts(self) -> (PrisonerArgs, Option<String>) {
        (self.common, self.duration)
    }
}

/// Runs one prisoner action after confirmation.
pub fn run(
    ctx: &Ctx,
    action: Action,
    args: PrisonerArgs,
    duration: Option<String>,
) -> anyhow::Result<ExitCode> {
    if !args.yes {
        let question = action.question(&args.name, duration.as_deref());
        if !confirm(&question, &mut io::stdin().lock(), &mut io::stderr())? {
            eprintln!("aborted: nothing was sent");
            return Ok(ExitCode::FAILURE);
        }
    }
    let mut body = json!({});
    if let Some(r) = &args.reason {
        body["reason"] = json!(r);
    }
    if let Some(d) = &duration {
        body["duration"] = json!(d);
    }
    let path = format!(
        "/api/v1/prisoners/{}/{}",
        percent_encode(&args.name),
        action.path()
    );
    let view = ctx
        .client
        .send_json("POST", &path, Some(&body))
        .map_err(|e| anyhow::Error::new(e).context(format!("{} {}", action.path(), args.name)))?;
    if ctx.json {
        table::print_api_json(&view);
    } else {
        let state = view["state"].as_str().unwrap_or("?");
        println!(
            "prisoner {}: {}",
            table::clean(&args.name),
            table::clean(state)
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// Asks `question` and reads one line: only `y` or `yes` (any case) confirms; end of
/// input (no terminal, nothing piped) is a no.
fn confirm(question: &str, input: &mut impl BufRead, out: &mut impl Write) -> io::Result<bool> {
    write!(out, "{question} [y/N] ")?;
    out.flush()?;
    let mut line = String::new();
    if input.read_line(&mut line)? == 0 {
        writeln!(out)?;
        return Ok(false);
    }
    let answer = line.trim().to_ascii_lowercase();
    Ok(answer == "y" || answer == "yes")
}

/// Prisoner names are restricted by the warden's config, but the name here is typed by
/// a person: never let it add path segments or a query to the URL.
fn percent_encode(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for b in name.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ask(input: &str) -> (bool, String) {
        let mut out = Vec::new();
        let yes = confirm("Kill prisoner a?", &mut input.as_bytes(), &mut out).unwrap();
        (yes, String::from_utf8(out).unwrap())
    }

    #[test]
    fn only_y_or_yes_confirms() {
        assert_eq!(ask("y\n"), (true, "Kill prisoner a? [y/N] ".into()));
        assert!(ask("YES\n").0);
        assert!(ask(" yes \n").0);
        assert!(!ask("\n").0);
        assert!(!ask("n\n").0);
        assert!(!ask("yep\n").0);
    }

    #[test]
    fn end_of_input_is_a_no() {
        assert_eq!(ask(""), (false, "Kill prisoner a? [y/N] \n".into()));
    }

    #[test]
    fn names_cannot_reshape_the_url() {
        assert_eq!(percent_encode("agent-1"), "agent-1");
        assert_eq!(percent_encode("../tokens?x=1"), "..%2Ftokens%3Fx%3D1");
    }

    #[test]
    fn questions_say_what_happens() {
        assert_eq!(
            Action::Pause.question("a", Some("10m")),
            "Pause prisoner a for 10m? Its container freezes and its new calls are denied."
        );
        assert_eq!(Action::Resume.question("a", None), "Resume prisoner a?");
    }
}
