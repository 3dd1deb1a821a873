//! AMD SVM (APM Vol. 2 ch. 15). For now: what the CPU offers ([`caps`]). VMRUN, the
//! VMCB, exits and NPT arrive with the first domains (issue #3), beside their VMX twins.
pub mod caps;
