//! The hypercall dispatcher: from a guest's registers to a Xen-compatible
//! result.
//!
//! # What
//!
//! [`dispatch`] takes the hypercall number and arguments the kernel read
//! from the calling vCPU ([`HypercallArgs`]), runs the handler named after
//! the Xen op (`xen_version`, `console_io`, `sched_op`, `memory_op`,
//! `hvm_op`, `event_channel_op` and its legacy `_compat` form, `vcpu_op`,
//! `set_timer_op`, `grant_table_op`, `multicall`; one submodule each)
//! against the calling domain (the [`Domain`] trait), and returns an
//! [`Outcome`]: the value for `rax`/`eax` and what the kernel must do with
//! the vCPU next.
//!
//! The hypercalls only PV guests have are routed for a domain that says it
//! is one ([`Domain::is_pv`]) calling in 64-bit mode, and are `-ENOSYS` for
//! every other caller: `mmu_update`, `mmuext_op`, `update_va_mapping` and
//! `_otherdomain` (submodule `mmu_update`); `set_trap_table`,
//! `set_callbacks`, `callback_op` (`callback_op`); `set_gdt`,
//! `update_descriptor` (`descriptor_tables`); `stack_switch`,
//! `fpu_taskswitch`, `set_debugreg`, `get_debugreg`, `set_segment_base`,
//! `iret`, `vm_assist` and `physdev_op`'s `set_iopl` (`pv_misc`). The
//! submodules are grouped as Xen's sources are (`xen/arch/x86/mm.c`,
//! `pv/callback.c`, `pv/descriptor-tables.c`, `pv/misc-hypercalls.c`).
//!
//! The split with the kernel: the dispatcher owns the *ABI* (registers,
//! layouts of both widths, copy-in/copy-out, continuations) and every check
//! Xen makes on the arguments alone (ranges, sizes, alignment, which vCPU
//! or domain an argument may name, `DOMID_SELF`); the kernel, through
//! [`Domain`]'s *semantic* methods, owns state (ports, grant tables,
//! timers, memory) and answers with plain values or a Xen errno. Each trait
//! method says which checks are already done and which errors remain the
//! kernel's.
//!
//! # Calling convention (Xen `arch-x86/xen-x86_64.h`, `xen-x86_32.h`,
//! `xen/arch/x86/hvm/hypercall.c`)
//!
//! - 64-bit mode: number in `rax`, arguments in `rdi, rsi, rdx, r10, r8`
//!   (and `r9` for a sixth); result in `rax`. Native layouts.
//! - Any other mode (real, 16- or 32-bit protected): number in `eax`,
//!   arguments in `ebx, ecx, edx, esi, edi` (and `ebp`); result in `eax`.
//!   Compat layouts (32-bit `xen_ulong_t`, `xen_pfn_t`, guest handles, and
//!   4-byte-aligned `uint64_t`).
//!   The dispatcher truncates the number and every argument to 32 bits for
//!   such a caller, so the kernel may pass whole 64-bit registers.
//! - A caller at CPL > 0 (and in 32/64-bit mode) gets `-EPERM` without
//!   dispatch: Xen's `hvm_hypercall` checks this, and so must the kernel
//!   before calling [`dispatch`] (it owns the segment state).
//!
//! # Invariants
//!
//! - Guest input is an allegation. Guest memory is reached only through
//!   [`Domain::copy_from_guest`]/[`Domain::copy_to_guest`]; handlers copy an
//!   argument in as bytes, decode it into an owned value, work on that, and
//!   encode and copy the result out. A range that would wrap the caller's
//!   address space (2^32 for a 32-bit caller) is `-EFAULT` before the
//!   domain is asked.
//! - `DOMID_SELF` never reaches the kernel: a domain id argument is
//!   resolved to the caller's own id, and checked as Xen's default XSM
//!   policy does (another domain: `-ESRCH` if it does not exist, `-EPERM`
//!   unless the caller is privileged), before a trait method sees it. The
//!   exception is the PV MMU's frame owner (`foreigndom` of `mmu_update`,
//!   bits 15:0, and of `mmuext_op`; `update_va_mapping_otherdomain`'s
//!   `domid`), passed as the guest gave it: Xen's rules for it
//!   (`get_pg_owner`: `DOMID_SELF` is the caller but its own id is
//!   `-ESRCH`; `DOMID_IO`, `DOMID_XEN`) differ, and are the kernel's.
//! - No allocation, and no loop whose length the guest controls beyond a
//!   fixed bound. Where Xen preempts a long operation, keel does so after a
//!   fixed budget with a continuation ([`Action::Preempted`]), encoded as
//!   Xen encodes it: console output ([`CONSOLE_WRITE_BUDGET`] bytes per
//!   entry), `XENMEM_populate_physmap`/`decrease_reservation`
//!   ([`MEMOP_PAGE_BUDGET`] pages, progress in `cmd`'s high bits), and
//!   grant-table map/unmap/copy ([`GNTTAB_OP_BUDGET`] entries, the array
//!   pointer advanced and `count` reduced), `mmu_update` and `mmuext_op`
//!   ([`PV_MMU_BUDGET`] requests, `count` reduced with
//!   `MMU_UPDATE_PREEMPTED` set, progress in `*pdone`), `set_trap_table`
//!   ([`TRAP_TABLE_BUDGET`] records, the pointer advanced) and `multicall`
//!   ([`MULTICALL_BUDGET`] entries, or an entry's own continuation, kept in
//!   the entry). `SCHEDOP_poll` reads at most [`SCHED_POLL_MAX_PORTS`]
//!   ports. A `multicall` entry is one more hypercall, run with the same
//!   bounds; multicalls do not nest.
//! - Nothing here panics on guest input (property-tested).
//! - Unknown hypercalls and sub-ops return `-ENOSYS`, as Xen does.
//!
//! # Locking
//!
//! None here: [`dispatch`] runs on the calling vCPU with `&mut` access to
//! its domain; the kernel's `Domain` implementation does whatever locking
//! the domain (and, for interdomain event channels, grant copies and maps,
//! the other domain, in domid order) needs.

mod callback_op;
mod console_io;
mod descriptor_tables;
mod evtchn_op;
mod grant_table_op;
mod hvm_op;
mod memory_op;
mod mmu_update;
mod multicall;
mod pv_misc;
mod sched_op;
mod set_timer_op;
mod vcpu_op;
mod xen_version;

#[cfg(test)]
mod fake;
#[cfg(test)]
mod tests;

pub use callback_op::TRAP_TABLE_BUDGET;
pub use console_io::CONSOLE_WRITE_BUDGET;
pub use grant_table_op::GNTTAB_OP_BUDGET;
pub use memory_op::MEMOP_PAGE_BUDGET;
pub use mmu_update::PV_MMU_BUDGET;
pub use multicall::MULTICALL_BUDGET;
pub use sched_op::SCHED_POLL_MAX_PORTS;
pub use vcpu_op::update_secondary_system_time;

use crate::abi::Errno;
use crate::abi::domid::{DOMID_FIRST_RESERVED, DOMID_SELF, DomId};
use crate::abi::evtchn::EvtchnPort;
use crate::abi::features::XENFEAT_NR_SUBMAPS;
use crate::abi::hvm::VcpuHvmContext;
use crate::abi::hypercall as nr;
use crate::abi::memory::E820Entry;
use crate::abi::mmu::{MmuUpdate, MmuextOp};
use crate::abi::pv::TrapInfo;
use crate::abi::sched;
use crate::abi::vcpu::VcpuRunstateInfo;
use crate::abi::version::XenDomainHandle;
use crate::abi::xen::VcpuTimeInfo;

/// Width of the calling vCPU's code, which selects the argument registers
/// and the structure layouts.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum GuestWidth {
    /// Real mode, 16- or 32-bit protected mode (paging on or off): arguments
    /// in `ebx, ecx, edx, esi, edi, ebp`, Xen's compat layouts.
    Bits32,
    /// 64-bit (long) mode: arguments in `rdi, rsi, rdx, r10, r8, r9`, native
    /// layouts.
    Bits64,
}

impl GuestWidth {
    /// Mask of the bits a register (and so an argument) has at this width.
    #[must_use]
    pub const fn mask(self) -> u64 {
        match self {
            GuestWidth::Bits32 => 0xffff_ffff,
            GuestWidth::Bits64 => u64::MAX,
        }
    }
}

/// One hypercall as the kernel read it from the vCPU.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct HypercallArgs {
    /// `rax`/`eax`: the hypercall number (`abi::hypercall::*`).
    pub nr: u64,
    /// The six argument registers, in order, for `width`.
    pub args: [u64; 6],
    /// The calling vCPU's mode.
    pub width: GuestWidth,
}

impl HypercallArgs {
    /// The call with the number and arguments cut to the caller's width.
    #[must_use]
    pub fn normalized(&self) -> HypercallArgs {
        let m = self.width.mask();
        HypercallArgs {
            nr: self.nr & m,
            args: self.args.map(|a| a & m),
            width: self.width,
        }
    }
}

