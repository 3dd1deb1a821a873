//! `parse`, `classify` and the `FEATURES` string.

use elf::abi::{ELFCLASS32, EM_386, ET_DYN, ET_REL, PF_R, PT_LOAD, PT_NOTE, SHT_PROGBITS};
use keel_hypercall::abi::elfnote::*;

use super::super::kernel::parse_features;
use super::super::testelf::*;
use super::super::{Area, Features, PaeMode, PvError, XenKernelKind, classify, parse};
use super::msg;
use crate::elfnotes::{NoteError, NoteSource};
use crate::image::ImageError;

fn err(bytes: &[u8]) -> PvError {
    parse(bytes).expect_err("parse should fail")
}

/// Linux's notes with some replaced: those of the types in `notes` are dropped
/// and `notes` appended (so they also win as the later ones).
fn linux_with(notes: &[(u32, Vec<u8>)]) -> Vec<u8> {
    let kinds: Vec<u32> = notes.iter().map(|(k, _)| *k).collect();
    let mut all = linux_notes_except(&kinds);
    for (_, n) in notes {
        all.extend_from_slice(n);
    }
    kernel_with(&all).build()
}

#[test]
fn a_linux_like_kernel() {
    let bytes = linux();
    let k = parse(&bytes).expect("parses");
    assert_eq!(k.virt_base, LINUX_VIRT_BASE);
    assert_eq!(k.paddr_offset, 0);
    assert_eq!(k.paddr_range, (TEXT_PADDR, TEXT_PADDR + 0xA000));
    assert_eq!(k.virt_kstart, 0xFFFF_FFFF_8100_0000);
    assert_eq!(k.virt_kend, 0xFFFF_FFFF_8100_A000);
    assert_eq!((k.virt_entry, k.entry_note), (ENTRY, true));
    assert_eq!(k.hypercall_page, Some(HYPERCALL));
    assert_eq!(k.p2m_base, Some(LINUX_INIT_P2M));
    assert_eq!(k.hv_start_low, Some(0xFFFF_8000_0000_0000));
    assert!(k.mod_start_pfn && k.suspend_cancel && !k.bsd_symtab);
    assert_eq!(
        k.features,
        Features {
            supported: (1 << 0) | (1 << 4) | (1 << 11),
            required: 1 << 0,
            supported_note: true,
        }
    );
    assert_eq!(k.pae, PaeMode::Yes);
    assert_eq!(k.phys32_entry, None);
    assert_eq!(
        (k.guest_os, k.guest_version, k.xen_version, k.loader),
        (Some("linux"), Some("2.6"), Some("xen-3.0"), Some("generic"))
    );
    assert_eq!(k.segments.len(), 2);
    assert_eq!(k.segment_offset(&k.segments[0]), 0x100_0000);
    assert_eq!(k.segment_offset(&k.segments[1]), 0x100_8000);
    assert_eq!(k.segments[0].file_bytes(k.bytes()), Some(&text()[..]));
    // Linux requires writable page tables, which every PV guest gets.
    assert_eq!(k.check_features(1), Ok(()));
    assert_eq!(
        k.check_features(0),
        Err(PvError::UnsupportedFeatures { missing: 1 })
    );
    assert_eq!(classify(&bytes), Ok(XenKernelKind::PvOnly));
}

#[test]
fn defaults_without_optional_notes() {
    // No VIRT_BASE, PADDR_OFFSET, ENTRY, INIT_P2M, HYPERCALL_PAGE: a kernel
    // linked at low addresses, entered at e_entry (libelf's defaults).
    let notes = [
        xen(XEN_ELFNOTE_GUEST_OS, b"Mini-OS\0"),
        xen(XEN_ELFNOTE_LOADER, b"generic\0"),
        xen(XEN_ELFNOTE_XEN_VERSION, b"xen-3.0\0"),
    ]
    .concat();
    let bytes = Elf::new()
        .load(0x10_0000, &text(), 0x4000)
        .notes(&notes)
        .entry(0x10_0010)
        .build();
    let k = parse(&bytes).expect("parses");
    assert_eq!((k.virt_base, k.paddr_offset), (0, 0));
    assert_eq!((k.virt_kstart, k.virt_kend), (0x10_0000, 0x10_4000));
    assert_eq!((k.virt_entry, k.entry_note), (0x10_0010, false));
    assert_eq!(
        (k.hypercall_page, k.p2m_base, k.hv_start_low),
        (None, None, None)
    );
    assert!(!k.mod_start_pfn);
    assert_eq!(k.features, Features::default());
    assert_eq!(k.pae, PaeMode::No);
    assert_eq!(classify(&bytes), Ok(XenKernelKind::PvOnly));
}

