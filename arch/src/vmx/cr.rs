//! Emulation of the guest's writes to CR0 and CR4 that VM-exit (the bits keel owns,
//! [`CrFixed`]), as pure functions of the guest's state, so that every rule is tested
//! on the host.
//!
//! Why there is anything to emulate: keel forces CR0.NE and CR4.VMXE on in the real
//! registers (VMX requires them) while the guest reads its own values from the read
//! shadows; and keel owns CR0.PG because, with "load IA32_EFER" and unrestricted
//! guest, turning paging on or off must be reflected in EFER.LMA and in the "IA-32e
//! mode guest" VM-entry control, which VM entry checks against each other (SDM Vol. 3C
//! §26.2.1.3, §26.3.1.1). A write that exits has not happened: keel performs all of
//! it, including the architectural #GP checks of MOV to CR0/CR4 (SDM Vol. 2B "MOV—Move
//! to/from Control Registers"), the PDPTE load that enabling PAE paging implies (SDM
//! Vol. 3A §4.4.1; with EPT the PDPTEs live in VMCS fields, §26.3.2.4), and the TLB
//! flush that paging-mode changes imply (VPID-tagged entries survive VM entries,
//! §28.3.3.1).
//!
//! The PDPTE load needs the guest's memory: [`ept_translate`] walks the p2m (EPT) to
//! the host frame, through a reader the caller provides.
//!
//! A whole new state (`HvmVcpu::load_context`) goes through the same [`CrUpdate`]:
//! [`load`] computes the real registers, shadows and EFER for it.

use keel_mm::p2m::SlptFormat;

use super::controls::{CrFixed, cr0, cr4, efer};
use super::ept::EptFormat;
use crate::hvm::LoadContextError;

/// The state a CR write depends on.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CrState {
    /// The real CR0 (GUEST_CR0) and its read shadow.
    pub cr0: u64,
    pub cr0_shadow: u64,
    /// The real CR4 (GUEST_CR4) and its read shadow.
    pub cr4: u64,
    pub cr4_shadow: u64,
    pub cr3: u64,
    /// GUEST_IA32_EFER.
    pub efer: u64,
    /// CS.L: the guest runs 64-bit code.
    pub cs_long: bool,
}

impl CrState {
    /// CR0 as the guest sees it: its own value in the bits keel owns.
    pub fn guest_cr0(&self, f: &CrFixed) -> u64 {
        (self.cr0 & !f.cr0_mask) | (self.cr0_shadow & f.cr0_mask)
    }

    /// CR4 as the guest sees it.
    pub fn guest_cr4(&self, f: &CrFixed) -> u64 {
        (self.cr4 & !f.cr4_mask) | (self.cr4_shadow & f.cr4_mask)
    }
}

/// The new register values after an emulated write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CrUpdate {
    pub cr0: u64,
    pub cr0_shadow: u64,
    pub cr4: u64,
    pub cr4_shadow: u64,
    /// With EFER.LMA recomputed; "IA-32e mode guest" must follow LMA.
    pub efer: u64,
    /// PAE paging is in use afterwards and the PDPTEs must be (re)loaded from CR3.
    pub load_pdptes: bool,
    /// Guest translations tagged with its VPID must be flushed.
    pub flush_tlb: bool,
}

/// The write raises #GP(0) in the guest.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GeneralProtection;

