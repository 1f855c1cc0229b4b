//! Sorted sets (the specification's `RedisDataType.SORTED_SET`) and compare-and-swap:
//! the host side of the WIT functions (grants, limits, NaN), and the ordering and
//! range rules the embedded store follows to match Redis.

use super::ScoreRange;
use super::host::StoreView;
use crate::capability::bindings::techub::platform::store::{Scored, StoreError};
use std::cmp::Ordering;
use std::time::Duration;

type Result<T> = std::result::Result<T, StoreError>;

/// Most members a by-score range returns in one call.
pub const MAX_RANGE_COUNT: u32 = 1000;

/// Redis's order of a sorted set: by score, ties by member bytes.
pub fn redis_order(a: &(Vec<u8>, f64), b: &(Vec<u8>, f64)) -> Ordering {
    a.1.total_cmp(&b.1).then_with(|| a.0.cmp(&b.0))
}

/// Whether `score` is inside `range`.
pub fn in_range(score: f64, range: &ScoreRange) -> bool {
    let above = match range.min_exclusive {
        true => score > range.min,
        false => score >= range.min,
    };
    let below = match range.max_exclusive {
        true => score < range.max,
        false => score <= range.max,
    };
    above && below
}

/// The inclusive index span `start..=stop` of a sequence of `len` items, with Redis's
/// negative indexes; `None` when empty.
pub fn rank_span(start: i64, stop: i64, len: usize) -> Option<(usize, usize)> {
    let len = len as i64;
    let norm = |i: i64| if i < 0 { (len + i).max(0) } else { i };
    let (start, stop) = (norm(start), norm(stop).min(len - 1));
    (start <= stop && start < len).then_some((start as usize, stop as usize))
}

fn not_nan(score: f64, what: &str) -> Result<f64> {
    match score.is_nan() {
        true => Err(StoreError::InvalidArgument(format!(
            "{what} must not be NaN"
        ))),
        false => Ok(score),
    }
}

fn scored(members: Vec<(Vec<u8>, f64)>) -> Vec<Scored> {
    members
        .into_iter()
        .map(|(member, score)| Scored { member, score })
        .collect()
}

impl StoreView<'_> {
    pub(super) async fn sorted_add_checked(
        &mut self,
        key: &str,
        members: Vec<Scored>,
    ) -> Result<u32> {
        let key = self.store_key("sorted_add", key)?;
        self.check_items(members.len())?;
        self.check_values(members.iter().map(|m| m.member.as_slice()))?;
        let members = members
            .into_iter()
            .map(|m| Ok((m.member, not_nan(m.score, "a score")?)))
            .collect::<Result<Vec<_>>>()?;
        Ok(self.backend().sorted_add(&key, &members).await?)
    }

    pub(super) async fn sorted_incr_by_checked(
        &mut self,
        key: &str,
        member: Vec<u8>,
        delta: f64,
    ) -> Result<f64> {
        let key = self.store_key("sorted_incr_by", key)?;
        self.check_values([member.as_slice()])?;
        not_nan(delta, "delta")?;
        Ok(self.backend().sorted_incr_by(&key, &member, delta).await?)
    }

    pub(super) async fn sorted_score_checked(
        &mut self,
        key: &str,
        member: Vec<u8>,
    ) -> Result<Option<f64>> {
        let key = self.store_key("sorted_score", key)?;
        Ok(self.backend().sorted_score(&key, &member).await?)
    }

    pub(super) async fn sorted_remove_checked(
        &mut self,
        key: &str,
        members: Vec<Vec<u8>>,
    ) -> Result<u32> {
        let key = self.store_key("sorted_remove", key)?;
        self.check_items(members.len())?;
        Ok(self.backend().sorted_remove(&key, &members).await?)
    }

    pub(super) async fn sorted_len_checked(&mut self, key: &str) -> Result<u32> {
        let key = self.store_key("sorted_len", key)?;
        Ok(self.backend().sorted_len(&key).await?)
    }

    pub(super) async fn sorted_range_checked(
        &mut self,
        key: &str,
        start: i64,
        stop: i64,
        reverse: bool,
    ) -> Result<Vec<Scored>> {
        let key = self.store_key("sorted_range", key)?;
        let members = self
            .backend()
            .sorted_range(&key, start, stop, reverse)
            .await?;
        Ok(scored(members))
    }

    pub(super) async fn sorted_range_by_score_checked(
        &mut self,
        key: &str,
        range: ScoreRange,
        reverse: bool,
        offset: u32,
        count: u32,
    ) -> Result<Vec<Scored>> {
        let key = self.store_key("sorted_range_by_score", key)?;
        not_nan(range.min, "min")?;
        not_nan(range.max, "max")?;
        if !(1..=MAX_RANGE_COUNT).contains(&count) {
            return Err(StoreError::InvalidArgument(format!(
                "count must be 1 to {MAX_RANGE_COUNT}"
            )));
        }
        let members = self
            .backend()
            .sorted_range_by_score(&key, &range, reverse, offset, count)
            .await?;
        Ok(scored(members))
    }

    pub(super) async fn compare_and_swap_checked(
        &mut self,
        key: &str,
        expected: Option<Vec<u8>>,
        new: Option<Vec<u8>>,
        ttl_ms: Option<u64>,
    ) -> Result<bool> {
        let key = self.store_key("compare_and_swap", key)?;
        self.check_values(new.iter().map(Vec::as_slice))?;
        let ttl: Option<Duration> = ttl_ms.map(super::host::nonzero_ttl).transpose()?;
        Ok(self
            .backend()
            .compare_and_swap(&key, expected.as_deref(), new.as_deref(), ttl)
            .await?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranks_follow_redis_negative_indexes() {
        assert_eq!(rank_span(0, -1, 3), Some((0, 2)));
        assert_eq!(rank_span(-2, -1, 3), Some((1, 2)));
        assert_eq!(rank_span(1, 100, 3), Some((1, 2)));
        assert_eq!(rank_span(2, 1, 3), None);
        assert_eq!(rank_span(5, 9, 3), None);
        assert_eq!(rank_span(0, -1, 0), None);
    }

    #[test]
    fn score_ranges_honour_exclusive_bounds() {
        let range = ScoreRange {
            min: 1.0,
            max: 2.0,
            min_exclusive: true,
            max_exclusive: false,
        };
        assert!(!in_range(1.0, &range));
        assert!(in_range(2.0, &range));
        assert!(in_range(1.5, &range));
        let open = ScoreRange {
            min: f64::NEG_INFINITY,
            max: f64::INFINITY,
            min_exclusive: false,
            max_exclusive: false,
        };
        assert!(in_range(-1e300, &open) && in_range(f64::INFINITY, &open));
    }
}