#[test]
fn an_old_style_paddr_offset() {
    // Old kernels put the virtual address in p_paddr and said so.
    let notes = [
        linux_notes_except(&[XEN_ELFNOTE_PADDR_OFFSET]),
        xen64(XEN_ELFNOTE_PADDR_OFFSET, LINUX_VIRT_BASE),
    ]
    .concat();
    let bytes = Elf::new()
        .load(LINUX_VIRT_BASE + TEXT_PADDR, &text(), 0x6000)
        .notes(&notes)
        .build();
    let k = parse(&bytes).expect("parses");
    assert_eq!(k.paddr_offset, LINUX_VIRT_BASE);
    assert_eq!(
        (k.virt_kstart, k.virt_kend),
        (0xFFFF_FFFF_8100_0000, 0xFFFF_FFFF_8100_6000)
    );
    assert_eq!(k.segment_offset(&k.segments[0]), TEXT_PADDR);
}

#[test]
fn notes_in_sections_and_note_segments_at_offset_0() {
    // A broken PT_NOTE at file offset 0 is skipped, as libelf does; with no Xen
    // note in the segments, the SHT_NOTE sections are read.
    let mut elf = Elf::new()
        .load(TEXT_PADDR, &text(), 0x6000)
        .notes(&note(b"GNU\0", 3, &[1, 2, 3, 4]))
        .note_section(&linux_notes());
    elf.phs.push(super::super::testelf::Ph {
        p_type: PT_NOTE,
        flags: PF_R,
        offset: 0,
        vaddr: 0,
        paddr: 0,
        filesz: 64,
        memsz: 0,
    });
    let bytes = elf.build();
    let k = parse(&bytes).expect("parses");
    assert_eq!(k.virt_entry, ENTRY);
    assert_eq!(classify(&bytes), Ok(XenKernelKind::PvOnly));
}

#[test]
fn segments_without_permissions_are_not_loaded() {
    // libelf's elf_phdr_is_loadable: PT_LOAD with none of R, W, X.
    let bytes = kernel_with(&linux_notes())
        .load_flags(TEXT_PADDR + 0x10_0000, &[1; 16], 0x1000, 0)
        .build();
    let k = parse(&bytes).expect("parses");
    assert_eq!(k.segments.len(), 2);
    assert_eq!(k.virt_kend, 0xFFFF_FFFF_8100_A000);
    let only = Elf::new()
        .load_flags(TEXT_PADDR, &text(), 0x6000, 0)
        .notes(&linux_notes())
        .build();
    assert_eq!(err(&only), PvError::Image(ImageError::NoLoadSegments));
    let empty = Elf::new()
        .load(TEXT_PADDR, &[], 0)
        .notes(&linux_notes())
        .build();
    assert_eq!(err(&empty), PvError::Image(ImageError::NoLoadSegments));
}

#[test]
fn numeric_notes_of_every_size() {
    let bytes = linux_with(&[
        (
            XEN_ELFNOTE_MOD_START_PFN,
            xen(XEN_ELFNOTE_MOD_START_PFN, &[0]),
        ),
        (
            XEN_ELFNOTE_SUSPEND_CANCEL,
            xen(XEN_ELFNOTE_SUSPEND_CANCEL, &[0, 1]),
        ),
        (XEN_ELFNOTE_ENTRY, xen64(XEN_ELFNOTE_ENTRY, ENTRY + 1)),
    ]);
    let k = parse(&bytes).expect("parses");
    assert!(!k.mod_start_pfn);
    assert!(k.suspend_cancel);
    assert_eq!(k.virt_entry, ENTRY + 1);
    let e = err(&linux_with(&[(
        XEN_ELFNOTE_ENTRY,
        xen(XEN_ELFNOTE_ENTRY, &[0; 3]),
    )]));
    assert_eq!(
        e,
        PvError::BadNumericNote {
            kind: XEN_ELFNOTE_ENTRY,
            descsz: 3
        }
    );
    assert_eq!(
        msg(&e),
        "the Xen ELF note of type 1 has a 3-byte value; a numeric note has 1, 2, 4 or 8 bytes"
    );
}

