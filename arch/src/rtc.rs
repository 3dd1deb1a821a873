//! The MC146818 CMOS real-time clock, read once at boot for the guests' wall clock.
//!
//! # What
//! Guests learn the time of day from `shared_info.wc_*`, and the only battery-backed
//! clock every PC has is the CMOS RTC behind the index/data port pair 0x70/0x71.
//! [`read`] takes a consistent snapshot of its date/time registers and [`decode`]
//! turns that snapshot into an [`RtcTime`]: BCD or binary, 12- or 24-hour, with the
//! century from register 0x32 where it holds one. Turning that into Unix seconds and
//! the wall time at system time 0 is the kernel's business (`keel_builder::time`).
//!
//! The port loop is [`read_with`] over a register-reading closure, so the
//! update-in-progress wait and the read-until-stable loop are tested on the host
//! against a fake RTC; only [`read`] touches the ports.
//!
//! # Invariants
//! - A snapshot is only taken while "update in progress" (register A bit 7) is clear,
//!   and it is returned only once two consecutive snapshots agree: an update that
//!   starts halfway through a read (the RTC gives 244 us of warning, which a slow
//!   emulated port read can eat up) shows up as a mismatch and is read again.
//! - Every loop is bounded ([`UIP_SPINS`], [`MAX_READS`]); an absent or stuck RTC is
//!   an error, never a hang.
//! - Index writes keep bit 7 (NMI disable on PC chipsets) clear. Setting it would
//!   latch NMIs off until the next index write, hiding watchdog and hardware-error
//!   NMIs for as long as keel runs; keel's NMI handler never touches the CMOS, so an
//!   NMI between the index write and the data read cannot disturb the pair.
//!
//! # Locking
//! [`CMOS`] serializes the two-step index/data protocol between CPUs. It is never
//! taken from interrupt context, so holding it with interrupts enabled cannot
//! deadlock. Nothing here writes a CMOS register.

use crate::io::{inb, outb};
use spin::Mutex;

/// The CMOS index port; bit 7 of the byte written is the chipset's NMI mask.
pub const INDEX_PORT: u16 = 0x70;
/// The CMOS data port.
pub const DATA_PORT: u16 = 0x71;

/// Register indices (MC146818 datasheet; 0x32 is the IBM PC/AT century byte).
pub const REG_SECONDS: u8 = 0x00;
pub const REG_MINUTES: u8 = 0x02;
pub const REG_HOURS: u8 = 0x04;
pub const REG_DAY: u8 = 0x07;
pub const REG_MONTH: u8 = 0x08;
pub const REG_YEAR: u8 = 0x09;
pub const REG_A: u8 = 0x0A;
pub const REG_B: u8 = 0x0B;
pub const REG_CENTURY: u8 = 0x32;

/// Register A: an update cycle is (about to be) in progress.
const A_UIP: u8 = 1 << 7;
/// Register B: data mode binary (clear: BCD).
const B_BINARY: u8 = 1 << 2;
/// Register B: 24-hour mode (clear: 12-hour, PM in hour bit 7).
const B_24H: u8 = 1 << 1;
/// Hour register bit 7 in 12-hour mode.
const HOUR_PM: u8 = 1 << 7;

/// Register A reads before giving up on "update in progress" clearing. UIP stays set
/// for at most 244 us + 1984 us per second; at ~1 us per port read (more under
/// emulation) this is tens of milliseconds, and an absent RTC costs no more.
pub const UIP_SPINS: u32 = 20_000;
/// Snapshots taken before giving up on two consecutive ones agreeing.
pub const MAX_READS: u32 = 8;

/// Serializes index/data pairs (see the module's Locking note).
static CMOS: Mutex<()> = Mutex::new(());

/// A calendar date and time of day as the RTC keeps it (keel sets up no time zone:
/// firmware conventionally keeps UTC, and the integrator treats it as such).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RtcTime {
    pub year: u16,
    /// 1..=12
    pub month: u8,
    /// 1..=31 (checked against the month by `keel_builder::time::unix_seconds`)
    pub day: u8,
    /// 0..=23
    pub hour: u8,
    /// 0..=59
    pub minute: u8,
    /// 0..=59
    pub second: u8,
}

/// The raw register bytes of one snapshot, before decoding.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CmosSnapshot {
    pub seconds: u8,
    pub minutes: u8,
    pub hours: u8,
    pub day: u8,
    pub month: u8,
    pub year: u8,
    pub century: u8,
    pub status_b: u8,
}

