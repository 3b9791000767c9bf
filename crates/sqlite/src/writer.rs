//! The one writer: every write of the process goes through one connection, and the writes
//! that wait together commit in one transaction (one flush of the log for all of them).
//!
//! SQLite takes one writer at a time per file, so several writing connections would only wait
//! for each other (in the busy handler's sleeps). A write of several statements runs inside a
//! savepoint of the batch's transaction, so that one that fails or is refused rolls back
//! alone; a write that is one statement (or whose only changes before its decision are
//! harmless, such as removing lapsed entries) runs without one, as SQLite undoes a failed
//! statement by itself. Every write is answered only after the batch's commit, so nobody is
//! told "done" before it is durable. The transaction starts with `BEGIN IMMEDIATE`, which
//! takes the file's write lock: writers of other processes on the same file wait for it (up
//! to the busy time-out), so a check and the write it guards (a version, a budget) are exact
//! across processes.

use std::time::Duration;

use chrono::{DateTime, Utc};
use futures_util::future::BoxFuture;
use otp_sms_core::StoreError;
use sqlx::sqlite::SqliteConnection;
use tokio::sync::{mpsc, oneshot};

use crate::error::map_error;
use crate::options::Durability;

/// At most this many writes commit together.
const MAX_BATCH: usize = 256;

/// What a write decided: keep its changes, or roll them back (a refusal that still answers).
pub(crate) enum Outcome<T> {
    /// Commit its changes.
    Keep(T),
    /// Roll its changes back (those of a write in a savepoint; a write without one has none
    /// that matter), and answer this.
    Discard(T),
}

/// Whether a write needs a savepoint of its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Isolation {
    /// Several statements that must roll back together on a refusal or an error.
    Savepoint,
    /// One statement, or statements whose changes may stay whatever it decides.
    Statement,
}

/// Whether a write's answer waits for the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Flush {
    /// As the database's durability says (the default).
    Durable,
    /// Never: a power cut may forget it, as PostgreSQL's budget takes with
    /// `synchronous_commit = off` (a forgotten budget take errs toward sending a few more). It
    /// commits before the durable writes that wait with it, so their flush carries it too.
    Lazy,
}

/// A write's body: runs on the writer's connection at `now`.
pub(crate) type Body<T> = Box<
    dyn for<'c> FnOnce(
            &'c mut SqliteConnection,
            DateTime<Utc>,
        ) -> BoxFuture<'c, Result<Outcome<T>, StoreError>>
        + Send,
>;

/// How a write is answered once its batch is settled (committed, or not).
type Answer = Box<dyn FnOnce(Result<(), StoreError>) + Send>;

/// What running a write came to: keep its changes, an error that ends the batch, its answer.
type Ran = (bool, Option<StoreError>, Answer);

/// A write waiting for the writer.
trait Job: Send {
    /// Runs it; whether to keep its changes, the error that ends the batch if one did, and
    /// how to answer once the batch is settled.
    fn run<'c>(
        self: Box<Self>,
        conn: &'c mut SqliteConnection,
        now: DateTime<Utc>,
    ) -> BoxFuture<'c, Ran>;
    /// Answers without running: the batch could not start.
    fn fail(self: Box<Self>, error: StoreError);
    /// Whether it runs in a savepoint.
    fn isolation(&self) -> Isolation;
    /// Whether it may commit without waiting for the disk.
    fn lazy(&self) -> bool;
}

struct Task<T> {
    body: Body<T>,
    isolation: Isolation,
    flush: Flush,
    reply: oneshot::Sender<Result<T, StoreError>>,
}

impl<T: Send + 'static> Job for Task<T> {
    fn run<'c>(
        self: Box<Self>,
        conn: &'c mut SqliteConnection,
        now: DateTime<Utc>,
    ) -> BoxFuture<'c, Ran> {
        let Task { body, reply, .. } = *self;
        Box::pin(async move {
            match body(conn, now).await {
                Ok(Outcome::Keep(value)) => (
                    true,
                    None,
                    Box::new(move |settled: Result<(), StoreError>| {
                        let _ = reply.send(settled.map(|()| value));
                    }) as Answer,
                ),
                Ok(Outcome::Discard(value)) => (
                    false,
                    None,
                    Box::new(move |settled: Result<(), StoreError>| {
                        // Nothing of it is written either way; a failed commit is still the
                        // answer, so that a refusal is never reported from a broken batch.
                        let _ = reply.send(settled.map(|()| value));
                    }) as Answer,
                ),
                Err(e) => (
                    false,
                    // Busy, full, I/O: SQLite may have rolled the transaction back.
                    matches!(e, StoreError::Unavailable(_)).then(|| e.clone()),
                    Box::new(move |_: Result<(), StoreError>| {
                        let _ = reply.send(Err(e));
                    }) as Answer,
                ),
            }
        })
    }

    fn fail(self: Box<Self>, error: StoreError) {
        let _ = self.reply.send(Err(error));
    }

    fn isolation(&self) -> Isolation {
        self.isolation
    }

    fn lazy(&self) -> bool {
        self.flush == Flush::Lazy
    }
}

/// The writer's queue.
#[derive(Debug, Clone)]
pub(crate) struct Writer {
    queue: mpsc::UnboundedSender<Box<dyn Job>>,
    timeout: Duration,
}