#[test]
fn pae_mode_bsd_symtab_and_duplicates() {
    for (value, want) in [
        (&b"yes\0"[..], PaeMode::Yes),
        (b"yes,bimodal\0", PaeMode::Bimodal),
        (b"bimodal\0", PaeMode::Bimodal),
        (b"no\0", PaeMode::No),
        (b"yes please\0", PaeMode::No),
    ] {
        let bytes = linux_with(&[(XEN_ELFNOTE_PAE_MODE, xen(XEN_ELFNOTE_PAE_MODE, value))]);
        assert_eq!(parse(&bytes).expect("parses").pae, want, "{value:?}");
    }
    // A later PAE_MODE of "no" does not undo "yes" (libelf only sets).
    let bytes = linux_with(&[(
        XEN_ELFNOTE_PAE_MODE,
        [
            xen(XEN_ELFNOTE_PAE_MODE, b"yes\0"),
            xen(XEN_ELFNOTE_PAE_MODE, b"no\0"),
        ]
        .concat(),
    )]);
    assert_eq!(parse(&bytes).expect("parses").pae, PaeMode::Yes);
    let bytes = linux_with(&[(
        XEN_ELFNOTE_BSD_SYMTAB,
        xen(XEN_ELFNOTE_BSD_SYMTAB, b"yes\0"),
    )]);
    assert!(parse(&bytes).expect("parses").bsd_symtab);
    // Feature notes accumulate; other notes: the last wins.
    let bytes = linux_with(&[
        (
            XEN_ELFNOTE_SUPPORTED_FEATURES,
            [
                xen32(XEN_ELFNOTE_SUPPORTED_FEATURES, 1 << 5),
                // Two submaps: only the first is read (Xen has one).
                xen(XEN_ELFNOTE_SUPPORTED_FEATURES, &[0, 0, 0, 0x80, 1, 1, 1, 1]),
            ]
            .concat(),
        ),
        (
            XEN_ELFNOTE_HV_START_LOW,
            [
                xen64(XEN_ELFNOTE_HV_START_LOW, 1),
                xen64(XEN_ELFNOTE_HV_START_LOW, 2),
            ]
            .concat(),
        ),
    ]);
    let k = parse(&bytes).expect("parses");
    assert_eq!(
        k.features.supported,
        (1 << 0) | (1 << 4) | (1 << 5) | (1 << 31)
    );
    assert_eq!(k.hv_start_low, Some(2));
}

#[test]
fn features_strings_as_libelf_reads_them() {
    let ok = |s: &str| parse_features(s).expect("parses");
    assert_eq!(
        ok("!writable_page_tables|pae_pgdir_above_4gb"),
        ((1 << 0) | (1 << 4), 1 << 0)
    );
    assert_eq!(
        ok("writable_descriptor_tables|auto_translated_physmap|hvm_callback_vector|!dom0"),
        ((1 << 1) | (1 << 2) | (1 << 8) | (1 << 11), 1 << 11)
    );
    // Unknown supported names, empty tokens, a trailing '|': ignored.
    assert_eq!(ok("no_such_feature||dom0|"), (1 << 11, 0));
    assert_eq!(ok(""), (0, 0));
    // Names libelf does not know are unknown even when Xen defines them.
    assert_eq!(ok("gnttab_map_avail_bits"), (0, 0));
    // Tokens are at most 63 bytes: what follows is the next token.
    let long = format!("{}dom0", "x".repeat(63));
    assert_eq!(ok(&long), (1 << 11, 0));
    let e = parse_features("!no_such_feature").expect_err("unknown required");
    assert_eq!(
        e,
        PvError::UnknownRequiredFeature {
            name: "no_such_feature".into()
        }
    );
    assert_eq!(
        msg(&e),
        "XEN_ELFNOTE_FEATURES requires \"no_such_feature\", a feature Xen's loader does not know"
    );
    assert!(
        parse_features("dom0|!").is_err(),
        "a bare '!' requires nothing known"
    );
    assert!(
        parse_features(" dom0").is_ok(),
        "spaces are part of the name"
    );
    assert_eq!(ok(" dom0"), (0, 0));
    // In a kernel: the unknown required feature refuses it.
    let bytes = linux_with(&[(XEN_ELFNOTE_FEATURES, xen(XEN_ELFNOTE_FEATURES, b"!magic\0"))]);
    assert!(matches!(
        err(&bytes),
        PvError::UnknownRequiredFeature { .. }
    ));
    let bytes = linux_with(&[(
        XEN_ELFNOTE_FEATURES,
        xen(XEN_ELFNOTE_FEATURES, b"!supervisor_mode_kernel"),
    )]);
    assert_eq!(err(&bytes), PvError::SupervisorModeKernel);
}

