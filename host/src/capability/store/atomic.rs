//! `store.atomic`: a batch of operations as one transaction. Every key is namespaced
//! and checked like a single call's, then the backend runs the batch in one round trip.

use super::host::{StoreView, nonzero_ttl};
use super::{AtomicOp, AtomicResult};
use crate::capability::bindings::techub::platform::store::{OpResult, StoreError, StoreOp};

type Result<T> = std::result::Result<T, StoreError>;

/// Most operations in one batch: the specification's `pipelineBatchSize`.
pub const MAX_ATOMIC_OPS: usize = 100;

impl StoreView<'_> {
    /// One guest op as a backend op on the namespaced key, checked.
    fn atomic_op(&self, op: StoreOp) -> Result<AtomicOp> {
        let key = |k: &str| self.namespaced(k);
        Ok(match op {
            StoreOp::Get(k) => AtomicOp::Get(key(&k)?),
            StoreOp::Set((k, value, ttl)) => {
                self.check_values([value.as_slice()])?;
                let ttl = ttl.map(nonzero_ttl).transpose()?;
                AtomicOp::Set(key(&k)?, value, ttl)
            }
            StoreOp::Delete(k) => AtomicOp::Delete(key(&k)?),
            StoreOp::IncrBy((k, delta)) => AtomicOp::IncrBy(key(&k)?, delta),
            StoreOp::Expire((k, ttl)) => AtomicOp::Expire(key(&k)?, nonzero_ttl(ttl)?),
            StoreOp::HashSet((k, fields)) => {
                self.check_items(fields.len())?;
                self.check_values(fields.iter().map(|(_, v)| v.as_slice()))?;
                AtomicOp::HashSet(key(&k)?, fields)
            }
            StoreOp::HashIncrBy((k, field, delta)) => AtomicOp::HashIncrBy(key(&k)?, field, delta),
            StoreOp::ListPush((k, end, values)) => {
                self.check_items(values.len())?;
                self.check_values(values.iter().map(Vec::as_slice))?;
                AtomicOp::ListPush(key(&k)?, end, values)
            }
            StoreOp::SetAdd((k, members)) => {
                self.check_items(members.len())?;
                self.check_values(members.iter().map(Vec::as_slice))?;
                AtomicOp::SetAdd(key(&k)?, members)
            }
            StoreOp::SortedAdd((k, members)) => {
                self.check_items(members.len())?;
                self.check_values(members.iter().map(|m| m.member.as_slice()))?;
                if members.iter().any(|m| m.score.is_nan()) {
                    return Err(StoreError::InvalidArgument(
                        "a score must not be NaN".into(),
                    ));
                }
                let members = members.into_iter().map(|m| (m.member, m.score)).collect();
                AtomicOp::SortedAdd(key(&k)?, members)
            }
        })
    }

    pub(super) async fn atomic_checked(&mut self, ops: Vec<StoreOp>) -> Result<Vec<OpResult>> {
        self.charge_call("atomic")
            .map_err(StoreError::QuotaExceeded)?;
        if ops.len() > MAX_ATOMIC_OPS {
            return Err(StoreError::InvalidArgument(format!(
                "more than {MAX_ATOMIC_OPS} operations in one batch"
            )));
        }
        let ops = ops
            .into_iter()
            .map(|op| self.atomic_op(op))
            .collect::<Result<Vec<_>>>()?;
        let results = self.backend().atomic(&ops).await?;
        Ok(results
            .into_iter()
            .map(|result| match result {
                AtomicResult::Value(value) => OpResult::Value(value),
                AtomicResult::Done(done) => OpResult::Done(done),
                AtomicResult::Count(n) => OpResult::Count(n),
                AtomicResult::Integer(n) => OpResult::Integer(n),
                AtomicResult::Failed(error) => OpResult::Failed(error.into()),
            })
            .collect())
    }
}
