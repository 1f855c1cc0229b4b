//! The WIT `store` interface: namespacing, validation and quotas over a backend.

use super::StoreBackend;
use super::StoreGrant;
use crate::capability::bindings::techub::platform::store::{
    Host, KeyTtl, ListEnd, OpResult, ScanPage, ScoreRange, Scored, SetCondition, SetOptions,
    StoreError, StoreOp,
};
use crate::capability::{BackendError, Failure, Usage, unavailable_for_guest};
use crate::names::{check_name, glob};
use std::sync::Arc;
use std::time::Duration;
use wasmtime::component::HasData;

type Result<T> = std::result::Result<T, StoreError>;

/// What a store host function fails with.
pub type StoreFailure = Failure<StoreError>;
type StoreResult<T> = std::result::Result<T, StoreFailure>;

/// What the `store` interface reaches of an instance: the plugin's namespace and
/// limits, this invocation's quotas, and the claims it made.
pub struct StoreView<'a> {
    grant: &'a StoreGrant,
    usage: &'a mut Usage,
    claims: &'a mut Vec<Claim>,
}

/// A claim this invocation made: its key and the lifetime it was asked for.
#[derive(Debug, Clone)]
pub struct Claim {
    key: String,
    ttl: Duration,
}

/// What a claim holds while its invocation runs, and once that ended `ok`.
const PENDING: &[u8] = b"pending";
const DONE: &[u8] = b"done";

impl<'a> StoreView<'a> {
    /// The view of one instance.
    pub fn new(grant: &'a StoreGrant, usage: &'a mut Usage, claims: &'a mut Vec<Claim>) -> Self {
        Self {
            grant,
            usage,
            claims,
        }
    }

    pub(super) fn charge_call(
        &mut self,
        function: &'static str,
    ) -> std::result::Result<(), String> {
        self.usage.charge("store", function)
    }

    /// Makes the claims of an invocation that ended `ok` final: `done`, for the
    /// lifetime they were asked for.
    pub async fn confirm_claims(&mut self) {
        for claim in std::mem::take(self.claims) {
            let store = &self.grant.backend;
            let confirmed = store
                .set(&claim.key, DONE, Some(claim.ttl), SetCondition::Always)
                .await;
            if let Err(error) = confirmed {
                tracing::warn!(plugin = %self.grant.plugin, %error, "could not confirm a claim; it expires with the invocation's timeout and a redelivery does the work again");
            }
        }
    }

    /// Deletes the claims of an invocation that did not end `ok` and are still
    /// pending, so that a retry can claim them again; a claim the plugin marked done
    /// (its work finished: `once` does so) stays, or the retry would repeat the work.
    pub async fn release_claims(&mut self) {
        for claim in std::mem::take(self.claims) {
            let store = &self.grant.backend;
            let released = store
                .compare_and_swap(&claim.key, Some(PENDING), None, None)
                .await;
            if let Err(error) = released {
                tracing::warn!(plugin = %self.grant.plugin, %error, "could not release the claim of a failed invocation; it lapses with the invocation's timeout");
            }
        }
    }
}

/// Links `store` with [`StoreView`].
pub struct HasStore;

impl HasData for HasStore {
    type Data<'a> = StoreView<'a>;
}

impl From<BackendError> for StoreFailure {
    fn from(error: BackendError) -> Self {
        StoreError::from(error).into()
    }
}

/// Most keys or members one call may name; bounds the work of a single host call.
const MAX_ITEMS_PER_CALL: usize = 1000;
/// Most keys one `scan` page examines.
const MAX_SCAN_COUNT: u32 = 1000;

impl From<BackendError> for StoreError {
    fn from(error: BackendError) -> Self {
        match error {
            BackendError::Unavailable(m) => {
                StoreError::Unavailable(unavailable_for_guest("store", &m))
            }
            BackendError::WrongType => StoreError::WrongType,
            BackendError::Overflow => StoreError::Overflow,
            BackendError::InvalidArgument(m) => StoreError::InvalidArgument(m),
        }
    }
}

/// Longest TTL: ten years. Redis refuses an expiry that overflows its clock, so the
/// bound keeps both backends answering the same.
const MAX_TTL_MS: u64 = 10 * 365 * 86_400_000;

