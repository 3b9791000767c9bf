//! The users of one instance, by id. Every look-up of a call goes through here, so ids of up
//! to 32 bytes (nearly all) are keys held inline in the table: a look-up hashes and compares
//! bytes in the table itself instead of following each candidate's pointer to its text (a
//! cache miss that cost a tenth of a verify in the in-process benchmark). Longer ids go to a
//! second table.

use std::collections::HashMap;

use otp_sms_core::UserId;

use crate::User;

/// An id of at most [`InlineKey::MAX`] bytes, inline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct InlineKey {
    len: u8,
    bytes: [u8; InlineKey::MAX],
}

impl InlineKey {
    const MAX: usize = 32;

    fn new(id: &str) -> Option<Self> {
        let mut bytes = [0u8; Self::MAX];
        bytes.get_mut(..id.len())?.copy_from_slice(id.as_bytes());
        Some(Self {
            len: id.len() as u8,
            bytes,
        })
    }
}

/// Users by id: short ids inline, longer ones by their text.
#[derive(Debug, Default)]
pub(crate) struct Users {
    short: HashMap<InlineKey, User, foldhash::fast::RandomState>,
    long: HashMap<UserId, User>,
}

impl Users {
    pub(crate) fn get(&self, id: &UserId) -> Option<&User> {
        match InlineKey::new(id.as_str()) {
            Some(key) => self.short.get(&key),
            None => self.long.get(id),
        }
    }

    pub(crate) fn get_mut(&mut self, id: &UserId) -> Option<&mut User> {
        match InlineKey::new(id.as_str()) {
            Some(key) => self.short.get_mut(&key),
            None => self.long.get_mut(id),
        }
    }

    pub(crate) fn insert(&mut self, id: UserId, user: User) {
        match InlineKey::new(id.as_str()) {
            Some(key) => {
                self.short.insert(key, user);
            }
            None => {
                self.long.insert(id, user);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(org: &str) -> User {
        User {
            organization: org.parse().unwrap(),
            language: None,
        }
    }

    #[test]
    fn short_and_long_ids_are_found_and_never_confused() {
        let mut users = Users::default();
        let short: UserId = "alice".parse().unwrap();
        let edge: UserId = "x".repeat(32).parse().unwrap();
        let long: UserId = "x".repeat(33).parse().unwrap();
        users.insert(short.clone(), user("a"));
        users.insert(edge.clone(), user("b"));
        users.insert(long.clone(), user("c"));
        assert_eq!(users.get(&short).unwrap().organization.as_str(), "a");
        assert_eq!(users.get(&edge).unwrap().organization.as_str(), "b");
        assert_eq!(users.get(&long).unwrap().organization.as_str(), "c");
        // A prefix of a stored id is another id (the length is part of the key).
        assert!(users.get(&"alic".parse().unwrap()).is_none());
        assert!(users.get(&"x".repeat(31).parse().unwrap()).is_none());
        assert!(users.get(&"x".repeat(34).parse().unwrap()).is_none());
    }
}
