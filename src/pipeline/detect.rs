//! Detectors of personal data inside string values.
//!
//! Each detector finds candidate spans with a regular expression and then
//! validates them where a checksum or structure exists (Luhn and issuer
//! prefixes for payment cards, mod-97 for IBANs, the address parser for
//! IPv6, the SSA rules for US SSNs), so look-alikes such as order ids,
//! SKUs, timestamps and version strings are left alone. A cheap byte-level
//! prefilter skips the regex for strings that cannot hold a match.

use regex::Regex;
use std::sync::OnceLock;

/// A built-in detector, or a user pattern.
#[derive(Debug, Clone)]
pub enum Detector {
    Email,
    PaymentCard,
    Phone,
    Ipv4,
    Ipv6,
    Iban,
    UsSsn,
    Pattern(Regex),
}

/// The built-in detectors, in the order `detectors = [...]` lists them.
const BUILTIN: [Detector; 7] = [
    Detector::Email,
    Detector::PaymentCard,
    Detector::Phone,
    Detector::Ipv4,
    Detector::Ipv6,
    Detector::Iban,
    Detector::UsSsn,
];

impl Detector {
    pub fn by_name(name: &str) -> Option<Detector> {
        BUILTIN.iter().find(|d| d.name() == name).cloned()
    }

    /// The names accepted in `detectors = [...]`.
    pub fn names() -> impl Iterator<Item = &'static str> {
        BUILTIN.iter().map(Detector::name)
    }

    pub fn name(&self) -> &'static str {
        match self {
            Self::Email => "email",
            Self::PaymentCard => "payment_card",
            Self::Phone => "phone",
            Self::Ipv4 => "ipv4",
            Self::Ipv6 => "ipv6",
            Self::Iban => "iban",
            Self::UsSsn => "us_ssn",
            Self::Pattern(_) => "regex",
        }
    }

    /// Byte ranges of every match in `s`, in order, not overlapping.
    pub fn find(&self, s: &str, shape: &Shape) -> Vec<(usize, usize)> {
        if !self.may_match(shape) {
            return Vec::new();
        }
        let re = match self {
            Self::Pattern(re) => re,
            _ => builtin(self),
        };
        re.find_iter(s)
            .map(|m| (m.start(), m.end()))
            .filter(|&(a, b)| self.valid(&s[a..b]))
            .collect()
    }

    fn may_match(&self, sh: &Shape) -> bool {
        match self {
            Self::Email => sh.at,
            Self::PaymentCard => sh.digit_run >= 13,
            Self::Phone => sh.digits >= 7,
            Self::Ipv4 => sh.digit_dots >= 3,
            Self::Ipv6 => sh.colons >= 2,
            Self::Iban => sh.country_check && sh.len >= 15,
            Self::UsSsn => sh.digit_run >= 9 && sh.dashes >= 2,
            Self::Pattern(_) => true,
        }
    }

    fn valid(&self, m: &str) -> bool {
        match self {
            Self::PaymentCard => is_card(m),
            Self::Ipv6 => m.parse::<std::net::Ipv6Addr>().is_ok(),
            Self::Iban => is_iban(m),
            Self::UsSsn => is_ssn(m),
            _ => true,
        }
    }
}

/// Character counts of a string, computed in one pass and shared by every
/// detector, so most strings skip most regexes.
#[derive(Debug, Default)]
pub struct Shape {
    len: usize,
    digits: usize,
    dashes: usize,
    colons: usize,
    at: bool,
    /// Longest run of digits where single spaces or dashes may separate them.
    digit_run: usize,
    /// Dots with a digit on each side.
    digit_dots: usize,
    /// Two capitals followed by two digits (an IBAN's start).
    country_check: bool,
}

impl Shape {
    pub fn of(s: &str) -> Shape {
        let mut sh = Shape {
            len: s.len(),
            ..Shape::default()
        };
        // The three bytes before the current one, newest first.
        let (mut p1, mut p2, mut p3) = (0u8, 0u8, 0u8);
        let mut run = 0;
        for &c in s.as_bytes() {
            if c.is_ascii_digit() {
                sh.digits += 1;
                let joined =
                    p1.is_ascii_digit() || (matches!(p1, b' ' | b'-') && p2.is_ascii_digit());
                run = if joined { run + 1 } else { 1 };
                sh.digit_run = sh.digit_run.max(run);
                if p1 == b'.' && p2.is_ascii_digit() {
                    sh.digit_dots += 1;
                }
                if p1.is_ascii_digit() && p2.is_ascii_uppercase() && p3.is_ascii_uppercase() {
                    sh.country_check = true;
                }
            } else {
                match c {
                    b'-' => sh.dashes += 1,
                    b':' => sh.colons += 1,
                    b'@' => sh.at = true,
                    _ => {}
                }
            }
            (p3, p2, p1) = (p2, p1, c);
        }
        sh
    }
}

fn builtin(d: &Detector) -> &'static Regex {
    static RES: OnceLock<Vec<Regex>> = OnceLock::new();
    // ASCII classes and word boundaries ((?-u)) keep every pattern on the
    // regex crate's fast DFA path.
    let res = RES.get_or_init(|| {
        [
            r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}",
            r"\b\d(?:[ -]?\d){12,18}\b",
            r"(?:\+\d{1,3}[ .-]?)?\(?\b\d{3}\)?[ .-]?\d{3}[ .-]\d{4}\b|\+[1-9]\d{7,14}\b|\+\d{1,3}(?:[ .-]\d{2,4}){3,5}\b",
            r"\b(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(?:\.(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)){3}\b",
            r"[0-9A-Fa-f]{0,4}(?::[0-9A-Fa-f]{0,4}){2,7}",
            r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,4})?\b",
            r"\b\d{3}-\d{2}-\d{4}\b",
        ]
        .iter()
        .map(|p| Regex::new(&format!("(?-u){p}")).expect("built-in detector pattern"))
        .collect()
    });
    let i = match d {
        Detector::Email => 0,
        Detector::PaymentCard => 1,
        Detector::Phone => 2,
        Detector::Ipv4 => 3,
        Detector::Ipv6 => 4,
        Detector::Iban => 5,
        Detector::UsSsn => 6,
        Detector::Pattern(_) => unreachable!("patterns carry their own regex"),
    };
    &res[i]
}

