//! The subcommands that talk to a running host, beyond `publish` and `plugins`; and
//! `new`, which scaffolds a plugin crate.

pub mod new;
pub mod ops;

pub use crate::Admin;
