//! Listing a user's phones: from the service's [`PhoneList`], caught up with the feed by a
//! subscription before each list, not by replaying the user's streams per call.

use std::sync::Arc;

use futures_util::lock::Mutex;

use super::{parse_org_ref, CommandService, Need};
use crate::api::UserRequest;
use crate::checkpoint::MemoryCheckpoints;
use crate::error::Error;
use crate::event::Event;
use crate::ids::UserId;
use crate::phones::{PhoneList, PhoneSummary};
use crate::ports::USER_WRITE;
use crate::store::EventStore;
use crate::subscription::Subscription;

/// The service's list of phones and the subscription that keeps it caught up. The list lives
/// in memory, so its checkpoint does too: a new process rebuilds it from the feed's start.
pub(super) struct PhoneIndex {
    list: Mutex<PhoneList>,
    subscription: Subscription<Event>,
}

impl PhoneIndex {
    pub(super) fn new(store: Arc<dyn EventStore<Event>>) -> Self {
        Self {
            list: Mutex::new(PhoneList::new()),
            subscription: Subscription::new("phones", store, Arc::new(MemoryCheckpoints::new())),
        }
    }
}

impl CommandService {
    /// The user's live OTP SMS registrations, oldest first: id, phone, verified or not, when
    /// added, verified and last used to sign in. The number is masked but for its country
    /// code and last two digits unless the caller holds `user.write` in the user's
    /// organization.
    ///
    /// Checks: ids (INVALID_ARGUMENT), the user (NOT_FOUND), the caller's right (the user or
    /// `user.write`: PERMISSION_DENIED); an unreachable store is UNAVAILABLE.
    pub async fn list_phones(
        &self,
        caller: &crate::caller::Caller,
        req: UserRequest,
    ) -> Result<Vec<PhoneSummary>, Error> {
        let user_id = UserId::parse("id", req.user_id)?;
        let organization = parse_org_ref(req.organization)?;
        let user = self
            .authorize(caller, &user_id, organization, Need::Manage)
            .await?;
        // Another caller than the user passed `authorize` by holding `user.write`: only the
        // user's own call asks the authorizer again.
        let full = caller.principal.as_str() != user.id.as_str()
            || self
                .authorizer
                .has_permission(
                    &caller.instance,
                    &caller.principal,
                    &user.organization,
                    USER_WRITE,
                )
                .await?;
        // One catch-up at a time: the list is read after the feed's last event was applied.
        let mut list = self.phones.list.lock().await;
        self.phones.subscription.catch_up(&mut *list).await?;
        let phones = list.of(&caller.instance, &user.id);
        Ok(if full {
            phones
        } else {
            phones.into_iter().map(PhoneSummary::masked).collect()
        })
    }
}
