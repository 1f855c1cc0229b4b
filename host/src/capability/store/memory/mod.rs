//! The embedded store: an in-process keyspace with Redis semantics (types, TTLs,
//! empty aggregates vanish, `WRONGTYPE`, integer overflow).

use super::sorted::{in_range, rank_span, redis_order};
use super::{AtomicOp, AtomicResult, KeyTtl, ListEnd, ScoreRange, SetCondition, StoreBackend};
use crate::capability::{BackendError, BackendResult};
use crate::names::glob;
use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::ops::Bound;
use std::sync::Mutex;
use std::time::{Duration, Instant};

enum Value {
    String(Vec<u8>),
    Hash(HashMap<String, Vec<u8>>),
    List(VecDeque<Vec<u8>>),
    Set(BTreeSet<Vec<u8>>),
    Sorted(HashMap<Vec<u8>, f64>),
}

struct Slot {
    value: Value,
    expires_at: Option<Instant>,
}

/// In-process store backend, holding at most its memory budget: a write past it fails
/// with `Unavailable`, as Redis answers OOM under `maxmemory` with `noeviction`.
pub struct MemoryStore {
    inner: Mutex<Inner>,
    budget_bytes: usize,
}

#[derive(Default)]
struct Inner {
    keys: BTreeMap<String, Slot>,
    bytes: usize,
}

type Keys = BTreeMap<String, Slot>;

impl MemoryStore {
    /// An empty keyspace that holds at most about `budget_bytes` of keys and values.
    pub fn new(budget_bytes: usize) -> Self {
        Self {
            inner: Mutex::default(),
            budget_bytes,
        }
    }

    /// Runs `f` on the keyspace. `touched` are the keys `f` may change (their weight is
    /// re-counted), `incoming` the bytes it may add (refused past the budget).
    fn with<T>(
        &self,
        touched: &[&str],
        incoming: usize,
        f: impl FnOnce(&mut Keys, Instant) -> BackendResult<T>,
    ) -> BackendResult<T> {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        if incoming > 0 && inner.bytes + incoming > self.budget_bytes {
            inner.sweep_expired(now);
            if inner.bytes + incoming > self.budget_bytes {
                return Err(BackendError::Unavailable(format!(
                    "the embedded store is full ({} of {} bytes; see store.memory_budget_mib)",
                    inner.bytes, self.budget_bytes
                )));
            }
        }
        let weigh = |keys: &Keys| {
            touched
                .iter()
                .map(|k| keys.get(*k).map_or(0, |slot| weight(k, slot)))
                .sum::<usize>()
        };
        let before = weigh(&inner.keys);
        let result = f(&mut inner.keys, now);
        let after = weigh(&inner.keys);
        inner.bytes = (inner.bytes + after).saturating_sub(before);
        result
    }
}

impl Inner {
    fn sweep_expired(&mut self, now: Instant) {
        self.keys
            .retain(|_, slot| slot.expires_at.is_none_or(|t| t > now));
        self.bytes = self.keys.iter().map(|(k, slot)| weight(k, slot)).sum();
    }
}

/// Approximate bytes a key holds, with a per-item overhead.
fn weight(key: &str, slot: &Slot) -> usize {
    key.len()
        + 48
        + match &slot.value {
            Value::String(v) => v.len(),
            Value::Hash(h) => h.iter().map(|(f, v)| f.len() + v.len() + 32).sum(),
            Value::List(l) => l.iter().map(|v| v.len() + 16).sum(),
            Value::Set(s) => s.iter().map(|v| v.len() + 16).sum(),
            Value::Sorted(z) => z.keys().map(|m| m.len() + 24).sum(),
        }
}

/// The live slot of `key`, dropping it if expired.
fn live<'a>(keys: &'a mut Keys, key: &str, now: Instant) -> Option<&'a mut Slot> {
    if keys
        .get(key)
        .is_some_and(|s| s.expires_at.is_some_and(|t| t <= now))
    {
        keys.remove(key);
    }
    keys.get_mut(key)
}

/// Reads an aggregate of the expected type, or `WrongType`.
macro_rules! typed {
    ($keys:expr, $key:expr, $now:expr, $variant:ident) => {
        match live($keys, $key, $now) {
            None => None,
            Some(Slot {
                value: Value::$variant(v),
                ..
            }) => Some(v),
            Some(_) => return Err(BackendError::WrongType),
        }
    };
}

