//! A bus: which emulated device answers a guest's port or MMIO access.
//!
//! # What
//!
//! A [`Bus`] maps disjoint address ranges, each given as `(base, len)`, to devices.
//! `A` is the address space: `u16` for I/O ports ([`PortBus`]), `u64` for
//! guest-physical MMIO ([`MmioBus`]); one type serves both. `D` is whatever the owner
//! registers: a small handle it matches on (an id, an enum naming the device), or a
//! model implementing [`Device`], which [`Bus::read`] and [`Bus::write`] call with the
//! offset into its range.
//!
//! - [`Bus::insert`] adds a range, refusing a zero length, a range that runs past the
//!   end of the address space and any overlap with a range already there.
//! - [`Bus::remove`] takes out the range that starts at a base.
//! - [`Bus::lookup`] names the range (its base) and device that contain an address.
//! - [`Bus::route`] finds the device that decodes *all* of an access and the offset
//!   of its first byte; [`Bus::read`] and [`Bus::write`] route and call the device.
//!
//! # Why
//!
//! A port or MMIO exit gives keel an address; it must find the one device behind it
//! without a chain of comparisons that grows with every device. Xen registers each
//! device's range with `register_io_handler`; Firecracker keeps its devices in a
//! `BTreeMap` ordered by range (`src/vmm/src/vstate/bus.rs`). keel does the latter:
//! the map is keyed by base, so the only range that can contain `addr` is the one
//! with the greatest base `<= addr`, one `range(..=addr).next_back()` away (O(log n)).
//! Devices see offsets, not addresses, so a device can be placed anywhere (a
//! relocated APIC base, a PCI BAR) without knowing it.
//!
//! # Invariants
//!
//! - Every range is non-empty and lies inside the address space:
//!   `base + len - 1 <= A::MAX`, so the top address is usable and `len` (a `u64` in
//!   both spaces) can cover all 65536 ports.
//! - Ranges are pairwise disjoint; adjacent ranges (one ends at `b - 1`, the next
//!   starts at `b`) are allowed. So at most one range contains an address.
//! - A refused [`Bus::insert`] leaves the bus unchanged.
//! - An access is routed only if all of its bytes lie in one range: one that begins
//!   in a hole, straddles the end of a range or is empty is [`BusError::Unmapped`]
//!   or [`BusError::ZeroLength`], and reaches no device.
//! - Nothing panics, whatever the addresses, lengths and sizes.
//!
//! Why one check finds every overlap: ranges are disjoint, so ordering them by base
//! orders them by last address too. A new range `[base, last]` overlaps an existing
//! one iff that one starts at or before `last` and ends at or after `base`; of those
//! starting at or before `last`, the one with the greatest base also ends last, so if
//! any of them reaches `base`, it does.
//!
//! # Locking
//!
//! None: the owning domain's lock. A bus belongs to one domain (its port space or its
//! guest-physical space), is filled as the domain's devices are set up and consulted
//! on its exits, always under that domain's lock; `&mut self` says so to the
//! compiler.

use alloc::boxed::Box;
use alloc::collections::BTreeMap;
use core::fmt::Debug;

/// An address space a bus can cover: `u16` (I/O ports) or `u64` (guest-physical).
pub trait Addr: sealed::Sealed + Copy + Ord + Debug + Into<u64> + TryFrom<u64> {}
impl Addr for u16 {}
impl Addr for u64 {}

mod sealed {
    pub trait Sealed {}
    impl Sealed for u16 {}
    impl Sealed for u64 {}
}

/// The I/O port space (`IN`/`OUT`, 65536 ports).
pub type PortBus<D> = Bus<u16, D>;
/// The guest-physical MMIO space.
pub type MmioBus<D> = Bus<u64, D>;

/// A device model on a bus, addressed by the offset into the range it was inserted
/// with. Accesses reach it only when all of their bytes lie in that range, so
/// `offset + data.len() <= len` always holds.
pub trait Device {
    /// Fills `data` (at least one byte) with what the device reads at `offset`.
    /// A read may have side effects (a status register cleared by reading it).
    fn read(&mut self, offset: u64, data: &mut [u8]);
    /// Takes the bytes `data` (at least one) written at `offset`.
    fn write(&mut self, offset: u64, data: &[u8]);
}

