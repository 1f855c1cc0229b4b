//! Redis data structures in the plugin's own namespace.
//!
//! Keys are the plugin's alone: the host files them under `techub:store:<plugin>:`.
//! Strings, counters, hashes, lists, sets, sorted sets (`sorted_*`), JSON values
//! (`get_json`, `set_json`), lock-free read-modify-write (`compare_and_swap`,
//! `update`, `update_json`), writes checked against a lock's fencing token
//! (`update_fenced`, `set_fenced`, `get_fenced`) and transactions (`atomic`).

use crate::Failure;
use crate::wit::techub::platform::store as wit;

mod atomic;
mod fenced;
mod json;
mod sorted;

pub use atomic::{MAX_ATOMIC_OPS, Op, OpResult, atomic};
pub use fenced::{Fenced, get_fenced, set_fenced, update_fenced};

pub use json::{MAX_SWAP_ATTEMPTS, compare_and_swap, get_json, set_json, update, update_json};
pub use sorted::{
    ScoreRange, Scored, sorted_add, sorted_incr_by, sorted_len, sorted_range,
    sorted_range_by_score, sorted_remove, sorted_score,
};

/// Which end of a list.
///
/// ```no_run
/// # use techub_guest::prelude::*;
/// # fn handle() -> Result<(), Failure> {
/// store::list_push("jobs", store::ListEnd::Back, &[b"job-1".to_vec()])?;
/// let next = store::list_pop("jobs", store::ListEnd::Front, 1)?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListEnd {
    /// The head (Redis `L...`).
    Front,
    /// The tail (Redis `R...`).
    Back,
}

impl ListEnd {
    fn to_wit(self) -> wit::ListEnd {
        match self {
            Self::Front => wit::ListEnd::Front,
            Self::Back => wit::ListEnd::Back,
        }
    }
}

/// Why a store call failed.
///
/// ```no_run
/// # use techub_guest::prelude::*;
/// # fn handle() -> Result<(), Failure> {
/// match store::incr("not-a-number") {
///     Ok(n) => {}
///     Err(store::StoreError::WrongType) => return Err(Failure::reject("the key holds text")),
///     Err(other) => return Err(other.into()),
/// }
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The key is empty, too long or has a control character.
    #[error("invalid key: {0}")]
    InvalidKey(String),
    /// The value exceeds the value limit (bytes).
    #[error("value larger than the limit of {0} bytes")]
    ValueTooLarge(u64),
    /// The key holds another type, or an increment met a non-integer.
    #[error("wrong type for this operation")]
    WrongType,
    /// An increment would overflow.
    #[error("increment would overflow")]
    Overflow,
    /// An argument is out of range.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// A quota of this invocation is used up.
    #[error("quota exceeded: {0}")]
    QuotaExceeded(String),
    /// The backend is unreachable or timed out.
    #[error("store unavailable: {0}")]
    Unavailable(String),
}

impl From<wit::StoreError> for StoreError {
    fn from(error: wit::StoreError) -> Self {
        match error {
            wit::StoreError::InvalidKey(m) => Self::InvalidKey(m),
            wit::StoreError::ValueTooLarge(n) => Self::ValueTooLarge(n),
            wit::StoreError::WrongType => Self::WrongType,
            wit::StoreError::Overflow => Self::Overflow,
            wit::StoreError::InvalidArgument(m) => Self::InvalidArgument(m),
            wit::StoreError::QuotaExceeded(m) => Self::QuotaExceeded(m),
            wit::StoreError::Unavailable(m) => Self::Unavailable(m),
        }
    }
}

impl From<StoreError> for Failure {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::Unavailable(_) | StoreError::QuotaExceeded(_) => Failure::retry(error),
            _ => Failure::reject(error),
        }
    }
}

/// The remaining lifetime of a key.
///
/// ```no_run
/// # use techub_guest::prelude::*;
/// # fn handle() -> Result<(), Failure> {
/// match store::ttl("session:9")? {
///     store::Ttl::Missing => log::info("gone"),
///     store::Ttl::Persistent => log::info("never expires"),
///     store::Ttl::ExpiresInMs(ms) => log::info(format!("{ms} ms left")),
/// }
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ttl {
    /// The key does not exist.
    Missing,
    /// The key never expires.
    Persistent,
    /// The key expires in this many milliseconds.
    ExpiresInMs(u64),
}