/// 13 to 19 digits (spaces or dashes allowed between), an issuer prefix of
/// a real card network, and a valid Luhn check digit.
fn is_card(m: &str) -> bool {
    let digits: Vec<u8> = m
        .bytes()
        .filter(u8::is_ascii_digit)
        .map(|b| b - b'0')
        .collect();
    if !(13..=19).contains(&digits.len()) || !known_issuer(&digits) {
        return false;
    }
    let sum: u32 = digits
        .iter()
        .rev()
        .enumerate()
        .map(|(i, &d)| {
            let d = d as u32;
            if i % 2 == 1 {
                let x = d * 2;
                if x > 9 {
                    x - 9
                } else {
                    x
                }
            } else {
                d
            }
        })
        .sum();
    sum.is_multiple_of(10)
}

/// Visa, Mastercard, Amex, Discover, JCB, Diners, UnionPay, Maestro.
fn known_issuer(d: &[u8]) -> bool {
    let n = |k: usize| d[..k].iter().fold(0u32, |acc, &x| acc * 10 + x as u32);
    matches!(d[0], 4)
        || (51..=55).contains(&n(2))
        || (2221..=2720).contains(&n(4))
        || matches!(n(2), 34 | 37 | 36 | 38 | 35 | 62 | 65 | 50 | 56..=58 | 67)
        || (300..=305).contains(&n(3))
        || n(4) == 6011
        || (644..=649).contains(&n(3))
}

/// ISO 13616: country, check digits, and the mod-97 test.
fn is_iban(m: &str) -> bool {
    let s: Vec<u8> = m.bytes().filter(|b| *b != b' ').collect();
    if !(15..=34).contains(&s.len()) {
        return false;
    }
    let rearranged = s[4..].iter().chain(&s[..4]);
    let mut rem: u32 = 0;
    for &b in rearranged {
        let v = match b {
            b'0'..=b'9' => (b - b'0') as u32,
            b'A'..=b'Z' => (b - b'A') as u32 + 10,
            _ => return false,
        };
        rem = if v >= 10 {
            (rem * 100 + v) % 97
        } else {
            (rem * 10 + v) % 97
        };
    }
    rem == 1
}

/// Area 001-899 except 666, group 01-99, serial 0001-9999.
fn is_ssn(m: &str) -> bool {
    let parts: Vec<&str> = m.split('-').collect();
    let [area, group, serial] = parts.as_slice() else {
        return false;
    };
    let area: u32 = area.parse().unwrap_or(0);
    area != 0 && area != 666 && area < 900 && *group != "00" && *serial != "0000"
}

#[cfg(test)]
mod tests {
    use super::*;

    fn found(d: &Detector, s: &str) -> Vec<String> {
        d.find(s, &Shape::of(s))
            .into_iter()
            .map(|(a, b)| s[a..b].to_string())
            .collect()
    }

    #[test]
    fn each_detector_finds_its_kind_and_leaves_look_alikes() {
        let cases: [(Detector, &str, &[&str]); 7] = [
            (
                Detector::Email,
                "write to jane.doe+x@mail.example.co.uk today",
                &["jane.doe+x@mail.example.co.uk"],
            ),
            (
                Detector::PaymentCard,
                "card 4111 1111 1111 1111, order 1234567890123",
                &["4111 1111 1111 1111"],
            ),
            (
                Detector::Phone,
                "call +14155552671 or (415) 555-2671",
                &["+14155552671", "(415) 555-2671"],
            ),
            (
                Detector::Ipv4,
                "from 192.168.10.4, version 1.2.3, v10.0.0.1",
                &["192.168.10.4"],
            ),
            (
                Detector::Ipv6,
                "peer 2001:db8::8a2e:370:7334 at 12:30:45",
                &["2001:db8::8a2e:370:7334"],
            ),
            (
                Detector::Iban,
                "pay to GB82 WEST 1234 5698 7654 32 ref SKU-1234",
                &["GB82 WEST 1234 5698 7654 32"],
            ),
            (
                Detector::UsSsn,
                "ssn 123-45-6789, date 2024-11-24, bad 000-12-3456",
                &["123-45-6789"],
            ),
        ];
        for (d, text, want) in cases {
            assert_eq!(
                found(&d, text),
                want.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
                "{}",
                d.name()
            );
        }
    }

    #[test]
    fn cards_need_luhn_and_a_real_issuer() {
        assert!(is_card("4111111111111111"));
        assert!(is_card("5500-0000-0000-0004"));
        assert!(is_card("378282246310005"));
        assert!(!is_card("4111111111111112"), "bad check digit");
        assert!(
            !is_card("1234567812345670"),
            "Luhn-valid, but no network starts with 1"
        );
        assert!(!is_card("1732435200000"), "a millisecond timestamp");
    }

    #[test]
    fn ibans_need_their_checksum() {
        assert!(is_iban("DE89370400440532013000"));
        assert!(is_iban("GB82 WEST 1234 5698 7654 32"));
        assert!(!is_iban("DE89370400440532013001"));
    }
}
