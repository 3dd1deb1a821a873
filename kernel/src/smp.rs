//! The other CPUs: bringing up every CPU the MADT lists (up to `nr_cpus=` /
//! `maxcpus=`), and what an AP does once it is up.
//!
//! # Bring-up ([`bring_up`], on the boot CPU, after the timer is calibrated)
//! For each AP in MADT order: its own stack (16 frames), three IST stacks, a GDT
//! and TSS, and a [`PerCpu`] area; then `arch::smp::start_ap` (INIT-SIPI-SIPI) and
//! a wait for the AP to say it is online. On the AP, `keel_ap_start` loads its
//! descriptor tables, the shared IDT, its local APIC (in the boot CPU's mode), the
//! FXSAVE bits of CR4 and its VMX root / SVM host state, and only then marks itself
//! online: an online CPU can run vCPUs. A CPU that does not answer in time, or
//! cannot turn on virtualization, is reported and left out; keel runs on the rest.
//!
//! # After bring-up
//! An AP waits with interrupts on ([`idle`]) until the boot CPU has built the
//! domains and starts the run loops ([`start_run_loops`]); then it runs its own run
//! loop. keel's fatal path reaches it by NMI (`arch::power::enter_fatal`), and a
//! kick IPI wakes it.
//!
//! # Locking
//! The online list (`percpu::set_online`) is written once, by the boot CPU, after
//! the last AP came up, and only read afterwards. [`NEXT_AP`] hands one AP its tables: the boot CPU fills it, the
//! AP takes it; APs start one at a time, so they never contend. The frame allocator
//! and heap locks are taken by both sides during bring-up, never nested.
//!
//! # Hazards
//! AP stacks come from the direct map, which has no guard pages: an AP that
//! overflows its 64 KiB stack corrupts the frame below instead of faulting. The
//! boot CPU's stack has a guard page (`arch::boot`).

use alloc::boxed::Box;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicU32, Ordering};

use keel_arch::gdt::{self, CpuTables, IST_STACK_SIZE};
use keel_arch::hvm::HvmSupport;
use keel_arch::percpu::{MAX_CPUS, PerCpu};
use keel_arch::{apic, cpu, traps};
use keel_mm::layout::directmap_va;

use crate::logger::say;
use crate::memory::{FRAMES, zero_frames};
use crate::percpu;

/// Frames of each AP's stack (64 KiB, like the boot CPU's).
const AP_STACK_FRAMES: u64 = 16;
/// How long an AP may take to come online: emulators are slow (Bochs runs every
/// CPU in one thread), so be generous; real hardware takes microseconds.
const AP_TIMEOUT_US: u64 = 2_000_000;

