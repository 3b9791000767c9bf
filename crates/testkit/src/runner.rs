//! How the conformance macros run a case: on a Tokio runtime of its own, on a thread of its
//! own, watched from the test's thread, so that a store that hangs (a lock never released, a
//! lease ignored so a consumer loops forever, a spin that never yields to the runtime) fails
//! its case with a message naming it instead of stalling the suite.

use std::future::Future;
use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::Duration;

/// How long a conformance case may take, its store's creation and disposal included, unless
/// its factory says otherwise. The slowest case takes a few seconds on PostgreSQL on a loaded
/// machine.
pub const DEFAULT_CASE_TIMEOUT: Duration = Duration::from_secs(60);

/// Runs `case` (which makes its store, runs the case and disposes of the store) on a
/// four-worker multi-thread runtime, and fails with a message naming `suite` and `name` when it
/// has not finished within `limit`. A panic inside the case (a failed assertion) is raised
/// again here, unchanged.
///
/// On a time-out the case's thread is left behind: a spinning store cannot be stopped from
/// outside, and the test process ends it when it exits.
///
/// ```should_panic
/// use std::time::Duration;
/// otp_sms_testkit::runner::run_case("example", "hangs", Duration::from_millis(100), || async {
///     std::future::pending::<()>().await
/// });
/// ```
pub fn run_case<F, Fut>(suite: &'static str, name: &'static str, limit: Duration, case: F)
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = ()>,
{
    let (finished, outcome) = mpsc::channel();
    let thread = std::thread::Builder::new()
        .name(format!("{suite}::{name}"))
        .spawn(move || {
            let result = catch_unwind(AssertUnwindSafe(|| {
                tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(4)
                    .enable_all()
                    .build()
                    .expect("a Tokio runtime for the case")
                    .block_on(case())
            }));
            // The receiver is gone only when the case already timed out.
            let _ = finished.send(result);
        })
        .expect("a thread for the case");
    match outcome.recv_timeout(limit) {
        Ok(Ok(())) => {
            let _ = thread.join();
        }
        Ok(Err(panic)) => resume_unwind(panic),
        Err(RecvTimeoutError::Disconnected) => {
            // The thread ended without a word: it panicked outside the case.
            if let Err(panic) = thread.join() {
                resume_unwind(panic);
            }
        }
        Err(RecvTimeoutError::Timeout) => panic!(
            "{suite} conformance case `{name}` did not finish within {limit:?}: the store under \
             test hangs or spins (a lock never released, a lease ignored, a wait that never \
             ends)"
        ),
    }
}