#[test]
fn classification() {
    let phys32 = xen32(XEN_ELFNOTE_PHYS32_ENTRY, TEXT_PADDR as u32);
    let both = kernel_with(&[linux_notes(), phys32.clone()].concat()).build();
    assert_eq!(classify(&both), Ok(XenKernelKind::Both));
    let k = parse(&both).expect("a PV entry too");
    assert_eq!(k.phys32_entry, Some(TEXT_PADDR));

    let pvh_only =
        kernel_with(&[linux_notes_except(&[XEN_ELFNOTE_ENTRY]), phys32].concat()).build();
    assert_eq!(classify(&pvh_only), Ok(XenKernelKind::PvhOnly));
    assert_eq!(err(&pvh_only), PvError::PvhOnly);

    let plain = Elf::new()
        .load(TEXT_PADDR, &text(), 0x6000)
        .notes(&note(b"GNU\0", 3, &[0; 16]))
        .build();
    let kind = classify(&plain).expect("classifies");
    assert_eq!(kind, XenKernelKind::Neither);
    assert_eq!(kind.require_xen(), Err(PvError::NotXenKernel));
    assert_eq!(
        msg(&PvError::NotXenKernel),
        "neither a PV nor a PVH entry: not a Xen kernel"
    );
    assert_eq!(err(&plain), PvError::NotXenKernel);
    assert!(!kind.pv() && !kind.pvh());
    assert!(XenKernelKind::Both.pv() && XenKernelKind::Both.pvh());
    assert_eq!(
        XenKernelKind::PvOnly.require_xen(),
        Ok(XenKernelKind::PvOnly)
    );

    let legacy = Elf::new()
        .load(TEXT_PADDR, &text(), 0x6000)
        .section(
            "__xen_guest",
            SHT_PROGBITS,
            b"GUEST_OS=linux,XEN_VER=xen-3.0,VIRT_BASE=0xC0000000\0",
        )
        .build();
    assert_eq!(classify(&legacy), Ok(XenKernelKind::PvOnly));
    assert_eq!(err(&legacy), PvError::LegacyXenGuest);

    assert_eq!(
        classify(b"MZ not elf"),
        Err(PvError::Image(ImageError::NotElf))
    );
    let mut be = linux();
    be[5] = 2;
    assert_eq!(classify(&be), Err(PvError::BigEndian));
}

