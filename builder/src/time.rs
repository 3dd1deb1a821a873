//! Time as guests see it: Xen's system time (nanoseconds since keel booted) from the
//! TSC, with the scaling Xen publishes in `vcpu_time_info` (pvclock).
//!
//! # What
//! [`TscScale`] turns a TSC delta into nanoseconds exactly as a guest does with the
//! `tsc_to_system_mul`/`tsc_shift` pair keel hands it:
//! `ns = ((delta << shift) * mul) >> 32` (a negative shift shifts right), computed
//! with a 128-bit product. keel computes its own clock with the same pair, so its
//! timers and a guest's pvclock never disagree by more than rounding.
//!
//! # Invariants
//! `mul` is in `[2^31, 2^32)` (at least 31 significant bits), and the shift keeps
//! the shifted delta from overflowing for any TSC frequency from 1 MHz to 1 THz.

/// The scale from TSC ticks to nanoseconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TscScale {
    pub mul: u32,
    pub shift: i8,
}

impl TscScale {
    /// The scale for a TSC of `tsc_hz` ticks per second (Xen's `set_time_scale`
    /// contract: ns per tick = mul * 2^shift / 2^32). `tsc_hz` of 0 is treated as
    /// 1 GHz (keel then has no calibrated clock; 1 tick = 1 ns).
    pub fn for_hz(tsc_hz: u64) -> TscScale {
        let hz = if tsc_hz == 0 { 1_000_000_000 } else { tsc_hz };
        // ns per tick = 1e9 / hz. Find shift with 0.5 <= (1e9 / hz) / 2^shift < 1,
        // then mul = (1e9 / hz) / 2^shift * 2^32.
        let mut shift: i32 = 0;
        let mut num: u128 = 1_000_000_000; // numerator of ns per tick over `den`
        let mut den: u128 = u128::from(hz);
        while num >= den {
            den <<= 1;
            shift += 1;
        }
        while num * 2 < den {
            num <<= 1;
            shift -= 1;
        }
        let mul = ((num << 32) / den) as u64;
        TscScale {
            mul: mul.min(u64::from(u32::MAX)) as u32,
            shift: shift as i8,
        }
    }

    /// Nanoseconds in `delta` TSC ticks.
    pub fn ns(&self, delta: u64) -> u64 {
        let d = u128::from(delta);
        let shifted = if self.shift >= 0 {
            d << self.shift
        } else {
            d >> (-i32::from(self.shift))
        };
        ((shifted * u128::from(self.mul)) >> 32).min(u128::from(u64::MAX)) as u64
    }

    /// TSC ticks in `ns` nanoseconds (rounded up, so a deadline computed from it is
    /// never early).
    pub fn ticks(&self, ns: u64, tsc_hz: u64) -> u64 {
        let hz = if tsc_hz == 0 { 1_000_000_000 } else { tsc_hz };
        let t = (u128::from(ns) * u128::from(hz)).div_ceil(1_000_000_000);
        t.min(u128::from(u64::MAX)) as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn one_ghz_is_one_to_one() {
        let s = TscScale::for_hz(1_000_000_000);
        assert_eq!(s.ns(1_000_000), 1_000_000);
    }

    #[test]
    fn common_frequencies() {
        for hz in [
            2_000_000_000u64,
            3_000_000_000,
            2_793_437_000,
            100_000_000,
            4_500_000_000,
        ] {
            let s = TscScale::for_hz(hz);
            assert!(s.mul >= 1 << 31, "{hz}: {s:?}");
            // One second of ticks is one second, within 1 ppm.
            let ns = s.ns(hz);
            assert!(ns.abs_diff(1_000_000_000) <= 1_000, "{hz}: {ns}");
        }
    }

    proptest! {
        #[test]
        fn scale_matches_exact_division(hz in 1_000_000u64..1_000_000_000_000, delta in 0u64..1 << 48) {
            let s = TscScale::for_hz(hz);
            let exact = (u128::from(delta) * 1_000_000_000 / u128::from(hz)) as u64;
            let got = s.ns(delta);
            // Relative error below 2^-30, plus one for truncation.
            prop_assert!(got.abs_diff(exact) <= exact / (1 << 30) + 1, "{} vs {}", got, exact);
        }

        #[test]
        fn ticks_is_never_early(hz in 1_000_000u64..10_000_000_000, ns in 0u64..1 << 40) {
            let s = TscScale::for_hz(hz);
            let t = s.ticks(ns, hz);
            prop_assert!(u128::from(t) * 1_000_000_000 >= u128::from(ns) * u128::from(hz));
        }
    }
}

// ---------------------------------------------------------------------------------
// Wall-clock time: what `shared_info.wc_*` publishes.
//
// # What
// Xen's `wc_sec`/`wc_nsec` (with `wc_sec_hi` for the upper 32 bits of the seconds)
// are the Unix time at system time 0, so a guest computes the time of day as
// `wc + system_time`. keel reads a calendar date from the RTC once at boot
// (`keel_arch::rtc`), turns it into Unix seconds with [`unix_seconds`], and backs it
// up to system time 0 with [`wallclock_at_zero`].
//
// # Invariants
// The calendar is proleptic Gregorian in UTC without leap seconds (Unix time), for
// years 1970..=9999; anything else is None, never a panic, since the RTC's contents
// are whatever firmware or a previous OS left there.
// ---------------------------------------------------------------------------------

/// Nanoseconds in a second.
const NS_PER_SEC: u64 = 1_000_000_000;

/// Whether `year` is a Gregorian leap year.
pub fn is_leap_year(year: u16) -> bool {
    (year.is_multiple_of(4) && !year.is_multiple_of(100)) || year.is_multiple_of(400)
}

/// The number of days in `month` (1..=12) of `year`; None for any other month.
pub fn days_in_month(year: u16, month: u8) -> Option<u8> {
    Some(match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if is_leap_year(year) => 29,
        2 => 28,
        _ => return None,
    })
}

