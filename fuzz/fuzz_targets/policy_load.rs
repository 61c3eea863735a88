//! Feeds arbitrary text to the policy loader. It must return a policy or a positioned
//! error, never panic; a policy that loads must decide any call without panicking.
#![no_main]

use clawrden_policy::{Call, Policy};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(src) = std::str::from_utf8(data) else { return };
    if let Ok(policy) = Policy::parse(src, "fuzz.yaml") {
        let argv = vec![b"git".to_vec(), b"push".to_vec(), b"--force".to_vec()];
        let call = Call { argv: &argv, cwd: b"/work", uid: 1000, prisoner: "p" };
        let _ = policy.decide(&call);
        let _ = policy.explain(&call).render();
    }
});
