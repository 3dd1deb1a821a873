//! What keel builds domains from and how, unit-tested on the host: boot information,
//! the command line, the launch plan and xl.cfg, kernel images (ELF, bzImage) and
//! their Xen ELF notes, the PVH domain builder and its ACPI tables, the x86_64 PV
//! domain builder, time conversions. The bare-metal binary (`kernel/`) is the glue
//! that feeds them real memory.
#![cfg_attr(not(test), no_std)]
#![deny(unsafe_code)]

pub mod acpi_tables;
pub mod bootinfo;
pub mod bzimage;
pub mod cmdline;
pub mod elfnotes;
pub mod image;
pub mod launch;
pub mod pv;
pub mod pvh;
pub mod time;
pub mod xlcfg;