/// Days from 0001-01-01 to `year`-01-01 (proleptic Gregorian).
fn days_before_year(year: u16) -> u64 {
    let y = u64::from(year) - 1;
    365 * y + y / 4 - y / 100 + y / 400
}

/// Seconds since 1970-01-01T00:00:00Z for a UTC calendar date and time, or None if
/// the year is outside 1970..=9999 or any field is out of range (day checked against
/// the month, including February 29 in leap years; no leap second 60).
pub fn unix_seconds(
    year: u16,
    month: u8,
    day: u8,
    hour: u8,
    minute: u8,
    second: u8,
) -> Option<u64> {
    if !(1970..=9999).contains(&year) || hour > 23 || minute > 59 || second > 59 {
        return None;
    }
    if day == 0 || day > days_in_month(year, month)? {
        return None;
    }
    let days_before_month: u64 = (1..month)
        .filter_map(|m| days_in_month(year, m))
        .map(u64::from)
        .sum();
    let days =
        days_before_year(year) - days_before_year(1970) + days_before_month + u64::from(day - 1);
    Some(days * 86_400 + u64::from(hour) * 3_600 + u64::from(minute) * 60 + u64::from(second))
}

/// The wall-clock time at system time 0, as `(seconds, nanoseconds)` since the Unix
/// epoch, given the Unix time `unix_secs_now` read when system time was
/// `system_ns_now`. Saturates at the epoch (a clock reading earlier than keel's
/// uptime is broken, and 1970 is the guest's "unknown").
pub fn wallclock_at_zero(unix_secs_now: u64, system_ns_now: u64) -> (u64, u32) {
    let now_ns = u128::from(unix_secs_now) * u128::from(NS_PER_SEC);
    let at_zero = now_ns.saturating_sub(u128::from(system_ns_now));
    let secs = at_zero / u128::from(NS_PER_SEC);
    let nsec = at_zero % u128::from(NS_PER_SEC);
    // secs <= unix_secs_now fits in u64; nsec < 10^9 fits in u32.
    (secs as u64, nsec as u32)
}

