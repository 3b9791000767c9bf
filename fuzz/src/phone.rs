//! The phone differential: any text through [`Phone::parse`] against `phonenumber`'s own parse,
//! validity check and E.164 formatting, with the number's type and region.
//!
//! The project parses `+` and digits itself (a split and DFAs over phonenumber's metadata,
//! `crates/core/src/phone/numbering.rs`) and claims the same answers; this checks the claim on
//! every input the fuzzer reaches. The reference applies the contract's bound first (1 to 20
//! characters), as [`Phone::parse`] does, and reports non-geographic numbers (phonenumber's
//! region `001`) as having no region, as [`Phone::region`] documents.
//!
//! One deliberate difference: for a number whose national part starts with zeros (Italy's
//! `+39 02…`, `+39 06…`), phonenumber matches the type patterns against the digits after the
//! zeros and so answers `Unknown` and no region, where libphonenumber (and the project) match
//! the whole national number: `+390236618300` is a fixed line in IT. There the two sides are
//! compared on E.164 and validity only (docs/testing.md, "Fuzzing").

use otp_sms_core::{NumberType, Phone, MAX_PHONE_CHARS};
use phonenumber::metadata::DATABASE;

/// What one side says of one input: the E.164 form, type and region of a valid number.
#[derive(Debug, PartialEq, Eq)]
pub struct Reading {
    /// The number in E.164 form.
    pub e164: String,
    /// Its type by the numbering plan.
    pub number_type: NumberType,
    /// Its region, `None` for non-geographic numbers.
    pub region: Option<String>,
}

/// The project's answer.
pub fn ours(input: &str) -> Option<Reading> {
    let phone = Phone::parse(input).ok()?;
    Some(Reading {
        e164: phone.as_e164().to_owned(),
        number_type: phone.number_type(),
        region: phone.region().map(str::to_owned),
    })
}

/// phonenumber's answer, and whether its type and region are comparable (no leading zeros).
pub fn reference(input: &str) -> Option<(Reading, bool)> {
    if input.is_empty() || input.chars().count() > MAX_PHONE_CHARS {
        return None;
    }
    let number = phonenumber::parse(None, input).ok()?;
    if !phonenumber::is_valid(&number) {
        return None;
    }
    let comparable = number.national().zeros() == 0;
    let answer = Reading {
        e164: number.format().mode(phonenumber::Mode::E164).to_string(),
        number_type: NumberType::from(number.number_type(&DATABASE)),
        region: number
            .country()
            .id()
            .map(|id| id.as_ref().to_owned())
            .filter(|r| r != "001"),
    };
    Some((answer, comparable))
}

/// The target: both answers agree on any UTF-8 input.
pub fn check(data: &[u8]) {
    let Ok(input) = std::str::from_utf8(data) else {
        return;
    };
    let (ours, theirs) = (ours(input), reference(input));
    let e164 = |a: &Option<Reading>| a.as_ref().map(|a| a.e164.clone());
    let theirs_e164 = theirs.as_ref().map(|(a, _)| a.e164.clone());
    assert_eq!(
        e164(&ours),
        theirs_e164,
        "Phone::parse({input:?}) against phonenumber"
    );
    if let (Some(ours), Some((theirs, true))) = (ours, theirs) {
        assert_eq!(
            ours, theirs,
            "type and region of {input:?} against phonenumber"
        );
    }
}
