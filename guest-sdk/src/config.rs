//! This plugin's settings, from `[plugins.<name>.settings]` in `host.toml`.

use crate::wit::techub::platform::config as wit;

/// One setting, or `None` when it is not set.
pub fn get(key: impl AsRef<str>) -> Option<String> {
    crate::native::ensure_host();
    wit::get(key.as_ref())
}

/// One setting, or `default` when it is not set.
pub fn get_or(key: impl AsRef<str>, default: impl Into<String>) -> String {
    get(key).unwrap_or_else(|| default.into())
}

/// Every setting.
pub fn all() -> Vec<(String, String)> {
    crate::native::ensure_host();
    wit::get_all()
}
