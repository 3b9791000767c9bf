//! Phone numbers, parsed and normalised to E.164.

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::error::Error;
use crate::ids::check_length;

mod numbering;

/// What kind of line a number is, by libphonenumber's metadata (its `PhoneNumberType`).
///
/// Abuse rules use it: premium-rate and similar numbers cost whoever sends to them, and
/// fixed lines cannot receive SMS.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum NumberType {
    /// A landline.
    FixedLine,
    /// A mobile phone.
    Mobile,
    /// The region's plan cannot tell fixed lines from mobiles (e.g. the US).
    FixedLineOrMobile,
    /// Free to the caller, paid by the receiver.
    TollFree,
    /// Paid by the caller above the normal rate; the receiver earns a share.
    PremiumRate,
    /// Cost shared between caller and receiver.
    SharedCost,
    /// Voice over IP.
    Voip,
    /// A personal number that forwards elsewhere.
    PersonalNumber,
    /// A pager.
    Pager,
    /// A universal access number (a company's number that routes elsewhere).
    Uan,
    /// A voicemail access number.
    Voicemail,
    /// None of the above (valid numbers are rarely this).
    Unknown,
}

impl NumberType {
    /// The type's name in messages and configuration, e.g. `premium-rate`.
    pub fn name(self) -> &'static str {
        match self {
            NumberType::FixedLine => "fixed-line",
            NumberType::Mobile => "mobile",
            NumberType::FixedLineOrMobile => "fixed-line-or-mobile",
            NumberType::TollFree => "toll-free",
            NumberType::PremiumRate => "premium-rate",
            NumberType::SharedCost => "shared-cost",
            NumberType::Voip => "voip",
            NumberType::PersonalNumber => "personal-number",
            NumberType::Pager => "pager",
            NumberType::Uan => "uan",
            NumberType::Voicemail => "voicemail",
            NumberType::Unknown => "unknown",
        }
    }
}

impl From<phonenumber::Type> for NumberType {
    fn from(t: phonenumber::Type) -> Self {
        use phonenumber::Type as T;
        match t {
            T::FixedLine => NumberType::FixedLine,
            T::Mobile => NumberType::Mobile,
            T::FixedLineOrMobile => NumberType::FixedLineOrMobile,
            T::TollFree => NumberType::TollFree,
            T::PremiumRate => NumberType::PremiumRate,
            T::SharedCost => NumberType::SharedCost,
            T::Voip => NumberType::Voip,
            T::PersonalNumber => NumberType::PersonalNumber,
            T::Pager => NumberType::Pager,
            T::Uan => NumberType::Uan,
            T::Voicemail => NumberType::Voicemail,
            _ => NumberType::Unknown,
        }
    }
}

/// The longest phone input accepted, in characters (the contract's bound on `phone.number`).
pub const MAX_PHONE_CHARS: usize = 20;

/// A valid phone number in E.164 form (`+41791234567`).
///
/// Input must be in international form (leading `+` and country code); formatting characters
/// such as spaces, dashes and brackets are accepted and dropped. `Debug` masks the middle digits
/// so that numbers (personal data) do not end up whole in logs.
#[derive(Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Phone(Arc<str>);

impl Phone {
    /// Parses caller input (1..=20 characters) into E.164.
    ///
    /// ```
    /// use otp_sms_core::Phone;
    /// let phone = Phone::parse("+41 79 123 45 67").unwrap();
    /// assert_eq!(phone.as_e164(), "+41791234567");
    /// assert!(Phone::parse("12345").is_err());
    /// ```
    pub fn parse(input: &str) -> Result<Self, Error> {
        const FIELD: &str = "phone.number";
        check_length(FIELD, input, MAX_PHONE_CHARS)?;
        let invalid = || Error::invalid(FIELD, "not a valid phone number");
        // Most numbers arrive as `+` and digits; those are split and checked without
        // phonenumber's parser and its shared regex cache (same answers, see `numbering`).
        if let Some((code, national)) = numbering::split_plain(input) {
            if let Some(valid) = numbering::is_valid(code, national) {
                return if valid {
                    Ok(Self(Arc::from(input)))
                } else {
                    Err(invalid())
                };
            }
        }
        let number = phonenumber::parse(None, input).map_err(|_| {
            Error::invalid(
                FIELD,
                "not a phone number in international form (+ and country code)",
            )
        })?;
        // E.164 is `+`, the calling code and the national number with its leading zeros;
        // written here because phonenumber's formatter looks up a national format (through
        // its shared regex cache) even for E.164, which ignores it.
        use std::fmt::Write as _;
        let mut e164 = String::with_capacity(MAX_PHONE_CHARS);
        let national = number.national();
        // Writing to a String cannot fail.
        let _ = write!(e164, "+{}", number.code().value());
        let national_start = e164.len();
        for _ in 0..national.zeros() {
            e164.push('0');
        }
        let _ = write!(e164, "{}", national.value());
        let valid = numbering::is_valid(number.code().value(), &e164[national_start..])
            .unwrap_or_else(|| phonenumber::is_valid(&number));
        if !valid {
            return Err(invalid());
        }
        Ok(Self(Arc::from(e164)))
    }

