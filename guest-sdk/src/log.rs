//! Logging into the host's log, tagged with the plugin's name.
//!
//! Plain `println!`/`eprintln!` also reach the host's log, one record per line.

use crate::wit::techub::platform::log as wit;

fn write(level: wit::Level, message: &str, fields: &[(&str, &str)]) {
    crate::native::ensure_host();
    let fields: Vec<(String, String)> = fields
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    wit::write(level, message, &fields);
}

/// A debug record.
///
/// ```no_run
/// # use techub_guest::prelude::*;
/// # fn handle() -> Result<(), Failure> {
/// log::debug("cache miss; loading");
/// # Ok(()) }
/// ```
pub fn debug(message: impl AsRef<str>) {
    write(wit::Level::Debug, message.as_ref(), &[]);
}
/// An info record.
///
/// ```no_run
/// # use techub_guest::prelude::*;
/// # fn handle() -> Result<(), Failure> {
/// log::info("order accepted");
/// # Ok(()) }
/// ```
pub fn info(message: impl AsRef<str>) {
    write(wit::Level::Info, message.as_ref(), &[]);
}
/// A warning.
///
/// ```no_run
/// # use techub_guest::prelude::*;
/// # fn handle() -> Result<(), Failure> {
/// log::warn("stock is low");
/// # Ok(()) }
/// ```
pub fn warn(message: impl AsRef<str>) {
    write(wit::Level::Warn, message.as_ref(), &[]);
}
/// An error record.
///
/// ```no_run
/// # use techub_guest::prelude::*;
/// # fn handle() -> Result<(), Failure> {
/// log::error("payment gateway answered garbage");
/// # Ok(()) }
/// ```
pub fn error(message: impl AsRef<str>) {
    write(wit::Level::Error, message.as_ref(), &[]);
}
/// An info record with key/value fields.
///
/// ```no_run
/// # use techub_guest::prelude::*;
/// # fn handle() -> Result<(), Failure> {
/// log::info_with("order accepted", &[("order", "o-1"), ("items", "3")]);
/// # Ok(()) }
/// ```
pub fn info_with(message: impl AsRef<str>, fields: &[(&str, &str)]) {
    write(wit::Level::Info, message.as_ref(), fields);
}
