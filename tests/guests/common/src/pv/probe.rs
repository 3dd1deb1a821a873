//! pv64's `mode=probe`: what the domain builder handed over, checked against Xen's
//! start-of-day ABI, one line per check (`<name>: ok` / `<name>: FAIL <why>`).
//!
//! The expectations are the documented ABI (`xen.h` "Start-of-day memory layout",
//! `xen-x86_64.h`) and, where that leaves room, what Xen 4.17's Dom0 builder does
//! (`xen/arch/x86/pv/dom0_build.c`), named as such. The checks, in order:
//!
//! | check | expects |
//! |---|---|
//! | `start_info magic` | `xen-3.0-x86_64`, or that with `p` (Xen's Dom0 builder, PAE_MODE note), NUL-padded |
//! | `start_info flags` | `SIF_PRIVILEGED` and `SIF_INITDOMAIN` (the guest runs as Dom0) |
//! | `nr_pages` | equals `pages=N` from the command line if given, else non-zero |
//! | `shared_info` | a non-zero, page-aligned machine address |
//! | `no xenstore or console ring for dom0` | `store_mfn`, `store_evtchn` 0 |
//! | `dom0 console info` | none, or inside the start info page after the structure |
//! | `cmd_line NUL-terminated` | within its 1024 bytes |
//! | `no initial ramdisk` | `mod_start`, `mod_len` 0 (the tests boot none) |
//! | `no relocated p2m` | `nr_p2m_frames` 0 (no `XEN_ELFNOTE_INIT_P2M`) |
//! | `nr_pages covers the bootstrap region` | at least the pages from VIRT_BASE to the boot stack's top |
//! | `mfn_list follows the image` | page-aligned, at or above the image's (page-rounded) end |
//! | `start_info follows the p2m list` | at or after `mfn_list + 8 * nr_pages` |
//! | `p2m entries` | none 0 or `INVALID_MFN` |
//! | `pt_base follows start_info` | page-aligned, after the start info page |
//! | `nr_pt_frames` | at least 4 (L4, L3, L2, L1) |
//! | `L4 maps the kernel` | the L4 at `pt_base` has its slot for the image present |
//! | `boot stack follows the page tables` | `rsp` at entry page-aligned, above `pt_base + 4096 * nr_pt_frames` |
//! | `512 KiB mapped past the boot stack` | every page there readable (a fault crashes the domain) |
//! | `code and stack selectors` | `FLAT_KERNEL_CS`, `FLAT_KERNEL_SS`: ring 3 |
//! | `data selectors null` | DS, ES, FS, GS = `FLAT_KERNEL_DS` (0) |
//! | `xen_version version` | at least 3.0 (`major << 16 \| minor`) |
//! | `xen_version extraversion` | 0, a NUL-terminated string written to a guest-virtual buffer |
//!
//! The harness keeps the same list (`keel_tests::guests::PV64_PROBE_CHECKS`), in
//! this order: a check added here goes there too.
//!
//! `info:` lines show the layout (image, p2m, start info, page tables, stack) and the
//! values worth seeing. A check that faults (a reference to memory the builder
//! should have mapped and did not) crashes the domain: there is no trap table
//! yet, so the test sees the missing `ok` line and Xen's (or keel's) crash line.

use keel_hypercall::abi::start_info::{
    FLAT_KERNEL_CS, FLAT_KERNEL_DS, FLAT_KERNEL_SS, MAX_GUEST_CMDLINE, SIF_INITDOMAIN,
    SIF_PRIVILEGED, START_INFO_MAGIC_X86_64 as MAGIC_X86_64, StartInfo as XenStartInfo,
};
use keel_hypercall::abi::version::{XEN_EXTRAVERSION_LEN, XENVER_EXTRAVERSION, XENVER_VERSION};

use super::Layout;
use super::start_info::StartInfo;
use crate::checks::{Checks, Rc};
use crate::console::Escaped;
use crate::paging::Page;
use crate::{arch, cmdline, hypercall};

const PAGE: u64 = 4096;

