//! `wasi:keyvalue`: the standard key-value interface, as a second face of `store`.
//!
//! A bucket is a namespace of the store: `open("default")` is the plugin's own
//! (`<key_prefix>store:<plugin>:`, the keys its `store` import sees), and any other name
//! is a shared bucket `host.toml` grants it (`[plugins.<name>] buckets = ["orders"]`,
//! keys under `<key_prefix>bucket:orders:`, the same keys for every plugin granted
//! `orders`). Every operation is a `store` call on that namespace, through
//! [`StoreView`]: the same validation, limits, quotas, metrics and backend, so there is
//! one storage implementation with two interfaces.
//!
//! # Layout
//! - `mod.rs`: [`KeyValueGrant`] (the buckets a plugin may open), the [`Bucket`] and
//!   [`Cas`] resources, [`KeyValueView`] with the operations both versions share, and
//!   [`link`].
//! - `draft.rs`: `wasi:keyvalue@0.2.0-draft` (wasmtime, wasmCloud) onto the operations.
//! - `draft2.rs`: `wasi:keyvalue@0.2.0-draft2` (Spin: `cas`, `swap`, s64 `increment`,
//!   string cursors) onto the same operations.
//!
//! The WIT is in `wit/standard/keyvalue-*`.

mod draft;
mod draft2;

use super::store::{StoreGrant, StoreView};
use super::{Usage, store::Claim};
use crate::capability::bindings::techub::platform::store::{
    Host as Store, SetCondition, SetOptions, StoreError,
};
use crate::config::HostConfig;
use std::sync::Arc;
use wasmtime::component::{HasData, Resource, ResourceTable};

pub use crate::config::DEFAULT_BUCKET;

/// Keys examined per `list-keys` page (a `SCAN` count): small enough to bound one
/// call, large enough that listing a few thousand keys takes a few calls.
const LIST_PAGE: u32 = 100;

/// The buckets one plugin may open, each a store namespace.
pub struct KeyValueGrant {
    /// By name; `default` first.
    buckets: Vec<(String, StoreGrant)>,
}

impl KeyValueGrant {
    /// `plugin`'s buckets under `config`: its own, and those `buckets` grants it.
    pub fn new(
        plugin: &str,
        config: &HostConfig,
        backend: &Arc<dyn super::store::StoreBackend>,
    ) -> Self {
        let mut buckets = vec![(
            DEFAULT_BUCKET.to_string(),
            StoreGrant::new(plugin, config, backend.clone()),
        )];
        let granted = config
            .plugins
            .get(plugin)
            .map(|p| p.buckets.clone())
            .unwrap_or_default();
        for name in granted {
            let grant = StoreGrant::for_bucket(plugin, &name, config, backend.clone());
            buckets.push((name, grant));
        }
        Self { buckets }
    }
}

/// An open bucket: which of the plugin's buckets, and the cursors `list-keys` gave
/// out under `0.2.0-draft`, whose cursors are numbers (an index into these).
pub struct Bucket {
    index: usize,
    cursors: Vec<String>,
}

/// A `cas` (0.2.0-draft2): a key of a bucket and the value read from it.
pub struct Cas {
    bucket: usize,
    key: String,
    current: Option<Vec<u8>>,
}

/// Why an operation failed, before a version spells it as its own `error`.
#[derive(Debug)]
pub enum KvError {
    /// `open` named a bucket the plugin is not granted.
    NoSuchStore,
    /// What the store answered, as `<kind>: <detail>`.
    Other(String),
}

/// A failure of an operation: an error for the guest, or a trap.
pub enum KvFailure {
    /// The guest gets this error.
    Error(KvError),
    /// The instance traps (a broken host invariant, or a runaway plugin).
    Trap(wasmtime::Error),
}

impl From<super::store::StoreFailure> for KvFailure {
    fn from(failure: super::store::StoreFailure) -> Self {
        match failure.downcast() {
            Ok(error) => Self::Error(KvError::Other(describe(&error))),
            Err(trap) => Self::Trap(trap),
        }
    }
}

impl From<wasmtime::component::ResourceTableError> for KvFailure {
    fn from(error: wasmtime::component::ResourceTableError) -> Self {
        Self::Trap(error.into())
    }
}

