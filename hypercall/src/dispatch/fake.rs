//! A fake domain for host tests: a flat guest address space backed by a
//! `Vec<u8>`, with ranges that fault on any access or on writes, and a
//! record of every side effect.

use core::ops::Range;

use super::{Domain, VersionInfo};
use crate::abi::Errno;
use crate::abi::domid::DomId;
use crate::abi::hvm::HVM_NR_PARAMS;
use crate::abi::memory::E820Entry;

/// Where the fake address space starts; below it everything faults, so a
/// NULL pointer is `-EFAULT`.
pub const BASE: u64 = 0x1000;
/// Size of the fake address space.
pub const SIZE: usize = 96 * 1024;
/// One past its end.
pub const END: u64 = BASE + SIZE as u64;

pub struct FakeDomain {
    pub domid: DomId,
    pub privileged: bool,
    pub console: bool,
    pub mem: Vec<u8>,
    /// Inaccessible ranges inside `[BASE, END)`.
    pub faults: Vec<Range<u64>>,
    /// Readable but not writable ranges.
    pub read_only: Vec<Range<u64>>,
    /// Every `console_write`, in order.
    pub console_out: Vec<Vec<u8>>,
    pub shared_info_gpfn: Option<u64>,
    pub map_shared_info_err: Option<Errno>,
    pub params: [u64; HVM_NR_PARAMS as usize],
    pub set_param_err: Option<Errno>,
    pub e820: Vec<E820Entry>,
    pub extraversion: Vec<u8>,
    pub capabilities: Vec<u8>,
    pub changeset: Vec<u8>,
    pub commandline: Vec<u8>,
    pub build_id: Vec<u8>,
    pub features: [u32; 1],
    pub handle: [u8; 16],
}

impl FakeDomain {
    pub fn new(domid: DomId, privileged: bool) -> FakeDomain {
        FakeDomain {
            domid,
            privileged,
            console: false,
            // A recognisable fill, so tests can tell untouched bytes.
            mem: vec![0xAA; SIZE],
            faults: Vec::new(),
            read_only: Vec::new(),
            console_out: Vec::new(),
            shared_info_gpfn: None,
            map_shared_info_err: None,
            params: [0; HVM_NR_PARAMS as usize],
            set_param_err: None,
            e820: vec![
                E820Entry {
                    addr: 0,
                    size: 0x9_f000,
                    type_: 1,
                },
                E820Entry {
                    addr: 0xf_0000,
                    size: 0x1_0000,
                    type_: 2,
                },
                E820Entry {
                    addr: 0x10_0000,
                    size: 0x3ff0_0000,
                    type_: 1,
                },
            ],
            extraversion: b".0-keel".to_vec(),
            capabilities: b"hvm-3.0-x86_32 hvm-3.0-x86_64".to_vec(),
            changeset: b"keel 0123456789abcdef".to_vec(),
            commandline: b"console=com1 loglvl=all".to_vec(),
            build_id: Vec::new(),
            features: [0x0000_0304],
            handle: [0; 16],
        }
    }

    fn accessible(&self, gva: u64, len: usize, write: bool) -> bool {
        let Some(end) = gva.checked_add(len as u64) else {
            return false;
        };
        if gva < BASE || end > END {
            return false;
        }
        let hits = |r: &Range<u64>| gva < r.end && r.start < end;
        !self.faults.iter().any(hits) && !(write && self.read_only.iter().any(hits))
    }

    fn idx(gva: u64) -> usize {
        (gva - BASE) as usize
    }

    /// Test helper: bytes at `gva`.
    pub fn peek(&self, gva: u64, len: usize) -> &[u8] {
        &self.mem[Self::idx(gva)..Self::idx(gva) + len]
    }

    /// Test helper: store bytes at `gva` regardless of faults.
    pub fn poke(&mut self, gva: u64, data: &[u8]) {
        let i = Self::idx(gva);
        self.mem[i..i + data.len()].copy_from_slice(data);
    }

    /// All console output, concatenated.
    pub fn console_text(&self) -> Vec<u8> {
        self.console_out.concat()
    }
}

impl Domain for FakeDomain {
    fn domid(&self) -> DomId {
        self.domid
    }
    fn is_privileged(&self) -> bool {
        self.privileged
    }
    fn is_console(&self) -> bool {
        self.console
    }
    fn copy_from_guest(&mut self, gva: u64, buf: &mut [u8]) -> Result<(), Errno> {
        if !self.accessible(gva, buf.len(), false) {
            return Err(Errno::EFAULT);
        }
        buf.copy_from_slice(self.peek(gva, buf.len()));
        Ok(())
    }
    fn copy_to_guest(&mut self, gva: u64, data: &[u8]) -> Result<(), Errno> {
        if !self.accessible(gva, data.len(), true) {
            return Err(Errno::EFAULT);
        }
        self.poke(gva, data);
        Ok(())
    }
    fn console_write(&mut self, bytes: &[u8]) {
        self.console_out.push(bytes.to_vec());
    }
    fn map_shared_info(&mut self, gpfn: u64) -> Result<(), Errno> {
        if let Some(e) = self.map_shared_info_err {
            return Err(e);
        }
        self.shared_info_gpfn = Some(gpfn);
        Ok(())
    }
    fn memory_map_entry(&self, index: u32) -> Option<E820Entry> {
        self.e820.get(index as usize).copied()
    }
    fn get_hvm_param(&self, index: u32) -> Result<u64, Errno> {
        Ok(self.params[index as usize])
    }
    fn set_hvm_param(&mut self, index: u32, value: u64) -> Result<(), Errno> {
        if let Some(e) = self.set_param_err {
            return Err(e);
        }
        self.params[index as usize] = value;
        Ok(())
    }
    fn version(&self) -> VersionInfo<'_> {
        VersionInfo {
            major: 4,
            minor: 19,
            extraversion: &self.extraversion,
            compiler: b"rustc 1.x nightly",
            compile_by: b"keel",
            compile_domain: b"example.org",
            compile_date: b"2026-01-01",
            capabilities: &self.capabilities,
            changeset: &self.changeset,
            commandline: &self.commandline,
            build_id: &self.build_id,
            features: self.features,
            handle: self.handle,
        }
    }
}
