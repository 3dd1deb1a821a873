//! What keel builds domains from and how, unit-tested on the host: boot information,
//! the command line, the launch plan and xl.cfg, kernel images (ELF, bzImage), the
//! PVH domain builder and its ACPI tables, time conversions. The bare-metal binary
//! (`kernel/`) is the glue that feeds them real memory.
#![cfg_attr(not(test), no_std)]
#![deny(unsafe_code)]

pub mod acpi_tables;
pub mod bootinfo;
pub mod bzimage;
pub mod cmdline;
pub mod image;
pub mod launch;
pub mod pvh;
pub mod time;
pub mod xlcfg;