/// Everything `XENVER_*` reports. Borrowed from the kernel, which owns the
/// strings. Strings are bytes without a NUL; longer than the legacy fixed
/// buffers they are truncated (with a NUL kept), as Xen's `safe_strcpy`.
#[derive(Clone, Copy, Debug)]
pub struct VersionInfo<'a> {
    /// `XENVER_version`, high half.
    pub major: u16,
    /// `XENVER_version`, low half.
    pub minor: u16,
    /// `XENVER_extraversion`, e.g. `b".0-keel"`.
    pub extraversion: &'a [u8],
    /// `XENVER_compile_info`.
    pub compiler: &'a [u8],
    pub compile_by: &'a [u8],
    pub compile_domain: &'a [u8],
    pub compile_date: &'a [u8],
    /// `XENVER_capabilities`, e.g. `b"hvm-3.0-x86_32 hvm-3.0-x86_64"`.
    pub capabilities: &'a [u8],
    /// `XENVER_changeset`.
    pub changeset: &'a [u8],
    /// `XENVER_commandline`: the hypervisor's command line.
    pub commandline: &'a [u8],
    /// `XENVER_build_id`; empty means "no build id" (`-ENODATA`).
    pub build_id: &'a [u8],
    /// `XENVER_get_features` submaps for this domain (`XENFEAT_*` bits).
    pub features: [u32; XENFEAT_NR_SUBMAPS as usize],
    /// `XENVER_guest_handle`: the domain's UUID.
    pub handle: XenDomainHandle,
}

/// The state of an event channel as `EVTCHNOP_status` reports it
/// ([`Domain::evtchn_status`]); the dispatcher encodes it into
/// `evtchn_status` and its union.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum EvtchnState {
    /// Not in use, or reserved (port 0): `EVTCHNSTAT_closed`.
    Closed,
    /// Waiting for `remote_dom` to bind: `EVTCHNSTAT_unbound`.
    Unbound {
        /// The domain allowed to bind (an id, never `DOMID_SELF`).
        remote_dom: DomId,
    },
    /// Connected to `remote_port` of `remote_dom`: `EVTCHNSTAT_interdomain`.
    Interdomain {
        /// The peer domain.
        remote_dom: DomId,
        /// The peer's port.
        remote_port: EvtchnPort,
    },
    /// Bound to a physical IRQ: `EVTCHNSTAT_pirq`.
    Pirq(u32),
    /// Bound to a VIRQ: `EVTCHNSTAT_virq`.
    Virq(u32),
    /// An IPI channel: `EVTCHNSTAT_ipi`.
    Ipi,
}

/// What [`Domain::evtchn_status`] returns.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct EvtchnStatusInfo {
    /// The channel's state.
    pub state: EvtchnState,
    /// The vCPU it notifies.
    pub vcpu: u32,
}

/// [`Domain::sched_poll`]'s verdict.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum PollResult {
    /// Return to the guest at once: an event already needs delivery to this
    /// vCPU, or one of the ports is pending.
    Ready,
    /// Nothing pending: block the vCPU ([`Action::Poll`]).
    Block,
}

/// A domain's grant-table size, as `GNTTABOP_query_size` reports it.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct GnttabSize {
    /// Frames the table has now.
    pub nr_frames: u32,
    /// Frames it may grow to.
    pub max_nr_frames: u32,
}

/// A successful `GNTTABOP_map_grant_ref` ([`Domain::gnttab_map_grant_ref`]).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct GnttabMapped {
    /// The handle to unmap with.
    pub handle: u32,
    /// Reported in `dev_bus_addr`: the frame's bus address for a device
    /// mapping; Xen reports the machine address of the frame in every case.
    pub dev_bus_addr: u64,
}

/// One end of a `GNTTABOP_copy`, decoded from either width.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum GnttabCopyTarget {
    /// Grant `gref` of domain `domid` (never `DOMID_SELF`: resolved).
    Gref {
        /// The granting domain.
        domid: DomId,
        /// Its grant reference.
        gref: u32,
    },
    /// The caller's own frame.
    Gmfn(u64),
}

/// One end of a `GNTTABOP_copy`: a frame and a byte offset in it.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct GnttabCopyEnd {
    /// Which frame.
    pub target: GnttabCopyTarget,
    /// Byte offset in it; `offset + len <= 4096` is already checked.
    pub offset: u16,
}

/// One `GNTTABOP_copy` entry, checked as far as the arguments alone allow
/// ([`Domain::gnttab_copy`]).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct GnttabCopyOp {
    /// Where to copy from.
    pub source: GnttabCopyEnd,
    /// Where to copy to.
    pub dest: GnttabCopyEnd,
    /// Bytes to copy, at least 1.
    pub len: u16,
}

/// What a hypercall handler needs from the domain that called it. keel's
/// kernel implements this for its domains; tests use a fake.
pub trait Domain {
    /// The domain's id.
    fn domid(&self) -> DomId;

    /// Whether the domain is privileged: the hardware/control domain. Gates
    /// the information Xen's default XSM policy withholds from others (the
    /// hypervisor command line, build id), raw console output, and
    /// `SCHEDOP_pin_override`.
    fn is_privileged(&self) -> bool;

    /// Whether the domain may use `console_io` although not privileged
    /// (Xen's `d->is_console`). Defaults to `false`, as in Xen.
    fn is_console(&self) -> bool {
        false
    }

    /// Copies guest memory at guest-virtual `gva` (translated through the
    /// guest's own page tables, then the p2m) into `buf`. `Err(EFAULT)` when
    /// any byte is not accessible; `buf` may then be partly written.
    fn copy_from_guest(&mut self, gva: u64, buf: &mut [u8]) -> Result<(), Errno>;

    /// Copies `data` to guest memory at guest-virtual `gva`. `Err(EFAULT)`
    /// when any byte is not writable; a prefix may then have been written
    /// (as with Xen's `copy_to_guest`).
    fn copy_to_guest(&mut self, gva: u64, data: &[u8]) -> Result<(), Errno>;

    /// Emits console output from this domain. keel prefixes `(dN) ` and
    /// splits lines; `bytes` need not end at a line boundary. For an
    /// unprivileged domain the dispatcher has already removed
    /// non-printable bytes other than `\n` and `\t`.
    fn console_write(&mut self, bytes: &[u8]);

    /// `XENMEM_add_to_physmap` with `XENMAPSPACE_shared_info`, index 0:
    /// place the domain's shared-info frame at guest frame `gpfn`, removing
    /// it from where it was.
    fn map_shared_info(&mut self, gpfn: u64) -> Result<(), Errno>;

    /// Entry `index` of the domain's memory map (E820-style), as
    /// `XENMEM_memory_map` returns it, or `None` past the end. Entries are
    /// numbered from 0 without gaps; a domain with no map (entry 0 is
    /// `None`) makes `XENMEM_memory_map` fail with `-ENOSYS`, as in Xen.
    fn memory_map_entry(&self, index: u32) -> Option<E820Entry>;

    /// Reads HVM parameter `index` (already checked: below
    /// `HVM_NR_PARAMS` and readable by the guest itself).
    fn get_hvm_param(&self, index: u32) -> Result<u64, Errno>;

    /// Writes HVM parameter `index` (already checked: below
    /// `HVM_NR_PARAMS` and writable by the guest itself). The domain
    /// validates `value` and applies side effects (e.g. the callback IRQ).
    fn set_hvm_param(&mut self, index: u32, value: u64) -> Result<(), Errno>;

    /// What `xen_version` reports to this domain.
    fn version(&self) -> VersionInfo<'_>;

    // ---------------------------------------------------------- domains, vCPUs, time

    /// The id of the vCPU making the hypercall.
    fn vcpu_id(&self) -> u32;

    /// The number of vCPUs the domain has (Xen's `d->max_vcpus`): ids
    /// `0..max_vcpus()` exist. A vCPU id argument at or above it is
    /// `-ENOENT` (`-EINVAL` for `EVTCHNOP_bind_virq` of a global VIRQ),
    /// checked before any method below is called with it.
    fn max_vcpus(&self) -> u32;

    /// Xen system time: nanoseconds since boot, the clock of
    /// `vcpu_time_info.system_time` and of every absolute timeout.
    fn now_ns(&self) -> u64;

    /// Whether domain `domid` exists (an id below `DOMID_FIRST_RESERVED`;
    /// never asked about the caller itself or `DOMID_SELF`).
    fn domain_exists(&self, domid: DomId) -> bool;

    // ---------------------------------------------------------- event channels
    //
    // `port` arguments are the caller's own ports; domain ids are resolved
    // (never `DOMID_SELF`) and checked: they exist, and are the caller or the
    // caller is privileged, unless a method says otherwise. No port has been
    // range-checked: an invalid port is the kernel's `-EINVAL`.

    /// `EVTCHNOP_alloc_unbound`: allocate a fresh port in `dom` (the caller
    /// or, privileged caller, another domain) in state unbound, accepting a
    /// bind from `remote_dom` (any id; not checked to exist), and return it.
    /// Errors: `-ENOSPC` when `dom` has no free port.
    fn evtchn_alloc_unbound(&mut self, dom: DomId, remote_dom: DomId) -> Result<u32, Errno>;

    /// `EVTCHNOP_bind_interdomain`: connect a fresh port of the caller to
    /// `remote_dom`'s port `remote_port` (`remote_dom` exists; it may be the
    /// caller: loopback), which must be unbound and accept the caller;
    /// afterwards both are interdomain and the *local* port is set pending
    /// (Xen does, in case the peer signalled before the bind). Returns the
    /// local port. Errors: `-EINVAL` (remote port invalid, not unbound, or
    /// for another domain), `-ENOSPC`.
    fn evtchn_bind_interdomain(
        &mut self,
        remote_dom: DomId,
        remote_port: EvtchnPort,
    ) -> Result<u32, Errno>;

