//! keel.elf carries both boot headers: multiboot2 (GRUB on real machines, and the
//! ISO the emulator tests boot) and multiboot v1 (QEMU's `-kernel` loader, which has
//! no multiboot2 support). Checked with GRUB's own `grub-file`, which applies the same
//! header search GRUB's loader does.

use std::process::Command;

fn grub_file_says(flag: &str) -> bool {
    let elf = keel_tests::keel_elf();
    let status = Command::new("grub-file")
        .arg(flag)
        .arg(&elf)
        .status()
        .unwrap_or_else(|e| panic!("cannot run grub-file (package grub-common): {e}"));
    status.success()
}

#[test]
fn keel_elf_is_multiboot2() {
    assert!(
        grub_file_says("--is-x86-multiboot2"),
        "grub-file --is-x86-multiboot2 rejects {}",
        keel_tests::keel_elf().display()
    );
}

#[test]
fn keel_elf_is_multiboot_v1() {
    assert!(
        grub_file_says("--is-x86-multiboot"),
        "grub-file --is-x86-multiboot rejects {}",
        keel_tests::keel_elf().display()
    );
}