impl<T: Device + ?Sized> Device for Box<T> {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        (**self).read(offset, data);
    }
    fn write(&mut self, offset: u64, data: &[u8]) {
        (**self).write(offset, data);
    }
}

/// Why a bus refused a range or an access. The variant's doc is the message.
#[derive(Clone, Copy, Debug, PartialEq, Eq, displaydoc::Display)]
pub enum BusError {
    /// a range or an access of length 0
    ZeroLength,
    /// range {base:#x}+{len:#x} runs past the end of the address space
    Overflow { base: u64, len: u64 },
    /// range {base:#x}+{len:#x} overlaps the device at {with_base:#x}+{with_len:#x}
    Overlap {
        base: u64,
        len: u64,
        with_base: u64,
        with_len: u64,
    },
    /// no device decodes all {size} bytes at {addr:#x}
    Unmapped { addr: u64, size: u64 },
}

/// One range: where it ends (inclusive, so the top address fits) and its device.
#[derive(Debug)]
struct Entry<A, D> {
    last: A,
    dev: D,
}

/// Disjoint ranges of the address space `A`, each mapped to a `D`. See the module
/// documentation for the rules.
#[derive(Debug)]
pub struct Bus<A, D> {
    /// Keyed by base.
    ranges: BTreeMap<A, Entry<A, D>>,
}

impl<A: Addr, D> Default for Bus<A, D> {
    fn default() -> Self {
        Self::new()
    }
}

/// The length of the inclusive range `[base, last]`. Cannot overflow: a range is at
/// most the whole space, and `u16`'s 65536 fits a `u64`. The whole `u64` space (2^64)
/// cannot be inserted, since `len` is a `u64` too.
fn len_of<A: Addr>(base: A, last: A) -> u64 {
    last.into() - base.into() + 1
}

impl<A: Addr, D> Bus<A, D> {
    /// An empty bus.
    pub const fn new() -> Self {
        Self {
            ranges: BTreeMap::new(),
        }
    }

    /// Maps `[base, base + len)` to `dev`. Refuses a zero `len`, a range that runs
    /// past the end of the space, and any overlap, leaving the bus unchanged.
    pub fn insert(&mut self, base: A, len: u64, dev: D) -> Result<(), BusError> {
        let overflow = BusError::Overflow {
            base: base.into(),
            len,
        };
        let span = len.checked_sub(1).ok_or(BusError::ZeroLength)?;
        let last = base.into().checked_add(span).ok_or(overflow)?;
        let last = A::try_from(last).map_err(|_| overflow)?;
        // The range with the greatest base at or before `last` is the only one that
        // can overlap (module documentation, Invariants).
        if let Some((&with, e)) = self.ranges.range(..=last).next_back()
            && e.last >= base
        {
            return Err(BusError::Overlap {
                base: base.into(),
                len,
                with_base: with.into(),
                with_len: len_of(with, e.last),
            });
        }
        self.ranges.insert(base, Entry { last, dev });
        Ok(())
    }

    /// Takes out the range that starts at `base` and gives back its device; `None`
    /// (and nothing changes) if no range starts exactly there.
    pub fn remove(&mut self, base: A) -> Option<D> {
        self.ranges.remove(&base).map(|e| e.dev)
    }

    /// The base of the range containing `addr`, and its device.
    pub fn lookup(&self, addr: A) -> Option<(A, &D)> {
        let (&base, e) = self.ranges.range(..=addr).next_back()?;
        (addr <= e.last).then_some((base, &e.dev))
    }

    /// As [`Bus::lookup`], with the device to change.
    pub fn lookup_mut(&mut self, addr: A) -> Option<(A, &mut D)> {
        let (&base, e) = self.ranges.range_mut(..=addr).next_back()?;
        (addr <= e.last).then_some((base, &mut e.dev))
    }

