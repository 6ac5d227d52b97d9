//! Business hours: `[[routing.schedules]]`, weekly opening hours and
//! holidays in a time zone, and what routing asks of them (open now? when
//! does that change? how much open time lies between two instants?).
//!
//! Time zones come from the IANA database bundled into the binary by
//! `jiff` (`tzdb-bundle-always`), so a schedule means the same on every
//! machine whatever its `/usr/share/zoneinfo` holds.
//!
//! ## How a schedule reads
//!
//! - Each calendar date (in the schedule's zone) has a list of ranges: its
//!   holiday's `hours` when the date is a holiday (none: closed all day),
//!   else its weekday's `hours` (an absent weekday: closed).
//! - A range `"09:00-17:00"` opens at 09:00 and closes at 17:00 local time;
//!   `"00:00-24:00"` is the whole day; `"22:00-06:00"` runs overnight: it
//!   belongs to the date it starts on, so a holiday on that date cancels
//!   all of it (the morning after included), and a holiday the next day
//!   does not cut it short.
//! - Ranges that touch or overlap are one opening (`mon = ["00:00-24:00"]`
//!   and `tue = ["00:00-24:00"]` are open from Monday 00:00 to Wednesday
//!   00:00 without a break).
//! - Local times that do not exist (the hour skipped when clocks go
//!   forward) move forward by the length of the gap; local times that occur
//!   twice (clocks go back) mean the first of them ("compatible"
//!   disambiguation, as RFC 9557 and Temporal do).

use crate::plan::PlanError;
use jiff::civil::Date;
use jiff::tz::TimeZone;
use serde::Deserialize;
use serde::de::{self, MapAccess, Visitor};
use std::collections::BTreeMap;
use std::fmt;

/// How far ahead a schedule is searched for an opening (a queue closed
/// longer than this counts as never opening).
const HORIZON_DAYS: u32 = 400;

/// How far an open stretch is followed to find where it ends; a queue open
/// longer (24/7) is looked at again after this.
const OPEN_RUN_DAYS: u32 = 8;

/// A contact's open waiting time is counted over at most this many days
/// back.
const LOOKBACK_DAYS: i64 = 400;

const DAY_MS: i64 = 86_400_000;

/// `[routing.schedules.hours]`: per weekday, a list of `"HH:MM-HH:MM"`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WeekHours {
    #[serde(default)]
    pub mon: Vec<String>,
    #[serde(default)]
    pub tue: Vec<String>,
    #[serde(default)]
    pub wed: Vec<String>,
    #[serde(default)]
    pub thu: Vec<String>,
    #[serde(default)]
    pub fri: Vec<String>,
    #[serde(default)]
    pub sat: Vec<String>,
    #[serde(default)]
    pub sun: Vec<String>,
}

impl WeekHours {
    /// Monday first, with the key of each day.
    fn days(&self) -> [(&'static str, &Vec<String>); 7] {
        [
            ("mon", &self.mon),
            ("tue", &self.tue),
            ("wed", &self.wed),
            ("thu", &self.thu),
            ("fri", &self.fri),
            ("sat", &self.sat),
            ("sun", &self.sun),
        ]
    }
}

/// A holiday: `"2026-12-25"` (closed all day) or
/// `{ date = "2026-12-24", hours = ["09:00-13:00"] }` (these hours instead
/// of the weekday's).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HolidayConfig {
    pub date: String,
    pub hours: Vec<String>,
}

impl<'de> Deserialize<'de> for HolidayConfig {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = HolidayConfig;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(r#"a date "YYYY-MM-DD" or { date = "YYYY-MM-DD", hours = [...] }"#)
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<HolidayConfig, E> {
                Ok(HolidayConfig {
                    date: v.to_owned(),
                    hours: Vec::new(),
                })
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<HolidayConfig, A::Error> {
                let mut date = None;
                let mut hours = None;
                while let Some(key) = map.next_key::<String>()? {
                    match key.as_str() {
                        "date" => date = Some(map.next_value::<String>()?),
                        "hours" => hours = Some(map.next_value::<Vec<String>>()?),
                        other => return Err(de::Error::unknown_field(other, &["date", "hours"])),
                    }
                }
                Ok(HolidayConfig {
                    date: date.ok_or_else(|| de::Error::missing_field("date"))?,
                    hours: hours.unwrap_or_default(),
                })
            }
        }
        d.deserialize_any(V)
    }
}

