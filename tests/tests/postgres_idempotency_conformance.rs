//! The PostgreSQL idempotency store passes the shared idempotency conformance suite, each case
//! in its own schema.

use std::sync::Arc;
use std::time::Duration;

use otp_sms_core::{Claim, Event, IdempotencyRecord, IdempotencyScope, PortError};
use otp_sms_postgres::{PgIdempotency, PgStore};
use otp_sms_testkit::idempotency::IdempotencyStoreFactory;
use otp_sms_tests::pg;

/// The records and the event store whose migration made their table.
struct Records {
    records: PgIdempotency,
    store: PgStore<Event>,
}

#[async_trait::async_trait]
impl otp_sms_core::IdempotencyStore for Records {
    async fn claim(
        &self,
        scope: &IdempotencyScope,
        record: &IdempotencyRecord,
        keep: Duration,
    ) -> Result<Claim, PortError> {
        self.records.claim(scope, record, keep).await
    }
}

struct PgFactory;

#[async_trait::async_trait]
impl IdempotencyStoreFactory for PgFactory {
    type Store = Records;

    async fn create(&self) -> Self::Store {
        let store = pg::fresh_store::<Event>().await;
        let records = PgIdempotency::new(store.pool().clone(), store.schema()).expect("schema");
        Records { records, store }
    }

    async fn dispose(&self, records: Arc<Self::Store>) {
        pg::drop_store(&records.store).await;
    }
}

otp_sms_testkit::idempotency_conformance_tests!(PgFactory);
