//! Phone numbers as leads type them, turned into E.164 for identity and
//! sending; and WhatsApp IDs, which are kept exactly as Meta gives them.
//!
//! Parsing and validation use the `phonenumber` crate, a port of Google's
//! libphonenumber carrying its per-country metadata (trunk prefixes,
//! international prefixes, number ranges and lengths). A hand-written table
//! of calling codes would accept a lead's mistyped number and fail only at
//! send time (131026); libphonenumber knows, for example, that an Indian
//! mobile has ten digits starting 6-9 and that Argentina's `011 15 ...` means
//! `+54 9 11 ...`. It builds here without network access at run time (the
//! metadata is compiled in), and is the library the ecosystem trusts for this.

use phonenumber::country::Id;
use phonenumber::metadata::{Database, Descriptor, DATABASE};
use phonenumber::{Metadata, ParseError, PhoneNumber};
use regex::{Regex, RegexBuilder};
use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, OnceLock, RwLock};

/// Why a typed phone number could not be put in E.164. Messages never quote
/// the number, so they are safe to log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PhoneError {
    /// Nothing but blanks and punctuation.
    Empty,
    /// A letter or symbol that has no place in a phone number.
    InvalidCharacter { character: char, position: usize },
    /// `default_region` is not an ISO 3166 alpha-2 code libphonenumber knows.
    UnknownRegion { region: String },
    /// The number starts with `+` or `00` and a code no country uses.
    UnknownCountryCode,
    /// Too few digits for any number of its country.
    TooShort,
    /// Too many digits for any number of its country.
    TooLong,
    /// The right shape, but not a number range in use in that country.
    NotInUse { region: Option<String> },
}

impl fmt::Display for PhoneError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PhoneError::Empty => f.write_str("no phone number given"),
            PhoneError::InvalidCharacter {
                character,
                position,
            } => write!(
                f,
                "`{character}` at position {position} has no place in a phone number; \
                 use digits, with an optional leading `+`"
            ),
            PhoneError::UnknownRegion { region } => write!(
                f,
                "unknown default region `{region}`; use an ISO 3166 code such as `IN` or `AE`"
            ),
            PhoneError::UnknownCountryCode => f.write_str(
                "the number starts with a country code no country uses; \
                 check the digits after `+` or `00`",
            ),
            PhoneError::TooShort => {
                f.write_str("too few digits for a phone number; a digit may be missing")
            }
            PhoneError::TooLong => {
                f.write_str("too many digits for a phone number; a digit may be repeated")
            }
            PhoneError::NotInUse {
                region: Some(region),
            } => write!(
                f,
                "not a phone number in use in `{region}`; check for a missing or extra digit, \
                 or a missing country code"
            ),
            PhoneError::NotInUse { region: None } => f.write_str(
                "not a phone number in use; check for a missing or extra digit, \
                 or a missing country code",
            ),
        }
    }
}

impl std::error::Error for PhoneError {}

/// The shortest and longest E.164 numbers, counting digits after `+`.
const E164_DIGITS: std::ops::RangeInclusive<usize> = 8..=15;

/// A number as typed by a lead, in E.164 (`+919876543210`).
///
/// Accepts spaces, dashes, dots, slashes and parentheses (`+91 (98200) 12-345`),
/// a leading `+` or `00`, national numbers of `default_region` with or
/// without its trunk prefix (`09876543210` in `IN`), `(0)` after a country
/// code, Arabic-Indic, Persian, Devanagari and full-width digits, and the
/// direction marks that come with numbers copied from right-to-left text.
/// Rejects letters (no `1-800-FLOWERS`, no `ext. 12`) and numbers that are
/// not in use in their country. Mexico's retired mobile `1` after `+52` and
/// its old `044`/`045`/`01` prefixes are dropped, since leads still type them.
///
/// This is for what people type. WhatsApp IDs are not normalized: see
/// [`wa_id_to_e164`].
pub fn normalize_phone(raw: &str, default_region: &str) -> Result<String, PhoneError> {
    let region = region_id(default_region)?;
    let typed = typed_digits(raw)?;
    let first = parse(&typed, region);
    if first.is_err() {
        if let Some(retry) = mexican_legacy_form(&typed, default_region) {
            if let Ok(e164) = parse(&retry, region) {
                return Ok(e164);
            }
        }
    }
    first
}