/// A `store` error in one string: the WIT case name, then its detail.
fn describe(error: &StoreError) -> String {
    match error {
        StoreError::InvalidKey(m) => format!("invalid-key: {m}"),
        StoreError::ValueTooLarge(max) => {
            format!("value-too-large: values are at most {max} bytes")
        }
        StoreError::WrongType => "wrong-type: the key holds another type".into(),
        StoreError::Overflow => "overflow: the increment would overflow".into(),
        StoreError::InvalidArgument(m) => format!("invalid-argument: {m}"),
        StoreError::QuotaExceeded(m) => format!("quota-exceeded: {m}"),
        StoreError::Unavailable(m) => format!("unavailable: {m}"),
    }
}

type KvResult<T> = Result<T, KvFailure>;

/// What `wasi:keyvalue` reaches of an instance: the plugin's buckets, this
/// invocation's quotas and claims (for the store views it makes), and the resource
/// table its buckets and `cas`es live in.
pub struct KeyValueView<'a> {
    grant: &'a KeyValueGrant,
    usage: &'a mut Usage,
    claims: &'a mut Vec<Claim>,
    table: &'a mut ResourceTable,
}

impl<'a> KeyValueView<'a> {
    /// The view of one instance.
    pub fn new(
        grant: &'a KeyValueGrant,
        usage: &'a mut Usage,
        claims: &'a mut Vec<Claim>,
        table: &'a mut ResourceTable,
    ) -> Self {
        Self {
            grant,
            usage,
            claims,
            table,
        }
    }

