//! Sorted sets (the specification's `RedisDataType.SORTED_SET`): members ordered by a
//! score, for leaderboards and time-ordered indexes.
//!
//! ```no_run
//! # use techub_guest::prelude::*;
//! # fn main() -> Result<(), store::StoreError> {
//! store::sorted_incr_by("leaderboard", "ada", 10.0)?;
//! let top = store::sorted_range("leaderboard", 0, 9, true)?; // the ten highest
//! let recent = store::sorted_range_by_score("events", &store::ScoreRange::from(1_700_000_000.0), true, 0, 50)?;
//! # let _ = (top, recent);
//! # Ok(())
//! # }
//! ```

use super::{StoreError, owned_bytes};
use crate::wit::techub::platform::store as wit;

/// A member and its score.
///
/// ```no_run
/// # use techub_guest::prelude::*;
/// # fn handle() -> Result<(), Failure> {
/// for scored in store::sorted_range("leaderboard", 0, 9, true)? {
///     log::info(format!("{} {}", scored.member_text(), scored.score));
/// }
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct Scored {
    /// The member.
    pub member: Vec<u8>,
    /// Its score.
    pub score: f64,
}

impl Scored {
    /// The member as text (lossy for non-UTF-8 members).
    ///
    /// ```no_run
    /// # use techub_guest::prelude::*;
    /// # fn handle() -> Result<(), Failure> {
    /// let top = store::sorted_range("leaderboard", 0, 0, true)?;
    /// let name: Option<String> = top.first().map(|s| s.member_text());
    /// # Ok(()) }
    /// ```
    pub fn member_text(&self) -> String {
        String::from_utf8_lossy(&self.member).into_owned()
    }
}

/// Scores from `min` to `max` (inclusive unless marked exclusive); infinities leave a
/// side open.
///
/// ```no_run
/// # use techub_guest::prelude::*;
/// # fn handle() -> Result<(), Failure> {
/// let range = store::ScoreRange::between(10.0, 20.0);
/// let members = store::sorted_range_by_score("prices", &range, false, 0, 50)?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ScoreRange {
    /// Lowest score.
    pub min: f64,
    /// Highest score.
    pub max: f64,
    /// Leave out `min` itself.
    pub min_exclusive: bool,
    /// Leave out `max` itself.
    pub max_exclusive: bool,
}

impl ScoreRange {
    /// `min..=max`.
    ///
    /// ```no_run
    /// # use techub_guest::prelude::*;
    /// # fn handle() -> Result<(), Failure> {
    /// let range = store::ScoreRange::between(0.0, 99.0);
    /// # Ok(()) }
    /// ```
    pub fn between(min: f64, max: f64) -> Self {
        Self {
            min,
            max,
            min_exclusive: false,
            max_exclusive: false,
        }
    }

    /// Every score.
    ///
    /// ```no_run
    /// # use techub_guest::prelude::*;
    /// # fn handle() -> Result<(), Failure> {
    /// let everything = store::sorted_range_by_score("prices", &store::ScoreRange::all(), false, 0, 1000)?;
    /// # Ok(()) }
    /// ```
    pub fn all() -> Self {
        Self::between(f64::NEG_INFINITY, f64::INFINITY)
    }
}

impl From<f64> for ScoreRange {
    /// `min..`: every score from `min` up.
    fn from(min: f64) -> Self {
        Self::between(min, f64::INFINITY)
    }
}

fn from_wit(members: Vec<wit::Scored>) -> Vec<Scored> {
    members
        .into_iter()
        .map(|s| Scored {
            member: s.member,
            score: s.score,
        })
        .collect()
}

/// Adds members with their scores, or updates the scores of existing ones (`ZADD`);
/// returns how many are new.
///
/// ```no_run
/// # use techub_guest::prelude::*;
/// # fn handle() -> Result<(), Failure> {
/// store::sorted_add("leaderboard", &[("ada", 120.0), ("bob", 80.0)])?;
/// # Ok(()) }
/// ```
pub fn sorted_add<M: AsRef<[u8]>>(
    key: impl AsRef<str>,
    members: &[(M, f64)],
) -> Result<u32, StoreError> {
    crate::native::ensure_host();
    let members: Vec<wit::Scored> = members
        .iter()
        .map(|(m, score)| wit::Scored {
            member: m.as_ref().to_vec(),
            score: *score,
        })
        .collect();
    Ok(wit::sorted_add(key.as_ref(), &members)?)
}

