//! Event-channel ops, their argument structures and constants
//! (`xen/include/public/event_channel.h`, `VIRQ_*` from `xen.h`).
//!
//! `event_channel_op(int cmd, void *arg)`: `arg` points to the structure
//! `cmd` names. The legacy `event_channel_op_compat(evtchn_op_t *op)`
//! (hypercall 16) passes one [`EvtchnOp`]: the command followed by the same
//! structure in a union.
//!
//! Every structure here is made of `domid_t` (u16) and 32-bit fields only
//! (the FIFO ones of naturally placed u64s), so native and compat layouts
//! are the same: one type each. Xen copies the whole structure back after a
//! successful bind, alloc or status, so IN fields come back unchanged.

/// `evtchn_port_t`.
pub type EvtchnPort = u32;

pub const EVTCHNOP_BIND_INTERDOMAIN: u32 = 0;
pub const EVTCHNOP_BIND_VIRQ: u32 = 1;
pub const EVTCHNOP_BIND_PIRQ: u32 = 2;
pub const EVTCHNOP_CLOSE: u32 = 3;
pub const EVTCHNOP_SEND: u32 = 4;
pub const EVTCHNOP_STATUS: u32 = 5;
pub const EVTCHNOP_ALLOC_UNBOUND: u32 = 6;
pub const EVTCHNOP_BIND_IPI: u32 = 7;
pub const EVTCHNOP_BIND_VCPU: u32 = 8;
pub const EVTCHNOP_UNMASK: u32 = 9;
pub const EVTCHNOP_RESET: u32 = 10;
pub const EVTCHNOP_INIT_CONTROL: u32 = 11;
pub const EVTCHNOP_EXPAND_ARRAY: u32 = 12;
pub const EVTCHNOP_SET_PRIORITY: u32 = 13;
pub const EVTCHNOP_RESET_CONT: u32 = 14;

// `EVTCHNSTAT_*`, returned by `EVTCHNOP_status`.
pub const EVTCHNSTAT_CLOSED: u32 = 0;
pub const EVTCHNSTAT_UNBOUND: u32 = 1;
pub const EVTCHNSTAT_INTERDOMAIN: u32 = 2;
pub const EVTCHNSTAT_PIRQ: u32 = 3;
pub const EVTCHNSTAT_VIRQ: u32 = 4;
pub const EVTCHNSTAT_IPI: u32 = 5;

/// Ports of the 2-level ABI for a 64-bit guest (64 * 64).
pub const EVTCHN_2L_NR_CHANNELS: u32 = 4096;
/// Ports of the 2-level ABI for a 32-bit guest (32 * 32).
pub const EVTCHN_2L_NR_CHANNELS_COMPAT: u32 = 1024;

// `VIRQ_*`: per-vCPU (V) or global (G) virtual interrupts.
pub const VIRQ_TIMER: u32 = 0;
pub const VIRQ_DEBUG: u32 = 1;
pub const VIRQ_CONSOLE: u32 = 2;
pub const VIRQ_DOM_EXC: u32 = 3;
pub const VIRQ_TBUF: u32 = 4;
pub const VIRQ_DEBUGGER: u32 = 6;
pub const VIRQ_XENOPROF: u32 = 7;
pub const VIRQ_CON_RING: u32 = 8;
pub const VIRQ_PCPU_STATE: u32 = 9;
pub const VIRQ_MEM_EVENT: u32 = 10;
pub const VIRQ_ARGO: u32 = 11;
pub const VIRQ_ENOMEM: u32 = 12;
pub const VIRQ_XENPMU: u32 = 13;
/// Architecture-specific VIRQs 16..=23.
pub const VIRQ_ARCH_0: u32 = 16;
/// Number of VIRQs.
pub const NR_VIRQS: u32 = 24;

/// `BIND_PIRQ__WILL_SHARE` in [`EvtchnBindPirq::flags`].
pub const BIND_PIRQ_WILL_SHARE: u32 = 1;

