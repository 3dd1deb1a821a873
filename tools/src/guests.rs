//! Building the PVH test guests (`tests/guests/`) into `target/keel/guests/`.
//!
//! The guests are their own Cargo workspace, never built for the host: each binary
//! is built for its JSON target (`x86_64-pvh-guest.json`, `i686-pvh-guest.json`)
//! with `core` and `compiler_builtins` from source (build-std), exactly like keel
//! itself, so a fresh machine needs nothing beyond the pinned toolchain (its
//! `rust-src` component supplies the sources, so no `rustup target add`).
//! Outputs:
//!
//! - `pvh64.elf`: ELF64, machine x86-64;
//! - `pvh64-elf32.elf`: the same image converted to ELF32 with machine x86-64 by
//!   `llvm-objcopy -O elf32-x86-64` (the toolchain's `llvm-tools` component, so no
//!   Debian binutils needed), the container Xen's XTF uses for 64-bit tests;
//! - `pvh32.elf`: ELF32, machine i386.
//!
//! Each is then checked the way a PVH loader reads it ([`check_pvh_elf`]): class,
//! machine, and a `PT_NOTE` holding the Xen `PHYS32_ENTRY` note whose address lies in
//! a loadable segment. A guest that fails this builds fine and then never runs, so
//! the build fails instead.

use std::path::{Path, PathBuf};
use std::process::Command;

use elf::ElfBytes;
use elf::abi::{EM_386, EM_X86_64, PT_LOAD, PT_NOTE};
use elf::endian::AnyEndian;
use elf::file::Class;

use crate::args::BuildOpts;
use crate::{Error, cargo};

/// `XEN_ELFNOTE_PHYS32_ENTRY` (Xen `public/elfnote.h`).
const XEN_ELFNOTE_PHYS32_ENTRY: u64 = 18;

/// One guest binary: its package, target spec, and what the ELF must look like.
struct Guest {
    package: &'static str,
    target: &'static str,
    class: Class,
    machine: u16,
}

const GUESTS: [Guest; 2] = [
    Guest {
        package: "pvh64",
        target: "x86_64-pvh-guest",
        class: Class::ELF64,
        machine: EM_X86_64,
    },
    Guest {
        package: "pvh32",
        target: "i686-pvh-guest",
        class: Class::ELF32,
        machine: EM_386,
    },
];

/// `tests/guests`, the guests' workspace.
fn guests_workspace() -> PathBuf {
    keel_tests::workspace_root().join("tests").join("guests")
}

/// Where cargo puts the guests' build products: `<target dir>/guests`.
fn guests_target_dir() -> PathBuf {
    crate::image::cargo_target_dir().join("guests")
}

