//! What one run of the command loop is about: a command, who gives it, on which registration,
//! under which command id; and the commands that committed events call for afterwards.

use crate::aggregate::Command;
use crate::caller::Caller;
use crate::code::VerificationCode;
use crate::ids::RegistrationId;
use crate::ports::UserRecord;
use crate::store::CommandId;

/// One command for the loop: every attempt of its append carries the same `id`, so that a
/// retried or replayed command is found in the history instead of being written twice.
#[derive(Debug, Clone, Copy)]
pub(super) struct Attempt<'a> {
    pub(super) id: CommandId,
    pub(super) caller: &'a Caller,
    pub(super) user: &'a UserRecord,
    pub(super) registration: &'a RegistrationId,
    pub(super) command: &'a Command,
    /// The code drawn for this command, when it issues one to be sent (the outbox seals it).
    pub(super) fresh: Option<&'a VerificationCode>,
}

impl<'a> Attempt<'a> {
    /// `command` by `caller` for `user` on `registration`, under a fresh command id.
    pub(super) fn new(
        caller: &'a Caller,
        user: &'a UserRecord,
        registration: &'a RegistrationId,
        command: &'a Command,
    ) -> Self {
        Self::under(CommandId::generate(), caller, user, registration, command)
    }

    /// The same under `id` (the one the call's idempotency step chose): no id is drawn.
    pub(super) fn under(
        id: CommandId,
        caller: &'a Caller,
        user: &'a UserRecord,
        registration: &'a RegistrationId,
        command: &'a Command,
    ) -> Self {
        Self {
            id,
            caller,
            user,
            registration,
            command,
            fresh: None,
        }
    }

    /// With the code drawn for it.
    pub(super) fn with_code(mut self, fresh: Option<&'a VerificationCode>) -> Self {
        self.fresh = fresh;
        self
    }
}

/// A command that a committed event calls for (a registration to lock when a wrong code
/// reaches the user's cap): run by the loop's caller after the command that called for it
/// ends, never from inside that command's loop.
#[derive(Debug)]
pub(super) struct FollowUp {
    pub(super) caller: Caller,
    pub(super) user: UserRecord,
    pub(super) registration: RegistrationId,
    pub(super) command: Command,
}

impl FollowUp {
    /// The follow-up as an attempt of its own.
    pub(super) fn attempt(&self) -> Attempt<'_> {
        Attempt::new(&self.caller, &self.user, &self.registration, &self.command)
    }
}
