//! Human units on the command line: durations (`30s`, `500ms`, `1h30m`) and
//! sizes (`128MiB`, `64M`), parsed from arguments and formatted for output.
//!
//! Durations are humantime's, as the server reads them (`wisp logs
//! --since`), and sizes bytesize's, with two rules of Wisp's own that the
//! help texts have always promised: a bare number of seconds is a duration,
//! and `K`, `M` and `G` alone are powers of 1024.

use std::time::Duration;

use bytesize::ByteSize;

/// Parses a duration: humantime's syntax (`30s`, `500ms`, `2m`, `1h30m`);
/// a bare number is seconds (`45`).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
        return s
            .parse()
            .map(Duration::from_secs)
            .map_err(|_| format!("duration `{s}` is too large"));
    }
    humantime::parse_duration(s)
        .map_err(|e| format!("invalid duration `{s}`: {e} (e.g. 30s, 500ms, 2m, 1h30m)"))
}

/// Parses a size in bytes: bytesize's syntax (`128MiB`, `1.5GiB`, `512KiB`,
/// `10MB`, `1024`), except that `K`, `M` and `G` alone mean `KiB`, `MiB`
/// and `GiB`, as they always have here (bytesize reads them as powers of
/// 1000).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let number_end = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (number, unit) = s.split_at(number_end);
    let unit = match unit.trim() {
        "K" | "k" => "KiB",
        "M" | "m" => "MiB",
        "G" | "g" => "GiB",
        other => other,
    };
    if number.is_empty() {
        return Err(format!("`{s}` does not start with a number"));
    }
    if unit.is_empty() || unit.eq_ignore_ascii_case("b") {
        return number.parse().map_err(|_| {
            format!("invalid size `{s}`: a number of bytes is whole and fits in 64 bits")
        });
    }
    let size: ByteSize = format!("{number}{unit}")
        .parse()
        .map_err(|e| format!("invalid size `{s}`: {e} (e.g. 128MiB, 64M, 1GiB)"))?;
    // bytesize saturates: a size that does not fit is u64::MAX (which no
    // multiple of a unit is: it is odd).
    if size.as_u64() == u64::MAX {
        return Err(format!("size `{s}` is too large"));
    }
    Ok(size.as_u64())
}

/// Formats a byte count for people, in powers of 1024: `512 B`, `64 KiB`,
/// `1.2 MiB`. Exact multiples have no decimals.
pub fn format_bytes(bytes: u64) -> String {
    let shown = ByteSize::b(bytes).display().iec();
    // The unit bytesize shows it in: the largest power of 1024 not above it.
    let exponent = (63 - bytes.max(1).leading_zeros()) / 10;
    if bytes.is_multiple_of(1 << (10 * exponent)) {
        format!("{shown:.0}")
    } else {
        format!("{shown:.1}")
    }
}

/// Formats milliseconds as humantime does (`30s`, `500ms`, `2m`,
/// `1s 500ms`), so the output parses back with [`parse_duration`].
pub fn format_ms(ms: u64) -> String {
    humantime::format_duration(Duration::from_millis(ms)).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_durations() {
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("168h"), Ok(Duration::from_secs(168 * 3600)));
        assert_eq!(parse_duration("45"), Ok(Duration::from_secs(45)));
        assert_eq!(parse_duration(" 10s "), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
        assert_eq!(parse_duration("0s"), Ok(Duration::ZERO));
    }

    #[test]
    fn refuses_bad_durations() {
        for bad in ["", "s", "-1s", "10x", "soon", "99999999999999999999"] {
            assert!(parse_duration(bad).is_err(), "{bad:?} should not parse");
        }
        assert!(parse_duration(&format!("{}h", u64::MAX)).is_err());
        let e = parse_duration("soon").unwrap_err();
        assert!(e.starts_with("invalid duration `soon`"), "{e}");
    }

    #[test]
    fn parses_sizes() {
        assert_eq!(parse_size("1024"), Ok(1024));
        assert_eq!(parse_size("10B"), Ok(10));
        assert_eq!(parse_size("512KiB"), Ok(512 * 1024));
        assert_eq!(parse_size("64M"), Ok(64 << 20));
        assert_eq!(parse_size("128MiB"), Ok(128 << 20));
        assert_eq!(parse_size("128mib"), Ok(128 << 20));
        assert_eq!(parse_size("1GiB"), Ok(1 << 30));
        assert_eq!(parse_size("2g"), Ok(2 << 30));
        assert_eq!(parse_size(" 6 MiB "), Ok(6 << 20));
        assert_eq!(parse_size("1.5KiB"), Ok(1536));
        // bytesize's own units: powers of 1000 where the name says so.
        assert_eq!(parse_size("64MB"), Ok(64_000_000));
    }

    #[test]
    fn refuses_bad_sizes() {
        for bad in ["", "MiB", "-1", "12x", "lots", "1 parsec"] {
            assert!(parse_size(bad).is_err(), "{bad:?} should not parse");
        }
        assert!(parse_size(&format!("{}G", u64::MAX)).is_err());
        assert!(parse_size("99999999999EiB").is_err());
        assert_eq!(parse_size(&u64::MAX.to_string()), Ok(u64::MAX));
    }

    #[test]
    fn formats_bytes() {
        assert_eq!(format_bytes(0), "0 B");
        assert_eq!(format_bytes(1023), "1023 B");
        assert_eq!(format_bytes(1024), "1 KiB");
        assert_eq!(format_bytes(1536), "1.5 KiB");
        assert_eq!(format_bytes(1_258_291), "1.2 MiB");
        assert_eq!(format_bytes(128 << 20), "128 MiB");
        assert_eq!(format_bytes(4 << 30), "4 GiB");
        assert_eq!(format_bytes(6 << 20), "6 MiB");
    }

    #[test]
    fn formats_durations_that_parse_back() {
        assert_eq!(format_ms(30_000), "30s");
        assert_eq!(format_ms(500), "500ms");
        assert_eq!(format_ms(120_000), "2m");
        assert_eq!(format_ms(1_500), "1s 500ms");
        assert_eq!(format_ms(7_200_000), "2h");
        assert_eq!(format_ms(0), "0s");
        for ms in [0, 1, 999, 1_000, 1_500, 90_000, 3_600_000, 5_400_000] {
            assert_eq!(
                parse_duration(&format_ms(ms)),
                Ok(Duration::from_millis(ms))
            );
        }
    }
}
