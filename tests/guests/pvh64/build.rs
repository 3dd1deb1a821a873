//! Links the guest with the guests' shared linker script (`../link.ld`): a static
//! image at physical 1 MiB, no relocations, the Xen ELF note in its own PT_NOTE.
fn main() {
    let dir = std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
    println!("cargo:rustc-link-arg-bins=-T{dir}/../link.ld");
    println!("cargo:rustc-link-arg-bins=--no-pie");
    println!("cargo:rustc-link-arg-bins=-zmax-page-size=4096");
    println!("cargo:rerun-if-changed=../link.ld");
}
