//! The checks: what `mode=probe` runs, each asserting Xen's exact behaviour.
//!
//! Two groups. [`run`] first makes the *boot checks* once (what `hvm_start_info`
//! and CPUID say, and that the hypercall page was filled in), then the *mode
//! checks* once per paging mode of this guest (pvh64: long mode; pvh32: paging off,
//! then PAE paging), since whether a hypervisor reads a guest pointer correctly
//! depends on how the guest translates it.
//!
//! Every expected value is Xen's (cited per check), so keel is held to the ABI,
//! not to itself. Hostile probes pass pointers that are not-present in the guest's
//! page tables, point beyond its RAM, or alias another page; use hypercall numbers
//! outside the table; and touch unbacked MMIO, ports and MSRs. Results that Xen
//! leaves open are accepted either way and printed as `info:` lines.
//!
//! The exact lines (check names) are listed in `tests/tests/pvh.rs`; keep the two
//! in step.

use keel_hypercall::abi::Errno;
use keel_hypercall::abi::console::CONSOLEIO_WRITE;
use keel_hypercall::abi::cpuid as xcpuid;
use keel_hypercall::abi::domid::DOMID_SELF;
use keel_hypercall::abi::features::{XENFEAT_AUTO_TRANSLATED_PHYSMAP, XENFEAT_DOM0, bit};
use keel_hypercall::abi::hvm::{
    HVM_NR_PARAMS, HVM_PARAM_CALLBACK_IRQ, HVMOP_GET_PARAM, XenHvmParam,
};
use keel_hypercall::abi::memory::{
    E820_RAM, E820Entry, XENMAPSPACE_SHARED_INFO, XENMEM_ADD_TO_PHYSMAP, XENMEM_MEMORY_MAP,
};
use keel_hypercall::abi::sched::{SCHEDOP_SHUTDOWN, SCHEDOP_YIELD, SchedShutdown};
use keel_hypercall::abi::start_info::{SIF_INITDOMAIN, XEN_HVM_START_MAGIC_VALUE};
use keel_hypercall::abi::version::{
    XEN_CAPABILITIES_INFO_LEN, XEN_EXTRAVERSION_LEN, XEN_PAGE_SIZE, XENVER_CAPABILITIES,
    XENVER_COMPILE_INFO, XENVER_EXTRAVERSION, XENVER_GET_FEATURES, XENVER_PAGESIZE, XENVER_VERSION,
    XenCompileInfo, XenFeatureInfo,
};

use crate::arch;
use crate::checks::{self, Checks, Rc};
use crate::cmdline;
use crate::console::Escaped;
use crate::hypercall::{self, HYPERCALL_PAGE, Xen};
use crate::paging::{
    self, ALIAS_BACKING, ALIAS_VIEW, BEYOND_RAM_PA, HUGE_TAIL, Page, Phase, UNBACKED_MMIO_PA,
    WindowPage,
};
use crate::start_info::BootInfo;
use crate::{image_range, trap};

/// An I/O port nothing answers on QEMU's `pc` machine or Bochs, and keel does not
/// emulate: reads must return all-ones of the access width, writes vanish.
pub const UNBACKED_PORT: u16 = 0x2E0;

/// An MSR no CPU has: reading it must raise #GP(0) in the guest (Xen injects #GP for
/// MSRs it does not know, since 4.15).
pub const UNKNOWN_MSR: u32 = 0xDEAD_BEEF;

/// `XENVER_*` sub-op number Xen does not define.
pub const UNKNOWN_XENVER: u32 = 1000;

/// `SCHEDOP_*` number Xen does not define.
pub const UNKNOWN_SCHEDOP: u32 = 99;

/// A hypercall number with a page entry but no hypercall (43..=47 were never
/// assigned).
pub const UNUSED_HYPERCALL: u32 = 46;

/// Scratch pages for hypercall arguments and results.
static SCRATCH: Page = Page::new();
static SCRATCH2: Page = Page::new();

/// Pages the shared-info frame is mapped over, one per phase.
static SHARED_INFO_TARGETS: [Page; 2] = [Page::new(), Page::new()];

/// What the checks need to know.
struct Ctx<'a> {
    xen: &'a Xen,
    boot: &'a BootInfo,
    /// `domu` on the command line: not the initial domain.
    domu: bool,
}

/// `mode=probe` under Xen: the boot checks, then the mode checks per phase.
pub fn run(xen: &Xen, boot: &BootInfo) {
    let ctx = Ctx {
        xen,
        boot,
        domu: cmdline::has(boot.cmdline(), "domu"),
    };
    let c = Checks::new("", "");
    start_info_checks(&c, boot, Some(ctx.domu));
    xen_boot_checks(&c, &ctx);
    for phase in paging::PHASES {
        let c = Checks::new("", phase.prefix);
        if let Err(e) = paging::enter(phase) {
            c.fail("paging set-up", format_args!("{}", e.0));
            continue;
        }
        c.info(format_args!(
            "{} checks, paging {}",
            arch::MODE_NAME,
            if phase.paging { "on" } else { "off" }
        ));
        if phase.paging {
            let (cr3, low, window) = paging::top_entries();
            c.info(format_args!(
                "CR3 {cr3:#x}; PDPT entries: identity map {low:#x}, window {window:#x}"
            ));
        }
        mode_checks(&c, &ctx, phase);
    }
}