/// How [`set_with`] writes.
///
/// ```no_run
/// # use techub_guest::prelude::*;
/// # fn handle() -> Result<(), Failure> {
/// let options = store::SetOptions::default().if_absent().ttl_ms(60_000);
/// let first = store::set_with("job:7:owner", "worker-a", options)?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct SetOptions {
    ttl_ms: Option<u64>,
    condition: Condition,
}

#[derive(Debug, Clone, Copy, Default)]
enum Condition {
    #[default]
    Always,
    IfAbsent,
    IfPresent,
}

impl SetOptions {
    /// Expire the key after `ms` milliseconds.
    ///
    /// ```no_run
    /// # use techub_guest::prelude::*;
    /// # fn handle() -> Result<(), Failure> {
    /// let options = store::SetOptions::default().ttl_ms(30_000);
    /// # Ok(()) }
    /// ```
    pub fn ttl_ms(mut self, ms: u64) -> Self {
        self.ttl_ms = Some(ms);
        self
    }
    /// Write only if the key does not exist (`NX`).
    ///
    /// ```no_run
    /// # use techub_guest::prelude::*;
    /// # fn handle() -> Result<(), Failure> {
    /// let created = store::set_with("user:42", "{}", store::SetOptions::default().if_absent())?;
    /// # Ok(()) }
    /// ```
    pub fn if_absent(mut self) -> Self {
        self.condition = Condition::IfAbsent;
        self
    }
    /// Write only if the key exists (`XX`).
    ///
    /// ```no_run
    /// # use techub_guest::prelude::*;
    /// # fn handle() -> Result<(), Failure> {
    /// let updated = store::set_with("user:42", "{}", store::SetOptions::default().if_present())?;
    /// # Ok(()) }
    /// ```
    pub fn if_present(mut self) -> Self {
        self.condition = Condition::IfPresent;
        self
    }
    fn to_wit(self) -> wit::SetOptions {
        wit::SetOptions {
            ttl_ms: self.ttl_ms,
            condition: match self.condition {
                Condition::Always => wit::SetCondition::Always,
                Condition::IfAbsent => wit::SetCondition::IfAbsent,
                Condition::IfPresent => wit::SetCondition::IfPresent,
            },
        }
    }
}

fn owned_bytes<M: AsRef<[u8]>>(members: &[M]) -> Vec<Vec<u8>> {
    members.iter().map(|m| m.as_ref().to_vec()).collect()
}

fn owned<K: AsRef<str>>(keys: &[K]) -> Vec<String> {
    keys.iter().map(|k| k.as_ref().to_string()).collect()
}

