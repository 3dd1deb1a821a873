//! Reading the PV `struct start_info` (`xen.h`) into an owned value.
//!
//! The entry's `rsi` holds the structure's *virtual* address, inside the bootstrap
//! region the domain builder mapped (xen.h, "Start-of-day memory layout"). It is
//! copied once, as bytes, and decoded field by field (offsets in
//! [`keel_hypercall::abi::start_info::StartInfo`]); the addresses it holds are only compared and
//! printed here, never followed, except by the checks that exist to follow them
//! ([`super::probe`]).
//!
//! Before reading, the address is checked for what the layout promises (page-aligned,
//! past the end of the kernel image): a builder that passes something else gets a
//! line saying so instead of a fault the guest could not report.

use keel_hypercall::abi::start_info::{
    ConsoleDom0, ConsoleDomU, MAX_GUEST_CMDLINE, StartInfo as XenStartInfo,
};

/// What the guest keeps of `struct start_info`.
pub struct StartInfo {
    /// Its virtual address (`rsi` at entry).
    pub va: u64,
    /// `magic`, NUL-padded.
    pub magic: [u8; 32],
    /// `nr_pages`.
    pub nr_pages: u64,
    /// `shared_info` (a machine address).
    pub shared_info: u64,
    /// `flags` (`SIF_*`).
    pub flags: u32,
    /// `store_mfn`.
    pub store_mfn: u64,
    /// `store_evtchn`.
    pub store_evtchn: u32,
    /// `console.dom0.info_off` (the same bytes as the low half of `console.domU.mfn`).
    pub console_info_off: u32,
    /// `console.dom0.info_size`.
    pub console_info_size: u32,
    /// `console.domU.mfn` (the same bytes as the two fields above).
    pub console_mfn: u64,
    /// `console.domU.evtchn`.
    pub console_evtchn: u32,
    /// `pt_base` (virtual).
    pub pt_base: u64,
    /// `nr_pt_frames`.
    pub nr_pt_frames: u64,
    /// `mfn_list` (virtual).
    pub mfn_list: u64,
    /// `mod_start`.
    pub mod_start: u64,
    /// `mod_len`.
    pub mod_len: u64,
    /// `cmd_line`, all of it.
    pub cmd_line: [u8; MAX_GUEST_CMDLINE],
    /// `first_p2m_pfn`.
    pub first_p2m_pfn: u64,
    /// `nr_p2m_frames`.
    pub nr_p2m_frames: u64,
}

/// Why the structure was not read.
#[derive(Clone, Copy, Debug)]
pub enum Unreadable {
    /// The address is not 4 KiB-aligned.
    Misaligned,
    /// The address lies below the end of the kernel image (the layout puts the
    /// start info after the image and the p2m list).
    InsideImage,
    /// The structure would run past the end of the address space.
    Wraps,
}

/// Reads the structure at virtual address `va`, whose end of image is `image_end`.
pub fn read(va: u64, image_end: u64) -> Result<StartInfo, Unreadable> {
    if !va.is_multiple_of(4096) {
        return Err(Unreadable::Misaligned);
    }
    if va < image_end {
        return Err(Unreadable::InsideImage);
    }
    if va.checked_add(XenStartInfo::SIZE as u64).is_none() {
        return Err(Unreadable::Wraps);
    }
    let mut raw = [0u8; XenStartInfo::SIZE];
    for (i, b) in raw.iter_mut().enumerate() {
        // SAFETY: the builder maps the start info page (1168 bytes, inside one
        // page: `va` is page-aligned) read-write for the guest; a byte read has no
        // side effects. A builder that lied makes this fault, which without a trap
        // table crashes the domain: the test then misses the guest's lines.
        *b = unsafe { core::ptr::read_volatile((va as usize + i) as *const u8) };
    }
    let si = XenStartInfo::from_bytes(&raw);
    // The console union: Dom0's info (offset, size) or a domU's ring (mfn, port).
    let dom0 = ConsoleDom0::from_bytes(&si.console);
    let domu = ConsoleDomU::from_bytes(&si.console);
    Ok(StartInfo {
        va,
        magic: si.magic,
        nr_pages: si.nr_pages,
        shared_info: si.shared_info,
        flags: si.flags,
        store_mfn: si.store_mfn,
        store_evtchn: si.store_evtchn,
        console_info_off: dom0.info_off,
        console_info_size: dom0.info_size,
        console_mfn: domu.mfn,
        console_evtchn: domu.evtchn,
        pt_base: si.pt_base,
        nr_pt_frames: si.nr_pt_frames,
        mfn_list: si.mfn_list,
        mod_start: si.mod_start,
        mod_len: si.mod_len,
        cmd_line: si.cmd_line,
        first_p2m_pfn: si.first_p2m_pfn,
        nr_p2m_frames: si.nr_p2m_frames,
    })
}

/// `bytes` up to its first NUL (all of it if there is none).
fn until_nul(bytes: &[u8]) -> &[u8] {
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    &bytes[..end]
}

impl StartInfo {
    /// The magic up to its first NUL.
    pub fn magic(&self) -> &[u8] {
        until_nul(&self.magic)
    }

    /// The command line up to its first NUL.
    pub fn cmdline(&self) -> &[u8] {
        until_nul(&self.cmd_line)
    }

    /// Whether the command line has a NUL within its 1024 bytes.
    pub fn cmdline_terminated(&self) -> bool {
        self.cmd_line.contains(&0)
    }
}