abi_struct! {
    /// `struct evtchn_alloc_unbound` (`EVTCHNOP_alloc_unbound`).
    #[repr(C)]
    pub struct EvtchnAllocUnbound(8) {
        /// IN: the domain to allocate the port in (`DOMID_SELF`; others
        /// only for a privileged caller).
        pub dom: u16 => 0,
        /// IN: the only domain that may bind to it (`DOMID_SELF` allowed).
        pub remote_dom: u16 => 2,
        /// OUT: the new port.
        pub port: EvtchnPort => 4,
    }
}

abi_struct! {
    /// `struct evtchn_bind_interdomain` (`EVTCHNOP_bind_interdomain`).
    #[repr(C)]
    pub struct EvtchnBindInterdomain(12) {
        /// IN: the peer domain (`DOMID_SELF` for loopback).
        pub remote_dom: u16 => 0,
        /// Padding the C compiler inserts before `remote_port`.
        pub pad: u16 => 2,
        /// IN: the peer's unbound port, allocated for the caller.
        pub remote_port: EvtchnPort => 4,
        /// OUT: the caller's new port.
        pub local_port: EvtchnPort => 8,
    }
}

abi_struct! {
    /// `struct evtchn_bind_virq` (`EVTCHNOP_bind_virq`).
    #[repr(C)]
    pub struct EvtchnBindVirq(12) {
        /// IN: `VIRQ_*`.
        pub virq: u32 => 0,
        /// IN: the vCPU to notify (0 for a global or per-domain VIRQ).
        pub vcpu: u32 => 4,
        /// OUT: the new port.
        pub port: EvtchnPort => 8,
    }
}

abi_struct! {
    /// `struct evtchn_bind_pirq` (`EVTCHNOP_bind_pirq`).
    #[repr(C)]
    pub struct EvtchnBindPirq(12) {
        /// IN: the physical IRQ.
        pub pirq: u32 => 0,
        /// IN: `BIND_PIRQ__*`.
        pub flags: u32 => 4,
        /// OUT: the new port.
        pub port: EvtchnPort => 8,
    }
}

abi_struct! {
    /// `struct evtchn_bind_ipi` (`EVTCHNOP_bind_ipi`).
    #[repr(C)]
    pub struct EvtchnBindIpi(8) {
        /// IN: the vCPU to notify; fixed for the channel's life.
        pub vcpu: u32 => 0,
        /// OUT: the new port.
        pub port: EvtchnPort => 4,
    }
}

abi_struct! {
    /// `struct evtchn_close` (`EVTCHNOP_close`); also the layout of
    /// `evtchn_send` and `evtchn_unmask`, which are one port too.
    #[repr(C)]
    pub struct EvtchnPortArg(4) {
        /// IN: the caller's port.
        pub port: EvtchnPort => 0,
    }
}

/// `struct evtchn_close`.
pub type EvtchnClose = EvtchnPortArg;
/// `struct evtchn_send`.
pub type EvtchnSend = EvtchnPortArg;
/// `struct evtchn_unmask`.
pub type EvtchnUnmask = EvtchnPortArg;

abi_struct! {
    /// `struct evtchn_status` (`EVTCHNOP_status`). `u` is the C union
    /// `{ unbound { domid_t dom; }; interdomain { domid_t dom; evtchn_port_t
    /// port; }; uint32_t pirq; uint32_t virq; }`, kept as its 8 bytes; the
    /// `set_*` methods write the member that `status` selects, leaving the
    /// other bytes as they were (as Xen, which fills in its copy of the
    /// caller's structure).
    #[repr(C)]
    pub struct EvtchnStatus(24) {
        /// IN: the domain owning the port (`DOMID_SELF`; others only for a
        /// privileged caller).
        pub dom: u16 => 0,
        /// Padding the C compiler inserts before `port`.
        pub pad: u16 => 2,
        /// IN: the port.
        pub port: EvtchnPort => 4,
        /// OUT: `EVTCHNSTAT_*`.
        pub status: u32 => 8,
        /// OUT: the vCPU the channel notifies.
        pub vcpu: u32 => 12,
        /// OUT: the union `u` (see the type's documentation).
        pub u: [u8; 8] => 16,
    }
}