    /// `EVTCHNOP_bind_virq`: bind a fresh port to `virq` on `vcpu`.
    /// Checked: `virq < NR_VIRQS`; `vcpu` exists; `vcpu == 0` unless the
    /// VIRQ is per-vCPU (`VIRQ_TIMER`, `DEBUG`, `XENOPROF`, `XENPMU`).
    /// Errors: `-EEXIST` (already bound on that vCPU), `-EBUSY` (a global
    /// VIRQ another domain handles), `-ENOSPC`.
    fn evtchn_bind_virq(&mut self, virq: u32, vcpu: u32) -> Result<u32, Errno>;

    /// `EVTCHNOP_bind_ipi`: bind a fresh port notifying `vcpu` (checked to
    /// exist). Errors: `-ENOSPC`.
    fn evtchn_bind_ipi(&mut self, vcpu: u32) -> Result<u32, Errno>;

    /// `EVTCHNOP_bind_vcpu`: make `port` notify `vcpu` (checked to exist).
    /// Errors: `-EINVAL` for an invalid or closed port, an IPI or a
    /// per-vCPU VIRQ (whose vCPU is fixed), or a Xen-owned port.
    fn evtchn_bind_vcpu(&mut self, port: EvtchnPort, vcpu: u32) -> Result<(), Errno>;

    /// `EVTCHNOP_close`: close `port`; an interdomain peer goes back to
    /// unbound (accepting the caller again). Errors: `-EINVAL` for an
    /// invalid, free or reserved port, or a Xen-owned one.
    fn evtchn_close(&mut self, port: EvtchnPort) -> Result<(), Errno>;

    /// `EVTCHNOP_send`: signal the other end of `port` (interdomain: the
    /// peer's port; IPI: this port on its vCPU; unbound: dropped silently).
    /// Errors: `-EINVAL` for an invalid port or another state.
    fn evtchn_send(&mut self, port: EvtchnPort) -> Result<(), Errno>;

    /// `EVTCHNOP_status` of `dom`'s (checked) `port`. Errors: `-EINVAL` for
    /// an invalid port.
    fn evtchn_status(&self, dom: DomId, port: EvtchnPort) -> Result<EvtchnStatusInfo, Errno>;

    /// `EVTCHNOP_unmask`: clear `port`'s mask bit and, if it is pending,
    /// raise the upcall on its vCPU (2-level: set `evtchn_pending_sel` and
    /// `evtchn_upcall_pending`). Errors: `-EINVAL` for an invalid port.
    fn evtchn_unmask(&mut self, port: EvtchnPort) -> Result<(), Errno>;

    /// `EVTCHNOP_init_control` (FIFO ABI): register the calling domain's
    /// control block for `vcpu` (checked to exist; it may be down: Linux
    /// registers a CPU's block before bringing it up) at `offset` (checked:
    /// 8-byte aligned, the block within the page) of its frame `gfn`. The
    /// first call switches the domain to FIFO for good. Errors: `-EINVAL`
    /// for a `gfn` that is not the domain's RAM, or a vCPU that already
    /// has a block; `-ENOMEM`.
    fn evtchn_init_control(&mut self, vcpu: u32, gfn: u64, offset: u32) -> Result<(), Errno> {
        let _ = (vcpu, gfn, offset);
        Err(Errno::ENOSYS)
    }

    /// `EVTCHNOP_expand_array` (FIFO ABI): add the calling domain's frame
    /// `gfn` as the next page of its event array (1024 ports each).
    /// Errors: `-EOPNOTSUPP` before `init_control`; `-ENOSPC` past 128
    /// pages; `-EINVAL` for a `gfn` that is not the domain's RAM.
    fn evtchn_expand_array(&mut self, gfn: u64) -> Result<(), Errno> {
        let _ = gfn;
        Err(Errno::ENOSYS)
    }

    /// `EVTCHNOP_set_priority` (FIFO ABI), Xen's order: `-EINVAL` for an
    /// invalid `port`, `-ENOSYS` for a 2-level domain, `-EACCES` for a free
    /// port, `-EINVAL` for `priority` above 15 (the lowest).
    fn evtchn_set_priority(&mut self, port: EvtchnPort, priority: u32) -> Result<(), Errno> {
        let _ = (port, priority);
        Err(Errno::ENOSYS)
    }

    /// `EVTCHNOP_reset` (and `reset_cont`): close every port of `dom` (the
    /// caller, or another domain for a privileged caller). Errors:
    /// `-EINVAL` for another domain that is not paused, `-EBUSY` if a reset
    /// is already running, `-EAGAIN` if Xen-owned channels remain.
    fn evtchn_reset(&mut self, dom: DomId) -> Result<(), Errno>;

    /// `SCHEDOP_poll`, first half (Xen `do_poll`): `Ready` if an event
    /// already needs delivery to the calling vCPU (upcall pending and not
    /// masked), or, trying `ports` in order, one is pending (even masked);
    /// `-EINVAL` at the first invalid (or Xen-owned) port met before a
    /// pending one. Otherwise `Block`, and the dispatcher returns
    /// [`Action::Poll`]. `ports` holds at most [`SCHED_POLL_MAX_PORTS`]
    /// entries, maybe none.
    fn sched_poll(&mut self, ports: &[EvtchnPort]) -> Result<PollResult, Errno>;

    // ---------------------------------------------------------- vCPUs, timers

    /// `VCPUOP_initialise`: set up `vcpu` (checked to exist) to start with
    /// the register state `ctx` when brought up. `ctx` is the guest's
    /// `vcpu_hvm_context` as copied in, unchecked: the kernel answers in
    /// Xen's order (`arch_initialise_vcpu`, `xen/arch/x86/domain.c`, then
    /// `arch_set_info_hvm_guest`, `xen/arch/x86/hvm/domain.c`), under the
    /// domain's lock:
    /// 1. `-EEXIST` if `vcpu` is already initialised;
    /// 2. `-EINVAL` if `ctx.pad` is not 0 or `ctx.mode` is neither
    ///    `VCPU_HVM_MODE_32B` nor `VCPU_HVM_MODE_64B`;
    /// 3. `-EINVAL` for a register state `arch_set_info_hvm_guest` refuses,
    ///    decoded with `ctx.x86_32()` / `ctx.x86_64()`: for 32B, nonzero
    ///    `pad1`/`pad2`, a bad segment, EIP beyond the CS limit, SS.DPL other
    ///    than CS.DPL, a present DS or ES with DPL above CS.DPL, EFER.LMA
    ///    without LME; for 64B, a non-canonical RIP, or CR0.PG, CR4.PAE or
    ///    EFER.LME clear; for both, CR4 or EFER bits the domain may not set.
    ///
    /// `-ENOSYS` is acceptable until keel runs secondary vCPUs.
    fn vcpu_initialise(&mut self, vcpu: u32, ctx: &VcpuHvmContext) -> Result<(), Errno>;

    /// `VCPUOP_up`: make `vcpu` runnable. Errors: `-EINVAL` if it was never
    /// initialised; `-ENOSYS` acceptable for now.
    /// `VCPUOP_initialise` of a PV domain's vCPU: its whole state from a
    /// `vcpu_guest_context` (Xen's `arch_set_info_guest`).
    fn pv_vcpu_initialise(
        &mut self,
        _vcpu: u32,
        _ctx: &crate::abi::pv::VcpuGuestContext,
    ) -> Result<(), Errno> {
        Err(Errno::ENOSYS)
    }

    fn vcpu_up(&mut self, vcpu: u32) -> Result<(), Errno>;

    /// `VCPUOP_down`: make `vcpu` not runnable (synchronous if it is the
    /// caller). If it is the last vCPU up, Xen shuts the domain down
    /// (`SHUTDOWN_poweroff`) instead. `-ENOSYS` acceptable for now.
    fn vcpu_down(&mut self, vcpu: u32) -> Result<(), Errno>;

    /// `VCPUOP_is_up`: whether `vcpu` is up (not down).
    fn vcpu_is_up(&self, vcpu: u32) -> bool;

    /// `VCPUOP_send_nmi` (the argument checked to be NULL): make an NMI
    /// pending for `vcpu` (checked to exist; it may be the caller) and, if
    /// one was not pending already, kick it so it takes the NMI at its next
    /// entry (Xen: `test_and_set_bool(v->arch.nmi_pending)`, then
    /// `vcpu_kick`). NMIs do not queue: a second one while the first is
    /// pending is lost. Xen never fails this.
    fn vcpu_send_nmi(&mut self, vcpu: u32) -> Result<(), Errno>;

    /// `VCPUOP_get_physid`: the physical ids of the pCPU `vcpu` (checked to
    /// exist) is pinned to, bits 31:0 the APIC id and 63:32 the ACPI id; the
    /// dispatcher copies them out (`-EFAULT`). Xen (`do_vcpu_op`,
    /// `xen/arch/x86/domain.c`) answers only for a vCPU of the hardware
    /// domain whose hard affinity is exactly one pCPU
    /// (`is_hwdom_pinned_vcpu`, e.g. with `dom0_vcpus_pin`), and reports
    /// the ids of pCPU number `vcpu` (which `dom0_vcpus_pin` pins it to);
    /// for every other vCPU, HVM/PVH or PV, it is `-EINVAL`, checked before
    /// the copy-out. The default answers `-EINVAL`, which is Xen's answer
    /// for every domain but a pinned hardware domain.
    fn vcpu_get_physid(&self, vcpu: u32) -> Result<u64, Errno> {
        let _ = vcpu;
        Err(Errno::EINVAL)
    }

