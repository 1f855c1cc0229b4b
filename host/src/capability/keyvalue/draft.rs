//! `wasi:keyvalue@0.2.0-draft` (wasmtime's and wasmCloud's) onto [`KeyValueView`].
//! Its cursors are numbers and its `increment` unsigned; the rest is the shared
//! operations.

use super::{Bucket, HasKeyValue, KeyValueView, KvError, KvFailure};
use wasmtime::component::Resource;

wasmtime::component::bindgen!({
    path: "../wit/standard/keyvalue-0.2.0-draft",
    world: "wasi:keyvalue/imports",
    imports: { default: async | trappable },
    with: { "wasi:keyvalue/store.bucket": super::Bucket },
});

use wasi::keyvalue::store::{Error, KeyResponse};
use wasi::keyvalue::{atomics, batch, store};

/// Links the three interfaces.
pub(super) fn link<T: Send + 'static>(
    linker: &mut wasmtime::component::Linker<T>,
    view: fn(&mut T) -> KeyValueView<'_>,
) -> wasmtime::Result<()> {
    store::add_to_linker::<T, HasKeyValue>(linker, view)?;
    atomics::add_to_linker::<T, HasKeyValue>(linker, view)?;
    batch::add_to_linker::<T, HasKeyValue>(linker, view)
}

/// This version's `error`, or the trap.
fn answer<T>(result: Result<T, KvFailure>) -> wasmtime::Result<Result<T, Error>> {
    match result {
        Ok(value) => Ok(Ok(value)),
        Err(KvFailure::Error(KvError::NoSuchStore)) => Ok(Err(Error::NoSuchStore)),
        Err(KvFailure::Error(KvError::Other(m))) => Ok(Err(Error::Other(m))),
        Err(KvFailure::Trap(trap)) => Err(trap),
    }
}

fn invalid(message: String) -> KvFailure {
    KvFailure::Error(KvError::Other(format!("invalid-argument: {message}")))
}

impl store::Host for KeyValueView<'_> {
    async fn open(
        &mut self,
        identifier: String,
    ) -> wasmtime::Result<Result<Resource<Bucket>, Error>> {
        answer(self.open(&identifier))
    }
}

impl store::HostBucket for KeyValueView<'_> {
    async fn get(
        &mut self,
        bucket: Resource<Bucket>,
        key: String,
    ) -> wasmtime::Result<Result<Option<Vec<u8>>, Error>> {
        answer(KeyValueView::get(self, &bucket, key).await)
    }

    async fn set(
        &mut self,
        bucket: Resource<Bucket>,
        key: String,
        value: Vec<u8>,
    ) -> wasmtime::Result<Result<(), Error>> {
        answer(KeyValueView::set(self, &bucket, key, value).await)
    }

    async fn delete(
        &mut self,
        bucket: Resource<Bucket>,
        key: String,
    ) -> wasmtime::Result<Result<(), Error>> {
        answer(KeyValueView::delete(self, &bucket, vec![key]).await)
    }

    async fn exists(
        &mut self,
        bucket: Resource<Bucket>,
        key: String,
    ) -> wasmtime::Result<Result<bool, Error>> {
        answer(KeyValueView::exists(self, &bucket, key).await)
    }

    async fn list_keys(
        &mut self,
        bucket: Resource<Bucket>,
        cursor: Option<u64>,
    ) -> wasmtime::Result<Result<KeyResponse, Error>> {
        let page = async {
            let cursor = match cursor {
                Some(number) => Some(self.numbered_cursor(&bucket, number)?),
                None => None,
            };
            let (keys, next) = self.list_keys(&bucket, cursor).await?;
            let cursor = match next {
                Some(next) => Some(self.number_cursor(&bucket, next)?),
                None => None,
            };
            Ok(KeyResponse { keys, cursor })
        };
        answer(page.await)
    }

    async fn drop(&mut self, bucket: Resource<Bucket>) -> wasmtime::Result<()> {
        self.close(bucket)
    }
}

impl atomics::Host for KeyValueView<'_> {
    async fn increment(
        &mut self,
        bucket: Resource<Bucket>,
        key: String,
        delta: u64,
    ) -> wasmtime::Result<Result<u64, Error>> {
        let incremented = async {
            let delta = i64::try_from(delta)
                .map_err(|_| invalid(format!("delta {delta} is over {}", i64::MAX)))?;
            let value = self.increment(&bucket, key, delta).await?;
            u64::try_from(value).map_err(|_| {
                KvFailure::Error(KvError::Other(format!(
                    "wrong-type: the value {value} is negative; this version's increment is unsigned"
                )))
            })
        };
        answer(incremented.await)
    }
}

impl batch::Host for KeyValueView<'_> {
    async fn get_many(
        &mut self,
        bucket: Resource<Bucket>,
        keys: Vec<String>,
    ) -> wasmtime::Result<Result<Vec<Option<(String, Vec<u8>)>>, Error>> {
        let values = self.get_many(&bucket, keys).await.map(|values| {
            values
                .into_iter()
                .map(|(key, value)| value.map(|value| (key, value)))
                .collect()
        });
        answer(values)
    }

    async fn set_many(
        &mut self,
        bucket: Resource<Bucket>,
        key_values: Vec<(String, Vec<u8>)>,
    ) -> wasmtime::Result<Result<(), Error>> {
        answer(self.set_many(&bucket, key_values).await)
    }

    async fn delete_many(
        &mut self,
        bucket: Resource<Bucket>,
        keys: Vec<String>,
    ) -> wasmtime::Result<Result<(), Error>> {
        answer(KeyValueView::delete(self, &bucket, keys).await)
    }
}