    /// The device that decodes all `size` bytes from `addr`, and the offset of `addr`
    /// in its range. For devices the caller drives itself (a handle, or a model whose
    /// accesses take more than bytes, such as the local APIC's clock).
    pub fn route(&mut self, addr: A, size: usize) -> Result<(u64, &mut D), BusError> {
        let unmapped = BusError::Unmapped {
            addr: addr.into(),
            size: size as u64,
        };
        let span = (size as u64).checked_sub(1).ok_or(BusError::ZeroLength)?;
        let (base, e) = self.ranges.range_mut(..=addr).next_back().ok_or(unmapped)?;
        // `addr + span <= last`, written so that nothing overflows: `addr <= last`
        // first, then the room left after `addr`.
        let room = e.last.into().checked_sub(addr.into()).ok_or(unmapped)?;
        if span > room {
            return Err(unmapped);
        }
        Ok((addr.into() - (*base).into(), &mut e.dev))
    }

    /// The number of ranges.
    pub fn len(&self) -> usize {
        self.ranges.len()
    }

    /// Whether no range is mapped.
    pub fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }

    /// Every range as `(base, len, device)`, in address order.
    pub fn iter(&self) -> impl Iterator<Item = (A, u64, &D)> {
        self.ranges
            .iter()
            .map(|(&base, e)| (base, len_of(base, e.last), &e.dev))
    }
}

impl<A: Addr, D: Device> Bus<A, D> {
    /// Reads `data.len()` bytes at `addr` from the device that decodes all of them.
    /// On an error no device was called and `data` is untouched: the caller decides
    /// what an unbacked read gives (keel: all ones).
    pub fn read(&mut self, addr: A, data: &mut [u8]) -> Result<(), BusError> {
        let (offset, dev) = self.route(addr, data.len())?;
        dev.read(offset, data);
        Ok(())
    }