/// Adds `delta` to a member's score (a missing member counts as 0); the new score.
///
/// ```no_run
/// # use techub_guest::prelude::*;
/// # fn handle() -> Result<(), Failure> {
/// let score: f64 = store::sorted_incr_by("best-sellers", "p-1", 3.0)?;
/// # Ok(()) }
/// ```
pub fn sorted_incr_by(
    key: impl AsRef<str>,
    member: impl AsRef<[u8]>,
    delta: f64,
) -> Result<f64, StoreError> {
    crate::native::ensure_host();
    Ok(wit::sorted_incr_by(key.as_ref(), member.as_ref(), delta)?)
}

/// A member's score, `None` when it is not in the set.
///
/// ```no_run
/// # use techub_guest::prelude::*;
/// # fn handle() -> Result<(), Failure> {
/// let score: Option<f64> = store::sorted_score("leaderboard", "ada")?;
/// # Ok(()) }
/// ```
pub fn sorted_score(
    key: impl AsRef<str>,
    member: impl AsRef<[u8]>,
) -> Result<Option<f64>, StoreError> {
    crate::native::ensure_host();
    Ok(wit::sorted_score(key.as_ref(), member.as_ref())?)
}

/// Removes members; how many were there.
///
/// ```no_run
/// # use techub_guest::prelude::*;
/// # fn handle() -> Result<(), Failure> {
/// store::sorted_remove("leaderboard", &["bob"])?;
/// # Ok(()) }
/// ```
pub fn sorted_remove<M: AsRef<[u8]>>(
    key: impl AsRef<str>,
    members: &[M],
) -> Result<u32, StoreError> {
    crate::native::ensure_host();
    Ok(wit::sorted_remove(key.as_ref(), &owned_bytes(members))?)
}

/// How many members the set has.
///
/// ```no_run
/// # use techub_guest::prelude::*;
/// # fn handle() -> Result<(), Failure> {
/// let players: u32 = store::sorted_len("leaderboard")?;
/// # Ok(()) }
/// ```
pub fn sorted_len(key: impl AsRef<str>) -> Result<u32, StoreError> {
    crate::native::ensure_host();
    Ok(wit::sorted_len(key.as_ref())?)
}

/// Members by rank `start..=stop` (negative ranks count from the end), lowest score
/// first, or highest first with `highest_first`.
///
/// ```no_run
/// # use techub_guest::prelude::*;
/// # fn handle() -> Result<(), Failure> {
/// // The top three, highest score first.
/// for entry in store::sorted_range("leaderboard", 0, 2, true)? {
///     log::info(format!("{:?} {}", entry.member_text(), entry.score));
/// }
/// # Ok(()) }
/// ```
pub fn sorted_range(
    key: impl AsRef<str>,
    start: i64,
    stop: i64,
    highest_first: bool,
) -> Result<Vec<Scored>, StoreError> {
    crate::native::ensure_host();
    Ok(from_wit(wit::sorted_range(
        key.as_ref(),
        start,
        stop,
        highest_first,
    )?))
}

/// Members whose score is in `range`, skipping `offset`, at most `count` (1 to 1000).
///
/// ```no_run
/// # use techub_guest::prelude::*;
/// # fn handle() -> Result<(), Failure> {
/// // Events of the last hour in a time-ordered index (score: ms since the epoch).
/// let now = 1_796_083_200_000.0;
/// let recent = store::sorted_range_by_score("events", &store::ScoreRange::between(now - 3_600_000.0, now), false, 0, 100)?;
/// # Ok(()) }
/// ```
pub fn sorted_range_by_score(
    key: impl AsRef<str>,
    range: &ScoreRange,
    highest_first: bool,
    offset: u32,
    count: u32,
) -> Result<Vec<Scored>, StoreError> {
    crate::native::ensure_host();
    let range = wit::ScoreRange {
        min: range.min,
        max: range.max,
        min_exclusive: range.min_exclusive,
        max_exclusive: range.max_exclusive,
    };
    Ok(from_wit(wit::sorted_range_by_score(
        key.as_ref(),
        range,
        highest_first,
        offset,
        count,
    )?))
}