/// `[[routing.schedules]]`
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScheduleConfig {
    pub name: String,
    /// An IANA time zone: `"Europe/Kyiv"`, `"America/New_York"`, `"UTC"`.
    pub timezone: String,
    /// Weekly opening hours; a weekday not listed is closed.
    #[serde(default)]
    pub hours: WeekHours,
    /// Dates closed all day, or open only the hours given.
    #[serde(default)]
    pub holidays: Vec<HolidayConfig>,
}

/// A range of a day in minutes from local midnight: `start` < 1440;
/// `end` ≤ 1440, or ≤ `start` for a range running overnight.
type Range = (u16, u16);

/// A schedule, checked.
#[derive(Debug, Clone)]
pub struct Schedule {
    pub name: String,
    /// The IANA name, as configured.
    pub timezone: String,
    tz: TimeZone,
    /// Monday first.
    week: [Vec<Range>; 7],
    holidays: BTreeMap<Date, Vec<Range>>,
}

fn err(key: String, problem: impl Into<String>) -> PlanError {
    PlanError {
        key,
        problem: problem.into(),
    }
}

/// `"9:00"` or `"09:00"` as minutes from midnight (up to 24:00).
fn parse_clock(s: &str) -> Option<u16> {
    let (h, m) = s.split_once(':')?;
    if h.is_empty() || h.len() > 2 || m.len() != 2 {
        return None;
    }
    if !h.bytes().chain(m.bytes()).all(|b| b.is_ascii_digit()) {
        return None;
    }
    let (h, m): (u16, u16) = (h.parse().ok()?, m.parse().ok()?);
    if m > 59 || h > 24 || (h == 24 && m != 0) {
        return None;
    }
    Some(h * 60 + m)
}

/// Parses `"HH:MM-HH:MM"`.
pub fn parse_range(key: &str, text: &str) -> Result<(u16, u16), PlanError> {
    let bad = || err(key.to_owned(), format!("{text:?} is not HH:MM-HH:MM"));
    let (a, b) = text.trim().split_once('-').ok_or_else(bad)?;
    let start = parse_clock(a.trim()).ok_or_else(bad)?;
    let end = parse_clock(b.trim()).ok_or_else(bad)?;
    if start == 1440 {
        return Err(err(
            key.to_owned(),
            format!("{text:?}: a range cannot start at 24:00"),
        ));
    }
    if start == end {
        return Err(err(
            key.to_owned(),
            format!(
                "{text:?} opens and closes at the same time (the whole day is \"00:00-24:00\")"
            ),
        ));
    }
    Ok((start, end))
}

fn parse_ranges(key: &str, list: &[String]) -> Result<Vec<Range>, PlanError> {
    list.iter()
        .enumerate()
        .map(|(i, r)| parse_range(&format!("{key}[{i}]"), r))
        .collect()
}

/// `"YYYY-MM-DD"`, strictly.
pub fn parse_date(key: &str, text: &str) -> Result<Date, PlanError> {
    let b = text.as_bytes();
    let shape = b.len() == 10
        && b[4] == b'-'
        && b[7] == b'-'
        && b.iter()
            .enumerate()
            .all(|(i, c)| i == 4 || i == 7 || c.is_ascii_digit());
    let date = shape.then(|| text.parse::<Date>().ok()).flatten();
    date.ok_or_else(|| err(key.to_owned(), format!("{text:?} is not a date YYYY-MM-DD")))
}

impl Schedule {
    /// Checks and compiles `[[routing.schedules]]` entry `key`
    /// (`routing.schedules[0]`).
    pub fn compile(key: &str, c: &ScheduleConfig) -> Result<Schedule, PlanError> {
        let tz = TimeZone::get(&c.timezone).map_err(|_| {
            err(
                format!("{key}.timezone"),
                format!(
                    "{:?} is not a time zone of the IANA database (e.g. \"Europe/Kyiv\", \"UTC\")",
                    c.timezone
                ),
            )
        })?;
        let mut week: [Vec<Range>; 7] = Default::default();
        for (i, (day, list)) in c.hours.days().into_iter().enumerate() {
            week[i] = parse_ranges(&format!("{key}.hours.{day}"), list)?;
        }
        let mut holidays = BTreeMap::new();
        for (i, h) in c.holidays.iter().enumerate() {
            let hk = format!("{key}.holidays[{i}]");
            let date = parse_date(&format!("{hk}.date"), &h.date)?;
            let ranges = parse_ranges(&format!("{hk}.hours"), &h.hours)?;
            if holidays.insert(date, ranges).is_some() {
                return Err(err(
                    format!("{hk}.date"),
                    format!("{} is listed twice", h.date),
                ));
            }
        }
        Ok(Schedule {
            name: c.name.clone(),
            timezone: c.timezone.clone(),
            tz,
            week,
            holidays,
        })
    }

