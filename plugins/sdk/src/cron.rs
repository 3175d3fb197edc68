//! Five-field cron expressions (`minute hour day-of-month month day-of-week`, UTC).
//!
//! Each field is `*`, a number, a range `a-b`, a step `*/s`, `a-b/s` or `a/s` (from `a` to the
//! field's maximum), or a comma list of those. Months accept `JAN`..`DEC`, days of the week
//! `SUN`..`SAT` (case-insensitive); day-of-week is 0-7 with both 0 and 7 meaning Sunday, and
//! `SUN` ending a range that starts after Sunday is 7 (`FRI-SUN` is the weekend). A step is at
//! least 1 and at most the field's maximum (`*/60` in the minute field is refused).
//! `@hourly`, `@daily` (`@midnight`), `@weekly`, `@monthly` and `@yearly` (`@annually`) are
//! accepted as shorthands.
//!
//! Day matching follows cron: when both day-of-month and day-of-week are restricted, a day
//! matches if either matches. A field is "restricted" when its set is not the whole range, so
//! `*`, `*/1` and `1-31` are the same thing — the parsed sets are the schedule, and
//! [`Display`](fmt::Display) prints a canonical form of them. (POSIX and croner exempt only a
//! literal `*`; `tests/cron_reference.rs` compares this parser with croner and lists every
//! difference.)

use crate::prelude::*;
use core::fmt;
use core::str::FromStr;

/// A parsed cron expression: one set of allowed values per field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Cron {
    minute: Set,
    hour: Set,
    dom: Set,
    month: Set,
    /// Days of the week with Sunday = 0 (a parsed 7 is stored as 0).
    dow: Set,
}

/// A set of small numbers (0..=63) as a bit mask.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Set(u64);

impl Set {
    /// `lo..=hi` (both at most 62).
    const fn range(lo: u32, hi: u32) -> Set {
        Set(((1u64 << (hi + 1)) - 1) & !((1u64 << lo) - 1))
    }
    fn has(self, v: u32) -> bool {
        v < 64 && self.0 & (1 << v) != 0
    }
    fn with(self, v: u32) -> Set {
        Set(self.0 | (1 << v))
    }
    /// The values, ascending (visits set bits only).
    fn values(self) -> impl Iterator<Item = u32> {
        let mut bits = self.0;
        core::iter::from_fn(move || {
            if bits == 0 {
                return None;
            }
            let v = bits.trailing_zeros();
            bits &= bits - 1;
            Some(v)
        })
    }
    fn len(self) -> u32 {
        self.0.count_ones()
    }
    /// The only value of a one-element set.
    fn single(self) -> Option<u32> {
        (self.len() == 1).then(|| self.0.trailing_zeros())
    }
}

/// How one field is spelled and bounded.
struct Field {
    name: &'static str,
    min: u32,
    max: u32,
    /// Names for the values `min..`, matched case-insensitively.
    names: &'static [&'static str],
}

const MINUTE: Field = Field {
    name: "minute",
    min: 0,
    max: 59,
    names: &[],
};
const HOUR: Field = Field {
    name: "hour",
    min: 0,
    max: 23,
    names: &[],
};
const DOM: Field = Field {
    name: "day-of-month",
    min: 1,
    max: 31,
    names: &[],
};
const MONTH: Field = Field {
    name: "month",
    min: 1,
    max: 12,
    names: &[
        "JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC",
    ],
};
/// Parsed as 0-7; 7 is folded into 0 afterwards.
const DOW: Field = Field {
    name: "day-of-week",
    min: 0,
    max: 7,
    names: &["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"],
};

const MINUTES_PER_DAY: u64 = 24 * 60;

/// How the firings of a day moved between days when shifted.
#[derive(Debug, Clone, Copy)]
struct Carry {
    /// Days the first firing moved.
    first: u64,
    /// Every firing moved by `first` days.
    uniform: bool,
    /// The first firing (time of day before the shift) that moved to a later day, and by how
    /// many days.
    moved: Option<(u64, u64)>,
}

impl Field {
    const fn full(&self) -> Set {
        // Day-of-week's full set is 0-6: 7 is an alias of 0.
        if self.max == 7 {
            Set::range(0, 6)
        } else {
            Set::range(self.min, self.max)
        }
    }

    fn value(&self, text: &str) -> Result<u32, String> {
        if let Some(i) = self.names.iter().position(|n| n.eq_ignore_ascii_case(text)) {
            return Ok(self.min + i as u32);
        }
        let v: u32 = text.parse().map_err(|_| {
            if self.names.is_empty() {
                format!("{}: `{text}` is not a number", self.name)
            } else {
                format!(
                    "{}: `{text}` is not a number or a name ({})",
                    self.name,
                    self.names.join(", ")
                )
            }
        })?;
        if v < self.min || v > self.max {
            return Err(format!(
                "{}: {v} is out of range {}-{}",
                self.name, self.min, self.max
            ));
        }
        Ok(v)
    }

