//! keel: the bare-metal binary. Boot, init order, glue and panic; the logic lives
//! in the crates it calls (docs/architecture.md walks the path of control).
//!
//! Init order, and why:
//! 1. console at defaults, GDT and IDT: from here on a fault is a readable report;
//! 2. boot information and command line (pure parsing, no allocation);
//! 3. memory map and frame allocator (the loader's data reserved first), keel's own
//!    page tables, the heap;
//! 4. ACPI (needs the heap): CPUs, APIC, PM timer and how to power off;
//! 5. CPU and virtualization features, the LAPIC timer calibrated and proven;
//! 6. the other CPUs, each with its own tables, stacks and virtualization state
//!    (`smp.rs`);
//! 7. act on what the user asked for (dom0), or say why not, and power off.
//!
//! Errors before step 4 cannot power off through ACPI; they are reported and keel
//! halts (or, under test, exits through isa-debug-exit).
#![no_std]
#![no_main]

mod channels;
mod clock;
mod domain;
mod domains;
mod events;
mod frames;
mod hypercalls;
mod logger;
mod memory;
mod paging;
mod pv;
mod online;
mod percpu;
mod registry;
mod run;
mod scheduler;
mod smp;
mod vcpu;
mod vmexit;

use keel_arch::hvm::HvmVcpu as _;

use core::sync::atomic::{AtomicBool, Ordering};

use keel_arch::console::{self, BaudRate, UartConfig};
use keel_arch::cpu::{self, CpuInfo};
use keel_arch::hvm::HvmSupport;
use keel_arch::power::{self, ExitStatus};
use keel_arch::{acpi, apic, gdt, image, pic, time, traps};
use keel_builder::bootinfo::{self, BootInfo, BootInfoError, Protocol};
use keel_builder::cmdline::{self, ComConfig, Console};
use logger::say;

extern crate alloc;

const VERSION: &str = env!("CARGO_PKG_VERSION");
/// The Xen guest ABI version keel implements and reports (XENVER_version, CPUID
/// 0x40000001): Xen 4.17's public headers.
pub const XEN_MAJOR: u16 = 4;
pub const XEN_MINOR: u16 = 17;
/// The TSC frequency measured at boot, in kHz (0 until calibrated).
static TSC_KHZ: core::sync::atomic::AtomicU32 = core::sync::atomic::AtomicU32::new(0);

/// keel's command line, for XENVER_commandline.
static CMDLINE: spin::Once<&'static str> = spin::Once::new();

/// keel's command line as the loader gave it.
pub fn hypervisor_cmdline() -> &'static str {
    CMDLINE.get().copied().unwrap_or("")
}

/// The host CPU's vendor, which guests see in CPUID (keel runs on one kind of CPU).
static HOST_VENDOR: spin::Once<keel_x86::cpuid_policy::Vendor> = spin::Once::new();

/// The vendor guests' CPUID reports: the host's (Intel unless it is AMD).
pub fn host_vendor() -> keel_x86::cpuid_policy::Vendor {
    HOST_VENDOR
        .get()
        .copied()
        .unwrap_or(keel_x86::cpuid_policy::Vendor::Intel)
}

/// The TSC frequency in kHz, for guests (CPUID 0x40000003).
pub fn tsc_khz() -> u32 {
    TSC_KHZ.load(Ordering::Relaxed)
}
/// How long the boot-time timer check waits for its interrupt.
const TIMER_CHECK_US: u64 = 10_000;

fn uart_config(c: &ComConfig, base: u16) -> UartConfig {
    use keel_arch::console::{Parity as P, WordLength as W};
    let baud = c
        .baud
        .or_else(|| console::firmware_baud(base))
        .unwrap_or(115_200);
    UartConfig {
        baud_rate: BaudRate::from_integer(baud),
        data_bits: match c.data_bits {
            5 => W::FiveBits,
            6 => W::SixBits,
            7 => W::SevenBits,
            _ => W::EightBits,
        },
        extra_stop_bits: c.stop_bits == 2,
        parity: match c.parity {
            cmdline::Parity::None => P::Disabled,
            cmdline::Parity::Odd => P::Odd,
            cmdline::Parity::Even => P::Even,
            cmdline::Parity::Mark => P::Forced1,
            cmdline::Parity::Space => P::Forced0,
        },
        ..UartConfig::DEFAULT
    }
}