/// A frame number no page has (all ones): never a valid p2m entry (Linux's
/// `INVALID_P2M_ENTRY`, Xen's `INVALID_MFN`).
const INVALID_MFN: u64 = u64::MAX;

/// How far past the boot stack the layout guarantees mappings (xen.h, item 7).
const PADDING_AFTER_BOOT: u64 = 512 * 1024;

/// A buffer hypercalls write into (guest-virtual: in PV every hypercall pointer is).
static SCRATCH: Page = Page::new();

/// Runs every check.
pub fn run(si: &StartInfo, layout: &Layout) {
    let c = Checks::new("", "");
    layout_info(&c, si, layout);
    field_checks(&c, si);
    region_checks(&c, si, layout);
    selector_checks(&c);
    version_checks(&c);
}

fn round_up(x: u64) -> u64 {
    x.div_ceil(PAGE) * PAGE
}

fn layout_info(c: &Checks, si: &StartInfo, layout: &Layout) {
    c.info(format_args!(
        "VIRT_BASE {:#x}, image {:#x}-{:#x} (pfn {:#x}), entry rsp {:#x}",
        layout.virt_base,
        layout.image_start,
        layout.image_end,
        layout.image_start.wrapping_sub(layout.virt_base) / PAGE,
        layout.boot_rsp
    ));
    c.info(format_args!(
        "p2m list {:#x} ({} pages), start_info {:#x}, page tables {:#x} ({} frames)",
        si.mfn_list, si.nr_pages, si.va, si.pt_base, si.nr_pt_frames
    ));
    c.info(format_args!(
        "shared_info maddr {:#x}, flags {:#x}, first_p2m_pfn {:#x}, nr_p2m_frames {}",
        si.shared_info, si.flags, si.first_p2m_pfn, si.nr_p2m_frames
    ));
}

/// The fields that are values, not places.
fn field_checks(c: &Checks, si: &StartInfo) {
    let magic = si.magic();
    let suffix_ok = magic
        .strip_prefix(MAGIC_X86_64)
        .is_some_and(|rest| rest.is_empty() || rest == b"p");
    let padded = si.magic[magic.len()..].iter().all(|&b| b == 0);
    c.info(format_args!("magic \"{}\"", Escaped(magic)));
    c.check(
        "start_info magic",
        suffix_ok && padded,
        format_args!(
            "\"{}\" (NUL-padded: {}), expected \"xen-3.0-x86_64\" or \"xen-3.0-x86_64p\"",
            Escaped(magic),
            padded
        ),
    );

    let want = SIF_PRIVILEGED | SIF_INITDOMAIN;
    c.check(
        "start_info flags",
        si.flags & want == want,
        format_args!(
            "{:#x}, expected SIF_PRIVILEGED|SIF_INITDOMAIN ({want:#x}) set",
            si.flags
        ),
    );

    match cmdline::get(si.cmdline(), "pages").map(cmdline::number) {
        Some(Some(n)) => {
            c.check(
                "nr_pages",
                si.nr_pages == u64::from(n),
                format_args!("{}, the command line says {}", si.nr_pages, n),
            );
        }
        Some(None) => c.fail("nr_pages", format_args!("pages= is not a number")),
        None => {
            c.check("nr_pages", si.nr_pages > 0, format_args!("0 pages"));
        }
    }

    c.check(
        "shared_info",
        si.shared_info != 0 && si.shared_info.is_multiple_of(PAGE),
        format_args!("machine address {:#x}", si.shared_info),
    );

    c.check(
        "no xenstore or console ring for dom0",
        si.store_mfn == 0 && si.store_evtchn == 0,
        format_args!(
            "store_mfn {:#x}, store_evtchn {}",
            si.store_mfn, si.store_evtchn
        ),
    );

    // Xen puts a `dom0_vga_console_info` right after the structure when it has a
    // VGA console to describe (dom0_build.c, `fill_console_start_info`).
    let (info_off, info_size) = (
        u64::from(si.console_info_off),
        u64::from(si.console_info_size),
    );
    c.info(format_args!(
        "console.dom0 info_off {info_off}, info_size {info_size}"
    ));
    c.check(
        "dom0 console info",
        (info_off == 0 && info_size == 0)
            || (info_off >= XenStartInfo::SIZE as u64 && info_off + info_size <= PAGE),
        format_args!("info_off {info_off}, info_size {info_size}: not inside the start info page"),
    );

    c.check(
        "cmd_line NUL-terminated",
        si.cmdline_terminated(),
        format_args!("no NUL in its {} bytes", MAX_GUEST_CMDLINE),
    );

    c.check(
        "no initial ramdisk",
        si.mod_start == 0 && si.mod_len == 0,
        format_args!("mod_start {:#x}, mod_len {:#x}", si.mod_start, si.mod_len),
    );

    c.check(
        "no relocated p2m",
        si.nr_p2m_frames == 0,
        format_args!(
            "nr_p2m_frames {} (first_p2m_pfn {:#x}) without an INIT_P2M note",
            si.nr_p2m_frames, si.first_p2m_pfn
        ),
    );
}