    fn parse(&self, text: &str) -> Result<Set, String> {
        // Fast paths for the common spellings; they give exactly what the general loop gives.
        if text == "*" {
            return Ok(self.full());
        }
        if (1..=2).contains(&text.len()) && text.bytes().all(|b| b.is_ascii_digit()) {
            let v = self.value(text)?;
            return Ok(if self.max == 7 && v == 7 {
                Set(1)
            } else {
                Set(0).with(v)
            });
        }
        self.parse_list(text)
    }

    /// The general parser: a comma list of `*`, values, ranges and steps.
    fn parse_list(&self, text: &str) -> Result<Set, String> {
        let mut set = Set(0);
        for item in text.split(',') {
            if item.is_empty() {
                return Err(format!("{}: empty item in `{text}`", self.name));
            }
            let (span, step) = match item.split_once('/') {
                Some((span, step)) => {
                    let step: u32 = step
                        .parse()
                        .map_err(|_| format!("{}: step `{step}` is not a number", self.name))?;
                    if step == 0 {
                        return Err(format!("{}: step must be at least 1", self.name));
                    }
                    // A step past the field's maximum can only ever name the start of its
                    // span; refusing it also keeps `v + step` below from overflowing.
                    if step > self.max {
                        return Err(format!(
                            "{}: step {step} is larger than the field's maximum {}",
                            self.name, self.max
                        ));
                    }
                    (span, step)
                }
                None => (item, 1),
            };
            let (lo, hi) = if span == "*" {
                (self.min, self.max)
            } else if let Some((a, b)) = span.split_once('-') {
                let lo = self.value(a)?;
                // `SUN` ending a range that starts after Sunday is the 7 of the 0-7
                // day-of-week, so that `FRI-SUN` is the weekend (as croner reads it) rather
                // than a range that runs backwards; `SUN-SUN` stays Sunday.
                let hi = if self.max == 7 && lo > 0 && b.eq_ignore_ascii_case("SUN") {
                    7
                } else {
                    self.value(b)?
                };
                if lo > hi {
                    return Err(format!("{}: range {span} runs backwards", self.name));
                }
                (lo, hi)
            } else {
                let v = self.value(span)?;
                // `a/s` runs from `a` to the field's maximum, as in cronie.
                (v, if item.contains('/') { self.max } else { v })
            };
            // `hi` and `step` are at most 59, so the sum cannot overflow; checked anyway so
            // that a later change to the bounds cannot turn it into a wrap or a panic.
            let mut v = lo;
            while v <= hi {
                set = set.with(v);
                match v.checked_add(step) {
                    Some(next) => v = next,
                    None => break,
                }
            }
        }
        if self.max == 7 && set.has(7) {
            set = Set((set.0 & !(1 << 7)) | 1);
        }
        Ok(set)
    }

    /// Canonical text: `*`, `*/s` for a progression of three or more values from the minimum
    /// to the end of the range, else a comma list of values and ranges.
    fn format<W: fmt::Write>(&self, set: Set, f: &mut W) -> fmt::Result {
        let full = self.full();
        if set == full {
            return f.write_str("*");
        }
        if let Some(v) = set.single() {
            return write_number(f, v);
        }
        // At most 64 values: kept on the stack.
        let mut buffer = [0u32; 64];
        let mut count = 0;
        for v in set.values() {
            buffer[count] = v;
            count += 1;
        }
        let values = &buffer[..count];
        let top = if self.max == 7 { 6 } else { self.max };
        if let [first, second, ..] = values[..] {
            let step = second - first;
            let progression = Set((first..=top)
                .step_by(step as usize)
                .fold(0, |b, v| b | (1 << v)));
            if first == self.min && step > 1 && values.len() >= 3 && progression == set {
                f.write_str("*/")?;
                return write_number(f, step);
            }
        }
        let mut i = 0;
        let mut first_item = true;
        while i < values.len() {
            let mut j = i;
            while j + 1 < values.len() && values[j + 1] == values[j] + 1 {
                j += 1;
            }
            if !first_item {
                f.write_str(",")?;
            }
            first_item = false;
            write_number(f, values[i])?;
            match j - i {
                0 => {}
                1 => {
                    f.write_str(",")?;
                    write_number(f, values[j])?;
                }
                _ => {
                    f.write_str("-")?;
                    write_number(f, values[j])?;
                }
            }
            i = j + 1;
        }
        Ok(())
    }
}

/// Writes a field value (0..=63) without going through the integer formatting machinery.
fn write_number<W: fmt::Write>(f: &mut W, v: u32) -> fmt::Result {
    if v >= 10 {
        f.write_char(char::from(b'0' + (v / 10 % 10) as u8))?;
    }
    f.write_char(char::from(b'0' + (v % 10) as u8))
}