impl EvtchnStatus {
    /// `u.unbound.dom` / `u.interdomain.dom`: bytes 0..2 of the union.
    pub fn set_dom(&mut self, dom: u16) {
        self.u[0..2].copy_from_slice(&dom.to_le_bytes());
    }

    /// `u.interdomain.port`: bytes 4..8 of the union.
    pub fn set_interdomain_port(&mut self, port: EvtchnPort) {
        self.u[4..8].copy_from_slice(&port.to_le_bytes());
    }

    /// `u.pirq` / `u.virq`: bytes 0..4 of the union.
    pub fn set_irq(&mut self, irq: u32) {
        self.u[0..4].copy_from_slice(&irq.to_le_bytes());
    }

    /// `u.unbound.dom` / `u.interdomain.dom`.
    #[must_use]
    pub fn dom_member(&self) -> u16 {
        u16::from_le_bytes([self.u[0], self.u[1]])
    }

    /// `u.interdomain.port`.
    #[must_use]
    pub fn interdomain_port(&self) -> EvtchnPort {
        u32::from_le_bytes([self.u[4], self.u[5], self.u[6], self.u[7]])
    }

    /// `u.pirq` / `u.virq`.
    #[must_use]
    pub fn irq(&self) -> u32 {
        u32::from_le_bytes([self.u[0], self.u[1], self.u[2], self.u[3]])
    }
}

abi_struct! {
    /// `struct evtchn_bind_vcpu` (`EVTCHNOP_bind_vcpu`).
    #[repr(C)]
    pub struct EvtchnBindVcpu(8) {
        /// IN: the caller's port.
        pub port: EvtchnPort => 0,
        /// IN: the vCPU it should notify from now on.
        pub vcpu: u32 => 4,
    }
}

abi_struct! {
    /// `struct evtchn_reset` (`EVTCHNOP_reset`).
    #[repr(C)]
    pub struct EvtchnReset(2) {
        /// IN: the domain whose channels all close (`DOMID_SELF`; others
        /// only for a privileged caller).
        pub dom: u16 => 0,
    }
}

abi_struct! {
    /// `struct evtchn_init_control` (`EVTCHNOP_init_control`, FIFO ABI).
    #[repr(C)]
    pub struct EvtchnInitControl(24) {
        /// IN: gfn of the control block.
        pub control_gfn: u64 => 0,
        /// IN: offset of the control block in that frame.
        pub offset: u32 => 8,
        /// IN: the vCPU the control block is for.
        pub vcpu: u32 => 12,
        /// OUT: bits in an event word's LINK field.
        pub link_bits: u8 => 16,
        /// Padding.
        pub pad: [u8; 7] => 17,
    }
}

abi_struct! {
    /// `struct evtchn_expand_array` (`EVTCHNOP_expand_array`, FIFO ABI).
    #[repr(C)]
    pub struct EvtchnExpandArray(8) {
        /// IN: gfn of the next page of the event array.
        pub array_gfn: u64 => 0,
    }
}

abi_struct! {
    /// `struct evtchn_set_priority` (`EVTCHNOP_set_priority`, FIFO ABI).
    #[repr(C)]
    pub struct EvtchnSetPriority(8) {
        /// IN: the caller's port.
        pub port: EvtchnPort => 0,
        /// IN: 0 (highest) to 15 (lowest).
        pub priority: u32 => 4,
    }
}

// The FIFO ABI (`public/event_channel.h`, "FIFO-based event channel ABI").