    /// `VCPUOP_get_runstate_info`: `vcpu`'s runstate now (native layout;
    /// the dispatcher repacks for a 32-bit caller; `pad` is ignored).
    fn vcpu_runstate(&self, vcpu: u32) -> VcpuRunstateInfo;

    /// `VCPUOP_register_runstate_memory_area`: from now on, keep `vcpu`'s
    /// runstate at guest-virtual `gva` up to date on every state change,
    /// in the layout of `width` (`VcpuRunstateInfo` or
    /// `VcpuRunstateInfoCompat`), ignoring faults; 0 stops the updates.
    /// The range is checked to lie in the caller's address space; the
    /// dispatcher writes the current runstate there itself once this
    /// returns `Ok`.
    fn register_runstate_area(
        &mut self,
        vcpu: u32,
        gva: u64,
        width: GuestWidth,
    ) -> Result<(), Errno>;

    /// `VCPUOP_register_vcpu_time_memory_area`: from now on, whenever
    /// `vcpu`'s `vcpu_time_info` in its `vcpu_info` is rewritten, also copy
    /// it to guest-virtual `gva` with
    /// [`update_secondary_system_time`] (the primary's odd version during
    /// the write), ignoring faults; 0 stops the copies. Replaces any earlier
    /// area. The 32 bytes are checked to lie in the caller's address space;
    /// the dispatcher writes [`Domain::vcpu_time_info`] there itself once
    /// this returns `Ok`.
    fn register_vcpu_time_area(&mut self, vcpu: u32, gva: u64) -> Result<(), Errno>;

    /// `vcpu`'s `vcpu_time_info` as its `vcpu_info` holds it now (a settled,
    /// even `version`): what a secondary time area is given at registration.
    fn vcpu_time_info(&self, vcpu: u32) -> VcpuTimeInfo;

    /// `VCPUOP_register_vcpu_info`: move `vcpu`'s `vcpu_info` (64 bytes,
    /// the native layout) to byte `offset` of guest frame `gfn`: copy the
    /// current contents there (or, from the dummy, zeros with
    /// `evtchn_upcall_mask` set), then set all of `evtchn_pending_sel`,
    /// mark events pending, and refresh the time fields. Checked: the area
    /// lies in one page and is aligned (8 bytes; 4 for a 32-bit caller).
    /// Errors: `-EBUSY` if already registered (it can be done only once),
    /// `-EINVAL` if `gfn` is not RAM, `-EACCES` if not writable.
    fn register_vcpu_info(&mut self, vcpu: u32, gfn: u64, offset: u32) -> Result<(), Errno>;

    /// `VCPUOP_set_periodic_timer` (`period_ns` between 1 ms and 2^62 - 1,
    /// checked) and `VCPUOP_stop_periodic_timer` (`period_ns == 0`): send
    /// `vcpu`'s `VIRQ_TIMER` every `period_ns`, or stop.
    fn set_periodic_timer(&mut self, vcpu: u32, period_ns: u64);

    /// `VCPUOP_set_singleshot_timer` and `set_timer_op`: fire the calling
    /// vCPU's single-shot timer (send its `VIRQ_TIMER`) at system time
    /// `deadline_ns`, replacing any earlier setting. A deadline at or
    /// before [`Domain::now_ns`] fires at once (Xen since 4.18: the old
    /// `-ETIME` for `VCPU_SSHOTTMR_future` is gone).
    fn set_singleshot_timer(&mut self, deadline_ns: u64);

    /// `VCPUOP_stop_singleshot_timer`, and `set_timer_op(0)`: cancel the
    /// calling vCPU's single-shot timer.
    fn stop_singleshot_timer(&mut self);

    // ---------------------------------------------------------- memory

    /// `XENMEM_maximum_ram_page`: one past the highest frame of host RAM
    /// (Xen's `max_page`).
    fn maximum_ram_page(&self) -> u64;

    /// `XENMEM_current_reservation`: pages `dom` (checked) owns now.
    fn current_reservation(&self, dom: DomId) -> u64;

    /// `XENMEM_maximum_reservation`: the most pages `dom` (checked) may own.
    fn maximum_reservation(&self, dom: DomId) -> u64;

    /// One extent of `XENMEM_populate_physmap`: allocate 2^`order` frames
    /// for `dom` (checked) and map them at `gfn..gfn + 2^order` in its p2m.
    /// `order` is within Xen's limit for the caller (checked). Any error
    /// stops the operation there (the guest sees how many extents were
    /// done, not the errno): `-ENOMEM` (no memory, or over
    /// [`Domain::maximum_reservation`]), `-EINVAL` (misaligned `gfn`, or a
    /// range beyond the guest-physical address width), `-EEXIST` (something
    /// already mapped there that cannot be replaced).
    fn populate_physmap(&mut self, dom: DomId, gfn: u64, order: u32) -> Result<(), Errno>;

    /// One extent of `XENMEM_decrease_reservation`: unmap the RAM frames
    /// `gfn..gfn + 2^order` of `dom` (checked) from its p2m and free them.
    /// Any error stops the operation there: `-ENOENT` if a frame is not
    /// mapped RAM (Xen: `guest_remove_page`), `-EINVAL` for a range beyond
    /// the address width.
    fn decrease_reservation(&mut self, dom: DomId, gfn: u64, order: u32) -> Result<(), Errno>;

    /// `XENMEM_add_to_physmap` with `XENMAPSPACE_grant_table`: map the
    /// caller's grant-table frame `idx` (a table frame, of either version;
    /// status frames are [`Domain::map_grant_status_frame`]) at `gpfn`,
    /// first growing the table to `idx + 1` frames if that is within its
    /// maximum, and moving the frame from where it was mapped before;
    /// whatever RAM was at `gpfn` is freed. Errors: `-EINVAL` if `idx` is
    /// beyond the table's maximum.
    fn map_grant_frame(&mut self, idx: u32, gpfn: u64) -> Result<(), Errno>;

    /// `XENMEM_add_to_physmap` with `XENMAPSPACE_grant_table` and
    /// `XENMAPIDX_grant_table_status` in `idx` (taken off: `idx` is below
    /// 2^31): map the caller's status frame `idx` at `gpfn`, as
    /// [`Domain::map_grant_frame`] does a table frame (Xen's
    /// `gnttab_map_frame`, `gnttab_get_status_frame_mfn`). In version 2, a
    /// missing status frame is made by growing the table to the `8 * (idx +
    /// 1)` table frames that have it, if that is within its maximum;
    /// `-EINVAL` if it is still missing. In version 1, `-EINVAL` (Xen takes
    /// the index, flag and all, for a table frame beyond any table). The
    /// default answers `-EINVAL`, right for a kernel whose domains stay at
    /// version 1.
    fn map_grant_status_frame(&mut self, idx: u32, gpfn: u64) -> Result<(), Errno> {
        let _ = (idx, gpfn);
        Err(Errno::EINVAL)
    }

    // ---------------------------------------------------------- hvm_op

    /// `HVMOP_set_evtchn_upcall_vector`: deliver `vcpu`'s (checked)
    /// event-channel upcalls as IDT `vector` (>= 0x10, checked), in
    /// preference to `HVM_PARAM_CALLBACK_IRQ`; inject it at once if an
    /// upcall is pending. Errors: `-EINVAL` for a domain that is not
    /// HVM/PVH.
    fn set_evtchn_upcall_vector(&mut self, vcpu: u32, vector: u8) -> Result<(), Errno>;

    /// `HVMOP_flush_tlbs` (the argument checked to be NULL): flush the
    /// guest TLB of every vCPU of the domain, the caller included. Xen
    /// with HAP (`hvmop_flush_tlb_all` -> `paging_flush_tlb(NULL)` ->
    /// `flush_tlb`, `xen/arch/x86/mm/hap/hap.c`) gives each vCPU a new
    /// ASID/VPID for its next entry, and interrupts every other pCPU on
    /// which one of them is running, waiting until each has taken the IPI
    /// (and so left the guest), before returning 0. Xen's other outcomes do
    /// not arise for keel: `-EINVAL` is for a domain that is not HVM/PVH,
    /// and `-ERESTART` (a continuation) only for shadow paging, whose flush
    /// gives up when another vCPU holds its lock; HAP never fails. Must not
    /// return `-ERESTART` or `-EINTR`.
    fn hvm_flush_tlbs(&mut self) -> Result<(), Errno>;

    // ---------------------------------------------------------- grant tables
    //
    // Results are `GNTST_*` codes (`abi::grant_table`), as Xen puts them in
    // each entry's `status` field.

    /// `GNTTABOP_setup_table`, first half: grow `dom`'s (checked) table to
    /// at least `nr_frames`. `Err(GNTST_general_error)` if that is more than
    /// its maximum or growing fails. The dispatcher then asks
    /// [`Domain::gnttab_shared_gfn`] for each frame.
    fn gnttab_setup_table(&mut self, dom: DomId, nr_frames: u32) -> Result<(), i16>;

    /// The gfn at which `dom`'s grant-table frame `idx` (below the size
    /// [`Domain::gnttab_setup_table`] just ensured) is mapped in `dom`'s
    /// physmap, or `u64::MAX` (`INVALID_GFN`) if it is not.
    fn gnttab_shared_gfn(&self, dom: DomId, idx: u32) -> u64;

