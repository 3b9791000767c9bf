//! The host's own store wrapper passes the library's conformance suite, over the memory store
//! and over PostgreSQL.

use otp_sms_core::EventStore;
use otp_sms_example_host::CountingStore;
use otp_sms_testkit::{async_trait, StoreFactory, TestEvent};

mod memory {
    use super::*;

    struct Counted;

    #[async_trait]
    impl StoreFactory for Counted {
        type Store = CountingStore<otp_sms_memory::MemoryStore<TestEvent>>;
        async fn create(&self) -> Self::Store {
            CountingStore::new(otp_sms_memory::MemoryStore::new())
        }
    }

    otp_sms_testkit::store_conformance_tests!(Counted);
}

mod postgres {
    use std::sync::Arc;

    use super::*;
    use otp_sms_postgres::PgStore;

    struct Counted;

    #[async_trait]
    impl StoreFactory for Counted {
        type Store = CountingStore<PgStore<TestEvent>>;
        async fn create(&self) -> Self::Store {
            CountingStore::new(otp_sms_postgres::testing::fresh_store().await)
        }
        async fn dispose(&self, store: Arc<Self::Store>) {
            otp_sms_postgres::testing::drop_store(store.inner()).await;
        }
    }

    otp_sms_testkit::store_conformance_tests!(Counted);
}

/// The wrapper counts what it exists to count.
#[test]
fn appends_are_counted() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let store = CountingStore::new(otp_sms_memory::MemoryStore::<TestEvent>::new());
        let append = |expected| {
            otp_sms_core::Append::new(
                otp_sms_core::StreamId::new("i".parse().unwrap(), "t", "s"),
                expected,
                vec![otp_sms_core::NewEvent {
                    event: TestEvent {
                        kind: "t.happened".into(),
                        body: serde_json::json!({}),
                    },
                    creator: "p".parse().unwrap(),
                    owner: "o".parse().unwrap(),
                }],
            )
        };
        store
            .append(append(otp_sms_core::ExpectedVersion::NoStream))
            .await
            .unwrap();
        // A refused append is not counted.
        let refused = store
            .append(append(otp_sms_core::ExpectedVersion::NoStream))
            .await;
        assert!(refused.is_err());
        assert_eq!(store.appends(), 1);
    });
}
