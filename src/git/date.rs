//! Calendar dates from git timestamps, without a date-time dependency.

/// `YYYY-MM-DD` of a git time (seconds since the epoch plus the author's UTC offset), in the
/// author's own time zone, which is the date people saw when they tagged.
pub(crate) fn git_time_to_date(time: git2::Time) -> String {
    let local_secs = time.seconds() + i64::from(time.offset_minutes()) * 60;
    let days = local_secs.div_euclid(86_400);
    let (year, month, day) = civil_from_days(days);
    format!("{year:04}-{month:02}-{day:02}")
}

/// Days since 1970-01-01 to (year, month, day) in the proleptic Gregorian calendar
/// (Howard Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let mp = (5 * day_of_year + 2) / 153;
    let day = (day_of_year - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epoch_and_known_dates() {
        assert_eq!(git_time_to_date(git2::Time::new(0, 0)), "1970-01-01");
        // Novu v2.0.0 was tagged 2024-10-24.
        assert_eq!(
            git_time_to_date(git2::Time::new(1_729_771_200, 0)),
            "2024-10-24"
        );
        assert_eq!(
            git_time_to_date(git2::Time::new(951_782_400, 0)),
            "2000-02-29"
        );
    }

    #[test]
    fn offset_moves_the_date() {
        // 2024-01-01T23:30:00Z is already 2024-01-02 at UTC+1.
        let secs = 1_704_151_800;
        assert_eq!(git_time_to_date(git2::Time::new(secs, 0)), "2024-01-01");
        assert_eq!(git_time_to_date(git2::Time::new(secs, 60)), "2024-01-02");
        assert_eq!(git_time_to_date(git2::Time::new(-1, 0)), "1969-12-31");
    }
}