    /// Whether it is open at `now` (ms since the epoch).
    pub fn is_open(&self, now: u64) -> bool {
        let t = ms(now);
        let mut open = false;
        self.walk(t, HORIZON_DAYS, |s, _| {
            open = s <= t;
            false
        });
        open
    }

    /// Whether it is open at `now`, and when that changes: the next
    /// opening, or the closing. `None` when it does not open within the
    /// horizon; for a queue open longer than `OPEN_RUN_DAYS` days without a
    /// break, the end of that stretch (ask again then).
    pub fn next_change(&self, now: u64) -> (bool, Option<u64>) {
        let t = ms(now);
        let mut open = false;
        let mut change: Option<i64> = None;
        let run_limit = t.saturating_add(i64::from(OPEN_RUN_DAYS) * DAY_MS);
        self.walk(t, HORIZON_DAYS, |s, e| {
            match change {
                None if s > t => {
                    // Closed now: the next opening.
                    change = Some(s);
                    false
                }
                None => {
                    open = true;
                    change = Some(e);
                    e < run_limit
                }
                // Open: follow touching intervals to the real closing.
                Some(end) if s <= end && open => {
                    change = Some(e);
                    e < run_limit
                }
                Some(_) => false,
            }
        });
        let change = change.map(|c| if open { c.min(run_limit) } else { c });
        (open, change.and_then(|c| u64::try_from(c).ok()))
    }

    /// When routing should look at this schedule again after `now`: the
    /// next opening or closing, or a day later when there is none in sight.
    pub fn next_check(&self, now: u64) -> u64 {
        self.next_change(now)
            .1
            .unwrap_or_else(|| now.saturating_add(DAY_MS as u64))
            .max(now.saturating_add(1))
    }

    /// The next opening at or after `now` (`now` itself when open); `None`
    /// when it does not open within the horizon.
    pub fn next_opening(&self, now: u64) -> Option<u64> {
        let t = ms(now);
        let mut found = None;
        self.walk(t, HORIZON_DAYS, |s, _| {
            found = Some(s.max(t));
            false
        });
        found.and_then(|f| u64::try_from(f).ok())
    }

    /// The open time between `from` and `to`, in ms.
    pub fn open_ms_between(&self, from: u64, to: u64) -> u64 {
        if to <= from {
            return 0;
        }
        let (a, b) = (ms(from).max(ms(to) - LOOKBACK_DAYS * DAY_MS), ms(to));
        let days = u32::try_from((b - a) / DAY_MS + 2).unwrap_or(u32::MAX);
        let mut total: i64 = 0;
        self.walk(a, days, |s, e| {
            if s >= b {
                return false;
            }
            total += e.min(b) - s.max(a);
            true
        });
        u64::try_from(total).unwrap_or(0)
    }

    /// The instant at which `open_ms` of open time has passed since
    /// `from`; `None` when that is beyond the horizon.
    pub fn after_open(&self, from: u64, open_ms: u64) -> Option<u64> {
        let a = ms(from);
        let mut left = i64::try_from(open_ms).unwrap_or(i64::MAX);
        let mut found = None;
        self.walk(a, HORIZON_DAYS, |s, e| {
            let s = s.max(a);
            if e - s >= left {
                found = Some(s + left);
                return false;
            }
            left -= e - s;
            true
        });
        found.and_then(|f| u64::try_from(f).ok())
    }

    /// `at` as local time: `"2026-05-04 09:00"`.
    pub fn format_local(&self, at: u64) -> String {
        format_in(&self.tz, at)
    }

    fn ranges_of(&self, date: Date) -> &[Range] {
        match self.holidays.get(&date) {
            Some(r) => r,
            None => &self.week[date.weekday().to_monday_zero_offset() as usize],
        }
    }

