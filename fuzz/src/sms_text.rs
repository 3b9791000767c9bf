//! The SMS text: templates, the application's name, the WebOTP domain and Android hash as the
//! server's `[sms.text]` reads them, rendered with any code and locale; and the segment count
//! a provider bills, computed a second way.
//!
//! Input: newline-separated fields (`\n` inside a field written as the two characters `\n`):
//! app name, registration template, its locale, sign-in template, WebOTP domain (empty: none),
//! Android hash (empty: none), the user's locale, the code, the minutes.

use otp_sms_core::message::{segments, Encoding, Purpose};
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
        assert_eq!(segments(&text.body), (text.encoding, text.segments));
    }
}

/// GSM 03.38's basic character set and its extension table (an escape and the character).
const GSM7_BASIC: &str = "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?\
¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà";
const GSM7_EXTENSION: &str = "\u{c}^{}\\[~]|€";

/// The segments, the second way: the text packed into SMS as a phone or provider splits it,
/// character by character, never splitting a character's septets (an escape and its
/// character) or UTF-16 units (a surrogate pair) over two SMS. One SMS holds 160 septets or 70
/// units; a part of a longer text 153 or 67 (the rest is the concatenation header).
pub fn packed(text: &str) -> (Encoding, usize) {
    let gsm: Option<Vec<usize>> = text
        .chars()
        .map(|c| {
            if GSM7_BASIC.contains(c) {
                Some(1)
            } else if GSM7_EXTENSION.contains(c) {
                Some(2)
            } else {
                None
            }
        })
        .collect();
    let (encoding, sizes, single, part) = match gsm {
        Some(sizes) => (Encoding::Gsm7, sizes, 160, 153),
        None => (
            Encoding::Ucs2,
            text.chars().map(char::len_utf16).collect(),
            70,
            67,
        ),
    };
    if sizes.iter().sum::<usize>() <= single {
        return (encoding, 1);
    }
    let (mut parts, mut used) = (1, 0);
    for size in sizes {
        if used + size > part {
            parts += 1;
            used = 0;
        }
        used += size;
    }
    (encoding, parts)
}
