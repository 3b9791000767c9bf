//! libphonenumber's numbering-plan rules, compiled from phonenumber's metadata into DFAs: whether
//! a number is valid, and the parse of input written as `+` and digits.
//!
//! phonenumber answers both, but every regular expression it runs goes through one
//! mutex-guarded LRU cache keyed by the pattern text (hashed with SipHash on every look-up), and
//! its parser runs two nom grammars over every input. On two cores these were the largest costs
//! of adding a registration. Here the same patterns, from the same metadata, are compiled once
//! per calling code on first use into fully built DFAs, which a match only reads: no lock, no
//! cache, no scratch space (a lazy DFA, as `regex::Regex` uses, needs a scratch pool shared by
//! threads). National numbers are ASCII digits, so patterns are compiled without Unicode
//! classes (`\d` as `[0-9]`): smaller DFAs, the same matches.
//!
//! The rules are phonenumber's, reproduced exactly, and tests compare the answers:
//! - a descriptor matches when the length is one of its possible lengths (if it lists any) and
//!   its pattern matches at the start of the national number (not necessarily to its end);
//! - a calling code shared by regions belongs, for a number, to the first region whose leading
//!   digits match, or, lacking those, whose types match;
//! - a number is valid when its region's general descriptor and at least one type descriptor
//!   match.
//!
//! Input in any other form than `+` and digits (spaces, letters, `tel:` URIs, extensions) and
//! any number whose national part could carry a national prefix go to phonenumber's parser, as
//! does validity under a calling code whose patterns did not compile here (none, as tested).

use std::str::FromStr;
use std::sync::OnceLock;

use phonenumber::country;
use phonenumber::metadata::{Descriptor, Metadata, DATABASE};
use regex_automata::dfa::{dense, Automaton, StartKind};
use regex_automata::util::syntax;
use regex_automata::{Anchored, Input};

use super::NumberType;

/// A compiled pattern; searched anchored at the start.
type Dfa = dense::DFA<Vec<u32>>;

/// Why a calling code could not be compiled.
type CompileError = Box<dense::BuildError>;

/// Calling codes are at most three digits.
const CODES: usize = 1000;

/// phonenumber's bounds on a national significant number, in digits.
const NSN_LENGTHS: std::ops::RangeInclusive<usize> = 2..=17;

/// Compiled rules per calling code, filled on first use of each code.
static RULES: [OnceLock<Rules>; CODES] = [const { OnceLock::new() }; CODES];

fn rules(code: u16) -> Option<&'static Rules> {
    RULES
        .get(usize::from(code))
        .map(|slot| slot.get_or_init(|| Rules::compile(code)))
}

/// What kind of number `+{code}{national}` is and which region it belongs to, by
/// libphonenumber's `getNumberType` rules on the national significant number (leading zeros
/// included): `None` when this calling code must be asked of phonenumber.
pub(super) fn classify(code: u16, national: &str) -> Option<(NumberType, Option<&'static str>)> {
    match rules(code)? {
        Rules::NoRegion => Some((NumberType::Unknown, None)),
        Rules::Fallback => None,
        Rules::Compiled(source) => Some(match source.region_for(national) {
            Some(region) => (region.number_type(national), region.id),
            None => (NumberType::Unknown, None),
        }),
    }
}

/// Splits a number already in E.164 into calling code and national significant number.
pub(super) fn split_e164(e164: &str) -> Option<(u16, &str)> {
    let digits = e164.strip_prefix('+')?;
    (1..=3.min(digits.len())).find_map(|len| {
        let code = digits[..len].parse::<u16>().ok()?;
        match rules(code)? {
            Rules::NoRegion => None,
            Rules::Fallback | Rules::Compiled(_) => Some((code, &digits[len..])),
        }
    })
}

/// Whether the number `+{code}{national}` is valid, `national` being its national significant
/// number with leading zeros: `phonenumber::is_valid`'s answer, or `None` when this calling
/// code must be asked of phonenumber.
pub(super) fn is_valid(code: u16, national: &str) -> Option<bool> {
    match rules(code)? {
        Rules::NoRegion => Some(false),
        Rules::Fallback => None,
        Rules::Compiled(source) => Some(
            source
                .region_for(national)
                .is_some_and(|region| region.is_valid(national)),
        ),
    }
}