/// MOV to CR0 (also CLTS and LMSW, turned into the CR0 value they write).
pub fn write_cr0(s: &CrState, f: &CrFixed, value: u64) -> Result<CrUpdate, GeneralProtection> {
    let old = s.guest_cr0(f);
    let pg = value & cr0::PG != 0;
    let old_pg = old & cr0::PG != 0;
    let lme = s.efer & efer::LME != 0;
    let lma = s.efer & efer::LMA != 0;
    let reserved = value & !(f.cr0_allowed | cr0::PE | cr0::PG);
    if value >> 32 != 0 || reserved != 0 {
        return Err(GeneralProtection);
    }
    if pg && value & cr0::PE == 0 {
        return Err(GeneralProtection);
    }
    if value & cr0::NW != 0 && value & cr0::CD == 0 {
        return Err(GeneralProtection);
    }
    if pg && !old_pg && lme && (s.cr4 & cr4::PAE == 0 || s.cs_long) {
        // Activating IA-32e mode needs PAE and a CS without L.
        return Err(GeneralProtection);
    }
    if !pg && old_pg && lma && s.cs_long {
        // Paging cannot be turned off from 64-bit code.
        return Err(GeneralProtection);
    }
    let new_efer = if pg && lme {
        s.efer | efer::LMA
    } else {
        s.efer & !efer::LMA
    };
    let changed = old ^ value;
    let pae_paging = pg && s.cr4 & cr4::PAE != 0 && new_efer & efer::LMA == 0;
    // CD and NW in the real register are the host's (see `CrFixed`): keep them.
    let host_bits = cr0::CD | cr0::NW;
    Ok(CrUpdate {
        cr0: (value & !host_bits) | (s.cr0 & host_bits) | f.cr0_on | cr0::ET,
        cr0_shadow: value,
        cr4: s.cr4,
        cr4_shadow: s.cr4_shadow,
        efer: new_efer,
        load_pdptes: pae_paging && changed & (cr0::PG | cr0::CD | cr0::NW) != 0,
        flush_tlb: changed & (cr0::PG | cr0::PE | cr0::WP | cr0::CD | cr0::NW) != 0,
    })
}

/// A whole new CR0, CR4 and EFER as the guest is to see them (a loaded
/// `keel_x86::context::Context`, which has checked the architectural rules), with
/// `cr0_now` the real CR0 before (its CD and NW are the host's and stay, see
/// [`CrFixed`]). Refused: CR0 or CR4 bits this CPU's VMX does not allow (FIXED1,
/// §26.3.1.1; the guest's CR0.PE and PG are free with unrestricted guest), and
/// CR4.VMXE, which keel does not offer (CPUID hides it; MOV to CR4 refuses it too).
/// EFER.LMA is recomputed from LME and PG, as the "IA-32e mode guest" entry
/// control must match it (§26.2.1.3, §26.3.1.1). The PDPTEs are loaded for PAE
/// paging and the TLB always flushed.
pub fn load(
    f: &CrFixed,
    cr0_now: u64,
    cr0: u64,
    cr4: u64,
    efer: u64,
) -> Result<CrUpdate, LoadContextError> {
    let cr0_rejected = cr0 & !(f.cr0_allowed | cr0::PE | cr0::PG);
    if cr0_rejected != 0 {
        return Err(LoadContextError::Cr0Unsupported {
            rejected: cr0_rejected,
        });
    }
    let cr4_rejected = (cr4 & !f.cr4_allowed) | (cr4 & cr4::VMXE);
    if cr4_rejected != 0 {
        return Err(LoadContextError::Cr4Unsupported {
            rejected: cr4_rejected,
        });
    }
    let pg = cr0 & cr0::PG != 0;
    let new_efer = if pg && efer & efer::LME != 0 {
        efer | efer::LMA
    } else {
        efer & !efer::LMA
    };
    let host_bits = cr0::CD | cr0::NW;
    Ok(CrUpdate {
        cr0: (cr0 & !host_bits) | (cr0_now & host_bits) | f.cr0_on | cr0::ET,
        cr0_shadow: cr0,
        cr4: cr4 | f.cr4_on,
        cr4_shadow: cr4,
        efer: new_efer,
        load_pdptes: pg && cr4 & cr4::PAE != 0 && new_efer & efer::LMA == 0,
        flush_tlb: true,
    })
}

