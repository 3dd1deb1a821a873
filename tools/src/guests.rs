//! Building the test guests (`tests/guests/`) into `target/keel/guests/`.
//!
//! The guests are their own Cargo workspace, never built for the host: each binary
//! is built for its JSON target (`x86_64-pvh-guest.json`, `i686-pvh-guest.json`,
//! `x86_64-pv-guest.json`) with `core` and `compiler_builtins` from source
//! (build-std), exactly like keel itself, so a fresh machine needs nothing beyond
//! the pinned toolchain (its `rust-src` component supplies the sources, so no
//! `rustup target add`). Outputs:
//!
//! - `pvh64.elf`: ELF64, machine x86-64;
//! - `pvh64-elf32.elf`: the same image converted to ELF32 with machine x86-64 by
//!   `llvm-objcopy -O elf32-x86-64` (the toolchain's `llvm-tools` component, so no
//!   Debian binutils needed), the container Xen's XTF uses for 64-bit tests;
//! - `pvh32.elf`: ELF32, machine i386;
//! - `pv64.elf`: the 64-bit PV kernel, ELF64, machine x86-64, linked in the top
//!   2 GiB (its target has code model `kernel`).
//!
//! Each is then checked the way its loader reads it: the PVH guests as a PVH loader
//! does ([`check_pvh_elf`]): class, machine, and a `PT_NOTE` holding the Xen
//! `PHYS32_ENTRY` note whose address lies in a loadable segment; pv64 as Xen's
//! libelf does for a PV kernel ([`check_pv_elf`]): the notes it requires, no
//! `PHYS32_ENTRY`, and every address the notes give inside the image once placed.
//! A guest that fails this builds fine and then never runs, so the build fails
//! instead.

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

/// How a guest is started, hence how its ELF is checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Entry {
    /// PVH: `XEN_ELFNOTE_PHYS32_ENTRY` ([`check_pvh_elf`]).
    Pvh,
    /// PV: `XEN_ELFNOTE_ENTRY` and friends, no PHYS32 entry ([`check_pv_elf`]).
    Pv,
}

/// One guest binary: its package, target spec, and what the ELF must look like.
struct Guest {
    package: &'static str,
    target: &'static str,
    class: Class,
    machine: u16,
    entry: Entry,
}

