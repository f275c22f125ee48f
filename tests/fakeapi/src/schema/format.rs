//! String formats a CRD schema may name, checked as `k8s.io/kube-openapi/pkg/validation/strfmt`
//! checks them (the list: `apiextensions-apiserver/pkg/apiserver/validation/formats.go`).
//! Names are compared without dashes, as go-openapi normalises them (`date-time` = `datetime`).
//! A format outside the list is dropped from the schema, so never checked.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::sync::LazyLock;

use base64::Engine as _;
use regex::Regex;

fn normal(format: &str) -> String {
    format.replace('-', "")
}

/// Whether Kubernetes validates this string format.
pub(crate) fn known(format: &str) -> bool {
    matches!(
        normal(format).as_str(),
        "bsonobjectid"
            | "uri"
            | "email"
            | "hostname"
            | "ipv4"
            | "ipv6"
            | "cidr"
            | "mac"
            | "uuid"
            | "uuid3"
            | "uuid4"
            | "uuid5"
            | "isbn"
            | "isbn10"
            | "isbn13"
            | "creditcard"
            | "ssn"
            | "hexcolor"
            | "rgbcolor"
            | "byte"
            | "password"
            | "date"
            | "duration"
            | "datetime"
            | "quantity"
            | "k8sshortname"
            | "k8slongname"
    )
}

// Constant initialisers: the patterns are literals, checked by the unit tests.
#[allow(clippy::expect_used)]
fn re(p: &str) -> Regex {
    Regex::new(p).expect("a format pattern compiles")
}

