//! Recognising typed values in text cells: numbers, booleans, dates and float lists.

use std::sync::OnceLock;

use time::format_description::well_known::Rfc3339;
use time::format_description::{self, BorrowedFormatItem};
use time::{Date, OffsetDateTime, PrimitiveDateTime, Time};

/// A finite number.
pub(super) fn number(v: &str) -> Option<f64> {
    v.parse::<f64>().ok().filter(|x| x.is_finite())
}

/// `true`/`false`, `yes`/`no`, `t`/`f`, `y`/`n` (any case).
pub(super) fn boolean(v: &str) -> Option<bool> {
    match v.to_ascii_lowercase().as_str() {
        "true" | "yes" | "t" | "y" => Some(true),
        "false" | "no" | "f" | "n" => Some(false),
        _ => None,
    }
}

/// A list of finite floats: `[0.1, 0.2]`, brackets required, comma or whitespace separated.
pub(super) fn embedding(v: &str) -> Option<Vec<f32>> {
    let inner = v.strip_prefix('[')?.strip_suffix(']')?;
    let values: Option<Vec<f32>> = inner
        .split(|c: char| c == ',' || c.is_whitespace())
        .filter(|s| !s.is_empty())
        .map(|s| s.parse::<f32>().ok().filter(|x| x.is_finite()))
        .collect();
    values.filter(|v| !v.is_empty())
}

/// The date-time formats recognised besides RFC 3339.
fn formats() -> &'static [(Vec<BorrowedFormatItem<'static>>, bool)] {
    static FORMATS: OnceLock<Vec<(Vec<BorrowedFormatItem<'static>>, bool)>> = OnceLock::new();
    FORMATS.get_or_init(|| {
        [
            ("[year]-[month]-[day]T[hour]:[minute]:[second]", true),
            ("[year]-[month]-[day] [hour]:[minute]:[second]", true),
            ("[year]-[month]-[day] [hour]:[minute]", true),
            ("[year]-[month]-[day]", false),
            ("[year]/[month]/[day]", false),
        ]
        .into_iter()
        .map(|(f, with_time)| {
            (
                format_description::parse_borrowed::<2>(f).expect("valid format description"),
                with_time,
            )
        })
        .collect()
    })
}

/// A date or date-time (RFC 3339, `YYYY-MM-DD[ T]HH:MM[:SS]`, `YYYY-MM-DD`, `YYYY/MM/DD`), as UTC
/// or naive local time.
pub(super) fn datetime(v: &str) -> Option<PrimitiveDateTime> {
    if !v.starts_with(|c: char| c.is_ascii_digit()) {
        return None;
    }
    if let Ok(t) = OffsetDateTime::parse(v, &Rfc3339) {
        let utc = t.to_offset(time::UtcOffset::UTC);
        return Some(PrimitiveDateTime::new(utc.date(), utc.time()));
    }
    formats().iter().find_map(|(format, with_time)| {
        if *with_time {
            PrimitiveDateTime::parse(v, format).ok()
        } else {
            Date::parse(v, format)
                .ok()
                .map(|d| PrimitiveDateTime::new(d, Time::MIDNIGHT))
        }
    })
}

/// Names of the numbers [`datetime_parts`] gives.
pub(super) const DATETIME_PARTS: [&str; 6] = [
    "days_since_epoch",
    "year",
    "month",
    "day",
    "weekday",
    "hour",
];

/// Days since 1970-01-01 (with the time of day as a fraction), year, month, day of month, weekday
/// (Monday 0) and hour (with minutes as a fraction).
pub(super) fn datetime_parts(t: PrimitiveDateTime) -> [f64; 6] {
    let hour = f64::from(t.hour()) + f64::from(t.minute()) / 60.0;
    let days = f64::from(t.date().to_julian_day() - 2_440_588) + hour / 24.0;
    [
        days,
        f64::from(t.year()),
        f64::from(u8::from(t.month())),
        f64::from(t.day()),
        f64::from(t.weekday().number_days_from_monday()),
        hour,
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_recognised() {
        assert_eq!(number(" 1e3".trim()), Some(1000.0));
        assert_eq!(number("inf"), None);
        assert_eq!(boolean("Yes"), Some(true));
        assert_eq!(embedding("[1, 2 3]"), Some(vec![1.0, 2.0, 3.0]));
        assert_eq!(embedding("[]"), None);
        let t = datetime("2024-03-04T05:30:00+01:00").unwrap();
        assert_eq!(datetime_parts(t)[1..], [2024.0, 3.0, 4.0, 0.0, 4.5]);
        let d = datetime("1970-01-02").unwrap();
        assert_eq!(datetime_parts(d)[0], 1.0);
        let t = datetime("2024-03-04 18:15:00").unwrap();
        assert_eq!(datetime_parts(t)[5], 18.25);
        assert!(datetime("2024/03/04").is_some());
        assert!(datetime("2024-13-01").is_none());
        assert!(datetime("hello").is_none());
    }
}
