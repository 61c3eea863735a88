//! Clawrden warden: decides, runs and records every command a prisoner's shim forwards.
//!
//! Data flows one way: [`listener`] -> [`session`] -> policy decision -> [`executor`] ->
//! [`audit`]. The binary (`main.rs`) only parses the command line and calls [`app`].
//!
//! `unsafe` is denied everywhere but [`sys`], the one module of syscalls std and nix
//! do not wrap safely.
#![deny(unsafe_code)]

pub mod api;
pub mod app;
pub mod audit;
pub mod audit_forward;
pub mod auth;
pub mod caps;
pub mod cli;
pub mod clock;
pub mod config;
pub mod control;
pub mod dashboard;
pub mod descriptors;
pub mod docker;
pub mod env;
pub mod exec_registry;
pub mod executor;
pub mod frames;
pub mod identity;
pub mod ids;
pub mod kept;
pub mod leftovers;
pub mod lineage;
pub mod listener;
pub mod logging;
pub mod metrics;
pub mod policy_store;
pub mod server;
pub mod session;
pub mod state_dir;
pub mod store;
#[allow(unsafe_code)]
pub mod sys;

#[cfg(test)]
mod testutil;