/// Reads a string value.
///
/// ```no_run
/// # use techub_guest::prelude::*;
/// # fn handle() -> Result<(), Failure> {
/// let stock: Option<Vec<u8>> = store::get("stock:p-1")?;
/// # Ok(()) }
/// ```
pub fn get(key: impl AsRef<str>) -> Result<Option<Vec<u8>>, StoreError> {
    crate::native::ensure_host();
    Ok(wit::get(key.as_ref())?)
}
/// Writes a string value with no TTL.
///
/// ```no_run
/// # use techub_guest::prelude::*;
/// # fn handle() -> Result<(), Failure> {
/// store::set("last-order", "o-1")?;
/// # Ok(()) }
/// ```
pub fn set(key: impl AsRef<str>, value: impl AsRef<[u8]>) -> Result<(), StoreError> {
    set_with(key, value, SetOptions::default()).map(|_| ())
}
/// Writes a string value; `false` when the condition prevented the write.
///
/// ```no_run
/// # use techub_guest::prelude::*;
/// # fn handle() -> Result<(), Failure> {
/// // Only if absent, for a minute: a first-writer-wins marker.
/// let wrote: bool = store::set_with("owner:p-1", "o-1", store::SetOptions::default().if_absent().ttl_ms(60_000))?;
/// # Ok(()) }
/// ```
pub fn set_with(
    key: impl AsRef<str>,
    value: impl AsRef<[u8]>,
    options: SetOptions,
) -> Result<bool, StoreError> {
    crate::native::ensure_host();
    Ok(wit::set(key.as_ref(), value.as_ref(), options.to_wit())?)
}
/// Deletes keys; returns how many existed.
///
/// ```no_run
/// # use techub_guest::prelude::*;
/// # fn handle() -> Result<(), Failure> {
/// let removed: u32 = store::delete(&["draft:1", "draft:2"])?;
/// # Ok(()) }
/// ```
pub fn delete<K: AsRef<str>>(keys: &[K]) -> Result<u32, StoreError> {
    crate::native::ensure_host();
    Ok(wit::delete(&owned(keys))?)
}
/// Whether the key exists.
///
/// ```no_run
/// # use techub_guest::prelude::*;
/// # fn handle() -> Result<(), Failure> {
/// let known: bool = store::exists("user:42")?;
/// # Ok(()) }
/// ```
pub fn exists(key: impl AsRef<str>) -> Result<bool, StoreError> {
    crate::native::ensure_host();
    Ok(wit::exists(key.as_ref())?)
}
/// Sets a key's lifetime; `false` when the key does not exist.
///
/// ```no_run
/// # use techub_guest::prelude::*;
/// # fn handle() -> Result<(), Failure> {
/// store::expire("session:9", 30 * 60_000)?;
/// # Ok(()) }
/// ```
pub fn expire(key: impl AsRef<str>, ttl_ms: u64) -> Result<bool, StoreError> {
    crate::native::ensure_host();
    Ok(wit::expire(key.as_ref(), ttl_ms)?)
}
/// Removes a key's lifetime.
///
/// ```no_run
/// # use techub_guest::prelude::*;
/// # fn handle() -> Result<(), Failure> {
/// store::persist("session:9")?;
/// # Ok(()) }
/// ```
pub fn persist(key: impl AsRef<str>) -> Result<bool, StoreError> {
    crate::native::ensure_host();
    Ok(wit::persist(key.as_ref())?)
}
/// The remaining lifetime of a key.
///
/// ```no_run
/// # use techub_guest::prelude::*;
/// # fn handle() -> Result<(), Failure> {
/// let left = store::ttl("session:9")?;
/// # Ok(()) }
/// ```
pub fn ttl(key: impl AsRef<str>) -> Result<Ttl, StoreError> {
    crate::native::ensure_host();
    Ok(match wit::ttl(key.as_ref())? {
        wit::KeyTtl::Missing => Ttl::Missing,
        wit::KeyTtl::Persistent => Ttl::Persistent,
        wit::KeyTtl::ExpiresInMs(ms) => Ttl::ExpiresInMs(ms),
    })
}
/// Adds `delta` to an integer value (a missing key counts as 0); returns the new value.
///
/// ```no_run
/// # use techub_guest::prelude::*;
/// # fn handle() -> Result<(), Failure> {
/// let level: i64 = store::incr_by("stock:p-1", -3)?;
/// # Ok(()) }
/// ```
pub fn incr_by(key: impl AsRef<str>, delta: i64) -> Result<i64, StoreError> {
    crate::native::ensure_host();
    Ok(wit::incr_by(key.as_ref(), delta)?)
}
/// Adds 1.
///
/// ```no_run
/// # use techub_guest::prelude::*;
/// # fn handle() -> Result<(), Failure> {
/// let orders_today: i64 = store::incr("orders:2026-12-01")?;
/// # Ok(()) }
/// ```
pub fn incr(key: impl AsRef<str>) -> Result<i64, StoreError> {
    incr_by(key, 1)
}
/// Subtracts 1.
///
/// ```no_run
/// # use techub_guest::prelude::*;
/// # fn handle() -> Result<(), Failure> {
/// let left: i64 = store::decr("seats:flight-7")?;
/// # Ok(()) }
/// ```
pub fn decr(key: impl AsRef<str>) -> Result<i64, StoreError> {
    incr_by(key, -1)
}
/// Reads one field of a hash.
///
/// ```no_run
/// # use techub_guest::prelude::*;
/// # fn handle() -> Result<(), Failure> {
/// let status = store::hash_get("payment:o-1", "status")?;
/// # Ok(()) }
/// ```
pub fn hash_get(
    key: impl AsRef<str>,
    field: impl AsRef<str>,
) -> Result<Option<Vec<u8>>, StoreError> {
    crate::native::ensure_host();
    Ok(wit::hash_get(key.as_ref(), field.as_ref())?)
}
/// Writes fields of a hash; returns how many are new.
///
/// ```no_run
/// # use techub_guest::prelude::*;
/// # fn handle() -> Result<(), Failure> {
/// store::hash_set("payment:o-1", &[("status".to_string(), b"paid".to_vec())])?;
/// # Ok(()) }
/// ```
pub fn hash_set(key: impl AsRef<str>, fields: &[(String, Vec<u8>)]) -> Result<u32, StoreError> {
    crate::native::ensure_host();
    Ok(wit::hash_set(key.as_ref(), fields)?)
}
/// Every field of a hash.
///
/// ```no_run
/// # use techub_guest::prelude::*;
/// # fn handle() -> Result<(), Failure> {
/// for (field, value) in store::hash_get_all("payment:o-1")? {
///     log::debug(format!("{field}: {} bytes", value.len()));
/// }
/// # Ok(()) }
/// ```
pub fn hash_get_all(key: impl AsRef<str>) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
    crate::native::ensure_host();
    Ok(wit::hash_get_all(key.as_ref())?)
}
/// Deletes fields of a hash; returns how many existed.
///
/// ```no_run
/// # use techub_guest::prelude::*;
/// # fn handle() -> Result<(), Failure> {
/// store::hash_delete("cart:42", &["p-1"])?;
/// # Ok(()) }
/// ```
pub fn hash_delete<F: AsRef<str>>(key: impl AsRef<str>, fields: &[F]) -> Result<u32, StoreError> {
    crate::native::ensure_host();
    Ok(wit::hash_delete(key.as_ref(), &owned(fields))?)
}
/// Adds `delta` to an integer field; returns the new value.
///
/// ```no_run
/// # use techub_guest::prelude::*;
/// # fn handle() -> Result<(), Failure> {
/// let quantity: i64 = store::hash_incr_by("cart:42", "p-1", 2)?;
/// # Ok(()) }
/// ```
pub fn hash_incr_by(
    key: impl AsRef<str>,
    field: impl AsRef<str>,
    delta: i64,
) -> Result<i64, StoreError> {
    crate::native::ensure_host();
    Ok(wit::hash_incr_by(key.as_ref(), field.as_ref(), delta)?)
}
/// Pushes values onto one end of a list; returns the new length.
///
/// ```no_run
/// # use techub_guest::prelude::*;
/// # fn handle() -> Result<(), Failure> {
/// let length: u32 = store::list_push("recent:42", store::ListEnd::Front, &[b"p-1".to_vec()])?;
/// # Ok(()) }
/// ```
pub fn list_push(
    key: impl AsRef<str>,
    end: ListEnd,
    values: &[Vec<u8>],
) -> Result<u32, StoreError> {
    crate::native::ensure_host();
    Ok(wit::list_push(key.as_ref(), end.to_wit(), values)?)
}
/// Pops up to `count` values from one end of a list.
///
/// ```no_run
/// # use techub_guest::prelude::*;
/// # fn handle() -> Result<(), Failure> {
/// let oldest = store::list_pop("jobs", store::ListEnd::Back, 10)?;
/// # Ok(()) }
/// ```
pub fn list_pop(
    key: impl AsRef<str>,
    end: ListEnd,
    count: u32,
) -> Result<Vec<Vec<u8>>, StoreError> {
    crate::native::ensure_host();
    Ok(wit::list_pop(key.as_ref(), end.to_wit(), count)?)
}
/// Values from `start` to `stop` inclusive; negative indexes count from the end.
///
/// ```no_run
/// # use techub_guest::prelude::*;
/// # fn handle() -> Result<(), Failure> {
/// let last_ten = store::list_range("recent:42", 0, 9)?;
/// # Ok(()) }
/// ```
pub fn list_range(key: impl AsRef<str>, start: i64, stop: i64) -> Result<Vec<Vec<u8>>, StoreError> {
    crate::native::ensure_host();
    Ok(wit::list_range(key.as_ref(), start, stop)?)
}
/// The length of a list.
///
/// ```no_run
/// # use techub_guest::prelude::*;
/// # fn handle() -> Result<(), Failure> {
/// let pending: u32 = store::list_len("jobs")?;
/// # Ok(()) }
/// ```
pub fn list_len(key: impl AsRef<str>) -> Result<u32, StoreError> {
    crate::native::ensure_host();
    Ok(wit::list_len(key.as_ref())?)
}
/// Adds members to a set; returns how many were new.
///
/// ```no_run
/// # use techub_guest::prelude::*;
/// # fn handle() -> Result<(), Failure> {
/// let new: u32 = store::set_add("viewers:p-1", &[b"u-42".to_vec()])?;
/// # Ok(()) }
/// ```
pub fn set_add(key: impl AsRef<str>, members: &[Vec<u8>]) -> Result<u32, StoreError> {
    crate::native::ensure_host();
    Ok(wit::set_add(key.as_ref(), members)?)
}
/// Removes members from a set; returns how many were there.
///
/// ```no_run
/// # use techub_guest::prelude::*;
/// # fn handle() -> Result<(), Failure> {
/// store::set_remove("viewers:p-1", &[b"u-42".to_vec()])?;
/// # Ok(()) }
/// ```
pub fn set_remove(key: impl AsRef<str>, members: &[Vec<u8>]) -> Result<u32, StoreError> {
    crate::native::ensure_host();
    Ok(wit::set_remove(key.as_ref(), members)?)
}
/// Every member of a set.
///
/// ```no_run
/// # use techub_guest::prelude::*;
/// # fn handle() -> Result<(), Failure> {
/// let viewers = store::set_members("viewers:p-1")?;
/// # Ok(()) }
/// ```
pub fn set_members(key: impl AsRef<str>) -> Result<Vec<Vec<u8>>, StoreError> {
    crate::native::ensure_host();
    Ok(wit::set_members(key.as_ref())?)
}
/// Whether `member` is in the set.
///
/// ```no_run
/// # use techub_guest::prelude::*;
/// # fn handle() -> Result<(), Failure> {
/// let seen: bool = store::set_contains("viewers:p-1", b"u-42")?;
/// # Ok(()) }
/// ```
pub fn set_contains(key: impl AsRef<str>, member: impl AsRef<[u8]>) -> Result<bool, StoreError> {
    crate::native::ensure_host();
    Ok(wit::set_contains(key.as_ref(), member.as_ref())?)
}
/// Every key matching the glob `pattern`, collected page by page with `SCAN`.
///
/// ```no_run
/// # use techub_guest::prelude::*;
/// # fn handle() -> Result<(), Failure> {
/// let drafts: Vec<String> = store::scan_all("draft:*")?;
/// # Ok(()) }
/// ```
pub fn scan_all(pattern: impl AsRef<str>) -> Result<Vec<String>, StoreError> {
    crate::native::ensure_host();
    let mut keys = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let page = wit::scan(pattern.as_ref(), cursor.as_deref(), 100)?;
        keys.extend(page.keys);
        match page.cursor {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    keys.sort();
    keys.dedup();
    Ok(keys)
}
/// Deletes every key matching the glob `pattern`; returns how many.
///
/// ```no_run
/// # use techub_guest::prelude::*;
/// # fn handle() -> Result<(), Failure> {
/// let removed: u64 = store::delete_matching("draft:*")?;
/// # Ok(()) }
/// ```
pub fn delete_matching(pattern: impl AsRef<str>) -> Result<u64, StoreError> {
    crate::native::ensure_host();
    Ok(wit::delete_matching(pattern.as_ref())?)
}

/// Claims `key` for this invocation if nobody holds it (see [`once`]); whether it did.
/// The claim stays only if the handler ends with `Ok`; otherwise the host deletes it.
///
/// ```no_run
/// # use techub_guest::prelude::*;
/// # fn handle() -> Result<(), Failure> {
/// if store::claim("export:2026-12", 86_400_000)? {
///     // the first invocation this month to get here runs the export
/// }
/// # Ok(()) }
/// ```
pub fn claim(key: impl AsRef<str>, ttl_ms: u64) -> Result<bool, StoreError> {
    crate::native::ensure_host();
    Ok(wit::claim(key.as_ref(), ttl_ms)?)
}

/// Runs `work` once per `id` (e.g. a message id) within `ttl_ms`.
///
/// The first caller claims the id and runs `work`; once `work` returns `Ok` the claim
/// is marked done, and later callers get `Ok(false)` and skip it. While the first
/// caller is still running, or died with its host before finishing (its claim lapses
/// within the invocation timeout and a second), later callers get a
/// `StoreError::Unavailable`, which makes the handler retry: the work is never skipped
/// on the word of an attempt that did not finish it. If `work` fails, panics or runs
/// out of CPU or time, the claim is released and a retry runs `work` again. A crash
/// *during* `work`, after some of its effects, repeats those effects on the retry:
/// for store effects that must happen exactly once, use [`once_atomic`].
///
/// ```no_run
/// # use techub_guest::prelude::*;
/// # fn handle(message: Message) -> Result<(), Failure> {
/// store::once(message.id(), 86_400_000, || -> Result<(), Failure> {
///     messaging::publish("order.completed", message.payload(), &PublishOptions::default())?;
///     Ok(())
/// })?;
/// # Ok(()) }
/// ```
pub fn once<E: From<StoreError>>(
    id: impl AsRef<str>,
    ttl_ms: u64,
    work: impl FnOnce() -> Result<(), E>,
) -> Result<bool, E> {
    let key = format!("once:{}", id.as_ref());
    if !claim(&key, ttl_ms)? {
        // Done by an earlier delivery: skip. Still pending: an attempt is running,
        // or died with its host (its claim lapses within the invocation timeout):
        // retry, rather than skip work that may never have been done.
        return skip_or_wait(&key, id.as_ref())
            .map(|()| false)
            .map_err(E::from);
    }
    if let Err(error) = work() {
        // Let a retry claim the id again, even if the handler swallows this error.
        let _ = delete(&[key]);
        return Err(error);
    }
    // Done: a crash of the host from here on does not make a redelivery repeat it.
    let done = SetOptions::default().ttl_ms(ttl_ms);
    set_with(&key, b"done", done)?;
    Ok(true)
}

/// Applies the store operations `effects` once per `id` within `ttl_ms`, exactly once
/// even if the host dies at any point: the effects and the mark that they were
/// applied are one transaction (`store::atomic`), under the same claim as [`once`]
/// (done: `Ok(false)`; another attempt pending: `StoreError::Unavailable`, a retry).
///
/// ```no_run
/// # use techub_guest::prelude::*;
/// # fn handle(message: Message) -> Result<(), Failure> {
/// use techub_guest::store::Op;
/// let ops = vec![Op::IncrBy("orders-paid".into(), 1)];
/// store::once_atomic(message.id(), 86_400_000, ops)?;
/// # Ok(()) }
/// ```
pub fn once_atomic(
    id: impl AsRef<str>,
    ttl_ms: u64,
    mut effects: Vec<Op>,
) -> Result<bool, StoreError> {
    // On a Redis Cluster a transaction keeps its keys in one hash slot: effects that
    // share a `{tag}` get a claim with the same tag, so claim and effects commit
    // together there too.
    let key = match effects.first().and_then(|op| hash_tag(op.key())) {
        Some(tag) => format!("once:{{{tag}}}:{}", id.as_ref()),
        None => format!("once:{}", id.as_ref()),
    };
    if !claim(&key, ttl_ms)? {
        return skip_or_wait(&key, id.as_ref()).map(|()| false);
    }
    effects.push(Op::Set(key.clone(), b"done".to_vec(), Some(ttl_ms)));
    if let Err(error) = atomic(effects) {
        // A failed transaction may still have run (its answer lost with a primary
        // killed mid-write, or its replicas not confirming it): then the claim is
        // `done` with the effects, and must stay so that the retry skips them. Only a
        // claim still pending is released for the retry.
        let _ = compare_and_swap(&key, Some(PENDING_CLAIM), None, None);
        return Err(error);
    }
    Ok(true)
}

/// The text between `key`'s first `{` and the next `}`, when not empty: what decides
/// its hash slot on a Redis Cluster.
fn hash_tag(key: &str) -> Option<&str> {
    let open = key.find('{')?;
    let close = key[open..].find('}')?;
    (close > 1).then(|| &key[open + 1..open + close])
}

/// What the host keeps in a claim while the invocation that made it runs.
const PENDING_CLAIM: &[u8] = b"pending";

/// `Ok` when the claim `key` of `id` is done; a retry while it is pending.
fn skip_or_wait(key: &str, id: &str) -> Result<(), StoreError> {
    match get(key)? {
        Some(value) if value != PENDING_CLAIM => Ok(()),
        _ => Err(StoreError::Unavailable(format!(
            "{id} is being handled by another attempt, or by one whose host stopped; retry after its claim lapses"
        ))),
    }
}