/// Gets or creates an aggregate of the expected type.
macro_rules! typed_or_insert {
    ($keys:expr, $key:expr, $now:expr, $variant:ident) => {{
        if live($keys, $key, $now).is_none() {
            $keys.insert(
                $key.to_string(),
                Slot {
                    value: Value::$variant(Default::default()),
                    expires_at: None,
                },
            );
        }
        match $keys.get_mut($key) {
            Some(Slot {
                value: Value::$variant(v),
                ..
            }) => v,
            _ => return Err(BackendError::WrongType),
        }
    }};
}

/// Removes `key` if its aggregate became empty, as Redis does.
fn drop_if_empty(keys: &mut Keys, key: &str) {
    let empty = match keys.get(key).map(|s| &s.value) {
        Some(Value::Hash(h)) => h.is_empty(),
        Some(Value::List(l)) => l.is_empty(),
        Some(Value::Set(s)) => s.is_empty(),
        Some(Value::Sorted(z)) => z.is_empty(),
        _ => false,
    };
    if empty {
        keys.remove(key);
    }
}

/// The members of a sorted set in Redis's order (or its reverse).
fn ordered(set: Option<&mut HashMap<Vec<u8>, f64>>, reverse: bool) -> Vec<(Vec<u8>, f64)> {
    let mut members: Vec<(Vec<u8>, f64)> = set
        .map(|z| z.iter().map(|(m, s)| (m.clone(), *s)).collect())
        .unwrap_or_default();
    members.sort_by(redis_order);
    if reverse {
        members.reverse();
    }
    members
}

fn parse_int(bytes: &[u8]) -> BackendResult<i64> {
    std::str::from_utf8(bytes)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or(BackendError::WrongType)
}

fn add(current: i64, delta: i64) -> BackendResult<i64> {
    current.checked_add(delta).ok_or(BackendError::Overflow)
}

fn deadline(now: Instant, ttl: Duration) -> Instant {
    now.checked_add(ttl)
        .unwrap_or(now + Duration::from_secs(100 * 365 * 86_400))
}

// The writes an atomic batch may hold, as functions on the keyspace, shared by the
// single calls below and by `atomic.rs`.

fn op_get(keys: &mut Keys, now: Instant, key: &str) -> BackendResult<Option<Vec<u8>>> {
    Ok(typed!(keys, key, now, String).cloned())
}

fn op_set(
    keys: &mut Keys,
    now: Instant,
    key: &str,
    value: &[u8],
    ttl: Option<Duration>,
    condition: SetCondition,
) -> BackendResult<bool> {
    let exists = live(keys, key, now).is_some();
    let write = match condition {
        SetCondition::Always => true,
        SetCondition::IfAbsent => !exists,
        SetCondition::IfPresent => exists,
    };
    if write {
        let expires_at = ttl.map(|ttl| deadline(now, ttl));
        keys.insert(
            key.to_string(),
            Slot {
                value: Value::String(value.to_vec()),
                expires_at,
            },
        );
    }
    Ok(write)
}

/// Deletes `key`; whether it existed.
fn op_delete(keys: &mut Keys, now: Instant, key: &str) -> bool {
    live(keys, key, now).is_some() && keys.remove(key).is_some()
}

fn op_expire(keys: &mut Keys, now: Instant, key: &str, ttl: Duration) -> bool {
    live(keys, key, now)
        .map(|slot| slot.expires_at = Some(deadline(now, ttl)))
        .is_some()
}

fn op_incr_by(keys: &mut Keys, now: Instant, key: &str, delta: i64) -> BackendResult<i64> {
    let current = match typed!(keys, key, now, String) {
        Some(bytes) => parse_int(bytes)?,
        None => 0,
    };
    let next = add(current, delta)?;
    match live(keys, key, now) {
        Some(slot) => slot.value = Value::String(next.to_string().into_bytes()),
        None => {
            keys.insert(
                key.to_string(),
                Slot {
                    value: Value::String(next.to_string().into_bytes()),
                    expires_at: None,
                },
            );
        }
    }
    Ok(next)
}

fn op_hash_set(
    keys: &mut Keys,
    now: Instant,
    key: &str,
    fields: &[(String, Vec<u8>)],
) -> BackendResult<u32> {
    let hash = typed_or_insert!(keys, key, now, Hash);
    Ok(fields
        .iter()
        .filter(|(f, v)| hash.insert(f.clone(), v.clone()).is_none())
        .count() as u32)
}