    /// Loads the numbering-plan metadata now (tens of milliseconds, once per process) instead
    /// of during the first [`Phone::parse`]. Hosts call it at start-up so that the first add
    /// is not slow; later calls return at once.
    ///
    /// ```
    /// otp_sms_core::Phone::load_metadata();
    /// assert!(otp_sms_core::Phone::parse("+41 79 123 45 67").is_ok());
    /// ```
    pub fn load_metadata() {
        let _: &phonenumber::metadata::Database = &phonenumber::metadata::DATABASE;
    }

    /// The number in E.164 form.
    pub fn as_e164(&self) -> &str {
        &self.0
    }

    /// What kind of line this is (mobile, fixed line, premium rate, …).
    ///
    /// ```
    /// use otp_sms_core::{NumberType, Phone};
    /// assert_eq!(Phone::parse("+41791234567").unwrap().number_type(), NumberType::Mobile);
    /// assert_eq!(Phone::parse("+19005550123").unwrap().number_type(), NumberType::PremiumRate);
    /// ```
    pub fn number_type(&self) -> NumberType {
        self.classify().0
    }

    /// The region (ISO 3166-1 alpha-2 country code, e.g. `CH`) the number belongs to; `None`
    /// for non-geographic numbers (`+800`, `+882`, …).
    ///
    /// ```
    /// use otp_sms_core::Phone;
    /// assert_eq!(Phone::parse("+41791234567").unwrap().region(), Some("CH"));
    /// assert_eq!(Phone::parse("+16502530000").unwrap().region(), Some("US"));
    /// ```
    pub fn region(&self) -> Option<&'static str> {
        self.classify().1
    }

    /// The number range: E.164 without its last three digits (`+41791234` for
    /// `+41791234567`). Pumping sprays sequential numbers of one range.
    pub fn range(&self) -> &str {
        let cut = self.0.len().saturating_sub(3).max(1);
        &self.0[..cut]
    }

    fn classify(&self) -> (NumberType, Option<&'static str>) {
        numbering::split_e164(&self.0)
            .and_then(|(code, national)| numbering::classify(code, national))
            .unwrap_or((NumberType::Unknown, None))
    }
}

impl fmt::Debug for Phone {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Phone({})", mask_number(&self.0))
    }
}

/// A phone number as `Debug` output and logs show it: the first three and the last two
/// characters, the rest `*`, whether or not the text is a valid number.
///
/// ```
/// assert_eq!(otp_sms_core::mask_number("+41791234567"), "+41*******67");
/// ```
pub fn mask_number(number: &str) -> String {
    let count = number.chars().count();
    number
        .chars()
        .enumerate()
        .map(|(i, c)| if i < 3 || i + 2 >= count { c } else { '*' })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalises_to_e164() {
        assert_eq!(
            Phone::parse("+41 (79) 123-45-67").unwrap().as_e164(),
            "+41791234567"
        );
        assert_eq!(
            Phone::parse("+1 650 253 0000").unwrap().as_e164(),
            "+16502530000"
        );
    }

    #[test]
    fn refuses_bad_input_naming_the_field() {
        for bad in [
            "",
            "0791234567",
            "+999",
            "hello",
            "+41 79 123 45 67 89 01 23",
            "+4179123456'; --",
        ] {
            match Phone::parse(bad) {
                Err(Error::InvalidArgument { field, .. }) => assert_eq!(field, "phone.number"),
                other => panic!("{bad:?} gave {other:?}"),
            }
        }
    }

    #[test]
    fn debug_masks_the_number() {
        let phone = Phone::parse("+41791234567").unwrap();
        let debug = format!("{phone:?}");
        assert!(!debug.contains("1234"), "{debug}");
        assert!(debug.starts_with("Phone(+41"));
    }
}