pub(super) fn nonzero_ttl(ms: u64) -> Result<Duration> {
    if ms == 0 || ms > MAX_TTL_MS {
        return Err(StoreError::InvalidArgument(format!(
            "ttl-ms must be 1 to {MAX_TTL_MS}, got {ms}"
        )));
    }
    Ok(Duration::from_millis(ms))
}

impl StoreView<'_> {
    /// Charges a call and returns the namespaced form of `key`.
    pub(super) fn store_key(&mut self, function: &'static str, key: &str) -> Result<String> {
        self.charge_call(function)
            .map_err(StoreError::QuotaExceeded)?;
        self.namespaced(key)
    }

    /// Charges a call; the backend and the namespaced key.
    fn store_op(
        &mut self,
        function: &'static str,
        key: &str,
    ) -> Result<(Arc<dyn StoreBackend>, String)> {
        let key = self.store_key(function, key)?;
        Ok((self.grant.backend.clone(), key))
    }

    /// The store backend.
    pub(super) fn backend(&self) -> Arc<dyn StoreBackend> {
        self.grant.backend.clone()
    }

    pub(super) fn namespaced(&self, key: &str) -> Result<String> {
        check_name(key, self.grant.max_key_length)
            .map_err(|m| StoreError::InvalidKey(format!("key {m}")))?;
        Ok(format!("{}{key}", self.grant.prefix))
    }

    pub(super) fn check_items(&self, count: usize) -> Result<()> {
        if count > MAX_ITEMS_PER_CALL {
            return Err(StoreError::InvalidArgument(format!(
                "more than {MAX_ITEMS_PER_CALL} items in one call"
            )));
        }
        Ok(())
    }

    pub(super) fn check_values<'a>(
        &self,
        values: impl IntoIterator<Item = &'a [u8]>,
    ) -> Result<()> {
        let max = self.grant.max_value_bytes;
        for value in values {
            if value.len() > max {
                return Err(StoreError::ValueTooLarge(max as u64));
            }
        }
        Ok(())
    }

    /// The glob that matches the guest's `pattern` inside its namespace only.
    fn namespaced_pattern(&mut self, function: &'static str, pattern: &str) -> Result<String> {
        self.charge_call(function)
            .map_err(StoreError::QuotaExceeded)?;
        glob::validate(pattern).map_err(StoreError::InvalidArgument)?;
        Ok(format!("{}{pattern}", glob::escape(&self.grant.prefix)))
    }

    fn strip(&self, keys: Vec<String>) -> Vec<String> {
        let prefix = &self.grant.prefix;
        keys.into_iter()
            .filter_map(|k| k.strip_prefix(prefix.as_str()).map(str::to_string))
            .collect()
    }
}

