//! Compiled components kept on disk, so that a restart (or a swap back to a version
//! seen before) skips compilation: ~0.2-0.7 ms to load instead of 55-180 ms to compile.
//!
//! An entry is `<sha256 of the .wasm>-<engine hash>.cwasm`: the same file compiled by
//! another wasmtime version or engine configuration has another name. Its content is
//! the SHA-256 of the serialized component followed by the component; it is written to
//! a temporary file and renamed into place (atomic), and checked against its digest
//! before it is deserialized, so a torn or corrupted entry is recompiled, never loaded.
//!
//! A compiled component is native code the host runs: whoever can write the cache
//! directory can run code as the host. It defaults to a directory of its own beside
//! `host.toml` (not the plugins directory, where plugin authors drop files), created
//! readable by the host's user only.

use sha2::{Digest, Sha256};
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use wasmtime::Engine;
use wasmtime::component::Component;

/// Loads and stores compiled components for one engine.
pub struct CompiledCache {
    dir: Option<PathBuf>,
    engine_hash: String,
    hits: AtomicU64,
    compiled: AtomicU64,
}

/// The hex SHA-256 of `bytes`.
pub fn content_hash(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

/// The first 12 hex digits of a version's hash ([`content_hash`]): enough to tell
/// versions apart in logs and listings.
pub fn short_version(hash: &str) -> &str {
    hash.get(..12).unwrap_or(hash)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl CompiledCache {
    /// A cache in `dir` (`None`: compile every time).
    pub fn new(engine: &Engine, dir: Option<PathBuf>) -> Self {
        // Std's hasher is deterministic within a build; across builds a different key
        // is only a miss (and wasmtime refuses an incompatible artifact anyway).
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut hasher);
        Self {
            dir,
            engine_hash: format!("{:016x}", hasher.finish()),
            hits: AtomicU64::new(0),
            compiled: AtomicU64::new(0),
        }
    }

    /// Components loaded from the cache so far.
    pub fn hits(&self) -> u64 {
        self.hits.load(Ordering::Relaxed)
    }

    /// Components compiled so far.
    pub fn compiled(&self) -> u64 {
        self.compiled.load(Ordering::Relaxed)
    }

    fn entry(&self, hash: &str) -> Option<PathBuf> {
        let dir = self.dir.as_ref()?;
        Some(dir.join(format!("{hash}-{}.cwasm", self.engine_hash)))
    }

    /// The component of `bytes` (whose SHA-256 is `hash`): from the cache when a sound
    /// entry exists, else compiled and stored. Blocking: call it off the async threads.
    pub fn load_or_compile(
        &self,
        engine: &Engine,
        hash: &str,
        bytes: &[u8],
    ) -> wasmtime::Result<Component> {
        if let Some(path) = self.entry(hash) {
            match read_entry(engine, &path) {
                Ok(Some(component)) => {
                    self.hits.fetch_add(1, Ordering::Relaxed);
                    return Ok(component);
                }
                Ok(None) => {}
                Err(reason) => {
                    tracing::warn!(path = %path.display(), %reason, "compiled-component cache entry refused; recompiling");
                }
            }
        }
        let component = Component::from_binary(engine, bytes)?;
        self.compiled.fetch_add(1, Ordering::Relaxed);
        if let Some(path) = self.entry(hash)
            && let Err(error) = write_entry(&component, &path)
        {
            tracing::warn!(path = %path.display(), %error, "could not store a compiled component; it will be compiled again next time");
        }
        Ok(component)
    }
}

/// `Ok(None)` when there is no entry; `Err` with the reason when it is unsound.
fn read_entry(engine: &Engine, path: &Path) -> Result<Option<Component>, String> {
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e.to_string()),
    };
    if bytes.len() < 32 {
        return Err("shorter than its digest".into());
    }
    let (digest, serialized) = bytes.split_at(32);
    if Sha256::digest(serialized).as_slice() != digest {
        return Err("its digest does not match (torn or corrupted)".into());
    }
    deserialize(engine, serialized)
        .map(Some)
        .map_err(|e| format!("{e:#}"))
}

#[expect(
    unsafe_code,
    reason = "deserializing runs native code: the bytes are ones this host serialized, \
              written atomically to a directory only it writes, and their digest was \
              checked just before"
)]
fn deserialize(engine: &Engine, serialized: &[u8]) -> wasmtime::Result<Component> {
    // SAFETY: see the `expect` reason: `serialized` is what `Component::serialize`
    // produced for an engine of the same compatibility hash (part of the file name),
    // verified against the SHA-256 stored with it. wasmtime checks the version and
    // configuration header again.
    unsafe { Component::deserialize(engine, serialized) }
}

fn write_entry(component: &Component, path: &Path) -> anyhow::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    create_private_dir(dir)?;
    let serialized = component
        .serialize()
        .map_err(|e| anyhow::anyhow!("{e:#}"))?;
    let mut bytes = Sha256::digest(&serialized).to_vec();
    bytes.extend_from_slice(&serialized);
    let temp = dir.join(format!(
        ".{}.{}.tmp",
        path.file_name().and_then(|n| n.to_str()).unwrap_or("entry"),
        uuid::Uuid::new_v4().simple()
    ));
    std::fs::write(&temp, &bytes)?;
    if let Err(error) = std::fs::rename(&temp, path) {
        let _ = std::fs::remove_file(&temp);
        return Err(error.into());
    }
    Ok(())
}

fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}