/// Bits of an event word's LINK field (`EVTCHN_FIFO_LINK_BITS`), also
/// `init_control`'s OUT `link_bits`.
pub const EVTCHN_FIFO_LINK_BITS: u32 = 17;
/// Ports the FIFO ABI can express (`EVTCHN_FIFO_NR_CHANNELS`).
pub const EVTCHN_FIFO_NR_CHANNELS: u32 = 1 << EVTCHN_FIFO_LINK_BITS;
/// Size of `struct evtchn_fifo_control_block`: `ready`, a reserved word and
/// one 32-bit head per queue.
pub const EVTCHN_FIFO_CONTROL_BLOCK_SIZE: u32 = 8 + 4 * 16;
/// The largest `init_control` offset whose control block stays within the
/// page (Xen: `offset > PAGE_SIZE - sizeof(control block)` is `-EINVAL`).
pub const EVTCHN_FIFO_MAX_CONTROL_OFFSET: u32 = 4096 - EVTCHN_FIFO_CONTROL_BLOCK_SIZE;

/// Size of the union in [`EvtchnOp`]: its largest member, [`EvtchnStatus`].
pub const EVTCHN_OP_UNION_SIZE: usize = EvtchnStatus::SIZE;

abi_struct! {
    /// `struct evtchn_op`: the argument of the legacy
    /// `event_channel_op_compat` (hypercall 16). Same for both widths.
    #[repr(C)]
    pub struct EvtchnOp(28) {
        /// IN: `EVTCHNOP_*`.
        pub cmd: u32 => 0,
        /// IN/OUT: the command's structure (the union `u`), at offset 4.
        pub u: [u8; EVTCHN_OP_UNION_SIZE] => 4,
    }
}

/// Offset of the union in [`EvtchnOp`].
pub const EVTCHN_OP_UNION_OFFSET: u64 = 4;

// ---- FIFO event words, queues and the event array (`public/event_channel.h`;
// the page geometry from Xen's `event_fifo.c`). Used by `keel-evtchn`'s
// `fifo` module; kept apart from the wire structures above. ----

/// Bit number of PENDING in an event word (`EVTCHN_FIFO_PENDING`).
pub const EVTCHN_FIFO_PENDING: u32 = 31;
/// Bit number of MASKED in an event word (`EVTCHN_FIFO_MASKED`).
pub const EVTCHN_FIFO_MASKED: u32 = 30;
/// Bit number of LINKED in an event word (`EVTCHN_FIFO_LINKED`).
pub const EVTCHN_FIFO_LINKED: u32 = 29;
/// Bit number of BUSY in an event word (`EVTCHN_FIFO_BUSY`): set by the
/// hypervisor while it links to the word, to hold off the guest's unmask.
pub const EVTCHN_FIFO_BUSY: u32 = 28;
/// The LINK field of an event word: the next port of the queue, 0 for none
/// (`EVTCHN_FIFO_LINK_MASK`).
pub const EVTCHN_FIFO_LINK_MASK: u32 = (1 << EVTCHN_FIFO_LINK_BITS) - 1;
/// The highest priority (`EVTCHN_FIFO_PRIORITY_MAX`).
pub const EVTCHN_FIFO_PRIORITY_MAX: u32 = 0;
/// A newly bound port's priority (`EVTCHN_FIFO_PRIORITY_DEFAULT`).
pub const EVTCHN_FIFO_PRIORITY_DEFAULT: u32 = 7;
/// The lowest priority (`EVTCHN_FIFO_PRIORITY_MIN`).
pub const EVTCHN_FIFO_PRIORITY_MIN: u32 = 15;
/// Queues per vCPU, one per priority (`EVTCHN_FIFO_MAX_QUEUES`).
pub const EVTCHN_FIFO_MAX_QUEUES: u32 = EVTCHN_FIFO_PRIORITY_MIN + 1;
/// Event words (ports) per 4 KiB event-array page.
pub const EVTCHN_FIFO_EVENT_WORDS_PER_PAGE: u32 = 4096 / 4;
/// Event-array pages needed for every port the ABI can express: 128.
pub const EVTCHN_FIFO_MAX_EVENT_ARRAY_PAGES: u32 =
    EVTCHN_FIFO_NR_CHANNELS / EVTCHN_FIFO_EVENT_WORDS_PER_PAGE;