    /// Writes `data` at `addr` to the device that decodes all of it. On an error no
    /// device was called (keel drops unbacked writes).
    pub fn write(&mut self, addr: A, data: &[u8]) -> Result<(), BusError> {
        let (offset, dev) = self.route(addr, data.len())?;
        dev.write(offset, data);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A device that logs what reached it; reads give `id` in every byte plus the
    /// byte's offset, so a test sees which device and offset answered.
    #[derive(Debug, Default, PartialEq)]
    struct Dummy {
        id: u8,
        reads: Vec<(u64, usize)>,
        writes: Vec<(u64, Vec<u8>)>,
    }

    fn dummy(id: u8) -> Dummy {
        Dummy {
            id,
            ..Dummy::default()
        }
    }

    impl Device for Dummy {
        fn read(&mut self, offset: u64, data: &mut [u8]) {
            self.reads.push((offset, data.len()));
            for (i, b) in data.iter_mut().enumerate() {
                *b = self.id.wrapping_add(offset as u8).wrapping_add(i as u8);
            }
        }
        fn write(&mut self, offset: u64, data: &[u8]) {
            self.writes.push((offset, data.to_vec()));
        }
    }

    fn ids<A: Addr>(bus: &Bus<A, Dummy>) -> Vec<(A, u64, u8)> {
        bus.iter().map(|(b, l, d)| (b, l, d.id)).collect()
    }

    #[test]
    fn lookups_at_the_edges_of_a_range() {
        let mut bus = PortBus::new();
        bus.insert(0x10, 0x10, dummy(1)).unwrap();
        assert!(bus.lookup(0x0F).is_none());
        assert_eq!(bus.lookup(0x10).map(|(b, d)| (b, d.id)), Some((0x10, 1)));
        assert_eq!(bus.lookup(0x1F).map(|(b, d)| (b, d.id)), Some((0x10, 1)));
        assert!(bus.lookup(0x20).is_none());
        assert!(bus.lookup(0).is_none() && bus.lookup(u16::MAX).is_none());
        assert_eq!(
            bus.lookup_mut(0x15).map(|(b, d)| (b, d.id)),
            Some((0x10, 1))
        );
        assert!(bus.lookup_mut(0x20).is_none());
    }

    #[test]
    fn a_one_byte_range() {
        let mut bus = MmioBus::new();
        bus.insert(0x1000, 1, dummy(7)).unwrap();
        assert!(bus.lookup(0xFFF).is_none());
        assert_eq!(bus.lookup(0x1000).map(|(b, _)| b), Some(0x1000));
        assert!(bus.lookup(0x1001).is_none());
    }

    #[test]
    fn zero_length_is_refused() {
        let mut bus = PortBus::new();
        assert_eq!(bus.insert(0x10, 0, dummy(1)), Err(BusError::ZeroLength));
        let mut bus = MmioBus::new();
        assert_eq!(bus.insert(0, 0, dummy(1)), Err(BusError::ZeroLength));
        assert!(bus.is_empty());
    }

    #[test]
    fn ranges_end_inside_the_space() {
        let mut ports = PortBus::new();
        let overflow = |base, len| Err(BusError::Overflow { base, len });
        assert_eq!(ports.insert(0xFFFF, 2, dummy(1)), overflow(0xFFFF, 2));
        assert_eq!(ports.insert(0xFFF0, 0x11, dummy(1)), overflow(0xFFF0, 0x11));
        assert_eq!(ports.insert(1, 0x10000, dummy(1)), overflow(1, 0x10000));
        assert_eq!(ports.insert(0, u64::MAX, dummy(1)), overflow(0, u64::MAX));
        assert!(ports.is_empty());
        // The top port is usable, and one range may cover every port.
        ports.insert(0xFFFF, 1, dummy(1)).unwrap();
        assert_eq!(ports.lookup(0xFFFF).map(|(b, _)| b), Some(0xFFFF));
        assert_eq!(ports.remove(0xFFFF).map(|d| d.id), Some(1));
        ports.insert(0, 0x10000, dummy(2)).unwrap();
        assert_eq!(ids(&ports), [(0, 0x10000, 2)]);
        assert_eq!(ports.lookup(0xFFFF).map(|(b, _)| b), Some(0));

        let mut mmio = MmioBus::new();
        let m = u64::MAX;
        assert_eq!(mmio.insert(m, 2, dummy(1)), overflow(m, 2));
        assert_eq!(mmio.insert(2, m, dummy(1)), overflow(2, m));
        mmio.insert(m, 1, dummy(1)).unwrap();
        mmio.insert(1, m - 1, dummy(2)).unwrap();
        assert_eq!(ids(&mmio), [(1, m - 1, 2), (m, 1, 1)]);
        assert_eq!(mmio.lookup(m - 1).map(|(b, d)| (b, d.id)), Some((1, 2)));
        assert_eq!(mmio.lookup(m).map(|(b, d)| (b, d.id)), Some((m, 1)));
        assert!(mmio.lookup(0).is_none());
    }

    #[test]
    fn overlap_is_refused_in_every_configuration() {
        // [0x10, 0x1F] and [0x40, 0x4F], a hole between them.
        let fresh = || {
            let mut bus = PortBus::new();
            bus.insert(0x10, 0x10, dummy(1)).unwrap();
            bus.insert(0x40, 0x10, dummy(2)).unwrap();
            bus
        };
        let first = (0x10, 0x10);
        let second = (0x40, 0x10);
        let cases: &[(u16, u64, (u64, u64), &str)] = &[
            (0x10, 0x10, first, "the same range"),
            (0x10, 0x01, first, "same base, shorter"),
            (0x10, 0x20, first, "same base, longer"),
            (0x14, 0x04, first, "strictly inside"),
            (0x1F, 0x01, first, "the last address alone"),
            (0x08, 0x20, first, "strictly around"),
            (0x08, 0x09, first, "over the start by one"),
            (0x08, 0x0C, first, "over the start"),
            (0x18, 0x10, first, "over the end"),
            (0x1F, 0x10, first, "from the last address"),
            (0x18, 0x08, first, "inside, to the last address"),
            (0x30, 0x11, second, "from the hole over the next start"),
            (0x20, 0x21, second, "the whole hole and one more"),
            (0x1F, 0x22, second, "the hole and both ends"),
            (0x00, 0x100, second, "around both"),
            (0x48, 0x100, second, "over the end of the last"),
        ];
        for &(base, len, (with_base, with_len), what) in cases {
            let mut bus = fresh();
            let got = bus.insert(base, len, dummy(9));
            let want = BusError::Overlap {
                base: base.into(),
                len,
                with_base,
                with_len,
            };
            assert_eq!(got, Err(want), "{what}");
            assert_eq!(ids(&bus), [(0x10, 0x10, 1), (0x40, 0x10, 2)], "{what}");
        }
    }

    #[test]
    fn adjacent_ranges_are_allowed() {
        let mut bus = PortBus::new();
        bus.insert(0x20, 0x10, dummy(3)).unwrap();
        bus.insert(0x00, 0x10, dummy(1)).unwrap();
        // Exactly fills the hole: touches both neighbours.
        bus.insert(0x10, 0x10, dummy(2)).unwrap();
        bus.insert(0x30, 1, dummy(4)).unwrap();
        assert_eq!(
            ids(&bus),
            [
                (0x00, 0x10, 1),
                (0x10, 0x10, 2),
                (0x20, 0x10, 3),
                (0x30, 1, 4)
            ]
        );
        let at = |bus: &PortBus<Dummy>, a| bus.lookup(a).map(|(b, d)| (b, d.id));
        assert_eq!(at(&bus, 0x0F), Some((0x00, 1)));
        assert_eq!(at(&bus, 0x10), Some((0x10, 2)));
        assert_eq!(at(&bus, 0x1F), Some((0x10, 2)));
        assert_eq!(at(&bus, 0x20), Some((0x20, 3)));
        assert_eq!(at(&bus, 0x30), Some((0x30, 4)));
        assert_eq!(at(&bus, 0x31), None);
    }

    #[test]
    fn removal() {
        let mut bus = MmioBus::new();
        bus.insert(0xFEE0_0000, 0x1000, dummy(1)).unwrap();
        bus.insert(0xFEC0_0000, 0x20, dummy(2)).unwrap();
        assert_eq!(bus.len(), 2);
        // Only a range's base names it.
        assert!(bus.remove(0xFEE0_0004).is_none());
        assert!(bus.remove(0).is_none());
        assert_eq!(bus.len(), 2);
        assert_eq!(bus.remove(0xFEE0_0000).map(|d| d.id), Some(1));
        assert!(bus.lookup(0xFEE0_0000).is_none());
        assert!(bus.lookup(0xFEE0_0FFF).is_none());
        assert!(bus.remove(0xFEE0_0000).is_none());
        // The space is free again, also for a different shape.
        bus.insert(0xFEE0_0800, 0x1000, dummy(3)).unwrap();
        assert_eq!(
            ids(&bus),
            [(0xFEC0_0000, 0x20, 2), (0xFEE0_0800, 0x1000, 3)]
        );
        assert_eq!(bus.remove(0xFEC0_0000).map(|d| d.id), Some(2));
        assert_eq!(bus.remove(0xFEE0_0800).map(|d| d.id), Some(3));
        assert!(bus.is_empty());
    }

    #[test]
    fn accesses_reach_the_device_at_their_offset() {
        let mut bus = PortBus::new();
        bus.insert(0x40, 4, dummy(0x10)).unwrap();
        bus.insert(0x44, 4, dummy(0x20)).unwrap();
        let mut b = [0u8; 2];
        bus.read(0x42, &mut b).unwrap();
        assert_eq!(b, [0x12, 0x13]);
        bus.write(0x44, &[1, 2, 3, 4]).unwrap();
        bus.write(0x47, &[9]).unwrap();
        let (_, first) = bus.lookup(0x40).unwrap();
        assert_eq!(first.reads, [(2, 2)]);
        let (_, second) = bus.lookup(0x44).unwrap();
        assert_eq!(second.writes, [(0, vec![1, 2, 3, 4]), (3, vec![9])]);
    }

    #[test]
    fn accesses_outside_one_range_reach_nothing() {
        let mut bus = PortBus::new();
        bus.insert(0x40, 4, dummy(0x10)).unwrap();
        bus.insert(0x44, 4, dummy(0x20)).unwrap();
        bus.insert(0xFFFE, 2, dummy(0x30)).unwrap();
        let unmapped = |addr, size| Err(BusError::Unmapped { addr, size });
        let mut b = [0xAAu8; 4];
        // Straddles two adjacent devices, or a device's end into a hole.
        assert_eq!(bus.read(0x42, &mut b), unmapped(0x42, 4));
        assert_eq!(bus.write(0x46, &[0; 4]), unmapped(0x46, 4));
        // Begins in a hole, or before the first range, and runs into one.
        assert_eq!(bus.read(0x3E, &mut b[..2]), unmapped(0x3E, 2));
        assert_eq!(bus.write(0x10, &[0]), unmapped(0x10, 1));
        // Runs off the top of the space.
        assert_eq!(bus.read(0xFFFF, &mut b[..2]), unmapped(0xFFFF, 2));
        assert_eq!(bus.read(0x40, &mut []), Err(BusError::ZeroLength));
        assert_eq!(b, [0xAA; 4]);
        assert!(
            bus.iter()
                .all(|(_, _, d)| d.reads.is_empty() && d.writes.is_empty())
        );
        // The top two ports, exactly.
        bus.read(0xFFFE, &mut b[..2]).unwrap();
        assert_eq!(b[..2], [0x30, 0x31]);
    }

    #[test]
    fn handles_are_routed_for_the_caller() {
        #[derive(Clone, Copy, Debug, PartialEq)]
        enum Dev {
            Lapic,
            Ioapic,
        }
        let mut bus = MmioBus::new();
        bus.insert(0xFEE0_0000, 0x1000, Dev::Lapic).unwrap();
        bus.insert(0xFEC0_0000, 0x20, Dev::Ioapic).unwrap();
        assert_eq!(
            bus.route(0xFEE0_0300, 4).map(|(o, d)| (o, *d)),
            Ok((0x300, Dev::Lapic))
        );
        assert_eq!(
            bus.route(0xFEC0_001C, 4).map(|(o, d)| (o, *d)),
            Ok((0x1C, Dev::Ioapic))
        );
        assert!(bus.route(0xFEC0_001E, 4).is_err());
        assert!(bus.route(0xFEE0_1000, 1).is_err());
    }

    #[test]
    fn boxed_models_share_a_bus() {
        struct Zero;
        impl Device for Zero {
            fn read(&mut self, _: u64, data: &mut [u8]) {
                data.fill(0);
            }
            fn write(&mut self, _: u64, _: &[u8]) {}
        }
        let mut bus: PortBus<Box<dyn Device>> = PortBus::new();
        bus.insert(0x70, 2, Box::new(dummy(0x70))).unwrap();
        bus.insert(0x80, 1, Box::new(Zero)).unwrap();
        let mut b = [0xFF; 1];
        bus.read(0x71, &mut b).unwrap();
        assert_eq!(b, [0x71]);
        bus.read(0x80, &mut b).unwrap();
        assert_eq!(b, [0]);
    }

    #[test]
    fn errors_say_what_went_wrong() {
        let e = BusError::Overlap {
            base: 0x10,
            len: 4,
            with_base: 0x12,
            with_len: 1,
        };
        assert_eq!(
            e.to_string(),
            "range 0x10+0x4 overlaps the device at 0x12+0x1"
        );
        let e = BusError::Unmapped {
            addr: 0x80,
            size: 2,
        };
        assert_eq!(e.to_string(), "no device decodes all 2 bytes at 0x80");
    }
}

/// The bus against the simplest model that could be right: a list of
/// `(base, last, id)` searched end to end.
#[cfg(test)]
mod proptests {
    use super::*;
    use proptest::prelude::*;

