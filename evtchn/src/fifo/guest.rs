//! A guest's side of the FIFO ABI, for the tests: Linux's
//! `drivers/xen/events/events_fifo.c` consumer (`__evtchn_fifo_handle_events`,
//! `consume_one_event`) and unmask (`clear_masked_cond`), as state machines
//! that make one atomic access per step, so a test can interleave them with
//! keel's accesses at any point.

use super::{FifoMem, LINK_MASK, LINKED, MASKED, PENDING, Port};

/// Queues per vCPU.
const QUEUES: usize = 16;

/// Where the guest's words are: the event-array frames, and each vCPU's
/// control block (frame, offset).
#[derive(Clone, Debug)]
pub struct Layout {
    pub pages: Vec<u64>,
    pub control: Vec<(u64, usize)>,
}

impl Layout {
    /// `port`'s event word, if the array reaches it.
    pub fn word(&self, port: Port) -> Option<(u64, usize)> {
        let frame = *self.pages.get((port / 1024) as usize)?;
        Some((frame, 4 * (port % 1024) as usize))
    }

    pub fn ready(&self, vcpu: u32) -> (u64, usize) {
        let (f, o) = self.control[vcpu as usize];
        (f, o)
    }

    pub fn head(&self, vcpu: u32, q: u8) -> (u64, usize) {
        let (f, o) = self.control[vcpu as usize];
        (f, o + 8 + 4 * usize::from(q))
    }
}

/// What a consumer step did that a test checks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Seen {
    /// Took the `ready` word and chose queue `q` (the highest-priority one
    /// it knows to be ready).
    Picked { q: u8 },
    /// Unlinked `port`, the head of queue `q`; `next` was its LINK.
    Consumed { q: u8, port: Port, next: Port },
    /// Handled `port`, which was pending and not masked: cleared PENDING
    /// (Linux's ack).
    Handled { port: Port },
    /// A head or link named a port beyond the array: the guest gives up on
    /// the queue (Linux would fault).
    Bad { q: u8, port: Port },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Idle,
    Pick,
    ReadHead { q: u8 },
    Load { q: u8, port: Port },
    Unlink { q: u8, port: Port, old: u32 },
    Check { q: u8, port: Port, next: Port },
    Ack { q: u8, port: Port, next: Port },
}

/// One vCPU's event upcall.
#[derive(Clone, Debug)]
pub struct Consumer {
    pub vcpu: u32,
    /// The guest's own copy of each queue's head (Linux's `q->head`).
    heads: [Port; QUEUES],
    /// The guest's copy of `ready`.
    ready: u32,
    phase: Phase,
}

impl Consumer {
    pub fn new(vcpu: u32) -> Consumer {
        Consumer {
            vcpu,
            heads: [0; QUEUES],
            ready: 0,
            phase: Phase::Idle,
        }
    }

    pub fn is_idle(&self) -> bool {
        self.phase == Phase::Idle
    }