impl Host for StoreView<'_> {
    fn convert_store_error(&mut self, error: StoreFailure) -> wasmtime::Result<StoreError> {
        error.downcast()
    }

    async fn get(&mut self, key: String) -> StoreResult<Option<Vec<u8>>> {
        let (store, key) = self.store_op("get", &key)?;
        Ok(store.get(&key).await?)
    }

    async fn set(&mut self, key: String, value: Vec<u8>, options: SetOptions) -> StoreResult<bool> {
        let key = self.store_key("set", &key)?;
        self.check_values([value.as_slice()])?;
        let ttl = options.ttl_ms.map(nonzero_ttl).transpose()?;
        Ok(self
            .grant
            .backend
            .set(&key, &value, ttl, options.condition)
            .await?)
    }

    async fn claim(&mut self, key: String, ttl_ms: u64) -> StoreResult<bool> {
        let key = self.store_key("claim", &key)?;
        let ttl = nonzero_ttl(ttl_ms)?;
        // Pending until the invocation ends `ok`, and only as long as it can run: a
        // host that dies mid-invocation leaves a claim that lapses, so the broker's
        // redelivery does the work instead of finding it claimed for good.
        let timeout = self.grant.invocation_timeout;
        let pending = ttl.min(timeout + Duration::from_secs(1));
        let store = self.grant.backend.clone();
        let claimed = store
            .set(&key, PENDING, Some(pending), SetCondition::IfAbsent)
            .await?;
        if claimed {
            self.claims.push(Claim { key, ttl });
        }
        Ok(claimed)
    }

    async fn delete(&mut self, keys: Vec<String>) -> StoreResult<u32> {
        self.charge_call("delete")
            .map_err(StoreError::QuotaExceeded)?;
        self.check_items(keys.len())?;
        let keys = keys
            .iter()
            .map(|k| self.namespaced(k))
            .collect::<Result<Vec<_>>>()?;
        Ok(self.grant.backend.delete(&keys).await?)
    }

    async fn exists(&mut self, key: String) -> StoreResult<bool> {
        let (store, key) = self.store_op("exists", &key)?;
        Ok(store.exists(&key).await?)
    }

    async fn expire(&mut self, key: String, ttl_ms: u64) -> StoreResult<bool> {
        let key = self.store_key("expire", &key)?;
        Ok(self
            .grant
            .backend
            .expire(&key, nonzero_ttl(ttl_ms)?)
            .await?)
    }

    async fn persist(&mut self, key: String) -> StoreResult<bool> {
        let (store, key) = self.store_op("persist", &key)?;
        Ok(store.persist(&key).await?)
    }

    async fn ttl(&mut self, key: String) -> StoreResult<KeyTtl> {
        let (store, key) = self.store_op("ttl", &key)?;
        Ok(store.ttl(&key).await?)
    }

    async fn incr_by(&mut self, key: String, delta: i64) -> StoreResult<i64> {
        let (store, key) = self.store_op("incr_by", &key)?;
        Ok(store.incr_by(&key, delta).await?)
    }

    async fn hash_get(&mut self, key: String, field: String) -> StoreResult<Option<Vec<u8>>> {
        let (store, key) = self.store_op("hash_get", &key)?;
        Ok(store.hash_get(&key, &field).await?)
    }

    async fn hash_set(&mut self, key: String, fields: Vec<(String, Vec<u8>)>) -> StoreResult<u32> {
        let key = self.store_key("hash_set", &key)?;
        self.check_items(fields.len())?;
        self.check_values(fields.iter().map(|(_, v)| v.as_slice()))?;
        if fields.is_empty() {
            return Err(
                StoreError::InvalidArgument("hash-set needs at least one field".into()).into(),
            );
        }
        Ok(self.grant.backend.hash_set(&key, &fields).await?)
    }

    async fn hash_get_all(&mut self, key: String) -> StoreResult<Vec<(String, Vec<u8>)>> {
        let (store, key) = self.store_op("hash_get_all", &key)?;
        Ok(store.hash_get_all(&key).await?)
    }

    async fn hash_delete(&mut self, key: String, fields: Vec<String>) -> StoreResult<u32> {
        let key = self.store_key("hash_delete", &key)?;
        self.check_items(fields.len())?;
        Ok(self.grant.backend.hash_delete(&key, &fields).await?)
    }

    async fn hash_incr_by(&mut self, key: String, field: String, delta: i64) -> StoreResult<i64> {
        let (store, key) = self.store_op("hash_incr_by", &key)?;
        Ok(store.hash_incr_by(&key, &field, delta).await?)
    }

    async fn list_push(
        &mut self,
        key: String,
        end: ListEnd,
        values: Vec<Vec<u8>>,
    ) -> StoreResult<u32> {
        let key = self.store_key("list_push", &key)?;
        self.check_items(values.len())?;
        self.check_values(values.iter().map(Vec::as_slice))?;
        if values.is_empty() {
            return Err(
                StoreError::InvalidArgument("list-push needs at least one value".into()).into(),
            );
        }
        Ok(self.grant.backend.list_push(&key, end, &values).await?)
    }

    async fn list_pop(
        &mut self,
        key: String,
        end: ListEnd,
        count: u32,
    ) -> StoreResult<Vec<Vec<u8>>> {
        let key = self.store_key("list_pop", &key)?;
        if count == 0 {
            return Err(StoreError::InvalidArgument("count must be at least 1".into()).into());
        }
        self.check_items(count as usize)?;
        Ok(self.grant.backend.list_pop(&key, end, count).await?)
    }

    async fn list_range(
        &mut self,
        key: String,
        start: i64,
        stop: i64,
    ) -> StoreResult<Vec<Vec<u8>>> {
        let (store, key) = self.store_op("list_range", &key)?;
        Ok(store.list_range(&key, start, stop).await?)
    }

    async fn list_len(&mut self, key: String) -> StoreResult<u32> {
        let (store, key) = self.store_op("list_len", &key)?;
        Ok(store.list_len(&key).await?)
    }

    async fn set_add(&mut self, key: String, members: Vec<Vec<u8>>) -> StoreResult<u32> {
        let key = self.store_key("set_add", &key)?;
        self.check_items(members.len())?;
        self.check_values(members.iter().map(Vec::as_slice))?;
        if members.is_empty() {
            return Err(
                StoreError::InvalidArgument("set-add needs at least one member".into()).into(),
            );
        }
        Ok(self.grant.backend.set_add(&key, &members).await?)
    }

    async fn set_remove(&mut self, key: String, members: Vec<Vec<u8>>) -> StoreResult<u32> {
        let key = self.store_key("set_remove", &key)?;
        self.check_items(members.len())?;
        if members.is_empty() {
            return Ok(0);
        }
        Ok(self.grant.backend.set_remove(&key, &members).await?)
    }

    async fn set_members(&mut self, key: String) -> StoreResult<Vec<Vec<u8>>> {
        let (store, key) = self.store_op("set_members", &key)?;
        Ok(store.set_members(&key).await?)
    }

    async fn set_contains(&mut self, key: String, member: Vec<u8>) -> StoreResult<bool> {
        let (store, key) = self.store_op("set_contains", &key)?;
        Ok(store.set_contains(&key, &member).await?)
    }

    async fn sorted_add(&mut self, key: String, members: Vec<Scored>) -> StoreResult<u32> {
        Ok(self.sorted_add_checked(&key, members).await?)
    }

    async fn sorted_incr_by(
        &mut self,
        key: String,
        member: Vec<u8>,
        delta: f64,
    ) -> StoreResult<f64> {
        Ok(self.sorted_incr_by_checked(&key, member, delta).await?)
    }

    async fn sorted_score(&mut self, key: String, member: Vec<u8>) -> StoreResult<Option<f64>> {
        Ok(self.sorted_score_checked(&key, member).await?)
    }

    async fn sorted_remove(&mut self, key: String, members: Vec<Vec<u8>>) -> StoreResult<u32> {
        Ok(self.sorted_remove_checked(&key, members).await?)
    }

    async fn sorted_len(&mut self, key: String) -> StoreResult<u32> {
        Ok(self.sorted_len_checked(&key).await?)
    }

    async fn sorted_range(
        &mut self,
        key: String,
        start: i64,
        stop: i64,
        reverse: bool,
    ) -> StoreResult<Vec<Scored>> {
        Ok(self
            .sorted_range_checked(&key, start, stop, reverse)
            .await?)
    }

    async fn sorted_range_by_score(
        &mut self,
        key: String,
        range: ScoreRange,
        reverse: bool,
        offset: u32,
        count: u32,
    ) -> StoreResult<Vec<Scored>> {
        Ok(self
            .sorted_range_by_score_checked(&key, range, reverse, offset, count)
            .await?)
    }

    async fn atomic(&mut self, ops: Vec<StoreOp>) -> StoreResult<Vec<OpResult>> {
        Ok(self.atomic_checked(ops).await?)
    }

    async fn compare_and_swap(
        &mut self,
        key: String,
        expected: Option<Vec<u8>>,
        new: Option<Vec<u8>>,
        ttl_ms: Option<u64>,
    ) -> StoreResult<bool> {
        Ok(self
            .compare_and_swap_checked(&key, expected, new, ttl_ms)
            .await?)
    }

    async fn scan(
        &mut self,
        pattern: String,
        cursor: Option<String>,
        count: u32,
    ) -> StoreResult<ScanPage> {
        let pattern = self.namespaced_pattern("scan", &pattern)?;
        let count = count.clamp(1, MAX_SCAN_COUNT);
        let (keys, cursor) = self
            .grant
            .backend
            .scan(&pattern, cursor.as_deref(), count)
            .await?;
        Ok(ScanPage {
            keys: self.strip(keys),
            cursor,
        })
    }

    async fn delete_matching(&mut self, pattern: String) -> StoreResult<u64> {
        let pattern = self.namespaced_pattern("delete_matching", &pattern)?;
        let store = self.grant.backend.clone();
        let mut deleted = 0u64;
        let mut cursor: Option<String> = None;
        loop {
            let (keys, next) = store
                .scan(&pattern, cursor.as_deref(), MAX_SCAN_COUNT)
                .await?;
            if !keys.is_empty() {
                deleted += u64::from(store.delete(&keys).await?);
            }
            match next {
                Some(next) => cursor = Some(next),
                None => break,
            }
        }
        Ok(deleted)
    }
}
