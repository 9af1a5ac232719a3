//! HTTP-dates (RFC 9110 §5.6.7) as whole seconds since 1970, in GMT. Written as IMF-fixdate;
//! read in that form and in the two obsolete ones, which recipients must still accept.
//! Hand-written because the crate depends on `http` alone; the calendar is Howard Hinnant's
//! days-from-civil arithmetic (proleptic Gregorian).

use std::time::{SystemTime, UNIX_EPOCH};

/// Day names from 1970-01-01, a Thursday.
const WEEKDAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
const LONG_WEEKDAYS: [&str; 7] = [
    "Thursday",
    "Friday",
    "Saturday",
    "Sunday",
    "Monday",
    "Tuesday",
    "Wednesday",
];
const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

/// Whole seconds since 1970, rounded down (a header cannot say more).
pub(crate) fn seconds(time: SystemTime) -> Option<i64> {
    match time.duration_since(UNIX_EPOCH) {
        Ok(after) => i64::try_from(after.as_secs()).ok(),
        Err(before) => {
            let before = before.duration();
            let whole = i64::try_from(before.as_secs()).ok()?;
            Some(if before.subsec_nanos() > 0 {
                -whole - 1
            } else {
                -whole
            })
        }
    }
}

/// IMF-fixdate, `Sun, 06 Nov 1994 08:49:37 GMT`; `None` outside years 1 to 9999, which the
/// format cannot hold.
pub(crate) fn format(secs: i64) -> Option<String> {
    let days = secs.div_euclid(86_400);
    let in_day = secs.rem_euclid(86_400);
    let (year, month, day) = civil_from_days(days);
    if !(1..=9999).contains(&year) {
        return None;
    }
    let weekday = WEEKDAYS.get(usize::try_from(days.rem_euclid(7)).ok()?)?;
    let month = MONTHS.get(usize::try_from(month - 1).ok()?)?;
    Some(format!(
        "{weekday}, {day:02} {month} {year:04} {:02}:{:02}:{:02} GMT",
        in_day / 3600,
        in_day / 60 % 60,
        in_day % 60
    ))
}

/// Reads an HTTP-date in any of its three forms; `None` for anything else, which the caller
/// must then ignore. The day name is checked to be a day name, not to agree with the date.
pub(crate) fn parse(value: &str) -> Option<i64> {
    let parts: Vec<&str> = value.split_ascii_whitespace().collect();
    let (year, month, day, time) = match parts.as_slice() {
        // IMF-fixdate: Sun, 06 Nov 1994 08:49:37 GMT
        [weekday, day, month, year, time, "GMT"] => {
            short_weekday(weekday.strip_suffix(',')?)?;
            (
                digits(year, 4)?,
                month_number(month)?,
                digits(day, 2)?,
                time,
            )
        }
        // rfc850-date: Sunday, 06-Nov-94 08:49:37 GMT
        [weekday, date, time, "GMT"] => {
            LONG_WEEKDAYS
                .iter()
                .position(|d| Some(*d) == weekday.strip_suffix(','))?;
            let mut date = date.split('-');
            let (day, month, year) = (date.next()?, date.next()?, date.next()?);
            if date.next().is_some() {
                return None;
            }
            let year = digits(year, 2)?;
            // Two digits: 70-99 are 19xx, the rest 20xx (the usual reading; these are old clients).
            let year = if year >= 70 { 1900 + year } else { 2000 + year };
            (year, month_number(month)?, digits(day, 2)?, time)
        }
        // asctime-date: Sun Nov  6 08:49:37 1994
        [weekday, month, day, time, year] => {
            short_weekday(weekday)?;
            let day = if day.len() == 1 {
                digits(day, 1)?
            } else {
                digits(day, 2)?
            };
            (digits(year, 4)?, month_number(month)?, day, time)
        }
        _ => return None,
    };
    if day < 1 || day > days_in_month(year, month) {
        return None;
    }
    let mut clock = time.split(':');
    let (hour, minute, second) = (
        digits(clock.next()?, 2)?,
        digits(clock.next()?, 2)?,
        digits(clock.next()?, 2)?,
    );
    // Second 60 is a leap second, which the grammar allows.
    if clock.next().is_some() || hour > 23 || minute > 59 || second > 60 {
        return None;
    }
    Some(days_from_civil(year, month, day) * 86_400 + hour * 3600 + minute * 60 + second)
}

fn short_weekday(name: &str) -> Option<usize> {
    WEEKDAYS.iter().position(|d| *d == name)
}

fn month_number(name: &str) -> Option<i64> {
    let index = MONTHS.iter().position(|m| *m == name)?;
    i64::try_from(index + 1).ok()
}

