//! Spans only where something can record them.

use std::future::Future;

use futures_util::future::Either;
use tracing::instrument::Instrumented;
use tracing::{Instrument as _, Span};

/// `future` inside the span `make()` builds, or `future` alone when the process has never had
/// a tracing subscriber.
///
/// Without one, tracing's `log` feature (which sqlx and axum turn on in most builds) has every
/// span format its fields, entries and exits for the `log` crate, at TRACE under the
/// `tracing::span` targets: about a tenth of an in-process verify's instructions (issue 26,
/// measured with callgrind), for lines no host reads; and even a disabled span is entered and
/// left at every poll. Once a subscriber is set, global or scoped, spans are made as before
/// and its filter decides which are kept (decision 86).
#[inline]
pub(super) fn traced<F: Future>(
    future: F,
    make: impl FnOnce() -> Span,
) -> Either<Instrumented<F>, F> {
    if tracing::dispatcher::has_been_set() {
        Either::Left(future.instrument(make()))
    } else {
        Either::Right(future)
    }
}