/// `mode=probe` without a hypervisor: what can be checked on bare hardware.
pub fn run_bare(boot: &BootInfo) {
    let c = Checks::new(arch::BARE_PREFIX, "");
    start_info_checks(&c, boot, None);
    for phase in paging::PHASES {
        let c = Checks::new(arch::BARE_PREFIX, phase.prefix);
        if let Err(e) = paging::enter(phase) {
            c.fail("paging set-up", format_args!("{}", e.0));
            continue;
        }
        trap_self_check(&c);
        // SAFETY: the #GP a real CPU raises is expected and skipped.
        let (value, fault) = trap::expect(13, 2, || unsafe { arch::rdmsr_raw(UNKNOWN_MSR) });
        c.info(format_args!(
            "rdmsr {:#x}: {} (QEMU's TCG reads unknown MSRs as 0 without a fault)",
            UNKNOWN_MSR,
            match fault {
                Some(f) => FaultOr::Fault(f),
                None => FaultOr::Value(value),
            }
        ));
        let mmio = mmio_addr(phase);
        for &w in arch::MMIO_WIDTHS {
            // SAFETY: an address with no RAM behind it (identity or window mapping).
            let v = unsafe { arch::mmio_read(mmio, w) };
            c.info(format_args!(
                "{}-byte read of MMIO {:#x}: {:#x}",
                w, UNBACKED_MMIO_PA, v
            ));
        }
        for w in [1, 2, 4] {
            // SAFETY: a port with no device behind it.
            let v = unsafe { arch::port_in(UNBACKED_PORT, w) };
            c.info(format_args!(
                "{}-byte read of port {:#x}: {:#x}",
                w, UNBACKED_PORT, v
            ));
        }
        if phase.paging {
            let (cr3, low, window) = paging::top_entries();
            c.info(format_args!(
                "CR3 {cr3:#x}; PDPT entries: identity map {low:#x}, window {window:#x}"
            ));
            alias_self_check(&c);
        }
    }
    crate::out!(
        "{}{} passed, {} failed (the checks that need no hypervisor)",
        arch::BARE_PREFIX,
        checks::passed(),
        checks::failed()
    );
}

/// `hvm_start_info` as the PVH ABI (`docs/misc/pvh.pandoc`, `start_info.h`)
/// defines it. `domu` is `None` without a hypervisor (the flags then mean nothing).
fn start_info_checks(c: &Checks, boot: &BootInfo, domu: Option<bool>) {
    let r = &boot.raw;
    if !boot.readable {
        c.fail(
            "start_info magic and version",
            format_args!(
                "hvm_start_info at {:#x} is not readable (null or above 4 GiB)",
                boot.pa
            ),
        );
        return;
    }
    c.check(
        "start_info magic and version",
        r.magic == XEN_HVM_START_MAGIC_VALUE && r.version >= 1,
        format_args!(
            "magic {:#x} (expected {:#x}), version {} (expected >= 1)",
            r.magic, XEN_HVM_START_MAGIC_VALUE, r.version
        ),
    );

    if let Some(domu) = domu {
        let init = r.flags & SIF_INITDOMAIN != 0;
        c.check(
            "start_info flags",
            init != domu,
            format_args!(
                "flags {:#x}: SIF_INITDOMAIN is {}, expected {} ({})",
                r.flags,
                if init { "set" } else { "clear" },
                if domu { "clear" } else { "set" },
                if domu {
                    "domu on the command line"
                } else {
                    "dom0"
                }
            ),
        );
    }

    c.info(format_args!(
        "cmdline at {:#x}: \"{}\"",
        r.cmdline_paddr,
        Escaped(boot.cmdline())
    ));
    c.check(
        "start_info cmdline",
        r.cmdline_paddr != 0 && boot.cmdline.readable && boot.cmdline.terminated,
        format_args!(
            "cmdline_paddr {:#x}: readable {}, NUL within 512 bytes {}",
            r.cmdline_paddr, boot.cmdline.readable, boot.cmdline.terminated
        ),
    );

    module_checks(c, boot);

    let (img_start, img_end) = image_range();
    for e in boot.memmap() {
        c.info(format_args!(
            "memory map {:#x}-{:#x} type {}",
            e.addr,
            e.addr.wrapping_add(e.size),
            e.type_
        ));
    }
    c.check(
        "start_info memory map",
        boot.memmap_len >= 1 && boot.ram_covers(img_start, img_end),
        format_args!(
            "{} entries at {:#x}; need a RAM entry covering the kernel at {:#x}-{:#x}",
            r.memmap_entries, r.memmap_paddr, img_start, img_end
        ),
    );
}

