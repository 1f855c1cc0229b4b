//! Reading a plugin file so that nothing in the plugins directory can wedge the host:
//! only a regular file (a symlink is followed) is read, its size is checked before
//! reading and enforced while reading, it is opened without blocking (a FIFO swapped
//! in after the check cannot hang the open), and the read runs on a blocking thread,
//! never on an async worker.

use std::io::Read;
use std::path::{Path, PathBuf};

/// Why a plugin file was not read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ReadError {
    /// Nothing is there (the file was removed).
    #[error("{0} does not exist")]
    Missing(PathBuf),
    /// A symlink whose target does not exist.
    #[error("{0} is a symlink to nothing (dangling)")]
    Dangling(PathBuf),
    /// Not a regular file: a directory, a FIFO, a socket or a device.
    #[error("{path} is a {kind}, not a regular file: only regular files are loaded")]
    NotAFile {
        /// The path.
        path: PathBuf,
        /// What it is.
        kind: &'static str,
    },
    /// Larger than `host.max_plugin_bytes`.
    #[error("{path} is larger than host.max_plugin_bytes ({max} bytes)")]
    TooLarge {
        /// The path.
        path: PathBuf,
        /// The limit.
        max: u64,
    },
    /// The OS refused.
    #[error("could not read {path}: {message}")]
    Io {
        /// The path.
        path: PathBuf,
        /// The OS error.
        message: String,
    },
}

/// Reads `path` (at most `max` bytes) on a blocking thread.
pub async fn read_plugin_file(path: &Path, max: u64) -> Result<Vec<u8>, ReadError> {
    let owned = path.to_path_buf();
    tokio::task::spawn_blocking(move || read_blocking(&owned, max))
        .await
        .unwrap_or_else(|e| {
            Err(ReadError::Io {
                path: path.to_path_buf(),
                message: format!("the reading thread failed: {e}"),
            })
        })
}

fn read_blocking(path: &Path, max: u64) -> Result<Vec<u8>, ReadError> {
    let io = |e: std::io::Error| ReadError::Io {
        path: path.to_path_buf(),
        message: e.to_string(),
    };
    let metadata = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(match std::fs::symlink_metadata(path) {
                Ok(_) => ReadError::Dangling(path.to_path_buf()),
                Err(_) => ReadError::Missing(path.to_path_buf()),
            });
        }
        Err(e) => return Err(io(e)),
    };
    check_kind(path, &metadata)?;
    if metadata.len() > max {
        return Err(ReadError::TooLarge {
            path: path.to_path_buf(),
            max,
        });
    }
    use std::os::unix::fs::OpenOptionsExt;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(rustix::fs::OFlags::NONBLOCK.bits() as i32)
        .open(path)
        .map_err(io)?;
    // The file may have been swapped between the check and the open.
    check_kind(path, &file.metadata().map_err(io)?)?;
    let mut bytes = Vec::with_capacity(metadata.len() as usize);
    file.take(max + 1).read_to_end(&mut bytes).map_err(io)?;
    if bytes.len() as u64 > max {
        return Err(ReadError::TooLarge {
            path: path.to_path_buf(),
            max,
        });
    }
    Ok(bytes)
}

fn check_kind(path: &Path, metadata: &std::fs::Metadata) -> Result<(), ReadError> {
    use std::os::unix::fs::FileTypeExt;
    let kind = metadata.file_type();
    if kind.is_file() {
        return Ok(());
    }
    let kind = if kind.is_dir() {
        "directory"
    } else if kind.is_fifo() {
        "FIFO"
    } else if kind.is_socket() {
        "socket"
    } else if kind.is_block_device() || kind.is_char_device() {
        "device"
    } else {
        "special file"
    };
    Err(ReadError::NotAFile {
        path: path.to_path_buf(),
        kind,
    })
}