/// The bootstrap region: its elements in the documented order, each mapped.
fn region_checks(c: &Checks, si: &StartInfo, layout: &Layout) {
    // The pages from VIRT_BASE to the top of the boot stack are the first
    // pseudo-physical pages (xen.h item 5), all allocated to the domain.
    let region_pages = layout.boot_rsp.saturating_sub(layout.virt_base) / PAGE;
    if region_pages > si.nr_pages {
        c.fail(
            "nr_pages covers the bootstrap region",
            format_args!(
                "{} pages, the region up to the boot stack has {}",
                si.nr_pages, region_pages
            ),
        );
    } else {
        c.ok("nr_pages covers the bootstrap region");
    }

    let image_end = round_up(layout.image_end);
    let p2m_ok = si.mfn_list.is_multiple_of(PAGE) && si.mfn_list >= image_end;
    c.check(
        "mfn_list follows the image",
        p2m_ok,
        format_args!(
            "mfn_list {:#x}, image ends at {:#x}",
            si.mfn_list, image_end
        ),
    );

    let p2m_end = si
        .nr_pages
        .checked_mul(8)
        .and_then(|bytes| si.mfn_list.checked_add(bytes));
    match p2m_end {
        Some(end) if p2m_ok && end <= si.va => {
            c.ok("start_info follows the p2m list");
            p2m_entry_check(c, si);
        }
        _ => c.fail(
            "start_info follows the p2m list",
            format_args!(
                "start_info {:#x}, p2m list {:#x} + 8 * {} pages",
                si.va, si.mfn_list, si.nr_pages
            ),
        ),
    }

    let pt_ok = si.pt_base.is_multiple_of(PAGE) && si.pt_base >= si.va + PAGE;
    c.check(
        "pt_base follows start_info",
        pt_ok,
        format_args!("pt_base {:#x}, start_info {:#x}", si.pt_base, si.va),
    );
    c.check(
        "nr_pt_frames",
        si.nr_pt_frames >= 4,
        format_args!("{}, expected at least 4 (L4, L3, L2, L1)", si.nr_pt_frames),
    );
    if pt_ok {
        // The L4 is mapped (read-only) like every bootstrap element.
        let slot = (layout.image_start >> 39) & 511;
        // SAFETY: `pt_base` is page-aligned and past the start info page, in the
        // bootstrap region, which the builder maps for reading; slot < 512.
        let l4e =
            unsafe { core::ptr::read_volatile((si.pt_base + slot * 8) as usize as *const u64) };
        c.check(
            "L4 maps the kernel",
            l4e & 1 == 1,
            format_args!("L4[{slot}] = {l4e:#x}, not present"),
        );
    }

    let pt_end = si
        .nr_pt_frames
        .checked_mul(PAGE)
        .and_then(|bytes| si.pt_base.checked_add(bytes));
    let stack_ok =
        layout.boot_rsp.is_multiple_of(PAGE) && pt_end.is_some_and(|end| layout.boot_rsp > end);
    c.check(
        "boot stack follows the page tables",
        stack_ok,
        format_args!(
            "rsp {:#x} at entry, page tables {:#x} + {} frames",
            layout.boot_rsp, si.pt_base, si.nr_pt_frames
        ),
    );
    if stack_ok {
        let mut sum = 0u64;
        let mut at = layout.boot_rsp;
        while at < layout.boot_rsp + PADDING_AFTER_BOOT {
            // SAFETY: xen.h (item 7) guarantees 512 KiB of mapped padding after
            // the last bootstrap element, the boot stack; reading RAM has no side
            // effects, and nothing of Rust's lives there (the guest runs on its
            // own stack, in .bss).
            sum = sum.wrapping_add(u64::from(unsafe {
                core::ptr::read_volatile(at as usize as *const u8)
            }));
            at += PAGE;
        }
        c.info(format_args!("byte sum of the padding's first bytes {sum}"));
        c.ok("512 KiB mapped past the boot stack");
    }
}

