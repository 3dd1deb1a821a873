//! Placeholder: the Xen hypercall ABI and dispatcher arrive with issue #3.
#![cfg_attr(not(test), no_std)]