/// CLTS: clears CR0.TS.
pub fn clts_value(s: &CrState, f: &CrFixed) -> u64 {
    s.guest_cr0(f) & !cr0::TS
}

/// LMSW: loads CR0 bits 3:0 from `source`, but cannot clear PE (SDM Vol. 2A LMSW).
pub fn lmsw_value(s: &CrState, f: &CrFixed, source: u16) -> u64 {
    let old = s.guest_cr0(f);
    let low = u64::from(source) & (cr0::PE | cr0::MP | cr0::EM | cr0::TS);
    (old & !(cr0::MP | cr0::EM | cr0::TS)) | low | (old & cr0::PE)
}

/// MOV to CR4.
pub fn write_cr4(s: &CrState, f: &CrFixed, value: u64) -> Result<CrUpdate, GeneralProtection> {
    let old = s.guest_cr4(f);
    let lma = s.efer & efer::LMA != 0;
    if value & !f.cr4_allowed != 0 {
        return Err(GeneralProtection);
    }
    if value & cr4::VMXE != 0 {
        // keel does not offer nested VMX (CPUID hides it).
        return Err(GeneralProtection);
    }
    if lma && value & cr4::PAE == 0 {
        return Err(GeneralProtection);
    }
    if value & cr4::PCIDE != 0 && old & cr4::PCIDE == 0 && (!lma || s.cr3 & 0xFFF != 0) {
        return Err(GeneralProtection);
    }
    let changed = old ^ value;
    if lma && changed & cr4::LA57 != 0 {
        return Err(GeneralProtection);
    }
    let pae_paging = s.cr0 & cr0::PG != 0 && value & cr4::PAE != 0 && !lma;
    let paging_bits = cr4::PAE | cr4::PGE | cr4::PSE | cr4::SMEP;
    Ok(CrUpdate {
        cr0: s.cr0,
        cr0_shadow: s.cr0_shadow,
        cr4: value | f.cr4_on,
        cr4_shadow: value,
        efer: s.efer,
        load_pdptes: pae_paging && changed & paging_bits != 0,
        flush_tlb: changed & (paging_bits | cr4::PCIDE | cr4::LA57) != 0,
    })
}

/// Whether four PDPTEs may be loaded (SDM Vol. 3A §4.4.1): in each present one,
/// bits 2:1, 8:5 and those from `maxphyaddr` up must be 0.
pub fn pdptes_valid(pdptes: &[u64; 4], maxphyaddr: u8) -> bool {
    let high = if maxphyaddr >= 64 {
        0
    } else {
        !0u64 << maxphyaddr
    };
    let reserved = 0b1_1110_0110 | high;
    pdptes.iter().all(|&e| e & 1 == 0 || e & reserved == 0)
}

