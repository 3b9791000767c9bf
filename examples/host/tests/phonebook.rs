//! The host's projection, property-tested with the published testkit only: whatever several
//! users do to several registrations each, through the real command service on the host's
//! store, the phone book read from the feed lists exactly the live registrations, verified
//! exactly when the reference model says so.

use std::sync::Arc;

use otp_sms_core::ManualClock;
use otp_sms_example_host::{CountingStore, PhoneBook};
use otp_sms_testkit::driver::ServiceDriver;
use otp_sms_testkit::scenario::{FleetModel, Life};
use otp_sms_testkit::strategies::fleet;
use proptest::prelude::*;

proptest! {
    #[test]
    fn the_phone_book_follows_the_model(steps in fleet(3, 3, 50)) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let clock = Arc::new(ManualClock::new("2026-01-01T00:00:00Z".parse().unwrap()));
            let store = CountingStore::new(otp_sms_memory::MemoryStore::with_clock(clock.clone()));
            let mut driver = ServiceDriver::new(Arc::new(store), clock, 3);
            let mut model = FleetModel::new(driver.code_policy());
            for aimed in steps {
                model.step(aimed, driver.now());
                driver.run(aimed).await;
            }
            let mut book = PhoneBook::default();
            book.catch_up(driver.store().as_ref()).await.unwrap();
            let mut live = 0;
            for ((user, slot), registration) in model.slots() {
                let listed = driver
                    .registration(user, slot)
                    .and_then(|id| book.users.get(&format!("user-{user}"))?.get(id.as_str()));
                match registration.life() {
                    Life::Unverified | Life::Verified => {
                        live += 1;
                        let entry = listed.expect("a live registration is listed");
                        prop_assert_eq!(entry.verified, registration.life() == Life::Verified);
                    }
                    Life::Absent | Life::Removed => prop_assert!(listed.is_none()),
                }
            }
            let listed: usize = book.users.values().map(|phones| phones.len()).sum();
            prop_assert_eq!(listed, live);
            Ok(())
        })?;
    }
}
