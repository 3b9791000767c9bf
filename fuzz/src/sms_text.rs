//! The SMS text: templates, the application's name, the WebOTP domain and Android hash as the
//! server's `[sms.text]` reads them, rendered with any code and locale; and the segment count
//! a provider bills, computed a second way.
//!
//! Input: newline-separated fields (`\n` inside a field written as the two characters `\n`):
//! app name, registration template, its locale, sign-in template, WebOTP domain (empty: none),
//! Android hash (empty: none), the user's locale, the code, the minutes.

use otp_sms_core::message::{Encoding, Purpose};
use otp_sms_server::config::TextConfig;
use std::time::Duration;

/// The target.
pub fn check(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let fields: Vec<String> = text.split('\n').map(|f| f.replace("\\n", "\n")).collect();
    let field = |i: usize| fields.get(i).cloned().unwrap_or_default();
    let optional = |i: usize| Some(field(i)).filter(|f| !f.is_empty());
    let mut config = TextConfig {
        app_name: field(0),
        default_template: optional(1),
        webotp_domain: optional(4),
        android_app_hash: optional(5),
        max_segments: 10,
        ..TextConfig::default()
    };
    if let (Some(locale), Some(template)) = (optional(2), optional(1)) {
        config.templates.insert(locale, template);
    }
    config.default_sign_in_template = optional(3);
    let Ok(templates) = config.templates(8, Duration::from_secs(300)) else {
        return;
    };
    // Codes as a policy makes them: letters and digits, within the contract's bound.
    let code: String = field(7)
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .take(otp_sms_core::MAX_CODE_CHARS)
        .collect();
    if code.is_empty() {
        return;
    }
    let minutes = field(8).parse::<u64>().unwrap_or(5);
    let locale = optional(6);
    for purpose in [Purpose::Registration, Purpose::SignIn] {
        let text = templates.render_for(purpose, locale.as_deref(), &code, minutes);
        assert!(text.body.contains(&code), "{text:?} lost the code");
        if let Some(domain) = &config.webotp_domain {
            let last = text.body.lines().last().unwrap_or_default();
            let expected = format!("@{} #{code}", domain.trim().to_ascii_lowercase());
            assert_eq!(
                last, expected,
                "the WebOTP line is not last in {:?}",
                text.body
            );
        }
        assert_eq!(
            (text.encoding, text.segments),
            packed(&text.body),
            "segments of {:?}",
            text.body
        );
    }
}

/// GSM 03.38's basic character set and its extension table (an escape and the character).
const GSM7_BASIC: &str = "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?\
¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà";
const GSM7_EXTENSION: &str = "\u{c}^{}\\[~]|€";

/// The segments, the second way: the text encoded as a phone sends it (GSM 03.38 septets, an
/// extension character as the escape and its septet; or UTF-16 units) and cut into parts of
/// 153 septets or 67 units (160 or 70 for a text that fits one SMS), moving a part's last unit
/// to the next part when it is an escape or a high surrogate, whose character would otherwise
/// be split.
pub fn packed(text: &str) -> (Encoding, usize) {
    const ESCAPE: u16 = 0xFFFF;
    let septets: Option<Vec<u16>> = text
        .chars()
        .map(|c| {
            if let Some(at) = GSM7_BASIC.chars().position(|b| b == c) {
                Some(vec![at as u16])
            } else {
                GSM7_EXTENSION
                    .chars()
                    .position(|e| e == c)
                    .map(|at| vec![ESCAPE, at as u16])
            }
        })
        .collect::<Option<Vec<Vec<u16>>>>()
        .map(|chars| chars.concat());
    /// The encoding, its units, the room of one SMS and of a part, and which unit leads a
    /// character of two.
    type Cut = (Encoding, Vec<u16>, usize, usize, fn(u16) -> bool);
    let (encoding, units, single, part, lead): Cut = match septets {
        Some(septets) => (Encoding::Gsm7, septets, 160, 153, |u| u == ESCAPE),
        None => (Encoding::Ucs2, text.encode_utf16().collect(), 70, 67, |u| {
            (0xD800..0xDC00).contains(&u)
        }),
    };
    if units.len() <= single {
        return (encoding, 1);
    }
    let (mut parts, mut rest) = (0, &units[..]);
    while !rest.is_empty() {
        let mut take = part.min(rest.len());
        if take < rest.len() && lead(rest[take - 1]) {
            take -= 1;
        }
        parts += 1;
        rest = &rest[take..];
    }
    (encoding, parts)
}
