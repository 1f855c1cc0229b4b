//! Writes checked against a lock's fencing token.
//!
//! A lease can run out while its holder is stalled (a long pause, a frozen host); by
//! the time the holder writes, another holder may have taken the lock and written.
//! A fenced write carries the writer's fencing token, and the store keeps the token
//! that wrote last beside the value: a write with a smaller token is refused, so a
//! stale holder can never overwrite a newer one's work. The check and the write are
//! one compare-and-swap, on every backend and across hosts.
//!
//! A value computed from what was read (a count, a balance) needs [`update_fenced`]:
//! it reads and writes in one compare-and-swap, so neither a stale holder's write nor
//! a newer holder's that lands between the read and the write is lost. [`set_fenced`]
//! is for values that do not depend on the old one.
//!
//! ```no_run
//! # use techub_guest::prelude::*;
//! # fn handle() -> Result<(), Failure> {
//! let lease = lock::acquire("stock:p-1", lock::LockOptions::default())?;
//! let written = store::update_fenced("stock:p-1", lease.fencing_token(), |stock| {
//!     let stock: i64 = stock.and_then(|s| std::str::from_utf8(s).ok()?.parse().ok()).unwrap_or(100);
//!     (stock - 1).to_string().into_bytes()
//! })?;
//! if !written {
//!     // Our lease ran out and a newer holder wrote: do it again from the start.
//!     return Err(Failure::retry("a newer lock holder wrote stock:p-1"));
//! }
//! # Ok(()) }
//! ```
//!
//! The stored form is `<token>\n<value>`; read it with [`get_fenced`], not [`get`].

use super::{MAX_SWAP_ATTEMPTS, StoreError, compare_and_swap, get};

/// A value and the fencing token that wrote it.
///
/// ```no_run
/// # use techub_guest::prelude::*;
/// # fn handle() -> Result<(), Failure> {
/// if let Some(store::Fenced { token, value }) = store::get_fenced("stock:p-1")? {
///     log::info(format!("{} bytes written under token {token}", value.len()));
/// }
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fenced {
    /// The fencing token of the write.
    pub token: u64,
    /// What it wrote.
    pub value: Vec<u8>,
}

fn encode(token: u64, value: &[u8]) -> Vec<u8> {
    let mut bytes = format!("{token}\n").into_bytes();
    bytes.extend_from_slice(value);
    bytes
}

fn decode(key: &str, bytes: &[u8]) -> Result<Fenced, StoreError> {
    let newline = bytes.iter().position(|b| *b == b'\n');
    let token = newline
        .and_then(|at| std::str::from_utf8(&bytes[..at]).ok())
        .and_then(|token| token.parse().ok());
    match (newline, token) {
        (Some(at), Some(token)) => Ok(Fenced {
            token,
            value: bytes[at + 1..].to_vec(),
        }),
        _ => Err(StoreError::InvalidArgument(format!(
            "{key} does not hold a fenced value (written by set_fenced)"
        ))),
    }
}

/// The value of `key` and the token that wrote it; `None` when the key does not exist.
/// A key written by anything but [`set_fenced`] gives `InvalidArgument`.
///
/// ```no_run
/// # use techub_guest::prelude::*;
/// # fn handle() -> Result<(), Failure> {
/// let last_token = store::get_fenced("ledger")?.map(|f| f.token).unwrap_or(0);
/// # Ok(()) }
/// ```
pub fn get_fenced(key: impl AsRef<str>) -> Result<Option<Fenced>, StoreError> {
    let key = key.as_ref();
    get(key)?.map(|bytes| decode(key, &bytes)).transpose()
}

/// Writes `value` to `key` under `token` (a lease's [`fencing_token`]), unless a write
/// with a larger token came first: then nothing changes and the answer is `false`.
/// The same token may write again. For a value computed from the old one use
/// [`update_fenced`]: a read, then `set_fenced`, loses a newer holder's write that
/// lands in between. After [`MAX_SWAP_ATTEMPTS`] rounds lost to other writers it gives
/// `Unavailable` (the message is retried). A key written by anything but the fenced
/// functions gives `InvalidArgument` and is left as it is.
///
/// [`fencing_token`]: crate::lock::Lease::fencing_token
///
/// ```no_run
/// # use techub_guest::prelude::*;
/// # fn handle() -> Result<(), Failure> {
/// let lease = lock::acquire("report", lock::LockOptions::default())?;
/// let written = store::set_fenced("report", lease.fencing_token(), b"v2")?;
/// # Ok(()) }
/// ```
pub fn set_fenced(
    key: impl AsRef<str>,
    token: u64,
    value: impl AsRef<[u8]>,
) -> Result<bool, StoreError> {
    let value = value.as_ref();
    update_fenced(key, token, |_| value.to_vec())
}

/// Read-modify-write of `key` under `token`: reads the value, computes
/// `change(value)` (`None`: the key does not exist yet) and swaps it in, unless a
/// write with a larger token came first (`false`, nothing changed). When another
/// write lands between the read and the swap, it reads again and calls `change`
/// again, so no write is lost. Errors as [`set_fenced`].
///
/// ```no_run
/// # use techub_guest::prelude::*;
/// # fn handle() -> Result<(), Failure> {
/// let lease = lock::acquire("ledger", lock::LockOptions::default())?;
/// let counted = store::update_fenced("ledger", lease.fencing_token(), |count| {
///     let count: u64 = count.and_then(|c| std::str::from_utf8(c).ok()?.parse().ok()).unwrap_or(0);
///     (count + 1).to_string().into_bytes()
/// })?;
/// # Ok(()) }
/// ```
pub fn update_fenced(
    key: impl AsRef<str>,
    token: u64,
    mut change: impl FnMut(Option<&[u8]>) -> Vec<u8>,
) -> Result<bool, StoreError> {
    let key = key.as_ref();
    for _ in 0..MAX_SWAP_ATTEMPTS {
        let current = get(key)?;
        let fenced = current
            .as_deref()
            .map(|bytes| decode(key, bytes))
            .transpose()?;
        if fenced.as_ref().is_some_and(|f| f.token > token) {
            return Ok(false);
        }
        let new = encode(token, &change(fenced.as_ref().map(|f| f.value.as_slice())));
        // A writer (with any token) may slip in between the read and the swap; the
        // swap then fails and the next round reads what it wrote.
        if compare_and_swap(key, current.as_deref(), Some(&new), None)? {
            return Ok(true);
        }
    }
    Err(StoreError::Unavailable(format!(
        "{key} changed under {MAX_SWAP_ATTEMPTS} attempts in a row"
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fenced_value_reads_back_with_its_token() {
        let bytes = encode(42, b"a\nb");
        assert_eq!(
            decode("k", &bytes),
            Ok(Fenced {
                token: 42,
                value: b"a\nb".to_vec()
            })
        );
    }

    #[test]
    fn a_plain_value_is_not_taken_for_a_fenced_one() {
        assert!(matches!(
            decode("k", b"plain"),
            Err(StoreError::InvalidArgument(_))
        ));
        assert!(matches!(
            decode("k", b"x\nplain"),
            Err(StoreError::InvalidArgument(_))
        ));
    }
}