/// A WhatsApp ID (`wa_id`, `from`, `recipient_id`: digits only) as
/// `+digits`, exactly as given: Meta's ID can differ from the number the
/// person types (Brazil's ninth digit, Mexico `521`, Argentina `549`), so it
/// is never "corrected". `None` if it is not all digits or has an impossible
/// length.
pub fn wa_id_to_e164(wa_id: &str) -> Option<String> {
    let wa_id = wa_id.trim();
    let digits_only = wa_id.bytes().all(|b| b.is_ascii_digit());
    (digits_only && E164_DIGITS.contains(&wa_id.len())).then(|| format!("+{wa_id}"))
}

/// The region's libphonenumber ID; `UK` is accepted for `GB`.
fn region_id(region: &str) -> Result<Id, PhoneError> {
    let upper = region.trim().to_ascii_uppercase();
    let upper = if upper == "UK" {
        "GB".to_string()
    } else {
        upper
    };
    upper.parse().map_err(|_| PhoneError::UnknownRegion {
        region: region.trim().to_string(),
    })
}

/// What the person typed, reduced to ASCII digits and whether it was
/// international (`+` or `00`).
#[derive(Debug, PartialEq, Eq)]
struct Typed {
    international: bool,
    digits: String,
}

fn typed_digits(raw: &str) -> Result<Typed, PhoneError> {
    let mut digits = String::with_capacity(raw.len());
    let mut plus = false;
    for (position, character) in raw.chars().enumerate() {
        if let Some(digit) = digit_value(character) {
            digits.push(digit);
        } else if matches!(character, '+' | '\u{FF0B}') && !plus && digits.is_empty() {
            plus = true;
        } else if !(character.is_whitespace()
            || matches!(
                character,
                '-' | '.' | '/' | '(' | ')' | '[' | ']' | '\u{2010}'..='\u{2015}' | '\u{2212}'
            )
            || is_direction_mark(character))
        {
            return Err(PhoneError::InvalidCharacter {
                character,
                position: position + 1,
            });
        }
    }
    if digits.is_empty() {
        return Err(PhoneError::Empty);
    }
    if !plus {
        if let Some(rest) = digits.strip_prefix("00") {
            return Ok(Typed {
                international: true,
                digits: rest.to_string(),
            });
        }
    }
    Ok(Typed {
        international: plus,
        digits,
    })
}

/// The ASCII digit for a decimal digit in the scripts leads in our markets
/// type: ASCII, Arabic-Indic, Extended Arabic-Indic (Persian, Urdu),
/// Devanagari and full-width.
fn digit_value(character: char) -> Option<char> {
    let zero = match character {
        '0'..='9' => '0',
        '\u{0660}'..='\u{0669}' => '\u{0660}',
        '\u{06F0}'..='\u{06F9}' => '\u{06F0}',
        '\u{0966}'..='\u{096F}' => '\u{0966}',
        '\u{FF10}'..='\u{FF19}' => '\u{FF10}',
        _ => return None,
    };
    let offset = u32::from(character) - u32::from(zero);
    char::from_digit(offset, 10)
}

fn is_direction_mark(character: char) -> bool {
    matches!(
        character,
        '\u{200E}' | '\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}' | '\u{FEFF}'
    )
}

/// The E.164 form of a valid number.
fn parse(typed: &Typed, region: Id) -> Result<String, PhoneError> {
    let text = if typed.international {
        format!("+{}", typed.digits)
    } else {
        typed.digits.clone()
    };
    let number = phonenumber::parse(Some(region), &text).map_err(|error| match error {
        ParseError::InvalidCountryCode => PhoneError::UnknownCountryCode,
        ParseError::TooLong => PhoneError::TooLong,
        ParseError::NoNumber | ParseError::TooShortAfterIdd | ParseError::TooShortNsn => {
            PhoneError::TooShort
        }
        ParseError::MalformedInteger(_) => PhoneError::TooLong,
    })?;
    // E.164 is `+`, the country code and the national number (with the
    // leading zeros Italy keeps); written directly, as the formatter takes
    // a fifth of the whole normalization to produce the same text.
    let national = number.national().to_string();
    let e164 = format!("+{}{national}", number.code().value());
    let digits = e164.len().saturating_sub(1);
    if digits < *E164_DIGITS.start() {
        Err(PhoneError::TooShort)
    } else if digits > *E164_DIGITS.end() {
        Err(PhoneError::TooLong)
    } else if is_valid(&number, &national) {
        Ok(e164)
    } else {
        Err(PhoneError::NotInUse {
            region: number.country().id().map(|id| id.as_ref().to_string()),
        })
    }
}

