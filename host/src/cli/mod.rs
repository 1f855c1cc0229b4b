//! The subcommands: those that talk to a running host (`ops`), `check` (a plugin
//! loaded offline), `new`, which scaffolds a plugin crate, `dev`, which builds, runs
//! and reloads it, `test_runner`, which runs its tests (`cargo test`), and `demo`.

pub mod check;
pub mod demo;
pub mod dev;
pub mod inspect;
pub mod new;
pub mod ops;
pub mod test_runner;

pub use crate::Admin;
