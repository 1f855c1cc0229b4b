//! Transactions: up to 100 operations in one round trip (Redis `MULTI`/`EXEC`), with
//! no other writer's command between them.
//!
//! ```no_run
//! # use techub_guest::prelude::*;
//! use techub_guest::store::{Op, OpResult};
//!
//! # fn main() -> Result<(), store::StoreError> {
//! let results = store::atomic(vec![
//!     Op::IncrBy("orders:count".into(), 1),
//!     Op::ListPush("orders:recent".into(), store::ListEnd::Front, vec![b"o-1".to_vec()]),
//!     Op::SortedAdd("orders:by-total".into(), vec![(b"o-1".to_vec(), 99.5)]),
//! ])?;
//! if let OpResult::Integer(count) = results[0] { let _ = count; }
//! # Ok(())
//! # }
//! ```

use super::{ListEnd, StoreError};
use crate::wit::techub::platform::store as wit;

/// Most operations in one batch (the specification's pipeline batch size).
pub const MAX_ATOMIC_OPS: usize = 100;

/// One operation of a batch.
///
/// ```no_run
/// # use techub_guest::prelude::*;
/// # fn handle() -> Result<(), Failure> {
/// use techub_guest::store::Op;
/// let ops = vec![Op::IncrBy("orders".into(), 1), Op::Expire("orders".into(), 86_400_000)];
/// store::atomic(ops)?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, PartialEq)]
pub enum Op {
    /// Read a string value.
    Get(String),
    /// Write a string value, with an optional TTL in ms.
    Set(String, Vec<u8>, Option<u64>),
    /// Delete a key.
    Delete(String),
    /// Add to an integer value.
    IncrBy(String, i64),
    /// Set a key's lifetime, in ms.
    Expire(String, u64),
    /// Write hash fields.
    HashSet(String, Vec<(String, Vec<u8>)>),
    /// Add to an integer hash field.
    HashIncrBy(String, String, i64),
    /// Push onto a list.
    ListPush(String, ListEnd, Vec<Vec<u8>>),
    /// Add set members.
    SetAdd(String, Vec<Vec<u8>>),
    /// Add sorted-set members with scores.
    SortedAdd(String, Vec<(Vec<u8>, f64)>),
}

impl Op {
    /// The key it works on.
    pub fn key(&self) -> &str {
        match self {
            Self::Get(k)
            | Self::Set(k, ..)
            | Self::Delete(k)
            | Self::IncrBy(k, _)
            | Self::Expire(k, _)
            | Self::HashSet(k, _)
            | Self::HashIncrBy(k, ..)
            | Self::ListPush(k, ..)
            | Self::SetAdd(k, _)
            | Self::SortedAdd(k, _) => k,
        }
    }
}

/// What one operation answered.
///
/// ```no_run
/// # use techub_guest::prelude::*;
/// # fn handle() -> Result<(), Failure> {
/// use techub_guest::store::{Op, OpResult};
/// let results = store::atomic(vec![Op::IncrBy("orders".into(), 1)])?;
/// if let OpResult::Integer(n) = results[0] { log::info(format!("{n} orders")); }
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, PartialEq)]
pub enum OpResult {
    /// `Get`: the value.
    Value(Option<Vec<u8>>),
    /// `Set` (true), `Delete` and `Expire` (whether the key existed).
    Done(bool),
    /// `HashSet`, `SetAdd`, `SortedAdd` (how many are new), `ListPush` (the length).
    Count(u32),
    /// `IncrBy`, `HashIncrBy`: the new value.
    Integer(i64),
    /// This operation failed (e.g. wrong type); the others ran.
    Failed(StoreError),
}

fn to_wit(op: Op) -> wit::StoreOp {
    match op {
        Op::Get(k) => wit::StoreOp::Get(k),
        Op::Set(k, v, ttl) => wit::StoreOp::Set((k, v, ttl)),
        Op::Delete(k) => wit::StoreOp::Delete(k),
        Op::IncrBy(k, d) => wit::StoreOp::IncrBy((k, d)),
        Op::Expire(k, ttl) => wit::StoreOp::Expire((k, ttl)),
        Op::HashSet(k, fields) => wit::StoreOp::HashSet((k, fields)),
        Op::HashIncrBy(k, f, d) => wit::StoreOp::HashIncrBy((k, f, d)),
        Op::ListPush(k, end, values) => wit::StoreOp::ListPush((k, end.to_wit(), values)),
        Op::SetAdd(k, members) => wit::StoreOp::SetAdd((k, members)),
        Op::SortedAdd(k, members) => wit::StoreOp::SortedAdd((
            k,
            members
                .into_iter()
                .map(|(member, score)| wit::Scored { member, score })
                .collect(),
        )),
    }
}

/// Runs `ops` as one transaction (at most [`MAX_ATOMIC_OPS`]); one result per op, in
/// order. An op that fails does not undo the others (as in Redis); the call fails as a
/// whole only for an invalid argument (nothing ran) or an unavailable backend.
///
/// On a host whose store is a Redis Cluster, a batch keeps its keys in one hash slot:
/// give them one `{tag}` (`stock:{p-1}` and `reservation:{p-1}:o-1`); a batch across
/// slots fails with `invalid-argument` saying so, and nothing runs. Elsewhere any keys
/// may go together.
///
/// ```no_run
/// # use techub_guest::prelude::*;
/// # fn handle() -> Result<(), Failure> {
/// use techub_guest::store::Op;
/// // Take the stock and record the reservation in one transaction.
/// store::atomic(vec![
///     Op::IncrBy("stock:p-1".into(), -2),
///     Op::HashSet("reservation:o-1".into(), vec![("p-1".into(), b"2".to_vec())]),
/// ])?;
/// # Ok(()) }
/// ```
pub fn atomic(ops: Vec<Op>) -> Result<Vec<OpResult>, StoreError> {
    crate::native::ensure_host();
    let ops: Vec<wit::StoreOp> = ops.into_iter().map(to_wit).collect();
    Ok(wit::atomic(&ops)?
        .into_iter()
        .map(|result| match result {
            wit::OpResult::Value(v) => OpResult::Value(v),
            wit::OpResult::Done(d) => OpResult::Done(d),
            wit::OpResult::Count(n) => OpResult::Count(n),
            wit::OpResult::Integer(n) => OpResult::Integer(n),
            wit::OpResult::Failed(e) => OpResult::Failed(e.into()),
        })
        .collect())
}