#[test]
fn image_refusals() {
    let mut be = linux();
    be[5] = 2;
    assert_eq!(err(&be), PvError::BigEndian);
    let mut b32 = linux();
    b32[4] = ELFCLASS32;
    assert_eq!(err(&b32), PvError::Elf32);
    let mut i386 = kernel_with(&linux_notes());
    i386.machine = EM_386;
    assert_eq!(err(&i386.build()), PvError::WrongMachine(3));
    let mut rel = kernel_with(&linux_notes());
    rel.etype = ET_REL;
    assert_eq!(err(&rel.build()), PvError::WrongType(1));
    let mut dynamic = kernel_with(&linux_notes());
    dynamic.etype = ET_DYN;
    assert!(
        parse(&dynamic.build()).is_ok(),
        "ET_DYN loads at its linked addresses"
    );
    assert_eq!(err(&[]), PvError::Image(ImageError::Empty));
    assert_eq!(err(b"\x7fELF"), PvError::Image(ImageError::BadHeader));

    let overlap = kernel_with(&linux_notes())
        .load(TEXT_PADDR + 0x5000, &[1; 8], 0x1000)
        .build();
    assert_eq!(
        err(&overlap),
        PvError::SegmentsOverlap {
            first: 0,
            first_start: TEXT_PADDR,
            first_end: TEXT_PADDR + 0x6000,
            second: 3,
            second_start: TEXT_PADDR + 0x5000,
            second_end: TEXT_PADDR + 0x6000,
        }
    );
    let mut outside = kernel_with(&linux_notes());
    outside.phs[0].filesz = 0x10_0000;
    assert!(matches!(err(&outside.build()), PvError::Segment(_)));
    let mut wraps = kernel_with(&linux_notes());
    wraps.phs[0].paddr = u64::MAX - 0x100;
    assert!(matches!(err(&wraps.build()), PvError::Segment(_)));
}

#[test]
fn malformed_notes() {
    let mut notes = linux_notes();
    notes.extend_from_slice(&[1, 0, 0]);
    let e = err(&kernel_with(&notes).build());
    assert!(
        matches!(
            e,
            PvError::Note(NoteError::HeaderTruncated {
                source: NoteSource::Segment(2),
                left: 3,
                ..
            })
        ),
        "{e:?}"
    );
    let mut truncated = xen(XEN_ELFNOTE_GUEST_OS, b"linux\0");
    truncated[4] = 0x40; // descsz beyond the segment
    let e = err(&kernel_with(&[linux_notes(), truncated].concat()).build());
    assert!(
        matches!(e, PvError::Note(NoteError::Truncated { .. })),
        "{e:?}"
    );
    let mut elf = kernel_with(&linux_notes());
    elf.phs[2].offset += 2;
    elf.phs[2].filesz -= 2;
    assert!(matches!(
        err(&elf.build()),
        PvError::Note(NoteError::Misaligned { .. })
    ));
    let mut elf = kernel_with(&linux_notes());
    elf.phs[2].filesz = u64::MAX;
    assert!(matches!(
        err(&elf.build()),
        PvError::Note(NoteError::OutsideFile { .. })
    ));
    let e = err(&linux_with(&[(
        XEN_ELFNOTE_GUEST_OS,
        xen(XEN_ELFNOTE_GUEST_OS, &[0xC3, 0x28, 0]),
    )]));
    assert_eq!(
        e,
        PvError::BadNoteString {
            kind: XEN_ELFNOTE_GUEST_OS
        }
    );
    for descsz in [0usize, 3, 6] {
        let e = err(&linux_with(&[(
            XEN_ELFNOTE_SUPPORTED_FEATURES,
            xen(XEN_ELFNOTE_SUPPORTED_FEATURES, &vec![1; descsz]),
        )]));
        assert_eq!(e, PvError::BadSupportedFeatures { descsz });
    }
}

#[test]
fn loader_and_version_checks() {
    // Either LOADER "generic..." or GUEST_OS "linux..." will do.
    let generic_only =
        linux_with(&[(XEN_ELFNOTE_GUEST_OS, xen(XEN_ELFNOTE_GUEST_OS, b"NetBSD\0"))]);
    assert!(parse(&generic_only).is_ok());
    let linux_only = kernel_with(&linux_notes_except(&[XEN_ELFNOTE_LOADER])).build();
    assert!(parse(&linux_only).is_ok());
    let e = err(&linux_with(&[
        (XEN_ELFNOTE_GUEST_OS, xen(XEN_ELFNOTE_GUEST_OS, b"Plan9\0")),
        (XEN_ELFNOTE_LOADER, xen(XEN_ELFNOTE_LOADER, b"special\0")),
    ]));
    assert_eq!(
        e,
        PvError::WrongLoader {
            loader: Some("special".into()),
            guest_os: Some("Plan9".into())
        }
    );
    let e = err(&kernel_with(&linux_notes_except(&[XEN_ELFNOTE_XEN_VERSION])).build());
    assert_eq!(e, PvError::WrongXenVersion { found: None });
    let e = err(&linux_with(&[(
        XEN_ELFNOTE_XEN_VERSION,
        xen(XEN_ELFNOTE_XEN_VERSION, b"xen-2.0\0"),
    )]));
    assert_eq!(
        msg(&e),
        "the kernel is built for Xen Some(\"xen-2.0\"); only \"xen-3.0\" kernels can be loaded (XEN_ELFNOTE_XEN_VERSION)"
    );
    let ok = linux_with(&[(
        XEN_ELFNOTE_XEN_VERSION,
        xen(XEN_ELFNOTE_XEN_VERSION, b"xen-3.0-unstable\0"),
    )]);
    assert!(parse(&ok).is_ok(), "a prefix match, as libelf's strncmp");
}