    #[derive(Clone, Debug)]
    enum Op {
        Insert { base: u16, len: u64 },
        Remove { base: u16 },
        Route { addr: u16, size: usize },
    }

    /// Addresses crowd two windows, the bottom and the top of the space, so ranges
    /// collide and run off the end often.
    fn addr() -> impl Strategy<Value = u16> {
        prop_oneof![0u16..96, (u16::MAX - 40)..=u16::MAX]
    }

    fn op() -> impl Strategy<Value = Op> {
        let len = prop_oneof![8 => 0u64..24, 1 => Just(0x1_0000u64), 1 => any::<u64>()];
        prop_oneof![
            4 => (addr(), len).prop_map(|(base, len)| Op::Insert { base, len }),
            1 => addr().prop_map(|base| Op::Remove { base }),
            2 => (addr(), 0usize..10).prop_map(|(addr, size)| Op::Route { addr, size }),
        ]
    }

    #[derive(Default)]
    struct Model {
        /// `(base, last, id)`, in no particular order.
        ranges: Vec<(u64, u64, u32)>,
    }

    impl Model {
        fn insert(&mut self, base: u16, len: u64, id: u32) -> Result<(), BusError> {
            let b = u64::from(base);
            if len == 0 {
                return Err(BusError::ZeroLength);
            }
            let last = b as u128 + len as u128 - 1;
            if last > u16::MAX as u128 {
                return Err(BusError::Overflow { base: b, len });
            }
            let last = last as u64;
            let hit = self
                .ranges
                .iter()
                .filter(|&&(rb, rl, _)| rb <= last && rl >= b)
                .max_by_key(|&&(rb, _, _)| rb);
            if let Some(&(rb, rl, _)) = hit {
                return Err(BusError::Overlap {
                    base: b,
                    len,
                    with_base: rb,
                    with_len: rl - rb + 1,
                });
            }
            self.ranges.push((b, last, id));
            Ok(())
        }

