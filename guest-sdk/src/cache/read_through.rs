//! Read-through: misses filled by the host through the domain's loader.

use super::{CacheError, parse_json as parse, wit};
use serde::de::DeserializeOwned;

/// Reads an entry, or on a miss has the host load it through the domain's loader
/// (`[cache.loaders]` in `host.toml`, a plugin with a [`loader`](crate::loader)), which
/// caches it with the loader's TTL and tags. `None` when the loader has no value for
/// the key.
///
/// Concurrent misses of one key are loaded once, in one host and across hosts; a
/// caller waits for the load in progress instead of starting its own.
///
/// ```ignore
/// let product = cache::get_or_load(Domain::PRODUCTS, "p-1")?; // Option<Vec<u8>>
/// ```
pub fn get_or_load(
    domain: impl AsRef<str>,
    key: impl AsRef<str>,
) -> Result<Option<Vec<u8>>, CacheError> {
    crate::native::ensure_host();
    Ok(wit::get_or_load(domain.as_ref(), key.as_ref())?)
}

/// [`get_or_load`], the value parsed as JSON; a value that does not parse is a
/// [`CacheError::InvalidArgument`].
///
/// ```ignore
/// #[derive(serde::Deserialize)]
/// struct Product { name: String, price_cents: u64 }
/// let product: Option<Product> = cache::get_or_load_json(Domain::PRODUCTS, "p-1")?;
/// ```
pub fn get_or_load_json<T: DeserializeOwned>(
    domain: impl AsRef<str>,
    key: impl AsRef<str>,
) -> Result<Option<T>, CacheError> {
    get_or_load(domain, key)?.map(|v| parse(&v)).transpose()
}

/// [`get_or_load`] for many keys: one read, then one loader call for the keys that
/// missed. Results are in the order of `keys`.
///
/// ```ignore
/// let products = cache::get_or_load_many(Domain::PRODUCTS, &["p-1", "p-2"])?;
/// ```
pub fn get_or_load_many<K: AsRef<str>>(
    domain: impl AsRef<str>,
    keys: &[K],
) -> Result<Vec<Option<Vec<u8>>>, CacheError> {
    crate::native::ensure_host();
    let keys: Vec<String> = keys.iter().map(|k| k.as_ref().to_string()).collect();
    Ok(wit::get_or_load_many(domain.as_ref(), &keys)?)
}

/// [`get_or_load_many`], each value parsed as JSON.
///
/// ```ignore
/// let prices: Vec<Option<u64>> = cache::get_or_load_many_json(Domain::PRICING, &["a", "b"])?;
/// ```
pub fn get_or_load_many_json<T: DeserializeOwned, K: AsRef<str>>(
    domain: impl AsRef<str>,
    keys: &[K],
) -> Result<Vec<Option<T>>, CacheError> {
    get_or_load_many(domain, keys)?
        .into_iter()
        .map(|v| v.map(|v| parse(&v)).transpose())
        .collect()
}
