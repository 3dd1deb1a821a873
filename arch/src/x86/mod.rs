//! x86 facts keel needs as pure logic, apart from the hardware access around them:
//! the instruction decoder ([`insn`]), the CPUID a guest sees ([`cpuid_policy`]) and
//! the Xen hypercall page ([`hypercall_page`]).
//!
//! Nothing here touches hardware: no `asm!`, no `unsafe`, no allocation. Every function
//! is a pure function of its arguments, so all of it is tested on the host
//! (`cargo test -p keel-arch`), with property tests for the decoder, which reads bytes a
//! guest controls.

pub mod cpuid_policy;
pub mod hypercall_page;
pub mod insn;
pub mod vlapic;

#[cfg(test)]
mod insn_proptests;
