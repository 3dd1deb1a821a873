//! keel's hardware layer: the only crate with `asm!`, MSRs, port I/O, descriptor
//! tables, the APIC, ACPI access, and VMX and SVM.
//!
//! Everything here that can be a pure function is one (capability decoding, the AML
//! `\_S5` scan) and is unit-tested on the host; the rest runs only on the target
//! (`target_os = "none"`), and every `unsafe` block in it argues its case.
#![cfg_attr(not(test), no_std)]

extern crate alloc;

pub mod acpi;
pub mod apic;
pub mod backtrace;
pub mod boot;
pub mod console;
pub mod cpu;
pub mod gdt;
pub mod hvm;
pub mod image;
pub mod io;
pub mod msr;
pub mod paging;
pub mod percpu;
pub mod pic;
pub mod power;
#[cfg_attr(not(target_os = "none"), allow(dead_code))]
pub mod pv;
pub mod rtc;
pub mod selftest;
#[cfg_attr(not(target_os = "none"), allow(dead_code, unused_imports))]
pub mod smp;
pub mod svm;
#[cfg(test)]
mod test_tables;
pub mod time;
#[cfg_attr(not(target_os = "none"), allow(dead_code))]
pub mod traps;
pub mod vmx;