/// Exactly `len` ASCII digits.
fn digits(s: &str, len: usize) -> Option<i64> {
    if s.len() != len || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

fn days_in_month(year: i64, month: i64) -> i64 {
    let leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
    match month {
        2 if leap => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a civil date (month 1-12).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let day_of_year = (153 * ((month + 9) % 12) + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// The civil date (year, month 1-12, day) of days since 1970-01-01.
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let days = days + 719_468;
    let era = days.div_euclid(146_097);
    let day_of_era = days - era * 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let shifted_month = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * shifted_month + 2) / 5 + 1;
    let month = if shifted_month < 10 {
        shifted_month + 3
    } else {
        shifted_month - 9
    };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::time::Duration;

    /// RFC 9110's example instant, 1994-11-06 08:49:37 GMT.
    const EXAMPLE: i64 = 784_111_777;

    #[test]
    fn reads_all_three_forms() {
        assert_eq!(parse("Sun, 06 Nov 1994 08:49:37 GMT"), Some(EXAMPLE));
        assert_eq!(parse("Sunday, 06-Nov-94 08:49:37 GMT"), Some(EXAMPLE));
        assert_eq!(parse("Sun Nov  6 08:49:37 1994"), Some(EXAMPLE));
        assert_eq!(parse("Sun Nov 06 08:49:37 1994"), Some(EXAMPLE));
        assert_eq!(parse("Thu, 01 Jan 1970 00:00:00 GMT"), Some(0));
        assert_eq!(parse("Wed, 31 Dec 1969 23:59:59 GMT"), Some(-1));
        assert_eq!(
            parse("Tuesday, 01-Jan-30 00:00:00 GMT"),
            Some(1_893_456_000)
        );
        assert_eq!(parse("Tue, 29 Feb 2000 12:00:00 GMT"), Some(951_825_600));
        assert_eq!(
            parse("Fri, 31 Dec 9999 23:59:60 GMT"),
            Some(253_402_300_800)
        );
    }

    #[test]
    fn refuses_near_misses() {
        for bad in [
            "",
            "yesterday",
            "Sun, 06 Nov 1994 08:49:37 UTC",
            "Sun, 6 Nov 1994 08:49:37 GMT",
            "Sun 06 Nov 1994 08:49:37 GMT",
            "Sun, 06 nov 1994 08:49:37 GMT",
            "Sun, 06 Nov 94 08:49:37 GMT",
            "Sun, 06 Nov 1994 8:49:37 GMT",
            "Sun, 06 Nov 1994 08:49 GMT",
            "Sun, 06 Nov 1994 08:49:37:00 GMT",
            "Sun, 06 Nov 1994 24:00:00 GMT",
            "Sun, 06 Nov 1994 23:60:00 GMT",
            "Sun, 06 Nov 1994 23:59:61 GMT",
            "Sun, 00 Nov 1994 08:49:37 GMT",
            "Sun, 31 Nov 1994 08:49:37 GMT",
            "Sun, 29 Feb 1900 08:49:37 GMT",
            "Sun, +6 Nov 1994 08:49:37 GMT",
            "Son, 06 Nov 1994 08:49:37 GMT",
            "Sun, 06-Nov-94 08:49:37 GMT",
            "Sunday, 06-Nov-1994 08:49:37 GMT",
            "Sunday, 06-Nov-94-1 08:49:37 GMT",
            "Sun Nov 6 08:49:37 94",
            "Sun, 06 Nov 1994 08:49:37 GMT extra",
            "Sun, 06 Nov 1994 ０8:49:37 GMT",
        ] {
            assert_eq!(parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn writes_imf_fixdate() {
        assert_eq!(
            format(EXAMPLE).as_deref(),
            Some("Sun, 06 Nov 1994 08:49:37 GMT")
        );
        assert_eq!(format(0).as_deref(), Some("Thu, 01 Jan 1970 00:00:00 GMT"));
        assert_eq!(format(-1).as_deref(), Some("Wed, 31 Dec 1969 23:59:59 GMT"));
        assert_eq!(
            format(253_402_300_799).as_deref(),
            Some("Fri, 31 Dec 9999 23:59:59 GMT")
        );
        assert_eq!(format(253_402_300_800), None);
        assert_eq!(format(i64::MAX), None);
        assert_eq!(format(i64::MIN), None);
    }

    #[test]
    fn seconds_round_down() {
        let at = |s: u64, n: u32| UNIX_EPOCH + Duration::new(s, n);
        assert_eq!(seconds(at(EXAMPLE as u64, 999_999_999)), Some(EXAMPLE));
        assert_eq!(seconds(UNIX_EPOCH), Some(0));
        assert_eq!(seconds(UNIX_EPOCH - Duration::from_nanos(1)), Some(-1));
        assert_eq!(seconds(UNIX_EPOCH - Duration::from_secs(2)), Some(-2));
    }

    proptest! {
        #[test]
        fn what_is_written_reads_back(secs in -62_135_596_800i64..253_402_300_800) {
            let text = format(secs);
            prop_assert!(text.is_some(), "{secs}");
            let text = text.unwrap_or_default();
            prop_assert_eq!(text.len(), 29);
            prop_assert_eq!(parse(&text), Some(secs));
        }

        #[test]
        fn the_calendar_round_trips(days in -1_000_000_000i64..1_000_000_000) {
            let (y, m, d) = civil_from_days(days);
            prop_assert!((1..=12).contains(&m) && d >= 1 && d <= days_in_month(y, m));
            prop_assert_eq!(days_from_civil(y, m, d), days);
        }

        #[test]
        fn parse_never_panics(value in "\\PC{0,40}") {
            let _ = parse(&value);
        }
    }
}
