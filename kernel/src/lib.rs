//! The portable parts of keel's kernel crate, unit-tested on the host: the command
//! line, boot-information parsing, the first look at kernel images and the PVH
//! domain builder. The bare-metal binary (`src/main.rs`) is the glue that feeds them
//! real memory.
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