/// Why no wall-clock time could be read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RtcError {
    /// no RTC answers at ports 0x70/0x71 (every register reads 0xFF)
    Absent,
    /// the RTC's "update in progress" flag never cleared
    UpdateStuck,
    /// the RTC's registers kept changing between consecutive reads
    Unstable,
    /// the RTC holds a value that is not a valid date or time
    OutOfRange,
}

/// Reads the wall-clock date and time from the CMOS RTC.
pub fn read() -> Result<RtcTime, RtcError> {
    let _guard = CMOS.lock();
    read_with(|reg| {
        // SAFETY: ports 0x70/0x71 are the CMOS index/data pair present on every PC
        // platform and owned by keel (no domain is given them); selecting a register
        // and reading it changes no RTC state, `reg` is one of this module's
        // register constants (< 0x80, so NMIs stay enabled), and `CMOS` keeps other
        // CPUs from interleaving their own index writes.
        unsafe {
            outb(INDEX_PORT, reg);
            inb(DATA_PORT)
        }
    })
}

/// [`read`] over `read_reg`, which returns the byte in CMOS register `reg`: waits for
/// each update to finish, snapshots until two consecutive snapshots agree, decodes.
pub fn read_with<F: FnMut(u8) -> u8>(mut read_reg: F) -> Result<RtcTime, RtcError> {
    let mut previous: Option<CmosSnapshot> = None;
    for _ in 0..MAX_READS {
        let settled = wait_update_done(&mut read_reg);
        let current = snapshot(&mut read_reg);
        if is_absent(&current) {
            return Err(RtcError::Absent);
        }
        if !settled {
            return Err(RtcError::UpdateStuck);
        }
        if previous == Some(current) {
            return decode(&current);
        }
        previous = Some(current);
    }
    Err(RtcError::Unstable)
}

/// Spins until register A's "update in progress" clears; false if it never did.
fn wait_update_done<F: FnMut(u8) -> u8>(read_reg: &mut F) -> bool {
    (0..UIP_SPINS).any(|_| read_reg(REG_A) & A_UIP == 0)
}

fn snapshot<F: FnMut(u8) -> u8>(read_reg: &mut F) -> CmosSnapshot {
    CmosSnapshot {
        seconds: read_reg(REG_SECONDS),
        minutes: read_reg(REG_MINUTES),
        hours: read_reg(REG_HOURS),
        day: read_reg(REG_DAY),
        month: read_reg(REG_MONTH),
        year: read_reg(REG_YEAR),
        century: read_reg(REG_CENTURY),
        status_b: read_reg(REG_B),
    }
}

/// A floating ISA bus reads all ones; no real RTC has 0xFF in every date register
/// (it is neither valid BCD nor an in-range binary value).
fn is_absent(s: &CmosSnapshot) -> bool {
    [
        s.seconds, s.minutes, s.hours, s.day, s.month, s.year, s.status_b,
    ]
    .iter()
    .all(|&b| b == 0xFF)
}

/// Decodes one snapshot: BCD or binary per register B bit 2, 12- or 24-hour per bit
/// 1, and the century from register 0x32 if it decodes to 19..=29, else 20.
pub fn decode(s: &CmosSnapshot) -> Result<RtcTime, RtcError> {
    if is_absent(s) {
        return Err(RtcError::Absent);
    }
    let binary = s.status_b & B_BINARY != 0;
    let value = |raw: u8| -> Result<u8, RtcError> {
        if binary {
            Ok(raw)
        } else {
            from_bcd(raw).ok_or(RtcError::OutOfRange)
        }
    };
    let second = in_range(value(s.seconds)?, 0, 59)?;
    let minute = in_range(value(s.minutes)?, 0, 59)?;
    let hour = if s.status_b & B_24H != 0 {
        in_range(value(s.hours)?, 0, 23)?
    } else {
        // 12-hour mode: 12 AM is midnight, 12 PM is noon.
        let h = in_range(value(s.hours & !HOUR_PM)?, 1, 12)? % 12;
        if s.hours & HOUR_PM != 0 { h + 12 } else { h }
    };
    let day = in_range(value(s.day)?, 1, 31)?;
    let month = in_range(value(s.month)?, 1, 12)?;
    let year = in_range(value(s.year)?, 0, 99)?;
    // Register 0x32 is the century on PC/AT-compatible CMOS (and QEMU's and Bochs'),
    // but some chipsets use it for something else; a narrow window keeps garbage
    // there from moving the clock centuries away.
    let century = value(s.century)
        .ok()
        .filter(|c| (19..=29).contains(c))
        .unwrap_or(20);
    Ok(RtcTime {
        year: u16::from(century) * 100 + u16::from(year),
        month,
        day,
        hour,
        minute,
        second,
    })
}

