//! Arbitrary bytes as a plugin file: the host loads them or refuses them with a
//! typed error; it never panics, not even on its compile thread (where a panic
//! would be caught and reported as "compilation task failed").
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::path::Path;
use std::sync::{Arc, LazyLock};
use techub_host::config::HostConfig;
use techub_host::runtime::{Runtime, content_hash};
use techub_host::services::Services;

struct Host {
    tokio: tokio::runtime::Runtime,
    runtime: Arc<Runtime>,
    config: Arc<HostConfig>,
    services: Arc<Services>,
}

static HOST: LazyLock<Host> = LazyLock::new(|| {
    let tokio = tokio::runtime::Runtime::new().expect("a tokio runtime");
    let mut config = HostConfig::default();
    config.host.metrics = false;
    config.host.compile_cache = false;
    let config = Arc::new(config);
    let services = tokio
        .block_on(techub_host::services::connect(&config))
        .expect("the embedded services");
    Host {
        runtime: Arc::new(Runtime::new(&config).expect("the runtime")),
        config,
        services: Arc::new(services),
        tokio,
    }
});

fuzz_target!(|data: &[u8]| {
    let host = &*HOST;
    let result = host.tokio.block_on(techub_host::plugins::load_bytes(
        &host.runtime,
        Path::new("fuzzed.wasm"),
        data.to_vec(),
        content_hash(data),
        host.config.clone(),
        host.services.clone(),
    ));
    if let Err(error) = result {
        let text = error.to_string();
        assert!(!text.contains("compilation task failed"), "{text}");
    }
});
