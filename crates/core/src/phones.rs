//! A user's phones, as a read model of the event feed: every live registration by user, with
//! when it was added, verified and last used to sign in. The command service keeps one in
//! memory, caught up by a subscription before each list (read-your-writes on one process), so
//! that listing does not replay every stream of the user.

use std::collections::HashMap;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::event::{Added, ChallengeSucceeded, Event, AGGREGATE_TYPE};
use crate::ids::{InstanceId, RegistrationId, UserId};
use crate::phone::{mask_number, Phone};
use crate::ports::PortError;
use crate::store::RecordedEvent;
use crate::subscription::Projection;

/// One registration as a user's list shows it; follows upstream's
/// `zitadel.resources.user.v3alpha.OTPSMS` (`otp_sms_id`, `phone`, `is_verified`) and adds
/// the times.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct PhoneSummary {
    /// The registration (`otp_sms_id`).
    pub id: RegistrationId,
    /// The number in E.164, or masked (`+41*******67`) for a caller without `user.write`.
    pub phone: String,
    /// Whether the phone was verified.
    pub is_verified: bool,
    /// When it was added.
    pub created: DateTime<Utc>,
    /// When it was verified.
    pub verified_at: Option<DateTime<Utc>>,
    /// When a sign-in with it last succeeded.
    pub last_sign_in: Option<DateTime<Utc>>,
}

impl PhoneSummary {
    /// The same summary with the number masked but for its country code and last digits.
    pub fn masked(mut self) -> Self {
        self.phone = mask_number(&self.phone);
        self
    }
}

#[derive(Debug, Clone)]
struct Entry {
    id: RegistrationId,
    phone: Phone,
    created: DateTime<Utc>,
    verified_at: Option<DateTime<Utc>>,
    last_sign_in: Option<DateTime<Utc>>,
}

/// Every live registration of every user, by instance and user: the read model behind
/// [`crate::CommandService::list_phones`], and a [`Projection`] a host may keep itself.
#[derive(Debug, Default)]
pub struct PhoneList {
    users: HashMap<(InstanceId, UserId), Vec<Entry>>,
    owners: HashMap<(InstanceId, RegistrationId), UserId>,
}

impl PhoneList {
    /// An empty list.
    pub fn new() -> Self {
        Self::default()
    }

    /// The live registrations of `user` in `instance`, oldest first, numbers in full.
    pub fn of(&self, instance: &InstanceId, user: &UserId) -> Vec<PhoneSummary> {
        self.users
            .get(&(instance.clone(), user.clone()))
            .map(|entries| {
                entries
                    .iter()
                    .map(|e| PhoneSummary {
                        id: e.id.clone(),
                        phone: e.phone.as_e164().to_owned(),
                        is_verified: e.verified_at.is_some(),
                        created: e.created,
                        verified_at: e.verified_at,
                        last_sign_in: e.last_sign_in,
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    fn entry(&mut self, instance: &InstanceId, id: &RegistrationId) -> Option<&mut Entry> {
        let user = self.owners.get(&(instance.clone(), id.clone()))?;
        self.users
            .get_mut(&(instance.clone(), user.clone()))?
            .iter_mut()
            .find(|e| e.id == *id)
    }
}

#[async_trait]
impl Projection<Event> for PhoneList {
    async fn apply(&mut self, recorded: &RecordedEvent<Event>) -> Result<(), PortError> {
        if recorded.stream.aggregate_type != AGGREGATE_TYPE {
            return Ok(());
        }
        let instance = &recorded.stream.instance;
        let Ok(id) = RegistrationId::parse("otp_sms_id", &*recorded.stream.aggregate_id) else {
            return Ok(());
        };
        match &recorded.event {
            Event::Added(Added { user, phone, .. }) => {
                self.owners
                    .insert((instance.clone(), id.clone()), user.clone());
                self.users
                    .entry((instance.clone(), user.clone()))
                    .or_default()
                    .push(Entry {
                        id,
                        phone: phone.clone(),
                        created: recorded.created_at,
                        verified_at: None,
                        last_sign_in: None,
                    });
            }
            Event::Verified(_) => {
                if let Some(entry) = self.entry(instance, &id) {
                    entry.verified_at = Some(recorded.created_at);
                }
            }
            Event::ChallengeSucceeded(ChallengeSucceeded { checked_at, .. }) => {
                if let Some(entry) = self.entry(instance, &id) {
                    entry.last_sign_in = Some(*checked_at);
                }
            }
            Event::Removed(_) => {
                if let Some(user) = self.owners.remove(&(instance.clone(), id.clone())) {
                    let key = (instance.clone(), user);
                    if let Some(entries) = self.users.get_mut(&key) {
                        entries.retain(|e| e.id != id);
                        if entries.is_empty() {
                            self.users.remove(&key);
                        }
                    }
                }
            }
            _ => {}
        }
        Ok(())
    }
}