fn op_hash_incr_by(
    keys: &mut Keys,
    now: Instant,
    key: &str,
    field: &str,
    delta: i64,
) -> BackendResult<i64> {
    let hash = typed_or_insert!(keys, key, now, Hash);
    let current = hash
        .get(field)
        .map(|v| parse_int(v))
        .transpose()?
        .unwrap_or(0);
    let next = add(current, delta)?;
    hash.insert(field.to_string(), next.to_string().into_bytes());
    Ok(next)
}

fn op_list_push(
    keys: &mut Keys,
    now: Instant,
    key: &str,
    end: ListEnd,
    values: &[Vec<u8>],
) -> BackendResult<u32> {
    let list = typed_or_insert!(keys, key, now, List);
    for v in values {
        match end {
            ListEnd::Front => list.push_front(v.clone()),
            ListEnd::Back => list.push_back(v.clone()),
        }
    }
    Ok(list.len() as u32)
}

fn op_set_add(keys: &mut Keys, now: Instant, key: &str, members: &[Vec<u8>]) -> BackendResult<u32> {
    let set = typed_or_insert!(keys, key, now, Set);
    Ok(members.iter().filter(|m| set.insert((*m).clone())).count() as u32)
}

fn op_sorted_add(
    keys: &mut Keys,
    now: Instant,
    key: &str,
    members: &[(Vec<u8>, f64)],
) -> BackendResult<u32> {
    let set = typed_or_insert!(keys, key, now, Sorted);
    Ok(members
        .iter()
        .filter(|(m, score)| set.insert(m.clone(), *score).is_none())
        .count() as u32)
}

mod atomic;

#[async_trait::async_trait]
impl StoreBackend for MemoryStore {
    async fn get(&self, key: &str) -> BackendResult<Option<Vec<u8>>> {
        self.with(&[key], 0, |keys, now| op_get(keys, now, key))
    }

    async fn set(
        &self,
        key: &str,
        value: &[u8],
        ttl: Option<Duration>,
        condition: SetCondition,
    ) -> BackendResult<bool> {
        self.with(&[key], key.len() + value.len(), |keys, now| {
            op_set(keys, now, key, value, ttl, condition)
        })
    }

    async fn delete(&self, to_delete: &[String]) -> BackendResult<u32> {
        let touched: Vec<&str> = to_delete.iter().map(String::as_str).collect();
        self.with(&touched, 0, |keys, now| {
            Ok(to_delete
                .iter()
                .filter(|key| op_delete(keys, now, key))
                .count() as u32)
        })
    }

    async fn exists(&self, key: &str) -> BackendResult<bool> {
        self.with(&[key], 0, |keys, now| Ok(live(keys, key, now).is_some()))
    }

    async fn expire(&self, key: &str, ttl: Duration) -> BackendResult<bool> {
        self.with(&[key], 0, |keys, now| Ok(op_expire(keys, now, key, ttl)))
    }

    async fn persist(&self, key: &str) -> BackendResult<bool> {
        self.with(&[key], 0, |keys, now| {
            Ok(live(keys, key, now).is_some_and(|slot| slot.expires_at.take().is_some()))
        })
    }

    async fn ttl(&self, key: &str) -> BackendResult<KeyTtl> {
        self.with(&[key], 0, |keys, now| {
            Ok(match live(keys, key, now) {
                None => KeyTtl::Missing,
                Some(Slot {
                    expires_at: None, ..
                }) => KeyTtl::Persistent,
                Some(Slot {
                    expires_at: Some(t),
                    ..
                }) => KeyTtl::ExpiresInMs(t.duration_since(now).as_millis() as u64),
            })
        })
    }

    async fn incr_by(&self, key: &str, delta: i64) -> BackendResult<i64> {
        self.with(&[key], key.len() + 24, |keys, now| {
            op_incr_by(keys, now, key, delta)
        })
    }

    async fn hash_get(&self, key: &str, field: &str) -> BackendResult<Option<Vec<u8>>> {
        self.with(&[key], 0, |keys, now| {
            Ok(typed!(keys, key, now, Hash).and_then(|h| h.get(field).cloned()))
        })
    }

    async fn hash_set(&self, key: &str, fields: &[(String, Vec<u8>)]) -> BackendResult<u32> {
        self.with(
            &[key],
            key.len() + fields.iter().map(|(f, v)| f.len() + v.len()).sum::<usize>(),
            |keys, now| op_hash_set(keys, now, key, fields),
        )
    }

