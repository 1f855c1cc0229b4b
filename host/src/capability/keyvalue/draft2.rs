//! `wasi:keyvalue@0.2.0-draft2` (Spin's) onto [`KeyValueView`]: string cursors, a
//! signed `increment`, and `cas`/`swap` on the store's compare-and-swap.

use super::{Bucket, Cas, HasKeyValue, KeyValueView, KvError, KvFailure};
use wasmtime::component::Resource;

wasmtime::component::bindgen!({
    path: "../wit/standard/keyvalue-0.2.0-draft2",
    world: "wasi:keyvalue/imports",
    imports: { default: async | trappable },
    with: {
        "wasi:keyvalue/store.bucket": super::Bucket,
        "wasi:keyvalue/atomics.cas": super::Cas,
    },
});

use wasi::keyvalue::atomics::CasError;
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

/// This version's `error`.
fn error(error: KvError) -> Error {
    match error {
        KvError::NoSuchStore => Error::NoSuchStore,
        KvError::Other(m) => Error::Other(m),
    }
}

/// This version's `error`, or the trap.
fn answer<T>(result: Result<T, KvFailure>) -> wasmtime::Result<Result<T, Error>> {
    match result {
        Ok(value) => Ok(Ok(value)),
        Err(KvFailure::Error(e)) => Ok(Err(error(e))),
        Err(KvFailure::Trap(trap)) => Err(trap),
    }
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
        cursor: Option<String>,
    ) -> wasmtime::Result<Result<KeyResponse, Error>> {
        let page = self.list_keys(&bucket, cursor).await;
        answer(page.map(|(keys, cursor)| KeyResponse { keys, cursor }))
    }

    async fn drop(&mut self, bucket: Resource<Bucket>) -> wasmtime::Result<()> {
        self.close(bucket)
    }
}

impl atomics::HostCas for KeyValueView<'_> {
    async fn new(
        &mut self,
        bucket: Resource<Bucket>,
        key: String,
    ) -> wasmtime::Result<Result<Resource<Cas>, Error>> {
        answer(self.cas_new(&bucket, key).await)
    }

    async fn current(
        &mut self,
        cas: Resource<Cas>,
    ) -> wasmtime::Result<Result<Option<Vec<u8>>, Error>> {
        answer(self.cas_current(&cas))
    }

    async fn drop(&mut self, cas: Resource<Cas>) -> wasmtime::Result<()> {
        self.cas_drop(cas)
    }
}

impl atomics::Host for KeyValueView<'_> {
    async fn increment(
        &mut self,
        bucket: Resource<Bucket>,
        key: String,
        delta: i64,
    ) -> wasmtime::Result<Result<i64, Error>> {
        answer(KeyValueView::increment(self, &bucket, key, delta).await)
    }

    async fn swap(
        &mut self,
        cas: Resource<Cas>,
        value: Vec<u8>,
    ) -> wasmtime::Result<Result<(), CasError>> {
        match KeyValueView::swap(self, cas, value).await {
            Ok(Ok(())) => Ok(Ok(())),
            Ok(Err(fresh)) => Ok(Err(CasError::CasFailed(fresh))),
            Err(KvFailure::Error(e)) => Ok(Err(CasError::StoreError(error(e)))),
            Err(KvFailure::Trap(trap)) => Err(trap),
        }
    }
}

impl batch::Host for KeyValueView<'_> {
    async fn get_many(
        &mut self,
        bucket: Resource<Bucket>,
        keys: Vec<String>,
    ) -> wasmtime::Result<Result<Vec<(String, Option<Vec<u8>>)>, Error>> {
        answer(KeyValueView::get_many(self, &bucket, keys).await)
    }

    async fn set_many(
        &mut self,
        bucket: Resource<Bucket>,
        key_values: Vec<(String, Vec<u8>)>,
    ) -> wasmtime::Result<Result<(), Error>> {
        answer(KeyValueView::set_many(self, &bucket, key_values).await)
    }

    async fn delete_many(
        &mut self,
        bucket: Resource<Bucket>,
        keys: Vec<String>,
    ) -> wasmtime::Result<Result<(), Error>> {
        answer(KeyValueView::delete(self, &bucket, keys).await)
    }
}