/// Whether libphonenumber holds `number` (whose national significant
/// number, with its leading zeros, is `national`) valid: the answer of
/// `phonenumber::is_valid`, asked of regexes compiled once.
///
/// The crate keeps its patterns in one LRU cache of compiled regexes behind
/// a global mutex, and finds each by hashing the whole pattern text: ten
/// such lookups for one number were three quarters of a normalization, and
/// every worker thread queued on that mutex. Here each region's patterns are
/// compiled once, anchored at the start, and kept for the process; the test
/// is the crate's own (see `phonenumber::validator::is_valid_with`): the
/// region's general pattern, and then any one of the number types.
fn is_valid(number: &PhoneNumber, national: &str) -> bool {
    compiled_is_valid(number.code().value(), national)
        // A pattern our regex engine refuses: the crate's own check.
        .unwrap_or_else(|| phonenumber::is_valid(number))
}

/// [`is_valid`] from the compiled patterns; `None` when one of the patterns
/// it needs does not compile.
fn compiled_is_valid(code: u16, national: &str) -> Option<bool> {
    let database: &'static Database = &DATABASE;
    Some(match metadata_for(database, code, national)? {
        Some(metadata) => ranges(metadata)?.is_valid(national),
        None => false,
    })
}

/// The metadata that decides a number of calling code `code`, as
/// `phonenumber::validator::source_for` picks it: the one region of the
/// code, or among the regions that share it (`+1`, `+7`, `+44`...) the
/// first whose leading digits start the number, or else whose ranges hold
/// it. `Some(None)` when none does; `None` when a pattern does not compile.
fn metadata_for(
    database: &'static Database,
    code: u16,
    national: &str,
) -> Option<Option<&'static Metadata>> {
    let Some(regions) = database.region(&code) else {
        return Some(None);
    };
    if let [region] = regions.as_slice() {
        return Some(if *region == "001" {
            database.by_code(&code).and_then(|m| m.into_iter().next())
        } else {
            // The crate goes through `country::Id`: a region it cannot name
            // has no metadata.
            region
                .parse::<Id>()
                .ok()
                .and_then(|id| database.by_id(id.as_ref()))
        });
    }
    for region in regions {
        let Some(metadata) = database.by_id(region) else {
            continue;
        };
        let ranges = ranges(metadata)?;
        let decides = match &ranges.leading_digits {
            Some(leading) => leading.is_match(national),
            None => ranges.is_valid(national),
        };
        if decides {
            return Some(
                region
                    .parse::<Id>()
                    .ok()
                    .and_then(|id| database.by_id(id.as_ref())),
            );
        }
    }
    Some(None)
}

/// One region's number patterns, compiled.
struct Ranges {
    /// The pattern every number of the region matches.
    general: Pattern,
    /// One pattern per number type (fixed line, mobile, toll free...).
    types: Vec<Pattern>,
    /// The leading digits that pick this region among those sharing its code.
    leading_digits: Option<Regex>,
}

/// A descriptor's possible lengths and its national number pattern,
/// anchored at the start as `Descriptor::is_match` tests it.
struct Pattern {
    lengths: Vec<u16>,
    regex: Regex,
}

impl Pattern {
    fn new(descriptor: &Descriptor) -> Option<Pattern> {
        Some(Pattern {
            lengths: descriptor.possible_length().to_vec(),
            regex: anchored(descriptor.national_number().as_str())?,
        })
    }

    /// `Descriptor::is_match`: a possible length, and the pattern matches
    /// from the first digit.
    fn is_match(&self, national: &str) -> bool {
        let length = u16::try_from(national.len()).unwrap_or(u16::MAX);
        (self.lengths.is_empty() || self.lengths.contains(&length)) && self.regex.is_match(national)
    }
}