/// A failure before ACPI is known: report, then stop as cleanly as keel can.
fn early_failure(what: &str, why: &dyn core::fmt::Display) -> ! {
    say!("Error: {what}: {why}");
    power::power_off(ExitStatus::KeelFailure, what)
}

/// Reads the boot information the loader left at physical `info`.
fn read_boot_info(magic: u32, info: u32) -> Result<BootInfo<'static>, BootInfoError> {
    let pa = u64::from(info);
    let va = keel_mm::layout::DIRECTMAP_BASE + pa;
    match magic {
        bootinfo::MULTIBOOT2_MAGIC => {
            // SAFETY: a multiboot2 loader left a valid information structure at `info`
            // (below 4 GiB, so inside the boot direct map, and inside the final direct
            // map because it is then reserved); nothing writes it afterwards. `load`
            // validates its size and end tag.
            let mbi = unsafe {
                multiboot2::BootInformation::load(va as *const multiboot2::BootInformationHeader)
            }
            .map_err(|_| BootInfoError::BadMultiboot2)?;
            // The structure lives for as long as keel runs.
            let mbi: &'static multiboot2::BootInformation<'static> = keep_boot_information(mbi);
            bootinfo::from_multiboot2(mbi, pa)
        }
        bootinfo::MULTIBOOT1_MAGIC => bootinfo::from_multiboot1(pa, |pa, len| {
            let end = pa.checked_add(len as u64)?;
            (end <= 1 << 32).then(|| {
                // SAFETY: [pa, end) is below 4 GiB, mapped by the boot direct map (and,
                // once reserved, by keel's own); boot data is never written by keel.
                unsafe {
                    core::slice::from_raw_parts(
                        (keel_mm::layout::DIRECTMAP_BASE + pa) as *const u8,
                        len,
                    )
                }
            })
        }),
        other => Err(BootInfoError::BadMagic(other)),
    }
}

/// Keeps the one `BootInformation` handle in a static, before the heap exists.
fn keep_boot_information(
    mbi: multiboot2::BootInformation<'static>,
) -> &'static multiboot2::BootInformation<'static> {
    static SLOT: spin::Once<multiboot2::BootInformation<'static>> = spin::Once::new();
    SLOT.call_once(|| mbi)
}

static TIMER_FIRED: AtomicBool = AtomicBool::new(false);

fn timer_check_irq(_frame: &mut traps::TrapFrame) {
    TIMER_FIRED.store(true, Ordering::Release);
    apic::eoi();
}

/// Sets up the LAPIC, calibrates it and the TSC, and proves the timer interrupt
/// arrives: arms a one-shot and waits for it with interrupts on.
fn init_timer(cpu_info: &CpuInfo, pm: Option<time::PmTimer>) {
    pic::disable();
    let mode = apic::init(cpu_info.x2apic, keel_arch::paging::FIXMAP_LAPIC);
    let cal = time::calibrate(pm);
    TSC_KHZ.store(
        (cal.tsc_hz / 1000).min(u64::from(u32::MAX)) as u32,
        Ordering::Relaxed,
    );
    say!(
        "Timer: TSC {} kHz, LAPIC timer {} kHz (measured against the {}), {:?}, TSC-deadline: {}",
        cal.tsc_hz / 1000,
        cal.lapic_hz / 1000,
        cal.reference,
        mode,
        if cpu_info.tsc_deadline { "yes" } else { "no" }
    );
    traps::register_irq(traps::TIMER_VECTOR, timer_check_irq);
    let start = cpu::rdtsc();
    if cpu_info.tsc_deadline {
        apic::timer_deadline(start + cal.tsc_hz * TIMER_CHECK_US / 1_000_000);
    } else {
        apic::timer_oneshot(
            (cal.lapic_hz * TIMER_CHECK_US / 1_000_000).min(u64::from(u32::MAX)) as u32,
        );
    }
    let limit = cal.tsc_hz.max(1); // one second
    while !TIMER_FIRED.load(Ordering::Acquire) && cpu::rdtsc().wrapping_sub(start) < limit {
        // Re-checked after every interrupt; the calibration-derived limit bounds the
        // wait should the interrupt never come.
        cpu::enable_interrupts_and_halt();
    }
    cpu::disable_interrupts();
    let elapsed_us = cpu::rdtsc().wrapping_sub(start) * 1_000_000 / cal.tsc_hz.max(1);
    apic::timer_stop();
    clock::init(
        cpu::rdtsc(),
        cal.tsc_hz,
        cal.lapic_hz,
        cpu_info.tsc_deadline,
    );
    if TIMER_FIRED.load(Ordering::Acquire) {
        say!("Timer: LAPIC timer interrupt after {elapsed_us} us (asked for {TIMER_CHECK_US} us)");
    } else {
        log::error!(
            "Timer: no LAPIC timer interrupt within {elapsed_us} us; keel's timer does not work here"
        );
    }
}

