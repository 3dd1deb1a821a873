//! [`CpuSet`]: a set of pCPU ids, for affinities (Xen's `cpumask_t`).
//!
//! A fixed bitmap of [`MAX_CPUS`] bits, so that it is `Copy`, needs no heap and costs
//! the same to pass around as a pointer pair. Ids at or beyond `MAX_CPUS` cannot be
//! put in: [`CpuSet::insert`] and [`CpuSet::single`] refuse them, so a set never
//! silently loses a pCPU someone asked for. Whether the pCPUs in a set exist on this
//! machine is checked where the set is used ([`crate::Policy::set_affinity`]).

use core::fmt;

use crate::SchedError;

/// The most pCPUs a [`CpuSet`] (and so a policy) can name: ids `0..MAX_CPUS`.
pub const MAX_CPUS: u32 = 256;

const WORDS: usize = MAX_CPUS as usize / 64;

/// A set of pCPU ids below [`MAX_CPUS`]. `Default` is the empty set.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct CpuSet {
    bits: [u64; WORDS],
}

impl CpuSet {
    /// The empty set.
    pub const fn new() -> CpuSet {
        CpuSet { bits: [0; WORDS] }
    }

    /// pCPUs `0..nr_cpus` (all of `0..MAX_CPUS` if `nr_cpus` is larger).
    pub fn all(nr_cpus: u32) -> CpuSet {
        let mut s = CpuSet::new();
        let nr = nr_cpus.min(MAX_CPUS) as usize;
        for (i, word) in s.bits.iter_mut().enumerate() {
            let lo = i * 64;
            *word = match nr.saturating_sub(lo) {
                0 => 0,
                n if n >= 64 => u64::MAX,
                n => (1u64 << n) - 1,
            };
        }
        s
    }

    /// The set holding only `cpu`; refused if `cpu >= MAX_CPUS`.
    pub fn single(cpu: u32) -> Result<CpuSet, SchedError> {
        let mut s = CpuSet::new();
        s.insert(cpu)?;
        Ok(s)
    }

    /// Adds `cpu`; refused (and the set unchanged) if `cpu >= MAX_CPUS`.
    pub fn insert(&mut self, cpu: u32) -> Result<(), SchedError> {
        if cpu >= MAX_CPUS {
            return Err(SchedError::CpuSetOverflow { cpu, max: MAX_CPUS });
        }
        self.bits[cpu as usize / 64] |= 1 << (cpu % 64);
        Ok(())
    }

    /// Takes `cpu` out (nothing happens if it is not in).
    pub fn remove(&mut self, cpu: u32) {
        if let Some(word) = self.bits.get_mut(cpu as usize / 64) {
            *word &= !(1 << (cpu % 64));
        }
    }

    /// Whether `cpu` is in the set.
    pub fn contains(&self, cpu: u32) -> bool {
        self.bits
            .get(cpu as usize / 64)
            .is_some_and(|w| w & (1 << (cpu % 64)) != 0)
    }

    /// Whether the set has no pCPU.
    pub fn is_empty(&self) -> bool {
        self.bits.iter().all(|&w| w == 0)
    }

    /// How many pCPUs are in the set.
    pub fn len(&self) -> u32 {
        self.bits.iter().map(|w| w.count_ones()).sum()
    }

    /// The pCPUs in both sets.
    pub fn intersect(&self, other: &CpuSet) -> CpuSet {
        let mut s = *self;
        for (a, b) in s.bits.iter_mut().zip(other.bits.iter()) {
            *a &= b;
        }
        s
    }

    /// The pCPUs in the set, lowest first.
    pub fn iter(&self) -> impl Iterator<Item = u32> + '_ {
        self.bits.iter().enumerate().flat_map(|(i, &word)| {
            let base = i as u32 * 64;
            let mut w = word;
            core::iter::from_fn(move || {
                if w == 0 {
                    return None;
                }
                let bit = w.trailing_zeros();
                w &= w - 1;
                Some(base + bit)
            })
        })
    }
}

/// Prints the ids, as `{0, 2, 3}`.
impl fmt::Debug for CpuSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.iter()).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec::Vec;
    use proptest::prelude::*;

    #[test]
    fn basics() {
        let e = CpuSet::new();
        assert!(e.is_empty());
        assert_eq!(e.len(), 0);
        assert_eq!(e, CpuSet::default());
        assert_eq!(CpuSet::all(0), e);
        assert_eq!(CpuSet::all(3).iter().collect::<Vec<_>>(), [0, 1, 2]);
        assert_eq!(CpuSet::all(64).len(), 64);
        assert!(!CpuSet::all(64).contains(64));
        assert_eq!(CpuSet::all(65).iter().last(), Some(64));
        assert_eq!(CpuSet::all(1000).len(), MAX_CPUS);
        let mut s = CpuSet::single(200).unwrap();
        assert!(s.contains(200) && !s.contains(199) && !s.contains(9999));
        s.insert(3).unwrap();
        assert_eq!(s.iter().collect::<Vec<_>>(), [3, 200]);
        assert_eq!(alloc::format!("{s:?}"), "{3, 200}");
        assert_eq!(s.intersect(&CpuSet::all(10)), CpuSet::single(3).unwrap());
        s.remove(3);
        s.remove(9999);
        assert_eq!(s, CpuSet::single(200).unwrap());
        assert_eq!(
            CpuSet::single(MAX_CPUS),
            Err(SchedError::CpuSetOverflow { cpu: 256, max: 256 })
        );
        assert_eq!(
            s.insert(u32::MAX),
            Err(SchedError::CpuSetOverflow {
                cpu: u32::MAX,
                max: 256
            })
        );
        assert_eq!(s.len(), 1, "a refused insert changes nothing");
        assert_eq!(
            alloc::format!("{}", SchedError::CpuSetOverflow { cpu: 256, max: 256 }),
            "pCPU 256 is beyond what a CPU set holds (0..256)"
        );
    }

    proptest! {
        #[test]
        fn behaves_like_a_set_of_ids(a in prop::collection::btree_set(0u32..MAX_CPUS, 0..40),
                                     b in prop::collection::btree_set(0u32..MAX_CPUS, 0..40)) {
            let mut sa = CpuSet::new();
            for &c in &a {
                sa.insert(c).unwrap();
            }
            let mut sb = CpuSet::new();
            for &c in &b {
                sb.insert(c).unwrap();
            }
            prop_assert_eq!(sa.iter().collect::<Vec<_>>(), a.iter().copied().collect::<Vec<_>>());
            prop_assert_eq!(sa.len() as usize, a.len());
            prop_assert_eq!(sa.is_empty(), a.is_empty());
            let both: Vec<u32> = a.intersection(&b).copied().collect();
            prop_assert_eq!(sa.intersect(&sb).iter().collect::<Vec<_>>(), both);
            for c in 0..MAX_CPUS {
                prop_assert_eq!(sa.contains(c), a.contains(&c));
            }
        }
    }
}
