//! The text of the SMS: templates per locale with the code, its lifetime and the application's
//! name, the origin-bound one-time-code line of the WebOTP format that lets browsers and phones
//! fill the code in on the right site only, and the segment count a provider bills.
//!
//! ```
//! use otp_sms_core::message::{Encoding, MessageTemplates};
//! let templates = MessageTemplates::new("Acme")
//!     .with_webotp_domain("id.acme.example")
//!     .with_template("de", "Ihr {app}-Code lautet {code}. Er ist {minutes} Minuten gültig.")
//!     .unwrap();
//! let text = templates.render(Some("de-CH"), "12345678", 5);
//! assert_eq!(
//!     text.body,
//!     "Ihr Acme-Code lautet 12345678. Er ist 5 Minuten gültig.\n\n@id.acme.example #12345678"
//! );
//! assert_eq!((text.encoding, text.segments), (Encoding::Gsm7, 1));
//! ```

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// What a code is for: the SMS says which, with a text of its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Purpose {
    /// Proving a phone while registering it (the default: outbox messages written before
    /// sign-in existed carry no purpose).
    #[default]
    Registration,
    /// Signing in with a registered phone.
    SignIn,
}

/// The default template: English, with every placeholder.
pub const DEFAULT_TEMPLATE: &str = "Your {app} code is {code}. It expires in {minutes} minutes.";

/// The default sign-in template: English, with every placeholder.
pub const DEFAULT_SIGN_IN_TEMPLATE: &str =
    "Your {app} sign-in code is {code}. It expires in {minutes} minutes.";

/// The placeholders a template may use; `{code}` is required.
pub const PLACEHOLDERS: [&str; 3] = ["{code}", "{minutes}", "{app}"];

/// How an SMS is encoded on the air: the GSM 03.38 7-bit alphabet when every character is in
/// it, else UCS-2 (UTF-16).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// GSM 03.38: 160 septets in one SMS, 153 per part of a longer one.
    Gsm7,
    /// UCS-2: 70 UTF-16 units in one SMS, 67 per part.
    Ucs2,
}

/// A rendered SMS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageText {
    /// The text to send.
    pub body: String,
    /// Its encoding.
    pub encoding: Encoding,
    /// How many SMS it takes.
    pub segments: usize,
}

/// A template or a setting that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    /// The template does not contain `{code}`.
    #[error("the template for `{0}` must contain {{code}}")]
    NoCode(String),
    /// The template names a placeholder that does not exist.
    #[error("the template for `{locale}` uses an unknown placeholder {placeholder} (known: {{code}}, {{minutes}}, {{app}})")]
    UnknownPlaceholder {
        /// The locale.
        locale: String,
        /// The placeholder.
        placeholder: String,
    },
    /// The rendered text takes more SMS than allowed.
    #[error("the text for `{locale}` takes {segments} SMS ({encoding:?}) with a {code_len}-character code; at most {max} allowed")]
    TooLong {
        /// The locale.
        locale: String,
        /// Segments it takes.
        segments: usize,
        /// Its encoding.
        encoding: Encoding,
        /// The code length it was checked with.
        code_len: usize,
        /// The limit.
        max: usize,
    },
    /// A locale tag, domain or app hash is malformed.
    #[error("{0}")]
    Invalid(String),
}

/// The templates of one deployment: one per locale (BCP 47 tags such as `de` or `pt-BR`), a
/// default, the application's name, and the WebOTP domain and Android app hash, if any.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageTemplates {
    app: String,
    default_template: String,
    by_locale: BTreeMap<String, String>,
    sign_in_default: String,
    sign_in_by_locale: BTreeMap<String, String>,
    webotp_domain: Option<String>,
    android_app_hash: Option<String>,
}

impl MessageTemplates {
    /// The default English template for `app`, no WebOTP line.
    pub fn new(app: impl Into<String>) -> Self {
        Self {
            app: app.into(),
            default_template: DEFAULT_TEMPLATE.to_owned(),
            by_locale: BTreeMap::new(),
            sign_in_default: DEFAULT_SIGN_IN_TEMPLATE.to_owned(),
            sign_in_by_locale: BTreeMap::new(),
            webotp_domain: None,
            android_app_hash: None,
        }
    }

