//! Dates and times in words for the pages: "2 December 2026, 14:05 CET" in the page's language and
//! the browser's time zone (the `sigil_tz` cookie the pages' script sets), else the realm's
//! default time zone, else UTC. Never a raw Unix time.

use jiff::Timestamp;
use jiff::tz::TimeZone;

use super::i18n::tr;

/// Whether `name` is an IANA time zone Sigil knows (its own bundled database).
pub fn valid_time_zone(name: &str) -> bool {
    !name.is_empty() && TimeZone::get(name).is_ok()
}

/// `ts` (Unix seconds) as a date and time in words in `lang` and `time_zone`.
pub fn in_words(ts: i64, lang: &str, time_zone: &str) -> String {
    let tz = TimeZone::get(time_zone).unwrap_or(TimeZone::UTC);
    let Ok(at) = Timestamp::from_second(ts) else {
        return tr(lang, "when.unknown", &[]);
    };
    let zoned = at.to_zoned(tz);
    let zone = zoned
        .time_zone()
        .to_offset_info(at)
        .abbreviation()
        .to_owned();
    let month = tr(lang, &format!("when.month.{}", zoned.month()), &[]);
    tr(
        lang,
        "when.format",
        &[
            ("day", &zoned.day().to_string()),
            ("month", &month),
            ("year", &zoned.year().to_string()),
            (
                "time",
                &format!("{:02}:{:02}", zoned.hour(), zoned.minute()),
            ),
            ("zone", &zone),
        ],
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_in_words_in_the_language_and_zone() {
        // 2026-12-02T13:05:00Z
        let ts = 1_796_216_700;
        assert_eq!(in_words(ts, "en", "UTC"), "2 December 2026, 13:05 UTC");
        assert_eq!(
            in_words(ts, "de", "Europe/Berlin"),
            "2. Dezember 2026, 14:05 CET"
        );
        assert_eq!(
            in_words(ts, "en", "America/New_York"),
            "2 December 2026, 08:05 EST"
        );
        assert!(valid_time_zone("Europe/London"));
        assert!(!valid_time_zone("Mars/Olympus"));
        assert!(!valid_time_zone(""));
    }
}
