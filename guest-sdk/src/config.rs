//! This plugin's settings, from `[plugins.<name>.settings]` in `host.toml`, and its
//! secrets, from `[plugins.<name>.secrets]` (read by the host from its environment or
//! a file, given to this plugin alone): both are read with [`get`].

use crate::wit::techub::platform::config as wit;

/// One setting, or `None` when it is not set.
///
/// ```no_run
/// # use techub_guest::prelude::*;
/// # fn handle() -> Result<(), Failure> {
/// if let Some(sender) = config::get("sender") {
///     log::info(format!("mail from {sender}"));
/// }
/// # Ok(()) }
/// ```
pub fn get(key: impl AsRef<str>) -> Option<String> {
    crate::native::ensure_host();
    wit::get(key.as_ref())
}

/// One setting, or `default` when it is not set.
///
/// ```no_run
/// # use techub_guest::prelude::*;
/// # fn handle() -> Result<(), Failure> {
/// let sender = config::get_or("sender", "noreply@techub.example");
/// # Ok(()) }
/// ```
pub fn get_or(key: impl AsRef<str>, default: impl Into<String>) -> String {
    get(key).unwrap_or_else(|| default.into())
}

/// Every setting.
///
/// ```no_run
/// # use techub_guest::prelude::*;
/// # fn handle() -> Result<(), Failure> {
/// for (key, value) in config::all() {
///     log::debug(format!("{key} = {value}"));
/// }
/// # Ok(()) }
/// ```
pub fn all() -> Vec<(String, String)> {
    crate::native::ensure_host();
    wit::get_all()
}

/// One setting parsed as `T`, or `default` when it is not set. A setting that does not
/// parse is a `Failure::retry` naming it and the `host.toml` line: the operator's fix
/// applies on reload, and the message waits for it instead of being lost.
///
/// ```no_run
/// # use techub_guest::prelude::*;
/// # fn handle() -> Result<(), Failure> {
/// let limit: u64 = config::parsed_or("limit", 100_000)?;
/// # Ok(()) }
/// ```
pub fn parsed_or<T>(key: impl AsRef<str>, default: T) -> Result<T, crate::Failure>
where
    T: std::str::FromStr,
    T::Err: std::fmt::Display,
{
    let key = key.as_ref();
    match get(key) {
        None => Ok(default),
        Some(text) => text.trim().parse().map_err(|error| {
            crate::Failure::retry(format!(
                "setting {key:?} = {text:?} is not valid ({error}); fix it in [plugins.<name>.settings] of host.toml"
            ))
        }),
    }
}