/// The module list: count (if the command line says `modules=N`), each module in
/// RAM with a readable command line, and module 0's contents (`module0-prefix=`).
fn module_checks(c: &Checks, boot: &BootInfo) {
    let r = &boot.raw;
    c.info(format_args!(
        "{} module(s) at {:#x}",
        r.nr_modules, r.modlist_paddr
    ));
    let mut problem: Option<(usize, &str)> = None;
    for (i, m) in boot.modules.iter().enumerate() {
        let Some(m) = m else { continue };
        let e = &m.entry;
        c.info(format_args!(
            "module {}: {:#x}+{:#x}, cmdline \"{}\", starts \"{}\"",
            i,
            e.paddr,
            e.size,
            Escaped(m.cmdline.as_bytes()),
            Escaped(&m.head[..m.head_len])
        ));
        let end = e.paddr.saturating_add(e.size);
        if e.size == 0 || e.paddr == 0 {
            problem.get_or_insert((i, "null or empty"));
        } else if !boot.ram_covers(e.paddr, end) {
            problem.get_or_insert((i, "not inside one RAM entry of the memory map"));
        } else if e.cmdline_paddr != 0 && !m.cmdline.terminated {
            problem.get_or_insert((i, "command line unreadable or not NUL-terminated"));
        }
    }
    if let Some(want) = cmdline::get(boot.cmdline(), "modules").and_then(cmdline::number)
        && r.nr_modules != want
    {
        c.fail(
            "start_info modules",
            format_args!(
                "nr_modules {}, the command line says modules={}",
                r.nr_modules, want
            ),
        );
        return;
    }
    if let Some(prefix) = cmdline::get(boot.cmdline(), "module0-prefix") {
        let head = boot.modules[0].as_ref().map(|m| &m.head[..m.head_len]);
        if !head.is_some_and(|h| h.starts_with(prefix)) {
            c.fail(
                "start_info modules",
                format_args!("module 0 does not start with \"{}\"", Escaped(prefix)),
            );
            return;
        }
    }
    match problem {
        None => c.ok("start_info modules"),
        Some((i, why)) => c.fail("start_info modules", format_args!("module {i}: {why}")),
    }
}

/// Xen's CPUID leaves, the hypercall page, and what CPUID hides from a guest.
fn xen_boot_checks(c: &Checks, ctx: &Ctx<'_>) {
    let xen = ctx.xen;
    c.info(format_args!(
        "Xen CPUID leaves at {:#x} (max {:#x}): version {}.{}, {} hypercall page(s) via MSR {:#x}, {}",
        xen.base,
        xen.max_leaf,
        xen.version >> 16,
        xen.version & 0xffff,
        xen.pages,
        xen.msr,
        xen.vendor.instruction()
    ));
    c.check(
        "cpuid Xen leaves",
        xen.pages >= 1,
        format_args!("base+2 says {} hypercall pages", xen.pages),
    );
    let filled = (0..4096).any(|i| HYPERCALL_PAGE.get(i) != 0);
    c.check(
        "hypercall page",
        filled,
        format_args!(
            "still all zero after writing {:#x} to MSR {:#x}",
            HYPERCALL_PAGE.addr(),
            xen.msr
        ),
    );

    let leaf1 = arch::cpuid(1, 0);
    c.check(
        "cpuid hypervisor bit",
        leaf1.ecx & (1 << 31) != 0,
        format_args!("leaf 1 ECX {:#x}: bit 31 clear", leaf1.ecx),
    );
    c.check(
        "cpuid VMX hidden",
        leaf1.ecx & (1 << 5) == 0,
        format_args!("leaf 1 ECX {:#x}: bit 5 (VMX) set", leaf1.ecx),
    );
    let max_ext = arch::cpuid(0x8000_0000, 0).eax;
    let ext1 = if max_ext >= 0x8000_0001 {
        arch::cpuid(0x8000_0001, 0).ecx
    } else {
        0
    };
    c.check(
        "cpuid SVM hidden",
        ext1 & (1 << 2) == 0,
        format_args!("leaf 0x80000001 ECX {:#x}: bit 2 (SVM) set", ext1),
    );

    let hvm_leaf = xen.base + xcpuid::LEAF_HVM;
    if xen.max_leaf < hvm_leaf {
        c.info(format_args!(
            "no HVM leaf (base+4): the domid is not advertised"
        ));
        c.ok("cpuid Xen domid");
        return;
    }
    let l = arch::cpuid(hvm_leaf, 0);
    if l.eax & xcpuid::XEN_HVM_CPUID_DOMID_PRESENT == 0 {
        c.info(format_args!(
            "HVM leaf EAX {:#x}: domid not advertised",
            l.eax
        ));
        c.ok("cpuid Xen domid");
    } else if ctx.domu {
        c.check(
            "cpuid Xen domid",
            l.ecx != 0,
            format_args!("ECX (domid) is 0 in a domU"),
        );
    } else {
        c.check(
            "cpuid Xen domid",
            l.ecx == 0,
            format_args!("ECX (domid) {}, expected 0 for dom0", l.ecx),
        );
    }
}

/// A guest-virtual address that translates to [`BEYOND_RAM_PA`] in this phase.
fn beyond_ram_addr(phase: &Phase) -> usize {
    if phase.paging {
        WindowPage::BeyondRam.va()
    } else {
        BEYOND_RAM_PA as usize
    }
}

/// A guest-virtual address that translates to [`UNBACKED_MMIO_PA`] (uncached).
fn mmio_addr(phase: &Phase) -> usize {
    if phase.paging {
        WindowPage::Mmio.va()
    } else {
        UNBACKED_MMIO_PA as usize
    }
}

/// Index of the first NUL in `bytes`.
fn nul_at(bytes: &[u8]) -> Option<usize> {
    bytes.iter().position(|&b| b == 0)
}

/// The checks made once per paging mode.
fn mode_checks(c: &Checks, ctx: &Ctx<'_>, phase: &Phase) {
    console_checks(c, ctx, phase);
    version_checks(c, ctx, phase);
    memory_checks(c, phase);
    hvm_checks(c);
    number_checks(c, ctx);
    sched_checks(c, ctx, phase);
    vcpu_checks(c);
    io_checks(c, ctx, phase);
    msr_check(c);
    if phase.paging {
        paging_checks(c, phase);
    }
}

