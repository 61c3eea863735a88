//! The dashboard escapes the same characters as clawctl and the policy crate: its
//! `HIDDEN_CLASS` in app.js is generated from the one list (policy/src/quote.rs).

use clawrden_policy::INVISIBLE_OR_CONTROL;

const APP_JS: &str = include_str!("../src/dashboard/assets/app.js");

/// A code point as a JavaScript regex escape inside a string literal (`\\u0000`,
/// `\\u{110bd}`).
fn js(c: u32) -> String {
    if c <= 0xffff {
        format!("\\\\u{c:04x}")
    } else {
        format!("\\\\u{{{c:x}}}")
    }
}

#[test]
fn dashboard_hidden_class_is_the_policy_crates_list() {
    let mut class = String::from("[");
    for &(first, last) in INVISIBLE_OR_CONTROL {
        class.push_str(&js(first));
        if last != first {
            class.push('-');
            class.push_str(&js(last));
        }
    }
    class.push(']');
    let line = format!("const HIDDEN_CLASS = \"{class}\";");
    assert!(
        APP_JS.contains(&line),
        "app.js must hold exactly this line (from policy/src/quote.rs):\n{line}"
    );
}