    /// One step. `upcall` is the vCPU's `evtchn_upcall_pending`: an idle
    /// consumer starts when it is set (clearing it, as Linux's upcall does
    /// before handling, and again after if it was set meanwhile).
    pub fn step<M: FifoMem + ?Sized>(
        &mut self,
        mem: &M,
        l: &Layout,
        upcall: &mut bool,
    ) -> Option<Seen> {
        let v = self.vcpu;
        match self.phase {
            Phase::Idle => {
                if *upcall {
                    *upcall = false;
                    self.phase = Phase::Pick;
                }
                None
            }
            Phase::Pick => {
                let (f, o) = l.ready(v);
                self.ready |= mem.fetch_and(f, o, 0);
                self.ready &= 0xffff;
                if self.ready == 0 {
                    self.phase = Phase::Idle;
                    return None;
                }
                let q = self.ready.trailing_zeros() as u8;
                let head = self.heads[usize::from(q)];
                self.phase = if head == 0 {
                    Phase::ReadHead { q }
                } else {
                    Phase::Load { q, port: head }
                };
                Some(Seen::Picked { q })
            }
            Phase::ReadHead { q } => {
                let (f, o) = l.head(v, q);
                let port = mem.load(f, o);
                self.phase = Phase::Load { q, port };
                None
            }
            Phase::Load { q, port } => {
                let Some((f, o)) = l.word(port) else {
                    self.heads[usize::from(q)] = 0;
                    self.ready &= !(1 << q);
                    self.phase = Phase::Pick;
                    return Some(Seen::Bad { q, port });
                };
                let old = mem.load(f, o);
                self.phase = Phase::Unlink { q, port, old };
                None
            }
            Phase::Unlink { q, port, old } => {
                let (f, o) = l.word(port)?;
                let new = old & !(LINKED | LINK_MASK);
                match mem.compare_exchange(f, o, old, new) {
                    Ok(_) => {
                        let next = old & LINK_MASK;
                        if next == 0 {
                            self.ready &= !(1 << q);
                        }
                        self.phase = Phase::Check { q, port, next };
                        Some(Seen::Consumed { q, port, next })
                    }
                    Err(now) => {
                        self.phase = Phase::Unlink { q, port, old: now };
                        None
                    }
                }
            }
            Phase::Check { q, port, next } => {
                let (f, o) = l.word(port)?;
                let w = mem.load(f, o);
                if w & PENDING != 0 && w & MASKED == 0 {
                    self.phase = Phase::Ack { q, port, next };
                } else {
                    self.heads[usize::from(q)] = next;
                    self.phase = Phase::Pick;
                }
                None
            }
            Phase::Ack { q, port, next } => {
                let (f, o) = l.word(port)?;
                mem.fetch_and(f, o, !PENDING);
                self.heads[usize::from(q)] = next;
                self.phase = Phase::Pick;
                Some(Seen::Handled { port })
            }
        }
    }
}

/// What an unmask step did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unmasked {
    /// MASKED is clear; nothing pending.
    Done,
    /// The port is pending: the guest calls `EVTCHNOP_unmask`.
    Hypercall(Port),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum UPhase {
    Idle,
    Load { port: Port },
    Cas { port: Port, old: u32 },
}

/// A guest unmasking one port at a time (Linux's `evtchn_fifo_unmask`):
/// clears MASKED with compare-and-exchange expecting BUSY clear (so it
/// waits while keel links to the word), unless the port is pending, when it
/// asks keel to unmask instead.
#[derive(Clone, Debug)]
pub struct Unmasker {
    phase: UPhase,
}

impl Default for Unmasker {
    fn default() -> Self {
        Unmasker {
            phase: UPhase::Idle,
        }
    }
}

impl Unmasker {
    pub fn is_idle(&self) -> bool {
        self.phase == UPhase::Idle
    }

    /// Starts unmasking `port` (if idle).
    pub fn start(&mut self, port: Port) {
        if self.is_idle() {
            self.phase = UPhase::Load { port };
        }
    }

    fn decide(&mut self, port: Port, w: u32) -> Option<Unmasked> {
        if w & MASKED == 0 {
            self.phase = UPhase::Idle;
            return Some(Unmasked::Done);
        }
        if w & PENDING != 0 {
            self.phase = UPhase::Idle;
            return Some(Unmasked::Hypercall(port));
        }
        self.phase = UPhase::Cas {
            port,
            old: w & !super::BUSY,
        };
        None
    }

    pub fn step<M: FifoMem + ?Sized>(&mut self, mem: &M, l: &Layout) -> Option<Unmasked> {
        match self.phase {
            UPhase::Idle => None,
            UPhase::Load { port } => {
                let Some((f, o)) = l.word(port) else {
                    self.phase = UPhase::Idle;
                    return Some(Unmasked::Done);
                };
                let w = mem.load(f, o);
                self.decide(port, w)
            }
            UPhase::Cas { port, old } => {
                let (f, o) = l.word(port)?;
                match mem.compare_exchange(f, o, old, old & !MASKED) {
                    Ok(_) => {
                        self.phase = UPhase::Idle;
                        Some(Unmasked::Done)
                    }
                    Err(now) => self.decide(port, now),
                }
            }
        }
    }
}
