//! Typed addresses: host-physical (`Hpa`, `Mfn`), guest-physical (`Gpa`, `Gfn`) and
//! guest-virtual (`Gva`).
//!
//! A hypervisor juggles four address spaces at once, and every one of them is a `u64`.
//! Mixing them up is the classic way to hand a guest someone else's memory, so each
//! space gets a newtype whose constructor rejects values the hardware cannot name.
//!
//! Invariants:
//! - `Hpa`, `Gpa` < 2^52: the architectural MAXPHYADDR ceiling (SDM Vol. 3A §4.1.4;
//!   the CPU's real MAXPHYADDR, CPUID 8000_0008h, may be lower and is checked elsewhere).
//! - `Mfn`, `Gfn` < 2^40, i.e. exactly the frames of a 52-bit address space, so
//!   `Mfn::hpa` and `Hpa::mfn` are total and never truncate.
//! - `Gva` is any `u64`: a guest may hand us a non-canonical pointer, and saying so is
//!   the job of whoever walks the guest's page tables (`Gva::is_canonical`).
//!
//! Hazard: the one-past-the-end frame of the address space (2^40) is not a valid `Mfn`,
//! so a `Range<Mfn>` cannot end there; `MemoryMap` drops the very last frame instead.

use core::fmt;

/// log2 of the base page size.
pub const PAGE_SHIFT: u32 = 12;
/// The base (4 KiB) page size in bytes.
pub const PAGE_SIZE: u64 = 1 << PAGE_SHIFT;
/// Exclusive upper bound of any physical address (host or guest).
pub const PHYS_ADDR_LIMIT: u64 = 1 << 52;
/// Exclusive upper bound of any frame number (host or guest).
pub const FRAME_LIMIT: u64 = PHYS_ADDR_LIMIT >> PAGE_SHIFT;