impl std::fmt::Debug for dyn Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Job")
    }
}

impl Writer {
    /// Starts the writer on `conn` (a task of the current runtime). Calls wait at most
    /// `timeout` for their answer.
    pub(crate) fn start(conn: SqliteConnection, timeout: Duration, durability: Durability) -> Self {
        let (queue, jobs) = mpsc::unbounded_channel();
        tokio::spawn(run(conn, jobs, durability));
        Self { queue, timeout }
    }

    /// Runs `body` in the next batch; its answer once the batch committed (or failed). A
    /// caller that waited past the time-out, or whose writer is gone, gets
    /// [`StoreError::Unknown`]: the write may still be committed.
    pub(crate) async fn write<T: Send + 'static>(
        &self,
        isolation: Isolation,
        body: Body<T>,
    ) -> Result<T, StoreError> {
        self.write_flushed(isolation, Flush::Durable, body).await
    }

    /// [`Writer::write`], with its answer waiting for the disk or not.
    pub(crate) async fn write_flushed<T: Send + 'static>(
        &self,
        isolation: Isolation,
        flush: Flush,
        body: Body<T>,
    ) -> Result<T, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.queue
            .send(Box::new(Task {
                body,
                isolation,
                flush,
                reply,
            }))
            .map_err(|_| StoreError::Unavailable("sqlite: the writer has stopped".into()))?;
        match tokio::time::timeout(self.timeout, answer).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(unknown("the writer stopped during the write")),
            Err(_) => Err(unknown("no answer from the writer in time")),
        }
    }
}

fn unknown(why: &str) -> StoreError {
    StoreError::Unknown(format!("sqlite: {why}"))
}

async fn exec(conn: &mut SqliteConnection, sql: &str) -> Result<(), StoreError> {
    sqlx::query(sql)
        .execute(conn)
        .await
        .map(|_| ())
        .map_err(map_error)
}

/// The writer's loop: what waits, in at most two transactions: the writes that may commit
/// without waiting for the disk (budget takes), then the others.
async fn run(
    mut conn: SqliteConnection,
    mut jobs: mpsc::UnboundedReceiver<Box<dyn Job>>,
    durability: Durability,
) {
    let mut batch: Vec<Box<dyn Job>> = Vec::with_capacity(MAX_BATCH);
    // What the connection's `synchronous` is now (the file is opened with the durability).
    let mut flushing = durability == Durability::Full;
    while let Some(first) = jobs.recv().await {
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match jobs.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        let (lazy, durable): (Vec<_>, Vec<_>) = batch.drain(..).partition(|job| job.lazy());
        for (group, flush) in [(lazy, false), (durable, durability == Durability::Full)] {
            if group.is_empty() {
                continue;
            }
            if flush != flushing {
                let pragma = if flush {
                    "PRAGMA synchronous = FULL"
                } else {
                    "PRAGMA synchronous = NORMAL"
                };
                if let Err(e) = exec(&mut conn, pragma).await {
                    for job in group {
                        job.fail(e.clone());
                    }
                    continue;
                }
                flushing = flush;
            }
            transaction(&mut conn, group).await;
        }
    }
}

/// `jobs` in one transaction, each answered once it is settled.
async fn transaction(conn: &mut SqliteConnection, jobs: Vec<Box<dyn Job>>) {
    if let Err(e) = exec(conn, "BEGIN IMMEDIATE").await {
        for job in jobs {
            job.fail(e.clone());
        }
        return;
    }
    let now = Utc::now();
    let mut answers = Vec::with_capacity(jobs.len());
    let mut broken: Option<StoreError> = None;
    for job in jobs {
        if let Some(e) = &broken {
            job.fail(e.clone());
            continue;
        }
        let isolated = job.isolation() == Isolation::Savepoint;
        if isolated {
            if let Err(e) = exec(conn, "SAVEPOINT job").await {
                broken = Some(e.clone());
                job.fail(e);
                continue;
            }
        }
        let (keep, fatal, answer) = job.run(conn, now).await;
        let closed = match (isolated, keep) {
            (true, true) => exec(conn, "RELEASE job").await,
            (true, false) => match exec(conn, "ROLLBACK TO job").await {
                Ok(()) => exec(conn, "RELEASE job").await,
                Err(e) => Err(e),
            },
            // A failed statement is undone by SQLite itself.
            (false, _) => Ok(()),
        };
        // A full disk, an I/O error or a lost lock may have rolled the whole transaction
        // back: the batch ends here.
        let closed = match fatal {
            Some(e) => Err(e),
            None => closed,
        };
        if let Err(e) = closed {
            broken = Some(e);
        }
        answers.push(answer);
    }
    let settled = match broken {
        Some(e) => Err(e),
        // A commit that failed may, on an I/O error, have reached the disk in part: whoever
        // waits for it must find out (an append reads its stream for its command).
        None => exec(conn, "COMMIT")
            .await
            .map_err(|e| StoreError::Unknown(e.to_string())),
    };
    if settled.is_err() {
        // Nothing of the batch is written: SQLite rolls a failed commit back, or we do.
        let _ = exec(conn, "ROLLBACK").await;
    }
    for answer in answers {
        answer(settled.clone());
    }
}