const GUESTS: [Guest; 3] = [
    Guest {
        package: "pvh64",
        target: "x86_64-pvh-guest",
        class: Class::ELF64,
        machine: EM_X86_64,
        entry: Entry::Pvh,
    },
    Guest {
        package: "pvh32",
        target: "i686-pvh-guest",
        class: Class::ELF32,
        machine: EM_386,
        entry: Entry::Pvh,
    },
    Guest {
        package: "pv64",
        target: "x86_64-pv-guest",
        class: Class::ELF64,
        machine: EM_X86_64,
        entry: Entry::Pv,
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
        verify(&staged, &dest, guest.class, guest.machine, guest.entry).inspect_err(|_| {
            // Best effort: the error is what matters.
            let _ = std::fs::remove_file(&staged);
        })?;
        publish(&staged, &dest)?;
    }

    let elf64 = out_dir.join(keel_tests::guests::PVH64);
    let elf32 = out_dir.join(keel_tests::guests::PVH64_ELF32);
    let staged = staging_path(&elf32);
    to_elf32(&elf64, &staged)?;
    verify(&staged, &elf32, Class::ELF32, EM_X86_64, Entry::Pvh).inspect_err(|_| {
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

/// Reads `path` (to become `dest`) and checks it for `entry`
/// ([`check_pvh_elf`] with `class` and `machine`, or [`check_pv_elf`]); prints a
/// summary.
fn verify(path: &Path, dest: &Path, class: Class, machine: u16, entry: Entry) -> Result<(), Error> {
    let data =
        std::fs::read(path).map_err(|e| Error(format!("reading {}: {e}", path.display())))?;
    let what = match entry {
        Entry::Pvh => {
            check_pvh_elf(&data, class, machine).map(|entry| format!("PVH entry {entry:#x}"))
        }
        Entry::Pv => check_pv_elf(&data).map(|pv| {
            format!(
                "PV entry {:#x}, image {:#x}-{:#x}, VIRT_BASE {:#x}, hypercall page {:#x}",
                pv.entry, pv.kernel_start, pv.kernel_end, pv.virt_base, pv.hypercall_page
            )
        }),
    }
    .map_err(|e| Error(format!("{}: {e}", dest.display())))?;
    eprintln!(
        "xtask: {}: {} bytes, {class:?}, {what}",
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

/// Where a PV kernel goes, as Xen's libelf computes it from the notes
/// (`elf_xen_addr_calc_check`, `xen/common/libelf/libelf-dominfo.c`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PvImage {
    /// `XEN_ELFNOTE_ENTRY`: the virtual entry point.
    pub entry: u64,
    /// `XEN_ELFNOTE_VIRT_BASE`: where the builder's mapped region starts.
    pub virt_base: u64,
    /// `XEN_ELFNOTE_HYPERCALL_PAGE`: the page the builder fills.
    pub hypercall_page: u64,
    /// First virtual byte of the placed image (libelf's `virt_kstart`).
    pub kernel_start: u64,
    /// One past its last byte, `p_memsz` included (`virt_kend`).
    pub kernel_end: u64,
}

/// Checks that `data` is a 64-bit x86 PV kernel Xen's Dom0 builder accepts and
/// that runs where it is linked:
///
/// - ELF64, EM_X86_64, Xen notes in a `PT_NOTE` segment and no `PHYS32_ENTRY`
///   note (with one, Xen would boot it as PVH);
/// - libelf's `elf_xen_note_check`: `LOADER` "generic" or `GUEST_OS` "linux",
///   `XEN_VERSION` starting "xen-3.0";
/// - `ENTRY`, `VIRT_BASE` and `HYPERCALL_PAGE` present (libelf has defaults for
///   the first two; pv64 relies on neither), `PADDR_OFFSET` 0 if present;
/// - each `PT_LOAD` placed by its `p_paddr` (virtual = `p_paddr` + VIRT_BASE -
///   PADDR_OFFSET) lands at its own `p_vaddr`: Xen ignores `p_vaddr`, so a
///   mismatch would run code at addresses it was not linked for;
/// - VIRT_BASE <= the image, the entry and the (page-aligned) hypercall page inside
///   it, and the image clear of the hypervisor's hole (`HYPERVISOR_VIRT_START` to
///   `_END`, `xen-x86_64.h`).
pub fn check_pv_elf(data: &[u8]) -> Result<PvImage, String> {
    use keel_hypercall::abi::elfnote as note;

    let file =
        ElfBytes::<AnyEndian>::minimal_parse(data).map_err(|e| format!("not an ELF: {e}"))?;
    if file.ehdr.class != Class::ELF64 || file.ehdr.e_machine != EM_X86_64 {
        return Err(format!(
            "{:?} with e_machine {}, expected ELF64 x86-64",
            file.ehdr.class, file.ehdr.e_machine
        ));
    }
    let segments = file
        .segments()
        .ok_or_else(|| "no program headers".to_string())?;
    let mut notes: Vec<(u32, Vec<u8>)> = Vec::new();
    for phdr in segments.iter().filter(|p| p.p_type == PT_NOTE) {
        let parsed = file
            .segment_data_as_notes(&phdr)
            .map_err(|e| format!("bad PT_NOTE: {e}"))?;
        for n in parsed {
            if let elf::note::Note::Unknown(n) = n
                && n.name_str().is_ok_and(|name| name == "Xen")
                && let Ok(kind) = u32::try_from(n.n_type)
            {
                notes.push((kind, n.desc.to_vec()));
            }
        }
    }
    let find = |kind: u32| {
        notes
            .iter()
            .find(|(k, _)| *k == kind)
            .map(|(_, d)| d.as_slice())
    };
    let string = |kind: u32| {
        find(kind).map(|d| {
            let end = d.iter().position(|&b| b == 0).unwrap_or(d.len());
            String::from_utf8_lossy(&d[..end]).into_owned()
        })
    };
    let number = |kind: u32, name: &str| -> Result<Option<u64>, String> {
        match find(kind) {
            None => Ok(None),
            Some(d) if d.len() == 8 => {
                let mut b = [0u8; 8];
                b.copy_from_slice(d);
                Ok(Some(u64::from_le_bytes(b)))
            }
            Some(d) => Err(format!("the {name} note has {} bytes, expected 8", d.len())),
        }
    };
    if notes.is_empty() {
        return Err("no Xen notes in a PT_NOTE segment: not a Xen kernel".to_string());
    }
    if find(note::XEN_ELFNOTE_PHYS32_ENTRY).is_some() {
        return Err("a PHYS32_ENTRY note: Xen would boot it as PVH, not PV".to_string());
    }
    let loader = string(note::XEN_ELFNOTE_LOADER).unwrap_or_default();
    let guest_os = string(note::XEN_ELFNOTE_GUEST_OS).unwrap_or_default();
    if !loader.starts_with("generic") && !guest_os.starts_with("linux") {
        return Err(format!(
            "LOADER {loader:?} and GUEST_OS {guest_os:?}: libelf loads only the \"generic\" loader or \"linux\""
        ));
    }
    let xen_version = string(note::XEN_ELFNOTE_XEN_VERSION).unwrap_or_default();
    if !xen_version.starts_with("xen-3.0") {
        return Err(format!(
            "XEN_VERSION {xen_version:?}: libelf loads only \"xen-3.0\" kernels"
        ));
    }
    let required =
        |kind: u32, name: &str| number(kind, name)?.ok_or_else(|| format!("no {name} note"));
    let entry = required(note::XEN_ELFNOTE_ENTRY, "ENTRY")?;
    let virt_base = required(note::XEN_ELFNOTE_VIRT_BASE, "VIRT_BASE")?;
    let hypercall_page = required(note::XEN_ELFNOTE_HYPERCALL_PAGE, "HYPERCALL_PAGE")?;
    let paddr_offset = number(note::XEN_ELFNOTE_PADDR_OFFSET, "PADDR_OFFSET")?.unwrap_or(0);
    if paddr_offset != 0 {
        return Err(format!("PADDR_OFFSET {paddr_offset:#x}, expected 0"));
    }

    let mut range: Option<(u64, u64)> = None;
    for p in segments.iter().filter(|p| p.p_type == PT_LOAD) {
        let placed = p.p_paddr.wrapping_add(virt_base);
        if placed != p.p_vaddr {
            return Err(format!(
                "PT_LOAD at p_paddr {:#x} is placed at {placed:#x} but linked at p_vaddr {:#x}",
                p.p_paddr, p.p_vaddr
            ));
        }
        let end = placed
            .checked_add(p.p_memsz)
            .ok_or_else(|| format!("PT_LOAD at {placed:#x} wraps the address space"))?;
        range = Some(match range {
            None => (placed, end),
            Some((lo, hi)) => (lo.min(placed), hi.max(end)),
        });
    }
    let (kernel_start, kernel_end) = range.ok_or_else(|| "no PT_LOAD segment".to_string())?;
    if virt_base > kernel_start {
        return Err(format!(
            "VIRT_BASE {virt_base:#x} above the image's start {kernel_start:#x}"
        ));
    }
    if !(kernel_start..kernel_end).contains(&entry) {
        return Err(format!(
            "ENTRY {entry:#x} outside the image {kernel_start:#x}-{kernel_end:#x}"
        ));
    }
    if hypercall_page % 4096 != 0 || !(kernel_start..kernel_end).contains(&hypercall_page) {
        return Err(format!(
            "HYPERCALL_PAGE {hypercall_page:#x} not a page of the image {kernel_start:#x}-{kernel_end:#x}"
        ));
    }
    const HYPERVISOR_VIRT_START: u64 = 0xFFFF_8000_0000_0000;
    const HYPERVISOR_VIRT_END: u64 = 0xFFFF_8800_0000_0000;
    if virt_base < HYPERVISOR_VIRT_END && kernel_end > HYPERVISOR_VIRT_START {
        return Err(format!(
            "the region {virt_base:#x}-{kernel_end:#x} overlaps the hypervisor's hole"
        ));
    }
    Ok(PvImage {
        entry,
        virt_base,
        hypercall_page,
        kernel_start,
        kernel_end,
    })
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
        let err = check_pv_elf(&me).unwrap_err();
        assert!(err.contains("no Xen notes"), "{err}");
    }

    #[test]
    fn pv_check_rejects_what_is_not_an_elf() {
        assert!(check_pv_elf(b"\x7fELF but nothing else").is_err());
    }

    /// A minimal ELF64 x86-64 executable: one PT_LOAD (`vaddr`, `paddr`, `memsz`,
    /// the whole file as its bytes) and one PT_NOTE holding `notes`, each named
    /// "Xen".
    fn pv_elf(notes: &[(u32, Vec<u8>)], vaddr: u64, paddr: u64, memsz: u64) -> Vec<u8> {
        let mut area = Vec::new();
        for (kind, desc) in notes {
            area.extend(4u32.to_le_bytes());
            area.extend((desc.len() as u32).to_le_bytes());
            area.extend(kind.to_le_bytes());
            area.extend(b"Xen\0");
            area.extend(desc);
            area.resize(area.len().next_multiple_of(4), 0);
        }
        let notes_at = 64 + 2 * 56;
        let len = (notes_at + area.len()) as u64;
        let mut f = Vec::new();
        f.extend(b"\x7fELF\x02\x01\x01\0\0\0\0\0\0\0\0\0");
        f.extend(2u16.to_le_bytes()); // ET_EXEC
        f.extend(EM_X86_64.to_le_bytes());
        f.extend(1u32.to_le_bytes());
        f.extend(vaddr.to_le_bytes()); // e_entry
        f.extend(64u64.to_le_bytes()); // e_phoff
        f.extend(0u64.to_le_bytes()); // e_shoff
        f.extend(0u32.to_le_bytes());
        f.extend(64u16.to_le_bytes());
        f.extend(56u16.to_le_bytes());
        f.extend(2u16.to_le_bytes()); // e_phnum
        f.extend(64u16.to_le_bytes());
        f.extend([0u8; 4]); // e_shnum, e_shstrndx
        let phdr = |f: &mut Vec<u8>,
                    kind: u32,
                    off: u64,
                    va: u64,
                    pa: u64,
                    filesz: u64,
                    mem: u64,
                    align: u64| {
            f.extend(kind.to_le_bytes());
            f.extend(5u32.to_le_bytes());
            for v in [off, va, pa, filesz, mem, align] {
                f.extend(v.to_le_bytes());
            }
        };
        phdr(&mut f, PT_LOAD, 0, vaddr, paddr, len, memsz, 0x1000);
        let n = notes_at as u64;
        phdr(
            &mut f,
            PT_NOTE,
            n,
            vaddr + n,
            paddr + n,
            area.len() as u64,
            area.len() as u64,
            4,
        );
        f.extend(area);
        f
    }

    const BASE: u64 = 0xffff_ffff_8000_0000;

    fn good_notes() -> Vec<(u32, Vec<u8>)> {
        use keel_hypercall::abi::elfnote as note;
        vec![
            (note::XEN_ELFNOTE_LOADER, b"generic\0".to_vec()),
            (note::XEN_ELFNOTE_XEN_VERSION, b"xen-3.0\0".to_vec()),
            (note::XEN_ELFNOTE_VIRT_BASE, BASE.to_le_bytes().to_vec()),
            (
                note::XEN_ELFNOTE_ENTRY,
                (BASE + 0x10_0000).to_le_bytes().to_vec(),
            ),
            (
                note::XEN_ELFNOTE_HYPERCALL_PAGE,
                (BASE + 0x10_1000).to_le_bytes().to_vec(),
            ),
        ]
    }

    #[test]
    fn pv_check_accepts_a_placed_kernel_and_computes_libelf_addresses() {
        let elf = pv_elf(&good_notes(), BASE + 0x10_0000, 0x10_0000, 0x4000);
        let pv = check_pv_elf(&elf).expect("a good PV kernel");
        assert_eq!(pv.virt_base, BASE);
        assert_eq!(pv.entry, BASE + 0x10_0000);
        assert_eq!(pv.hypercall_page, BASE + 0x10_1000);
        assert_eq!(
            (pv.kernel_start, pv.kernel_end),
            (BASE + 0x10_0000, BASE + 0x10_4000)
        );
        // The PVH check refuses it: no PHYS32_ENTRY.
        assert!(check_pvh_elf(&elf, Class::ELF64, EM_X86_64).is_err());
    }

    #[test]
    fn pv_check_rejects_what_xen_would_not_load_or_would_misplace() {
        use keel_hypercall::abi::elfnote as note;
        let check = |notes: &[(u32, Vec<u8>)], vaddr: u64| {
            check_pv_elf(&pv_elf(notes, vaddr, 0x10_0000, 0x4000)).unwrap_err()
        };
        let with = |kind: u32, desc: &[u8]| {
            let mut n: Vec<_> = good_notes()
                .into_iter()
                .filter(|(k, _)| *k != kind)
                .collect();
            n.push((kind, desc.to_vec()));
            n
        };
        let without = |kind: u32| -> Vec<_> {
            good_notes()
                .into_iter()
                .filter(|(k, _)| *k != kind)
                .collect()
        };
        let at = BASE + 0x10_0000;
        let e = check(
            &with(note::XEN_ELFNOTE_PHYS32_ENTRY, &0x10_0000u32.to_le_bytes()),
            at,
        );
        assert!(e.contains("PVH"), "{e}");
        let e = check(&with(note::XEN_ELFNOTE_LOADER, b"other\0"), at);
        assert!(e.contains("generic"), "{e}");
        let e = check(&with(note::XEN_ELFNOTE_XEN_VERSION, b"xen-4.0\0"), at);
        assert!(e.contains("xen-3.0"), "{e}");
        let e = check(&without(note::XEN_ELFNOTE_HYPERCALL_PAGE), at);
        assert!(e.contains("no HYPERCALL_PAGE"), "{e}");
        let e = check(
            &with(note::XEN_ELFNOTE_ENTRY, &(BASE + 0x20_0000).to_le_bytes()),
            at,
        );
        assert!(e.contains("ENTRY"), "{e}");
        let e = check(
            &with(
                note::XEN_ELFNOTE_HYPERCALL_PAGE,
                &(BASE + 0x10_1800).to_le_bytes(),
            ),
            at,
        );
        assert!(e.contains("HYPERCALL_PAGE"), "{e}");
        let e = check(
            &with(note::XEN_ELFNOTE_PADDR_OFFSET, &BASE.to_le_bytes()),
            at,
        );
        assert!(e.contains("PADDR_OFFSET"), "{e}");
        // Linked at one address, placed by p_paddr at another.
        let e = check(&good_notes(), at + 0x1000);
        assert!(e.contains("linked at"), "{e}");
        let e = check(&[], at);
        assert!(e.contains("no Xen notes"), "{e}");
    }
}