    /// The instant of local `minute` (0–1440) of `date`.
    fn instant(&self, date: Date, minute: u16) -> Option<i64> {
        let (date, minute) = if minute >= 1440 {
            (date.tomorrow().ok()?, minute - 1440)
        } else {
            (date, minute)
        };
        let h = i8::try_from(minute / 60).ok()?;
        let m = i8::try_from(minute % 60).ok()?;
        let ts = self.tz.to_timestamp(date.at(h, m, 0, 0)).ok()?;
        Some(ts.as_millisecond())
    }

    /// The open intervals of the ranges starting on `date`, in ms.
    fn day(&self, date: Date, out: &mut Vec<(i64, i64)>) {
        out.clear();
        for &(start, end) in self.ranges_of(date) {
            let end = if end <= start { end + 1440 } else { end };
            if let (Some(s), Some(e)) = (self.instant(date, start), self.instant(date, end))
                && e > s
            {
                out.push((s, e));
            }
        }
        out.sort_unstable();
    }

    /// Calls `f(start, end)` with the open intervals that end after `from`,
    /// in order, without overlaps (touching intervals stay apart), over at
    /// most `days` dates from the one before `from`'s, until `f` says
    /// stop.
    fn walk(&self, from: i64, days: u32, mut f: impl FnMut(i64, i64) -> bool) {
        let Ok(ts) = jiff::Timestamp::from_millisecond(from) else {
            return;
        };
        let Ok(mut date) = self.tz.to_datetime(ts).date().yesterday() else {
            return;
        };
        let mut covered = i64::MIN;
        let mut buf = Vec::new();
        for _ in 0..days.saturating_add(1) {
            self.day(date, &mut buf);
            for &(s, e) in &buf {
                let s = s.max(covered);
                if e <= s {
                    continue;
                }
                covered = e;
                if e <= from {
                    continue;
                }
                if !f(s, e) {
                    return;
                }
            }
            match date.tomorrow() {
                Ok(d) => date = d,
                Err(_) => return,
            }
        }
    }
}

fn ms(t: u64) -> i64 {
    i64::try_from(t).unwrap_or(i64::MAX)
}

/// `at` (ms) as local time in `tz`: `"2026-05-04 09:00"`.
pub fn format_in(tz: &TimeZone, at: u64) -> String {
    match jiff::Timestamp::from_millisecond(ms(at)) {
        Ok(ts) => tz.to_datetime(ts).strftime("%Y-%m-%d %H:%M").to_string(),
        Err(_) => String::new(),
    }
}