impl Ranges {
    fn new(metadata: &Metadata) -> Option<Ranges> {
        let d = metadata.descriptors();
        // Every type `phonenumber::validator::number_type` tries; the order
        // does not matter, as any of them makes the number valid.
        let types = [
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
        Some(Ranges {
            general: Pattern::new(d.general())?,
            types: types
                .into_iter()
                .flatten()
                .map(Pattern::new)
                .collect::<Option<_>>()?,
            leading_digits: match metadata.leading_digits() {
                Some(leading) => Some(anchored(leading.as_str())?),
                None => None,
            },
        })
    }

    /// `phonenumber::validator::number_type(..) != Type::Unknown`.
    fn is_valid(&self, national: &str) -> bool {
        self.general.is_match(national) && self.types.iter().any(|t| t.is_match(national))
    }
}

/// A metadata pattern compiled as the crate compiles it (whitespace in it
/// ignored), matching only from the start of the text: the crate's test is
/// that the leftmost match starts there. The newline ends any `#` comment.
fn anchored(pattern: &str) -> Option<Regex> {
    RegexBuilder::new(&format!("^(?:{pattern}\n)"))
        .ignore_whitespace(true)
        .build()
        .ok()
}

/// The compiled patterns of `metadata`, compiled on first use. `None` if a
/// pattern does not compile.
fn ranges(metadata: &'static Metadata) -> Option<Arc<Ranges>> {
    // Keyed by the metadata's address: it lives in the crate's static
    // database for the whole process, and non-geographic entries share
    // the ID `001`.
    static COMPILED: OnceLock<RwLock<HashMap<usize, Option<Arc<Ranges>>>>> = OnceLock::new();
    let compiled = COMPILED.get_or_init(Default::default);
    let key = std::ptr::from_ref(metadata) as usize;
    if let Some(found) = compiled.read().ok()?.get(&key) {
        return found.clone();
    }
    let built = Ranges::new(metadata).map(Arc::new);
    compiled.write().ok()?.entry(key).or_insert(built).clone()
}

/// Mexico dropped the mobile `1` after `+52` and the `044`/`045`/`01` dialing
/// prefixes in 2019-2020, but people still type them: the number without.
fn mexican_legacy_form(typed: &Typed, default_region: &str) -> Option<Typed> {
    let international = |digits: &str| Typed {
        international: true,
        digits: format!("52{digits}"),
    };
    if typed.international || typed.digits.starts_with("521") {
        let rest = typed.digits.strip_prefix("521")?;
        return (rest.len() == 10).then(|| international(rest));
    }
    if !default_region.trim().eq_ignore_ascii_case("MX") {
        return None;
    }
    ["044", "045", "01"].iter().find_map(|prefix| {
        let rest = typed.digits.strip_prefix(prefix)?;
        (rest.len() == 10).then(|| international(rest))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e164(raw: &str, region: &str) -> String {
        normalize_phone(raw, region).unwrap_or_else(|error| panic!("{raw} in {region}: {error}"))
    }

    #[test]
    fn numbers_typed_in_each_market_become_e164() {
        let cases = [
            // India: trunk 0, spaces, country code without +, 0091.
            ("IN", "09876543210", "+919876543210"),
            ("IN", "98765 43210", "+919876543210"),
            ("IN", "+91-98200-12345", "+919820012345"),
            ("IN", "(+91) 98200 12345", "+919820012345"),
            ("IN", "0091 98200 12345", "+919820012345"),
            ("IN", "919820012345", "+919820012345"),
            ("IN", "+91 098200 12345", "+919820012345"),
            // The Gulf.
            ("AE", "050 123 4567", "+971501234567"),
            ("AE", "+971 50 123 4567", "+971501234567"),
            ("SA", "0501234567", "+966501234567"),
            ("SA", "00966 50 123 4567", "+966501234567"),
            ("QA", "3312 3456", "+97433123456"),
            ("KW", "5001 2345", "+96550012345"),
            ("BH", "3600 1234", "+97336001234"),
            ("OM", "9212 3456", "+96892123456"),
            // Europe.
            ("GB", "07911 123456", "+447911123456"),
            ("UK", "+44 (0) 7911 123456", "+447911123456"),
            ("ES", "612 34 56 78", "+34612345678"),
            ("PT", "912 345 678", "+351912345678"),
            ("FR", "06 12 34 56 78", "+33612345678"),
            ("DE", "+49 (0)151 23456789", "+4915123456789"),
            // The Americas.
            ("US", "(415) 555-2671", "+14155552671"),
            ("US", "415.555.2671", "+14155552671"),
            ("CA", "604-555-1234", "+16045551234"),
            ("US", "00 44 7911 123456", "+447911123456"),
            ("BR", "(11) 91234-5678", "+5511912345678"),
            ("BR", "+55 11 91234-5678", "+5511912345678"),
            ("MX", "55 1234 5678", "+525512345678"),
            ("AR", "+54 9 11 2345-6789", "+5491123456789"),
            ("AR", "011 15-2345-6789", "+5491123456789"),
            // Asia-Pacific.
            ("SG", "8123 4567", "+6581234567"),
            ("AU", "0412 345 678", "+61412345678"),
            // A number with its country code wins over the default region.
            ("AE", "+91 98200 12345", "+919820012345"),
        ];
        for (region, raw, expected) in cases {
            assert_eq!(e164(raw, region), expected, "{raw} in {region}");
        }
    }

    #[test]
    fn mexicos_retired_prefixes_are_dropped() {
        assert_eq!(e164("+52 1 55 1234 5678", "MX"), "+525512345678");
        assert_eq!(e164("+52 1 55 1234 5678", "IN"), "+525512345678");
        assert_eq!(e164("044 55 1234 5678", "MX"), "+525512345678");
        assert_eq!(e164("01 55 1234 5678", "MX"), "+525512345678");
    }

    #[test]
    fn digits_of_other_scripts_and_direction_marks_are_read() {
        // Arabic-Indic, as typed on an Arabic keyboard, wrapped in RTL marks.
        assert_eq!(e164("\u{200F}٠٥٠١٢٣٤٥٦٧\u{200F}", "AE"), "+971501234567");
        // Persian digits and a full-width plus.
        assert_eq!(e164("＋۹۷۱ ۵۰ ۱۲۳ ۴۵۶۷", "IN"), "+971501234567");
        // Devanagari.
        assert_eq!(e164("९८७६५ ४३२१०", "IN"), "+919876543210");
        // A non-breaking space and an en dash.
        assert_eq!(e164("98765\u{a0}43210", "IN"), "+919876543210");
        assert_eq!(e164("98765–43210", "IN"), "+919876543210");
    }

    #[test]
    fn letters_and_stray_symbols_are_rejected_with_their_position() {
        assert_eq!(
            normalize_phone("1-800-FLOWERS", "US"),
            Err(PhoneError::InvalidCharacter {
                character: 'F',
                position: 7
            })
        );
        assert!(matches!(
            normalize_phone("+91 98200 12345 ext 12", "IN"),
            Err(PhoneError::InvalidCharacter { character: 'e', .. })
        ));
        assert!(matches!(
            normalize_phone("+91 +98200 12345", "IN"),
            Err(PhoneError::InvalidCharacter { character: '+', .. })
        ));
        assert!(matches!(
            normalize_phone("98200*12345", "IN"),
            Err(PhoneError::InvalidCharacter { character: '*', .. })
        ));
    }

    #[test]
    fn wrong_lengths_and_unused_ranges_are_rejected() {
        assert_eq!(normalize_phone("  ( ) - ", "IN"), Err(PhoneError::Empty));
        assert_eq!(normalize_phone("12", "IN"), Err(PhoneError::TooShort));
        assert_eq!(normalize_phone("+91", "IN"), Err(PhoneError::TooShort));
        assert_eq!(
            normalize_phone("+999 1234 5678", "IN"),
            Err(PhoneError::UnknownCountryCode)
        );
        // One digit short of an Indian mobile.
        assert_eq!(
            normalize_phone("98765 4321", "IN"),
            Err(PhoneError::NotInUse {
                region: Some("IN".into())
            })
        );
        assert!(normalize_phone("+91 98765 43210 12345 6", "IN").is_err());
        // US 555 numbers outside real area codes.
        assert!(normalize_phone("+1 555 0100", "US").is_err());
    }

    #[test]
    fn an_unknown_region_is_a_configuration_error() {
        let error = normalize_phone("98765 43210", "India").unwrap_err();
        assert_eq!(
            error,
            PhoneError::UnknownRegion {
                region: "India".into()
            }
        );
        assert_eq!(
            error.to_string(),
            "unknown default region `India`; use an ISO 3166 code such as `IN` or `AE`"
        );
        assert_eq!(e164("98765 43210", " in "), "+919876543210");
    }

    #[test]
    fn error_messages_never_quote_the_number() {
        let errors = [
            normalize_phone("98765 4321", "IN").unwrap_err(),
            normalize_phone("12", "IN").unwrap_err(),
            normalize_phone("+999 1234 5678", "IN").unwrap_err(),
        ];
        for error in errors {
            let message = error.to_string();
            assert!(
                !message.contains("98765") && !message.contains("999"),
                "{message}"
            );
        }
    }

    #[test]
    fn wa_ids_are_kept_as_meta_gives_them() {
        assert_eq!(
            wa_id_to_e164("919820012345").as_deref(),
            Some("+919820012345")
        );
        // Brazil: an older account's wa_id lacks the ninth digit the person
        // types; the wa_id is not "fixed" and the typed number keeps its 9.
        assert_eq!(
            wa_id_to_e164("551112345678").as_deref(),
            Some("+551112345678")
        );
        assert_eq!(e164("(11) 91234-5678", "BR"), "+5511912345678");
        // Mexico: wa_id with the retired 1; the typed number without it.
        assert_eq!(
            wa_id_to_e164("5215512345678").as_deref(),
            Some("+5215512345678")
        );
        assert_eq!(e164("55 1234 5678", "MX"), "+525512345678");
        // Argentina: wa_id with the mobile 9; typed numbers may lack it.
        assert_eq!(
            wa_id_to_e164("5491123456789").as_deref(),
            Some("+5491123456789")
        );
        assert_eq!(e164("+54 11 2345-6789", "AR"), "+541123456789");
    }

    proptest::proptest! {
        /// Whatever a lead types, the answer is an error or a well-formed
        /// E.164 number, never a panic from the parser underneath.
        #[test]
        fn anything_typed_gives_e164_or_an_error(raw in "[+0-9 ()./a-z-]{0,24}|\\PC{0,24}") {
            for region in ["IN", "AE", "BR", "MX", "US"] {
                if let Ok(e164) = normalize_phone(&raw, region) {
                    proptest::prop_assert!(e164.starts_with('+'));
                    proptest::prop_assert!(E164_DIGITS.contains(&(e164.len() - 1)));
                    proptest::prop_assert!(e164[1..].bytes().all(|b| b.is_ascii_digit()));
                    proptest::prop_assert!(!e164.starts_with("+0"));
                }
            }
        }
    }

    /// The compiled check answers as `phonenumber::is_valid` does, for every
    /// region's example numbers and for those numbers one digit longer,
    /// shorter, or with a digit changed.
    #[test]
    fn validity_is_the_crates_own() {
        let mut checked = 0;
        for metadata in DATABASE.iter() {
            let d = metadata.descriptors();
            let examples = [
                Some(d.general()),
                d.fixed_line(),
                d.mobile(),
                d.toll_free(),
                d.premium_rate(),
                d.shared_cost(),
                d.voip(),
                d.personal_number(),
                d.pager(),
                d.uan(),
                d.voicemail(),
            ]
            .into_iter()
            .flatten()
            .filter_map(Descriptor::example);
            for example in examples {
                let mut variants = vec![
                    example.to_string(),
                    format!("{example}0"),
                    format!("{example}7"),
                    example[..example.len() - 1].to_string(),
                ];
                for i in 0..example.len() {
                    for digit in ['0', '5', '9'] {
                        let mut changed: Vec<char> = example.chars().collect();
                        changed[i] = digit;
                        variants.push(changed.into_iter().collect());
                    }
                }
                for national in variants {
                    let text = format!("+{}{national}", metadata.country_code());
                    let Ok(number) = phonenumber::parse(None, &text) else {
                        continue;
                    };
                    let national = number.national().to_string();
                    // Every pattern compiles: the crate's check is never the fallback.
                    let code = number.code().value();
                    assert!(compiled_is_valid(code, &national).is_some(), "{text}");
                    assert_eq!(
                        is_valid(&number, &national),
                        phonenumber::is_valid(&number),
                        "{text} ({})",
                        metadata.id()
                    );
                    checked += 1;
                }
            }
        }
        assert!(checked > 10_000, "{checked}");
    }

    #[test]
    fn wa_ids_must_be_digits_of_a_possible_length() {
        assert_eq!(wa_id_to_e164("+919820012345"), None);
        assert_eq!(wa_id_to_e164("91 98200 12345"), None);
        assert_eq!(wa_id_to_e164("1234567"), None);
        assert_eq!(wa_id_to_e164("1234567890123456"), None);
        assert_eq!(wa_id_to_e164(""), None);
    }
}
