//! What a [`loader`](crate::loader) gives the host for one key.

use serde::Serialize;

/// A value a loader gives for a key, and how the host caches it.
///
/// ```ignore
/// Loaded::json(&product)?.ttl_seconds(300).tag(format!("vendor:{}", product.vendor))
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Loaded {
    value: Vec<u8>,
    ttl_seconds: Option<u32>,
    tags: Vec<String>,
}

impl Loaded {
    /// A value of raw bytes, cached with the domain's TTL and no tags.
    ///
    /// ```no_run
    /// # use techub_guest::prelude::*;
    /// # fn handle() -> Result<(), Failure> {
    /// let loaded = techub_guest::cache::Loaded::new(b"Lamp".to_vec());
    /// # Ok(()) }
    /// ```
    pub fn new(value: impl Into<Vec<u8>>) -> Self {
        Self {
            value: value.into(),
            ttl_seconds: None,
            tags: Vec::new(),
        }
    }

    /// A value serialized as JSON.
    ///
    /// ```no_run
    /// # use techub_guest::prelude::*;
    /// # fn handle() -> Result<(), Failure> {
    /// let loaded = techub_guest::cache::Loaded::json(&serde_json::json!({"name": "Lamp"})).map_err(|e| Failure::retry(e))?;
    /// # Ok(()) }
    /// ```
    pub fn json<T: Serialize + ?Sized>(value: &T) -> Result<Self, serde_json::Error> {
        Ok(Self::new(serde_json::to_vec(value)?))
    }

    /// Caches it for `seconds` instead of the domain's TTL.
    ///
    /// ```no_run
    /// # use techub_guest::prelude::*;
    /// # fn handle() -> Result<(), Failure> {
    /// let loaded = techub_guest::cache::Loaded::new(b"Lamp".to_vec()).ttl_seconds(300);
    /// # Ok(()) }
    /// ```
    pub fn ttl_seconds(mut self, seconds: u32) -> Self {
        self.ttl_seconds = Some(seconds);
        self
    }

    /// Files it under `tag` too.
    ///
    /// ```no_run
    /// # use techub_guest::prelude::*;
    /// # fn handle() -> Result<(), Failure> {
    /// let loaded = techub_guest::cache::Loaded::new(b"Lamp".to_vec()).tag("vendor:7");
    /// # Ok(()) }
    /// ```
    pub fn tag(mut self, tag: impl AsRef<str>) -> Self {
        self.tags.push(tag.as_ref().to_string());
        self
    }

    /// Its parts, for the code `#[loader]` expands to.
    ///
    /// ```no_run
    /// # use techub_guest::prelude::*;
    /// # fn handle() -> Result<(), Failure> {
    /// let (value, ttl, tags) = techub_guest::cache::Loaded::new(b"Lamp".to_vec()).ttl_seconds(60).into_parts();
    /// assert_eq!(ttl, Some(60));
    /// # Ok(()) }
    /// ```
    #[doc(hidden)]
    pub fn into_parts(self) -> (Vec<u8>, Option<u32>, Vec<String>) {
        (self.value, self.ttl_seconds, self.tags)
    }
}
