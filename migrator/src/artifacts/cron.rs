//! Cron schedules: the five classic fields (`minute hour day-of-month month day-of-week`), or
//! six with a leading seconds field, or a macro (`@hourly`, `@daily`, `@weekly`, `@monthly`,
//! `@yearly`). Times are UTC. Each field takes `*`, `N`, `N-M`, `*/S`, `N-M/S` and lists of
//! those; months and weekdays take their three-letter names, weekday 7 is Sunday. As in cron,
//! when both day fields are restricted a day matches either.
//!
//! [`Schedule::last_due`] gives the slot a run belongs to: the latest due time at or before a
//! moment. The fence ([`crate::artifacts::fence`]) keys runs by it, so a slot runs once.

use chrono::{DateTime, Datelike, Timelike};

/// A parsed schedule; `text` is what the spec said.
#[derive(Debug, Clone, PartialEq)]
pub struct Schedule {
    pub text: String,
    sec: u64,
    min: u64,
    hour: u64,
    dom: u64,
    mon: u64,
    dow: u64,
    dom_star: bool,
    dow_star: bool,
}

const FIELDS: [(&str, u32, u32); 6] = [
    ("second", 0, 59),
    ("minute", 0, 59),
    ("hour", 0, 23),
    ("day of month", 1, 31),
    ("month", 1, 12),
    ("day of week", 0, 7),
];
const MONTHS: [&str; 12] = [
    "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
];
const DAYS: [&str; 7] = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"];

impl Schedule {
    /// Parses a schedule; the error says which field is wrong and why.
    pub fn parse(text: &str) -> Result<Schedule, String> {
        let expanded = match text.trim() {
            "@hourly" => "0 * * * *",
            "@daily" | "@midnight" => "0 0 * * *",
            "@weekly" => "0 0 * * 0",
            "@monthly" => "0 0 1 * *",
            "@yearly" | "@annually" => "0 0 1 1 *",
            "@reboot" => return Err("`@reboot` has no schedule to fence; not supported".into()),
            t if t.starts_with('@') => return Err(format!("{t:?}: unknown macro")),
            t => t,
        };
        let parts: Vec<&str> = expanded.split_whitespace().collect();
        let (parts, first): (Vec<&str>, usize) = match parts.len() {
            5 => (std::iter::once("0").chain(parts).collect(), 1),
            6 => (parts, 0),
            n => {
                return Err(format!(
                    "{text:?}: {n} fields; a schedule has 5 (minute hour day month weekday) \
                     or 6 (with seconds first)"
                ))
            }
        };
        let mut masks = [0u64; 6];
        for (i, p) in parts.iter().enumerate() {
            masks[i] = field(p, i).map_err(|m| {
                let n = i + 1 - first;
                format!("{text:?}: field {n} ({}): {m}", FIELDS[i].0)
            })?;
        }
        let mut dow = masks[5];
        if dow & (1 << 7) != 0 {
            dow = (dow | 1) & !(1 << 7);
        }
        Ok(Schedule {
            text: text.to_string(),
            sec: masks[0],
            min: masks[1],
            hour: masks[2],
            dom: masks[3],
            mon: masks[4],
            dow,
            dom_star: parts[3] == "*",
            dow_star: parts[5] == "*",
        })
    }

    fn day_matches(&self, t: &DateTime<chrono::Utc>) -> bool {
        let dom = bit(self.dom, t.day());
        let dow = bit(self.dow, t.weekday().num_days_from_sunday());
        match (self.dom_star, self.dow_star) {
            (true, true) => true,
            (false, true) => dom,
            (true, false) => dow,
            (false, false) => dom || dow,
        }
    }

    fn minute_matches(&self, t: &DateTime<chrono::Utc>) -> bool {
        bit(self.min, t.minute())
            && bit(self.hour, t.hour())
            && bit(self.mon, t.month())
            && self.day_matches(t)
    }

    /// The latest due time (unix seconds) at or before `at`, looking back at most five years;
    /// `None` when there is none (`30 2 31 2 *` never comes).
    pub fn last_due(&self, at: i64) -> Option<i64> {
        let mut minute = at - at.rem_euclid(60);
        let mut last_sec = at.rem_euclid(60) as u32;
        for _ in 0..(5 * 366 * 24 * 60) {
            let t = DateTime::from_timestamp(minute, 0)?;
            if self.minute_matches(&t) {
                if let Some(s) = (0..=last_sec).rev().find(|s| bit(self.sec, *s)) {
                    return Some(minute + i64::from(s));
                }
            }
            minute -= 60;
            last_sec = 59;
        }
        None
    }

    /// The earliest due time strictly after `after` (unix seconds), within five years.
    pub fn next_due(&self, after: i64) -> Option<i64> {
        let start = after + 1;
        let mut minute = start - start.rem_euclid(60);
        let mut first_sec = start.rem_euclid(60) as u32;
        for _ in 0..(5 * 366 * 24 * 60) {
            let t = DateTime::from_timestamp(minute, 0)?;
            if self.minute_matches(&t) {
                if let Some(s) = (first_sec..60).find(|s| bit(self.sec, *s)) {
                    return Some(minute + i64::from(s));
                }
            }
            minute += 60;
            first_sec = 0;
        }
        None
    }
}

