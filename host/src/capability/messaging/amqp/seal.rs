//! The seal on the dead letters the host writes: an HMAC-SHA256, with a deployment's
//! key, over everything a replay acts on (the queue it goes back to, the message id,
//! routing key, headers, correlation, reply-to and payload).
//!
//! Anyone who may publish to the dead-letter exchange can write a letter naming any
//! queue; a replay would route it there. A replay therefore moves only letters whose
//! seal checks: the others (forged, altered, or dead-lettered by RabbitMQ itself — an
//! expired or length-dropped message, which the host never saw) are listed as
//! untrusted and kept, for an operator to inspect and, if they choose, publish again
//! by hand.
//!
//! The key is `[amqp] dead_letter_key` (an env var or a file); without it, a key made
//! at first start and kept in `<host.cache_dir>/dead-letter.key`. Hosts sharing a
//! dead-letter queue must share the key (set it), or each trusts only its own letters.

use crate::capability::messaging::Envelope;
use crate::config::HostConfig;
use anyhow::Context;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::path::Path;

/// The header carrying the seal (hex).
pub const SEAL_HEADER: &str = "x-techub-death-seal";

/// The file, under `host.cache_dir`, holding the key made when none is configured.
const KEY_FILE: &str = "dead-letter.key";

/// Seals and checks dead letters with one deployment's key.
#[derive(Clone)]
pub struct DeathSeal {
    key: Vec<u8>,
}

impl std::fmt::Debug for DeathSeal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DeathSeal(***)")
    }
}

impl DeathSeal {
    /// The seal of `config`: its `[amqp] dead_letter_key`, or the key kept under its
    /// cache directory (made now if there is none).
    pub fn for_config(config: &HostConfig) -> anyhow::Result<Self> {
        match &config.amqp.dead_letter_key {
            Some(secret) => Ok(Self::with_key(secret.value.expose().as_bytes())),
            None => Self::kept_in(&config.host.cache_dir),
        }
    }

    /// A seal with `key`.
    pub fn with_key(key: &[u8]) -> Self {
        Self { key: key.to_vec() }
    }

    /// The key in `dir`/dead-letter.key, made (readable by its owner only) if absent.
    /// Hosts sharing the directory may start at once: the key is written whole to a
    /// file of its own, then linked into place only if none is there yet (a hard link
    /// never replaces), and the loser of that race reads the winner's.
    fn kept_in(dir: &Path) -> anyhow::Result<Self> {
        let path = dir.join(KEY_FILE);
        if let Some(key) = read_key(&path)? {
            return Ok(Self::with_key(key.as_bytes()));
        }
        std::fs::create_dir_all(dir)
            .with_context(|| format!("could not create {}", dir.display()))?;
        // Two v4 UUIDs: 244 random bits from the system's generator.
        let key = format!(
            "{}{}",
            uuid::Uuid::new_v4().simple(),
            uuid::Uuid::new_v4().simple()
        );
        let draft = dir.join(format!(".{KEY_FILE}.{}", uuid::Uuid::new_v4().simple()));
        write_private(&draft, &key)
            .with_context(|| format!("could not write the dead-letter key {}", draft.display()))?;
        let linked = std::fs::hard_link(&draft, &path);
        let _ = std::fs::remove_file(&draft);
        match linked {
            Ok(()) => {
                tracing::info!(file = %path.display(), "made the key that seals dead letters (set amqp.dead_letter_key to share one across hosts)");
                Ok(Self::with_key(key.as_bytes()))
            }
            Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => {
                let key = read_key(&path)?
                    .with_context(|| format!("{} vanished as it was made", path.display()))?;
                Ok(Self::with_key(key.as_bytes()))
            }
            Err(error) => Err(error)
                .with_context(|| format!("could not write the dead-letter key {}", path.display())),
        }
    }

