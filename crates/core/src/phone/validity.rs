//! Whether a parsed number is valid, by libphonenumber's metadata, without a process-wide lock.
//!
//! `phonenumber::is_valid` answers the same question, but every regular expression it runs goes
//! through one mutex-guarded LRU cache keyed by the pattern text (hashed with SipHash on every
//! look-up). On two cores that lock was the largest single cost of adding a registration. Here
//! the same patterns, from the same metadata, are compiled once per country calling code on
//! first use and then only read, so concurrent callers share nothing mutable but the regex
//! crate's own per-thread scratch space.
//!
//! The rules are phonenumber's, reproduced exactly (a property test compares the two answers):
//! a descriptor matches when the length is one of its possible lengths (if it lists any) and its
//! pattern matches at the start of the national number; a number is valid when its region's
//! general descriptor and at least one type descriptor match. Should a pattern ever fail to
//! compile here, that calling code falls back to `phonenumber::is_valid`.

use std::str::FromStr;
use std::sync::OnceLock;

use phonenumber::country;
use phonenumber::metadata::{Descriptor, Metadata, DATABASE};
use phonenumber::PhoneNumber;
use regex::{Regex, RegexBuilder};

/// Calling codes are at most three digits.
const CODES: usize = 1000;

/// Compiled rules per calling code, filled on first use of each code.
static RULES: [OnceLock<Rules>; CODES] = [const { OnceLock::new() }; CODES];

/// Whether `number` is valid; the same answer as `phonenumber::is_valid(number)`. `national`
/// is its national significant number with leading zeros (what `NationalNumber` displays).
pub(super) fn is_valid(number: &PhoneNumber, national: &str) -> bool {
    let code = number.code().value();
    let Some(slot) = RULES.get(usize::from(code)) else {
        return phonenumber::is_valid(number);
    };
    match slot.get_or_init(|| Rules::compile(code)) {
        Rules::NoRegion => false,
        Rules::Fallback => phonenumber::is_valid(number),
        Rules::Compiled(source) => source
            .region_for(national)
            .is_some_and(|region| region.is_valid(national)),
    }
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
    Single(Region),
    /// Several regions share the code; the first whose leading digits (or, lacking those,
    /// whose types) match the number owns it.
    Shared(Vec<(Option<Regex>, Region)>),
}

impl Source {
    fn region_for(&self, national: &str) -> Option<&Region> {
        match self {
            Source::Single(region) => Some(region),
            Source::Shared(regions) => regions.iter().find_map(|(leading, region)| {
                let owns = match leading {
                    Some(leading) => leading.is_match(national),
                    None => region.is_valid(national),
                };
                owns.then_some(region)
            }),
        }
    }
}

impl Rules {
    fn compile(code: u16) -> Self {
        match Self::try_compile(code) {
            Ok(Some(source)) => Rules::Compiled(source),
            Ok(None) => Rules::NoRegion,
            Err(error) => {
                tracing::warn!(code, %error, "phone metadata pattern did not compile; using phonenumber's validator for this calling code");
                Rules::Fallback
            }
        }
    }

    fn try_compile(code: u16) -> Result<Option<Source>, regex::Error> {
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
                Some(meta) => Ok(Some(Source::Single(Region::compile(meta)?))),
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
                .map(|p| anchored(p.as_str()))
                .transpose()?;
            shared.push((leading, Region::compile(meta)?));
        }
        Ok(Some(Source::Shared(shared)))
    }
}

/// One region's descriptors: the general one and the typed ones phonenumber's `number_type`
/// consults, in its order.
struct Region {
    general: Pattern,
    types: Vec<Pattern>,
}

impl Region {
    fn compile(meta: &Metadata) -> Result<Self, regex::Error> {
        let d = meta.descriptors();
        let typed = [
            d.premium_rate(),
            d.toll_free(),
            d.shared_cost(),
            d.voip(),
            d.personal_number(),
            d.pager(),
            d.uan(),
            d.voicemail(),
            d.fixed_line(),
            d.mobile(),
        ];
        Ok(Self {
            general: Pattern::compile(d.general())?,
            types: typed
                .into_iter()
                .flatten()
                .map(Pattern::compile)
                .collect::<Result<_, _>>()?,
        })
    }

    fn is_valid(&self, national: &str) -> bool {
        self.general.matches(national) && self.types.iter().any(|t| t.matches(national))
    }
}

struct Pattern {
    lengths: Vec<u16>,
    regex: Regex,
}

impl Pattern {
    fn compile(descriptor: &Descriptor) -> Result<Self, regex::Error> {
        Ok(Self {
            lengths: descriptor.possible_length().to_vec(),
            regex: anchored(descriptor.national_number().as_str())?,
        })
    }

    fn matches(&self, national: &str) -> bool {
        let length_ok = self.lengths.is_empty()
            || u16::try_from(national.len()).is_ok_and(|len| self.lengths.contains(&len));
        length_ok && self.regex.is_match(national)
    }
}

/// phonenumber accepts a pattern when its leftmost match starts at 0, which is a match
/// anchored at the start (and only there: metadata patterns are not anchored at the end).
fn anchored(pattern: &str) -> Result<Regex, regex::Error> {
    RegexBuilder::new(&format!("^(?:{pattern})"))
        .ignore_whitespace(true)
        .build()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn agree(input: &str) -> Result<(), TestCaseError> {
        if let Ok(number) = phonenumber::parse(None, input) {
            prop_assert_eq!(
                is_valid(&number, &number.national().to_string()),
                phonenumber::is_valid(&number),
                "{} parsed as {:?}",
                input,
                number
            );
        }
        Ok(())
    }

    /// Every example number of every region in the metadata, and its neighbours one digit
    /// longer, shorter and changed, get phonenumber's answer.
    #[test]
    fn agrees_with_phonenumber_on_every_example_number() {
        let mut checked = 0;
        for meta in DATABASE.iter() {
            let d = meta.descriptors();
            let descriptors = [
                Some(d.general()),
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
            ];
            for example in descriptors
                .into_iter()
                .flatten()
                .filter_map(|d| d.example())
            {
                let full = format!("+{}{example}", meta.country_code());
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
                for input in [full.clone(), format!("{full}5"), shorter, changed] {
                    agree(&input).unwrap();
                    checked += 1;
                }
            }
        }
        assert!(checked > 1000, "only {checked} numbers checked");
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(1024))]

        /// Random digits after random calling codes (shared codes such as +1 and +7 included)
        /// get phonenumber's answer.
        #[test]
        fn agrees_with_phonenumber_on_random_numbers(
            code in prop::sample::select(vec![1u16, 7, 33, 39, 41, 44, 49, 61, 64, 81, 86, 91, 262, 290, 358, 590, 599, 800, 870, 882, 979]),
            digits in "[0-9]{3,15}",
        ) {
            agree(&format!("+{code}{digits}"))?;
        }

        /// Any calling code at all, assigned or not.
        #[test]
        fn agrees_with_phonenumber_on_any_calling_code(input in "\\+[1-9][0-9]{4,16}") {
            agree(&input)?;
        }
    }
}