impl FromStr for Cron {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let text = s.trim();
        let expanded = if text.starts_with('@') {
            const SHORTHANDS: &[(&str, &str)] = &[
                ("@hourly", "0 * * * *"),
                ("@daily", "0 0 * * *"),
                ("@midnight", "0 0 * * *"),
                ("@weekly", "0 0 * * 0"),
                ("@monthly", "0 0 1 * *"),
                ("@yearly", "0 0 1 1 *"),
                ("@annually", "0 0 1 1 *"),
            ];
            SHORTHANDS
                .iter()
                .find(|(name, _)| name.eq_ignore_ascii_case(text))
                .map(|(_, expanded)| *expanded)
                .ok_or_else(|| format!("unknown shorthand `{text}`"))?
        } else {
            text
        };
        let mut fields = expanded.split_whitespace();
        let (Some(minute), Some(hour), Some(dom), Some(month), Some(dow), None) = (
            fields.next(),
            fields.next(),
            fields.next(),
            fields.next(),
            fields.next(),
            fields.next(),
        ) else {
            return Err(format!(
                "expected 5 fields (minute hour day-of-month month day-of-week), got {} in `{text}`",
                expanded.split_whitespace().count()
            ));
        };
        let cron = Cron {
            minute: MINUTE.parse(minute)?,
            hour: HOUR.parse(hour)?,
            dom: DOM.parse(dom)?,
            month: MONTH.parse(month)?,
            dow: DOW.parse(dow)?,
        };
        cron.check_some_day_exists()?;
        Ok(cron)
    }
}

impl fmt::Display for Cron {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.write_to(f)
    }
}

impl Cron {
    /// Writes the canonical text (what [`Display`](fmt::Display) prints) to `out`; writing to
    /// a `String` this way skips the formatter's dynamic dispatch.
    pub fn write_to<W: fmt::Write>(&self, out: &mut W) -> fmt::Result {
        MINUTE.format(self.minute, out)?;
        out.write_char(' ')?;
        HOUR.format(self.hour, out)?;
        out.write_char(' ')?;
        DOM.format(self.dom, out)?;
        out.write_char(' ')?;
        MONTH.format(self.month, out)?;
        out.write_char(' ')?;
        DOW.format(self.dow, out)
    }

    /// The same schedule, `minutes` later (minutes carry into hours, hours into days).
    ///
    /// The firing times of a day are the set of (hour, minute) pairs; each is shifted. The
    /// result must again be every combination of an hour set and a minute set, or cron cannot
    /// express it. A firing that moves into the next day is only possible when the days are
    /// unrestricted, or when only day-of-week is restricted and every firing moves by the same
    /// number of days (the days of the week then move with it).
    pub fn shifted(&self, minutes: u32) -> Result<Cron, String> {
        // One firing a day (the usual snapshot schedule): plain arithmetic, same answer as
        // the set algorithm (see the `single_firing_fast_path_matches_the_set_algorithm` test).
        if let (Some(h), Some(m)) = (self.hour.single(), self.minute.single()) {
            let t = u64::from(h) * 60 + u64::from(m);
            let shifted = t + u64::from(minutes);
            let (day, tod) = (shifted / MINUTES_PER_DAY, shifted % MINUTES_PER_DAY);
            let carry = Carry {
                first: day,
                uniform: true,
                moved: (day > 0).then_some((t, day)),
            };
            let hours = Set(0).with((tod / 60) as u32);
            let mins = Set(0).with((tod % 60) as u32);
            return self.with_times(hours, mins, carry, minutes);
        }
        self.shifted_by_sets(minutes)
    }

    /// [`Cron::shifted`] for any hour and minute sets: shifts every firing of the day.
    fn shifted_by_sets(&self, minutes: u32) -> Result<Cron, String> {
        let mut hours = Set(0);
        let mut mins = Set(0);
        let mut carry: Option<Carry> = None;
        for t in self.times_of_day() {
            let shifted = t + u64::from(minutes);
            let day = shifted / MINUTES_PER_DAY;
            let tod = shifted % MINUTES_PER_DAY;
            hours = hours.with((tod / 60) as u32);
            mins = mins.with((tod % 60) as u32);
            let c = carry.get_or_insert(Carry {
                first: day,
                uniform: true,
                moved: None,
            });
            c.uniform &= day == c.first;
            if day > 0 && c.moved.is_none() {
                c.moved = Some((t, day));
            }
        }
        let carry = carry.unwrap_or(Carry {
            first: 0,
            uniform: true,
            moved: None,
        });
        self.with_times(hours, mins, carry, minutes)
    }

    /// The shifted schedule from the shifted hour and minute sets and how firings moved
    /// between days; errors when cron cannot express it.
    fn with_times(
        &self,
        hours: Set,
        mins: Set,
        carry: Carry,
        minutes: u32,
    ) -> Result<Cron, String> {
        if hours.len() * mins.len() != self.hour.len() * self.minute.len() {
            return Err(format!(
                "`{self}` shifted by {minutes} minutes fires at times that are not every \
                 combination of a set of hours and a set of minutes, which cron cannot express"
            ));
        }
        let mut dow = self.dow;
        let days_restricted =
            self.dom != DOM.full() || self.month != MONTH.full() || self.dow != DOW.full();
        if let Some((t, day)) = carry.moved
            && days_restricted
        {
            let only_dow = self.dom == DOM.full() && self.month == MONTH.full();
            if !(only_dow && carry.uniform) {
                let what = if only_dow {
                    "day-of-week is restricted and only some firings move to another day"
                } else {
                    "day-of-month or month is restricted"
                };
                return Err(format!(
                    "`{self}` shifted by {minutes} minutes moves the {:02}:{:02} firing {day} day(s) \
                     later, but {what}",
                    t / 60,
                    t % 60
                ));
            }
            let by = (carry.first % 7) as u32;
            dow = Set(0);
            for d in self.dow.values() {
                dow = dow.with((d + by) % 7);
            }
        }
        Ok(Cron {
            minute: mins,
            hour: hours,
            dom: self.dom,
            month: self.month,
            dow,
        })
    }

