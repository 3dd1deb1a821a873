//! keel's virtual address space.
//!
//! The x86-64 Xen PV ABI reserves `HYPERVISOR_VIRT_START..HYPERVISOR_VIRT_END`
//! (PML4 slots 256..=271) for the hypervisor in every PV guest's address space (Xen
//! public `arch-x86/xen-x86_64.h`). keel puts everything it maps there, so that PV
//! guests can later run on page tables that share keel's upper slots, and keeps Xen's
//! own placement of the image (slot 261) and of the 5 TiB direct map (slots 262..=271).
//! Slots 256..=260 are left free for what PV guests expect to find there (the
//! read-only machine-to-phys table) and for per-domain mappings.
//!
//! | range                                    | what                                   |
//! |------------------------------------------|----------------------------------------|
//! | `IMAGE_VIRT_BASE` + 1 GiB                | image window: `va = IMAGE_VIRT_BASE + pa` for pa < 1 GiB; the image is loaded at `IMAGE_LOAD_PHYS` |
//! | `DIRECTMAP_BASE..HYPERVISOR_VIRT_END`    | all RAM: `va = DIRECTMAP_BASE + hpa`    |
//!
//! Hazard: the direct map covers 5 TiB of physical address space, less than the
//! architectural 4 PiB. Boot must not map (or hand out) RAM above `DIRECTMAP_SIZE`;
//! `directmap_va` panics on such an address rather than return an alias.

use crate::addr::Hpa;

/// First byte of the range the PV ABI reserves for the hypervisor.
pub const HYPERVISOR_VIRT_START: u64 = 0xFFFF_8000_0000_0000;
/// One past the last byte of that range.
pub const HYPERVISOR_VIRT_END: u64 = 0xFFFF_8800_0000_0000;

/// Virtual address of physical 0 in the image window.
pub const IMAGE_VIRT_BASE: u64 = 0xFFFF_82D0_8000_0000;
/// Size of the image window.
pub const IMAGE_WINDOW_SIZE: u64 = 1 << 30;
/// Physical load address of the hypervisor image.
pub const IMAGE_LOAD_PHYS: u64 = 2 << 20;

/// Virtual address of host-physical 0 in the direct map.
pub const DIRECTMAP_BASE: u64 = 0xFFFF_8300_0000_0000;
/// Size of the direct map: 5 TiB.
pub const DIRECTMAP_SIZE: u64 = HYPERVISOR_VIRT_END - DIRECTMAP_BASE;

const _: () = {
    assert!(HYPERVISOR_VIRT_START <= IMAGE_VIRT_BASE);
    assert!(
        IMAGE_VIRT_BASE + IMAGE_WINDOW_SIZE <= DIRECTMAP_BASE,
        "image window overlaps the direct map"
    );
    assert!(DIRECTMAP_BASE + DIRECTMAP_SIZE <= HYPERVISOR_VIRT_END);
    assert!(DIRECTMAP_SIZE == 5 << 40);
    assert!(IMAGE_LOAD_PHYS < IMAGE_WINDOW_SIZE);
    // Huge-page friendly: both windows can be mapped with 1 GiB pages.
    assert!(IMAGE_VIRT_BASE.is_multiple_of(1 << 30) && DIRECTMAP_BASE.is_multiple_of(1 << 30));
};

/// Direct-map address of `hpa`, or `None` if the direct map does not reach it.
#[inline]
pub const fn try_directmap_va(hpa: Hpa) -> Option<u64> {
    if hpa.as_u64() < DIRECTMAP_SIZE {
        Some(DIRECTMAP_BASE + hpa.as_u64())
    } else {
        None
    }
}

/// Direct-map address of `hpa`.
///
/// # Panics
/// If `hpa >= DIRECTMAP_SIZE`. Boot never maps RAM there, so such an address is a
/// bug, and returning a wrapped address instead would alias unrelated memory.
#[inline]
pub const fn directmap_va(hpa: Hpa) -> u64 {
    match try_directmap_va(hpa) {
        Some(va) => va,
        None => panic!("hpa beyond the direct map"),
    }
}

/// The host-physical address a direct-map `va` stands for.
pub fn directmap_hpa(va: u64) -> Option<Hpa> {
    let off = va.checked_sub(DIRECTMAP_BASE)?;
    if off < DIRECTMAP_SIZE {
        Hpa::new(off)
    } else {
        None
    }
}

/// Image-window address of `pa`, or `None` outside the window.
pub fn image_va(pa: Hpa) -> Option<u64> {
    (pa.as_u64() < IMAGE_WINDOW_SIZE).then_some(IMAGE_VIRT_BASE + pa.as_u64())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn directmap_round_trip_and_bounds() {
        let a = Hpa::new(0x1234_5000).unwrap();
        assert_eq!(directmap_va(a), 0xFFFF_8300_1234_5000);
        assert_eq!(directmap_hpa(directmap_va(a)), Some(a));
        let edge = Hpa::new(DIRECTMAP_SIZE).unwrap();
        assert_eq!(try_directmap_va(edge), None);
        assert_eq!(directmap_hpa(HYPERVISOR_VIRT_END), None);
        assert_eq!(directmap_hpa(DIRECTMAP_BASE - 1), None);
        assert_eq!(
            image_va(Hpa::new(IMAGE_LOAD_PHYS).unwrap()),
            Some(0xFFFF_82D0_8020_0000)
        );
        assert_eq!(image_va(Hpa::new(IMAGE_WINDOW_SIZE).unwrap()), None);
    }

    #[test]
    #[should_panic(expected = "beyond the direct map")]
    fn directmap_va_panics_past_the_end() {
        directmap_va(Hpa::new(DIRECTMAP_SIZE).unwrap());
    }
}