/// `HYPERVISOR_console_io(CONSOLEIO_write)`: Xen copies `count` bytes from the
/// guest (`guest_console_write`, `xen/drivers/char/console.c`) and returns 0, or
/// -EFAULT if the copy fails.
fn console_checks(c: &Checks, ctx: &Ctx<'_>, phase: &Phase) {
    let mut line = LineBuf::new();
    line.push(phase.prefix.as_bytes());
    line.push(b"console_io probe line\n");
    SCRATCH.write(0, line.as_bytes());
    let rc = hypercall::console_io(CONSOLEIO_WRITE, line.len, SCRATCH.addr());
    c.rc("console_io write", rc, 0);

    let rc = hypercall::console_io(CONSOLEIO_WRITE, 0, SCRATCH.addr());
    c.rc("console_io zero length", rc, 0);

    if ctx.boot.ram_overlaps_page(BEYOND_RAM_PA) {
        c.fail(
            "console_io beyond RAM",
            format_args!("guest-physical {BEYOND_RAM_PA:#x} is RAM here; the probe needs a hole"),
        );
    } else {
        let rc = hypercall::console_io(CONSOLEIO_WRITE, 16, beyond_ram_addr(phase));
        c.errno("console_io beyond RAM", rc, Errno::EFAULT);
    }
}

/// `HYPERVISOR_xen_version` (`xen/common/kernel.c`, `do_xen_version`).
fn version_checks(c: &Checks, ctx: &Ctx<'_>, phase: &Phase) {
    let xen = ctx.xen;
    let rc = hypercall::xen_version(XENVER_VERSION, 0);
    c.check(
        "xen_version version",
        rc == i64::from(xen.version),
        format_args!("returned {:#x}, CPUID base+1 says {:#x}", rc, xen.version),
    );

    SCRATCH.fill(0, XEN_EXTRAVERSION_LEN, 0xFF);
    let rc = hypercall::xen_version(XENVER_EXTRAVERSION, SCRATCH.addr());
    let mut extra = [0u8; XEN_EXTRAVERSION_LEN];
    SCRATCH.read(0, &mut extra);
    match (rc, nul_at(&extra)) {
        (0, Some(n)) => {
            c.info(format_args!("extraversion \"{}\"", Escaped(&extra[..n])));
            c.ok("xen_version extraversion");
        }
        (rc, nul) => c.fail(
            "xen_version extraversion",
            format_args!("returned {}, NUL-terminated: {}", Rc(rc), nul.is_some()),
        ),
    }

    SCRATCH.fill(0, XenCompileInfo::SIZE, 0xFF);
    let rc = hypercall::xen_version(XENVER_COMPILE_INFO, SCRATCH.addr());
    let mut raw = [0u8; XenCompileInfo::SIZE];
    SCRATCH.read(0, &mut raw);
    let info = XenCompileInfo::from_bytes(&raw);
    let fields: [(&str, &[u8]); 4] = [
        ("compiler", &info.compiler),
        ("compile_by", &info.compile_by),
        ("compile_domain", &info.compile_domain),
        ("compile_date", &info.compile_date),
    ];
    let unterminated = fields.iter().find(|(_, f)| nul_at(f).is_none());
    for (name, f) in &fields {
        let n = nul_at(f).unwrap_or(f.len());
        c.info(format_args!(
            "compile_info {} \"{}\"",
            name,
            Escaped(&f[..n])
        ));
    }
    match (rc, unterminated) {
        (0, None) => c.ok("xen_version compile_info"),
        (rc, bad) => c.fail(
            "xen_version compile_info",
            format_args!(
                "returned {}, unterminated field: {}",
                Rc(rc),
                bad.map_or("none", |(n, _)| n)
            ),
        ),
    }

    SCRATCH.fill(0, XEN_CAPABILITIES_INFO_LEN, 0xFF);
    let rc = hypercall::xen_version(XENVER_CAPABILITIES, SCRATCH.addr());
    let mut caps = [0u8; XEN_CAPABILITIES_INFO_LEN];
    SCRATCH.read(0, &mut caps);
    match (rc, nul_at(&caps)) {
        (0, Some(n)) => {
            c.info(format_args!(
                "capabilities \"{}\"",
                Escaped(&caps[..n.min(160)])
            ));
            c.ok("xen_version capabilities");
        }
        (rc, nul) => c.fail(
            "xen_version capabilities",
            format_args!("returned {}, NUL-terminated: {}", Rc(rc), nul.is_some()),
        ),
    }

    let rc = hypercall::xen_version(XENVER_PAGESIZE, 0);
    c.rc("xen_version pagesize", rc, XEN_PAGE_SIZE as i64);

    // Xen: a translated (HVM/PVH) domain gets XENFEAT_auto_translated_physmap, the
    // hardware domain XENFEAT_dom0 (`xen/common/kernel.c`).
    let req = XenFeatureInfo {
        submap_idx: 0,
        submap: 0,
    };
    SCRATCH.write(0, &req.to_bytes());
    let rc = hypercall::xen_version(XENVER_GET_FEATURES, SCRATCH.addr());
    let mut raw = [0u8; XenFeatureInfo::SIZE];
    SCRATCH.read(0, &mut raw);
    let submap = XenFeatureInfo::from_bytes(&raw).submap;
    c.info(format_args!("features submap 0: {:#010x}", submap));
    let translated = submap & bit(XENFEAT_AUTO_TRANSLATED_PHYSMAP) != 0;
    let dom0 = submap & bit(XENFEAT_DOM0) != 0;
    c.check(
        "xen_version get_features",
        rc == 0 && translated && dom0 != ctx.domu,
        format_args!(
            "returned {}, submap {:#x}: auto_translated_physmap {} (expected set), dom0 {} (expected {})",
            Rc(rc),
            submap,
            translated,
            dom0,
            !ctx.domu
        ),
    );

    let req = XenFeatureInfo {
        submap_idx: 1,
        submap: 0,
    };
    SCRATCH.write(0, &req.to_bytes());
    let rc = hypercall::xen_version(XENVER_GET_FEATURES, SCRATCH.addr());
    c.errno("xen_version get_features bad submap", rc, Errno::EINVAL);

    // Unknown sub-ops are -ENOSYS for every domain: Xen's do_xen_version only
    // consults XSM's verdict for the sub-ops it knows (xen/common/kernel.c).
    let rc = hypercall::xen_version(UNKNOWN_XENVER, SCRATCH.addr());
    c.errno("xen_version unknown sub-op", rc, Errno::ENOSYS);

    let rc = hypercall::xen_version(XENVER_EXTRAVERSION, beyond_ram_addr(phase));
    c.errno("xen_version extraversion beyond RAM", rc, Errno::EFAULT);
}

