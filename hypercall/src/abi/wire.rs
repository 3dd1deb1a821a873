//! Little-endian encoding of the primitive field types that ABI structures
//! are built from.
//!
//! Each implementation reads or writes exactly `size_of::<Self>()` bytes; the
//! slice handed in always has that length, because `abi_struct!`
//! cuts it at the offset and size it has asserted at compile
//! time. A wrong length is a bug in this crate and panics in
//! `copy_from_slice`.

/// A value with a fixed little-endian encoding of `size_of::<Self>()` bytes.
pub trait Field: Copy {
    /// Writes the encoding into `out` (`out.len() == size_of::<Self>()`).
    fn put(&self, out: &mut [u8]);
    /// Reads the encoding from `src` (`src.len() == size_of::<Self>()`).
    fn get(src: &[u8]) -> Self;
}

macro_rules! int_field {
    ($($t:ty),*) => {$(
        impl Field for $t {
            fn put(&self, out: &mut [u8]) {
                out.copy_from_slice(&self.to_le_bytes());
            }
            fn get(src: &[u8]) -> Self {
                let mut bytes = [0u8; ::core::mem::size_of::<$t>()];
                bytes.copy_from_slice(src);
                <$t>::from_le_bytes(bytes)
            }
        }
    )*};
}
int_field!(u8, u16, u32, u64, i8, i16, i32, i64);

impl<T: Field, const N: usize> Field for [T; N] {
    fn put(&self, out: &mut [u8]) {
        let size = core::mem::size_of::<T>();
        for (value, chunk) in self.iter().zip(out.chunks_exact_mut(size)) {
            value.put(chunk);
        }
    }
    fn get(src: &[u8]) -> Self {
        let size = core::mem::size_of::<T>();
        core::array::from_fn(|i| T::get(&src[i * size..(i + 1) * size]))
    }
}