#[unsafe(no_mangle)]
pub extern "C" fn keel_start(magic: u32, info: u32) -> ! {
    // 1. Somewhere to report to, and exceptions that report.
    let _ = console::init(
        console::COM1_BASE,
        uart_config(&ComConfig::default(), console::COM1_BASE),
    );
    gdt::init();
    traps::init();
    let protection = keel_arch::pv::init_cpu();

    // 2. What the loader and the user said.
    let boot = match read_boot_info(magic, info) {
        Ok(b) => b,
        Err(e) => early_failure("boot information", &e),
    };
    let mut unknown: [&str; 32] = [""; 32];
    let mut unknown_count = 0;
    let parsed = cmdline::parse(boot.cmdline, |w| {
        if let Some(slot) = unknown.get_mut(unknown_count) {
            *slot = w;
        }
        unknown_count += 1;
    });
    let opts = parsed.unwrap_or_default();
    match opts.console {
        Console::Com1 => {
            if opts.com1 != ComConfig::default()
                && let Err(e) = console::init(
                    opts.com1.io_base,
                    uart_config(&opts.com1, opts.com1.io_base),
                )
            {
                say!(
                    "Warning: com1={:?} could not be used ({e:?}); keeping the default console",
                    opts.com1
                );
                let _ = console::init(
                    console::COM1_BASE,
                    uart_config(&ComConfig::default(), console::COM1_BASE),
                );
            }
        }
        Console::None => console::shutdown(),
    }
    logger::init(opts.loglvl);
    power::set_debug_exit_port(opts.debug_exit);

    say!("keel {VERSION} x86_64 hypervisor (Xen-compatible guest ABI)");
    say!("Command line: {}", boot.cmdline);
    CMDLINE.call_once(|| boot.cmdline);
    match boot.protocol {
        Protocol::Multiboot2 => say!("Boot: multiboot2 from {}", boot.loader),
        Protocol::Multiboot1 => say!("Boot: multiboot (v1) from {}", boot.loader),
    }
    for w in &unknown[..unknown_count.min(unknown.len())] {
        log::warn!("unknown command-line option '{w}' ignored");
    }
    if unknown_count > unknown.len() {
        log::warn!(
            "{} more unknown command-line options ignored",
            unknown_count - unknown.len()
        );
    }

    // 3. Memory.
    let img = image::layout();
    let report = match memory::init(&boot, &img) {
        Ok(r) => r,
        Err(e) => early_failure("memory", &e),
    };
    let cpu_info = CpuInfo::detect();
    let xapic = (!cpu_info.x2apic).then(apic::base_phys);
    if let Err(e) = memory::switch_address_space(&img, cpu_info.nx, cpu_info.page_1g, xapic) {
        early_failure("page tables", &e);
    }
    if let Err(e) = memory::init_heap() {
        early_failure("heap", &e);
    }
    say!(
        "Memory: {} MiB usable, {} frames free (image at {:#x}..{:#x}, {} KiB)",
        report.usable_bytes >> 20,
        memory::free_frames(),
        img.phys.0,
        img.phys.1,
        (img.phys.1 - img.phys.0) >> 10
    );
    log::debug!(
        "Frames: {} were free before keel's own page tables and heap",
        report.free_frames
    );

    // 4. ACPI.
    let platform = acpi::init(boot.rsdp);
    let pm_timer = match &platform {
        Ok(p) => {
            say!("ACPI: RSDP at {:#x}", p.rsdp);
            say!(
                "ACPI: {} CPU(s), LAPIC at {:#x}, {} IOAPIC(s)",
                p.cpus,
                p.lapic_addr,
                p.ioapics
            );
            match p.sleep {
                Ok(s) => power::set_acpi_sleep(s),
                Err(e) => log::warn!("ACPI: keel will not be able to power off: {e}"),
            }
            p.pm_timer
        }
        Err(e) => {
            log::warn!("ACPI: {e}; keel will not be able to power off");
            None
        }
    };

    // 5. The CPU, virtualization, time.
    say!(
        "CPU: vendor {}, family {:#x} model {:#x} stepping {}, \"{}\"",
        cpu_info.vendor_str(),
        cpu_info.family,
        cpu_info.model,
        cpu_info.stepping,
        cpu_info.brand_str()
    );
    let onoff = |b: bool| if b { "on" } else { "not offered by the CPU" };
    say!(
        "Protection: SMEP {}, SMAP {}",
        onoff(protection.smep),
        onoff(protection.smap)
    );
    HOST_VENDOR.call_once(|| match cpu_info.vendor {
        keel_arch::cpu::Vendor::Amd => keel_x86::cpuid_policy::Vendor::Amd,
        _ => keel_x86::cpuid_policy::Vendor::Intel,
    });
    let hvm = HvmSupport::detect(&cpu_info);
    say!("HVM: {hvm}");
    if !hvm.has_hap() && !matches!(hvm, HvmSupport::None) {
        log::warn!(
            "HVM: no EPT/NPT: PVH and HVM guests will need shadow paging (not yet implemented)"
        );
    }
    init_timer(&cpu_info, pm_timer);
    cpu::enable_fxsave();

    // 6. The other CPUs.
    let ap_ids = platform
        .as_ref()
        .map(|p| p.ap_apic_ids.clone())
        .unwrap_or_default();
    smp::bring_up(&ap_ids, opts.max_cpus, &hvm, u64::from(tsc_khz()) * 1000);
    smp::check_remote_calls();

    // 7. What to run.
    if let Some(kind) = opts.debug_crash {
        let k = kind as u32;
        if opts.debug_crash_cpu != 0 && kind == cmdline::CrashKind::StackOverflow {
            // AP stacks have no guard page (smp.rs): the overflow would corrupt
            // memory instead of faulting.
            log::warn!(
                "debug-crash=stack-overflow needs the boot CPU's guard page: crashing CPU 0"
            );
        } else if opts.debug_crash_cpu != 0 {
            log::warn!(
                "debug-crash={kind:?} on CPU {}: crashing keel on purpose",
                opts.debug_crash_cpu
            );
            if !smp::crash_on(opts.debug_crash_cpu, k) {
                log::warn!(
                    "debug-crash-cpu={}: no such CPU online; crashing CPU 0",
                    opts.debug_crash_cpu
                );
            }
        }
        log::warn!("debug-crash={kind:?}: crashing keel on purpose");
        debug_crash(k);
    }
    if let Err(e) = parsed {
        say!("Error: command line: {e}");
        power::power_off(ExitStatus::Clean, "the command line is malformed");
    }
    launch(&boot, &hvm, &opts)
}

