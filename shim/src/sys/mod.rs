//! The only place in the shim where `unsafe` is allowed: terminal ioctls and raw signal
//! handling. Every `unsafe` block carries a `// SAFETY:` comment.

pub mod process;
pub mod signals;
pub mod term;
