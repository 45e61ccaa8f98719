//! The client tools: `supermq pub`, `supermq sub`, `supermq bench` and `supermq health`;
//! `supermq ctl`, which speaks to a node's admin API over HTTP ([`ctl`]); and `supermq passwd`,
//! which edits a password file and needs no broker ([`passwd`]); and `supermq storage`, which
//! checks or compacts a stopped node's store ([`storage`]).
//!
//! They share the option spelling of mosquitto's clients ([`args`]), the [`crate::client`]
//! connection, and one table of exit codes ([`exit`]). `main` parses the command line, builds
//! a runtime and calls the tool's `run`; each tool returns a [`ToolError`] whose exit code
//! `main` passes on.

pub mod args;
pub mod bench;
pub mod ctl;
pub mod exit;
pub mod health;
pub mod passwd;
pub mod publish;
pub mod storage;
pub mod subscribe;

pub use exit::ToolError;
