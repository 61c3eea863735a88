//! The only place in the shim where `unsafe` is allowed: terminal ioctls, raw signal
//! handling, descriptor plumbing and the exec-helper's fork/exec. Every `unsafe` block
//! carries a `// SAFETY:` comment.

pub mod process;
pub mod signals;
pub mod term;

use std::os::fd::BorrowedFd;

/// Standard descriptor `n` (0, 1 or 2). The shim and the exec-helper keep all three open
/// for their whole life (`request::probe_stdio` points closed ones at /dev/null first).
pub fn std_fd(n: u8) -> BorrowedFd<'static> {
    assert!(n <= 2, "not a standard descriptor: {n}");
    // SAFETY: descriptors 0, 1 and 2 stay open for the life of the process (see above), and
    // nothing in the shim closes them, so the borrow can never outlive the descriptor.
    unsafe { BorrowedFd::borrow_raw(n as i32) }
}