    async fn hash_get_all(&self, key: &str) -> BackendResult<Vec<(String, Vec<u8>)>> {
        self.with(&[key], 0, |keys, now| {
            let mut all: Vec<_> = typed!(keys, key, now, Hash)
                .map(|h| h.iter().map(|(f, v)| (f.clone(), v.clone())).collect())
                .unwrap_or_default();
            all.sort();
            Ok(all)
        })
    }

    async fn hash_delete(&self, key: &str, fields: &[String]) -> BackendResult<u32> {
        self.with(&[key], 0, |keys, now| {
            let n = match typed!(keys, key, now, Hash) {
                Some(hash) => fields.iter().filter(|f| hash.remove(*f).is_some()).count() as u32,
                None => 0,
            };
            drop_if_empty(keys, key);
            Ok(n)
        })
    }

    async fn hash_incr_by(&self, key: &str, field: &str, delta: i64) -> BackendResult<i64> {
        self.with(&[key], key.len() + field.len() + 24, |keys, now| {
            op_hash_incr_by(keys, now, key, field, delta)
        })
    }

    async fn list_push(&self, key: &str, end: ListEnd, values: &[Vec<u8>]) -> BackendResult<u32> {
        self.with(
            &[key],
            key.len() + values.iter().map(Vec::len).sum::<usize>(),
            |keys, now| op_list_push(keys, now, key, end, values),
        )
    }

    async fn list_pop(&self, key: &str, end: ListEnd, count: u32) -> BackendResult<Vec<Vec<u8>>> {
        self.with(&[key], 0, |keys, now| {
            let mut out = Vec::new();
            if let Some(list) = typed!(keys, key, now, List) {
                for _ in 0..count {
                    let popped = match end {
                        ListEnd::Front => list.pop_front(),
                        ListEnd::Back => list.pop_back(),
                    };
                    match popped {
                        Some(v) => out.push(v),
                        None => break,
                    }
                }
            }
            drop_if_empty(keys, key);
            Ok(out)
        })
    }

    async fn list_range(&self, key: &str, start: i64, stop: i64) -> BackendResult<Vec<Vec<u8>>> {
        self.with(&[key], 0, |keys, now| {
            let Some(list) = typed!(keys, key, now, List) else {
                return Ok(Vec::new());
            };
            let len = list.len() as i64;
            let norm = |i: i64| if i < 0 { (len + i).max(0) } else { i };
            let (start, stop) = (norm(start), norm(stop).min(len - 1));
            if start > stop || start >= len {
                return Ok(Vec::new());
            }
            Ok(list
                .range(start as usize..=stop as usize)
                .cloned()
                .collect())
        })
    }

    async fn list_len(&self, key: &str) -> BackendResult<u32> {
        self.with(&[key], 0, |keys, now| {
            Ok(typed!(keys, key, now, List).map_or(0, |l| l.len() as u32))
        })
    }

    async fn set_add(&self, key: &str, members: &[Vec<u8>]) -> BackendResult<u32> {
        self.with(
            &[key],
            key.len() + members.iter().map(Vec::len).sum::<usize>(),
            |keys, now| op_set_add(keys, now, key, members),
        )
    }

    async fn set_remove(&self, key: &str, members: &[Vec<u8>]) -> BackendResult<u32> {
        self.with(&[key], 0, |keys, now| {
            let n = match typed!(keys, key, now, Set) {
                Some(set) => members.iter().filter(|m| set.remove(*m)).count() as u32,
                None => 0,
            };
            drop_if_empty(keys, key);
            Ok(n)
        })
    }

    async fn set_members(&self, key: &str) -> BackendResult<Vec<Vec<u8>>> {
        self.with(&[key], 0, |keys, now| {
            Ok(typed!(keys, key, now, Set)
                .map(|s| s.iter().cloned().collect())
                .unwrap_or_default())
        })
    }

    async fn set_contains(&self, key: &str, member: &[u8]) -> BackendResult<bool> {
        self.with(&[key], 0, |keys, now| {
            Ok(typed!(keys, key, now, Set).is_some_and(|s| s.contains(member)))
        })
    }

    async fn sorted_add(&self, key: &str, members: &[(Vec<u8>, f64)]) -> BackendResult<u32> {
        let incoming = key.len() + members.iter().map(|(m, _)| m.len() + 24).sum::<usize>();
        self.with(&[key], incoming, |keys, now| {
            op_sorted_add(keys, now, key, members)
        })
    }