/// `HYPERVISOR_memory_op` (`xen/common/memory.c`, `xen/arch/x86/mm.c`).
fn memory_checks(c: &Checks, phase: &Phase) {
    const CAPACITY: u32 = (4096 / E820Entry::SIZE) as u32;
    SCRATCH2.fill(0, 4096, 0xEE);
    SCRATCH.fill(0, 64, 0);
    SCRATCH.write(0, &memory_map_arg(CAPACITY, SCRATCH2.addr()));
    let rc = hypercall::memory_op(XENMEM_MEMORY_MAP, SCRATCH.addr());
    let mut n = [0u8; 4];
    SCRATCH.read(0, &mut n);
    let n = u32::from_le_bytes(n);
    let (img_start, img_end) = image_range();
    let mut covers = false;
    if rc == 0 && n < CAPACITY {
        for i in 0..n as usize {
            let mut raw = [0u8; E820Entry::SIZE];
            SCRATCH2.read(i * E820Entry::SIZE, &mut raw);
            let e = E820Entry::from_bytes(&raw);
            let (addr, size, ty) = (e.addr, e.size, e.type_);
            c.info(format_args!(
                "XENMEM_memory_map {:#x}-{:#x} type {}",
                addr,
                addr.wrapping_add(size),
                ty
            ));
            covers |= ty == E820_RAM && addr <= img_start && addr.saturating_add(size) >= img_end;
        }
    }
    c.check(
        "memory_op memory_map",
        rc == 0 && (1..CAPACITY).contains(&n) && covers,
        format_args!(
            "returned {}, nr_entries {} (capacity {}); RAM entry covering the kernel: {}",
            Rc(rc),
            n,
            CAPACITY,
            covers
        ),
    );

    // XENMAPSPACE_shared_info: the page at gpfn becomes the shared-info frame, which
    // Xen allocates zeroed, so the guest's 0xAA fill must be gone.
    let page = &SHARED_INFO_TARGETS[phase.index];
    page.fill(0, 4096, 0xAA);
    let gpfn = (page.addr() >> 12) as u64;
    SCRATCH.write(0, &add_to_physmap_arg(XENMAPSPACE_SHARED_INFO, 0, gpfn));
    let rc = hypercall::memory_op(XENMEM_ADD_TO_PHYSMAP, SCRATCH.addr());
    let still_filled = (0..4096).filter(|&i| page.get(i) == 0xAA).count();
    c.check(
        "memory_op add_to_physmap shared_info",
        rc == 0 && still_filled < 4096,
        format_args!(
            "returned {}; {} of 4096 bytes at gpfn {:#x} still hold the guest's 0xAA fill",
            Rc(rc),
            still_filled,
            gpfn
        ),
    );
}

/// `struct xen_memory_map` in the layout of this guest's mode.
#[cfg(target_arch = "x86_64")]
fn memory_map_arg(capacity: u32, buffer: usize) -> [u8; 16] {
    use keel_hypercall::abi::memory::XenMemoryMap;
    XenMemoryMap {
        nr_entries: capacity,
        pad: 0,
        buffer: buffer as u64,
    }
    .to_bytes()
}

/// `struct compat_memory_map` (32-bit caller).
#[cfg(target_arch = "x86")]
fn memory_map_arg(capacity: u32, buffer: usize) -> [u8; 8] {
    use keel_hypercall::abi::memory::XenMemoryMapCompat;
    XenMemoryMapCompat {
        nr_entries: capacity,
        buffer: buffer as u32,
    }
    .to_bytes()
}

/// `struct xen_add_to_physmap` for the calling domain.
#[cfg(target_arch = "x86_64")]
fn add_to_physmap_arg(space: u32, idx: u64, gpfn: u64) -> [u8; 24] {
    use keel_hypercall::abi::memory::XenAddToPhysmap;
    XenAddToPhysmap {
        domid: DOMID_SELF,
        size: 0,
        space,
        idx,
        gpfn,
    }
    .to_bytes()
}

/// `struct compat_add_to_physmap` (32-bit caller).
#[cfg(target_arch = "x86")]
fn add_to_physmap_arg(space: u32, idx: u64, gpfn: u64) -> [u8; 16] {
    use keel_hypercall::abi::memory::XenAddToPhysmapCompat;
    XenAddToPhysmapCompat {
        domid: DOMID_SELF,
        size: 0,
        space,
        idx: idx as u32,
        gpfn: gpfn as u32,
    }
    .to_bytes()
}