/// Builds every guest into `target/keel/guests/` and checks them; returns that
/// directory.
pub fn build(opts: &BuildOpts) -> Result<PathBuf, Error> {
    let profile = if opts.debug { "debug" } else { "release" };
    let workspace = guests_workspace();
    let out_dir = keel_tests::guests::default_guests_dir();
    std::fs::create_dir_all(&out_dir)
        .map_err(|e| Error(format!("creating {}: {e}", out_dir.display())))?;

    for guest in &GUESTS {
        let spec = workspace.join(format!("{}.json", guest.target));
        eprintln!(
            "xtask: building test guest {} ({profile}) for {}",
            guest.package,
            spec.display()
        );
        let mut cmd = cargo();
        cmd.arg("build")
            .arg("--manifest-path")
            .arg(workspace.join("Cargo.toml"))
            .arg("--target-dir")
            .arg(guests_target_dir())
            .args(["-p", guest.package]);
        if !opts.debug {
            cmd.arg("--release");
        }
        cmd.arg("--target").arg(&spec).args([
            "-Zbuild-std=core,compiler_builtins",
            "-Zbuild-std-features=compiler-builtins-mem",
            "-Zjson-target-spec",
        ]);
        let dest = out_dir.join(format!("{}.elf", guest.package));
        let status = cmd
            .status()
            .map_err(|e| Error(format!("cannot run cargo: {e}")))?;
        if !status.success() {
            // A failed build must not leave an old guest behind for the tests.
            discard_stale(&out_dir);
            return Err(Error(format!(
                "building test guest {} failed ({status})",
                guest.package
            )));
        }
        let built = guests_target_dir()
            .join(guest.target)
            .join(profile)
            .join(guest.package);
        let staged = staging_path(&dest);
        std::fs::copy(&built, &staged).map_err(|e| {
            Error(format!(
                "copying {} to {}: {e}",
                built.display(),
                staged.display()
            ))
        })?;
        verify(&staged, &dest, guest.class, guest.machine).inspect_err(|_| {
            // Best effort: the error is what matters.
            let _ = std::fs::remove_file(&staged);
        })?;
        publish(&staged, &dest)?;
    }

    let elf64 = out_dir.join(keel_tests::guests::PVH64);
    let elf32 = out_dir.join(keel_tests::guests::PVH64_ELF32);
    let staged = staging_path(&elf32);
    to_elf32(&elf64, &staged)?;
    verify(&staged, &elf32, Class::ELF32, EM_X86_64).inspect_err(|_| {
        let _ = std::fs::remove_file(&staged);
    })?;
    publish(&staged, &elf32)?;
    Ok(out_dir)
}

/// `<dest>.<pid>.tmp`: outputs are written there first and renamed into place, so
/// a test (or another xtask) reading the guests never sees a half-written file.
fn staging_path(dest: &Path) -> PathBuf {
    let mut name = dest.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".{}.tmp", std::process::id()));
    dest.with_file_name(name)
}

/// Renames the staged file over `dest` (atomic on one file system).
fn publish(staged: &Path, dest: &Path) -> Result<(), Error> {
    std::fs::rename(staged, dest).map_err(|e| {
        Error(format!(
            "renaming {} to {}: {e}",
            staged.display(),
            dest.display()
        ))
    })
}

/// Removes every built guest from `out_dir` (best effort).
fn discard_stale(out_dir: &Path) {
    for name in keel_tests::guests::ALL {
        // Absent files are fine; anything else the tests will report as missing.
        let _ = std::fs::remove_file(out_dir.join(name));
    }
}