    /// `GNTTABOP_query_size` of `dom` (checked).
    fn gnttab_query_size(&self, dom: DomId) -> GnttabSize;

    /// `GNTTABOP_map_grant_ref`: map grant `gref` of domain `dom` for the
    /// caller. `dom` is the id the guest gave (Xen looks it up without
    /// resolving `DOMID_SELF`, so that and the other reserved ids are
    /// refused with `GNTST_bad_domain` before); it may be the caller's own.
    /// `flags` has `GNTMAP_host_map` (the only kind an HVM/PVH caller may
    /// ask for: device, application and PTE maps are refused before);
    /// `host_addr` is the guest-physical address to map the frame at.
    /// Errors: `GNTST_bad_domain` (no such domain), `GNTST_bad_gntref`,
    /// `GNTST_permission_denied` (not granted to the caller, or read-only
    /// grant without `GNTMAP_readonly`), `GNTST_no_space` (no maptrack
    /// handle), `GNTST_bad_virt_addr`, `GNTST_general_error`.
    fn gnttab_map_grant_ref(
        &mut self,
        dom: DomId,
        gref: u32,
        flags: u32,
        host_addr: u64,
    ) -> Result<GnttabMapped, i16>;

    /// `GNTTABOP_unmap_grant_ref`: undo the caller's mapping `handle`;
    /// `host_addr` (0: leave the host mapping) and `dev_bus_addr` (0:
    /// ignore) must match it. Returns `GNTST_okay`, `GNTST_bad_handle`,
    /// `GNTST_bad_virt_addr`, `GNTST_bad_dev_addr`,
    /// `GNTST_general_error`.
    fn gnttab_unmap_grant_ref(&mut self, host_addr: u64, dev_bus_addr: u64, handle: u32) -> i16;

    /// `GNTTABOP_copy`, one entry: copy `op.len` bytes. Checked: `len > 0`;
    /// each end's `offset + len <= 4096`; a gmfn end is the caller's; a
    /// gref end's domain exists. Each gref end must be granted to the
    /// caller (the source may be read-only); the source is acquired, then
    /// the dest. A version 2 transitive grant is followed to the grant it
    /// names, which must be granted to the transitive grant's granter (one
    /// level only: a loop or a longer chain is `GNTST_general_error`, as
    /// is a grant naming no domain), and the copy touches that domain's
    /// frame. With both ends acquired, each range must lie within what was
    /// granted (a version 2 sub-page range, else the whole page), else
    /// `GNTST_general_error`; every end acquired, on every hop, is released
    /// on every path. Returns `GNTST_okay`, `GNTST_bad_domain`,
    /// `GNTST_bad_gntref`, `GNTST_permission_denied`, `GNTST_bad_page`,
    /// `GNTST_general_error`.
    fn gnttab_copy(&mut self, op: &GnttabCopyOp) -> i16;

    /// `GNTTABOP_set_version` by the caller, for itself, `version` being 1
    /// or 2 (anything else is `-EINVAL` before). Xen's order from there
    /// (`gnttab_set_version`): `-ENOSYS` for 2 when the domain may only have
    /// version 1 (`max_grant_version=1`, or Xen's `gnttab=max-ver:1`: "as
    /// before set_version was introduced"); 0 if it is in effect; `-EBUSY`
    /// while an entry past the first 8 is mapped or copied; `-ENOMEM`
    /// (status frames for version 2); `-ERANGE` (to version 1, a reserved
    /// entry that version 1 cannot hold); else 0, the table cleared but for
    /// the first 8 entries, converted. Status frames that go are removed
    /// from the p2m, flushed from every pCPU and freed by the kernel. The
    /// dispatcher then writes back [`Domain::gnttab_get_version`] whatever
    /// the result. The default is a kernel with version 1 only: 0 for 1,
    /// `-ENOSYS` for 2.
    fn gnttab_set_version(&mut self, version: u32) -> Result<(), Errno> {
        if version == 1 {
            Ok(())
        } else {
            Err(Errno::ENOSYS)
        }
    }

    /// `GNTTABOP_get_version` of `dom` (checked; the caller, for the write
    /// back of `set_version`): its grant-table version, 1 or 2. Default 1.
    fn gnttab_get_version(&self, dom: DomId) -> u32 {
        let _ = dom;
        1
    }

    /// `GNTTABOP_get_status_frames`, first half (Xen's
    /// `gnttab_get_status_frames`): `dom` (checked) has at least
    /// `nr_frames` status frames, else `Err(GNTST_general_error)` (Xen
    /// checks the count alone: 0 passes in version 1). The dispatcher then
    /// asks [`Domain::gnttab_status_gfn`] for each. Not reached while the
    /// dispatcher refuses the command to HVM/PVH callers as Xen does (they
    /// map status frames with `XENMAPIDX_grant_table_status`, and learn
    /// where from where they put them). The default is a version 1 domain:
    /// none.
    fn gnttab_get_status_frames(&mut self, dom: DomId, nr_frames: u32) -> Result<(), i16> {
        let _ = dom;
        if nr_frames == 0 {
            Ok(())
        } else {
            Err(crate::abi::grant_table::GNTST_GENERAL_ERROR)
        }
    }

    /// The gfn at which `dom`'s status frame `idx` (below the count
    /// [`Domain::gnttab_get_status_frames`] just checked) is mapped in
    /// `dom`'s physmap, or `u64::MAX` (`INVALID_GFN`) if it is not.
    fn gnttab_status_gfn(&self, dom: DomId, idx: u32) -> u64 {
        let _ = (dom, idx);
        u64::MAX
    }

    /// `GNTTABOP_swap_grant_ref`, one entry: swap the caller's entries
    /// `ref_a` and `ref_b` (in version 2 with their status words), under
    /// the caller's grant lock. `Ok` with the entry's status, in Xen's
    /// order: `GNTST_bad_gntref` (`ref_a`, then `ref_b`, beyond the table),
    /// `GNTST_okay` for the same ref twice, `GNTST_eagain` if either is
    /// mapped or being copied, else `GNTST_okay`. `Err(e)` ends the
    /// hypercall with `-e`: the default is a kernel without the operation,
    /// which answers `-ENOSYS` as keel did before (a kernel that implements
    /// it never returns `Err`).
    fn gnttab_swap_grant_ref(&mut self, ref_a: u32, ref_b: u32) -> Result<i16, Errno> {
        let _ = (ref_a, ref_b);
        Err(Errno::ENOSYS)
    }

    /// `GNTTABOP_cache_flush`, one entry, past the argument checks (Xen's
    /// `_cache_flush`): `offset + length` within the page, `op` only
    /// `GNTTAB_CACHE_CLEAN` and/or `GNTTAB_CACHE_INVAL`, neither `length`
    /// nor `op` 0. Xen's order from there: `-EINVAL` if `dev_bus_addr` is
    /// not a frame of RAM; `-EPERM` if its owner has no grant table; if the
    /// owner is another domain, `-EINVAL` unless one of its entries naming
    /// that frame is pinned by the caller (`grant_map_exists`; the grant
    /// crate's `is_frame_pinned_by`). Then on x86: `GNTTAB_CACHE_INVAL`
    /// alone is `-EOPNOTSUPP`; otherwise the cache lines of the range are
    /// written back and invalidated (`clflush`), 0. Not reached while the
    /// dispatcher refuses the command to HVM/PVH callers as Xen does (the
    /// `grant_table_op` module notes); the default answers `-EINVAL`, as
    /// for a `dev_bus_addr` that names nothing (keel reports none).
    fn gnttab_cache_flush(
        &mut self,
        dev_bus_addr: u64,
        offset: u16,
        length: u16,
        op: u32,
    ) -> Result<(), Errno> {
        let _ = (dev_bus_addr, offset, length, op);
        Err(Errno::EINVAL)
    }

    /// `GNTTABOP_transfer`, one entry: give the caller's frame `gfn` to
    /// `domid`'s `GTF_accept_transfer` entry `gref`. For a translated
    /// (HVM/PVH) caller Xen answers `GNTST_bad_page` if `gfn` is not a
    /// valid frame of its RAM, else `GNTST_general_error` (`steal_page`
    /// refuses translated domains), and the frame stays the caller's. Not
    /// reached while the dispatcher refuses the command to HVM/PVH callers
    /// as Xen does; the default answers `GNTST_general_error` (a kernel
    /// that knows its RAM answers `GNTST_bad_page` for a gfn that is not).
    fn gnttab_transfer(&mut self, gfn: u64, domid: DomId, gref: u32) -> i16 {
        let _ = (gfn, domid, gref);
        crate::abi::grant_table::GNTST_GENERAL_ERROR
    }

    // ---------------------------------------------------------- PV guests
    //
    // The hypercalls only a PV guest has (Xen's `pv64` column of
    // `xen/include/hypercall-defs.c`). The dispatcher routes them here only
    // when [`Domain::is_pv`] says so and the caller is in 64-bit mode; for
    // any other caller they stay `-ENOSYS`. Each method is one operation:
    // the dispatcher copies the arguments in, walks the guest's arrays,
    // keeps the `done` counts and makes the continuations. None of them may
    // return `-EINTR`; `-ERESTART` only where a method says so. The
    // defaults are a kernel without PV guests: `-ENOSYS`.

    /// Whether the domain is a PV guest (Xen's `is_pv_domain`). Defaults to
    /// `false`: an HVM/PVH domain.
    fn is_pv(&self) -> bool {
        false
    }

