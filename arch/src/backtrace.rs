//! A short stack of return addresses for fatal reports, by walking saved frame
//! pointers (keel is built with frame pointers: `frame-pointer: always` in the target).
//!
//! Each frame pointer is vetted (aligned, inside keel's image, where the boot CPU's
//! stacks live, or inside this CPU's own stack, `PerCpu::stack_contains`) before it is read, so a corrupt chain ends the walk instead of
//! faulting again. Resolve the addresses with `addr2line -e target/keel/keel.elf`.

const MAX_FRAMES: usize = 16;

/// Prints `rip` (unless 0: not known) and up to [`MAX_FRAMES`] return addresses
/// found from `rbp`.
pub fn print(rip: u64, rbp: u64) {
    let w = crate::console::emergency_write_fmt;
    w(format_args!("(KEEL) FATAL: stack:"));
    if rip != 0 {
        w(format_args!(" {rip:#018x}"));
    }
    let mut fp = rbp;
    for _ in 0..MAX_FRAMES {
        if fp == 0 || !fp.is_multiple_of(8) || !frame_readable(fp) {
            break;
        }
        let ptr = fp as *const u64;
        // SAFETY: `fp` is 8-aligned and [fp, fp+16) lies inside keel's mapped image
        // (checked just above), so both reads are of mapped, initialized memory.
        let (next, ret) = unsafe { (ptr.read_volatile(), ptr.add(1).read_volatile()) };
        if ret == 0 {
            break;
        }
        w(format_args!(" {ret:#018x}"));
        if next <= fp {
            break; // stacks grow down: a caller's frame is always higher
        }
        fp = next;
    }
    w(format_args!("\n"));
}

#[cfg(target_os = "none")]
fn frame_readable(fp: u64) -> bool {
    crate::image::contains(fp, 16) || crate::percpu::this().stack_contains(fp, 16)
}

#[cfg(not(target_os = "none"))]
fn frame_readable(_fp: u64) -> bool {
    false
}