#[cfg(test)]
mod wallclock_tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn known_instants() {
        // Values from an independent implementation (Python's calendar.timegm).
        type Civil = (u16, u8, u8, u8, u8, u8);
        let cases: [(Civil, u64); 10] = [
            ((1970, 1, 1, 0, 0, 0), 0),
            ((1970, 1, 1, 0, 0, 1), 1),
            ((1972, 2, 29, 0, 0, 0), 68_169_600),
            ((1999, 12, 31, 23, 59, 59), 946_684_799),
            ((2000, 2, 29, 0, 0, 0), 951_782_400),
            ((2000, 3, 1, 0, 0, 0), 951_868_800),
            ((2024, 2, 29, 23, 59, 59), 1_709_251_199),
            ((2026, 11, 21, 12, 34, 56), 1_795_264_496),
            ((2038, 1, 19, 3, 14, 8), 2_147_483_648),
            ((9999, 12, 31, 23, 59, 59), 253_402_300_799),
        ];
        for ((y, mo, d, h, mi, s), want) in cases {
            assert_eq!(unix_seconds(y, mo, d, h, mi, s), Some(want), "{y}-{mo}-{d}");
        }
        assert_eq!(unix_seconds(2100, 3, 1, 0, 0, 0), Some(4_107_542_400));
    }

    #[test]
    fn leap_days() {
        assert!(unix_seconds(2000, 2, 29, 0, 0, 0).is_some()); // divisible by 400
        assert!(unix_seconds(2024, 2, 29, 0, 0, 0).is_some());
        assert_eq!(unix_seconds(2100, 2, 29, 0, 0, 0), None); // divisible by 100
        assert_eq!(unix_seconds(2023, 2, 29, 0, 0, 0), None);
        assert_eq!(unix_seconds(2024, 2, 30, 0, 0, 0), None);
        // Feb 29 and Mar 1 are one day apart in a leap year.
        assert_eq!(
            unix_seconds(2024, 3, 1, 0, 0, 0).unwrap()
                - unix_seconds(2024, 2, 29, 0, 0, 0).unwrap(),
            86_400
        );
    }

    #[test]
    fn invalid_dates() {
        for (y, mo, d, h, mi, s) in [
            (1969, 12, 31, 23, 59, 59),
            (10_000, 1, 1, 0, 0, 0),
            (0, 1, 1, 0, 0, 0),
            (2026, 0, 1, 0, 0, 0),
            (2026, 13, 1, 0, 0, 0),
            (2026, 1, 0, 0, 0, 0),
            (2026, 1, 32, 0, 0, 0),
            (2026, 4, 31, 0, 0, 0),
            (2026, 11, 31, 0, 0, 0),
            (2026, 1, 1, 24, 0, 0),
            (2026, 1, 1, 0, 60, 0),
            (2026, 1, 1, 0, 0, 60),
            (u16::MAX, u8::MAX, u8::MAX, u8::MAX, u8::MAX, u8::MAX),
        ] {
            assert_eq!(
                unix_seconds(y, mo, d, h, mi, s),
                None,
                "{y}-{mo}-{d} {h}:{mi}:{s}"
            );
        }
    }

    #[test]
    fn wallclock_borrows_nanoseconds() {
        // 2.5 s of uptime at Unix time 1000: system time 0 was 997.5.
        assert_eq!(wallclock_at_zero(1_000, 2_500_000_000), (997, 500_000_000));
        assert_eq!(wallclock_at_zero(1_000, 0), (1_000, 0));
        assert_eq!(wallclock_at_zero(1_000, 1), (999, 999_999_999));
        assert_eq!(wallclock_at_zero(1_000, 1_000_000_000_000), (0, 0));
        assert_eq!(wallclock_at_zero(1_000, 1_000_000_000_001), (0, 0));
        assert_eq!(wallclock_at_zero(0, 5), (0, 0));
        assert_eq!(wallclock_at_zero(u64::MAX, 0), (u64::MAX, 0));
        // No overflow at the extremes: u64::MAX s minus u64::MAX ns.
        assert_eq!(
            wallclock_at_zero(u64::MAX, u64::MAX),
            (u64::MAX - 18_446_744_074, 290_448_385)
        );
    }

    /// A day-by-day count, independent of [`days_before_year`]'s closed form.
    fn naive(year: u16, month: u8, day: u8) -> u64 {
        let mut days = 0u64;
        for y in 1970..year {
            days += if is_leap_year(y) { 366 } else { 365 };
        }
        for m in 1..month {
            days += u64::from(days_in_month(year, m).unwrap()); // 1..month is 1..=11
        }
        (days + u64::from(day) - 1) * 86_400
    }

    proptest! {
        #[test]
        fn matches_day_by_day_count(
            year in 1970u16..=9999, month in 1u8..=12, day in 1u8..=31,
            hour in 0u8..24, minute in 0u8..60, second in 0u8..60,
        ) {
            let got = unix_seconds(year, month, day, hour, minute, second);
            if day > days_in_month(year, month).unwrap() {
                prop_assert_eq!(got, None);
            } else {
                let tod = u64::from(hour) * 3600 + u64::from(minute) * 60 + u64::from(second);
                prop_assert_eq!(got, Some(naive(year, month, day) + tod));
            }
        }

        #[test]
        fn never_panics(y: u16, mo: u8, d: u8, h: u8, mi: u8, s: u8) {
            let _ = unix_seconds(y, mo, d, h, mi, s);
        }

        #[test]
        fn wallclock_plus_uptime_is_now(now in 0u64..1 << 40, up in any::<u64>()) {
            let (s, ns) = wallclock_at_zero(now, up);
            prop_assert!(ns < 1_000_000_000);
            let back = u128::from(s) * 1_000_000_000 + u128::from(ns) + u128::from(up);
            let now_ns = u128::from(now) * 1_000_000_000;
            if u128::from(up) <= now_ns {
                prop_assert_eq!(back, now_ns);
            } else {
                prop_assert_eq!((s, ns), (0, 0));
            }
        }
    }
}