/// What the AP being started takes for itself: its GDT/TSS and IST stack tops.
static NEXT_AP: spin::Mutex<Option<(&'static mut CpuTables, [u64; 3])>> = spin::Mutex::new(None);
/// The virtualization the boot CPU found, for the APs to turn on.
static HVM: spin::Once<HvmSupport> = spin::Once::new();

/// What APs run once domains exist (the run loop, handed down by `main`), set
/// by [`start_run_loops`].
static AP_WORK: spin::Once<fn(u32)> = spin::Once::new();

/// Lets every AP run `work(index)` (the run loop) and wakes them.
pub fn start_run_loops(work: fn(u32)) {
    AP_WORK.call_once(|| work);
    for cpu in 1..percpu::nr_online() {
        percpu::kick(cpu);
    }
}

/// `count` zeroed frames, their direct-map address.
fn alloc_frames(count: u64) -> Option<u64> {
    let first = FRAMES.lock().as_mut()?.alloc_contiguous(count, 1).ok()?;
    zero_frames(first, count);
    Some(directmap_va(first.hpa()))
}

/// Brings up the APs `ap_apic_ids` lists, at most `limit` CPUs in all (the boot
/// CPU counts), and says how many came up.
pub fn bring_up(ap_apic_ids: &[u32], limit: Option<u32>, hvm: &HvmSupport, tsc_hz: u64) {
    HVM.call_once(|| *hvm);
    traps::register_irq(traps::KICK_VECTOR, kick_irq);
    traps::register_irq(traps::CALL_VECTOR, call_irq);
    let bsp = keel_arch::percpu::BSP;
    bsp.set_apic_id(apic::id());
    bsp.set_online();
    let mut up: Vec<&'static PerCpu> = Vec::with_capacity(ap_apic_ids.len() + 1);
    up.push(bsp);
    let total = ap_apic_ids.len() + 1;
    let want = limit
        .map_or(total, |l| (l as usize).min(total))
        .min(MAX_CPUS);
    let trampoline = crate::memory::ap_trampoline();
    for &apic_id in ap_apic_ids {
        if up.len() >= want {
            break;
        }
        if apic_id == bsp.apic_id() {
            continue;
        }
        let Some(trampoline) = trampoline else {
            log::warn!("SMP: no free page below 1 MiB to start APs in: keel runs on CPU 0 alone");
            break;
        };
        let index = up.len() as u32;
        let (Some(stack), Some(ist)) = (
            alloc_frames(AP_STACK_FRAMES),
            alloc_frames(3 * (IST_STACK_SIZE as u64 / 4096)),
        ) else {
            log::warn!("SMP: no memory for CPU {index}'s stacks: not started");
            break;
        };
        let ist_tops = [1u64, 2, 3].map(|i| ist + i * IST_STACK_SIZE as u64);
        let area: &'static PerCpu = Box::leak(Box::new(PerCpu::new(index, apic_id)));
        area.seal();
        area.set_stack(stack, stack + AP_STACK_FRAMES * 4096);
        let Some(tables_va) = alloc_frames(CpuTables::SIZE.div_ceil(4096) as u64) else {
            log::warn!("SMP: no memory for CPU {index}'s GDT: not started");
            break;
        };
        // SAFETY: `alloc_frames` just gave these frames, zeroed and page aligned,
        // to this AP alone, and they are never freed.
        let tables = unsafe { CpuTables::from_zeroed(tables_va) };
        *NEXT_AP.lock() = Some((tables, ist_tops));
        let start = keel_arch::smp::ApStart {
            trampoline,
            cr3: cpu::read_cr3(),
            stack_top: stack + AP_STACK_FRAMES * 4096,
            tsc_hz,
            timeout_us: AP_TIMEOUT_US,
        };
        // SAFETY: the trampoline page was reserved for this at boot and is mapped
        // by the direct map; CR3 is keel's own (the same on every CPU); the stack
        // and the area were just made for this AP alone and are never freed; APs
        // are started one at a time (this loop, on the boot CPU).
        match unsafe { keel_arch::smp::start_ap(area, &start) } {
            Ok(()) => up.push(area),
            Err(e) => {
                // Its stack and tables stay allocated: it might still be running.
                NEXT_AP.lock().take();
                log::warn!("SMP: CPU {index} (APIC id {apic_id}) not started: {e}");
            }
        }
    }
    let ids: Vec<alloc::string::String> = up
        .iter()
        .map(|c| alloc::format!("{}", c.apic_id()))
        .collect();
    say!(
        "CPUs: {} of {} up (APIC ids {}){}",
        up.len(),
        total,
        ids.join(" "),
        if want < total {
            " (limited by nr_cpus/maxcpus)"
        } else {
            ""
        }
    );
    percpu::set_online(up);
}

/// The kick IPI's handler: it only wakes the CPU (or makes a running guest exit).
fn kick_irq(_frame: &mut traps::TrapFrame) {
    apic::eoi();
}

/// The remote-call IPI's handler.
fn call_irq(_frame: &mut traps::TrapFrame) {
    apic::eoi();
    percpu::run_mailbox();
}

/// Counts remote calls answered at boot ([`check_remote_calls`]).
static ANSWERED: AtomicU32 = AtomicU32::new(0);

fn answer(_arg: u64) {
    ANSWERED.fetch_add(1, Ordering::AcqRel);
}

/// Proves the remote-call path on every AP at boot: each runs a function the
/// boot CPU posts, and the boot CPU waits for all of them. Says how many did.
pub fn check_remote_calls() {
    let n = percpu::nr_online().saturating_sub(1);
    if n == 0 {
        return;
    }
    let ran = percpu::call_others(answer, 0);
    say!(
        "SMP: remote calls answered by {} of {} APs",
        ANSWERED.load(Ordering::Acquire),
        ran.max(n)
    );
}

/// Makes CPU `cpu` crash on purpose (`debug-crash-cpu=`) by a remote call that
/// never returns: the AP's fatal path stops this CPU with an NMI while it waits.
/// `false` if there is no such online AP.
pub fn crash_on(cpu: u32, kind: u32) -> bool {
    if cpu == 0 || percpu::online().get(cpu as usize).is_none() {
        return false;
    }
    percpu::call(cpu, |kind| crate::debug_crash(kind as u32), u64::from(kind))
}

/// Where an AP's Rust begins (from `arch::boot`'s `ap_start64_high`), on its own
/// stack, with GS pointing at `area`.
#[unsafe(no_mangle)]
pub extern "C" fn keel_ap_start(area: &'static PerCpu) -> ! {
    let Some((tables, ist)) = NEXT_AP.lock().take() else {
        // Started without hand-off: nothing to run on. Never online.
        cpu::halt_forever();
    };
    gdt::init_ap(tables, ist);
    traps::init();
    let _ = keel_arch::pv::init_cpu();
    cpu::enable_fxsave();
    apic::init_ap();
    if let Some(hvm) = HVM.get()
        && let Err(e) = crate::domain::enable_hvm(hvm)
    {
        log::error!(
            "CPU {}: cannot enable hardware virtualization: {e}; left out",
            area.index()
        );
        cpu::halt_forever();
    }
    log::debug!("CPU {} (APIC id {}) online", area.index(), area.apic_id());
    area.set_online();
    idle(area)
}

/// An AP's life: wait for interrupts (kicks, remote calls); once domains exist,
/// run the run loop (which returns when no domain is left), then wait again.
fn idle(area: &'static PerCpu) -> ! {
    let mut ran = false;
    loop {
        cpu::enable_interrupts_and_halt();
        cpu::disable_interrupts();
        if !ran && let Some(work) = AP_WORK.get() {
            ran = true;
            let _ = percpu::take_kicked();
            work(area.index());
        }
    }
}
