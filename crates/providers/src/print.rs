//! A development sender that prints each SMS instead of sending it.

use std::sync::Arc;

use async_trait::async_trait;
use otp_sms_core::message::MessageTemplates;
use otp_sms_core::{PortError, Sms, SmsSender};

use crate::text::render;

/// Prints each SMS on standard output. Development only: the printed text is the "SMS".
#[derive(Debug)]
pub struct PrintSender {
    templates: Arc<MessageTemplates>,
}

impl PrintSender {
    /// A sender that prints the text `templates` make.
    pub fn new(templates: Arc<MessageTemplates>) -> Self {
        Self { templates }
    }
}

#[async_trait]
impl SmsSender for PrintSender {
    async fn send(&self, sms: &Sms) -> Result<(), PortError> {
        let text = render(&self.templates, sms);
        println!(
            "[dev sms] to {} (otp_sms_id {}, {} SMS, {:?}):\n{}",
            sms.phone.as_e164(),
            sms.registration,
            text.segments,
            text.encoding,
            text.body
        );
        Ok(())
    }
}