/// Every p2m entry names a frame (the caller checked the list's place).
fn p2m_entry_check(c: &Checks, si: &StartInfo) {
    let mut bad = None;
    for pfn in 0..si.nr_pages {
        // SAFETY: the list is `nr_pages` u64s at `mfn_list`, page-aligned, inside
        // the bootstrap region (checked: between the image and the start info),
        // which the builder maps.
        let mfn =
            unsafe { core::ptr::read_volatile((si.mfn_list + pfn * 8) as usize as *const u64) };
        if pfn < 2 || pfn + 1 == si.nr_pages {
            c.info(format_args!("p2m[{pfn:#x}] = {mfn:#x}"));
        }
        if (mfn == 0 || mfn == INVALID_MFN) && bad.is_none() {
            bad = Some((pfn, mfn));
        }
    }
    match bad {
        None => c.ok("p2m entries"),
        Some((pfn, mfn)) => c.fail("p2m entries", format_args!("p2m[{pfn:#x}] = {mfn:#x}")),
    }
}

fn selector_checks(c: &Checks) {
    let (cs, ss) = (arch::read_cs(), arch::read_ss());
    c.check(
        "code and stack selectors",
        cs == FLAT_KERNEL_CS && ss == FLAT_KERNEL_SS,
        format_args!(
            "cs {cs:#x}, ss {ss:#x}, expected FLAT_KERNEL_CS {FLAT_KERNEL_CS:#x}, FLAT_KERNEL_SS {FLAT_KERNEL_SS:#x}"
        ),
    );
    let [ds, es, fs, gs] = arch::read_data_selectors();
    c.check(
        "data selectors null",
        [ds, es, fs, gs] == [FLAT_KERNEL_DS; 4],
        format_args!("ds {ds:#x}, es {es:#x}, fs {fs:#x}, gs {gs:#x}"),
    );
}

fn version_checks(c: &Checks) {
    let v = hypercall::xen_version(XENVER_VERSION, 0);
    c.info(format_args!("Xen {}.{}", (v >> 16) & 0xffff, v & 0xffff));
    c.check(
        "xen_version version",
        v >= 0x3_0000,
        format_args!("returned {}, expected 3.0 or later", Rc(v)),
    );

    SCRATCH.fill(0, XEN_EXTRAVERSION_LEN, 0xFF);
    let rc = hypercall::xen_version(XENVER_EXTRAVERSION, SCRATCH.addr());
    let mut extra = [0u8; XEN_EXTRAVERSION_LEN];
    SCRATCH.read(0, &mut extra);
    match (rc, extra.iter().position(|&b| b == 0)) {
        (0, Some(n)) => {
            c.info(format_args!("extraversion \"{}\"", Escaped(&extra[..n])));
            c.ok("xen_version extraversion");
        }
        (rc, nul) => c.fail(
            "xen_version extraversion",
            format_args!("returned {}, NUL-terminated: {}", Rc(rc), nul.is_some()),
        ),
    }
}