/// Checks `[[routing.schedules]]`: names unique and well formed.
pub fn compile_all(key: &str, list: &[ScheduleConfig]) -> Result<Vec<Schedule>, PlanError> {
    let mut out: Vec<Schedule> = Vec::with_capacity(list.len());
    for (i, c) in list.iter().enumerate() {
        let k = format!("{key}.schedules[{i}]");
        crate::plan::check_name(&format!("{k}.name"), &c.name)?;
        if out.iter().any(|s| s.name == c.name) {
            return Err(err(
                format!("{k}.name"),
                format!("schedule {:?} is defined twice", c.name),
            ));
        }
        out.push(Schedule::compile(&k, c)?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn at(tz: &str, local: &str) -> u64 {
        let dt: jiff::civil::DateTime = local.parse().expect("a local time");
        let ts = TimeZone::get(tz)
            .expect("zone")
            .to_timestamp(dt)
            .expect("instant");
        u64::try_from(ts.as_millisecond()).expect("after 1970")
    }

    fn schedule(tz: &str, f: impl FnOnce(&mut ScheduleConfig)) -> Schedule {
        let mut c = ScheduleConfig {
            name: "s".into(),
            timezone: tz.into(),
            hours: WeekHours::default(),
            holidays: Vec::new(),
        };
        f(&mut c);
        Schedule::compile("routing.schedules[0]", &c).expect("valid")
    }

    fn office(tz: &str) -> Schedule {
        schedule(tz, |c| {
            let day = vec!["09:00-17:00".to_string()];
            c.hours.mon = day.clone();
            c.hours.tue = day.clone();
            c.hours.wed = day.clone();
            c.hours.thu = day.clone();
            c.hours.fri = day;
        })
    }

    fn local(s: &Schedule, t: Option<u64>) -> String {
        t.map(|t| s.format_local(t)).unwrap_or_default()
    }

    #[test]
    fn ranges_and_dates_are_checked_and_errors_name_the_key() {
        let bad = |text: &str| parse_range("routing.schedules[0].hours.mon[0]", text).unwrap_err();
        let e = bad("9:00-17:00x");
        assert_eq!(e.key, "routing.schedules[0].hours.mon[0]");
        assert_eq!(e.problem, r#""9:00-17:00x" is not HH:MM-HH:MM"#);
        for text in [
            "09:60-10:00",
            "25:00-26:00",
            "24:00-01:00",
            "9-17",
            "09:00",
            "10:00-10:00",
            "24:30-00:00",
            "09:00-24:01",
        ] {
            let _ = bad(text);
        }
        assert_eq!(parse_range("k", "9:00-17:30").unwrap(), (540, 1050));
        assert_eq!(parse_range("k", "18:00-24:00").unwrap(), (1080, 1440));
        assert_eq!(parse_range("k", "22:00-06:00").unwrap(), (1320, 360));
        assert!(parse_date("k", "2026-02-30").is_err());
        assert!(parse_date("k", "2026-2-3").is_err());
        assert!(parse_date("k", "2026-12-24").is_ok());

        let c = ScheduleConfig {
            name: "s".into(),
            timezone: "Europe/Kiev2".into(),
            hours: WeekHours::default(),
            holidays: vec![],
        };
        let e = Schedule::compile("routing.schedules[1]", &c).unwrap_err();
        assert_eq!(e.key, "routing.schedules[1].timezone");
        let c = ScheduleConfig {
            timezone: "Europe/Kyiv".into(),
            holidays: vec![
                HolidayConfig {
                    date: "2026-01-01".into(),
                    hours: vec![],
                },
                HolidayConfig {
                    date: "2026-01-01".into(),
                    hours: vec![],
                },
            ],
            ..c
        };
        let e = Schedule::compile("routing.schedules[1]", &c).unwrap_err();
        assert_eq!(e.key, "routing.schedules[1].holidays[1].date");
        let c = ScheduleConfig {
            holidays: vec![HolidayConfig {
                date: "2026-01-01".into(),
                hours: vec!["9-13".into()],
            }],
            ..c
        };
        let e = Schedule::compile("routing.schedules[1]", &c).unwrap_err();
        assert_eq!(e.key, "routing.schedules[1].holidays[0].hours[0]");
        let twice = [
            ScheduleConfig {
                name: "a".into(),
                holidays: vec![],
                ..c.clone()
            },
            ScheduleConfig {
                name: "a".into(),
                holidays: vec![],
                ..c.clone()
            },
        ];
        let e = compile_all("routing", &twice).unwrap_err();
        assert_eq!(e.key, "routing.schedules[1].name");
    }

    #[test]
    fn office_hours_open_close_and_reopen_after_the_weekend() {
        let s = office("Europe/Kyiv");
        // 2026-05-01 is a Friday.
        assert!(s.is_open(at("Europe/Kyiv", "2026-05-01T09:00")));
        assert!(s.is_open(at("Europe/Kyiv", "2026-05-01T16:59:59")));
        assert!(!s.is_open(at("Europe/Kyiv", "2026-05-01T17:00")));
        assert!(!s.is_open(at("Europe/Kyiv", "2026-05-01T08:59")));
        let friday_evening = at("Europe/Kyiv", "2026-05-01T18:30");
        let (open, change) = s.next_change(friday_evening);
        assert!(!open);
        assert_eq!(local(&s, change), "2026-05-04 09:00", "Monday morning");
        assert_eq!(
            local(&s, s.next_opening(friday_evening)),
            "2026-05-04 09:00"
        );
        let (open, change) = s.next_change(at("Europe/Kyiv", "2026-05-04T10:00"));
        assert!(open);
        assert_eq!(local(&s, change), "2026-05-04 17:00");
        // Open time: Friday 16:00 to Monday 10:00 is two hours.
        assert_eq!(
            s.open_ms_between(
                at("Europe/Kyiv", "2026-05-01T16:00"),
                at("Europe/Kyiv", "2026-05-04T10:00")
            ),
            2 * 3_600_000
        );
        // Thirty open minutes after Friday 16:45: Monday 09:15.
        assert_eq!(
            local(
                &s,
                s.after_open(at("Europe/Kyiv", "2026-05-01T16:45"), 30 * 60_000)
            ),
            "2026-05-04 09:15"
        );
        assert_eq!(
            s.after_open(at("Europe/Kyiv", "2026-05-04T10:00"), 0),
            Some(at("Europe/Kyiv", "2026-05-04T10:00"))
        );
    }

    #[test]
    fn holidays_close_a_day_or_shorten_it() {
        let s = schedule("Europe/Kyiv", |c| {
            let day = vec!["09:00-17:00".to_string()];
            c.hours.mon = day.clone();
            c.hours.tue = day.clone();
            c.hours.wed = day.clone();
            c.hours.thu = day.clone();
            c.hours.fri = day;
            c.holidays = vec![
                HolidayConfig {
                    date: "2026-12-24".into(),
                    hours: vec!["09:00-13:00".into()],
                },
                HolidayConfig {
                    date: "2026-12-25".into(),
                    hours: vec![],
                },
                // A Saturday opened for once.
                HolidayConfig {
                    date: "2026-12-26".into(),
                    hours: vec!["10:00-12:00".into()],
                },
            ];
        });
        // Thursday 24th: open only in the morning.
        assert!(s.is_open(at("Europe/Kyiv", "2026-12-24T12:59")));
        assert!(!s.is_open(at("Europe/Kyiv", "2026-12-24T13:00")));
        let (_, change) = s.next_change(at("Europe/Kyiv", "2026-12-24T10:00"));
        assert_eq!(local(&s, change), "2026-12-24 13:00");
        // Friday 25th closed: the next opening is the Saturday special.
        assert!(!s.is_open(at("Europe/Kyiv", "2026-12-25T10:00")));
        assert_eq!(
            local(&s, s.next_opening(at("Europe/Kyiv", "2026-12-24T14:00"))),
            "2026-12-26 10:00"
        );
        // After it: Monday.
        assert_eq!(
            local(&s, s.next_opening(at("Europe/Kyiv", "2026-12-26T12:00"))),
            "2026-12-28 09:00"
        );
        // A holiday on the Friday before the weekend: Monday again.
        let s2 = schedule("Europe/Kyiv", |c| {
            c.hours.mon = vec!["09:00-17:00".into()];
            c.hours.fri = vec!["09:00-17:00".into()];
            c.holidays = vec![HolidayConfig {
                date: "2026-05-08".into(),
                hours: vec![],
            }];
        });
        assert_eq!(
            local(&s2, s2.next_opening(at("Europe/Kyiv", "2026-05-07T12:00"))),
            "2026-05-11 09:00"
        );
    }

    #[test]
    fn overnight_and_midnight_ranges() {
        let s = schedule("UTC", |c| {
            c.hours.fri = vec!["22:00-06:00".into()];
            c.hours.sat = vec!["18:00-24:00".into()];
            c.hours.sun = vec!["00:00-02:00".into()];
            // A holiday on the Saturday does not cut Friday's night short.
            c.holidays = vec![HolidayConfig {
                date: "2026-05-02".into(),
                hours: vec![],
            }];
        });
        // 2026-05-01 is a Friday.
        assert!(!s.is_open(at("UTC", "2026-05-01T21:59")));
        assert!(s.is_open(at("UTC", "2026-05-01T22:00")));
        assert!(s.is_open(at("UTC", "2026-05-02T05:59")));
        assert!(!s.is_open(at("UTC", "2026-05-02T06:00")));
        let (_, change) = s.next_change(at("UTC", "2026-05-01T23:00"));
        assert_eq!(local(&s, change), "2026-05-02 06:00");
        // Saturday is a holiday: its evening is closed; Sunday 00:00-02:00
        // still opens.
        assert!(!s.is_open(at("UTC", "2026-05-02T19:00")));
        assert_eq!(
            local(&s, s.next_opening(at("UTC", "2026-05-02T07:00"))),
            "2026-05-03 00:00"
        );
        // Without the holiday, Saturday 18:00-24:00 and Sunday 00:00-02:00
        // are one opening.
        let s = schedule("UTC", |c| {
            c.hours.sat = vec!["18:00-24:00".into()];
            c.hours.sun = vec!["00:00-02:00".into()];
        });
        let (open, change) = s.next_change(at("UTC", "2026-05-02T23:00"));
        assert!(open);
        assert_eq!(local(&s, change), "2026-05-03 02:00");
        assert_eq!(
            s.open_ms_between(at("UTC", "2026-05-02T00:00"), at("UTC", "2026-05-04T00:00")),
            8 * 3_600_000
        );
        // A holiday on the Friday cancels all of its overnight range.
        let s = schedule("UTC", |c| {
            c.hours.fri = vec!["22:00-06:00".into()];
            c.holidays = vec![HolidayConfig {
                date: "2026-05-01".into(),
                hours: vec![],
            }];
        });
        assert!(!s.is_open(at("UTC", "2026-05-02T01:00")));
    }

    #[test]
    fn always_open_and_never_open() {
        let all = vec!["00:00-24:00".to_string()];
        let s = schedule("Europe/Kyiv", |c| {
            c.hours = WeekHours {
                mon: all.clone(),
                tue: all.clone(),
                wed: all.clone(),
                thu: all.clone(),
                fri: all.clone(),
                sat: all.clone(),
                sun: all,
            };
        });
        let now = at("Europe/Kyiv", "2026-05-01T12:00");
        let (open, change) = s.next_change(now);
        assert!(open);
        assert_eq!(
            change,
            Some(now + u64::from(OPEN_RUN_DAYS) * DAY_MS as u64),
            "looked at again later"
        );
        assert!(s.next_check(now) > now);
        assert_eq!(s.open_ms_between(now, now + 5_000), 5_000);
        assert_eq!(s.after_open(now, 5_000), Some(now + 5_000));

        let never = schedule("Europe/Kyiv", |_| {});
        assert!(!never.is_open(now));
        assert_eq!(never.next_change(now), (false, None));
        assert_eq!(never.next_opening(now), None);
        assert_eq!(never.after_open(now, 1), None);
        assert_eq!(never.open_ms_between(now, now + DAY_MS as u64), 0);
        assert_eq!(never.next_check(now), now + DAY_MS as u64);
    }

    #[test]
    fn daylight_saving_changes_keep_local_hours() {
        // Kyiv: clocks go forward on 2026-03-29 at 03:00 (to 04:00) and
        // back on 2026-10-25 at 04:00 (to 03:00).
        let s = schedule("Europe/Kyiv", |c| {
            c.hours.sat = vec!["09:00-17:00".into()];
            c.hours.sun = vec!["02:00-05:00".into(), "09:00-17:00".into()];
        });
        // 09:00 local is 07:00 UTC on Saturday (winter), 06:00 UTC on
        // Sunday (summer).
        let sat = s.next_opening(at("UTC", "2026-03-28T00:00")).unwrap();
        assert_eq!(sat, at("UTC", "2026-03-28T07:00"));
        let sun = s.next_opening(at("UTC", "2026-03-29T04:00")).unwrap();
        assert_eq!(sun, at("UTC", "2026-03-29T06:00"));
        // 02:00-05:00 that night lasts two hours (03:00-04:00 is skipped).
        assert_eq!(
            s.open_ms_between(at("UTC", "2026-03-28T20:00"), at("UTC", "2026-03-29T05:00")),
            2 * 3_600_000
        );
        // In October it lasts four (03:00-04:00 happens twice).
        assert_eq!(
            s.open_ms_between(at("UTC", "2026-10-24T20:00"), at("UTC", "2026-10-25T05:00")),
            4 * 3_600_000
        );
        assert_eq!(
            local(&s, s.next_change(at("UTC", "2026-03-29T00:30")).1),
            "2026-03-29 05:00"
        );
        // New York, same local hours, another date for the change.
        let ny = schedule("America/New_York", |c| {
            c.hours.sun = vec!["09:00-17:00".into()]
        });
        assert_eq!(
            ny.next_opening(at("UTC", "2026-03-08T00:00")),
            Some(at("UTC", "2026-03-08T13:00"))
        );
        assert_eq!(
            ny.next_opening(at("UTC", "2026-03-02T00:00")),
            Some(at("UTC", "2026-03-08T13:00"))
        );
        assert_eq!(
            ny.next_opening(at("UTC", "2026-03-01T00:00")),
            Some(at("UTC", "2026-03-01T14:00"))
        );
    }

    #[test]
    fn holidays_deserialize_as_a_date_or_a_table() {
        #[derive(Deserialize)]
        struct T {
            holidays: Vec<HolidayConfig>,
        }
        let t: T = serde_json::from_str(
            r#"{"holidays": ["2026-12-25", {"date": "2026-12-24", "hours": ["09:00-13:00"]}]}"#,
        )
        .unwrap();
        assert_eq!(t.holidays[0].hours.len(), 0);
        assert_eq!(t.holidays[1].date, "2026-12-24");
        let e = serde_json::from_str::<T>(r#"{"holidays": [{"day": "2026-12-24"}]}"#)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(e.contains("unknown field `day`"), "{e}");
    }
}
