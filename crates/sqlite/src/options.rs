//! How to open a database file: its path and what its commits wait for.

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use otp_sms_core::StoreError;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqliteSynchronous};

/// What a commit survives (SQLite's `synchronous` in WAL mode).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Durability {
    /// `synchronous = FULL`: every commit waits for the write-ahead log to reach the disk, so
    /// an acknowledged write survives a process kill and a power cut. Group commit shares one
    /// flush among the writes that wait together. The default.
    #[default]
    Full,
    /// `synchronous = NORMAL`: commits do not wait for the disk. An acknowledged write survives
    /// a process kill (it is in the operating system's cache), but a power cut or a kernel crash
    /// may lose the last moments of writes; the file stays consistent.
    Normal,
}

/// How to open a database file. Built with [`SqliteOptions::new`] or
/// [`SqliteOptions::from_url`] and its `with_` methods.
///
/// ```
/// use otp_sms_sqlite::{Durability, SqliteOptions};
/// let options = SqliteOptions::from_url("sqlite:///var/lib/otp-sms/otp-sms.db")
///     .unwrap()
///     .with_durability(Durability::Full);
/// assert_eq!(options.path().to_str(), Some("/var/lib/otp-sms/otp-sms.db"));
/// ```
#[derive(Debug, Clone)]
pub struct SqliteOptions {
    path: PathBuf,
    durability: Durability,
    busy_timeout: Duration,
    readers: u32,
    operation_timeout: Duration,
    max_size: Option<u64>,
}

impl SqliteOptions {
    /// The file at `path`, with the defaults: [`Durability::Full`], a busy time-out of 5 s,
    /// 4 readers, an operation time-out of 10 s.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self {
            path: path.into(),
            durability: Durability::Full,
            busy_timeout: Duration::from_secs(5),
            readers: 4,
            operation_timeout: Duration::from_secs(10),
            max_size: None,
        }
    }

    /// From a URL: `sqlite:///absolute/path.db`, `sqlite://relative/path.db` or
    /// `sqlite:path.db`. An in-memory database (`sqlite::memory:`) is refused: the in-memory
    /// store is `otp-sms-memory`.
    pub fn from_url(url: &str) -> Result<Self, StoreError> {
        let path = url
            .strip_prefix("sqlite://")
            .or_else(|| url.strip_prefix("sqlite:"))
            .ok_or_else(|| {
                StoreError::Internal(format!(
                    "`{url}` is not a SQLite URL: use sqlite:///path/to/file.db"
                ))
            })?;
        // Query parameters are sqlx's, not ours: refuse them rather than make a file of them.
        if path.is_empty() || path.contains('?') || path.starts_with(":memory:") {
            return Err(StoreError::Internal(format!(
                "`{url}` names no database file: use sqlite:///path/to/file.db"
            )));
        }
        Ok(Self::new(path))
    }

    /// With this durability.
    pub fn with_durability(mut self, durability: Durability) -> Self {
        self.durability = durability;
        self
    }

    /// How long a write waits for another process's write to finish before it fails as
    /// UNAVAILABLE (SQLite's `busy_timeout`).
    pub fn with_busy_timeout(mut self, timeout: Duration) -> Self {
        self.busy_timeout = timeout;
        self
    }

    /// How many connections read at once (at least 1).
    pub fn with_readers(mut self, readers: u32) -> Self {
        self.readers = readers.max(1);
        self
    }

    /// How long a call waits for the store before it fails as UNAVAILABLE (an append whose
    /// commit it no longer waits for: its outcome unknown).
    pub fn with_operation_timeout(mut self, timeout: Duration) -> Self {
        self.operation_timeout = timeout;
        self
    }

    /// Caps the file at about `bytes` (SQLite's `max_page_count`, in pages of 4 KiB): a
    /// write that would grow it further fails as a full disk does, UNAVAILABLE and nothing of
    /// its batch written, so a runaway cannot fill the volume the host needs for more. No cap
    /// by default.
    pub fn with_max_size(mut self, bytes: u64) -> Self {
        self.max_size = Some(bytes);
        self
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The durability.
    pub fn durability(&self) -> Durability {
        self.durability
    }

    /// How many connections read at once.
    pub fn readers(&self) -> u32 {
        self.readers
    }

    /// How long a call waits for the store.
    pub fn operation_timeout(&self) -> Duration {
        self.operation_timeout
    }

    pub(crate) fn connect_options(&self) -> SqliteConnectOptions {
        let options = SqliteConnectOptions::new()
            .filename(&self.path)
            .create_if_missing(false)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(match self.durability {
                Durability::Full => SqliteSynchronous::Full,
                Durability::Normal => SqliteSynchronous::Normal,
            })
            .busy_timeout(self.busy_timeout)
            .foreign_keys(false);
        match self.max_size {
            Some(bytes) => options.pragma("max_page_count", (bytes / 4096).max(1).to_string()),
            None => options,
        }
    }
}

impl FromStr for SqliteOptions {
    type Err = StoreError;
    fn from_str(url: &str) -> Result<Self, StoreError> {
        Self::from_url(url)
    }
}