/// The value of a two-digit packed BCD byte, None if a nibble is above 9.
pub fn from_bcd(raw: u8) -> Option<u8> {
    let (hi, lo) = (raw >> 4, raw & 0x0F);
    (hi <= 9 && lo <= 9).then_some(hi * 10 + lo)
}

fn in_range(v: u8, lo: u8, hi: u8) -> Result<u8, RtcError> {
    if (lo..=hi).contains(&v) {
        Ok(v)
    } else {
        Err(RtcError::OutOfRange)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// 2026-11-21 12:34:56 as QEMU keeps it: BCD, 24-hour, century 0x20.
    fn qemu_bcd() -> CmosSnapshot {
        CmosSnapshot {
            seconds: 0x56,
            minutes: 0x34,
            hours: 0x12,
            day: 0x21,
            month: 0x11,
            year: 0x26,
            century: 0x20,
            status_b: B_24H,
        }
    }

    fn t(year: u16, month: u8, day: u8, hour: u8, minute: u8, second: u8) -> RtcTime {
        RtcTime {
            year,
            month,
            day,
            hour,
            minute,
            second,
        }
    }

    #[test]
    fn bcd_24h() {
        assert_eq!(decode(&qemu_bcd()), Ok(t(2026, 11, 21, 12, 34, 56)));
    }

    #[test]
    fn binary_24h() {
        let s = CmosSnapshot {
            seconds: 56,
            minutes: 34,
            hours: 23,
            day: 31,
            month: 12,
            year: 99,
            century: 20,
            status_b: B_24H | B_BINARY,
        };
        assert_eq!(decode(&s), Ok(t(2099, 12, 31, 23, 34, 56)));
    }

    #[test]
    fn twelve_hour_bcd() {
        let at = |hours: u8| {
            decode(&CmosSnapshot {
                hours,
                status_b: 0,
                ..qemu_bcd()
            })
            .map(|r| r.hour)
        };
        assert_eq!(at(0x12), Ok(0)); // 12 AM
        assert_eq!(at(0x01), Ok(1));
        assert_eq!(at(0x11), Ok(11));
        assert_eq!(at(HOUR_PM | 0x12), Ok(12)); // 12 PM
        assert_eq!(at(HOUR_PM | 0x01), Ok(13));
        assert_eq!(at(HOUR_PM | 0x11), Ok(23));
        assert_eq!(at(0x00), Err(RtcError::OutOfRange));
        assert_eq!(at(0x13), Err(RtcError::OutOfRange));
    }

    #[test]
    fn twelve_hour_binary() {
        let at = |hours: u8| {
            decode(&CmosSnapshot {
                seconds: 0,
                minutes: 0,
                hours,
                day: 1,
                month: 1,
                year: 0,
                century: 20,
                status_b: B_BINARY,
            })
            .map(|r| r.hour)
        };
        assert_eq!(at(12), Ok(0));
        assert_eq!(at(HOUR_PM | 12), Ok(12));
        assert_eq!(at(HOUR_PM | 7), Ok(19));
        assert_eq!(at(HOUR_PM | 13), Err(RtcError::OutOfRange));
    }

    #[test]
    fn pm_bit_in_24h_mode_is_rejected() {
        let s = CmosSnapshot {
            hours: HOUR_PM | 0x01,
            ..qemu_bcd()
        };
        assert_eq!(decode(&s), Err(RtcError::OutOfRange));
    }

    #[test]
    fn century_register() {
        let with = |century: u8, status_b: u8| {
            decode(&CmosSnapshot {
                century,
                status_b,
                ..qemu_bcd()
            })
            .map(|r| r.year)
        };
        assert_eq!(with(0x19, B_24H), Ok(1926));
        assert_eq!(with(0x21, B_24H), Ok(2126));
        // Implausible or invalid: assume 20xx.
        assert_eq!(with(0x00, B_24H), Ok(2026));
        assert_eq!(with(0x45, B_24H), Ok(2026));
        assert_eq!(with(0x1A, B_24H), Ok(2026));
        assert_eq!(with(0xFF, B_24H), Ok(2026));
        // In binary mode the century is binary too (0x20 = 32: implausible).
        let bin = |century: u8| {
            decode(&CmosSnapshot {
                seconds: 0,
                minutes: 0,
                hours: 0,
                day: 1,
                month: 1,
                year: 5,
                century,
                status_b: B_24H | B_BINARY,
            })
            .map(|r| r.year)
        };
        assert_eq!(bin(21), Ok(2105));
        assert_eq!(bin(0x20), Ok(2005));
    }

    #[test]
    fn invalid_values_are_rejected() {
        let bad = [
            CmosSnapshot {
                seconds: 0x60,
                ..qemu_bcd()
            },
            CmosSnapshot {
                seconds: 0x5A,
                ..qemu_bcd()
            },
            CmosSnapshot {
                minutes: 0x60,
                ..qemu_bcd()
            },
            CmosSnapshot {
                hours: 0x24,
                ..qemu_bcd()
            },
            CmosSnapshot {
                day: 0x00,
                ..qemu_bcd()
            },
            CmosSnapshot {
                day: 0x32,
                ..qemu_bcd()
            },
            CmosSnapshot {
                month: 0x00,
                ..qemu_bcd()
            },
            CmosSnapshot {
                month: 0x13,
                ..qemu_bcd()
            },
            CmosSnapshot {
                year: 0xA0,
                ..qemu_bcd()
            },
            CmosSnapshot {
                year: 100,
                status_b: B_24H | B_BINARY,
                ..qemu_bcd()
            },
        ];
        for s in bad {
            assert_eq!(decode(&s), Err(RtcError::OutOfRange), "{s:?}");
        }
    }

    #[test]
    fn all_ones_is_absent() {
        let s = CmosSnapshot {
            seconds: 0xFF,
            minutes: 0xFF,
            hours: 0xFF,
            day: 0xFF,
            month: 0xFF,
            year: 0xFF,
            century: 0xFF,
            status_b: 0xFF,
        };
        assert_eq!(decode(&s), Err(RtcError::Absent));
        assert_eq!(read_with(|_| 0xFF), Err(RtcError::Absent));
    }

    #[test]
    fn bcd_digits() {
        assert_eq!(from_bcd(0x00), Some(0));
        assert_eq!(from_bcd(0x59), Some(59));
        assert_eq!(from_bcd(0x99), Some(99));
        assert_eq!(from_bcd(0x0A), None);
        assert_eq!(from_bcd(0xA0), None);
    }

    /// A fake RTC: register values from `regs`, with register A reporting "update in
    /// progress" for the first `uip_reads` reads, and an optional tick that advances
    /// the seconds register after `tick_after` reads of it.
    struct FakeRtc {
        regs: [u8; 0x80],
        uip_reads: u32,
        tick_after: Option<u32>,
        seconds_reads: u32,
        log: Vec<u8>,
    }

    impl FakeRtc {
        fn new(s: CmosSnapshot) -> FakeRtc {
            let mut regs = [0u8; 0x80];
            regs[usize::from(REG_SECONDS)] = s.seconds;
            regs[usize::from(REG_MINUTES)] = s.minutes;
            regs[usize::from(REG_HOURS)] = s.hours;
            regs[usize::from(REG_DAY)] = s.day;
            regs[usize::from(REG_MONTH)] = s.month;
            regs[usize::from(REG_YEAR)] = s.year;
            regs[usize::from(REG_CENTURY)] = s.century;
            regs[usize::from(REG_A)] = 0x26;
            regs[usize::from(REG_B)] = s.status_b;
            FakeRtc {
                regs,
                uip_reads: 0,
                tick_after: None,
                seconds_reads: 0,
                log: Vec::new(),
            }
        }

        fn read(&mut self, reg: u8) -> u8 {
            self.log.push(reg);
            match reg {
                REG_A if self.uip_reads > 0 => {
                    self.uip_reads -= 1;
                    self.regs[usize::from(REG_A)] | A_UIP
                }
                REG_SECONDS => {
                    self.seconds_reads += 1;
                    if self.tick_after == Some(self.seconds_reads) {
                        self.regs[usize::from(REG_SECONDS)] = 0x57;
                    }
                    self.regs[usize::from(REG_SECONDS)]
                }
                _ => self.regs[usize::from(reg & 0x7F)],
            }
        }
    }

    #[test]
    fn stable_clock_reads_twice() {
        let mut rtc = FakeRtc::new(qemu_bcd());
        assert_eq!(read_with(|r| rtc.read(r)), Ok(t(2026, 11, 21, 12, 34, 56)));
        assert_eq!(rtc.seconds_reads, 2);
        // Every register index read keeps bit 7 (NMI disable) clear.
        assert!(rtc.log.iter().all(|&r| r < 0x80));
    }

    #[test]
    fn waits_for_update_in_progress() {
        let mut rtc = FakeRtc::new(qemu_bcd());
        rtc.uip_reads = 100;
        assert_eq!(read_with(|r| rtc.read(r)), Ok(t(2026, 11, 21, 12, 34, 56)));
        // No date register was read while UIP was still set.
        let first_seconds = rtc.log.iter().position(|&r| r == REG_SECONDS).unwrap();
        assert!(first_seconds > 100);
    }

    #[test]
    fn a_tick_between_reads_is_read_again() {
        let mut rtc = FakeRtc::new(qemu_bcd());
        rtc.tick_after = Some(2);
        assert_eq!(read_with(|r| rtc.read(r)), Ok(t(2026, 11, 21, 12, 34, 57)));
        assert_eq!(rtc.seconds_reads, 3);
    }

    #[test]
    fn stuck_update_is_an_error() {
        let mut rtc = FakeRtc::new(qemu_bcd());
        rtc.uip_reads = u32::MAX;
        assert_eq!(read_with(|r| rtc.read(r)), Err(RtcError::UpdateStuck));
        assert!(rtc.log.len() <= UIP_SPINS as usize + 8);
    }

    #[test]
    fn ever_changing_clock_is_an_error() {
        let mut n = 0u8;
        let got = read_with(|r| match r {
            REG_A => 0x26,
            REG_B => B_24H | B_BINARY,
            REG_SECONDS => {
                n = (n + 1) % 60;
                n
            }
            _ => 1,
        });
        assert_eq!(got, Err(RtcError::Unstable));
    }

    proptest! {
        /// Decoding never panics, and whatever it accepts is in range.
        #[test]
        fn decode_total(b in proptest::array::uniform8(any::<u8>())) {
            let s = CmosSnapshot {
                seconds: b[0], minutes: b[1], hours: b[2], day: b[3],
                month: b[4], year: b[5], century: b[6], status_b: b[7],
            };
            if let Ok(r) = decode(&s) {
                prop_assert!(r.second <= 59 && r.minute <= 59 && r.hour <= 23);
                prop_assert!((1..=31).contains(&r.day) && (1..=12).contains(&r.month));
                prop_assert!((1900..=2999).contains(&r.year));
            }
        }

        /// BCD and binary encodings of the same 24-hour time decode alike.
        #[test]
        fn bcd_and_binary_agree(
            second in 0u8..60, minute in 0u8..60, hour in 0u8..24,
            day in 1u8..32, month in 1u8..13, year in 0u8..100,
        ) {
            let bcd = |v: u8| ((v / 10) << 4) | (v % 10);
            let b = CmosSnapshot {
                seconds: second, minutes: minute, hours: hour, day, month, year,
                century: 20, status_b: B_24H | B_BINARY,
            };
            let d = CmosSnapshot {
                seconds: bcd(second), minutes: bcd(minute), hours: bcd(hour),
                day: bcd(day), month: bcd(month), year: bcd(year),
                century: 0x20, status_b: B_24H,
            };
            prop_assert_eq!(decode(&b), decode(&d));
            prop_assert_eq!(decode(&b), Ok(t(2000 + u16::from(year), month, day, hour, minute, second)));
        }

        /// 12-hour mode agrees with 24-hour mode.
        #[test]
        fn twelve_and_twenty_four_agree(hour in 0u8..24) {
            let h12 = match hour { 0 => 12, 1..=12 => hour, _ => hour - 12 };
            let pm = if hour >= 12 { HOUR_PM } else { 0 };
            let base = CmosSnapshot {
                seconds: 0, minutes: 0, hours: 0, day: 1, month: 1, year: 0,
                century: 20, status_b: B_BINARY,
            };
            let twelve = CmosSnapshot { hours: h12 | pm, ..base };
            let twenty_four = CmosSnapshot { hours: hour, status_b: B_BINARY | B_24H, ..base };
            prop_assert_eq!(decode(&twelve), decode(&twenty_four));
        }
    }
}