    /// One request of `mmu_update` (Xen: the body of `do_mmu_update`'s
    /// loop, `xen/arch/x86/mm.c`) on the caller's own page tables: the
    /// command is `req.ptr & MMU_UPDATE_CMD_MASK`, unchecked (an unknown
    /// one is Xen's `-ENOSYS`). `foreigndom` is bits 15:0 of the
    /// hypercall's argument, the owner of the frames mapped, as the guest
    /// gave it: checking it is the kernel's, on every request (Xen's
    /// `get_pg_owner`, once before the first: `DOMID_SELF` is the caller,
    /// its own id `-ESRCH`, `DOMID_IO` I/O memory, another domain
    /// `-ESRCH` if absent). Bits 31:16, the owner of the page tables, are
    /// checked before: they name the caller. Any `Err` ends the batch
    /// there, the request not counted done; `-ERESTART` instead continues
    /// the hypercall from this request (Xen's preemption of a long
    /// validation), which the kernel must do only when it has made progress
    /// it keeps.
    fn pv_mmu_update(&mut self, req: &MmuUpdate, foreigndom: DomId) -> Result<(), Errno> {
        let _ = (req, foreigndom);
        Err(Errno::ENOSYS)
    }

    /// Called once when an `mmu_update` hypercall (one pass of it: each
    /// continuation and each multicall entry is its own) has stopped
    /// calling [`Domain::pv_mmu_update`], whether it finished, failed or
    /// is being preempted, and before the guest can run again: Xen's TLB
    /// maintenance at the end of `do_mmu_update` ("the flush must be
    /// performed now to maintain correct behaviour across a multicall").
    /// A kernel that flushes in [`Domain::pv_mmu_update`] itself need not
    /// implement it. Not called when the hypercall fails before its first
    /// request (an array outside the address space, a page-table owner
    /// refused), as Xen's flush is skipped then too.
    fn pv_mmu_update_flush(&mut self) {}

    /// One operation of `mmuext_op` (Xen: the body of `do_mmuext_op`'s
    /// loop): `op.cmd` unchecked (Xen: `-ENOSYS` for an unknown command,
    /// `-EOPNOTSUPP` for `MMUEXT_MARK_SUPER`/`UNMARK_SUPER`). A `vcpumask`
    /// argument (`MMUEXT_TLB_FLUSH_MULTI`, `INVLPG_MULTI`) is still a guest
    /// pointer, for the kernel to read through [`Domain::copy_from_guest`]
    /// (`-EFAULT`). `foreigndom` is the low 16 bits of the argument (Xen
    /// converts it to `domid_t`), not resolved: Xen's `get_pg_owner` rules
    /// (`DOMID_SELF` the caller, its own id `-ESRCH`, then `-EINVAL` unless
    /// the owner is PV) are the kernel's. Errors and `-ERESTART` as
    /// [`Domain::pv_mmu_update`].
    fn pv_mmuext_op(&mut self, op: &MmuextOp, foreigndom: DomId) -> Result<(), Errno> {
        let _ = (op, foreigndom);
        Err(Errno::ENOSYS)
    }

    /// `update_va_mapping` (Xen `__do_update_va_mapping`): write `val` into
    /// the L1 entry that maps `va` in the caller's current page tables,
    /// then flush as `flags` (`UVMF_*`) says; a `flags` above the flush
    /// type that is neither `UVMF_LOCAL` nor `UVMF_ALL` is a guest pointer
    /// to a vCPU bitmap, for the kernel to read. Errors: `-EINVAL` (no L1
    /// maps `va`, or the entry is refused), `-EFAULT` (the bitmap).
    /// `-ERESTART` makes the dispatcher re-issue the same call (Xen's
    /// continuation).
    fn pv_update_va_mapping(&mut self, va: u64, val: u64, flags: u64) -> Result<(), Errno> {
        let _ = (va, val, flags);
        Err(Errno::ENOSYS)
    }

    /// `update_va_mapping_otherdomain`: as [`Domain::pv_update_va_mapping`],
    /// the frame `val` maps owned by `domid` (the guest's `domid_t`, not
    /// resolved: Xen's `get_pg_owner` rules, `-ESRCH`, are the kernel's).
    fn pv_update_va_mapping_otherdomain(
        &mut self,
        va: u64,
        val: u64,
        flags: u64,
        domid: DomId,
    ) -> Result<(), Errno> {
        let _ = (va, val, flags, domid);
        Err(Errno::ENOSYS)
    }

    /// `set_trap_table(NULL)`: clear the calling vCPU's whole virtual IDT.
    fn pv_clear_trap_table(&mut self) -> Result<(), Errno> {
        Err(Errno::ENOSYS)
    }

    /// One entry of `set_trap_table`: store `t` as the calling vCPU's
    /// virtual IDT entry `t.vector`. Checked: `t.address` is non-zero and
    /// canonical. `t.cs` is as the guest gave it: Xen's
    /// `fixup_guest_code_selector` is the kernel's. Xen never fails here;
    /// an `Err` ends the hypercall with it (earlier entries stay stored).
    fn pv_set_trap(&mut self, t: &TrapInfo) -> Result<(), Errno> {
        let _ = t;
        Err(Errno::ENOSYS)
    }

    /// `stack_switch` (Xen `do_stack_switch`): the calling vCPU's kernel
    /// stack, for the next bounce from user mode, is `ss:sp` (`ss` as the
    /// guest gave it: `fixup_guest_stack_selector` is the kernel's). Xen
    /// returns 0.
    fn pv_stack_switch(&mut self, ss: u64, sp: u64) -> Result<(), Errno> {
        let _ = (ss, sp);
        Err(Errno::ENOSYS)
    }

    /// `fpu_taskswitch` (Xen `do_fpu_taskswitch`): set (`true`) or clear
    /// the calling vCPU's virtual CR0.TS. Xen returns 0.
    fn pv_fpu_taskswitch(&mut self, set: bool) -> Result<(), Errno> {
        let _ = set;
        Err(Errno::ENOSYS)
    }

    /// `set_debugreg` (Xen `set_debugreg`, `xen/arch/x86/pv/misc-hypercalls.c`):
    /// `reg` is the guest's `int`, unchecked. Errors: `-ENODEV` (no such
    /// register, or DR4/DR5 with CR4.DE), `-EINVAL` (bits 63:32 of DR6/DR7),
    /// `-EPERM` (a DR0-3 address the guest may not use, DR7.GD, I/O
    /// breakpoints without CR4.DE).
    fn pv_set_debugreg(&mut self, reg: u32, value: u64) -> Result<(), Errno> {
        let _ = (reg, value);
        Err(Errno::ENOSYS)
    }

    /// `get_debugreg` (Xen `do_get_debugreg`): the calling vCPU's debug
    /// register `reg` (unchecked), returned to the guest in `rax` as it is
    /// (a value that reads as a negative errno is the guest's to tell
    /// apart, as in Xen). Errors: `-ENODEV`.
    fn pv_get_debugreg(&mut self, reg: u32) -> Result<u64, Errno> {
        let _ = reg;
        Err(Errno::ENOSYS)
    }

    /// `update_descriptor` (Xen `do_update_descriptor`,
    /// `xen/arch/x86/pv/descriptor-tables.c`): write the segment descriptor
    /// `desc` at machine address `maddr` (checked: 8-byte aligned).
    /// Errors: `-EINVAL` (a descriptor `check_descriptor` refuses, a frame
    /// that is not the caller's or cannot be a descriptor page).
    fn pv_update_descriptor(&mut self, maddr: u64, desc: u64) -> Result<(), Errno> {
        let _ = (maddr, desc);
        Err(Errno::ENOSYS)
    }

    /// `set_gdt` (Xen `pv_set_gdt`): the calling vCPU's GDT is `entries`
    /// descriptors (checked: at most `FIRST_RESERVED_GDT_ENTRY`) in
    /// `frames` (exactly `ceil(entries / 512)` machine frames, as the guest
    /// gave them). Errors: `-EINVAL` (a frame that is not the caller's or
    /// cannot become a descriptor page; the old GDT then stays).
    fn pv_set_gdt(&mut self, frames: &[u64], entries: u32) -> Result<(), Errno> {
        let _ = (frames, entries);
        Err(Errno::ENOSYS)
    }

    /// `vm_assist` (Xen `do_vm_assist`): turn assist `kind` on
    /// (`VMASST_CMD_enable`) or off (`VMASST_CMD_disable`) for the domain.
    /// Checked: `cmd` is one of those, `kind` is in `PV64_VM_ASSIST_MASK`.
    /// Xen never fails here.
    fn pv_vm_assist(&mut self, cmd: u32, kind: u32) -> Result<(), Errno> {
        let _ = (cmd, kind);
        Err(Errno::ENOSYS)
    }

    /// `set_segment_base` (Xen `do_set_segment_base`): `which` is one of
    /// `SEGBASE_*` (checked); for the three bases `base` is checked
    /// canonical, for `SEGBASE_GS_USER_SEL` the selector is `base[15:0]`
    /// (Xen loads it, nulling it if it faults, and returns 0).
    fn pv_set_segment_base(&mut self, which: u32, base: u64) -> Result<(), Errno> {
        let _ = (which, base);
        Err(Errno::ENOSYS)
    }