/// `HYPERVISOR_hvm_op(HVMOP_get_param)` (`xen/arch/x86/hvm/hvm.c`): a domain may read
/// its own CALLBACK_IRQ (0 until set); an index at or above `HVM_NR_PARAMS` is
/// -EINVAL.
fn hvm_checks(c: &Checks) {
    let param = XenHvmParam {
        domid: DOMID_SELF,
        pad: 0,
        index: HVM_PARAM_CALLBACK_IRQ,
        value: 0x5555_5555,
    };
    SCRATCH.write(0, &param.to_bytes());
    let rc = hypercall::hvm_op(HVMOP_GET_PARAM, SCRATCH.addr());
    let mut raw = [0u8; XenHvmParam::SIZE];
    SCRATCH.read(0, &mut raw);
    let value = XenHvmParam::from_bytes(&raw).value;
    c.info(format_args!("HVM_PARAM_CALLBACK_IRQ = {:#x}", value));
    c.rc("hvm_op get_param CALLBACK_IRQ", rc, 0);

    let param = XenHvmParam {
        index: HVM_NR_PARAMS,
        ..param
    };
    SCRATCH.write(0, &param.to_bytes());
    let rc = hypercall::hvm_op(HVMOP_GET_PARAM, SCRATCH.addr());
    c.errno("hvm_op get_param out of range", rc, Errno::EINVAL);
}

/// Hypercall numbers without a hypercall: Xen's dispatcher returns -ENOSYS for an
/// empty table slot and for any number at or above `NR_hypercalls` (64),
/// including ones only reachable with a direct `vmcall`/`vmmcall`.
fn number_checks(c: &Checks, ctx: &Ctx<'_>) {
    let rc = hypercall::call(UNUSED_HYPERCALL, [0; 5]);
    c.errno("hypercall 46 unused", rc, Errno::ENOSYS);
    let rc = hypercall::call(63, [0; 5]);
    c.errno("hypercall 63", rc, Errno::ENOSYS);
    let rc = hypercall::call_direct(ctx.xen, 64, [0; 5]);
    c.errno("hypercall 64 direct", rc, Errno::ENOSYS);
    let rc = hypercall::call_direct(ctx.xen, 0xFFFF_FFFF, [0; 5]);
    c.errno("hypercall 0xffffffff direct", rc, Errno::ENOSYS);
}

/// `HYPERVISOR_vcpu_op` naming vCPUs the domain does not have: `-ENOENT`, before
/// the command is looked at (Xen's `do_vcpu_op`: `domain_vcpu()` is NULL), for
/// the first id past the last vCPU, the largest HVM id and every bit set. The
/// domain may have several vCPUs (Dom0 gets one per pCPU): `VCPUOP_is_up` answers
/// 0 or 1 for ids 0, 1, ... up to the first it does not have, which must come
/// by 128 (Xen's `HVM_MAX_VCPUS`), with vCPU 0 up.
fn vcpu_checks(c: &Checks) {
    use keel_hypercall::abi::vcpu::{VCPUOP_GET_RUNSTATE_INFO, VCPUOP_IS_UP, VCPUOP_UP};
    const HVM_MAX_VCPUS: u32 = 128;
    let enoent = Errno::ENOENT.neg();
    let past = (0..=HVM_MAX_VCPUS).find(|&k| hypercall::vcpu_op(VCPUOP_IS_UP, k, 0) == enoent);
    let answers_below = past.is_some_and(|n| {
        n >= 1
            && hypercall::vcpu_op(VCPUOP_IS_UP, 0, 0) == 1
            && (1..n).all(|k| matches!(hypercall::vcpu_op(VCPUOP_IS_UP, k, 0), 0 | 1))
    });
    c.check(
        "vcpu_op is_up of a vCPU past the last",
        answers_below,
        format_args!("is_up answered -ENOENT first at {past:?} (vCPU 0 up, 0/1 below)"),
    );
    let past = past.unwrap_or(1);
    c.info(format_args!("this domain has {past} vCPU(s)"));
    c.errno(
        "vcpu_op up of vCPU 127",
        hypercall::vcpu_op(VCPUOP_UP, 127, 0),
        Errno::ENOENT,
    );
    c.errno(
        "vcpu_op runstate of vCPU 0xffffffff",
        hypercall::vcpu_op(VCPUOP_GET_RUNSTATE_INFO, u32::MAX, 0),
        Errno::ENOENT,
    );
    c.errno(
        "vcpu_op unknown command to a vCPU past the last",
        hypercall::vcpu_op(0x7FFF, past, 0),
        Errno::ENOENT,
    );
    c.errno(
        "vcpu_op unknown command to vCPU 0",
        hypercall::vcpu_op(0x7FFF, 0, 0),
        Errno::ENOSYS,
    );
}

/// `HYPERVISOR_sched_op` (`xen/common/sched/core.c`, `do_sched_op`).
fn sched_checks(c: &Checks, _ctx: &Ctx<'_>, phase: &Phase) {
    let rc = hypercall::sched_op(UNKNOWN_SCHEDOP, 0);
    c.errno("sched_op unknown cmd", rc, Errno::ENOSYS);
    let rc = hypercall::sched_op(SCHEDOP_YIELD, 0);
    c.rc("sched_op yield", rc, 0);
    // If the hypervisor wrongly reads zeros here, that is SHUTDOWN_poweroff and the
    // guest stops: the missing lines after this one fail the test.
    let rc = hypercall::sched_op(SCHEDOP_SHUTDOWN, beyond_ram_addr(phase));
    c.errno("sched_op shutdown beyond RAM", rc, Errno::EFAULT);
}