/// The toolchain's `llvm-objcopy` (component `llvm-tools`, pinned in
/// rust-toolchain.toml): `<sysroot>/lib/rustlib/<host>/bin/llvm-objcopy`.
fn llvm_objcopy() -> Result<PathBuf, Error> {
    let rustc = |args: &[&str]| -> Result<String, Error> {
        let out = Command::new(std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into()))
            .args(args)
            .current_dir(keel_tests::workspace_root())
            .output()
            .map_err(|e| Error(format!("cannot run rustc: {e}")))?;
        if !out.status.success() {
            return Err(Error(format!(
                "rustc {} failed: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    };
    let sysroot = rustc(&["--print", "sysroot"])?;
    let verbose = rustc(&["-vV"])?;
    let host = verbose
        .lines()
        .find_map(|l| l.strip_prefix("host: "))
        .ok_or_else(|| Error("rustc -vV names no host".into()))?;
    let path = PathBuf::from(sysroot.trim())
        .join("lib/rustlib")
        .join(host.trim())
        .join("bin/llvm-objcopy");
    if path.is_file() {
        Ok(path)
    } else {
        Err(Error(format!(
            "{} not found: the llvm-tools component is missing (rustup component add llvm-tools)",
            path.display()
        )))
    }
}

/// `llvm-objcopy -O elf32-x86-64 elf64 elf32`.
fn to_elf32(elf64: &Path, elf32: &Path) -> Result<(), Error> {
    let objcopy = llvm_objcopy()?;
    let status = Command::new(&objcopy)
        .args(["-O", "elf32-x86-64"])
        .arg(elf64)
        .arg(elf32)
        .status()
        .map_err(|e| Error(format!("cannot run {}: {e}", objcopy.display())))?;
    if status.success() {
        Ok(())
    } else {
        Err(Error(format!(
            "{} -O elf32-x86-64 {} failed ({status})",
            objcopy.display(),
            elf64.display()
        )))
    }
}

/// Reads `path` (to become `dest`) and checks it with [`check_pvh_elf`]; prints a
/// summary.
fn verify(path: &Path, dest: &Path, class: Class, machine: u16) -> Result<(), Error> {
    let data =
        std::fs::read(path).map_err(|e| Error(format!("reading {}: {e}", path.display())))?;
    let entry = check_pvh_elf(&data, class, machine)
        .map_err(|e| Error(format!("{}: {e}", dest.display())))?;
    eprintln!(
        "xtask: {}: {} bytes, {class:?}, PVH entry {entry:#x}",
        dest.display(),
        data.len()
    );
    Ok(())
}

/// Checks that `data` is an ELF of `class` and `machine` with a Xen
/// `PHYS32_ENTRY` note (name "Xen", 4-byte address) in a `PT_NOTE` segment, whose
/// address lies inside a `PT_LOAD` segment; returns that entry address.
pub fn check_pvh_elf(data: &[u8], class: Class, machine: u16) -> Result<u64, String> {
    let file =
        ElfBytes::<AnyEndian>::minimal_parse(data).map_err(|e| format!("not an ELF: {e}"))?;
    if file.ehdr.class != class {
        return Err(format!(
            "ELF class {:?}, expected {class:?}",
            file.ehdr.class
        ));
    }
    if file.ehdr.e_machine != machine {
        return Err(format!(
            "e_machine {}, expected {machine}",
            file.ehdr.e_machine
        ));
    }
    let segments = file
        .segments()
        .ok_or_else(|| "no program headers".to_string())?;
    let mut entry = None;
    for phdr in segments.iter().filter(|p| p.p_type == PT_NOTE) {
        let notes = file
            .segment_data_as_notes(&phdr)
            .map_err(|e| format!("bad PT_NOTE: {e}"))?;
        for note in notes {
            if let elf::note::Note::Unknown(n) = note
                && n.n_type == XEN_ELFNOTE_PHYS32_ENTRY
                && n.name_str().is_ok_and(|name| name == "Xen")
            {
                let desc: [u8; 4] = n.desc.try_into().map_err(|_| {
                    format!(
                        "Xen PHYS32_ENTRY note has {} bytes, expected 4",
                        n.desc.len()
                    )
                })?;
                entry = Some(u64::from(u32::from_le_bytes(desc)));
            }
        }
    }
    let entry = entry.ok_or_else(|| {
        "no Xen PHYS32_ENTRY note in a PT_NOTE segment: PVH loaders cannot boot it".to_string()
    })?;
    let loaded = segments.iter().any(|p| {
        p.p_type == PT_LOAD && p.p_paddr <= entry && entry < p.p_paddr.saturating_add(p.p_memsz)
    });
    if !loaded {
        return Err(format!(
            "the PVH entry {entry:#x} is outside every PT_LOAD segment"
        ));
    }
    Ok(entry)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_what_is_not_an_elf() {
        assert!(check_pvh_elf(b"not an elf at all", Class::ELF64, EM_X86_64).is_err());
    }

    #[cfg(all(target_arch = "x86_64", target_os = "linux"))]
    #[test]
    fn rejects_an_elf_without_the_note() {
        // This test binary is an x86-64 Linux ELF64: right class and machine, but no
        // Xen note.
        let me = std::fs::read(std::env::current_exe().expect("test binary")).expect("readable");
        assert!(check_pvh_elf(&me, Class::ELF64, EM_X86_64).is_err());
        let err = check_pvh_elf(&me, Class::ELF32, EM_X86_64).unwrap_err();
        assert!(err.contains("class"), "{err}");
    }
}