/// Translates `gpa` through the 4-level EPT at `eptp` for a read (the hardware's
/// walk, SDM Vol. 3C §28.2.2, with entries decoded by [`EptFormat`]);
/// `read_entry(hpa)` reads the 8-byte entry at host-physical `hpa`. `None` if an
/// entry on the way is not readable. 1 GiB and 2 MiB leaves are followed.
pub fn ept_translate(eptp: u64, gpa: u64, read_entry: impl Fn(u64) -> u64) -> Option<u64> {
    let mut table = eptp & !0xFFF;
    for level in (1..=4u8).rev() {
        let shift = 12 + 9 * u32::from(level - 1);
        let entry = read_entry(table + ((gpa >> shift) & 0x1FF) * 8);
        // Permissions are the AND of every level's (§28.2.3): each must allow reads.
        if !EptFormat::leaf_access(entry).read {
            return None;
        }
        let addr = EptFormat::entry_addr(entry).as_u64();
        if EptFormat::is_leaf(entry, level) {
            let offset_mask = (1u64 << shift) - 1;
            return Some((addr & !offset_mask) | (gpa & offset_mask));
        }
        table = addr;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vmx::controls::{CrFixed, VmxMsrs};

    fn fixed() -> CrFixed {
        CrFixed::from_msrs(&VmxMsrs {
            cr0_fixed0: 0x8000_0021,
            cr0_fixed1: 0xFFFF_FFFF,
            cr4_fixed0: 0x2000,
            cr4_fixed1: 0x0037_27FF,
            ..VmxMsrs::default()
        })
    }

    /// The PVH start state: CR0 = PE|ET (NE forced), CR4 = 0 (VMXE forced), EFER 0.
    fn pvh() -> CrState {
        CrState {
            cr0: cr0::PE | cr0::ET | cr0::NE,
            cr0_shadow: cr0::PE | cr0::ET,
            cr4: cr4::VMXE,
            cr4_shadow: 0,
            cr3: 0,
            efer: 0,
            cs_long: false,
        }
    }

    #[test]
    fn guest_sees_its_own_values() {
        let f = fixed();
        let s = pvh();
        assert_eq!(s.guest_cr0(&f), cr0::PE | cr0::ET);
        assert_eq!(s.guest_cr4(&f), 0);
    }

    #[test]
    fn long_mode_activation_and_deactivation() {
        let f = fixed();
        let mut s = pvh();
        s.cr4 |= cr4::PAE;
        s.efer = efer::LME;
        s.cr3 = 0x20_0000;
        let u = write_cr0(&s, &f, cr0::PG | cr0::PE | cr0::ET).unwrap();
        assert_eq!(u.efer, efer::LME | efer::LMA);
        assert_eq!(u.cr0, cr0::PG | cr0::PE | cr0::ET | cr0::NE);
        assert_eq!(u.cr0_shadow, cr0::PG | cr0::PE | cr0::ET);
        assert!(!u.load_pdptes && u.flush_tlb);
        // Back out of long mode from compatibility mode.
        s.cr0 = u.cr0;
        s.cr0_shadow = u.cr0_shadow;
        s.efer = u.efer;
        let d = write_cr0(&s, &f, cr0::PE | cr0::ET).unwrap();
        assert_eq!(d.efer, efer::LME);
        // ...but not from 64-bit code.
        s.cs_long = true;
        assert_eq!(write_cr0(&s, &f, cr0::PE | cr0::ET), Err(GeneralProtection));
    }

    #[test]
    fn cr0_faults() {
        let f = fixed();
        let s = pvh();
        assert_eq!(write_cr0(&s, &f, cr0::PG), Err(GeneralProtection)); // PG without PE
        assert_eq!(write_cr0(&s, &f, cr0::PE | cr0::NW), Err(GeneralProtection));
        assert_eq!(write_cr0(&s, &f, 1 << 32 | cr0::PE), Err(GeneralProtection));
        // LME without PAE.
        let lme = CrState {
            efer: efer::LME,
            ..s
        };
        assert_eq!(
            write_cr0(&lme, &f, cr0::PE | cr0::PG),
            Err(GeneralProtection)
        );
        // Clearing NE is fine for the guest: the real bit stays on.
        let u = write_cr0(&s, &f, cr0::PE).unwrap();
        assert_eq!(u.cr0 & cr0::NE, cr0::NE);
        assert_eq!(u.cr0_shadow, cr0::PE);
    }

    #[test]
    fn cache_disable_stays_the_hosts() {
        let f = fixed();
        // The host runs with CD|NW set (Bochs): the guest sees its shadow, 0.
        let s = CrState {
            cr0: pvh().cr0 | cr0::CD | cr0::NW,
            ..pvh()
        };
        assert_eq!(s.guest_cr0(&f), cr0::PE | cr0::ET);
        // A guest setting CD changes only what it reads back.
        let host_clean = pvh();
        let u = write_cr0(&host_clean, &f, cr0::PE | cr0::ET | cr0::CD).unwrap();
        assert_eq!(u.cr0 & (cr0::CD | cr0::NW), 0);
        assert_eq!(u.cr0_shadow & cr0::CD, cr0::CD);
        let back = CrState {
            cr0: u.cr0,
            cr0_shadow: u.cr0_shadow,
            ..host_clean
        };
        assert_eq!(back.guest_cr0(&f), cr0::PE | cr0::ET | cr0::CD);
    }

    #[test]
    fn pae_paging_loads_pdptes_32bit_paging_does_not() {
        let f = fixed();
        let mut s = pvh();
        let u = write_cr0(&s, &f, cr0::PE | cr0::PG).unwrap();
        assert!(!u.load_pdptes);
        assert_eq!(u.efer, 0);
        s.cr4 |= cr4::PAE;
        assert!(write_cr0(&s, &f, cr0::PE | cr0::PG).unwrap().load_pdptes);
    }

    #[test]
    fn clts_and_lmsw() {
        let f = fixed();
        let s = CrState {
            cr0: pvh().cr0 | cr0::TS,
            cr0_shadow: pvh().cr0_shadow | cr0::TS,
            ..pvh()
        };
        assert_eq!(clts_value(&s, &f), cr0::PE | cr0::ET);
        // LMSW cannot clear PE but sets MP/TS.
        assert_eq!(
            lmsw_value(&s, &f, 0b1010),
            cr0::PE | cr0::ET | cr0::MP | cr0::TS
        );
    }

    #[test]
    fn cr4_rules() {
        let f = fixed();
        let s = pvh();
        assert_eq!(write_cr4(&s, &f, cr4::VMXE), Err(GeneralProtection));
        assert_eq!(write_cr4(&s, &f, 1 << 30), Err(GeneralProtection)); // not in FIXED1
        let u = write_cr4(&s, &f, cr4::PAE | cr4::PSE).unwrap();
        assert_eq!(u.cr4, cr4::PAE | cr4::PSE | cr4::VMXE);
        assert_eq!(u.cr4_shadow, cr4::PAE | cr4::PSE);
        assert!(!u.load_pdptes);
        let long = CrState {
            efer: efer::LME | efer::LMA,
            cr4: cr4::PAE | cr4::VMXE,
            cr4_shadow: cr4::PAE,
            ..s
        };
        assert_eq!(write_cr4(&long, &f, 0), Err(GeneralProtection));
        assert!(write_cr4(&long, &f, cr4::PAE | cr4::PCIDE).is_ok());
        let dirty_cr3 = CrState {
            cr3: 0x1001,
            ..long
        };
        assert_eq!(
            write_cr4(&dirty_cr3, &f, cr4::PAE | cr4::PCIDE),
            Err(GeneralProtection)
        );
    }

    #[test]
    fn whole_state_loads() {
        let f = fixed();
        // The PVH start: what `new` wrote before contexts existed.
        let u = load(&f, 0, cr0::PE | cr0::ET, 0, 0).unwrap();
        assert_eq!((u.cr0, u.cr0_shadow), (pvh().cr0, pvh().cr0_shadow));
        assert_eq!((u.cr4, u.cr4_shadow, u.efer), (cr4::VMXE, 0, 0));
        assert!(!u.load_pdptes && u.flush_tlb);
        // A SIPI: real mode. PE is free with unrestricted guest; NE stays forced.
        let u = load(&f, pvh().cr0, cr0::ET, 0, 0).unwrap();
        assert_eq!(u.cr0, cr0::ET | cr0::NE);
        assert_eq!(u.cr0_shadow, cr0::ET);
        // The host's CD/NW stay in the real register, the guest's in the shadow.
        let u = load(&f, pvh().cr0 | cr0::CD | cr0::NW, cr0::PE | cr0::ET, 0, 0).unwrap();
        assert_eq!(u.cr0 & (cr0::CD | cr0::NW), cr0::CD | cr0::NW);
        assert_eq!(u.cr0_shadow, cr0::PE | cr0::ET);
        let u = load(&f, 0, cr0::PE | cr0::CD, 0, 0).unwrap();
        assert_eq!((u.cr0 & cr0::CD, u.cr0_shadow & cr0::CD), (0, cr0::CD));
        // Long mode: LMA from LME and PG; no PDPTEs.
        let long = cr0::PE | cr0::PG | cr0::ET;
        let u = load(&f, 0, long, cr4::PAE, efer::LME).unwrap();
        assert_eq!(u.efer, efer::LME | efer::LMA);
        assert!(!u.load_pdptes);
        let u = load(&f, 0, cr0::PE, 0, efer::LME | efer::LMA).unwrap();
        assert_eq!(u.efer, efer::LME);
        // PAE paging outside long mode loads the PDPTEs.
        assert!(load(&f, 0, long, cr4::PAE, 0).unwrap().load_pdptes);
        assert!(!load(&f, 0, long, 0, 0).unwrap().load_pdptes);
    }

    #[test]
    fn whole_state_loads_refuse_what_vmx_does_not_allow() {
        let f = fixed();
        assert_eq!(
            load(&f, 0, cr0::PE, cr4::VMXE, 0),
            Err(LoadContextError::Cr4Unsupported {
                rejected: cr4::VMXE
            })
        );
        // Not in FIXED1 (0x0037_27FF).
        assert_eq!(
            load(&f, 0, cr0::PE, 1 << 22 | cr4::PAE, 0),
            Err(LoadContextError::Cr4Unsupported { rejected: 1 << 22 })
        );
        let narrow = CrFixed {
            cr0_allowed: f.cr0_allowed & !cr0::WP,
            ..f
        };
        assert_eq!(
            load(&narrow, 0, cr0::PE | cr0::WP, 0, 0),
            Err(LoadContextError::Cr0Unsupported { rejected: cr0::WP })
        );
    }

    #[test]
    fn pdpte_validation() {
        assert!(pdptes_valid(&[0, 0, 0, 0], 39));
        assert!(pdptes_valid(
            &[0x1001, 0x2001, 0, 0xFFFF_FFFF_FFFF_FFFE],
            39
        ));
        assert!(!pdptes_valid(&[0x1003, 0, 0, 0], 39)); // R/W is reserved in a PDPTE
        assert!(!pdptes_valid(&[1 << 40 | 1, 0, 0, 0], 39));
        assert!(pdptes_valid(&[1 << 40 | 1, 0, 0, 0], 46));
    }

    #[test]
    fn ept_walk() {
        use std::collections::HashMap;
        let mut mem = HashMap::new();
        // PML4 at 0x1000 -> PDPT at 0x2000 -> PD at 0x3000 -> PT at 0x4000 -> 0x9000.
        mem.insert(0x1000, 0x2007);
        mem.insert(0x2000, 0x3007);
        mem.insert(0x3000 + 8, 0x4007); // GPA 2 MiB..4 MiB via a PT
        mem.insert(0x4000 + 3 * 8, 0x9007);
        mem.insert(0x3000 + 2 * 8, 0x4060_0000 | 0x87); // GPA 4 MiB: a 2 MiB leaf
        mem.insert(0x2000 + 8, 0x8000_0000 | 0x87); // GPA 1 GiB: a 1 GiB leaf
        let read = |a: u64| mem.get(&a).copied().unwrap_or(0);
        let eptp = 0x1000 | 6 | 3 << 3;
        assert_eq!(ept_translate(eptp, 0x20_3123, read), Some(0x9123));
        assert_eq!(ept_translate(eptp, 0x41_2345, read), Some(0x4061_2345));
        assert_eq!(ept_translate(eptp, 0x4000_0010, read), Some(0x8000_0010));
        assert_eq!(ept_translate(eptp, 0x20_4000, read), None);
        assert_eq!(ept_translate(eptp, 0x1_0000_0000, read), None);
    }
}
