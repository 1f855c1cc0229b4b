//! JSON values in the store, and read-modify-write without a lock
//! (compare-and-swap).
//!
//! ```no_run
//! # use techub_guest::prelude::*;
//! #[derive(serde::Serialize, serde::Deserialize, Default)]
//! struct Tally { orders: u64 }
//!
//! # fn main() -> Result<(), store::StoreError> {
//! // Safe with any number of concurrent handlers, on any number of hosts.
//! let tally = store::update_json("tally", None, |t: Option<Tally>| {
//!     let mut t = t.unwrap_or_default();
//!     t.orders += 1;
//!     t
//! })?;
//! # let _ = tally.orders;
//! # Ok(())
//! # }
//! ```

use super::{SetOptions, StoreError, get, set_with};
use crate::wit::techub::platform::store as wit;
use serde::{Serialize, de::DeserializeOwned};

/// How many times [`update`] and [`update_json`] try before giving up with
/// `Unavailable` (a key written this often by others at once needs another design).
pub const MAX_SWAP_ATTEMPTS: u32 = 64;

fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(bytes).map_err(|e| {
        StoreError::InvalidArgument(format!("stored value is not the expected JSON: {e}"))
    })
}

fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(value)
        .map_err(|e| StoreError::InvalidArgument(format!("value does not serialize: {e}")))
}

/// Reads a value and parses it as JSON; a value that does not parse is
/// `InvalidArgument`.
///
/// ```no_run
/// # use techub_guest::prelude::*;
/// # fn handle() -> Result<(), Failure> {
/// let cart: Option<Vec<String>> = store::get_json("cart:42")?;
/// # Ok(()) }
/// ```
pub fn get_json<T: DeserializeOwned>(key: impl AsRef<str>) -> Result<Option<T>, StoreError> {
    get(key)?.map(|bytes| decode(&bytes)).transpose()
}

/// Writes a value as JSON; `false` when `options.condition` prevented it.
///
/// ```no_run
/// # use techub_guest::prelude::*;
/// # fn handle() -> Result<(), Failure> {
/// store::set_json("cart:42", &vec!["p-1", "p-2"], store::SetOptions::default().ttl_ms(86_400_000))?;
/// # Ok(()) }
/// ```
pub fn set_json<T: Serialize + ?Sized>(
    key: impl AsRef<str>,
    value: &T,
    options: SetOptions,
) -> Result<bool, StoreError> {
    set_with(key, encode(value)?, options)
}

/// Replaces the value of `key` only if it is still `expected` (`None`: the key must not
/// exist); `new` `None` deletes it. `false` when another writer came first: read again
/// and retry (or use [`update`]).
///
/// ```no_run
/// # use techub_guest::prelude::*;
/// # fn handle() -> Result<(), Failure> {
/// // Move the order from "placed" to "paid", unless someone else moved it first.
/// let moved = store::compare_and_swap("order:o-1", Some(b"placed"), Some(b"paid"), None)?;
/// # Ok(()) }
/// ```
pub fn compare_and_swap(
    key: impl AsRef<str>,
    expected: Option<&[u8]>,
    new: Option<&[u8]>,
    ttl_ms: Option<u64>,
) -> Result<bool, StoreError> {
    crate::native::ensure_host();
    Ok(wit::compare_and_swap(key.as_ref(), expected, new, ttl_ms)?)
}

/// Read-modify-write of `key` without a lock: reads the value, computes `change(value)`
/// and swaps it in if nobody wrote in between, else tries again (at most
/// [`MAX_SWAP_ATTEMPTS`] times). Returns what was written (`None`: deleted).
///
/// ```no_run
/// # use techub_guest::prelude::*;
/// # fn handle() -> Result<(), Failure> {
/// let written = store::update("visits", None, |old| {
///     let n: u64 = old.and_then(|v| std::str::from_utf8(v).ok()?.parse().ok()).unwrap_or(0);
///     Some((n + 1).to_string().into_bytes())
/// })?;
/// # Ok(()) }
/// ```
pub fn update(
    key: impl AsRef<str>,
    ttl_ms: Option<u64>,
    mut change: impl FnMut(Option<&[u8]>) -> Option<Vec<u8>>,
) -> Result<Option<Vec<u8>>, StoreError> {
    let key = key.as_ref();
    for _ in 0..MAX_SWAP_ATTEMPTS {
        let current = get(key)?;
        let new = change(current.as_deref());
        if compare_and_swap(key, current.as_deref(), new.as_deref(), ttl_ms)? {
            return Ok(new);
        }
    }
    Err(StoreError::Unavailable(format!(
        "{key} changed under {MAX_SWAP_ATTEMPTS} attempts in a row"
    )))
}

/// [`update`] of a JSON value.
///
/// ```no_run
/// # use techub_guest::prelude::*;
/// # fn handle() -> Result<(), Failure> {
/// let cart: Vec<String> = store::update_json("cart:42", None, |cart: Option<Vec<String>>| {
///     let mut cart = cart.unwrap_or_default();
///     cart.push("p-3".into());
///     cart
/// })?;
/// # Ok(()) }
/// ```
pub fn update_json<T: Serialize + DeserializeOwned>(
    key: impl AsRef<str>,
    ttl_ms: Option<u64>,
    mut change: impl FnMut(Option<T>) -> T,
) -> Result<T, StoreError> {
    let key = key.as_ref();
    for _ in 0..MAX_SWAP_ATTEMPTS {
        let current = get(key)?;
        let parsed = current.as_deref().map(decode).transpose()?;
        let next = change(parsed);
        let bytes = encode(&next)?;
        if compare_and_swap(key, current.as_deref(), Some(&bytes), ttl_ms)? {
            return Ok(next);
        }
    }
    Err(StoreError::Unavailable(format!(
        "{key} changed under {MAX_SWAP_ATTEMPTS} attempts in a row"
    )))
}