/// Unbacked MMIO and I/O ports: Xen sends accesses nobody claims to its null
/// handler, which reads all-ones and drops writes (`xen/arch/x86/hvm/intercept.c`).
fn io_checks(c: &Checks, ctx: &Ctx<'_>, phase: &Phase) {
    let addr = mmio_addr(phase);
    if ctx.boot.ram_overlaps_page(UNBACKED_MMIO_PA) {
        c.fail(
            "unbacked MMIO read",
            format_args!("guest-physical {UNBACKED_MMIO_PA:#x} is RAM here"),
        );
    } else {
        let mut bad: Option<(u32, u64)> = None;
        for &w in arch::MMIO_WIDTHS {
            // SAFETY: an address with no RAM behind it; the access is the probe.
            let v = unsafe { arch::mmio_read(addr, w) };
            if v != arch::all_ones(w) {
                bad.get_or_insert((w, v));
            }
        }
        match bad {
            None => c.ok("unbacked MMIO read"),
            Some((w, v)) => c.fail(
                "unbacked MMIO read",
                format_args!(
                    "{}-byte read of {:#x} gave {:#x}, expected {:#x}",
                    w,
                    UNBACKED_MMIO_PA,
                    v,
                    arch::all_ones(w)
                ),
            ),
        }
    }
    // SAFETY: as above; the write must vanish.
    let after = unsafe {
        arch::mmio_write32(addr, 0x1234_5678);
        arch::mmio_read(addr, 4)
    };
    c.check(
        "unbacked MMIO write",
        after == 0xFFFF_FFFF,
        format_args!(
            "after writing 0x12345678, {:#x} reads {:#x}",
            UNBACKED_MMIO_PA, after
        ),
    );

    let mut bad: Option<(u32, u32)> = None;
    for w in [1, 2, 4] {
        // SAFETY: a port with no device behind it.
        let v = unsafe { arch::port_in(UNBACKED_PORT, w) };
        if u64::from(v) != arch::all_ones(w) {
            bad.get_or_insert((w, v));
        }
    }
    match bad {
        None => c.ok("unbacked port read"),
        Some((w, v)) => c.fail(
            "unbacked port read",
            format_args!("{}-byte in from port {:#x} gave {:#x}", w, UNBACKED_PORT, v),
        ),
    }
    // SAFETY: as above.
    let after = unsafe {
        arch::port_out(UNBACKED_PORT, 1, 0x5A);
        arch::port_in(UNBACKED_PORT, 1)
    };
    c.check(
        "unbacked port write",
        after == 0xFF,
        format_args!(
            "after outb 0x5a, port {:#x} reads {:#x}",
            UNBACKED_PORT, after
        ),
    );
}

/// `rdmsr` of an MSR that does not exist raises #GP(0), delivered through the
/// guest's own IDT; the handler skips the 2-byte instruction.
fn msr_check(c: &Checks) {
    // SAFETY: the #GP is expected and skipped by the armed handler.
    let (value, fault) = trap::expect(13, 2, || unsafe { arch::rdmsr_raw(UNKNOWN_MSR) });
    let want = Some(trap::Fault {
        vector: 13,
        error_code: 0,
    });
    match fault {
        f if f == want && value == arch::RDMSR_UNTOUCHED => c.ok("unknown MSR raises #GP"),
        Some(f) => c.fail(
            "unknown MSR raises #GP",
            format_args!(
                "rdmsr {:#x} raised vector {} error code {:#x}",
                UNKNOWN_MSR, f.vector, f.error_code
            ),
        ),
        None => c.fail(
            "unknown MSR raises #GP",
            format_args!(
                "rdmsr {:#x} returned {:#x} without a fault",
                UNKNOWN_MSR, value
            ),
        ),
    }
}

