//! The subcommands that talk to a running host, beyond `publish` and `plugins`; and
//! `new`, which scaffolds a plugin crate, and `dev`, which builds, runs and reloads it.

pub mod demo;
pub mod dev;
pub mod new;
pub mod ops;

pub use crate::Admin;