    /// The first firing strictly after `unix_seconds` (UTC), if any within the next ~5 years.
    ///
    /// (The search actually covers 8 years, so a 29 February schedule is always found.)
    pub fn next_after(&self, unix_seconds: i64) -> Option<i64> {
        let start_minute = unix_seconds.div_euclid(60) + 1;
        let first_day = start_minute.div_euclid(MINUTES_PER_DAY as i64);
        let first_tod = start_minute.rem_euclid(MINUTES_PER_DAY as i64) as u64;
        let times: Vec<u64> = self.times_of_day().collect();
        for day in first_day..first_day + 8 * 366 {
            if !self.fires_on(day) {
                continue;
            }
            let from = if day == first_day { first_tod } else { 0 };
            if let Some(t) = times.iter().find(|t| **t >= from) {
                return Some((day * MINUTES_PER_DAY as i64 + *t as i64) * 60);
            }
        }
        None
    }

    /// Shortest gap between two consecutive firings, in minutes (the "period" a stagger must fit in).
    ///
    /// Considers the gaps inside a firing day and the gap from a day's last firing to the next
    /// firing day's first one.
    pub fn min_period_minutes(&self) -> u32 {
        let times: Vec<u64> = self.times_of_day().collect();
        let inside = times.windows(2).map(|w| w[1] - w[0]).min();
        let (Some(&first), Some(&last)) = (times.first(), times.last()) else {
            return 0;
        };
        let across = self
            .min_day_gap()
            .map(|days| days * MINUTES_PER_DAY - last + first);
        let gap = match (inside, across) {
            (Some(a), Some(b)) => a.min(b),
            (a, b) => a.or(b).unwrap_or(0),
        };
        u32::try_from(gap).unwrap_or(u32::MAX)
    }

    /// Firing times within a day, in minutes after midnight, ascending.
    fn times_of_day(&self) -> impl Iterator<Item = u64> + '_ {
        self.hour.values().flat_map(move |h| {
            self.minute
                .values()
                .map(move |m| u64::from(h) * 60 + u64::from(m))
        })
    }

    /// Whether the schedule fires on the day `days` after 1970-01-01.
    fn fires_on(&self, days: i64) -> bool {
        let (_, month, dom) = civil_from_days(days);
        let dow = weekday(days);
        self.day_matches(month, dom, dow)
    }

    fn day_matches(&self, month: u32, dom: u32, dow: u32) -> bool {
        if !self.month.has(month) {
            return false;
        }
        let dom_restricted = self.dom != DOM.full();
        let dow_restricted = self.dow != DOW.full();
        match (dom_restricted, dow_restricted) {
            (true, true) => self.dom.has(dom) || self.dow.has(dow),
            (true, false) => self.dom.has(dom),
            (false, true) => self.dow.has(dow),
            (false, false) => true,
        }
    }

    /// Smallest number of days between consecutive firing days, over a 28-year window (the
    /// calendar's weekday pattern repeats every 28 years between 1901 and 2099).
    fn min_day_gap(&self) -> Option<u64> {
        let start = days_from_civil(2001, 1, 1);
        let mut previous: Option<i64> = None;
        let mut best: Option<u64> = None;
        for day in start..start + 28 * 366 {
            if self.fires_on(day) {
                if let Some(p) = previous {
                    let gap = (day - p) as u64;
                    best = Some(best.map_or(gap, |b| b.min(gap)));
                    if gap == 1 {
                        break;
                    }
                }
                previous = Some(day);
            }
        }
        best
    }

    /// Reject day-of-month/month combinations that never occur, such as `0 0 30 2 *`.
    fn check_some_day_exists(&self) -> Result<(), String> {
        let dom_only = self.dom != DOM.full() && self.dow == DOW.full();
        if !dom_only {
            return Ok(());
        }
        let exists = self
            .month
            .values()
            .any(|m| self.dom.values().any(|d| d <= days_in_month(m, true)));
        if exists {
            Ok(())
        } else {
            Err(format!(
                "day-of-month: no month in `{}` has day {}",
                MonthText(self.month),
                self.dom
                    .values()
                    .map(|d| d.to_string())
                    .collect::<Vec<_>>()
                    .join(",")
            ))
        }
    }
}

/// Displays a month set for error messages.
struct MonthText(Set);

