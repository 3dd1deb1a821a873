//! The hypercall dispatcher: from a guest's registers to a Xen-compatible
//! result.
//!
//! # What
//!
//! [`dispatch`] takes the hypercall number and arguments the kernel read
//! from the calling vCPU ([`HypercallArgs`]), runs the handler named after
//! the Xen op (`xen_version`, `console_io`, `sched_op`, `memory_op`,
//! `hvm_op`, one submodule each) against the calling domain (the
//! [`Domain`] trait), and returns an [`Outcome`]: the value for `rax`/`eax`
//! and what the kernel must do with the vCPU next.
//!
//! # Calling convention (Xen `arch-x86/xen-x86_64.h`, `xen-x86_32.h`,
//! `xen/arch/x86/hvm/hypercall.c`)
//!
//! - 64-bit mode: number in `rax`, arguments in `rdi, rsi, rdx, r10, r8`
//!   (and `r9` for a sixth); result in `rax`. Native layouts.
//! - Any other mode (real, 16- or 32-bit protected): number in `eax`,
//!   arguments in `ebx, ecx, edx, esi, edi` (and `ebp`); result in `eax`.
//!   Compat layouts (32-bit `xen_ulong_t`, `xen_pfn_t`, guest handles).
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
//! - No allocation, and no loop whose length the guest controls beyond a
//!   fixed bound: console output is copied in 128-byte pieces and at most
//!   [`CONSOLE_WRITE_BUDGET`] bytes per entry; the rest is done by a
//!   continuation ([`Action::Preempted`]), as Xen does.
//! - Nothing here panics on guest input (property-tested).
//! - Unknown hypercalls and sub-ops return `-ENOSYS`, as Xen does.
//!
//! # Locking
//!
//! None here: [`dispatch`] runs on the calling vCPU with `&mut` access to
//! its domain; the kernel's `Domain` implementation does whatever locking
//! the domain needs.

mod console_io;
mod hvm_op;
mod memory_op;
mod sched_op;
mod xen_version;

#[cfg(test)]
mod fake;
#[cfg(test)]
mod tests;

pub use console_io::CONSOLE_WRITE_BUDGET;

use crate::abi::Errno;
use crate::abi::domid::{DOMID_SELF, DomId};
use crate::abi::features::XENFEAT_NR_SUBMAPS;
use crate::abi::hypercall as nr;
use crate::abi::memory::E820Entry;
use crate::abi::sched;
use crate::abi::version::XenDomainHandle;

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
/// Implemented: `xen_version`, `console_io`, `sched_op`, `memory_op`
/// (`add_to_physmap` for shared info, `memory_map`), `hvm_op`
/// (`set_param`, `get_param`). Every other number, including ones beyond
/// the table, returns `-ENOSYS`; `docs/abi.md` lists each sub-op.
pub fn dispatch<D: Domain + ?Sized>(d: &mut D, call: &HypercallArgs) -> Outcome {
    let call = call.normalized();
    let mut cx = Ctx {
        d,
        width: call.width,
    };
    let a = call.args;
    match call.nr {
        n if n == u64::from(nr::XEN_VERSION) => xen_version::do_xen_version(&mut cx, a[0], a[1]),
        n if n == u64::from(nr::CONSOLE_IO) => console_io::do_console_io(&mut cx, &call),
        n if n == u64::from(nr::SCHED_OP) => sched_op::do_sched_op(&mut cx, a[0], a[1]),
        n if n == u64::from(nr::MEMORY_OP) => memory_op::do_memory_op(&mut cx, a[0], a[1]),
        n if n == u64::from(nr::HVM_OP) => hvm_op::do_hvm_op(&mut cx, a[0], a[1]),
        _ => Outcome::err(Errno::ENOSYS),
    }
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
}
