//! Atomic batches on the embedded store: every op under the one lock, so no other
//! call runs between them (what Redis's `MULTI`/`EXEC` guarantees).

use super::{
    Keys, MemoryStore, op_delete, op_expire, op_get, op_hash_incr_by, op_hash_set, op_incr_by,
    op_list_push, op_set, op_set_add, op_sorted_add,
};
use crate::capability::BackendResult;
use crate::capability::store::{AtomicOp, AtomicResult, SetCondition};
use std::time::Instant;

/// Bytes an op may add, for the budget check.
fn incoming(op: &AtomicOp) -> usize {
    op.key().len()
        + match op {
            AtomicOp::Set(_, value, _) => value.len(),
            AtomicOp::HashSet(_, fields) => fields.iter().map(|(f, v)| f.len() + v.len()).sum(),
            AtomicOp::ListPush(_, _, values) | AtomicOp::SetAdd(_, values) => {
                values.iter().map(Vec::len).sum()
            }
            AtomicOp::SortedAdd(_, members) => members.iter().map(|(m, _)| m.len() + 24).sum(),
            _ => 24,
        }
}

fn apply(keys: &mut Keys, now: Instant, op: &AtomicOp) -> AtomicResult {
    let answer = |result: BackendResult<AtomicResult>| result.unwrap_or_else(AtomicResult::Failed);
    match op {
        AtomicOp::Get(key) => answer(op_get(keys, now, key).map(AtomicResult::Value)),
        AtomicOp::Set(key, value, ttl) => answer(
            op_set(keys, now, key, value, *ttl, SetCondition::Always).map(AtomicResult::Done),
        ),
        AtomicOp::Delete(key) => AtomicResult::Done(op_delete(keys, now, key)),
        AtomicOp::IncrBy(key, delta) => {
            answer(op_incr_by(keys, now, key, *delta).map(AtomicResult::Integer))
        }
        AtomicOp::Expire(key, ttl) => AtomicResult::Done(op_expire(keys, now, key, *ttl)),
        AtomicOp::HashSet(key, fields) => {
            answer(op_hash_set(keys, now, key, fields).map(AtomicResult::Count))
        }
        AtomicOp::HashIncrBy(key, field, delta) => {
            answer(op_hash_incr_by(keys, now, key, field, *delta).map(AtomicResult::Integer))
        }
        AtomicOp::ListPush(key, end, values) => {
            answer(op_list_push(keys, now, key, *end, values).map(AtomicResult::Count))
        }
        AtomicOp::SetAdd(key, members) => {
            answer(op_set_add(keys, now, key, members).map(AtomicResult::Count))
        }
        AtomicOp::SortedAdd(key, members) => {
            answer(op_sorted_add(keys, now, key, members).map(AtomicResult::Count))
        }
    }
}

impl MemoryStore {
    pub(super) fn run_atomic(&self, ops: &[AtomicOp]) -> BackendResult<Vec<AtomicResult>> {
        let touched: Vec<&str> = ops.iter().map(AtomicOp::key).collect();
        let bytes = ops.iter().map(incoming).sum();
        self.with(&touched, bytes, |keys, now| {
            Ok(ops.iter().map(|op| apply(keys, now, op)).collect())
        })
    }
}