    fn mac(&self, queue: &str, envelope: &Envelope) -> Hmac<Sha256> {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.key).expect("HMAC takes any key");
        // Each part length-prefixed: no two different letters read the same.
        let mut part = |bytes: &[u8]| {
            mac.update(&(bytes.len() as u64).to_be_bytes());
            mac.update(bytes);
        };
        part(queue.as_bytes());
        part(envelope.id.as_bytes());
        part(envelope.routing_key.as_bytes());
        part(envelope.correlation_id.as_deref().unwrap_or("").as_bytes());
        part(envelope.reply_to.as_deref().unwrap_or("").as_bytes());
        let mut headers: Vec<_> = envelope.headers.iter().collect();
        headers.sort();
        for (name, value) in headers {
            part(name.as_bytes());
            part(value.as_bytes());
        }
        part(&envelope.payload);
        mac
    }

    /// The seal of `envelope` dead-lettered from `queue`, in hex.
    pub fn seal(&self, queue: &str, envelope: &Envelope) -> String {
        let tag = self.mac(queue, envelope).finalize().into_bytes();
        tag.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// Whether `seal` (hex) is this key's seal of `envelope` from `queue` (compared in
    /// constant time).
    pub fn verify(&self, queue: &str, envelope: &Envelope, seal: &str) -> bool {
        let Some(tag) = from_hex(seal) else {
            return false;
        };
        self.mac(queue, envelope).verify_slice(&tag).is_ok()
    }
}

/// The key in `path`; `None` when there is no such file. An empty file is an error
/// (someone emptied it: making a new key would silently distrust every letter).
fn read_key(path: &Path) -> anyhow::Result<Option<String>> {
    match std::fs::read_to_string(path) {
        Ok(key) if key.trim().is_empty() => anyhow::bail!(
            "the dead-letter key {} is empty: delete it to have a new one made (letters sealed with the old one become untrusted)",
            path.display()
        ),
        Ok(key) => Ok(Some(key.trim().to_string())),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(error) => Err(error)
            .with_context(|| format!("could not read the dead-letter key {}", path.display())),
    }
}

fn from_hex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(unix)]
fn write_private(path: &Path, key: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(key.as_bytes())
}

#[cfg(not(unix))]
fn write_private(path: &Path, key: &str) -> std::io::Result<()> {
    std::fs::write(path, key)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn letter(payload: &[u8]) -> Envelope {
        Envelope {
            id: "m-1".into(),
            routing_key: "order.created".into(),
            payload: payload.to_vec(),
            headers: vec![("b".into(), "2".into()), ("a".into(), "1".into())],
            correlation_id: None,
            reply_to: None,
            priority: 5,
            persistent: true,
            expiration_ms: None,
            published_at_ms: 0,
            attempt: 3,
            parked: None,
        }
    }

    #[test]
    fn a_seal_checks_only_for_the_same_key_queue_and_letter() {
        let seal = DeathSeal::with_key(b"deployment key");
        let tag = seal.seal("techub.order.shop", &letter(b"{}"));
        assert!(seal.verify("techub.order.shop", &letter(b"{}"), &tag));
        // Another queue, payload, header, key, or a mangled tag: no.
        assert!(!seal.verify("techub.payment.shop", &letter(b"{}"), &tag));
        assert!(!seal.verify("techub.order.shop", &letter(b"{\"x\":1}"), &tag));
        let mut extra = letter(b"{}");
        extra.headers.push(("c".into(), "3".into()));
        assert!(!seal.verify("techub.order.shop", &extra, &tag));
        assert!(!DeathSeal::with_key(b"other").verify("techub.order.shop", &letter(b"{}"), &tag));
        assert!(!seal.verify("techub.order.shop", &letter(b"{}"), &tag[1..]));
        assert!(!seal.verify("techub.order.shop", &letter(b"{}"), "zz"));
        // What a replay resets (the attempt) is not sealed.
        let mut later = letter(b"{}");
        later.attempt = 1;
        assert!(seal.verify("techub.order.shop", &later, &tag));
    }

    #[test]
    fn a_key_made_at_first_start_is_kept_and_read_again() {
        let dir = std::env::temp_dir().join(format!("seal-{}", uuid::Uuid::new_v4().simple()));
        let first = DeathSeal::kept_in(&dir).unwrap();
        let again = DeathSeal::kept_in(&dir).unwrap();
        assert_eq!(first.key, again.key);
        assert_eq!(first.key.len(), 64);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.join(KEY_FILE))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn hosts_starting_at_once_agree_on_one_key() {
        let dir = std::env::temp_dir().join(format!("seal-{}", uuid::Uuid::new_v4().simple()));
        let keys: Vec<Vec<u8>> = std::thread::scope(|scope| {
            let starts: Vec<_> = (0..8)
                .map(|_| scope.spawn(|| DeathSeal::kept_in(&dir).unwrap().key))
                .collect();
            starts.into_iter().map(|s| s.join().unwrap()).collect()
        });
        assert!(keys.iter().all(|k| *k == keys[0]), "one key for all");
        let left: Vec<_> = std::fs::read_dir(&dir).unwrap().collect();
        assert_eq!(left.len(), 1, "no drafts left behind");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