/// Splits input of the form `+` and digits into calling code and national significant number,
/// exactly as `phonenumber::parse(None, input)` would. `None` when the input has another form,
/// when phonenumber would refuse it, or when phonenumber would strip a national prefix from it:
/// the caller then asks phonenumber.
pub(super) fn split_plain(input: &str) -> Option<(u16, &str)> {
    let digits = input.strip_prefix('+')?;
    if digits.len() < 3 || digits.starts_with('0') || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    // Calling codes form a prefix code: the first length naming an assigned code is it.
    let mut split = None;
    for len in 1..=3 {
        let code = digits[..len].parse::<u16>().ok()?;
        match rules(code)? {
            Rules::NoRegion => continue,
            Rules::Fallback => return None,
            Rules::Compiled(source) => {
                split = Some((code, source, &digits[len..]));
                break;
            }
        }
    }
    let (code, source, national) = split?;
    // phonenumber picks the region by the number without leading zeros, then strips a national
    // prefix (or what the region's prefix-for-parsing pattern matches) from the start.
    if let Some(region) = source.region_for(national.trim_start_matches('0')) {
        let prefix = region
            .national_prefix
            .as_deref()
            .is_some_and(|prefix| national.starts_with(prefix));
        let for_parsing = region
            .prefix_for_parsing
            .as_ref()
            .is_some_and(|dfa| matches_at_start(dfa, national));
        if prefix || for_parsing {
            return None;
        }
    }
    if !NSN_LENGTHS.contains(&national.len()) {
        return None;
    }
    // phonenumber keeps the digits after the leading zeros in 56 bits.
    let zeros = national.bytes().take_while(|&b| b == b'0').count();
    let value = national[zeros..].parse::<u64>().ok()?;
    (value < 1 << 56).then_some((code, national))
}

enum Rules {
    /// The calling code is assigned to no region: nothing under it is valid.
    NoRegion,
    /// A pattern did not compile here; ask phonenumber.
    Fallback,
    Compiled(Source),
}

/// How a calling code's number finds its region (phonenumber's `source_for`).
enum Source {
    /// One region (or a non-geographic entity) owns the code.
    Single(Box<Region>),
    /// Several regions share the code; the first whose leading digits (or, lacking those,
    /// whose types) match the number owns it.
    Shared(Vec<(Option<Dfa>, Region)>),
}

impl Source {
    fn region_for(&self, national: &str) -> Option<&Region> {
        match self {
            Source::Single(region) => Some(region),
            Source::Shared(regions) => regions.iter().find_map(|(leading, region)| {
                let owns = match leading {
                    Some(leading) => matches_at_start(leading, national),
                    None => region.is_valid(national),
                };
                owns.then_some(region)
            }),
        }
    }

    #[cfg(test)]
    fn memory_usage(&self) -> usize {
        let region = |r: &Region| {
            r.general.dfa.memory_usage()
                + r.types
                    .iter()
                    .map(|(_, t)| t.dfa.memory_usage())
                    .sum::<usize>()
                + r.prefix_for_parsing
                    .as_ref()
                    .map_or(0, |d| d.memory_usage())
        };
        match self {
            Source::Single(r) => region(r),
            Source::Shared(rs) => rs
                .iter()
                .map(|(l, r)| l.as_ref().map_or(0, |l| l.memory_usage()) + region(r))
                .sum(),
        }
    }
}

impl Rules {
    fn compile(code: u16) -> Self {
        match Self::try_compile(code) {
            Ok(Some(source)) => Rules::Compiled(source),
            Ok(None) => Rules::NoRegion,
            Err(error) => {
                tracing::warn!(code, %error, "phone metadata pattern did not compile; phonenumber handles this calling code");
                Rules::Fallback
            }
        }
    }

