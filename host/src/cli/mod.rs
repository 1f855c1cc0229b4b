//! The subcommands that talk to a running host, beyond `publish` and `plugins`.

pub mod ops;

pub use crate::Admin;
