//! keel's side of the hypercall dispatcher: `keel_hypercall::Domain` for a running
//! domain. Guest pointers become memory only through the domain's checked copies
//! (its page tables, then its p2m); any failure is -EFAULT to the guest.

use keel_hypercall::abi::Errno;
use keel_hypercall::abi::hvm::HVM_NR_PARAMS;
use keel_hypercall::abi::memory::E820Entry;
use keel_hypercall::dispatch::{Domain as HcDomain, VersionInfo};
use keel_mm::addr::Gfn;
use keel_mm::p2m::Access;

use crate::domain::Domain;

/// The capabilities keel reports (XENVER_capabilities): HVM-style guests, 32 and
/// 64-bit, which is what PVH guests look for.
const CAPABILITIES: &[u8] = b"hvm-3.0-x86_32 hvm-3.0-x86_32p hvm-3.0-x86_64";

/// The hypercall context: the calling domain.
pub struct Ctx<'a> {
    pub d: &'a mut Domain,
}

impl HcDomain for Ctx<'_> {
    fn domid(&self) -> u16 {
        self.d.id
    }

    fn is_privileged(&self) -> bool {
        self.d.privileged
    }

    fn copy_from_guest(&mut self, gva: u64, buf: &mut [u8]) -> Result<(), Errno> {
        self.d.copy_from_guest(gva, buf).map_err(|e| {
            log::debug!(
                "d{}: copy_from_guest {gva:#x}+{}: {e}",
                self.d.id,
                buf.len()
            );
            Errno::EFAULT
        })
    }

    fn copy_to_guest(&mut self, gva: u64, data: &[u8]) -> Result<(), Errno> {
        let id = self.d.id;
        self.d.copy_to_guest(gva, data).map_err(|e| {
            log::debug!("d{id}: copy_to_guest {gva:#x}+{}: {e}", data.len());
            Errno::EFAULT
        })
    }

    fn console_write(&mut self, bytes: &[u8]) {
        let id = self.d.id;
        self.d.console.push(id, bytes);
    }

    fn map_shared_info(&mut self, gpfn: u64) -> Result<(), Errno> {
        let gfn = Gfn::new(gpfn).ok_or(Errno::EINVAL)?;
        if gpfn >= self.d.ram_bytes / 4096 + 0x10_0000 {
            // Far beyond RAM: refuse rather than grow tables for a hostile gfn.
            return Err(Errno::EINVAL);
        }
        if let Some(old) = self.d.shared_info_gfn.take()
            && old != gfn
        {
            // shared_info moves: the old gfn becomes a hole, as in Xen.
            let _ = self.d.p2m.set_entry(old, None);
        }
        // The RAM frame that was at gpfn stays owned by the domain (freed when it
        // dies); the guest gave it up by asking for shared_info there.
        self.d
            .p2m
            .set_entry(gfn, Some((self.d.shared_info, Access::RW)))
            .map_err(|e| {
                log::warn!("d{}: shared_info at gfn {gpfn:#x}: {e}", self.d.id);
                Errno::EINVAL
            })?;
        self.d.shared_info_gfn = Some(gfn);
        keel_arch::hvm::HvmVcpu::flush_guest_tlb(&mut self.d.vcpu);
        Ok(())
    }

    fn memory_map_entry(&self, index: u32) -> Option<E820Entry> {
        self.d.memmap.get(index as usize).copied()
    }

    fn get_hvm_param(&self, index: u32) -> Result<u64, Errno> {
        self.d
            .hvm_params
            .get(index as usize)
            .copied()
            .ok_or(Errno::EINVAL)
    }

    fn set_hvm_param(&mut self, index: u32, value: u64) -> Result<(), Errno> {
        if index >= HVM_NR_PARAMS {
            return Err(Errno::EINVAL);
        }
        // Stored for the guest to read back; nothing acts on them until event
        // channels exist (issue #4).
        self.d.hvm_params[index as usize] = value;
        Ok(())
    }

    fn version(&self) -> VersionInfo<'_> {
        VersionInfo {
            major: crate::XEN_MAJOR,
            minor: crate::XEN_MINOR,
            extraversion: b".0-keel",
            compiler: b"rustc",
            compile_by: b"keel",
            compile_domain: b"keel",
            compile_date: b"",
            capabilities: CAPABILITIES,
            changeset: concat!("keel ", env!("CARGO_PKG_VERSION")).as_bytes(),
            commandline: crate::hypervisor_cmdline().as_bytes(),
            build_id: b"",
            features: [features(self.d.privileged)],
            handle: Default::default(),
        }
    }
}

/// XENVER_get_features submap 0 for PVH guests (Xen's HVM set, minus what keel
/// does not do yet): an auto-translated physmap, supervisor mode kernel,
/// HVM callback vector, and XENFEAT_dom0 for the hardware domain.
fn features(privileged: bool) -> u32 {
    use keel_hypercall::abi::features::*;
    (u32::from(privileged) << XENFEAT_DOM0)
        | (1 << XENFEAT_WRITABLE_PAGE_TABLES)
        | (1 << XENFEAT_WRITABLE_DESCRIPTOR_TABLES)
        | (1 << XENFEAT_AUTO_TRANSLATED_PHYSMAP)
        | (1 << XENFEAT_SUPERVISOR_MODE_KERNEL)
        | (1 << XENFEAT_HVM_CALLBACK_VECTOR)
}
