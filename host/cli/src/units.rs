//! Human units on the command line: durations (`30s`, `500ms`) and sizes
//! (`128MiB`, `64M`), parsed from arguments and formatted for output.
//!
//! Pure functions, so `wisp serve` and the client commands agree on what
//! `--memory 64M` means, and what `wisp info` prints can be pasted back into
//! `wisp deploy`.

use std::time::Duration;

const KIB: u64 = 1 << 10;
const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;

/// Parses a duration: a whole number followed by `ms`, `s`, `m` or `h`; a
/// bare number is seconds (`30s`, `500ms`, `2m`, `1h`, `45`).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let (number, unit) = split_number(s)?;
    let millis_per_unit: u64 = match unit {
        "ms" => 1,
        "" | "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        other => {
            return Err(format!(
                "unknown duration unit `{other}` in `{s}`: use ms, s, m or h (e.g. 30s, 500ms)"
            ));
        }
    };
    number
        .checked_mul(millis_per_unit)
        .map(Duration::from_millis)
        .ok_or_else(|| format!("duration `{s}` is too large"))
}

/// Parses a size in bytes: a whole number, optionally followed by `K`, `M`,
/// `G` or `KiB`, `MiB`, `GiB` (any case; all powers of 1024) or `B`
/// (`128MiB`, `64M`, `1GiB`, `512KiB`, `1024`).
///
/// `KB`, `MB` and `GB` are refused rather than guessed: they mean powers of
/// 1000 to some people and of 1024 to others.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let (number, unit) = split_number(s)?;
    let multiplier = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kib" => KIB,
        "m" | "mib" => MIB,
        "g" | "gib" => GIB,
        _ => {
            return Err(format!(
                "unknown size unit `{unit}` in `{s}`: use K, M, G or KiB, MiB, GiB \
                 (powers of 1024), or a number of bytes"
            ));
        }
    };
    number
        .checked_mul(multiplier)
        .ok_or_else(|| format!("size `{s}` is too large"))
}

/// Splits `"128MiB"` into `(128, "MiB")`, allowing spaces around and between.
fn split_number(s: &str) -> Result<(u64, &str), String> {
    let trimmed = s.trim();
    let digits_end = trimmed
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(trimmed.len());
    let (digits, unit) = trimmed.split_at(digits_end);
    if digits.is_empty() {
        return Err(format!("`{s}` does not start with a whole number"));
    }
    let number = digits
        .parse()
        .map_err(|_| format!("`{digits}` is too large"))?;
    Ok((number, unit.trim_start()))
}

/// Formats a byte count for people: `512 B`, `64 KiB`, `1.2 MiB`. Exact
/// multiples have no decimals.
pub fn format_bytes(bytes: u64) -> String {
    const UNITS: [(u64, &str); 3] = [(GIB, "GiB"), (MIB, "MiB"), (KIB, "KiB")];
    for (i, &(size, name)) in UNITS.iter().enumerate() {
        if bytes < size {
            continue;
        }
        if bytes.is_multiple_of(size) {
            return format!("{} {name}", bytes / size);
        }
        let value = bytes as f64 / size as f64;
        // 1023.97 KiB would round to "1024.0 KiB"; say "1.0 MiB" instead.
        if (value * 10.0).round() >= 10_240.0 && i > 0 {
            let (bigger, bigger_name) = UNITS[i - 1];
            return format!("{:.1} {bigger_name}", bytes as f64 / bigger as f64);
        }
        return format!("{value:.1} {name}");
    }
    format!("{bytes} B")
}

/// Formats milliseconds in the largest unit that divides them exactly
/// (`30s`, `500ms`, `2m`, `1500ms`), so the output parses back with
/// [`parse_duration`].
pub fn format_ms(ms: u64) -> String {
    match ms {
        0 => "0s".to_string(),
        ms if ms.is_multiple_of(3_600_000) => format!("{}h", ms / 3_600_000),
        ms if ms.is_multiple_of(60_000) => format!("{}m", ms / 60_000),
        ms if ms.is_multiple_of(1_000) => format!("{}s", ms / 1_000),
        ms => format!("{ms}ms"),
    }
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
        assert_eq!(parse_duration("45"), Ok(Duration::from_secs(45)));
        assert_eq!(parse_duration(" 10 s "), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
    }

    #[test]
    fn refuses_bad_durations() {
        for bad in [
            "",
            "s",
            "-1s",
            "1.5s",
            "10d",
            "10 sec",
            "99999999999999999999",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad:?} should not parse");
        }
        assert!(parse_duration(&format!("{}h", u64::MAX / 1000)).is_err());
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
    }

    #[test]
    fn refuses_bad_sizes() {
        for bad in ["", "MiB", "-1", "1.5MiB", "64MB", "1TiB", "12x"] {
            assert!(parse_size(bad).is_err(), "{bad:?} should not parse");
        }
        assert!(parse_size(&format!("{}G", u64::MAX)).is_err());
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
        assert_eq!(format_bytes(MIB - 1), "1.0 MiB");
    }

    #[test]
    fn formats_durations_that_parse_back() {
        assert_eq!(format_ms(30_000), "30s");
        assert_eq!(format_ms(500), "500ms");
        assert_eq!(format_ms(120_000), "2m");
        assert_eq!(format_ms(1_500), "1500ms");
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