    /// The store view of bucket `index`.
    fn store(&mut self, index: usize) -> StoreView<'_> {
        StoreView::new(&self.grant.buckets[index].1, self.usage, self.claims)
    }

    /// The store view of an open bucket.
    fn bucket(&mut self, bucket: &Resource<Bucket>) -> KvResult<StoreView<'_>> {
        let index = self.table.get(bucket)?.index;
        Ok(self.store(index))
    }

    /// Counts a call that reaches no store (`open`, `cas.current`) against the quota.
    fn charge(&mut self, function: &'static str) -> KvResult<()> {
        self.usage
            .charge("keyvalue", function)
            .map_err(|m| KvFailure::Error(KvError::Other(format!("quota-exceeded: {m}"))))
    }

    pub(crate) fn open(&mut self, name: &str) -> KvResult<Resource<Bucket>> {
        self.charge("open")?;
        let Some(index) = self.grant.buckets.iter().position(|(n, _)| n == name) else {
            return Err(KvFailure::Error(KvError::NoSuchStore));
        };
        Ok(self.table.push(Bucket {
            index,
            cursors: Vec::new(),
        })?)
    }

    pub(crate) fn close(&mut self, bucket: Resource<Bucket>) -> wasmtime::Result<()> {
        self.table.delete(bucket)?;
        Ok(())
    }

    pub(crate) async fn get(
        &mut self,
        bucket: &Resource<Bucket>,
        key: String,
    ) -> KvResult<Option<Vec<u8>>> {
        Ok(self.bucket(bucket)?.get(key).await?)
    }

    pub(crate) async fn set(
        &mut self,
        bucket: &Resource<Bucket>,
        key: String,
        value: Vec<u8>,
    ) -> KvResult<()> {
        let always = SetOptions {
            ttl_ms: None,
            condition: SetCondition::Always,
        };
        self.bucket(bucket)?.set(key, value, always).await?;
        Ok(())
    }

    pub(crate) async fn delete(
        &mut self,
        bucket: &Resource<Bucket>,
        keys: Vec<String>,
    ) -> KvResult<()> {
        self.bucket(bucket)?.delete(keys).await?;
        Ok(())
    }

    pub(crate) async fn exists(
        &mut self,
        bucket: &Resource<Bucket>,
        key: String,
    ) -> KvResult<bool> {
        Ok(self.bucket(bucket)?.exists(key).await?)
    }

    /// One page of the bucket's keys (a `SCAN` over its namespace) and the cursor of
    /// the next, `None` when done.
    pub(crate) async fn list_keys(
        &mut self,
        bucket: &Resource<Bucket>,
        cursor: Option<String>,
    ) -> KvResult<(Vec<String>, Option<String>)> {
        let page = self
            .bucket(bucket)?
            .scan("*".into(), cursor, LIST_PAGE)
            .await?;
        Ok((page.keys, page.cursor))
    }

    /// Remembers `cursor` in the bucket and returns its number (0.2.0-draft's cursors
    /// are numbers, the store's are strings).
    pub(crate) fn number_cursor(
        &mut self,
        bucket: &Resource<Bucket>,
        cursor: String,
    ) -> KvResult<u64> {
        let cursors = &mut self.table.get_mut(bucket)?.cursors;
        cursors.push(cursor);
        Ok(cursors.len() as u64)
    }

    /// The cursor a number from [`Self::number_cursor`] stands for.
    pub(crate) fn numbered_cursor(
        &mut self,
        bucket: &Resource<Bucket>,
        number: u64,
    ) -> KvResult<String> {
        let cursors = &self.table.get(bucket)?.cursors;
        usize::try_from(number)
            .ok()
            .and_then(|n| n.checked_sub(1))
            .and_then(|n| cursors.get(n))
            .cloned()
            .ok_or_else(|| {
                KvFailure::Error(KvError::Other(format!(
                    "invalid-argument: cursor {number} was not given out by this bucket"
                )))
            })
    }

    pub(crate) async fn increment(
        &mut self,
        bucket: &Resource<Bucket>,
        key: String,
        delta: i64,
    ) -> KvResult<i64> {
        Ok(self.bucket(bucket)?.incr_by(key, delta).await?)
    }

    /// Each key's value, in order (one store call per key: not atomic).
    pub(crate) async fn get_many(
        &mut self,
        bucket: &Resource<Bucket>,
        keys: Vec<String>,
    ) -> KvResult<Vec<(String, Option<Vec<u8>>)>> {
        let mut store = self.bucket(bucket)?;
        let mut values = Vec::with_capacity(keys.len());
        for key in keys {
            let value = store.get(key.clone()).await?;
            values.push((key, value));
        }
        Ok(values)
    }

    /// Writes each pair (one store call per pair: not atomic; a failure stops there).
    pub(crate) async fn set_many(
        &mut self,
        bucket: &Resource<Bucket>,
        pairs: Vec<(String, Vec<u8>)>,
    ) -> KvResult<()> {
        let index = self.table.get(bucket)?.index;
        for (key, value) in pairs {
            let always = SetOptions {
                ttl_ms: None,
                condition: SetCondition::Always,
            };
            self.store(index).set(key, value, always).await?;
        }
        Ok(())
    }

    /// Reads `key` for a later [`Self::swap`].
    pub(crate) async fn cas_new(
        &mut self,
        bucket: &Resource<Bucket>,
        key: String,
    ) -> KvResult<Resource<Cas>> {
        let index = self.table.get(bucket)?.index;
        self.cas_of(index, key).await
    }

    async fn cas_of(&mut self, bucket: usize, key: String) -> KvResult<Resource<Cas>> {
        let current = self.store(bucket).get(key.clone()).await?;
        Ok(self.table.push(Cas {
            bucket,
            key,
            current,
        })?)
    }

    pub(crate) fn cas_current(&mut self, cas: &Resource<Cas>) -> KvResult<Option<Vec<u8>>> {
        self.charge("cas.current")?;
        Ok(self.table.get(cas)?.current.clone())
    }

    pub(crate) fn cas_drop(&mut self, cas: Resource<Cas>) -> wasmtime::Result<()> {
        self.table.delete(cas)?;
        Ok(())
    }

    /// Writes `value` if the key still holds what `cas` read (the store's
    /// compare-and-swap: one step on either backend). `Ok(Err(fresh))` when it did
    /// not: `fresh` holds the value now, to retry with.
    pub(crate) async fn swap(
        &mut self,
        cas: Resource<Cas>,
        value: Vec<u8>,
    ) -> KvResult<Result<(), Resource<Cas>>> {
        let Cas {
            bucket,
            key,
            current,
        } = self.table.delete(cas)?;
        let swapped = self
            .store(bucket)
            .compare_and_swap(key.clone(), current, Some(value), None)
            .await?;
        if swapped {
            return Ok(Ok(()));
        }
        Ok(Err(self.cas_of(bucket, key).await?))
    }
}

/// Links `wasi:keyvalue` with [`KeyValueView`].
pub struct HasKeyValue;

impl HasData for HasKeyValue {
    type Data<'a> = KeyValueView<'a>;
}

/// The view of an instance's `state` this capability's host functions run on.
pub(crate) fn view(state: &mut crate::capability::InstanceState) -> KeyValueView<'_> {
    KeyValueView::new(
        &state.plugin.keyvalue,
        &mut state.usage,
        &mut state.claims,
        &mut state.table,
    )
}

/// Links both versions of `wasi:keyvalue` with [`KeyValueView`], the [`view`] of an
/// instance's state.
pub fn link<T: crate::capability::HoldsInstanceState>(
    linker: &mut wasmtime::component::Linker<T>,
) -> wasmtime::Result<()> {
    let of_instance: fn(&mut T) -> KeyValueView<'_> = |data| view(data.instance_state());
    draft::link(linker, of_instance)?;
    draft2::link(linker, of_instance)
}