    /// The template for requests in no configured locale.
    pub fn with_default_template(mut self, template: &str) -> Result<Self, TemplateError> {
        check_template("default", template)?;
        self.default_template = template.to_owned();
        Ok(self)
    }

    /// The template for `locale` (and its regional variants, unless they have their own).
    pub fn with_template(mut self, locale: &str, template: &str) -> Result<Self, TemplateError> {
        let locale = normalise(locale)
            .ok_or_else(|| TemplateError::Invalid(format!("`{locale}` is not a locale tag")))?;
        check_template(&locale, template)?;
        self.by_locale.insert(locale, template.to_owned());
        Ok(self)
    }

    /// The sign-in template for requests in no configured locale.
    pub fn with_default_sign_in_template(mut self, template: &str) -> Result<Self, TemplateError> {
        check_template("default (sign-in)", template)?;
        self.sign_in_default = template.to_owned();
        Ok(self)
    }

    /// The sign-in template for `locale` (and its regional variants, unless they have their
    /// own). A locale without one gets the default sign-in template, never a registration
    /// text: the user must be able to tell a sign-in code from a registration code.
    pub fn with_sign_in_template(
        mut self,
        locale: &str,
        template: &str,
    ) -> Result<Self, TemplateError> {
        let locale = normalise(locale)
            .ok_or_else(|| TemplateError::Invalid(format!("`{locale}` is not a locale tag")))?;
        check_template(&locale, template)?;
        self.sign_in_by_locale.insert(locale, template.to_owned());
        Ok(self)
    }

    /// Ends every text with the WebOTP line `@domain #code`, so that browsers autofill the code
    /// only on `domain` (the site's host, no scheme or port). The domain is taken as given:
    /// [`MessageTemplates::try_with_webotp_domain`] checks that it is a host name, which
    /// configuration read from a file should be.
    pub fn with_webotp_domain(mut self, domain: &str) -> Self {
        self.webotp_domain = Some(domain.trim().to_ascii_lowercase());
        self
    }

    /// [`MessageTemplates::with_webotp_domain`], refusing a domain that is not a host name
    /// (letters, digits and hyphens in dot-separated labels of 1 to 63 characters, at most 253
    /// in all; IDNs in their `xn--` form): anything else (a space, a newline, a `#`) would
    /// break the WebOTP line, which must be the text's last line and read `@host #code`.
    ///
    /// ```
    /// use otp_sms_core::message::MessageTemplates;
    /// assert!(MessageTemplates::new("Acme").try_with_webotp_domain("id.acme.example").is_ok());
    /// assert!(MessageTemplates::new("Acme").try_with_webotp_domain("acme.example\n@evil").is_err());
    /// ```
    pub fn try_with_webotp_domain(self, domain: &str) -> Result<Self, TemplateError> {
        let host = domain.trim().to_ascii_lowercase();
        let label_ok = |label: &str| {
            (1..=63).contains(&label.len())
                && label
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        };
        if host.is_empty() || host.len() > 253 || !host.split('.').all(label_ok) {
            return Err(TemplateError::Invalid(format!(
                "the WebOTP domain `{}` is not a host name",
                domain.escape_debug()
            )));
        }
        Ok(self.with_webotp_domain(&host))
    }

    /// Adds the 11-character app hash Android's SMS Retriever needs to hand the SMS to the app,
    /// on a line of its own before the WebOTP line.
    pub fn with_android_app_hash(mut self, hash: &str) -> Result<Self, TemplateError> {
        let valid = hash.len() == 11
            && hash
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/');
        if !valid {
            return Err(TemplateError::Invalid(
                "the Android app hash is 11 characters of base64".into(),
            ));
        }
        self.android_app_hash = Some(hash.to_owned());
        Ok(self)
    }

