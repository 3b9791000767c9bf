//! The one writer: every write of the process goes through one connection, and the writes
//! that wait together commit in one transaction (one flush of the log for all of them).
//!
//! SQLite takes one writer at a time per file, so several writing connections would only wait
//! for each other (in the busy handler's sleeps). Each write runs inside a savepoint of the
//! batch's transaction: one that fails or is refused rolls back alone, and is answered only
//! after the batch's commit, so nobody is told "done" before it is durable. The transaction
//! starts with `BEGIN IMMEDIATE`, which takes the file's write lock: writers of other
//! processes on the same file wait for it (up to the busy time-out), so a check and the write
//! it guards (a version, a budget) are exact across processes.

use std::time::Duration;

use chrono::{DateTime, Utc};
use futures_util::future::BoxFuture;
use otp_sms_core::StoreError;
use sqlx::sqlite::SqliteConnection;
use tokio::sync::{mpsc, oneshot};

use crate::error::map_error;

/// At most this many writes commit together.
const MAX_BATCH: usize = 256;

/// What a write decided: keep its changes, or roll them back (a refusal that still answers).
pub(crate) enum Outcome<T> {
    /// Commit its changes.
    Keep(T),
    /// Roll its changes back, and answer this.
    Discard(T),
}

/// A write's body: runs on the writer's connection, inside its own savepoint, at `now`.
pub(crate) type Body<T> = Box<
    dyn for<'c> FnOnce(
            &'c mut SqliteConnection,
            DateTime<Utc>,
        ) -> BoxFuture<'c, Result<Outcome<T>, StoreError>>
        + Send,
>;

/// How a write is answered once its batch is settled (committed, or not).
type Answer = Box<dyn FnOnce(Result<(), StoreError>) + Send>;

/// A write waiting for the writer.
trait Job: Send {
    /// Runs it; whether to keep its changes, and how to answer once the batch is settled.
    fn run<'c>(
        self: Box<Self>,
        conn: &'c mut SqliteConnection,
        now: DateTime<Utc>,
    ) -> BoxFuture<'c, (bool, Answer)>;
    /// Answers without running: the batch could not start.
    fn fail(self: Box<Self>, error: StoreError);
}

struct Task<T> {
    body: Body<T>,
    reply: oneshot::Sender<Result<T, StoreError>>,
}

impl<T: Send + 'static> Job for Task<T> {
    fn run<'c>(
        self: Box<Self>,
        conn: &'c mut SqliteConnection,
        now: DateTime<Utc>,
    ) -> BoxFuture<'c, (bool, Answer)> {
        let Task { body, reply } = *self;
        Box::pin(async move {
            match body(conn, now).await {
                Ok(Outcome::Keep(value)) => (
                    true,
                    Box::new(move |settled: Result<(), StoreError>| {
                        let _ = reply.send(settled.map(|()| value));
                    }) as Answer,
                ),
                Ok(Outcome::Discard(value)) => (
                    false,
                    Box::new(move |settled: Result<(), StoreError>| {
                        // Nothing of it is written either way; a failed commit is still the
                        // answer, so that a refusal is never reported from a broken batch.
                        let _ = reply.send(settled.map(|()| value));
                    }) as Answer,
                ),
                Err(e) => (
                    false,
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
    pub(crate) fn start(conn: SqliteConnection, timeout: Duration) -> Self {
        let (queue, jobs) = mpsc::unbounded_channel();
        tokio::spawn(run(conn, jobs));
        Self { queue, timeout }
    }

    /// Runs `body` in the next batch; its answer once the batch committed (or failed). A
    /// caller that waited past the time-out, or whose writer is gone, gets
    /// [`StoreError::Unknown`]: the write may still be committed.
    pub(crate) async fn write<T: Send + 'static>(&self, body: Body<T>) -> Result<T, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.queue
            .send(Box::new(Task { body, reply }))
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

/// The writer's loop: a batch of what waits, in one transaction.
async fn run(mut conn: SqliteConnection, mut jobs: mpsc::UnboundedReceiver<Box<dyn Job>>) {
    let mut batch: Vec<Box<dyn Job>> = Vec::with_capacity(MAX_BATCH);
    while let Some(first) = jobs.recv().await {
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match jobs.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        if let Err(e) = exec(&mut conn, "BEGIN IMMEDIATE").await {
            for job in batch.drain(..) {
                job.fail(e.clone());
            }
            continue;
        }
        let now = Utc::now();
        let mut answers = Vec::with_capacity(batch.len());
        let mut broken: Option<StoreError> = None;
        for job in batch.drain(..) {
            if let Some(e) = &broken {
                job.fail(e.clone());
                continue;
            }
            if let Err(e) = exec(&mut conn, "SAVEPOINT job").await {
                broken = Some(e.clone());
                job.fail(e);
                continue;
            }
            let (keep, answer) = job.run(&mut conn, now).await;
            let closed = if keep {
                exec(&mut conn, "RELEASE job").await
            } else {
                match exec(&mut conn, "ROLLBACK TO job").await {
                    Ok(()) => exec(&mut conn, "RELEASE job").await,
                    Err(e) => Err(e),
                }
            };
            if let Err(e) = closed {
                broken = Some(e);
            }
            answers.push(answer);
        }
        let settled = match broken {
            Some(e) => Err(e),
            // A commit that failed may, on an I/O error, have reached the disk in part:
            // whoever waits for it must find out (an append reads its stream for its command).
            None => exec(&mut conn, "COMMIT")
                .await
                .map_err(|e| StoreError::Unknown(e.to_string())),
        };
        if settled.is_err() {
            // Nothing of the batch is written: SQLite rolls a failed commit back, or we do.
            let _ = exec(&mut conn, "ROLLBACK").await;
        }
        for answer in answers {
            answer(settled.clone());
        }
    }
}