fn bit(mask: u64, v: u32) -> bool {
    mask & (1u64 << v) != 0
}

/// One field (index `i` of [`FIELDS`]) as a bit mask.
fn field(text: &str, i: usize) -> Result<u64, String> {
    let (_, lo, hi) = FIELDS[i];
    let mut mask = 0u64;
    for item in text.split(',') {
        let (range, step) = match item.split_once('/') {
            Some((r, s)) => {
                let s: u32 = s
                    .parse()
                    .map_err(|_| format!("`{item}`: step `{s}` is not a number"))?;
                if s == 0 {
                    return Err(format!("`{item}`: a step of 0"));
                }
                (r, s)
            }
            None => (item, 1),
        };
        let (a, b) = if range == "*" {
            (lo, hi)
        } else if let Some((a, b)) = range.split_once('-') {
            (value(a, i)?, value(b, i)?)
        } else {
            let v = value(range, i)?;
            // `N/S` means from N to the end, stepping S.
            (v, if item.contains('/') { hi } else { v })
        };
        if a > b {
            return Err(format!("`{item}`: range goes backwards"));
        }
        let mut v = a;
        while v <= b {
            mask |= 1u64 << v;
            v += step;
        }
    }
    Ok(mask)
}

fn value(text: &str, i: usize) -> Result<u32, String> {
    let (name, lo, hi) = FIELDS[i];
    let lower = text.to_ascii_lowercase();
    let named = match i {
        4 => MONTHS
            .iter()
            .position(|m| *m == lower)
            .map(|p| p as u32 + 1),
        5 => DAYS.iter().position(|d| *d == lower).map(|p| p as u32),
        _ => None,
    };
    let v = match named {
        Some(v) => v,
        None => text
            .parse::<u32>()
            .map_err(|_| format!("`{text}` is not a number"))?,
    };
    if v < lo || v > hi {
        return Err(format!("`{text}` is out of range {lo}-{hi} for the {name}"));
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> i64 {
        DateTime::parse_from_rfc3339(s).unwrap().timestamp()
    }

    #[test]
    fn slots_of_common_schedules() {
        let every10 = Schedule::parse("*/10 * * * * *").unwrap();
        assert_eq!(
            every10.last_due(ts("2026-12-06T05:00:17Z")),
            Some(ts("2026-12-06T05:00:10Z"))
        );
        assert_eq!(
            every10.next_due(ts("2026-12-06T05:00:50Z")),
            Some(ts("2026-12-06T05:01:00Z"))
        );
        let q = Schedule::parse("15,45 3-4 * * mon-fri").unwrap();
        // Sunday 2026-12-06: the last due is Friday 04:45.
        assert_eq!(
            q.last_due(ts("2026-12-06T12:00:00Z")),
            Some(ts("2026-12-04T04:45:00Z"))
        );
        assert_eq!(
            q.next_due(ts("2026-12-06T12:00:00Z")),
            Some(ts("2026-12-07T03:15:00Z"))
        );
        let daily = Schedule::parse("@daily").unwrap();
        assert_eq!(
            daily.last_due(ts("2026-12-06T00:00:00Z")),
            Some(ts("2026-12-06T00:00:00Z"))
        );
        // Both day fields restricted: either matches (the 1st, or a Sunday).
        let either = Schedule::parse("0 0 1 * 7").unwrap();
        assert_eq!(
            either.last_due(ts("2026-12-05T00:00:00Z")),
            Some(ts("2026-12-01T00:00:00Z"))
        );
        assert_eq!(
            either.next_due(ts("2026-12-05T00:00:00Z")),
            Some(ts("2026-12-06T00:00:00Z"))
        );
        assert_eq!(Schedule::parse("0 0 31 2 *").unwrap().last_due(0), None);
    }

    #[test]
    fn malformed_lines_name_the_field() {
        for (line, want) in [
            ("61 * * * *", "field 1 (minute): `61` is out of range 0-59"),
            ("* 24 * * *", "field 2 (hour)"),
            ("* * 0 * *", "field 3 (day of month)"),
            ("* * * foo *", "field 4 (month): `foo` is not a number"),
            ("* * * * 8", "field 5 (day of week)"),
            ("*/0 * * * *", "a step of 0"),
            ("5-1 * * * *", "backwards"),
            ("* * * *", "4 fields"),
            ("* * * * * * *", "7 fields"),
            ("@reboot", "not supported"),
            ("@often", "unknown macro"),
            ("70 * * * * *", "field 1 (second)"),
        ] {
            let e = Schedule::parse(line).unwrap_err();
            assert!(e.contains(want), "{line:?}: {e}");
        }
    }
}