        fn remove(&mut self, base: u16) -> Option<u32> {
            let i = self
                .ranges
                .iter()
                .position(|&(b, _, _)| b == u64::from(base))?;
            Some(self.ranges.remove(i).2)
        }

        fn lookup(&self, addr: u16) -> Option<(u16, u32)> {
            let a = u64::from(addr);
            self.ranges
                .iter()
                .find(|&&(b, l, _)| b <= a && a <= l)
                .map(|&(b, _, id)| (b as u16, id))
        }

        fn route(&self, addr: u16, size: usize) -> Result<(u64, u32), BusError> {
            if size == 0 {
                return Err(BusError::ZeroLength);
            }
            let a = u64::from(addr);
            let end = a + size as u64 - 1;
            self.ranges
                .iter()
                .find(|&&(b, l, _)| b <= a && end <= l)
                .map(|&(b, _, id)| (a - b, id))
                .ok_or(BusError::Unmapped {
                    addr: a,
                    size: size as u64,
                })
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

        #[test]
        fn bus_matches_the_model(ops in prop::collection::vec(op(), 1..48)) {
            let mut bus: PortBus<u32> = PortBus::new();
            let mut model = Model::default();
            for (id, op) in (0u32..).zip(ops) {
                match op {
                    Op::Insert { base, len } => {
                        prop_assert_eq!(bus.insert(base, len, id), model.insert(base, len, id));
                    }
                    Op::Remove { base } => {
                        prop_assert_eq!(bus.remove(base), model.remove(base));
                    }
                    Op::Route { addr, size } => {
                        let got = bus.route(addr, size).map(|(o, d)| (o, *d));
                        prop_assert_eq!(got, model.route(addr, size));
                    }
                }
                prop_assert_eq!(bus.len(), model.ranges.len());
                // Every address of both windows, and the ranges themselves.
                for a in (0u16..120).chain(u16::MAX - 60..=u16::MAX) {
                    let got = bus.lookup(a).map(|(b, &d)| (b, d));
                    prop_assert_eq!(got, model.lookup(a));
                }
                let mut want: Vec<_> = model
                    .ranges
                    .iter()
                    .map(|&(b, l, id)| (b as u16, l - b + 1, id))
                    .collect();
                want.sort_unstable();
                let got: Vec<_> = bus.iter().map(|(b, l, &d)| (b, l, d)).collect();
                prop_assert_eq!(got, want);
            }
        }
    }
}