    /// The template for `locale`: its exact tag, else its language (`de-CH` → `de`), else the
    /// default.
    fn template(&self, purpose: Purpose, locale: Option<&str>) -> &str {
        let (default, by_locale) = match purpose {
            Purpose::Registration => (&self.default_template, &self.by_locale),
            Purpose::SignIn => (&self.sign_in_default, &self.sign_in_by_locale),
        };
        let Some(locale) = locale.and_then(normalise) else {
            return default;
        };
        if let Some(t) = by_locale.get(&locale) {
            return t;
        }
        let language = locale.split('-').next().unwrap_or_default();
        by_locale
            .get(language)
            .map_or(default.as_str(), String::as_str)
    }

    /// The registration SMS for `code`, valid for `minutes`, in `locale` (the user's preferred
    /// language, if known).
    pub fn render(&self, locale: Option<&str>, code: &str, minutes: u64) -> MessageText {
        self.render_for(Purpose::Registration, locale, code, minutes)
    }

    /// The SMS for `code` of `purpose`, valid for `minutes`, in `locale`.
    ///
    /// ```
    /// use otp_sms_core::message::{MessageTemplates, Purpose};
    /// let templates = MessageTemplates::new("Acme")
    ///     .with_sign_in_template("de", "Ihr {app}-Anmeldecode: {code}")
    ///     .unwrap();
    /// let text = templates.render_for(Purpose::SignIn, Some("de-AT"), "12345678", 5);
    /// assert_eq!(text.body, "Ihr Acme-Anmeldecode: 12345678");
    /// let text = templates.render_for(Purpose::SignIn, Some("fr"), "12345678", 5);
    /// assert_eq!(text.body, "Your Acme sign-in code is 12345678. It expires in 5 minutes.");
    /// ```
    pub fn render_for(
        &self,
        purpose: Purpose,
        locale: Option<&str>,
        code: &str,
        minutes: u64,
    ) -> MessageText {
        let mut body = self
            .template(purpose, locale)
            .replace("{app}", &self.app)
            .replace("{minutes}", &minutes.to_string())
            .replace("{code}", code);
        if self.android_app_hash.is_some() || self.webotp_domain.is_some() {
            body.push('\n');
        }
        if let Some(hash) = &self.android_app_hash {
            body.push('\n');
            body.push_str(hash);
        }
        // WebOTP: the origin-bound line is the last line of the message.
        if let Some(domain) = &self.webotp_domain {
            body.push_str(&format!("\n@{domain} #{code}"));
        }
        let (encoding, segments) = segments(&body);
        MessageText {
            body,
            encoding,
            segments,
        }
    }

    /// Checks every template against a code of `code_len` digits valid for `minutes`: each
    /// must fit in `max_segments` SMS. For start-up, so that a template that would be split or
    /// sent as UCS-2 unexpectedly is found before the first user pays for it.
    pub fn check(
        &self,
        code_len: usize,
        minutes: u64,
        max_segments: usize,
    ) -> Result<(), TemplateError> {
        let code = "9".repeat(code_len.max(1));
        let registration = std::iter::once(None)
            .chain(self.by_locale.keys().map(|l| Some(l.as_str())))
            .map(|l| (Purpose::Registration, l));
        let sign_in = std::iter::once(None)
            .chain(self.sign_in_by_locale.keys().map(|l| Some(l.as_str())))
            .map(|l| (Purpose::SignIn, l));
        for (purpose, locale) in registration.chain(sign_in) {
            let text = self.render_for(purpose, locale, &code, minutes);
            if text.segments > max_segments {
                return Err(TemplateError::TooLong {
                    locale: match purpose {
                        Purpose::Registration => locale.unwrap_or("default").to_owned(),
                        Purpose::SignIn => format!("{} (sign-in)", locale.unwrap_or("default")),
                    },
                    segments: text.segments,
                    encoding: text.encoding,
                    code_len,
                    max: max_segments,
                });
            }
        }
        Ok(())
    }
}

fn check_template(locale: &str, template: &str) -> Result<(), TemplateError> {
    if !template.contains("{code}") {
        return Err(TemplateError::NoCode(locale.to_owned()));
    }
    let mut rest = template;
    while let Some(start) = rest.find('{') {
        let end = rest[start..]
            .find('}')
            .map_or(rest.len(), |e| start + e + 1);
        let placeholder = &rest[start..end];
        if !PLACEHOLDERS.contains(&placeholder) {
            return Err(TemplateError::UnknownPlaceholder {
                locale: locale.to_owned(),
                placeholder: placeholder.to_owned(),
            });
        }
        rest = &rest[end..];
    }
    Ok(())
}