/// A physical address (`Hpa`/`Gpa`) and its frame number (`Mfn`/`Gfn`).
macro_rules! phys_addr {
    ($(#[$adoc:meta])* $addr:ident, $addr_fn:ident, $(#[$fdoc:meta])* $frame:ident, $frame_fn:ident) => {
        $(#[$adoc])*
        #[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
        pub struct $addr(u64);

        impl $addr {
            /// `None` if `a` is at or above 2^52.
            #[inline]
            pub const fn new(a: u64) -> Option<$addr> {
                if a < PHYS_ADDR_LIMIT { Some($addr(a)) } else { None }
            }
            #[inline]
            pub const fn as_u64(self) -> u64 {
                self.0
            }
            /// The frame containing this address (rounds down).
            #[inline]
            pub const fn $frame_fn(self) -> $frame {
                $frame(self.0 >> PAGE_SHIFT)
            }
            pub const fn is_page_aligned(self) -> bool {
                self.0 % PAGE_SIZE == 0
            }
            /// `None` if the sum leaves the physical address space.
            #[inline]
            pub fn checked_add(self, n: u64) -> Option<$addr> {
                $addr::new(self.0.checked_add(n)?)
            }
            /// Rounds up to a multiple of `align`; `None` if `align == 0` or the result
            /// leaves the physical address space.
            pub fn align_up(self, align: u64) -> Option<$addr> {
                $addr::new(self.0.checked_next_multiple_of(align)?)
            }
            /// Rounds down to a multiple of `align` (`align == 0` leaves it unchanged).
            pub fn align_down(self, align: u64) -> $addr {
                match align {
                    0 => self,
                    _ => $addr(self.0 - self.0 % align),
                }
            }
        }

        $(#[$fdoc])*
        #[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
        pub struct $frame(u64);

        impl $frame {
            /// `None` if `n` is at or above 2^40.
            #[inline]
            pub const fn new(n: u64) -> Option<$frame> {
                if n < FRAME_LIMIT { Some($frame(n)) } else { None }
            }
            #[inline]
            pub const fn as_u64(self) -> u64 {
                self.0
            }
            /// The address of the first byte of this frame.
            #[inline]
            pub const fn $addr_fn(self) -> $addr {
                $addr(self.0 << PAGE_SHIFT)
            }
            /// `None` if the sum leaves the frame space.
            pub fn checked_add(self, n: u64) -> Option<$frame> {
                $frame::new(self.0.checked_add(n)?)
            }
        }
    };
}

phys_addr!(
    /// A host-physical address (what the CPU puts on the bus after all translation).
    Hpa,
    hpa,
    /// A machine frame number: a host-physical page index (Xen's "mfn").
    Mfn,
    mfn
);

phys_addr!(
    /// A guest-physical address (input to the p2m / EPT / NPT).
    Gpa,
    gpa,
    /// A guest frame number: a guest-physical page index (Xen's "gfn").
    Gfn,
    gfn
);

impl Hpa {
    /// Keeps bits 0..52 of `a`: for address fields already masked to 52 bits, such as
    /// those read back from a page-table entry.
    pub(crate) const fn masked(a: u64) -> Hpa {
        Hpa(a & (PHYS_ADDR_LIMIT - 1))
    }
}

/// A guest-virtual address. Any value is representable; validity is the page walk's call.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub struct Gva(u64);

impl Gva {
    #[inline]
    pub const fn new(a: u64) -> Gva {
        Gva(a)
    }
    #[inline]
    pub const fn as_u64(self) -> u64 {
        self.0
    }
    /// Bits 63..47 all equal (4-level paging, SDM Vol. 1 §3.3.7.1).
    #[inline]
    pub const fn is_canonical(self) -> bool {
        is_canonical(self.0)
    }
}

// Addresses print as hex, like Xen's `%"PRI_mfn"`.
macro_rules! hex_display {
    ($($t:ident),*) => {$(
        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{:#x}", self.0)
            }
        }
    )*};
}
hex_display!(Hpa, Mfn, Gpa, Gfn, Gva);

/// Whether `va` is canonical for 48-bit virtual addresses.
#[inline]
pub const fn is_canonical(va: u64) -> bool {
    (((va << 16) as i64) >> 16) as u64 == va
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits() {
        assert!(Hpa::new(PHYS_ADDR_LIMIT - 1).is_some());
        assert_eq!(Hpa::new(PHYS_ADDR_LIMIT), None);
        assert_eq!(Gpa::new(u64::MAX), None);
        assert!(Mfn::new(FRAME_LIMIT - 1).is_some());
        assert_eq!(Gfn::new(FRAME_LIMIT), None);
        let top = Hpa::new(PHYS_ADDR_LIMIT - 1).unwrap();
        assert_eq!(top.mfn().hpa().as_u64(), PHYS_ADDR_LIMIT - PAGE_SIZE);
        assert_eq!(top.checked_add(1), None);
        assert_eq!(top.align_up(PAGE_SIZE), None);
    }

    #[test]
    fn alignment_and_display() {
        let a = Hpa::new(0x1234).unwrap();
        assert_eq!(a.mfn(), Mfn::new(1).unwrap());
        assert!(!a.is_page_aligned());
        assert_eq!(a.align_up(0x1000), Hpa::new(0x2000));
        assert_eq!(a.align_up(0), None);
        assert_eq!(a.align_down(0x1000).as_u64(), 0x1000);
        assert_eq!(a.align_down(0), a);
        assert_eq!(a.checked_add(0xdcc), Hpa::new(0x2000));
        assert_eq!(
            format!("{a} {} {}", a.mfn(), Gva::new(0xff)),
            "0x1234 0x1 0xff"
        );
        assert!(Gva::new(0xFFFF_8000_0000_0000).is_canonical());
        assert!(Gva::new(0x7FFF_FFFF_FFFF).is_canonical());
        assert!(!Gva::new(0x8000_0000_0000).is_canonical());
    }
}
