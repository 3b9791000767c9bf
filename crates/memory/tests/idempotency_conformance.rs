//! The in-process idempotency store (`otp_sms_core::MemoryIdempotency`) passes the shared
//! idempotency conformance suite.

use otp_sms_core::MemoryIdempotency;
use otp_sms_testkit::idempotency::IdempotencyStoreFactory;

struct MemoryFactory;

#[async_trait::async_trait]
impl IdempotencyStoreFactory for MemoryFactory {
    type Store = MemoryIdempotency;
    async fn create(&self) -> Self::Store {
        MemoryIdempotency::new()
    }
}

otp_sms_testkit::idempotency_conformance_tests!(MemoryFactory);
