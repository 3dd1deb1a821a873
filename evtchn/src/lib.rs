//! Placeholder: this crate's issue comes after the foundation (see `issues`).
//! It is portable and safe by construction.
#![cfg_attr(not(test), no_std)]
#![forbid(unsafe_code)]