    fn try_compile(code: u16) -> Result<Option<Source>, CompileError> {
        let Some(regions) = DATABASE.region(&code) else {
            return Ok(None);
        };
        if let [only] = regions[..] {
            let meta = if only == "001" {
                DATABASE.by_code(&code).and_then(|m| m.into_iter().next())
            } else if country::Id::from_str(only).is_ok() {
                DATABASE.by_id(only)
            } else {
                None
            };
            return match meta {
                Some(meta) => Ok(Some(Source::Single(Box::new(Region::compile(
                    meta,
                    (only != "001").then_some(only),
                )?)))),
                None => Ok(None),
            };
        }
        let mut shared = Vec::with_capacity(regions.len());
        for id in regions {
            // phonenumber would panic on an id it cannot look up or parse; such a region
            // can own no number here.
            let Some(meta) = DATABASE.by_id(id) else {
                continue;
            };
            if country::Id::from_str(id).is_err() {
                continue;
            }
            let leading = meta
                .leading_digits()
                .map(|p| compile(p.as_str()))
                .transpose()?;
            shared.push((leading, Region::compile(meta, Some(id))?));
        }
        Ok(Some(Source::Shared(shared)))
    }
}

/// One region: the general descriptor, the typed ones phonenumber's `number_type` consults (in
/// its order), and what its parser strips as a national prefix.
struct Region {
    /// The region code (`CH`), or `None` for a non-geographic entity (`001`).
    id: Option<&'static str>,
    general: Pattern,
    types: Vec<(NumberType, Pattern)>,
    /// The fixed-line and mobile patterns are the same text: a fixed-line match is
    /// "fixed line or mobile".
    fixed_is_mobile: bool,
    national_prefix: Option<String>,
    prefix_for_parsing: Option<Dfa>,
}

impl Region {
    fn compile(meta: &Metadata, id: Option<&'static str>) -> Result<Self, CompileError> {
        let d = meta.descriptors();
        let typed = [
            (NumberType::PremiumRate, d.premium_rate()),
            (NumberType::TollFree, d.toll_free()),
            (NumberType::SharedCost, d.shared_cost()),
            (NumberType::Voip, d.voip()),
            (NumberType::PersonalNumber, d.personal_number()),
            (NumberType::Pager, d.pager()),
            (NumberType::Uan, d.uan()),
            (NumberType::Voicemail, d.voicemail()),
            (NumberType::FixedLine, d.fixed_line()),
            (NumberType::Mobile, d.mobile()),
        ];
        let fixed_is_mobile = match (d.fixed_line(), d.mobile()) {
            (Some(f), Some(m)) => f.national_number().as_str() == m.national_number().as_str(),
            _ => false,
        };
        Ok(Self {
            id,
            fixed_is_mobile,
            general: Pattern::compile(d.general())?,
            types: typed
                .into_iter()
                .filter_map(|(kind, d)| Some((kind, d?)))
                .map(|(kind, d)| Ok((kind, Pattern::compile(d)?)))
                .collect::<Result<_, CompileError>>()?,
            national_prefix: meta.national_prefix().map(str::to_owned),
            prefix_for_parsing: meta
                .national_prefix_for_parsing()
                .map(|p| compile(p.as_str()))
                .transpose()?,
        })
    }

    fn is_valid(&self, national: &str) -> bool {
        self.general.matches(national) && self.types.iter().any(|(_, t)| t.matches(national))
    }

    /// The first type whose pattern matches, in libphonenumber's order; a fixed-line match is
    /// "fixed line or mobile" when the mobile pattern matches too (or is the same).
    fn number_type(&self, national: &str) -> NumberType {
        if !self.general.matches(national) {
            return NumberType::Unknown;
        }
        let Some(kind) = self
            .types
            .iter()
            .find_map(|(kind, t)| t.matches(national).then_some(*kind))
        else {
            return NumberType::Unknown;
        };
        let mobile_too = || {
            self.fixed_is_mobile
                || self
                    .types
                    .iter()
                    .any(|(k, t)| *k == NumberType::Mobile && t.matches(national))
        };
        match kind {
            NumberType::FixedLine if mobile_too() => NumberType::FixedLineOrMobile,
            kind => kind,
        }
    }
}

/// A descriptor: its possible lengths and its national number pattern.
struct Pattern {
    lengths: Vec<u16>,
    dfa: Dfa,
}

impl Pattern {
    fn compile(descriptor: &Descriptor) -> Result<Self, CompileError> {
        Ok(Self {
            lengths: descriptor.possible_length().to_vec(),
            dfa: compile(descriptor.national_number().as_str())?,
        })
    }

