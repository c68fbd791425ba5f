//! Human durations in rule files: `36h`, `90m`, `2d`, `1h30m`, `45s`, `1w`.
//!
//! A duration is one or more `<integer><unit>` parts with units `s`, `m`, `h`,
//! `d` (24 h) and `w` (7 d); spaces between parts are allowed. Kept tiny and
//! strict on purpose: a rule that says `36` or `1.5h` is an error, not a guess.

use std::time::Duration;

/// Parses a duration such as `1h30m`. The error is a one-line reason.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return Err("empty duration; write e.g. `36h`, `90m` or `1h30m`".to_string());
    }
    let mut total: u64 = 0;
    let mut digits = String::new();
    let mut parts = 0;
    for ch in trimmed.chars() {
        if ch.is_ascii_digit() {
            digits.push(ch);
        } else if ch.is_whitespace() {
            if !digits.is_empty() {
                return Err(format!(
                    "`{text}`: a number must be followed by a unit (s, m, h, d, w)"
                ));
            }
        } else {
            let unit: u64 = match ch {
                's' => 1,
                'm' => 60,
                'h' => 3_600,
                'd' => 86_400,
                'w' => 604_800,
                other => {
                    return Err(format!(
                        "`{text}`: unknown unit `{other}` (use s, m, h, d or w)"
                    ));
                }
            };
            if digits.is_empty() {
                return Err(format!("`{text}`: unit `{ch}` without a number"));
            }
            let value: u64 = digits
                .parse()
                .map_err(|_| format!("`{text}`: number too large"))?;
            total = value
                .checked_mul(unit)
                .and_then(|secs| total.checked_add(secs))
                .ok_or_else(|| format!("`{text}`: duration too large"))?;
            digits.clear();
            parts += 1;
        }
    }
    if !digits.is_empty() {
        return Err(format!(
            "`{text}`: a number must be followed by a unit (s, m, h, d, w)"
        ));
    }
    if parts == 0 {
        return Err(format!("`{text}`: not a duration"));
    }
    Ok(Duration::from_secs(total))
}

/// Formats whole seconds in the largest exact units, e.g. `1d12h`; the inverse of [`parse_duration`].
pub fn format_duration(duration: Duration) -> String {
    let mut secs = duration.as_secs();
    if secs == 0 {
        return "0s".to_string();
    }
    let mut out = String::new();
    for (unit, size) in [("d", 86_400), ("h", 3_600), ("m", 60), ("s", 1)] {
        if secs >= size {
            out.push_str(&format!("{}{unit}", secs / size));
            secs %= size;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_the_documented_forms() {
        assert_eq!(parse_duration("36h"), Ok(Duration::from_secs(36 * 3600)));
        assert_eq!(parse_duration("90m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("2d"), Ok(Duration::from_secs(172_800)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("1h 30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("1w"), Ok(Duration::from_secs(604_800)));
        assert_eq!(parse_duration("45s"), Ok(Duration::from_secs(45)));
    }

    #[test]
    fn rejects_what_it_cannot_read_exactly() {
        for bad in [
            "",
            "36",
            "h",
            "1.5h",
            "1x",
            "-1h",
            "1 h",
            "99999999999999999999s",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad:?} should be rejected");
        }
    }

    proptest! {
        #[test]
        fn format_then_parse_round_trips(secs in 0u64..10_000_000_000) {
            let d = Duration::from_secs(secs);
            prop_assert_eq!(parse_duration(&format_duration(d)), Ok(d));
        }

        #[test]
        fn never_panics(text in "\\PC{0,20}") {
            let _ = parse_duration(&text);
        }
    }
}
