//! Where keel's own image lies, from the linker script's symbols (kernel/link.ld).

/// Virtual and physical bounds of keel's image and its sections.
#[derive(Clone, Copy, Debug)]
pub struct ImageLayout {
    pub text: (u64, u64),
    pub rodata: (u64, u64),
    pub data: (u64, u64),
    /// `.bss` (NOLOAD), from the end of `.data` to the end of the image.
    pub bss: (u64, u64),
    /// Physical start and end of the whole image, `.boot` included.
    pub phys: (u64, u64),
}

#[cfg(target_os = "none")]
unsafe extern "C" {
    static __keel_load_start: u8;
    static __keel_text_start: u8;
    static __keel_text_end: u8;
    static __keel_rodata_start: u8;
    static __keel_rodata_end: u8;
    static __keel_data_start: u8;
    static __keel_data_end: u8;
    static __keel_bss_end: u8;
}

/// The layout of the running image.
#[cfg(target_os = "none")]
pub fn layout() -> ImageLayout {
    use core::ptr::addr_of;
    // Only the addresses of the linker-defined symbols are taken, never their
    // contents; `__keel_load_start` is an absolute (physical) symbol.
    {
        let a = |p: *const u8| p as u64;
        ImageLayout {
            text: (a(addr_of!(__keel_text_start)), a(addr_of!(__keel_text_end))),
            rodata: (
                a(addr_of!(__keel_rodata_start)),
                a(addr_of!(__keel_rodata_end)),
            ),
            data: (a(addr_of!(__keel_data_start)), a(addr_of!(__keel_data_end))),
            bss: (a(addr_of!(__keel_data_end)), a(addr_of!(__keel_bss_end))),
            phys: (
                a(addr_of!(__keel_load_start)),
                a(addr_of!(__keel_bss_end)) - keel_mm::layout::IMAGE_VIRT_BASE,
            ),
        }
    }
}

/// Whether `va..va+len` lies inside keel's loaded image (used to vet stack-walk
/// pointers before reading them).
#[cfg(target_os = "none")]
pub fn contains(va: u64, len: u64) -> bool {
    let l = layout();
    va >= l.text.0 && va.checked_add(len).is_some_and(|end| end <= l.bss.1)
}
