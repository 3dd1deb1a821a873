//! The 2-level event-channel ABI: how a pending port reaches a vCPU
//! (Xen's `xen/common/event_2l.c`; layout in `public/xen.h`).
//!
//! # What
//!
//! A domain's `shared_info` page holds two bitmaps, `evtchn_pending` and
//! `evtchn_mask`, one bit per port; each `vcpu_info` holds a selector word
//! `evtchn_pending_sel` (bit `i`: "look at bitmap word `i`") and the byte
//! `evtchn_upcall_pending`. Raising a port sets its pending bit; if the port
//! is not masked, the selector bit of its word in the notified vCPU; and if
//! that was newly set, the vCPU's upcall flag, and if *that* was newly set,
//! the vCPU must be interrupted ("kicked": an upcall vector for HVM/PVH, a
//! wake-up for PV). Unmasking a pending port repeats the second half.
//!
//! Geometry: a 64-bit guest's words are 64 bits, so 64 words cover
//! `EVTCHN_2L_NR_CHANNELS` = 4096 ports and port `p` is bit `p % 64` of word
//! `p / 64`; a 32-bit (compat) guest's are 32 bits, 32 words, 1024 ports
//! ([`EventWords::word_bits`]). The bit string in memory is the same either
//! way (x86 is little-endian); only the selector's meaning changes.
//!
//! This module only sequences the bit operations; [`EventWords`] performs
//! them. In the kernel they are locked (atomic) bit operations on the guest's
//! pages, which the guest changes concurrently; [`ArrayWords`] is a plain
//! in-memory one for tests.
//!
//! # Invariants
//!
//! - The order is Xen's and is what makes lock-free delivery correct against
//!   a guest that clears `upcall_pending`, then the selector, then pending
//!   bits: pending before selector before upcall, each a test-and-set, so
//!   exactly one raiser kicks for each transition of the upcall flag.
//! - Ports at or beyond the geometry's limit are ignored (never pending,
//!   always masked), as Xen's `evtchn_2l_is_masked` treats them. Nothing here
//!   panics, whatever the port or vCPU.
//!
//! # Locking
//!
//! None: the words are shared with the guest and every operation on them is
//! a single atomic read-modify-write. The caller must not race a
//! [`set_pending`] with closing the same port (Xen holds the channel's read
//! lock); holding the lock of the port's domain's [`Table`](crate::Table)
//! across both does that (see [`crate::table`]'s locking).
//!
//! # Hazards
//!
//! - A vCPU blocked in `SCHEDOP_poll` on a port must be woken when the port
//!   becomes pending even if it is masked (Xen's `evtchn_check_pollers`);
//!   [`set_pending`] reports only upcalls, so the kernel checks its pollers
//!   after every [`set_pending`] (waking a poller whose port is pending is
//!   always correct).

use alloc::vec;
use alloc::vec::Vec;

use crate::Port;

/// The pending/mask bitmaps of one domain and the selector and upcall words
/// of its vCPUs: Xen's `shared_info` and `vcpu_info` event fields.
///
/// Methods take port numbers; an implementation ignores ports beyond its
/// geometry and vCPUs it does not have, answering as if the bit were
/// already set (so no delivery follows) and never panicking.
pub trait EventWords {
    /// Bits per bitmap word: 64 for a 64-bit guest, 32 for a compat guest.
    /// Any value other than 32 is taken as 64.
    fn word_bits(&self) -> u32 {
        64
    }
    /// Sets `port`'s pending bit; returns the old bit.
    fn test_and_set_pending(&mut self, port: Port) -> bool;
    /// Clears `port`'s pending bit.
    fn clear_pending(&mut self, port: Port);
    /// `port`'s pending bit.
    fn is_pending(&self, port: Port) -> bool;
    /// `port`'s mask bit.
    fn is_masked(&self, port: Port) -> bool;
    /// Clears `port`'s mask bit; returns the old bit.
    fn test_and_clear_mask(&mut self, port: Port) -> bool;
    /// Sets `port`'s mask bit.
    fn set_mask(&mut self, port: Port);
    /// Sets bit `word` of `vcpu`'s `evtchn_pending_sel`; returns the old bit.
    fn test_and_set_pending_sel(&mut self, vcpu: u32, word: u32) -> bool;
    /// Sets `vcpu`'s `evtchn_upcall_pending`; returns the old value.
    fn set_upcall_pending(&mut self, vcpu: u32) -> bool;
}

/// Bits per word of `w`'s geometry: 32 or 64.
fn bits<W: EventWords + ?Sized>(w: &W) -> u32 {
    if w.word_bits() == 32 { 32 } else { 64 }
}

