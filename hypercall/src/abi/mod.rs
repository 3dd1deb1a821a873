//! The Xen guest ABI, as keel implements it: hypercall numbers, sub-op
//! numbers, `#[repr(C)]` argument structures and errno values.
//!
//! # What
//!
//! One module per public Xen header (`xen/include/public/`), named after it.
//! Every number and layout here is transcribed from those headers (the file
//! is cited in each submodule); nothing is invented. This is the *only*
//! definition of the ABI in keel: the hypervisor's dispatcher and the test
//! guests both import it, so a layout mistake shows up as a failing guest
//! test rather than as two copies that agree with each other and not with
//! Xen.
//!
//! # Native and compat layouts
//!
//! Xen has two x86 guest ABIs. A vCPU in 64-bit mode uses the *native*
//! layouts, where `xen_ulong_t`, `xen_pfn_t` and guest handles are 64 bits.
//! A vCPU in any other mode (real, 16- or 32-bit protected) uses the
//! *compat* layouts, where those types are 32 bits (Xen generates these as
//! `compat_*` from the same headers). Where the two differ this module has
//! two types, `Foo` (native, 64-bit) and `FooCompat` (32-bit); where they
//! agree there is one type. Which one applies depends on the *calling
//! vCPU's mode*, never on the target this crate is compiled for, so no
//! layout here depends on `usize` or on `target_pointer_width`.
//!
//! # Invariants, checked at compile time
//!
//! Every structure is declared through `abi_struct!` (below), which asserts:
//! - its size, and each field's offset, equal the numbers written next to
//!   the field (transcribed from Xen);
//! - the fields' sizes add up to the structure's size, i.e. there is no
//!   implicit padding: padding the C compiler would insert is an explicit
//!   `pad` field here. This also makes the layout identical on 32-bit
//!   targets, where `u64` is only 4-aligned.
//!
//! Field documentation starts with IN (the guest fills it), OUT (Xen fills
//! it) or IN/OUT.
//!
//! # Bytes, not pointers
//!
//! The hypervisor never reinterprets guest memory as a structure. It copies
//! `SIZE` bytes in and decodes them with `from_bytes`, and encodes with
//! `to_bytes` before copying out (little-endian; x86 is the only
//! architecture this ABI describes). That keeps the crate free of `unsafe`
//! and of any dependency such as `zerocopy`. Guests, in contrast, may build
//! these structures in their own memory and pass a pointer: that is what
//! `#[repr(C)]` is for.

// The byte encodings are little-endian; so is every machine this ABI runs on.
const _: () = assert!(cfg!(target_endian = "little"));

/// Declares one ABI structure: `#[repr(...)]`, derives, size and offset
/// assertions, and the `to_bytes`/`from_bytes` pair.
///
/// ```text
/// abi_struct! {
///     /// docs
///     #[repr(C)]
///     pub struct Name(SIZE) {
///         /// IN: docs
///         pub field: Type => OFFSET,
///     }
/// }
/// ```
macro_rules! abi_struct {
    (
        $(#[doc = $doc:expr])*
        #[repr($($repr:tt)*)]
        pub struct $name:ident($size:literal) {
            $(
                $(#[doc = $fdoc:expr])*
                pub $field:ident : $ty:ty => $off:literal,
            )*
        }
    ) => {
        $(#[doc = $doc])*
        #[repr($($repr)*)]
        #[derive(Clone, Copy, PartialEq, Eq, Debug)]
        pub struct $name {
            $(
                $(#[doc = $fdoc])*
                pub $field: $ty,
            )*
        }

        const _: () = {
            assert!(::core::mem::size_of::<$name>() == $size);
            $( assert!(::core::mem::offset_of!($name, $field) == $off); )*
            // No implicit padding: every byte belongs to a declared field.
            assert!(0 $( + ::core::mem::size_of::<$ty>() )* == $size);
        };

        impl $name {
            /// Size in bytes of the guest-visible encoding.
            pub const SIZE: usize = $size;

            /// The guest-visible (little-endian) encoding.
            #[must_use]
            pub fn to_bytes(&self) -> [u8; $size] {
                let mut out = [0u8; $size];
                $(
                    // Copy out of a possibly packed struct before borrowing.
                    let value: $ty = self.$field;
                    $crate::abi::Field::put(
                        &value,
                        &mut out[$off..$off + ::core::mem::size_of::<$ty>()],
                    );
                )*
                out
            }

            /// Decodes the guest-visible (little-endian) encoding.
            #[must_use]
            pub fn from_bytes(bytes: &[u8; $size]) -> Self {
                Self {
                    $(
                        $field: <$ty as $crate::abi::Field>::get(
                            &bytes[$off..$off + ::core::mem::size_of::<$ty>()],
                        ),
                    )*
                }
            }
        }

        impl Default for $name {
            /// All bytes zero, as a guest's `memset(&s, 0, sizeof(s))`.
            fn default() -> Self {
                Self::from_bytes(&[0; $size])
            }
        }

        impl $crate::abi::Field for $name {
            fn put(&self, out: &mut [u8]) {
                out.copy_from_slice(&self.to_bytes());
            }
            fn get(src: &[u8]) -> Self {
                let mut bytes = [0u8; $size];
                bytes.copy_from_slice(src);
                Self::from_bytes(&bytes)
            }
        }
    };
}

// The submodules come after the macro: `macro_rules!` is textually scoped.
pub mod callback;
pub mod console;
pub mod cpuid;
pub mod domid;
pub mod elfnote;
pub mod errno;
pub mod evtchn;
pub mod features;
pub mod grant_table;
pub mod hvm;
pub mod hypercall;
pub mod memory;
pub mod mmu;
pub mod physdev;
pub mod pv;
pub mod sched;
pub mod start_info;
pub mod vcpu;
pub mod version;
pub mod xen;

mod wire;

pub use errno::Errno;
pub use wire::Field;

#[cfg(test)]
mod tests;