impl fmt::Display for MonthText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        MONTH.format(self.0, f)
    }
}

fn days_in_month(month: u32, leap: bool) -> u32 {
    match month {
        2 if leap => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Day of the week of the day `days` after 1970-01-01 (a Thursday), Sunday = 0.
fn weekday(days: i64) -> u32 {
    (days + 4).rem_euclid(7) as u32
}

/// Days since 1970-01-01 of a proleptic Gregorian date. Counts in 400-year eras starting on
/// 1 March, so the leap day is the last day of its year.
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400; // 0..=399
    let mp = i64::from((month + 9) % 12); // March = 0
    let doy = (153 * mp + 2) / 5 + i64::from(day) - 1; // 0..=365
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy; // 0..=146096
    era * 146_097 + doe - 719_468
}

/// The inverse of `days_from_civil`: (year, month 1-12, day 1-31) of a day count since
/// 1970-01-01 (proleptic Gregorian, UTC).
pub fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cron(s: &str) -> Cron {
        s.parse()
            .unwrap_or_else(|e| panic!("`{s}` should parse: {e}"))
    }

    fn canon(s: &str) -> String {
        cron(s).to_string()
    }

    fn shifted(s: &str, minutes: u32) -> Result<String, String> {
        cron(s).shifted(minutes).map(|c| c.to_string())
    }

    /// Unix seconds of a UTC date and time.
    fn at(y: i64, mo: u32, d: u32, h: i64, mi: i64) -> i64 {
        (days_from_civil(y, mo, d) * 1440 + h * 60 + mi) * 60
    }

    #[test]
    fn civil_dates_round_trip_and_match_known_days() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
        assert_eq!(days_from_civil(2024, 2, 29), 19_782);
        assert_eq!(civil_from_days(19_782), (2024, 2, 29));
        assert_eq!(civil_from_days(-1), (1969, 12, 31));
        // 2024-01-01 was a Monday, 1970-01-01 a Thursday.
        assert_eq!(weekday(days_from_civil(2024, 1, 1)), 1);
        assert_eq!(weekday(0), 4);
        for days in (-800_000..800_000).step_by(997) {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days, "{y}-{m}-{d}");
            assert!(d <= days_in_month(m, y % 4 == 0 && (y % 100 != 0 || y % 400 == 0)));
        }
    }

    #[test]
    fn parses_every_field_form() {
        assert_eq!(canon("* * * * *"), "* * * * *");
        assert_eq!(canon("0 2 * * *"), "0 2 * * *");
        assert_eq!(canon("*/15 * * * *"), "*/15 * * * *");
        assert_eq!(canon("0-59/15 * * * *"), "*/15 * * * *");
        assert_eq!(canon("5-50/15 * * * *"), "5,20,35,50 * * * *");
        assert_eq!(canon("10/20 * * * *"), "10,30,50 * * * *");
        assert_eq!(canon("1,2,3,4,10,11 * * * *"), "1-4,10,11 * * * *");
        assert_eq!(canon("0 9-17 * * MON-FRI"), "0 9-17 * * 1-5");
        assert_eq!(canon("0 0 1 jan,Jul *"), "0 0 1 1,7 *");
        assert_eq!(canon("0 0 * * 7"), "0 0 * * 0");
        assert_eq!(canon("0 0 * * 5-7"), "0 0 * * 0,5,6");
        assert_eq!(canon("0 0 * * 0-7"), "0 0 * * *");
        assert_eq!(canon("*/1 0-23 1-31 1-12 0-6"), "* * * * *");
        assert_eq!(canon("  30   4 *  * *  "), "30 4 * * *");
        assert_eq!(canon("@daily"), "0 0 * * *");
        assert_eq!(canon("@hourly"), "0 * * * *");
        assert_eq!(canon("@weekly"), "0 0 * * 0");
        assert_eq!(canon("@monthly"), "0 0 1 * *");
        assert_eq!(canon("@yearly"), "0 0 1 1 *");
        assert_eq!(canon("0 0 */2 * *"), "0 0 */2 * *");
        assert_eq!(
            canon("0 0 2-31/2 * *"),
            "0 0 2,4,6,8,10,12,14,16,18,20,22,24,26,28,30 * *"
        );
        assert_eq!(canon("0 */6 * * *"), "0 */6 * * *");
        assert_eq!(canon("0 0 * */3 *"), "0 0 * */3 *");
    }

    #[test]
    fn display_parses_back_to_the_same_schedule() {
        for s in [
            "* * * * *",
            "*/7 */5 * * *",
            "3-9/2,40 1,2,3 15 FEB-MAR SUN",
            "0 0 29 2 *",
            "59 23 31 12 SAT",
            "0,1,2 0 1-3,5 1-6/2 1-5",
        ] {
            let c = cron(s);
            let again = cron(&c.to_string());
            assert_eq!(c, again, "`{s}` printed as `{c}`");
            assert_eq!(again.to_string(), c.to_string());
        }
    }

    #[test]
    fn errors_name_the_field() {
        let err = |s: &str| s.parse::<Cron>().unwrap_err();
        assert_eq!(err("0 25 * * *"), "hour: 25 is out of range 0-23");
        assert_eq!(err("60 * * * *"), "minute: 60 is out of range 0-59");
        assert_eq!(err("0 0 0 * *"), "day-of-month: 0 is out of range 1-31");
        assert_eq!(err("0 0 * 13 *"), "month: 13 is out of range 1-12");
        assert_eq!(err("0 0 * * 8"), "day-of-week: 8 is out of range 0-7");
        assert!(err("0 0 * * FOO").starts_with("day-of-week: `FOO` is not a number or a name"));
        assert_eq!(err("x * * * *"), "minute: `x` is not a number");
        assert_eq!(err("*/0 * * * *"), "minute: step must be at least 1");
        assert_eq!(err("*/x * * * *"), "minute: step `x` is not a number");
        // A step that would overflow `u32` arithmetic is refused, never wrapped.
        assert_eq!(
            err("30-31/4294967267 * * * *"),
            "minute: step 4294967267 is larger than the field's maximum 59"
        );
        assert_eq!(
            err("0 0 * * 1/4294967295"),
            "day-of-week: step 4294967295 is larger than the field's maximum 7"
        );
        assert_eq!(
            err("0 0 1-31/32 * *"),
            "day-of-month: step 32 is larger than the field's maximum 31"
        );
        assert!("0-59/59 * * * *".parse::<Cron>().is_ok());
        // `SUN` ends a range as 7: the weekend, not a range that runs backwards.
        assert_eq!(canon("0 0 * * FRI-SUN"), "0 0 * * 0,5,6");
        assert_eq!(canon("0 0 * * sun-sun"), "0 0 * * 0");
        assert_eq!(canon("0 0 * * 0-SUN"), "0 0 * * 0");
        assert_eq!(canon("0 0 * * MON-SUN/2"), "0 0 * * 0,1,3,5");
        assert_eq!(
            err("*/99999999999 * * * *"),
            "minute: step `99999999999` is not a number"
        );
        assert_eq!(err("0 5-3 * * *"), "hour: range 5-3 runs backwards");
        assert_eq!(err("0,,1 * * * *"), "minute: empty item in `0,,1`");
        assert!(err("0 0 * *").starts_with("expected 5 fields"));
        assert!(err("0 0 * * * *").starts_with("expected 5 fields"));
        assert!(err("").starts_with("expected 5 fields"));
        assert_eq!(err("@often"), "unknown shorthand `@often`");
        assert_eq!(
            err("0 0 30,31 2 *"),
            "day-of-month: no month in `2` has day 30,31"
        );
        // With day-of-week restricted too, either may match, so the schedule does fire.
        assert!("0 0 30 2 MON".parse::<Cron>().is_ok());
        assert!("0 0 31 4,6 *".parse::<Cron>().is_err());
        assert!("0 0 31 4-7 *".parse::<Cron>().is_ok());
    }

    #[test]
    fn shifts_within_the_hour_and_across_hours() {
        assert_eq!(shifted("0 2 * * *", 0).as_deref(), Ok("0 2 * * *"));
        assert_eq!(shifted("0 2 * * *", 10).as_deref(), Ok("10 2 * * *"));
        assert_eq!(shifted("0 2 * * *", 60).as_deref(), Ok("0 3 * * *"));
        assert_eq!(shifted("50 2 * * *", 20).as_deref(), Ok("10 3 * * *"));
        assert_eq!(shifted("0 2 * * *", 150).as_deref(), Ok("30 4 * * *"));
        assert_eq!(
            shifted("*/15 * * * *", 5).as_deref(),
            Ok("5,20,35,50 * * * *")
        );
        assert_eq!(shifted("*/15 * * * *", 15).as_deref(), Ok("*/15 * * * *"));
        assert_eq!(
            shifted("*/15 * * * *", 20).as_deref(),
            Ok("5,20,35,50 * * * *")
        );
        assert_eq!(
            shifted("0 */6 * * *", 90).as_deref(),
            Ok("30 1,7,13,19 * * *")
        );
        assert_eq!(shifted("0 0,12 * * *", 30).as_deref(), Ok("30 0,12 * * *"));
        assert_eq!(shifted("0,30 * * * *", 10).as_deref(), Ok("10,40 * * * *"));
        // Restricted days are fine while no firing changes day.
        assert_eq!(shifted("0 2 1 * MON", 30).as_deref(), Ok("30 2 1 * 1"));
        assert_eq!(shifted("0 2 1 JAN *", 30).as_deref(), Ok("30 2 1 1 *"));
    }

    #[test]
    fn shifts_wrap_past_midnight() {
        assert_eq!(shifted("50 23 * * *", 20).as_deref(), Ok("10 0 * * *"));
        assert_eq!(shifted("0 23 * * *", 60).as_deref(), Ok("0 0 * * *"));
        assert_eq!(shifted("0 22,23 * * *", 90).as_deref(), Ok("30 0,23 * * *"));
        assert_eq!(shifted("0 2 * * *", 24 * 60).as_deref(), Ok("0 2 * * *"));
        assert_eq!(
            shifted("0 2 * * *", 25 * 60 + 5).as_deref(),
            Ok("5 3 * * *")
        );
        // Every hour: the 23:xx firings become 00:xx of the next day; the set is unchanged.
        assert_eq!(shifted("0 * * * *", 60).as_deref(), Ok("0 * * * *"));
        assert_eq!(shifted("30 * * * *", 45).as_deref(), Ok("15 * * * *"));
    }

    #[test]
    fn day_of_week_moves_with_a_uniform_wrap() {
        assert_eq!(shifted("50 23 * * MON", 20).as_deref(), Ok("10 0 * * 2"));
        assert_eq!(shifted("30 23 * * SAT", 60).as_deref(), Ok("30 0 * * 0"));
        assert_eq!(
            shifted("0 22,23 * * 1-5", 180).as_deref(),
            Ok("0 1,2 * * 2-6")
        );
        assert_eq!(
            shifted("0 12 * * 0", 7 * 24 * 60).as_deref(),
            Ok("0 12 * * 0")
        );
        assert_eq!(
            shifted("0 12 * * 6", 2 * 24 * 60).as_deref(),
            Ok("0 12 * * 1")
        );
    }

    #[test]
    fn shifts_cron_cannot_express_are_errors() {
        // 23:45 and 00:15: hours {23, 0} × minutes {15, 45} would add two more firings.
        let e = shifted("0,30 23 * * *", 45).unwrap_err();
        assert!(e.contains("not every combination"), "{e}");
        let e = shifted("0,45 10 * * *", 30).unwrap_err();
        assert!(e.contains("not every combination"), "{e}");
        // Some firings move to the next day while the day of the week is restricted.
        let e = shifted("0 12,23 * * MON", 90).unwrap_err();
        assert!(e.contains("day-of-week is restricted"), "{e}");
        assert!(e.contains("23:00"), "{e}");
        // Any day wrap with day-of-month or month restricted.
        let e = shifted("50 23 1 * *", 20).unwrap_err();
        assert!(e.contains("day-of-month or month is restricted"), "{e}");
        let e = shifted("50 23 * JAN *", 20).unwrap_err();
        assert!(e.contains("day-of-month or month is restricted"), "{e}");
        let e = shifted("50 23 1 * MON", 20).unwrap_err();
        assert!(e.contains("day-of-month or month is restricted"), "{e}");
    }

    #[test]
    fn next_after_finds_the_next_firing() {
        let c = cron("30 2 * * *");
        assert_eq!(
            c.next_after(at(2024, 5, 10, 0, 0)),
            Some(at(2024, 5, 10, 2, 30))
        );
        // Strictly after: a firing exactly at the instant does not count.
        assert_eq!(
            c.next_after(at(2024, 5, 10, 2, 30)),
            Some(at(2024, 5, 11, 2, 30))
        );
        assert_eq!(
            c.next_after(at(2024, 5, 10, 2, 29) + 59),
            Some(at(2024, 5, 10, 2, 30))
        );
        assert_eq!(
            c.next_after(at(2024, 12, 31, 3, 0)),
            Some(at(2025, 1, 1, 2, 30))
        );

        let every_15 = cron("*/15 * * * *");
        assert_eq!(
            every_15.next_after(at(2024, 1, 1, 23, 50)),
            Some(at(2024, 1, 2, 0, 0))
        );
        assert_eq!(
            every_15.next_after(at(2024, 1, 1, 10, 0) + 1),
            Some(at(2024, 1, 1, 10, 15))
        );

        // 2024-01-01 is a Monday: the next Friday is the 5th.
        let fridays = cron("0 9 * * FRI");
        assert_eq!(
            fridays.next_after(at(2024, 1, 1, 12, 0)),
            Some(at(2024, 1, 5, 9, 0))
        );
        let sundays = cron("0 9 * * 7");
        assert_eq!(
            sundays.next_after(at(2024, 1, 1, 12, 0)),
            Some(at(2024, 1, 7, 9, 0))
        );

        let leap = cron("0 0 29 2 *");
        assert_eq!(
            leap.next_after(at(2024, 3, 1, 0, 0)),
            Some(at(2028, 2, 29, 0, 0))
        );
        // 2100 is not a leap year.
        assert_eq!(
            leap.next_after(at(2096, 3, 1, 0, 0)),
            Some(at(2104, 2, 29, 0, 0))
        );

        let month_end = cron("0 0 31 * *");
        assert_eq!(
            month_end.next_after(at(2024, 4, 1, 0, 0)),
            Some(at(2024, 5, 31, 0, 0))
        );

        // Both day fields restricted: either matches (the 13th, or any Friday).
        let either = cron("0 0 13 * FRI");
        assert_eq!(
            either.next_after(at(2024, 1, 1, 0, 0)),
            Some(at(2024, 1, 5, 0, 0))
        );
        assert_eq!(
            either.next_after(at(2024, 1, 6, 0, 0)),
            Some(at(2024, 1, 12, 0, 0))
        );
        assert_eq!(
            either.next_after(at(2024, 1, 12, 0, 0)),
            Some(at(2024, 1, 13, 0, 0))
        );

        // Before 1970 works too.
        assert_eq!(
            c.next_after(at(1969, 12, 31, 3, 0)),
            Some(at(1970, 1, 1, 2, 30))
        );
    }

    #[test]
    fn min_period_considers_the_wrap_to_the_next_firing_day() {
        assert_eq!(cron("* * * * *").min_period_minutes(), 1);
        assert_eq!(cron("*/15 * * * *").min_period_minutes(), 15);
        assert_eq!(cron("0 2 * * *").min_period_minutes(), 1440);
        assert_eq!(cron("0 * * * *").min_period_minutes(), 60);
        assert_eq!(cron("0 0,12 * * *").min_period_minutes(), 720);
        // 22:00 then 01:00 the next day is 3 hours; inside the day 1-22 is 21 hours.
        assert_eq!(cron("0 1,22 * * *").min_period_minutes(), 180);
        assert_eq!(cron("0,50 * * * *").min_period_minutes(), 10);
        assert_eq!(cron("0 3 * * MON").min_period_minutes(), 7 * 1440);
        assert_eq!(cron("0 3 * * SAT,SUN").min_period_minutes(), 1440);
        assert_eq!(cron("0 3 * * MON,WED").min_period_minutes(), 2 * 1440);
        // 31st of every month: 31 July to 31 August.
        assert_eq!(cron("0 0 31 * *").min_period_minutes(), 31 * 1440);
        assert_eq!(cron("0 0 31 1,3 *").min_period_minutes(), 59 * 1440);
        assert_eq!(cron("0 0 1 * *").min_period_minutes(), 28 * 1440);
        assert_eq!(
            cron("0 0 29 2 *").min_period_minutes(),
            4 * 365 * 1440 + 1440
        );
    }

    #[test]
    fn single_firing_fast_path_matches_the_set_algorithm() {
        let mut compared = 0;
        for days in [
            "* * *", "* * MON", "* * 1-5", "1 * *", "* JAN *", "13 * FRI",
        ] {
            for hour in [0, 1, 12, 22, 23] {
                for minute in [0, 7, 30, 59] {
                    let c = cron(&format!("{minute} {hour} {days}"));
                    for shift in [
                        0,
                        1,
                        5,
                        29,
                        60,
                        61,
                        130,
                        1439,
                        1440,
                        1441,
                        2 * 1440 + 7,
                        10_000,
                    ] {
                        assert_eq!(
                            c.shifted(shift),
                            c.shifted_by_sets(shift),
                            "`{c}` + {shift}"
                        );
                        compared += 1;
                    }
                }
            }
        }
        assert_eq!(compared, 6 * 5 * 4 * 12);
    }

    #[test]
    fn field_fast_paths_match_the_general_parser() {
        for field in [&MINUTE, &HOUR, &DOM, &MONTH, &DOW] {
            let mut texts = vec!["*".to_string(), "x".into(), "99".into(), "007".into()];
            texts.extend((0..=60).map(|v| v.to_string()));
            texts.extend((0..=9).map(|v| format!("0{v}")));
            for text in texts {
                assert_eq!(
                    field.parse(&text),
                    field.parse_list(&text),
                    "{}: `{text}`",
                    field.name
                );
            }
        }
    }

    #[test]
    fn set_values_visit_every_member_in_order() {
        let set = Set(0).with(0).with(5).with(59).with(63);
        assert_eq!(set.values().collect::<Vec<_>>(), [0, 5, 59, 63]);
        assert_eq!(Set(0).values().count(), 0);
        assert_eq!(Set::range(3, 6), Set(0b111_1000));
        assert_eq!(Set::range(0, 59).len(), 60);
        assert_eq!(Set(0).with(42).single(), Some(42));
        assert_eq!(Set::range(1, 2).single(), None);
    }

    #[test]
    fn shifted_schedules_fire_exactly_the_shifted_instants() {
        for (base, shift) in [
            ("0 2 * * *", 35),
            ("50 23 * * *", 20),
            ("*/15 * * * *", 5),
            ("0 22,23 * * 1-5", 180),
            ("10 */4 * * *", 75),
        ] {
            let b = cron(base);
            let s = b
                .shifted(shift)
                .unwrap_or_else(|e| panic!("{base} + {shift}: {e}"));
            let delta = i64::from(shift) * 60;
            let (mut tb, mut ts) = (at(2024, 1, 1, 0, 0), at(2024, 1, 1, 0, 0) + delta);
            for _ in 0..200 {
                tb = b.next_after(tb).unwrap_or_else(|| panic!("{base} fires"));
                ts = s.next_after(ts).unwrap_or_else(|| panic!("{s} fires"));
                assert_eq!(ts, tb + delta, "{base} + {shift} = {s}");
            }
        }
    }
}