/// Ports `w`'s geometry can express: 4096, or 1024 for a compat guest.
#[must_use]
pub fn nr_ports<W: EventWords + ?Sized>(w: &W) -> u32 {
    let b = bits(w);
    b * b
}

/// Xen's `evtchn_2l_set_pending`: raises `port`, notifying `vcpu`. Returns
/// true when the vCPU's upcall became pending, i.e. the kernel must kick it.
///
/// No effect beyond the pending bit when the port was already pending, and
/// no kick when it is masked or its selector bit was already set.
pub fn set_pending<W: EventWords + ?Sized>(w: &mut W, port: Port, vcpu: u32) -> bool {
    if port >= nr_ports(w) || w.test_and_set_pending(port) {
        return false;
    }
    !w.is_masked(port) && mark_word(w, port, vcpu)
}

/// Xen's `evtchn_2l_clear_pending` (done when a port is freed).
pub fn clear_pending<W: EventWords + ?Sized>(w: &mut W, port: Port) {
    if port < nr_ports(w) {
        w.clear_pending(port);
    }
}

/// Xen's `evtchn_2l_unmask`: clears `port`'s mask and, if it was masked and
/// is pending, notifies `vcpu` (the port's notify vCPU). Returns true when
/// the kernel must kick the vCPU.
pub fn unmask<W: EventWords + ?Sized>(w: &mut W, port: Port, vcpu: u32) -> bool {
    port < nr_ports(w)
        && w.test_and_clear_mask(port)
        && w.is_pending(port)
        && mark_word(w, port, vcpu)
}

/// Xen's `evtchn_2l_is_pending`: false beyond the geometry.
#[must_use]
pub fn is_pending<W: EventWords + ?Sized>(w: &W, port: Port) -> bool {
    port < nr_ports(w) && w.is_pending(port)
}

/// Xen's `evtchn_2l_is_masked`: true beyond the geometry.
#[must_use]
pub fn is_masked<W: EventWords + ?Sized>(w: &W, port: Port) -> bool {
    port >= nr_ports(w) || w.is_masked(port)
}

/// The selector bit of `port`'s word, then the upcall flag (Xen's
/// `vcpu_mark_events_pending`); true when the upcall flag was newly set.
fn mark_word<W: EventWords + ?Sized>(w: &mut W, port: Port, vcpu: u32) -> bool {
    let word = port / bits(w);
    !w.test_and_set_pending_sel(vcpu, word) && !w.set_upcall_pending(vcpu)
}

/// A plain in-memory [`EventWords`], for tests of this crate and of its
/// users. Bitmaps are 64 `u64`s (4096 ports) whatever the geometry; a compat
/// instance uses the first 1024 bits and the low 32 selector bits.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ArrayWords {
    word_bits: u32,
    /// `shared_info.evtchn_pending`.
    pub pending: [u64; 64],
    /// `shared_info.evtchn_mask`.
    pub mask: [u64; 64],
    /// `vcpu_info.evtchn_pending_sel`, per vCPU.
    pub pending_sel: Vec<u64>,
    /// `vcpu_info.evtchn_upcall_pending`, per vCPU.
    pub upcall_pending: Vec<u8>,
}

impl ArrayWords {
    /// A 64-bit guest's words, all clear, for `nr_vcpus` vCPUs.
    #[must_use]
    pub fn new(nr_vcpus: u32) -> ArrayWords {
        Self::with_geometry(64, nr_vcpus)
    }

    /// A 32-bit (compat) guest's words, all clear, for `nr_vcpus` vCPUs.
    #[must_use]
    pub fn new_compat(nr_vcpus: u32) -> ArrayWords {
        Self::with_geometry(32, nr_vcpus)
    }

    fn with_geometry(word_bits: u32, nr_vcpus: u32) -> ArrayWords {
        let n = nr_vcpus as usize;
        ArrayWords {
            word_bits,
            pending: [0; 64],
            mask: [0; 64],
            pending_sel: vec![0; n],
            upcall_pending: vec![0; n],
        }
    }

    /// The word index and bit mask of `port`, if within the geometry.
    fn locate(&self, port: Port) -> Option<(usize, u64)> {
        (port < self.word_bits * self.word_bits)
            .then(|| ((port / 64) as usize, 1u64 << (port % 64)))
    }
}

impl EventWords for ArrayWords {
    fn word_bits(&self) -> u32 {
        self.word_bits
    }

    fn test_and_set_pending(&mut self, port: Port) -> bool {
        let Some((i, b)) = self.locate(port) else {
            return true;
        };
        let old = self.pending[i] & b != 0;
        self.pending[i] |= b;
        old
    }

    fn clear_pending(&mut self, port: Port) {
        if let Some((i, b)) = self.locate(port) {
            self.pending[i] &= !b;
        }
    }