/// Crashes this CPU on purpose (`debug-crash=`), the kind by its index in
/// [`cmdline::CrashKind`].
pub fn debug_crash(kind: u32) -> ! {
    use keel_arch::selftest::Crash;
    keel_arch::selftest::crash(match kind {
        k if k == cmdline::CrashKind::PageFault as u32 => Crash::PageFault,
        k if k == cmdline::CrashKind::InvalidOpcode as u32 => Crash::InvalidOpcode,
        k if k == cmdline::CrashKind::StackOverflow as u32 => Crash::StackOverflow,
        _ => Crash::Panic,
    })
}

/// Decides what to build from the modules (`keel_builder::launch`), builds Dom0 and
/// the boot-time domUs, runs them all, and powers the machine off when they have
/// ended: cleanly if every domain asked to end, with a failure status if one crashed.
fn launch(boot: &BootInfo<'_>, hvm: &HvmSupport, opts: &cmdline::Options) -> ! {
    use keel_builder::launch::{self, ModuleInfo};
    let mods = boot.modules();
    let infos: alloc::vec::Vec<ModuleInfo<'_>> = mods
        .iter()
        .map(|m| ModuleInfo {
            string: m.string,
            bytes: memory::module_bytes(m.start, m.len()),
        })
        .collect();
    let plan = match launch::plan(&infos) {
        Ok(p) => p,
        Err(launch::LaunchError::NoModules) => {
            say!("No dom0 kernel given (no multiboot module): nothing to run");
            power::power_off(ExitStatus::Clean, "nothing to run");
        }
        Err(e) => {
            say!("Error: modules: {e}");
            power::power_off(ExitStatus::Clean, "nothing to run");
        }
    };
    for w in &plan.warnings {
        log::warn!("{w}");
    }
    if plan.dom0.is_none() && plan.domus.is_empty() {
        say!("No dom0 kernel given (no multiboot module): nothing to run");
        power::power_off(ExitStatus::Clean, "nothing to run");
    }
    // Per-CPU virtualization state first, so the frame count below covers exactly
    // what the domains take.
    if let Err(e) = domain::enable_hvm(hvm) {
        say!("HVM: cannot enable hardware virtualization: {e}");
        power::power_off(ExitStatus::Clean, "no hardware virtualization");
    }
    let frames_before = memory::free_frames();
    let sched = keel_sched::by_name(opts.sched.name(), percpu::nr_online())
        .unwrap_or_else(|| power::power_off(ExitStatus::KeelFailure, "no scheduler"));
    scheduler::init(sched);
    say!(
        "Scheduler: {} on {} pCPU(s)",
        scheduler::name(),
        percpu::nr_online()
    );

    if let Some(d0) = &plan.dom0 {
        let m = &mods[d0.kernel];
        // dom0_max_vcpus: one vCPU per pCPU unless limited (Xen's default).
        let vcpus = opts
            .dom0_max_vcpus
            .count(percpu::nr_online(), domain::MAX_VCPUS);
        match build_dom0(m, d0, mods, hvm, opts, vcpus) {
            Ok(d) => {
                // dom0_vcpus_pin: Dom0's vCPU i runs on pCPU i only.
                let nr = percpu::nr_online();
                let pin = opts.dom0_vcpus_pin;
                let mut warnings = alloc::vec::Vec::new();
                let place = domains::placement(
                    d.vcpus.len() as u32,
                    nr,
                    |v| {
                        pin.then(|| keel_sched::CpuSet::single(v % nr).ok())
                            .flatten()
                    },
                    |_| None,
                    &mut warnings,
                )
                .unwrap_or_default();
                if let Err(e) = domains::admit(d, &place) {
                    say!("dom0: cannot start: {e}");
                    power::power_off(ExitStatus::Clean, "dom0 cannot be built");
                }
            }
            Err(stop) => power::power_off(ExitStatus::Clean, stop),
        }
    }
    for du in &plan.domus {
        let du = match du {
            Ok(du) => du,
            Err(e) => {
                say!("domU: {e}");
                continue;
            }
        };
        if let Err(e) = build_domu(du, mods, hvm) {
            say!("d{} ({}): cannot build: {e}", du.id, du.config.name);
        }
    }
    if !domains::any() {
        say!("No domain could be built: nothing to run");
        power::power_off(ExitStatus::Clean, "nothing to run");
    }

    smp::start_run_loops(run::run_cpu);
    run::run_cpu(percpu::me());
    // The other pCPUs let go of the domains they held; the last reference frees
    // a domain's frames.
    let start = keel_arch::cpu::rdtsc();
    while domain::live_domains() != 0
        && keel_arch::cpu::rdtsc().wrapping_sub(start) < u64::from(tsc_khz()) * 5_000
    {
        keel_arch::cpu::pause();
    }

    let ended = core::mem::take(&mut *domains::ENDED.lock());
    let summary: alloc::vec::Vec<alloc::string::String> = ended
        .iter()
        .map(|e| alloc::format!("d{} {}", e.id, e.how))
        .collect();
    say!("All domains have ended: {}", summary.join(", "));
    let failed = ended.iter().any(|e| e.failed);
    say!(
        "Frames: {} free before the domains were built, {} after they ended",
        frames_before,
        memory::free_frames()
    );
    let why = match (failed, plan.dom0.is_some()) {
        (true, _) => "a domain failed",
        (false, true) => "dom0 has shut down",
        (false, false) => "every domain has ended",
    };
    power::power_off(
        if failed {
            ExitStatus::DomainFailure
        } else {
            ExitStatus::Clean
        },
        why,
    )
}

