//! The text every sender sends: the host's templates filled in for one SMS.

use otp_sms_core::message::{MessageTemplates, MessageText};
use otp_sms_core::Sms;

/// The text of `sms`: in the user's language, with the minutes the code has left.
pub fn render(templates: &MessageTemplates, sms: &Sms) -> MessageText {
    let left = (sms.expires_at - chrono::Utc::now()).num_seconds().max(0) as u64;
    let minutes = left.div_ceil(60).max(1);
    templates.render_for(
        sms.purpose,
        sms.locale.as_deref(),
        sms.code.expose(),
        minutes,
    )
}