#[test]
fn address_refusals() {
    let e = err(&kernel_with(&linux_notes_except(&[XEN_ELFNOTE_VIRT_BASE])).build());
    assert_eq!(e, PvError::PaddrOffsetWithoutVirtBase);
    let e = err(&linux_with(&[(
        XEN_ELFNOTE_VIRT_BASE,
        xen64(XEN_ELFNOTE_VIRT_BASE, LINUX_VIRT_BASE + 0x800),
    )]));
    assert_eq!(e, PvError::VirtBaseMisaligned(LINUX_VIRT_BASE + 0x800));
    // VIRT_BASE above the kernel's first byte.
    let e = err(&linux_with(&[(
        XEN_ELFNOTE_PADDR_OFFSET,
        xen64(XEN_ELFNOTE_PADDR_OFFSET, TEXT_PADDR + 0x1000),
    )]));
    assert_eq!(
        e,
        PvError::VirtBaseAboveKernel {
            virt_base: LINUX_VIRT_BASE,
            kstart: LINUX_VIRT_BASE - 0x1000
        }
    );
    // Past the top of the address space.
    let e = err(&linux_with(&[(
        XEN_ELFNOTE_VIRT_BASE,
        xen64(XEN_ELFNOTE_VIRT_BASE, 0xFFFF_FFFF_FF00_0000),
    )]));
    assert!(matches!(e, PvError::VirtOverflow { .. }), "{e:?}");
    // Below zero (paddr - PADDR_OFFSET + VIRT_BASE < 0).
    let e = err(&linux_with(&[
        (XEN_ELFNOTE_VIRT_BASE, xen64(XEN_ELFNOTE_VIRT_BASE, 0)),
        (
            XEN_ELFNOTE_PADDR_OFFSET,
            xen64(XEN_ELFNOTE_PADDR_OFFSET, TEXT_PADDR + 0x1000),
        ),
    ]));
    assert!(matches!(e, PvError::VirtOverflow { .. }), "{e:?}");
    // Non-canonical, and in the hypervisor's range.
    let e = err(&linux_with(&[(
        XEN_ELFNOTE_VIRT_BASE,
        xen64(XEN_ELFNOTE_VIRT_BASE, 0x0000_7FFF_FF00_0000),
    )]));
    assert_eq!(
        e,
        PvError::NonCanonical {
            area: Area::Kernel,
            start: 0x0000_7FFF_FF00_0000,
            end: 0x0000_8000_0000_A000
        }
    );
    let e = err(&linux_with(&[(
        XEN_ELFNOTE_VIRT_BASE,
        xen64(XEN_ELFNOTE_VIRT_BASE, 0xFFFF_8000_0000_0000),
    )]));
    assert!(matches!(
        e,
        PvError::InHypervisorHole {
            area: Area::Kernel,
            ..
        }
    ));
    assert_eq!(
        msg(&e),
        "the kernel (0xffff800000000000..0xffff80000100a000) overlaps the hypervisor's range 0xffff800000000000..0xffff880000000000"
    );
    let below_hole = linux_with(&[(
        XEN_ELFNOTE_VIRT_BASE,
        xen64(XEN_ELFNOTE_VIRT_BASE, 0xFFFF_7FFF_0000_0000),
    )]);
    assert!(matches!(err(&below_hole), PvError::NonCanonical { .. }));
    let base = 0xFFFF_8800_0000_0000;
    let above_hole = linux_with(&[
        (XEN_ELFNOTE_VIRT_BASE, xen64(XEN_ELFNOTE_VIRT_BASE, base)),
        (
            XEN_ELFNOTE_ENTRY,
            xen64(XEN_ELFNOTE_ENTRY, base + TEXT_PADDR),
        ),
        (
            XEN_ELFNOTE_HYPERCALL_PAGE,
            xen64(XEN_ELFNOTE_HYPERCALL_PAGE, base + TEXT_PADDR + 0x1000),
        ),
    ]);
    let k = parse(&above_hole).expect("just above the hole");
    assert_eq!(k.virt_kstart, base + TEXT_PADDR);
}