    /// `iret` (Xen `do_iret`, `xen/arch/x86/pv/iret.c`): read the
    /// `iret_context` at the calling vCPU's RSP and load it (RIP, CS, RFLAGS,
    /// RSP, SS, and RCX/R11 unless `VGCF_in_syscall`; the upcall mask from
    /// RFLAGS.IF; user mode if CS has RPL 3). `Ok` is the RAX to return
    /// with (the frame's), written as the hypercall's result. A frame that
    /// cannot be read crashes the domain in Xen.
    fn pv_iret(&mut self) -> Result<u64, Errno> {
        Err(Errno::ENOSYS)
    }

    /// `CALLBACKOP_register` (Xen `register_guest_callback`,
    /// `xen/arch/x86/pv/callback.c`), and each of `set_callbacks`' three
    /// (with `flags` 0). Checked: `address` canonical; `kind` one of
    /// `CALLBACKTYPE_event`, `failsafe`, `syscall`, `nmi`, `sysenter`,
    /// `syscall32`. `flags` as the guest gave it (only
    /// `CALLBACKF_mask_events` means anything, to `failsafe`, `syscall`,
    /// `syscall32` and `sysenter`).
    fn pv_register_callback(&mut self, kind: u16, flags: u16, address: u64) -> Result<(), Errno> {
        let _ = (kind, flags, address);
        Err(Errno::ENOSYS)
    }

    /// `CALLBACKOP_unregister` of a callback that can be unregistered
    /// (Xen: only `CALLBACKTYPE_nmi`; the others are `-EINVAL` before).
    fn pv_unregister_callback(&mut self, kind: u16) -> Result<(), Errno> {
        let _ = kind;
        Err(Errno::ENOSYS)
    }

    /// `PHYSDEVOP_set_iopl`: the calling vCPU's virtual I/O privilege
    /// level is `iopl` (checked: at most 3). Xen never fails here.
    fn pv_set_iopl(&mut self, iopl: u32) -> Result<(), Errno> {
        let _ = iopl;
        Err(Errno::ENOSYS)
    }
}

/// Why a domain shut itself down (`SHUTDOWN_*`, `sched.h`).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum ShutdownReason {
    /// `SHUTDOWN_poweroff`: exited normally.
    Poweroff,
    /// `SHUTDOWN_reboot`.
    Reboot,
    /// `SHUTDOWN_suspend`.
    Suspend,
    /// `SHUTDOWN_crash`.
    Crash,
    /// `SHUTDOWN_watchdog`.
    Watchdog,
    /// `SHUTDOWN_soft_reset`.
    SoftReset,
    /// Any other code. Xen accepts every reason (truncated to 8 bits) and
    /// leaves its meaning to the toolstack; a hardware domain with an
    /// unknown reason reboots or halts the machine.
    Other(u8),
}

impl ShutdownReason {
    /// Decodes `sched_shutdown.reason` as Xen does: the low 8 bits.
    #[must_use]
    pub fn from_raw(reason: u32) -> ShutdownReason {
        // Truncation is Xen's: domain_shutdown(d, (u8)reason).
        let code = (reason & 0xff) as u8;
        match u32::from(code) {
            sched::SHUTDOWN_POWEROFF => ShutdownReason::Poweroff,
            sched::SHUTDOWN_REBOOT => ShutdownReason::Reboot,
            sched::SHUTDOWN_SUSPEND => ShutdownReason::Suspend,
            sched::SHUTDOWN_CRASH => ShutdownReason::Crash,
            sched::SHUTDOWN_WATCHDOG => ShutdownReason::Watchdog,
            sched::SHUTDOWN_SOFT_RESET => ShutdownReason::SoftReset,
            _ => ShutdownReason::Other(code),
        }
    }

    /// The `SHUTDOWN_*` code.
    #[must_use]
    pub fn code(self) -> u8 {
        match self {
            ShutdownReason::Poweroff => 0,
            ShutdownReason::Reboot => 1,
            ShutdownReason::Suspend => 2,
            ShutdownReason::Crash => 3,
            ShutdownReason::Watchdog => 4,
            ShutdownReason::SoftReset => 5,
            ShutdownReason::Other(code) => code,
        }
    }
}

impl core::fmt::Display for ShutdownReason {
    /// Xen's name for the reason (`SHUTDOWN_*` without the prefix).
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            ShutdownReason::Poweroff => f.write_str("poweroff"),
            ShutdownReason::Reboot => f.write_str("reboot"),
            ShutdownReason::Suspend => f.write_str("suspend"),
            ShutdownReason::Crash => f.write_str("crash"),
            ShutdownReason::Watchdog => f.write_str("watchdog"),
            ShutdownReason::SoftReset => f.write_str("soft_reset"),
            ShutdownReason::Other(code) => write!(f, "unknown reason {code}"),
        }
    }
}

/// What the kernel does with the calling vCPU after writing the result.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Action {
    /// Advance RIP past the hypercall instruction and resume the vCPU.
    Continue,
    /// Advance RIP, then let the scheduler run something else
    /// (`SCHEDOP_yield`).
    Yield,
    /// Advance RIP, re-enable event delivery (clear this vCPU's
    /// `evtchn_upcall_mask`) and block the vCPU until an event is pending;
    /// if one already is, do not block (`SCHEDOP_block`,
    /// Xen `vcpu_block_enable_events`).
    Block,
    /// Advance RIP and shut the whole domain down (`SCHEDOP_shutdown`).
    Shutdown(ShutdownReason),
    /// Advance RIP (the result, 0, is already in [`Outcome::ret`]) and block
    /// the vCPU *without* touching `evtchn_upcall_mask` until it is woken
    /// (`SCHEDOP_poll`, Xen `do_poll`; [`Domain::sched_poll`] has already
    /// said nothing is pending). It wakes when:
    /// - a port of the domain becomes pending, masked or not: with `port`
    ///   `Some(p)`, only port `p` (the guest polled exactly one port);
    ///   with `None`, any port (Xen's `poll_evtchn` of -1);
    /// - an event upcall becomes pending for it (as any blocked vCPU);
    /// - system time reaches `timeout`, unless `timeout` is 0 (none).
    Poll {
        /// The one port polled, if exactly one was.
        port: Option<EvtchnPort>,
        /// Absolute system time (ns) to wake at; 0 for none.
        timeout: u64,
    },
    /// The hypercall made partial progress and must be re-issued for the
    /// rest (Xen's `hypercall_create_continuation`): do **not** advance
    /// RIP, leave `rax`/`eax` holding the hypercall number (ignore
    /// [`Outcome::ret`]), and load the argument registers for the caller's
    /// width with `args`, so the guest executes the same hypercall again
    /// with what remains.
    Preempted {
        /// New argument registers (already cut to the caller's width).
        args: [u64; 6],
    },
}

/// The result of one hypercall.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Outcome {
    /// The return value: `>= 0` on success, `-errno` on failure. Not
    /// written for [`Action::Preempted`].
    pub ret: i64,
    /// What to do with the vCPU next.
    pub action: Action,
}

impl Outcome {
    /// A result with [`Action::Continue`].
    #[must_use]
    pub const fn ret(ret: i64) -> Outcome {
        Outcome {
            ret,
            action: Action::Continue,
        }
    }

    /// `-err` with [`Action::Continue`].
    #[must_use]
    pub const fn err(err: Errno) -> Outcome {
        Outcome::ret(err.neg())
    }

    /// `Ok(v)` as `v`, `Err(e)` as `-e`, with [`Action::Continue`].
    #[must_use]
    pub const fn from_result(r: Result<i64, Errno>) -> Outcome {
        match r {
            Ok(v) => Outcome::ret(v),
            Err(e) => Outcome::err(e),
        }
    }

    /// The value to load into the result register. A 64-bit caller gets
    /// `ret` in `rax`. A 32-bit caller gets the low 32 bits in `eax`
    /// (zero-extended here; the upper half of `rax` is invisible outside
    /// long mode), so `-EFAULT` reads as `0xfffffff2`, which the guest's
    /// 32-bit `long` sees as -14.
    #[must_use]
    pub const fn register_value(&self, width: GuestWidth) -> u64 {
        (self.ret as u64) & width.mask()
    }
}

/// Runs one hypercall for domain `d` and says what to do next.
///
/// Implemented: `xen_version`, `console_io`, `sched_op`, `memory_op`,
/// `hvm_op`, `event_channel_op`, `event_channel_op_compat`, `vcpu_op`,
/// `set_timer_op`, `grant_table_op`, `multicall`; for a PV domain in 64-bit
/// mode also `set_trap_table`, `mmu_update`, `set_gdt`, `stack_switch`,
/// `set_callbacks`, `fpu_taskswitch`, `set_debugreg`, `get_debugreg`,
/// `update_descriptor`, `update_va_mapping`, `vm_assist`,
/// `update_va_mapping_otherdomain`, `iret`, `set_segment_base`,
/// `mmuext_op`, `callback_op` and `physdev_op`'s `set_iopl`. Each
/// submodule lists its sub-ops. Every other number, including ones beyond
/// the table, returns `-ENOSYS`; `docs/abi.md` lists each sub-op.
pub fn dispatch<D: Domain + ?Sized>(d: &mut D, call: &HypercallArgs) -> Outcome {
    let call = call.normalized();
    let mut cx = Ctx {
        d,
        width: call.width,
    };
    route(&mut cx, &call, false)
}

