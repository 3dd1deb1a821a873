//! Links pv64 with its own linker script (`link.ld`, beside this file): the PVH
//! guests' `../link.ld` runs them at physical 1 MiB, pv64 runs at VIRT_BASE + 1 MiB
//! with its load addresses (`p_paddr`) at 1 MiB, and keeps the hypercall page out of
//! `.bss`.
fn main() {
    let dir = std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
    println!("cargo:rustc-link-arg-bins=-T{dir}/link.ld");
    println!("cargo:rustc-link-arg-bins=--no-pie");
    println!("cargo:rustc-link-arg-bins=-zmax-page-size=4096");
    println!("cargo:rerun-if-changed=link.ld");
}