/// A BCP 47 tag in the case this module keys by: `de`, `pt-BR`; `None` when malformed.
fn normalise(tag: &str) -> Option<String> {
    let tag = tag.trim().replace('_', "-");
    let mut parts = tag.split('-');
    let language = parts.next()?.to_ascii_lowercase();
    if !(2..=8).contains(&language.len()) || !language.bytes().all(|b| b.is_ascii_alphabetic()) {
        return None;
    }
    let mut out = language;
    for part in parts {
        if part.is_empty() || part.len() > 8 || !part.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return None;
        }
        out.push('-');
        // Regions upper case, other subtags as they come (lower case).
        if part.len() == 2 {
            out.push_str(&part.to_ascii_uppercase());
        } else {
            out.push_str(&part.to_ascii_lowercase());
        }
    }
    Some(out)
}

/// GSM 03.38's basic character set (one septet each).
const GSM7_BASIC: &str = "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?\
¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà";

/// Its extension table (an escape and the character: two septets each).
const GSM7_EXTENSION: &str = "\u{c}^{}\\[~]|€";

/// The encoding `text` needs and how many SMS it takes.
///
/// ```
/// use otp_sms_core::message::{segments, Encoding};
/// assert_eq!(segments(&"a".repeat(160)), (Encoding::Gsm7, 1));
/// assert_eq!(segments(&"a".repeat(161)), (Encoding::Gsm7, 2));
/// // `€` is in the extension table: two septets.
/// assert_eq!(segments(&"€".repeat(80)), (Encoding::Gsm7, 1));
/// // One character outside GSM 03.38 makes the whole text UCS-2.
/// assert_eq!(segments(&format!("{}ł", "a".repeat(69))), (Encoding::Ucs2, 1));
/// assert_eq!(segments(&format!("{}ł", "a".repeat(70))), (Encoding::Ucs2, 2));
/// ```
pub fn segments(text: &str) -> (Encoding, usize) {
    let septets = |c: char| {
        if GSM7_BASIC.contains(c) {
            Some(1)
        } else if GSM7_EXTENSION.contains(c) {
            Some(2)
        } else {
            None
        }
    };
    let gsm = text.chars().all(|c| septets(c).is_some());
    // UCS-2 as providers send it: UTF-16 units (a character beyond the BMP takes two).
    let (encoding, single, part) = if gsm {
        (Encoding::Gsm7, 160, 153)
    } else {
        (Encoding::Ucs2, 70, 67)
    };
    let size = |c: char| match septets(c) {
        Some(n) if gsm => n,
        _ => c.len_utf16(),
    };
    if text.chars().map(size).sum::<usize>() <= single {
        return (encoding, 1);
    }
    // A longer text is split character by character: a part never ends inside a character
    // (an extension character's escape and septet, or a surrogate pair, stay together), so a
    // part may hold a unit less than its room, and the count is not the units over the room.
    let (mut parts, mut used) = (1, 0);
    for c in text.chars() {
        let n = size(c);
        if used + n > part {
            parts += 1;
            used = 0;
        }
        used += n;
    }
    (encoding, parts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gsm7_and_ucs2_segments_at_their_boundaries() {
        assert_eq!(segments(""), (Encoding::Gsm7, 1));
        assert_eq!(segments(&"a".repeat(306)), (Encoding::Gsm7, 2));
        assert_eq!(segments(&"a".repeat(307)), (Encoding::Gsm7, 3));
        // Extension characters count twice: 81 of them are 162 septets.
        assert_eq!(segments(&"[".repeat(81)), (Encoding::Gsm7, 2));
        assert_eq!(segments(&"é".repeat(160)), (Encoding::Gsm7, 1));
        // ç (lower case) is not in GSM 03.38; Ç is.
        assert_eq!(segments("ç").0, Encoding::Ucs2);
        assert_eq!(segments("Ç").0, Encoding::Gsm7);
        assert_eq!(segments(&"ł".repeat(70)), (Encoding::Ucs2, 1));
        assert_eq!(segments(&"ł".repeat(134)), (Encoding::Ucs2, 2));
        assert_eq!(segments(&"ł".repeat(135)), (Encoding::Ucs2, 3));
        // An emoji is two UTF-16 units.
        assert_eq!(segments(&"😀".repeat(35)), (Encoding::Ucs2, 1));
        assert_eq!(segments(&"😀".repeat(36)), (Encoding::Ucs2, 2));
    }

    /// Found by the `sms_text` fuzz target: a part never splits a character, so 152 septets
    /// and an extension character (2 septets) fill a first part of 152, and 306 septets can
    /// take three parts, not two; 66 units and an emoji likewise.
    #[test]
    fn a_part_never_splits_a_character() {
        let gsm = format!("{}€{}", "a".repeat(152), "a".repeat(152));
        assert_eq!(segments(&gsm), (Encoding::Gsm7, 3));
        assert_eq!(
            segments(&format!("{}€", "a".repeat(159))),
            (Encoding::Gsm7, 2)
        );
        let ucs2 = format!("{}😀{}", "ł".repeat(66), "ł".repeat(66));
        assert_eq!(segments(&ucs2), (Encoding::Ucs2, 3));
    }

    #[test]
    fn locales_fall_back_to_their_language_then_the_default() {
        let t = MessageTemplates::new("Acme")
            .with_template("de", "Code {code}")
            .unwrap()
            .with_template("pt_br", "Código {code}")
            .unwrap();
        assert_eq!(t.render(Some("de"), "1", 5).body, "Code 1");
        assert_eq!(t.render(Some("DE-at"), "1", 5).body, "Code 1");
        assert_eq!(t.render(Some("pt-BR"), "1", 5).body, "Código 1");
        // pt alone has no template of its own: the default.
        assert_eq!(
            t.render(Some("pt"), "1", 5).body,
            "Your Acme code is 1. It expires in 5 minutes."
        );
        assert_eq!(
            t.render(None, "1", 5).body,
            t.render(Some("!!"), "1", 5).body
        );
    }

    #[test]
    fn the_webotp_line_is_last_and_the_app_hash_before_it() {
        let t = MessageTemplates::new("Acme")
            .with_webotp_domain("ID.Acme.example")
            .with_android_app_hash("FA+9qCX9VSu")
            .unwrap();
        let body = t.render(None, "123456", 5).body;
        let lines: Vec<&str> = body.lines().collect();
        assert_eq!(lines.last(), Some(&"@id.acme.example #123456"));
        assert_eq!(lines[lines.len() - 2], "FA+9qCX9VSu");
        assert!(MessageTemplates::new("x")
            .with_android_app_hash("short")
            .is_err());
    }

    #[test]
    fn templates_are_checked() {
        let t = MessageTemplates::new("Acme");
        assert_eq!(
            t.clone().with_template("en", "no code here"),
            Err(TemplateError::NoCode("en".into()))
        );
        assert!(matches!(
            t.clone().with_template("en", "{code} {user}"),
            Err(TemplateError::UnknownPlaceholder { .. })
        ));
        assert!(t.clone().with_template("e", "{code}").is_err());
        // The default fits one SMS with an 8-digit code and the WebOTP line…
        let long_domain = t.clone().with_webotp_domain("id.acme.example");
        assert_eq!(long_domain.check(8, 5, 1), Ok(()));
        // …a Polish template of 60 characters does not (UCS-2, 70 units).
        let polish = t
            .with_template(
                "pl",
                "Twój kod {app} to {code}. Wygaśnie za {minutes} minut. Dziękujemy!",
            )
            .unwrap()
            .with_webotp_domain("id.acme.example");
        assert!(matches!(
            polish.check(8, 5, 1),
            Err(TemplateError::TooLong {
                encoding: Encoding::Ucs2,
                ..
            })
        ));
        assert_eq!(polish.check(8, 5, 2), Ok(()));
    }
}