/// The hypercalls Xen offers PV guests only (its `hypercall-defs.c` table
/// has no HVM handler for them), and those keel routes for PV guests only:
/// `vm_assist` (Xen gives HVM guests one assist; keel none yet) and
/// `physdev_op` (Xen gives HVM guests a few interrupt sub-ops; keel none
/// yet). For any other caller they are `-ENOSYS`, as before keel had PV
/// guests.
fn is_pv_only(n: u32) -> bool {
    matches!(
        n,
        nr::SET_TRAP_TABLE
            | nr::MMU_UPDATE
            | nr::SET_GDT
            | nr::STACK_SWITCH
            | nr::SET_CALLBACKS
            | nr::FPU_TASKSWITCH
            | nr::SET_DEBUGREG
            | nr::GET_DEBUGREG
            | nr::UPDATE_DESCRIPTOR
            | nr::UPDATE_VA_MAPPING
            | nr::VM_ASSIST
            | nr::UPDATE_VA_MAPPING_OTHERDOMAIN
            | nr::IRET
            | nr::SET_SEGMENT_BASE
            | nr::MMUEXT_OP
            | nr::CALLBACK_OP
            | nr::PHYSDEV_OP
    )
}

/// Whether the caller may use the PV-only hypercalls: a PV domain in
/// 64-bit mode (keel runs no 32-bit PV guests, so it has none of their
/// compat layouts).
fn pv_caller<D: Domain + ?Sized>(cx: &Ctx<'_, D>) -> bool {
    cx.width == GuestWidth::Bits64 && cx.d.is_pv()
}

/// One hypercall, `call` already cut to the caller's width: from
/// [`dispatch`], or as an entry of a `multicall` batch (`in_multicall`).
fn route<D: Domain + ?Sized>(
    cx: &mut Ctx<'_, D>,
    call: &HypercallArgs,
    in_multicall: bool,
) -> Outcome {
    let a = call.args;
    let Ok(n) = u32::try_from(call.nr) else {
        return Outcome::err(Errno::ENOSYS);
    };
    if is_pv_only(n) && !pv_caller(cx) {
        return Outcome::err(Errno::ENOSYS);
    }
    match n {
        nr::XEN_VERSION => xen_version::do_xen_version(cx, a[0], a[1]),
        nr::CONSOLE_IO => console_io::do_console_io(cx, call),
        nr::SCHED_OP => sched_op::do_sched_op(cx, a[0], a[1]),
        nr::MEMORY_OP => memory_op::do_memory_op(cx, &a),
        nr::HVM_OP => hvm_op::do_hvm_op(cx, a[0], a[1]),
        nr::EVENT_CHANNEL_OP => evtchn_op::do_event_channel_op(cx, a[0], a[1]),
        nr::EVENT_CHANNEL_OP_COMPAT => evtchn_op::do_event_channel_op_compat(cx, a[0]),
        nr::VCPU_OP => vcpu_op::do_vcpu_op(cx, a[0], a[1], a[2]),
        nr::SET_TIMER_OP => set_timer_op::do_set_timer_op(cx, a[0], a[1]),
        nr::GRANT_TABLE_OP => grant_table_op::do_grant_table_op(cx, &a),
        nr::MULTICALL => multicall::do_multicall(cx, &a, in_multicall),
        // PV only, 64-bit callers (checked above).
        nr::SET_TRAP_TABLE => callback_op::do_set_trap_table(cx, &a),
        nr::MMU_UPDATE => mmu_update::do_mmu_update(cx, &a),
        nr::SET_GDT => descriptor_tables::do_set_gdt(cx, a[0], a[1]),
        nr::STACK_SWITCH => pv_misc::do_stack_switch(cx, a[0], a[1]),
        nr::SET_CALLBACKS => callback_op::do_set_callbacks(cx, a[0], a[1], a[2]),
        nr::FPU_TASKSWITCH => pv_misc::do_fpu_taskswitch(cx, a[0]),
        nr::SET_DEBUGREG => pv_misc::do_set_debugreg(cx, a[0], a[1]),
        nr::GET_DEBUGREG => pv_misc::do_get_debugreg(cx, a[0]),
        nr::UPDATE_DESCRIPTOR => descriptor_tables::do_update_descriptor(cx, a[0], a[1]),
        nr::UPDATE_VA_MAPPING => mmu_update::do_update_va_mapping(cx, &a),
        nr::VM_ASSIST => pv_misc::do_vm_assist(cx, a[0], a[1]),
        nr::UPDATE_VA_MAPPING_OTHERDOMAIN => mmu_update::do_update_va_mapping_otherdomain(cx, &a),
        nr::IRET => pv_misc::do_iret(cx),
        nr::SET_SEGMENT_BASE => pv_misc::do_set_segment_base(cx, a[0], a[1]),
        nr::MMUEXT_OP => mmu_update::do_mmuext_op(cx, &a),
        nr::CALLBACK_OP => callback_op::do_callback_op(cx, a[0], a[1]),
        nr::PHYSDEV_OP => pv_misc::do_physdev_op(cx, a[0], a[1]),
        _ => Outcome::err(Errno::ENOSYS),
    }
}

/// Xen's `is_canonical_address` (x86-64, 48-bit virtual addresses): bits
/// 63:47 all equal.
pub(crate) fn is_canonical(addr: u64) -> bool {
    let a = addr as i64;
    a >> 47 == a >> 63
}

/// The calling domain plus the caller's width: guest-memory access checked
/// against the width's address space.
pub(crate) struct Ctx<'a, D: Domain + ?Sized> {
    pub d: &'a mut D,
    pub width: GuestWidth,
}

impl<D: Domain + ?Sized> Ctx<'_, D> {
    /// `-EFAULT` unless `[gva, gva + len)` lies inside the caller's address
    /// space (below 2^32 for a 32-bit caller, below 2^64 for a 64-bit one).
    fn check_range(&self, gva: u64, len: usize) -> Result<(), Errno> {
        let len = u64::try_from(len).map_err(|_| Errno::EFAULT)?;
        if len == 0 {
            return Ok(());
        }
        let last = gva.checked_add(len - 1).ok_or(Errno::EFAULT)?;
        if last > self.width.mask() {
            return Err(Errno::EFAULT);
        }
        Ok(())
    }

    /// Xen's `guest_handle_okay` for an array: `-EFAULT` unless `count`
    /// elements of `size` bytes from `gva` lie inside the caller's address
    /// space.
    pub fn check_array(&self, gva: u64, count: u64, size: u64) -> Result<(), Errno> {
        let len = count.checked_mul(size).ok_or(Errno::EFAULT)?;
        if len == 0 {
            return Ok(());
        }
        let last = gva.checked_add(len - 1).ok_or(Errno::EFAULT)?;
        if last > self.width.mask() {
            return Err(Errno::EFAULT);
        }
        Ok(())
    }

    /// `gva + offset`, or `-EFAULT` if that leaves the address space.
    pub fn offset(&self, gva: u64, offset: u64) -> Result<u64, Errno> {
        match gva.checked_add(offset) {
            Some(a) if a <= self.width.mask() => Ok(a),
            _ => Err(Errno::EFAULT),
        }
    }

    /// Copies `N` bytes in from `gva`.
    pub fn read<const N: usize>(&mut self, gva: u64) -> Result<[u8; N], Errno> {
        let mut buf = [0u8; N];
        self.read_into(gva, &mut buf)?;
        Ok(buf)
    }

    /// Copies `buf.len()` bytes in from `gva`.
    pub fn read_into(&mut self, gva: u64, buf: &mut [u8]) -> Result<(), Errno> {
        self.check_range(gva, buf.len())?;
        self.d.copy_from_guest(gva, buf)
    }

    /// Copies `data` out to `gva`.
    pub fn write(&mut self, gva: u64, data: &[u8]) -> Result<(), Errno> {
        self.check_range(gva, data.len())?;
        self.d.copy_to_guest(gva, data)
    }

    /// Whether `domid` names the caller (`DOMID_SELF` or its own id).
    pub fn is_self(&self, domid: DomId) -> bool {
        domid == DOMID_SELF || domid == self.d.domid()
    }

    /// `domid` with `DOMID_SELF` replaced by the caller's own id.
    pub fn resolve(&self, domid: DomId) -> DomId {
        if domid == DOMID_SELF {
            self.d.domid()
        } else {
            domid
        }
    }

    /// Xen's `rcu_lock_domain_by_any_id` and the default XSM policy's
    /// `XSM_TARGET` check: the (resolved) domain `domid` names, or `-ESRCH`
    /// if it does not exist, or `-EPERM` if it is another domain and the
    /// caller is not privileged.
    pub fn target(&self, domid: DomId) -> Result<DomId, Errno> {
        let dom = self.lookup(domid)?;
        if dom != self.d.domid() && !self.d.is_privileged() {
            return Err(Errno::EPERM);
        }
        Ok(dom)
    }

    /// Xen's `rcu_lock_domain_by_any_id` alone: the (resolved) domain
    /// `domid` names, or `-ESRCH` if there is none.
    pub fn lookup(&self, domid: DomId) -> Result<DomId, Errno> {
        if self.is_self(domid) {
            Ok(self.d.domid())
        } else if domid < DOMID_FIRST_RESERVED && self.d.domain_exists(domid) {
            Ok(domid)
        } else {
            Err(Errno::ESRCH)
        }
    }

    /// Xen's `domain_vcpu`: `vcpu` if the domain has it, else `-ENOENT`.
    pub fn vcpu(&self, vcpu: u32) -> Result<u32, Errno> {
        if vcpu < self.d.max_vcpus() {
            Ok(vcpu)
        } else {
            Err(Errno::ENOENT)
        }
    }
}