    fn is_pending(&self, port: Port) -> bool {
        self.locate(port)
            .is_some_and(|(i, b)| self.pending[i] & b != 0)
    }

    fn is_masked(&self, port: Port) -> bool {
        self.locate(port).is_none_or(|(i, b)| self.mask[i] & b != 0)
    }

    fn test_and_clear_mask(&mut self, port: Port) -> bool {
        let Some((i, b)) = self.locate(port) else {
            return false;
        };
        let old = self.mask[i] & b != 0;
        self.mask[i] &= !b;
        old
    }

    fn set_mask(&mut self, port: Port) {
        if let Some((i, b)) = self.locate(port) {
            self.mask[i] |= b;
        }
    }

    fn test_and_set_pending_sel(&mut self, vcpu: u32, word: u32) -> bool {
        let Some(sel) = self.pending_sel.get_mut(vcpu as usize) else {
            return true;
        };
        if word >= self.word_bits {
            return true;
        }
        let b = 1u64 << word;
        let old = *sel & b != 0;
        *sel |= b;
        old
    }

    fn set_upcall_pending(&mut self, vcpu: u32) -> bool {
        let Some(up) = self.upcall_pending.get_mut(vcpu as usize) else {
            return true;
        };
        let old = *up != 0;
        *up = 1;
        old
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use keel_hypercall::abi::evtchn::{EVTCHN_2L_NR_CHANNELS, EVTCHN_2L_NR_CHANNELS_COMPAT};
    use proptest::prelude::*;

    #[test]
    fn geometry() {
        assert_eq!(nr_ports(&ArrayWords::new(1)), EVTCHN_2L_NR_CHANNELS);
        assert_eq!(
            nr_ports(&ArrayWords::new_compat(1)),
            EVTCHN_2L_NR_CHANNELS_COMPAT
        );

        let mut w = ArrayWords::new(1);
        assert!(set_pending(&mut w, 4095, 0));
        assert_eq!(w.pending[63], 1 << 63);
        assert_eq!(w.pending_sel[0], 1 << 63);
        assert!(!set_pending(&mut w, 64, 0), "upcall already pending");
        assert_eq!(w.pending[1], 1);
        assert_eq!(w.pending_sel[0], (1 << 63) | 2);

        let mut c = ArrayWords::new_compat(1);
        assert!(set_pending(&mut c, 1023, 0));
        assert_eq!(c.pending[15], 1 << 63, "same bit string as a 64-bit guest");
        assert_eq!(c.pending_sel[0], 1 << 31, "selector word is port / 32");
        assert!(
            !set_pending(&mut c, 1024, 0),
            "beyond a compat guest's ports"
        );
        assert!(!is_pending(&c, 1024));
        assert!(is_masked(&c, 1024));
    }

    #[test]
    fn set_pending_kicks_once() {
        let mut w = ArrayWords::new(2);
        assert!(set_pending(&mut w, 5, 1));
        assert!(is_pending(&w, 5));
        assert_eq!(w.pending_sel, vec![0, 1]);
        assert_eq!(w.upcall_pending, vec![0, 1]);
        // Already pending: nothing more happens.
        w.upcall_pending[1] = 0;
        w.pending_sel[1] = 0;
        assert!(!set_pending(&mut w, 5, 1));
        assert_eq!((w.pending_sel[1], w.upcall_pending[1]), (0, 0));
    }

    #[test]
    fn masked_port_does_not_kick() {
        let mut w = ArrayWords::new(1);
        w.set_mask(7);
        assert!(!set_pending(&mut w, 7, 0));
        assert!(is_pending(&w, 7));
        assert_eq!((w.pending_sel[0], w.upcall_pending[0]), (0, 0));
    }

    #[test]
    fn selector_already_set_does_not_kick() {
        let mut w = ArrayWords::new(1);
        w.pending_sel[0] = 1;
        assert!(!set_pending(&mut w, 3, 0));
        assert_eq!(w.upcall_pending[0], 0, "the guest is still scanning word 0");
        // Another word's selector is clear: that kicks.
        assert!(set_pending(&mut w, 64, 0));
        assert_eq!(w.pending_sel[0], 0b11);
    }

    #[test]
    fn upcall_already_pending_does_not_kick() {
        let mut w = ArrayWords::new(1);
        w.upcall_pending[0] = 1;
        assert!(!set_pending(&mut w, 3, 0));
        assert_eq!(
            w.pending_sel[0], 1,
            "the selector is still set for the guest"
        );
    }

    #[test]
    fn unmask_rules() {
        let mut w = ArrayWords::new(1);
        // Unmasking a pending masked port kicks.
        w.set_mask(9);
        assert!(!set_pending(&mut w, 9, 0));
        assert!(unmask(&mut w, 9, 0));
        assert!(!is_masked(&w, 9));
        assert_eq!((w.pending_sel[0], w.upcall_pending[0]), (1, 1));
        // Unmasking a port that was not masked does nothing.
        w.pending_sel[0] = 0;
        w.upcall_pending[0] = 0;
        assert!(!unmask(&mut w, 9, 0));
        assert_eq!((w.pending_sel[0], w.upcall_pending[0]), (0, 0));
        // Unmasking a masked port that is not pending only clears the mask.
        w.set_mask(10);
        assert!(!unmask(&mut w, 10, 0));
        assert!(!is_masked(&w, 10));
        assert_eq!((w.pending_sel[0], w.upcall_pending[0]), (0, 0));
        // Unmask with the selector already set: no kick.
        w.set_mask(11);
        set_pending(&mut w, 11, 0);
        w.pending_sel[0] = 1;
        assert!(!unmask(&mut w, 11, 0));
    }

    #[test]
    fn clear_pending_clears_only_that_port() {
        let mut w = ArrayWords::new(1);
        set_pending(&mut w, 1, 0);
        set_pending(&mut w, 2, 0);
        clear_pending(&mut w, 1);
        assert!(!is_pending(&w, 1));
        assert!(is_pending(&w, 2));
        clear_pending(&mut w, u32::MAX);
    }

    #[test]
    fn hostile_ports_and_vcpus_are_ignored() {
        let mut w = ArrayWords::new(1);
        for port in [4096, 4097, u32::MAX] {
            assert!(!set_pending(&mut w, port, 0));
            assert!(!unmask(&mut w, port, 0));
            assert!(!is_pending(&w, port));
            assert!(is_masked(&w, port));
        }
        assert!(!set_pending(&mut w, 1, 7), "no such vCPU: no kick");
        assert!(is_pending(&w, 1));
        assert_eq!(w, {
            let mut e = ArrayWords::new(1);
            e.pending[0] = 2;
            e
        });
    }

    /// What the guest does in its upcall handler: clear the upcall flag,
    /// take the selector, and consume every unmasked pending port it names.
    fn guest_drain(w: &mut ArrayWords, vcpu: usize) {
        w.upcall_pending[vcpu] = 0;
        let sel = core::mem::take(&mut w.pending_sel[vcpu]);
        for word in 0..64 {
            if sel & (1 << word) != 0 {
                w.pending[word] &= w.mask[word];
            }
        }
    }

    #[derive(Clone, Debug)]
    enum Op {
        Raise(Port, u32),
        Unmask(Port, u32),
        Mask(Port),
        Drain(usize),
    }

    fn op() -> impl Strategy<Value = Op> {
        let port = prop_oneof![0u32..140, 4000u32..4100];
        prop_oneof![
            (port.clone(), 0u32..2).prop_map(|(p, v)| Op::Raise(p, v)),
            (port.clone(), 0u32..2).prop_map(|(p, v)| Op::Unmask(p, v)),
            port.prop_map(Op::Mask),
            (0usize..2).prop_map(Op::Drain),
        ]
    }

    proptest! {
        /// No lost wake-ups: after every step, each unmasked pending port has
        /// its selector bit set in some vCPU whose upcall flag is set (so the
        /// guest will find it), and a kick is reported exactly when the
        /// notified vCPU's upcall flag went from 0 to 1.
        #[test]
        fn no_lost_wakeups(ops in proptest::collection::vec(op(), 0..300)) {
            let mut w = ArrayWords::new(2);
            for op in ops {
                match op {
                    Op::Raise(p, v) | Op::Unmask(p, v) => {
                        let before = w.upcall_pending[v as usize];
                        let kick = if let Op::Raise(..) = op {
                            set_pending(&mut w, p, v)
                        } else {
                            unmask(&mut w, p, v)
                        };
                        let after = w.upcall_pending[v as usize];
                        prop_assert_eq!(kick, before == 0 && after == 1);
                    }
                    Op::Mask(p) => w.set_mask(p),
                    Op::Drain(v) => guest_drain(&mut w, v),
                }
                for v in 0..2 {
                    prop_assert!(w.pending_sel[v] == 0 || w.upcall_pending[v] == 1);
                }
                for p in 0..4096u32 {
                    if is_pending(&w, p) && !is_masked(&w, p) {
                        let bit = 1u64 << (p / 64);
                        prop_assert!(
                            w.pending_sel.iter().any(|s| s & bit != 0),
                            "port {} pending, unmasked, but no selector names it", p
                        );
                    }
                }
            }
        }
    }
}
