//! Intel VMX (SDM Vol. 3C). For now: what the CPU offers ([`caps`]). VMXON, the VMCS,
//! exits and EPT arrive with the first domains (issue #3), beside their SVM twins.
pub mod caps;
pub mod ept;
