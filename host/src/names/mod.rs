//! Names and the small languages of names, shared by the configuration and the
//! capabilities: a leaf, importing nothing of the host.
//!
//! # Layout
//! - [`glob`]: Redis glob patterns, as `SCAN MATCH` reads them.
//! - [`routing`]: AMQP routing keys and topic patterns.
//! - [`template`]: keys and tags filled from an event (`"product:{id}"`).
//! - [`topology`]: the queue names the host declares for plugins.
//! - [`check_name`]: what a key, tag or lock name may be.

pub mod glob;
pub mod routing;
pub mod template;
pub mod topology;

/// Why a name (key, tag, lock name) was refused; shared by the capabilities.
pub fn check_name(name: &str, max_len: usize) -> Result<(), String> {
    if name.is_empty() {
        return Err("must not be empty".to_string());
    }
    if name.len() > max_len {
        return Err(format!(
            "is {} bytes, more than the limit of {max_len}",
            name.len()
        ));
    }
    if name.chars().any(char::is_control) {
        return Err("must not contain control characters".to_string());
    }
    Ok(())
}