    async fn sorted_incr_by(&self, key: &str, member: &[u8], delta: f64) -> BackendResult<f64> {
        self.with(&[key], key.len() + member.len() + 24, |keys, now| {
            let set = typed_or_insert!(keys, key, now, Sorted);
            let score = set.get(member).copied().unwrap_or(0.0) + delta;
            if score.is_nan() {
                drop_if_empty(keys, key);
                return Err(BackendError::InvalidArgument(
                    "resulting score is not a number (NaN)".into(),
                ));
            }
            set.insert(member.to_vec(), score);
            Ok(score)
        })
    }

    async fn sorted_score(&self, key: &str, member: &[u8]) -> BackendResult<Option<f64>> {
        self.with(&[key], 0, |keys, now| {
            Ok(typed!(keys, key, now, Sorted).and_then(|z| z.get(member).copied()))
        })
    }

    async fn sorted_remove(&self, key: &str, members: &[Vec<u8>]) -> BackendResult<u32> {
        self.with(&[key], 0, |keys, now| {
            let n = match typed!(keys, key, now, Sorted) {
                Some(set) => members.iter().filter(|m| set.remove(*m).is_some()).count() as u32,
                None => 0,
            };
            drop_if_empty(keys, key);
            Ok(n)
        })
    }

    async fn sorted_len(&self, key: &str) -> BackendResult<u32> {
        self.with(&[key], 0, |keys, now| {
            Ok(typed!(keys, key, now, Sorted).map_or(0, |z| z.len() as u32))
        })
    }

    async fn sorted_range(
        &self,
        key: &str,
        start: i64,
        stop: i64,
        reverse: bool,
    ) -> BackendResult<Vec<(Vec<u8>, f64)>> {
        self.with(&[key], 0, |keys, now| {
            let ordered = ordered(typed!(keys, key, now, Sorted), reverse);
            Ok(match rank_span(start, stop, ordered.len()) {
                Some((first, last)) => ordered[first..=last].to_vec(),
                None => Vec::new(),
            })
        })
    }

    async fn sorted_range_by_score(
        &self,
        key: &str,
        range: &ScoreRange,
        reverse: bool,
        offset: u32,
        count: u32,
    ) -> BackendResult<Vec<(Vec<u8>, f64)>> {
        self.with(&[key], 0, |keys, now| {
            Ok(ordered(typed!(keys, key, now, Sorted), reverse)
                .into_iter()
                .filter(|(_, score)| in_range(*score, range))
                .skip(offset as usize)
                .take(count as usize)
                .collect())
        })
    }

    async fn compare_and_swap(
        &self,
        key: &str,
        expected: Option<&[u8]>,
        new: Option<&[u8]>,
        ttl: Option<Duration>,
    ) -> BackendResult<bool> {
        let incoming = key.len() + new.map_or(0, <[u8]>::len);
        self.with(&[key], incoming, |keys, now| {
            let current = typed!(keys, key, now, String).map(|v| v.as_slice());
            if current != expected {
                return Ok(false);
            }
            match new {
                Some(value) => {
                    keys.insert(
                        key.to_string(),
                        Slot {
                            value: Value::String(value.to_vec()),
                            expires_at: ttl.map(|ttl| deadline(now, ttl)),
                        },
                    );
                }
                None => {
                    keys.remove(key);
                }
            }
            Ok(true)
        })
    }

    async fn atomic(&self, ops: &[AtomicOp]) -> BackendResult<Vec<AtomicResult>> {
        self.run_atomic(ops)
    }

    async fn scan(
        &self,
        pattern: &str,
        cursor: Option<&str>,
        count: u32,
    ) -> BackendResult<(Vec<String>, Option<String>)> {
        self.with(&[], 0, |keys, now| {
            // The cursor is the last key examined: keys are ordered, so every key
            // present for the whole scan is returned exactly once. Only keys under the
            // pattern's literal prefix (the plugin's namespace) are examined.
            let prefix = glob::literal_prefix(pattern);
            let start = match cursor {
                Some(after) => Bound::Excluded(after.to_string()),
                None => Bound::Included(prefix.clone()),
            };
            let mut found = Vec::new();
            let mut last = None;
            let mut range = keys
                .range((start, Bound::Unbounded))
                .take_while(|(k, _)| k.starts_with(&prefix));
            for (key, slot) in range.by_ref().take(count.max(1) as usize) {
                last = Some(key.clone());
                let expired = slot.expires_at.is_some_and(|t| t <= now);
                if !expired && glob::matches(pattern, key) {
                    found.push(key.clone());
                }
            }
            let more = range.next().is_some();
            Ok((found, if more { last } else { None }))
        })
    }
}
