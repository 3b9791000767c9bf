//! One database file: opening it (created with its directory if missing), the
//! migrations, the readers' pool and the one writer.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use otp_sms_core::StoreError;
use sqlx::migrate::MigrateError;
use sqlx::sqlite::{SqliteConnection, SqlitePool, SqlitePoolOptions};
use sqlx::Connection;

use crate::error::map_error;
use crate::options::SqliteOptions;
use crate::writer::Writer;

/// The migrations of this crate, embedded in the binary.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// A statement with its arguments, owning them.
pub(crate) type Statement =
    sqlx::query::Query<'static, sqlx::Sqlite, sqlx::sqlite::SqliteArguments<'static>>;

/// An open database file, shared by the stores on it ([`crate::SqliteStore`],
/// [`crate::SqliteBudgets`], [`crate::SqliteIdempotency`], [`crate::SqliteCheckpoints`]):
/// their writes go through one writer, which commits the writes that wait together in one
/// transaction. Cloning shares it.
#[derive(Debug, Clone)]
pub struct Database {
    pub(crate) inner: Arc<Inner>,
}

#[derive(Debug)]
pub(crate) struct Inner {
    pub(crate) options: SqliteOptions,
    pub(crate) readers: SqlitePool,
    pub(crate) writer: Writer,
}

impl Database {
    /// Opens the file of `url` (see [`SqliteOptions::from_url`]) with the default options.
    pub async fn open_url(url: &str) -> Result<Self, StoreError> {
        Self::open(SqliteOptions::from_url(url)?).await
    }

    /// Opens the file, creating it (mode 0600) and its directory if missing, and brings its
    /// schema up to date.
    ///
    /// A file that is not a SQLite database, one written by a newer version of this crate,
    /// or one that cannot be written (read-only, a full disk) is an error naming the file and
    /// what to do; nothing is changed then.
    pub async fn open(options: SqliteOptions) -> Result<Self, StoreError> {
        let path = options.path().to_owned();
        create_file(&path)?;
        let connect = options.connect_options();
        let mut writer = SqliteConnection::connect_with(&connect)
            .await
            .map_err(|e| opening(&path, e))?;
        migrate(&mut writer, &path).await?;
        let readers = SqlitePoolOptions::new()
            .max_connections(options.readers())
            .min_connections(0)
            .acquire_timeout(options.operation_timeout())
            .connect_lazy_with(connect);
        Ok(Self {
            inner: Arc::new(Inner {
                writer: Writer::start(writer, options.operation_timeout(), options.durability()),
                readers,
                options,
            }),
        })
    }

    /// Runs one statement in the writer (`statement` builds it at the batch's time); how many
    /// rows it changed, once its batch committed.
    pub(crate) async fn changed<F>(&self, statement: F) -> Result<u64, StoreError>
    where
        F: FnOnce(chrono::DateTime<chrono::Utc>) -> Statement + Send + 'static,
    {
        self.inner
            .writer
            .write(
                crate::writer::Isolation::Statement,
                Box::new(move |conn, now| {
                    Box::pin(async move {
                        let done = statement(now).execute(conn).await.map_err(map_error)?;
                        Ok(crate::writer::Outcome::Keep(done.rows_affected()))
                    })
                }),
            )
            .await
    }

    /// The options it was opened with.
    pub fn options(&self) -> &SqliteOptions {
        &self.inner.options
    }

    /// Writes a consistent copy of the whole database to `target` (a new file) while the
    /// store keeps serving (`VACUUM INTO`); restore by stopping every server and putting the
    /// copy in the file's place (docs/operations.md).
    pub async fn backup_to(&self, target: &Path) -> Result<(), StoreError> {
        let target = target
            .to_str()
            .ok_or_else(|| StoreError::Internal("the backup's path is not UTF-8".into()))?
            .to_owned();
        if Path::new(&target).exists() {
            return Err(StoreError::Internal(format!(
                "the backup's file {target} exists already: name a new one"
            )));
        }
        sqlx::query("VACUUM INTO ?1")
            .bind(target)
            .execute(&self.inner.readers)
            .await
            .map_err(map_error)?;
        Ok(())
    }

    /// Whether the file can be read now (a health check).
    pub async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1")
            .execute(&self.inner.readers)
            .await
            .map_err(map_error)?;
        Ok(())
    }
}

/// Creates the file's directory and the file itself (owner read and write only) when missing.
fn create_file(path: &Path) -> Result<(), StoreError> {
    let failed = |what: &str, e: std::io::Error| {
        StoreError::Unavailable(format!("cannot {what} for {}: {e}", path.display()))
    };
    if path.exists() {
        return Ok(());
    }
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| failed("create the directory", e))?;
    }
    let mut open = std::fs::OpenOptions::new();
    open.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        open.mode(0o600);
    }
    match open.open(path) {
        Ok(_) => Ok(()),
        // Another process created it first: it is as good.
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(failed("create the database file", e)),
    }
}

fn opening(path: &Path, e: sqlx::Error) -> StoreError {
    let text = e.to_string();
    if text.contains("not a database") {
        return StoreError::Internal(format!(
            "{} is not a SQLite database (or is encrypted): name another file",
            path.display()
        ));
    }
    if text.contains("readonly") || text.contains("read-only") {
        return StoreError::Unavailable(format!(
            "{} cannot be written (read-only file or directory): {text}",
            path.display()
        ));
    }
    StoreError::Unavailable(format!("cannot open {}: {text}", path.display()))
}

/// Applies the migrations the file lacks. Two processes starting on a new file at once may
/// race to apply the same one; the loser tries again and finds it applied.
async fn migrate(conn: &mut SqliteConnection, path: &Path) -> Result<(), StoreError> {
    let mut tries = 0;
    loop {
        tries += 1;
        match MIGRATOR.run_direct(&mut *conn).await {
            Ok(()) => return Ok(()),
            Err(MigrateError::VersionMissing(version)) => {
                return Err(StoreError::Internal(format!(
                    "{} was written by a newer otp-sms (its migration {version} is unknown to \
                     this binary): run the newer binary, or restore a backup taken before the \
                     upgrade",
                    path.display()
                )))
            }
            Err(MigrateError::Execute(e)) | Err(MigrateError::ExecuteMigration(e, _))
                if tries < 3 && e.to_string().contains("already exists") =>
            {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(MigrateError::Execute(e)) | Err(MigrateError::ExecuteMigration(e, _)) => {
                return Err(opening(path, e))
            }
            Err(e) => {
                return Err(StoreError::Unavailable(format!(
                    "cannot migrate {}: {e}",
                    path.display()
                )))
            }
        }
    }
}
