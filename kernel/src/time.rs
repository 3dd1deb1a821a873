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