static DATE_TIME: LazyLock<Regex> = LazyLock::new(|| {
    re(r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?([Zz]|[+-]\d{2}:?\d{2})?$")
});
static DATE: LazyLock<Regex> = LazyLock::new(|| re(r"^\d{4}-\d{2}-\d{2}$"));
static UUID: LazyLock<Regex> = LazyLock::new(|| {
    re(
        r"(?i)^[0-9a-f]{8}-?[0-9a-f]{4}-?([0-9a-f])[0-9a-f]{3}-?([0-9a-f])[0-9a-f]{3}-?[0-9a-f]{12}$",
    )
});
static HOSTNAME: LazyLock<Regex> = LazyLock::new(|| {
    re(
        r"^([a-zA-Z0-9\p{S}\p{L}]((-?[a-zA-Z0-9\p{S}\p{L}]{0,62})?)|([a-zA-Z0-9\p{S}\p{L}](([a-zA-Z0-9-\p{S}\p{L}]{0,61}[a-zA-Z0-9\p{S}\p{L}])?)(\.)){1,}([a-zA-Z\p{L}]){2,63})$",
    )
});
static EMAIL: LazyLock<Regex> = LazyLock::new(|| re(r"^[^@\s]+@[^@\s]+$"));
static URI: LazyLock<Regex> = LazyLock::new(|| re(r"^([a-zA-Z][a-zA-Z0-9+.-]*:|/)\S*$"));
static MAC: LazyLock<Regex> = LazyLock::new(|| {
    re(r"^([0-9A-Fa-f]{2}[:-]){5,19}[0-9A-Fa-f]{2}$|^([0-9A-Fa-f]{4}\.){2,9}[0-9A-Fa-f]{4}$")
});
static DURATION: LazyLock<Regex> = LazyLock::new(|| {
    re(
        r"^[-+]?(\d+(\.\d*)?|\.\d+)\s*(ns|us|µs|ms|s|m|h|d|w)((\d+(\.\d*)?|\.\d+)\s*(ns|us|µs|ms|s|m|h|d|w))*$|^0$",
    )
});
static QUANTITY: LazyLock<Regex> = LazyLock::new(|| {
    re(r"^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+|Ki|Mi|Gi|Ti|Pi|Ei|n|u|m|k|M|G|T|P|E)?$")
});
static HEX_COLOR: LazyLock<Regex> = LazyLock::new(|| re(r"^#?([0-9a-fA-F]{3}|[0-9a-fA-F]{6})$"));
static RGB_COLOR: LazyLock<Regex> =
    LazyLock::new(|| re(r"^rgb\(\s*\d{1,3}%?\s*,\s*\d{1,3}%?\s*,\s*\d{1,3}%?\s*\)$"));
static BSON: LazyLock<Regex> = LazyLock::new(|| re(r"^[0-9a-fA-F]{24}$"));
static SHORT_NAME: LazyLock<Regex> = LazyLock::new(|| re(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"));
static LONG_NAME: LazyLock<Regex> =
    LazyLock::new(|| re(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"));

fn uuid_version(s: &str, version: Option<char>) -> bool {
    let Some(c) = UUID.captures(s) else {
        return false;
    };
    let v = c.get(1).map(|m| m.as_str().chars().next());
    let variant = c.get(2).map(|m| m.as_str().to_ascii_lowercase());
    match version {
        None => true,
        Some('3') => v == Some(Some('3')),
        Some(n) => {
            v == Some(Some(n))
                && variant.is_some_and(|x| matches!(x.as_str(), "8" | "9" | "a" | "b"))
        }
    }
}

/// Whether `s` is a valid `format` (true for formats not checked here: the ISBN, credit card
/// and SSN checksums).
pub(crate) fn valid(format: &str, s: &str) -> bool {
    match normal(format).as_str() {
        "datetime" => DATE_TIME.is_match(s),
        "date" => DATE.is_match(s),
        "byte" => base64::engine::general_purpose::STANDARD.decode(s).is_ok(),
        "uuid" => uuid_version(s, None),
        "uuid3" => uuid_version(s, Some('3')),
        "uuid4" => uuid_version(s, Some('4')),
        "uuid5" => uuid_version(s, Some('5')),
        "ipv4" => s.parse::<Ipv4Addr>().is_ok(),
        "ipv6" => s.parse::<Ipv6Addr>().is_ok(),
        "cidr" => s.split_once('/').is_some_and(|(ip, bits)| {
            let bits: Option<u8> = bits.parse().ok();
            match (ip.parse::<Ipv4Addr>(), ip.parse::<Ipv6Addr>(), bits) {
                (Ok(_), _, Some(b)) => b <= 32,
                (_, Ok(_), Some(b)) => b <= 128,
                _ => false,
            }
        }),
        "mac" => MAC.is_match(s),
        "hostname" => s.len() <= 255 && HOSTNAME.is_match(s),
        "email" => EMAIL.is_match(s),
        "uri" => URI.is_match(s),
        "duration" => DURATION.is_match(s),
        "quantity" => QUANTITY.is_match(s),
        "hexcolor" => HEX_COLOR.is_match(s),
        "rgbcolor" => RGB_COLOR.is_match(s),
        "bsonobjectid" => BSON.is_match(s),
        "k8sshortname" => s.len() <= 63 && SHORT_NAME.is_match(s),
        "k8slongname" => s.len() <= 253 && LONG_NAME.is_match(s),
        _ => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_accept_and_refuse() {
        let ok = [
            ("date-time", "2024-05-01T10:00:00Z"),
            ("date-time", "2024-05-01T10:00:00.123+02:00"),
            ("date", "2024-05-01"),
            ("byte", "aGVsbG8="),
            ("uuid", "00000000-0000-4000-8000-000000000001"),
            ("uuid4", "00000000-0000-4000-8000-000000000001"),
            ("ipv4", "10.0.0.1"),
            ("ipv6", "fe80::1"),
            ("cidr", "10.0.0.0/8"),
            ("mac", "aa:bb:cc:dd:ee:ff"),
            ("hostname", "node-1.example.com"),
            ("duration", "1h30m"),
            ("quantity", "10Gi"),
            ("k8s-short-name", "abc-1"),
        ];
        for (f, s) in ok {
            assert!(valid(f, s), "{f} {s}");
        }
        let bad = [
            ("date-time", "yesterday"),
            ("date", "2024-5-1"),
            ("byte", "not base64!"),
            ("uuid", "xyz"),
            ("uuid4", "00000000-0000-3000-8000-000000000001"),
            ("ipv4", "10.0.0"),
            ("cidr", "10.0.0.0/40"),
            ("duration", "soon"),
            ("quantity", "ten"),
            ("k8s-short-name", "Abc"),
        ];
        for (f, s) in bad {
            assert!(!valid(f, s), "{f} {s}");
        }
        assert!(known("date-time") && !known("int-or-string") && !known("uint32"));
    }
}
