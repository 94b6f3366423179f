//! Calendar dates from git timestamps (formatted by `crate::date`).

/// `YYYY-MM-DD` of a git time (seconds since the epoch plus the author's UTC offset), in the
/// author's own time zone, which is the date people saw when they tagged.
pub(crate) fn git_time_to_date(time: git2::Time) -> String {
    crate::date::ymd(time.seconds() + i64::from(time.offset_minutes()) * 60)
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