    fn matches(&self, national: &str) -> bool {
        let length_ok = self.lengths.is_empty()
            || u16::try_from(national.len()).is_ok_and(|len| self.lengths.contains(&len));
        length_ok && matches_at_start(&self.dfa, national)
    }
}

/// Compiles a metadata pattern (phonenumber compiles them ignoring whitespace).
fn compile(pattern: &str) -> Result<Dfa, CompileError> {
    dense::Builder::new()
        .syntax(
            syntax::Config::new()
                .ignore_whitespace(true)
                .unicode(false)
                .utf8(false),
        )
        .configure(dense::Config::new().start_kind(StartKind::Anchored))
        .build(pattern)
        .map_err(Box::new)
}

/// phonenumber accepts a pattern when its leftmost match starts at 0: a match anchored at the
/// start, and only there (metadata patterns are not anchored at the end).
fn matches_at_start(dfa: &Dfa, national: &str) -> bool {
    let input = Input::new(national).anchored(Anchored::Yes).earliest(true);
    // A dense DFA search fails only on quit bytes (none are configured) or an anchored mode the
    // DFA was not built for (it was built for this one), so an error cannot occur.
    matches!(dfa.try_search_fwd(&input), Ok(Some(_)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Phone;
    use proptest::prelude::*;

    /// The example numbers of a region's typed descriptors.
    fn typed_examples(meta: &Metadata) -> impl Iterator<Item = &str> {
        let d = meta.descriptors();
        [
            d.fixed_line(),
            d.mobile(),
            d.toll_free(),
            d.premium_rate(),
            d.shared_cost(),
            d.personal_number(),
            d.voip(),
            d.pager(),
            d.uan(),
            d.voicemail(),
        ]
        .into_iter()
        .flatten()
        .filter_map(|d| d.example())
    }

    /// What `Phone::parse` was before this module: phonenumber alone.
    fn reference(input: &str) -> Option<String> {
        if input.chars().count() > crate::phone::MAX_PHONE_CHARS {
            return None;
        }
        let number = phonenumber::parse(None, input).ok()?;
        phonenumber::is_valid(&number)
            .then(|| number.format().mode(phonenumber::Mode::E164).to_string())
    }

    /// `Phone::parse`, the plain-form split and the validity check each give phonenumber's
    /// answer for `input`.
    fn agree(input: &str) -> Result<(), TestCaseError> {
        let ours = Phone::parse(input).ok().map(|p| p.as_e164().to_owned());
        prop_assert_eq!(&ours, &reference(input), "Phone::parse({:?})", input);
        let parsed = phonenumber::parse(None, input);
        if let Some((code, national)) = split_plain(input) {
            let number = parsed.as_ref().map_err(|e| {
                TestCaseError::fail(format!("{input:?} split here, refused by phonenumber: {e}"))
            })?;
            prop_assert_eq!(code, number.code().value(), "code of {:?}", input);
            prop_assert_eq!(
                national,
                number.national().to_string(),
                "national of {:?}",
                input
            );
        }
        if let Ok(number) = parsed {
            let national = number.national().to_string();
            prop_assert_eq!(
                is_valid(number.code().value(), &national),
                Some(phonenumber::is_valid(&number)),
                "validity of {:?} parsed as {:?}",
                input,
                number
            );
        }
        Ok(())
    }

    /// Every example number of every region in the metadata, and its neighbours one digit
    /// longer, shorter and changed, with and without a national prefix `0`.
    #[test]
    fn agrees_with_phonenumber_on_every_example_number() {
        let mut checked = 0;
        for meta in DATABASE.iter() {
            let general = meta.descriptors().general().example();
            for example in general.into_iter().chain(typed_examples(meta)) {
                let code = meta.country_code();
                let full = format!("+{code}{example}");
                let mut shorter = full.clone();
                shorter.pop();
                let changed: String = full
                    .char_indices()
                    .map(|(i, c)| match (i + 1 == full.len(), c) {
                        (true, '9') => '0',
                        (true, c) => {
                            char::from_digit(c.to_digit(10).unwrap_or(0) + 1, 10).unwrap_or('0')
                        }
                        (false, c) => c,
                    })
                    .collect();
                let prefixed = format!("+{code}0{example}");
                let spaced = format!("+{code} {example}");
                for input in [
                    full.clone(),
                    format!("{full}5"),
                    shorter,
                    changed,
                    prefixed,
                    spaced,
                ] {
                    agree(&input).unwrap();
                    checked += 1;
                }
            }
        }
        assert!(checked > 5000, "only {checked} numbers checked");
    }

    /// Type and region of every example number agree with phonenumber's where its answer is
    /// libphonenumber's: phonenumber types the national number without its leading zeros, so
    /// numbers that have some (Italy's fixed lines) are compared by validity only.
    #[test]
    fn classifies_every_example_number_as_phonenumber_does() {
        let (mut checked, mut kinds) = (0, std::collections::HashSet::new());
        for meta in DATABASE.iter() {
            for example in typed_examples(meta) {
                let Ok(phone) = Phone::parse(&format!("+{}{example}", meta.country_code())) else {
                    continue;
                };
                let number = phonenumber::parse(None, phone.as_e164()).unwrap();
                if number.national().zeros() > 0 {
                    continue;
                }
                let theirs = NumberType::from(number.number_type(&DATABASE));
                assert_eq!(phone.number_type(), theirs, "type of {}", phone.as_e164());
                let region = number.country().id().map(|id| id.as_ref().to_owned());
                assert_eq!(
                    phone.region().map(str::to_owned),
                    region.filter(|r| r != "001"),
                    "region of {}",
                    phone.as_e164()
                );
                kinds.insert(theirs);
                checked += 1;
            }
        }
        assert!(checked > 1000, "only {checked} numbers checked");
        assert!(kinds.len() >= 10, "{kinds:?}");
    }

    /// The comparisons test this module only if no calling code falls back to phonenumber.
    #[test]
    fn every_calling_code_in_the_metadata_compiles() {
        let mut codes: Vec<u16> = DATABASE.iter().map(|m| m.country_code()).collect();
        codes.sort_unstable();
        codes.dedup();
        assert!(codes.len() > 200, "{} calling codes", codes.len());
        let (mut bytes, start) = (0, std::time::Instant::now());
        for code in codes {
            match Rules::compile(code) {
                Rules::Compiled(source) => bytes += source.memory_usage(),
                Rules::NoRegion => panic!("+{code} has metadata but no region"),
                Rules::Fallback => panic!("+{code} does not compile"),
            }
        }
        eprintln!(
            "all calling codes: {bytes} bytes of DFAs, compiled in {:?}",
            start.elapsed()
        );
    }

    /// The plain form is what most numbers arrive in: the split must take it, not hand it on.
    #[test]
    fn plain_numbers_take_the_split() {
        assert_eq!(split_plain("+41791234567"), Some((41, "791234567")));
        assert_eq!(split_plain("+16502530000"), Some((1, "6502530000")));
        assert_eq!(split_plain("+390236618300"), Some((39, "0236618300")));
        // A national prefix after the calling code: phonenumber strips it, so it decides.
        assert_eq!(split_plain("+4407911123456"), None);
        assert_eq!(split_plain("+41 79 123 45 67"), None);
        assert_eq!(split_plain("+0041791234567"), None);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(1024))]

        /// Random digits after calling codes with national prefixes, shared codes (+1, +7,
        /// +44, +262, +590, +599) and non-geographic ones (+800, +870, +882, +979).
        #[test]
        fn agrees_with_phonenumber_on_random_numbers(
            code in prop::sample::select(vec![1u16, 7, 27, 33, 39, 41, 44, 49, 52, 54, 55, 61, 62, 64, 81, 86, 90, 91, 234, 262, 290, 358, 590, 599, 800, 870, 882, 979]),
            prefix in prop::sample::select(vec!["", "", "", "0", "8", "1", "00", "01", "044", "9"]),
            digits in "[0-9]{1,14}",
        ) {
            agree(&format!("+{code}{prefix}{digits}"))?;
        }

        /// Any calling code at all, assigned or not.
        #[test]
        fn agrees_with_phonenumber_on_any_calling_code(input in "\\+[1-9][0-9]{2,17}") {
            agree(&input)?;
        }

        /// Written in other forms: spaces, dashes, brackets, letters, a second plus, an
        /// extension.
        #[test]
        fn agrees_with_phonenumber_on_formatted_input(input in "\\+?[0-9 ()+A-Za-z-]{3,20}") {
            agree(&input)?;
        }
    }
}