/// A kernel ready for the PVH builder: the module's own bytes (an ELF, or
/// anything that is not a bzImage, which the builder then refuses with its own
/// message), or a bzImage's payload decompressed into frames that go back to the
/// allocator once the domain is built.
enum KernelImage {
    Module(&'static [u8]),
    Unpacked(memory::ScratchBuffer),
}

impl KernelImage {
    fn bytes(&self) -> &[u8] {
        match self {
            KernelImage::Module(b) => b,
            KernelImage::Unpacked(buf) => buf.as_slice(),
        }
    }
}

/// Turns a kernel module into the ELF the PVH builder loads: a bzImage (what
/// `/boot/vmlinuz-*` is) is decompressed, anything else is passed on as it is.
fn unpack_kernel(bytes: &'static [u8]) -> Result<KernelImage, alloc::string::String> {
    use alloc::format;
    use keel_builder::bzimage::{self, BzError, KernelFormat};
    match bzimage::identify(bytes) {
        Ok(KernelFormat::BzImage { .. }) => {}
        // "HdrS" but a broken header: say so, rather than "no ELF magic".
        Err(e) if e != BzError::NotAKernel => return Err(format!("{e}")),
        _ => return Ok(KernelImage::Module(bytes)),
    }
    // The image may take at most half of what is free: the domain needs the rest.
    let limit = (memory::free_frames() * 4096 / 2) as usize;
    // The errors name the bzImage themselves ("bzImage payload is truncated ...").
    let (c, payload, size) = bzimage::payload(bytes, limit).map_err(|e| format!("{e}"))?;
    let mut buf = memory::ScratchBuffer::new(size).ok_or_else(|| {
        format!(
            "bzImage ({c}): no room to decompress {} MiB of kernel",
            size.div_ceil(1 << 20)
        )
    })?;
    let t0 = clock::now();
    bzimage::decompress(c, payload, buf.as_mut_slice())
        .map_err(|e| format!("bzImage payload: {e}"))?;
    log::info!(
        "bzImage: {} KiB of {c} decompressed to {} KiB in {} ms",
        payload.len() / 1024,
        size / 1024,
        (clock::now() - t0) / 1_000_000
    );
    Ok(KernelImage::Unpacked(buf))
}

/// Builds Dom0 from its kernel module (a PVH ELF) and its own modules (an initrd,
/// say). On failure, says why and returns what to power off with.
fn build_dom0(
    m: &keel_builder::bootinfo::Module<'_>,
    plan: &keel_builder::launch::Dom0Plan,
    mods: &[keel_builder::bootinfo::Module<'_>],
    hvm: &HvmSupport,
    opts: &cmdline::Options,
    vcpus: u32,
) -> Result<domain::Domain, &'static str> {
    let dom0_mem = &opts.dom0_mem;
    let name = m.name();
    // Xen's dom0= asks for a mode keel may not have (yet).
    let asked = match (opts.dom0_mode, opts.dom0_shadow) {
        (_, true) => Some("dom0=shadow: keel has no shadow paging yet"),
        _ => None,
    };
    if let Some(why) = asked {
        say!(
            "dom0: module {} '{name}': cannot build the domain: {why}",
            plan.kernel
        );
        return Err("dom0 cannot be built");
    }
    let Some(bytes) = memory::module_bytes(m.start, m.len()) else {
        say!(
            "dom0: module {} '{name}': not a loadable kernel: it lies outside memory keel maps ({:#x}..{:#x})",
            plan.kernel,
            m.start,
            m.end
        );
        return Err("no loadable dom0 kernel");
    };
    let image = match unpack_kernel(bytes) {
        Ok(i) => i,
        Err(e) => {
            say!(
                "dom0: module {} '{name}': not a loadable kernel: {e}",
                plan.kernel
            );
            return Err("no loadable dom0 kernel");
        }
    };
    let mut extra = alloc::vec::Vec::new();
    for &i in &plan.modules {
        let md = &mods[i];
        match memory::module_bytes(md.start, md.len()) {
            Some(b) => extra.push(keel_builder::pvh::ModuleSpec {
                bytes: b,
                cmdline: md.cmdline(),
            }),
            None => say!(
                "dom0: module {i} '{}' lies outside memory keel maps: not passed on",
                md.name()
            ),
        }
    }
    // What is free now, less what the p2m tables, VMCB/VMCS and keel's later needs take.
    let available = memory::free_frames() * 4096;
    let ram = match cmdline::dom0_mem_bytes(dom0_mem, available) {
        Ok(r) => r,
        Err(e) => {
            say!("dom0: dom0_mem: {e}");
            return Err("dom0 cannot be built");
        }
    };
    let spec = domain::PvhSpec {
        id: 0,
        name: "Domain-0",
        privileged: true,
        kernel: image.bytes(),
        cmdline: m.cmdline(),
        modules: &extra,
        ram_bytes: ram,
        max_bytes: ram,
        weight: 256,
        cap: 0,
        max_evtchn: channels::DEFAULT_MAX_EVTCHN,
        max_grant_frames: domains::DEFAULT_MAX_GRANT_FRAMES,
        max_grant_version: keel_builder::xlcfg::MAX_GRANT_VERSION,
        vcpus,
        max_vcpus: vcpus,
    };
    // The kernel's notes decide, unless dom0= asked for a mode: PV for a
    // kernel with only a PV entry, PVH otherwise (Xen's default is PV).
    let kind = keel_builder::pv::classify(spec.kernel);
    let built = match (opts.dom0_mode, kind) {
        (Some(cmdline::Dom0Mode::Pv), Ok(k)) if k.pv() => pv::build(&spec),
        (Some(cmdline::Dom0Mode::Pv), Ok(_)) => {
            say!(
                "dom0: module {} '{name}': cannot build the domain: dom0=pv: the kernel has no Xen PV entry (XEN_ELFNOTE_ENTRY)",
                plan.kernel
            );
            return Err("dom0 cannot be built");
        }
        (Some(cmdline::Dom0Mode::Pvh), Ok(keel_builder::pv::XenKernelKind::PvOnly)) => {
            say!(
                "dom0: module {} '{name}': cannot build the domain: dom0=pvh: the kernel has no PVH entry (XEN_ELFNOTE_PHYS32_ENTRY)",
                plan.kernel
            );
            return Err("dom0 cannot be built");
        }
        _ => domain::build_pvh(hvm, &spec),
    };
    let d = match built {
        Ok(d) => d,
        Err(e @ domain::BuildError::Kernel(_)) => {
            say!(
                "dom0: module {} '{name}': not a loadable kernel: {e}",
                plan.kernel
            );
            return Err("no loadable dom0 kernel");
        }
        Err(e) => {
            say!(
                "dom0: module {} '{name}': cannot build the domain: {e}",
                plan.kernel
            );
            return Err("dom0 cannot be built");
        }
    };
    say!(
        "d0: {}, {} MiB, {} vCPU(s), {} module(s), entry {:#x}, command line '{}'",
        d.guest_type.name(),
        ram >> 20,
        vcpus,
        extra.len(),
        d.vcpus[0].arch().rip(),
        m.cmdline()
    );
    Ok(d)
}

/// Builds one boot-time domU from its xl.cfg plan and admits it to the world.
fn build_domu(
    du: &keel_builder::launch::DomUPlan,
    mods: &[keel_builder::bootinfo::Module<'_>],
    hvm: &HvmSupport,
) -> Result<(), alloc::string::String> {
    use alloc::format;
    let c = &du.config;
    let km = &mods[du.kernel];
    let kernel = memory::module_bytes(km.start, km.len()).ok_or_else(|| {
        format!(
            "kernel module '{}' lies outside memory keel maps",
            km.name()
        )
    })?;
    let image = unpack_kernel(kernel).map_err(|e| format!("kernel module '{}': {e}", km.name()))?;
    let mut extra = alloc::vec::Vec::new();
    if let Some(r) = du.ramdisk {
        let rm = &mods[r];
        let bytes = memory::module_bytes(rm.start, rm.len()).ok_or_else(|| {
            format!(
                "ramdisk module '{}' lies outside memory keel maps",
                rm.name()
            )
        })?;
        extra.push(keel_builder::pvh::ModuleSpec { bytes, cmdline: "" });
    }
    for w in &c.warnings {
        log::warn!("d{} ({}): {w}", du.id, c.name);
    }
    if c.max_vcpus > domain::MAX_VCPUS {
        return Err(format!(
            "maxvcpus = {}: keel gives a domain at most {} vCPUs",
            c.max_vcpus,
            domain::MAX_VCPUS
        ));
    }
    let ram = c.memory_mib.saturating_mul(1 << 20);
    let max = c.maxmem_mib.max(c.memory_mib).saturating_mul(1 << 20);
    // Keep what keel itself needs: the domain's tables and frames are small, but
    // refuse a domU that would leave less than 4 MiB free.
    if ram.saturating_add(4 << 20) > memory::free_frames() * 4096 {
        return Err(format!("memory = {}: not enough free memory", c.memory_mib));
    }
    let sched = c.sched_params();
    let mut warnings = alloc::vec::Vec::new();
    let place = domains::placement(
        c.max_vcpus,
        percpu::nr_online(),
        |v| c.cpus.as_ref().and_then(|a| a.for_vcpu(v).copied()),
        |v| c.cpus_soft.as_ref().and_then(|a| a.for_vcpu(v).copied()),
        &mut warnings,
    )?;
    for w in warnings {
        log::warn!("d{} ({}): {w}", du.id, c.name);
    }
    let spec = domain::PvhSpec {
        id: du.id,
        name: &c.name,
        privileged: false,
        kernel: image.bytes(),
        cmdline: &du.cmdline,
        modules: &extra,
        ram_bytes: ram,
        max_bytes: max,
        weight: sched.weight,
        cap: sched.cap,
        max_evtchn: c.max_event_channels,
        max_grant_frames: c.max_grant_frames,
        max_grant_version: c.max_grant_version,
        vcpus: c.vcpus,
        max_vcpus: c.max_vcpus,
    };
    let d = if c.kind == keel_builder::xlcfg::DomainType::Pv {
        match keel_builder::pv::classify(spec.kernel) {
            Ok(k) if k.pv() => pv::build(&spec).map_err(|e| format!("{e}"))?,
            Ok(_) => {
                return Err(alloc::string::String::from(
                    "type = \"pv\" needs a kernel with a Xen PV entry (XEN_ELFNOTE_ENTRY), and this one has none",
                ));
            }
            Err(e) => return Err(format!("{e}")),
        }
    } else {
        domain::build_pvh(hvm, &spec).map_err(|e| format!("{e}"))?
    };
    say!(
        "d{}: {}, {} MiB, {} vCPU(s) ({} at most), {} module(s), entry {:#x}, command line '{}' ({})",
        du.id,
        d.guest_type.name(),
        ram >> 20,
        c.vcpus,
        c.max_vcpus,
        extra.len(),
        d.vcpus[0].arch().rip(),
        du.cmdline,
        c.name
    );
    domains::admit(d, &place)
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    power::enter_fatal();
    match info.location() {
        Some(l) => console::emergency_write_fmt(format_args!(
            "(KEEL) FATAL: panic at {}:{}: {}\n",
            l.file(),
            l.line(),
            info.message()
        )),
        None => {
            console::emergency_write_fmt(format_args!("(KEEL) FATAL: panic: {}\n", info.message()))
        }
    }
    let rbp: u64;
    // SAFETY: reads RBP, the current frame pointer, for the stack walk.
    unsafe {
        core::arch::asm!("mov {}, rbp", out(reg) rbp, options(nomem, nostack, preserves_flags))
    };
    keel_arch::backtrace::print(0, rbp);
    power::fatal_stop()
}
