//! sqlx's errors as the ports' errors.

use otp_sms_core::{PortError, StoreError};

/// SQLite's primary result codes that mean "not now" rather than "wrong": busy or locked by
/// another process, the disk full or failing, the file read-only or gone. (A corrupt file is
/// INTERNAL: waiting does not mend it.)
const UNAVAILABLE: [i64; 6] = [
    5,  // SQLITE_BUSY
    6,  // SQLITE_LOCKED
    8,  // SQLITE_READONLY
    10, // SQLITE_IOERR
    13, // SQLITE_FULL
    14, // SQLITE_CANTOPEN
];

/// The primary result code of a database error (extended codes keep it in their low byte).
pub(crate) fn primary_code(e: &sqlx::Error) -> Option<i64> {
    match e {
        sqlx::Error::Database(db) => db
            .code()
            .and_then(|c| c.parse::<i64>().ok())
            .map(|c| c & 0xff),
        _ => None,
    }
}

/// Whether `e` is a unique-constraint violation (SQLITE_CONSTRAINT_UNIQUE or _PRIMARYKEY).
pub(crate) fn is_unique_violation(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Database(db) => matches!(db.code().as_deref(), Some("2067") | Some("1555")),
        _ => false,
    }
}

/// Busy, locked, full, read-only, I/O and a closed pool are UNAVAILABLE; the rest INTERNAL.
pub fn map_error(e: sqlx::Error) -> StoreError {
    let unavailable = match &e {
        sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed => true,
        sqlx::Error::WorkerCrashed => true,
        other => primary_code(other).is_some_and(|c| UNAVAILABLE.contains(&c)),
    };
    if unavailable {
        StoreError::Unavailable(format!("sqlite: {e}"))
    } else {
        StoreError::Internal(format!("sqlite: {e}"))
    }
}

/// A store error as a port's.
pub(crate) fn port(e: StoreError) -> PortError {
    match e {
        StoreError::Unavailable(m) | StoreError::Unknown(m) => PortError::Unavailable(m),
        other => PortError::Internal(other.to_string()),
    }
}
