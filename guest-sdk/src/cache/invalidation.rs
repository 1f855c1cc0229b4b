//! Invalidating keys, tags and a pattern in one call (the specification's
//! `CacheInvalidationDto`).

use super::{CacheError, wit};

/// What [`invalidate`] removes: keys, tags and a pattern, any of them.
///
/// ```no_run
/// # use techub_guest::prelude::*;
/// # fn main() -> Result<(), cache::CacheError> {
/// let removed = cache::invalidate(
///     cache::Domain::PRODUCTS,
///     &cache::Invalidation::new()
///         .keys(["p-1", "p-2"])
///         .tag("vendor:123")
///         .pattern("search:*"),
/// )?;
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Invalidation {
    keys: Vec<String>,
    tags: Vec<String>,
    pattern: Option<String>,
}

impl Invalidation {
    /// Nothing yet.
    ///
    /// ```no_run
    /// # use techub_guest::prelude::*;
    /// # fn handle() -> Result<(), Failure> {
    /// let what = techub_guest::cache::Invalidation::new().key("p-1");
    /// # Ok(()) }
    /// ```
    pub fn new() -> Self {
        Self::default()
    }
    /// Adds a key.
    ///
    /// ```no_run
    /// # use techub_guest::prelude::*;
    /// # fn handle() -> Result<(), Failure> {
    /// let what = techub_guest::cache::Invalidation::new().key("p-1").key("p-2");
    /// # Ok(()) }
    /// ```
    pub fn key(mut self, key: impl AsRef<str>) -> Self {
        self.keys.push(key.as_ref().to_string());
        self
    }
    /// Adds keys.
    ///
    /// ```no_run
    /// # use techub_guest::prelude::*;
    /// # fn handle() -> Result<(), Failure> {
    /// let what = techub_guest::cache::Invalidation::new().keys(["p-1", "p-2"]);
    /// # Ok(()) }
    /// ```
    pub fn keys<K: AsRef<str>>(mut self, keys: impl IntoIterator<Item = K>) -> Self {
        self.keys
            .extend(keys.into_iter().map(|k| k.as_ref().to_string()));
        self
    }
    /// Adds a tag.
    ///
    /// ```no_run
    /// # use techub_guest::prelude::*;
    /// # fn handle() -> Result<(), Failure> {
    /// let what = techub_guest::cache::Invalidation::new().tag("vendor:7");
    /// # Ok(()) }
    /// ```
    pub fn tag(mut self, tag: impl AsRef<str>) -> Self {
        self.tags.push(tag.as_ref().to_string());
        self
    }
    /// Adds tags.
    ///
    /// ```no_run
    /// # use techub_guest::prelude::*;
    /// # fn handle() -> Result<(), Failure> {
    /// let what = techub_guest::cache::Invalidation::new().tags(["vendor:7", "sale"]);
    /// # Ok(()) }
    /// ```
    pub fn tags<T: AsRef<str>>(mut self, tags: impl IntoIterator<Item = T>) -> Self {
        self.tags
            .extend(tags.into_iter().map(|t| t.as_ref().to_string()));
        self
    }
    /// Sets the glob over the domain's keys.
    ///
    /// ```no_run
    /// # use techub_guest::prelude::*;
    /// # fn handle() -> Result<(), Failure> {
    /// let what = techub_guest::cache::Invalidation::new().pattern("search:*");
    /// # Ok(()) }
    /// ```
    pub fn pattern(mut self, pattern: impl AsRef<str>) -> Self {
        self.pattern = Some(pattern.as_ref().to_string());
        self
    }
}

/// Removes from `domain` every entry `what` names, in one call (keys and tags in one
/// round trip on Redis); an entry named several ways counts once. Returns how many
/// entries were removed.
///
/// ```no_run
/// # use techub_guest::prelude::*;
/// # fn handle() -> Result<(), Failure> {
/// use techub_guest::cache::Invalidation;
/// let what = Invalidation::new().key("p-1").tag("vendor:7").pattern("search:lamp*");
/// let removed: u64 = cache::invalidate(Domain::PRODUCTS, &what)?;
/// # Ok(()) }
/// ```
pub fn invalidate(domain: impl AsRef<str>, what: &Invalidation) -> Result<u64, CacheError> {
    crate::native::ensure_host();
    Ok(wit::invalidate(
        domain.as_ref(),
        &wit::Invalidation {
            keys: what.keys.clone(),
            tags: what.tags.clone(),
            pattern: what.pattern.clone(),
        },
    )?)
}