/// Pointers that need the guest's page tables to make sense: not-present pages must
/// be -EFAULT (Xen copies through the guest's tables and never injects the fault
/// for a hypercall argument), an alias must reach the page it maps, not its own
/// identity frame.
fn paging_checks(c: &Checks, phase: &Phase) {
    let unmapped = WindowPage::Unmapped.va();
    let rc = hypercall::console_io(CONSOLEIO_WRITE, 16, unmapped);
    c.errno("console_io unmapped", rc, Errno::EFAULT);
    let rc = hypercall::xen_version(XENVER_EXTRAVERSION, unmapped);
    c.errno("xen_version extraversion unmapped", rc, Errno::EFAULT);
    SCRATCH.write(0, &SchedShutdown { reason: 0 }.to_bytes());
    let rc = hypercall::sched_op(SCHEDOP_SHUTDOWN, unmapped);
    c.errno("sched_op shutdown unmapped", rc, Errno::EFAULT);

    // A 4 GiB - 1 byte write starting 40-odd bytes before a not-present page: Xen
    // copies in chunks and stops with -EFAULT at the hole; a hypervisor may also
    // refuse up front (-EFAULT) or write the readable part and return a count. It
    // must not hang or print the rest of memory.
    let mut tail = LineBuf::new();
    tail.push(phase.prefix.as_bytes());
    tail.push(b"console_io huge length probe text\n");
    let offset = 4096 - tail.len;
    HUGE_TAIL.write(offset, tail.as_bytes());
    let rc = hypercall::console_io(
        CONSOLEIO_WRITE,
        0xFFFF_FFFF,
        WindowPage::HugeTail.va() + offset,
    );
    c.info(format_args!(
        "console_io of 0xffffffff bytes returned {}",
        Rc(rc)
    ));
    c.check(
        "console_io huge length",
        rc >= 0 || rc == Errno::EFAULT.neg(),
        format_args!("returned {}, expected a count or -EFAULT", Rc(rc)),
    );

    // The alias: ALIAS_VIEW's virtual page maps ALIAS_BACKING's frame. keel must
    // print the backing text; the view frame's text must never appear.
    let mut good = LineBuf::new();
    good.push(phase.prefix.as_bytes());
    good.push(b"alias probe: read through the guest's page tables");
    let mut bad = LineBuf::new();
    bad.push(phase.prefix.as_bytes());
    bad.push(b"alias probe: WRONG PAGE, guest-virtual used as guest-physical");
    let len = good.len.max(bad.len);
    good.pad_to(len);
    bad.pad_to(len);
    good.push(b"\n");
    bad.push(b"\n");
    ALIAS_BACKING.write(0, good.as_bytes());
    // SAFETY: the window page maps ALIAS_VIEW's frame, which nothing else uses.
    unsafe { paging::write_virt(WindowPage::AliasViewFrame.va(), bad.as_bytes()) };
    let rc = hypercall::console_io(CONSOLEIO_WRITE, good.len, ALIAS_VIEW.addr());
    c.rc("console_io through alias", rc, 0);

    ALIAS_BACKING.fill(0, XEN_EXTRAVERSION_LEN, 0xFF);
    // SAFETY: as above.
    unsafe {
        paging::write_virt(
            WindowPage::AliasViewFrame.va(),
            &[0x5A; XEN_EXTRAVERSION_LEN],
        )
    };
    let rc = hypercall::xen_version(XENVER_EXTRAVERSION, ALIAS_VIEW.addr());
    let mut backing = [0u8; XEN_EXTRAVERSION_LEN];
    ALIAS_BACKING.read(0, &mut backing);
    let mut view = [0u8; XEN_EXTRAVERSION_LEN];
    // SAFETY: as above.
    unsafe { paging::read_virt(WindowPage::AliasViewFrame.va(), &mut view) };
    let landed = nul_at(&backing).is_some();
    let untouched = view.iter().all(|&b| b == 0x5A);
    c.check(
        "xen_version through alias",
        rc == 0 && landed && untouched,
        format_args!(
            "returned {}; string in the mapped frame: {}; identity frame untouched: {}",
            Rc(rc),
            landed,
            untouched
        ),
    );
}

/// A fault, or the value read instead.
enum FaultOr {
    Fault(trap::Fault),
    Value(u64),
}

impl core::fmt::Display for FaultOr {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            FaultOr::Fault(t) => write!(f, "vector {} error code {:#x}", t.vector, t.error_code),
            FaultOr::Value(v) => write!(f, "no fault, value {v:#x}"),
        }
    }
}

/// Without a hypervisor: the IDT delivers an exception to the handler, which skips
/// the instruction (a 2-byte `ud2`) and resumes.
fn trap_self_check(c: &Checks) {
    let ((), fault) = trap::expect(6, 2, arch::ud2_resumable);
    c.check(
        "exception handling",
        fault
            == Some(trap::Fault {
                vector: 6,
                error_code: 0,
            }),
        format_args!("ud2 gave {:?}", fault),
    );
}

/// Without a hypervisor: the alias and window mappings behave as built.
fn alias_self_check(c: &Checks) {
    ALIAS_BACKING.write(0, b"backing");
    // SAFETY: the window maps ALIAS_VIEW's frame, which nothing else uses.
    unsafe { paging::write_virt(WindowPage::AliasViewFrame.va(), b"view!!!") };
    let mut through_alias = [0u8; 7];
    // SAFETY: ALIAS_VIEW's page is mapped (to ALIAS_BACKING's frame).
    unsafe { paging::read_virt(ALIAS_VIEW.addr(), &mut through_alias) };
    c.check(
        "paging alias",
        &through_alias == b"backing",
        format_args!(
            "reading the alias gave \"{}\", expected \"backing\"",
            Escaped(&through_alias)
        ),
    );
    let mut frame = [0u8; 7];
    // SAFETY: as above.
    unsafe { paging::read_virt(WindowPage::AliasViewFrame.va(), &mut frame) };
    c.check(
        "paging window",
        &frame == b"view!!!",
        format_args!(
            "the window's view of the frame gave \"{}\"",
            Escaped(&frame)
        ),
    );
}

/// A small line assembled from pieces (no allocation).
struct LineBuf {
    buf: [u8; 160],
    len: usize,
}

impl LineBuf {
    fn new() -> LineBuf {
        LineBuf {
            buf: [0; 160],
            len: 0,
        }
    }
    fn push(&mut self, bytes: &[u8]) {
        let n = bytes.len().min(self.buf.len() - self.len);
        self.buf[self.len..self.len + n].copy_from_slice(&bytes[..n]);
        self.len += n;
    }
    fn pad_to(&mut self, len: usize) {
        while self.len < len.min(self.buf.len()) {
            self.push(b" ");
        }
    }
    fn as_bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}