#[test]
fn entry_hypercall_page_p2m_base_and_hv_start_low() {
    let with_entry =
        |entry: u64| linux_with(&[(XEN_ELFNOTE_ENTRY, xen64(XEN_ELFNOTE_ENTRY, entry))]);
    let kstart = 0xFFFF_FFFF_8100_0000;
    assert!(parse(&with_entry(kstart)).is_ok());
    assert!(
        parse(&with_entry(kstart + 0x2FFF)).is_ok(),
        "last file byte"
    );
    assert!(
        parse(&with_entry(kstart + 0x8000)).is_ok(),
        "second segment"
    );
    for entry in [
        kstart - 1,
        kstart + 0x3000,
        kstart + 0x8100,
        kstart + 0xA000,
        0,
    ] {
        assert_eq!(
            err(&with_entry(entry)),
            PvError::EntryOutsideKernel { entry },
            "{entry:#x}"
        );
    }
    // Without ENTRY, e_entry: here outside the kernel.
    let e = err(&kernel_with(&linux_notes_except(&[XEN_ELFNOTE_ENTRY])).build());
    assert_eq!(e, PvError::EntryOutsideKernel { entry: 0xDEAD_BEEF });

    let with_hc = |va: u64| {
        linux_with(&[(
            XEN_ELFNOTE_HYPERCALL_PAGE,
            xen64(XEN_ELFNOTE_HYPERCALL_PAGE, va),
        )])
    };
    assert!(
        parse(&with_hc(kstart + 0x9000)).is_ok(),
        "in the zero tail is fine"
    );
    for va in [kstart + 0x800, kstart - 0x1000, kstart + 0xA000] {
        assert_eq!(
            err(&with_hc(va)),
            PvError::BadHypercallPage {
                va,
                kstart,
                kend: kstart + 0xA000
            }
        );
    }

    let e = err(&linux_with(&[(
        XEN_ELFNOTE_INIT_P2M,
        xen64(XEN_ELFNOTE_INIT_P2M, kstart + 0x4000),
    )]));
    assert_eq!(
        e,
        PvError::P2mBaseInKernel {
            p2m_base: kstart + 0x4000,
            kstart,
            kend: kstart + 0xA000
        }
    );
    let e = err(&linux_with(&[(
        XEN_ELFNOTE_HV_START_LOW,
        xen64(XEN_ELFNOTE_HV_START_LOW, 0xFFFF_8000_0000_1000),
    )]));
    assert_eq!(e, PvError::HvStartLowTooHigh(0xFFFF_8000_0000_1000));
    let low = linux_with(&[(
        XEN_ELFNOTE_HV_START_LOW,
        xen64(XEN_ELFNOTE_HV_START_LOW, 0xFFFF_0000_0000_0000),
    )]);
    assert!(parse(&low).is_ok(), "a kernel that copes with a lower hole");
}

#[test]
fn program_headers_beyond_the_file() {
    let mut elf = kernel_with(&linux_notes());
    elf.phs.push(super::super::testelf::Ph {
        p_type: PT_LOAD,
        flags: PF_R,
        offset: 1 << 40,
        vaddr: 0,
        paddr: 0,
        filesz: 1,
        memsz: 1,
    });
    assert!(matches!(err(&elf.build()), PvError::Segment(_)));
}
