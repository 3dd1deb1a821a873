//! x86 facts keel needs as pure logic, apart from the hardware access around them:
//! the instruction decoder ([`insn`]), the CPUID a guest sees ([`cpuid_policy`]),
//! the Xen hypercall page ([`hypercall_page`]), a vCPU's whole register state with
//! the rules for loading one ([`context`]), and the CPU state transitions of a 64-bit
//! PV guest ([`pv`]: its hypercall page, descriptor checks, virtual IDT, event
//! bounce and `iret`).
//!
//! # Why a crate of its own
//!
//! These are models of what a guest sees, not hardware access: `arch` keeps the
//! `asm!`, MSRs and VMX/SVM, and asks this crate what a guest's bytes mean or what its
//! CPUID answer is. Apart, they build and test on the host without `arch`'s target
//! code, and nothing here can grow a hardware dependency unnoticed.
//!
//! # Invariants
//!
//! Nothing here touches hardware: no `asm!`, no `unsafe` (forbidden), no allocation.
//! Every function is a pure function of its arguments, so all of it is tested on the
//! host (`cargo test -p keel-x86`), with property tests for the decoder, which reads
//! bytes a guest controls.
//!
//! # Locking
//!
//! None: no state. Callers own what they pass in (a vCPU's bytes, a guest page).
#![cfg_attr(not(test), no_std)]
#![forbid(unsafe_code)]

pub mod context;
pub mod cpuid_policy;
pub mod hypercall_page;
pub mod insn;
pub mod pv;

#[cfg(test)]
mod insn_proptests;
