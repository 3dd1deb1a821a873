//! Little ELF64 images built by hand for the PV builder's tests, and the Xen notes
//! Linux's `arch/x86/xen/xen-head.S` gives a 64-bit PV kernel.

use elf::abi::{EM_X86_64, ET_EXEC, PF_R, PF_W, PF_X, PT_LOAD, PT_NOTE, SHT_NOTE, SHT_STRTAB};

/// `__START_KERNEL_map`: Linux's `VIRT_BASE` on x86-64.
pub const LINUX_VIRT_BASE: u64 = 0xFFFF_FFFF_8000_0000;
/// Where the test kernel's text is, physically (Linux: 16 MiB).
pub const TEXT_PADDR: u64 = 0x100_0000;
/// Linux's `INIT_P2M`: `PUD_SIZE * PTRS_PER_PUD`, 512 GiB.
pub const LINUX_INIT_P2M: u64 = 0x80_0000_0000;

/// One program header.
#[derive(Clone, Copy, Debug)]
pub struct Ph {
    pub p_type: u32,
    pub flags: u32,
    pub offset: u64,
    pub vaddr: u64,
    pub paddr: u64,
    pub filesz: u64,
    pub memsz: u64,
}

/// One section (name, type, file range).
#[derive(Clone, Debug)]
struct Sh {
    name: String,
    sh_type: u32,
    offset: u64,
    size: u64,
}

/// An ELF file under construction: header and up to 16 program headers in the
/// first 0x400 bytes, blobs after (8-aligned), then the section name table and the
/// section headers.
#[derive(Clone, Debug)]
pub struct Elf {
    pub class: u8,
    pub data: u8,
    pub etype: u16,
    pub machine: u16,
    pub entry: u64,
    pub phs: Vec<Ph>,
    shs: Vec<Sh>,
    body: Vec<u8>,
}

const BODY_AT: u64 = 0x400;
const MAX_PHS: usize = 16;

impl Elf {
    pub fn new() -> Elf {
        Elf {
            class: 2,
            data: 1,
            etype: ET_EXEC,
            machine: EM_X86_64,
            entry: 0,
            phs: Vec::new(),
            shs: Vec::new(),
            body: Vec::new(),
        }
    }

    /// Appends `bytes` to the file, returning their offset.
    pub fn blob(&mut self, bytes: &[u8]) -> u64 {
        while !self.body.len().is_multiple_of(8) {
            self.body.push(0);
        }
        let at = BODY_AT + self.body.len() as u64;
        self.body.extend_from_slice(bytes);
        at
    }

    pub fn ph(mut self, ph: Ph) -> Elf {
        self.phs.push(ph);
        self
    }

    /// A loadable, readable and executable segment at `paddr` (`vaddr` = `paddr` +
    /// Linux's `VIRT_BASE`, which the PV builder ignores).
    pub fn load(self, paddr: u64, content: &[u8], memsz: u64) -> Elf {
        self.load_flags(paddr, content, memsz, PF_R | PF_X)
    }

    pub fn load_flags(mut self, paddr: u64, content: &[u8], memsz: u64, flags: u32) -> Elf {
        let offset = self.blob(content);
        self.ph(Ph {
            p_type: PT_LOAD,
            flags,
            offset,
            vaddr: paddr.wrapping_add(LINUX_VIRT_BASE),
            paddr,
            filesz: content.len() as u64,
            memsz,
        })
    }

    pub fn notes(mut self, notes: &[u8]) -> Elf {
        let offset = self.blob(notes);
        self.ph(Ph {
            p_type: PT_NOTE,
            flags: PF_R,
            offset,
            vaddr: 0,
            paddr: 0,
            filesz: notes.len() as u64,
            memsz: 0,
        })
    }

    pub fn section(mut self, name: &str, sh_type: u32, bytes: &[u8]) -> Elf {
        let offset = self.blob(bytes);
        self.shs.push(Sh {
            name: name.into(),
            sh_type,
            offset,
            size: bytes.len() as u64,
        });
        self
    }

    pub fn note_section(self, notes: &[u8]) -> Elf {
        self.section(".note.Xen", SHT_NOTE, notes)
    }

    pub fn entry(mut self, entry: u64) -> Elf {
        self.entry = entry;
        self
    }

    pub fn build(&self) -> Vec<u8> {
        assert!(self.phs.len() <= MAX_PHS, "room for 16 program headers");
        let mut me = self.clone();
        let (shoff, shnum, shstrndx) = if me.shs.is_empty() {
            (0u64, 0u16, 0u16)
        } else {
            // Section 0 is the null section; the name table comes last.
            let mut names = vec![0u8];
            let mut name_at = Vec::new();
            for sh in &me.shs {
                name_at.push(names.len() as u32);
                names.extend_from_slice(sh.name.as_bytes());
                names.push(0);
            }
            let shstrtab_name = names.len() as u32;
            names.extend_from_slice(b".shstrtab\0");
            let names_at = me.blob(&names);
            let mut table = vec![0u8; 64];
            let mut entry = |name: u32, sh_type: u32, offset: u64, size: u64| {
                let mut e = [0u8; 64];
                e[0..4].copy_from_slice(&name.to_le_bytes());
                e[4..8].copy_from_slice(&sh_type.to_le_bytes());
                e[24..32].copy_from_slice(&offset.to_le_bytes());
                e[32..40].copy_from_slice(&size.to_le_bytes());
                e[48..56].copy_from_slice(&4u64.to_le_bytes());
                table.extend_from_slice(&e);
            };
            for (sh, &name) in me.shs.iter().zip(&name_at) {
                entry(name, sh.sh_type, sh.offset, sh.size);
            }
            entry(shstrtab_name, SHT_STRTAB, names_at, names.len() as u64);
            let n = me.shs.len() as u16 + 2;
            let at = me.blob(&table);
            (at, n, n - 1)
        };
        let mut b = vec![0u8; BODY_AT as usize];
        b.extend_from_slice(&me.body);
        b[..4].copy_from_slice(b"\x7fELF");
        b[4] = me.class;
        b[5] = me.data;
        b[6] = 1;
        let put16 = |b: &mut Vec<u8>, at: usize, v: u16| {
            b[at..at + 2].copy_from_slice(&v.to_le_bytes());
        };
        put16(&mut b, 16, me.etype);
        put16(&mut b, 18, me.machine);
        b[20..24].copy_from_slice(&1u32.to_le_bytes());
        b[24..32].copy_from_slice(&me.entry.to_le_bytes());
        b[32..40].copy_from_slice(&64u64.to_le_bytes());
        b[40..48].copy_from_slice(&shoff.to_le_bytes());
        put16(&mut b, 52, 64);
        put16(&mut b, 54, 56);
        put16(&mut b, 56, me.phs.len() as u16);
        put16(&mut b, 58, 64);
        put16(&mut b, 60, shnum);
        put16(&mut b, 62, shstrndx);
        for (i, ph) in me.phs.iter().enumerate() {
            let e = &mut b[64 + 56 * i..64 + 56 * (i + 1)];
            e[0..4].copy_from_slice(&ph.p_type.to_le_bytes());
            e[4..8].copy_from_slice(&ph.flags.to_le_bytes());
            e[8..16].copy_from_slice(&ph.offset.to_le_bytes());
            e[16..24].copy_from_slice(&ph.vaddr.to_le_bytes());
            e[24..32].copy_from_slice(&ph.paddr.to_le_bytes());
            e[32..40].copy_from_slice(&ph.filesz.to_le_bytes());
            e[40..48].copy_from_slice(&ph.memsz.to_le_bytes());
            e[48..56].copy_from_slice(&0x1000u64.to_le_bytes());
        }
        b
    }
}

/// One ELF note, padded as `ELFNOTE()` does.
pub fn note(name: &[u8], kind: u32, desc: &[u8]) -> Vec<u8> {
    let mut n = Vec::new();
    n.extend_from_slice(&(name.len() as u32).to_le_bytes());
    n.extend_from_slice(&(desc.len() as u32).to_le_bytes());
    n.extend_from_slice(&kind.to_le_bytes());
    n.extend_from_slice(name);
    while !n.len().is_multiple_of(4) {
        n.push(0);
    }
    n.extend_from_slice(desc);
    while !n.len().is_multiple_of(4) {
        n.push(0);
    }
    n
}

/// A Xen note.
pub fn xen(kind: u32, desc: &[u8]) -> Vec<u8> {
    note(b"Xen\0", kind, desc)
}

/// A Xen note holding a `.quad`.
pub fn xen64(kind: u32, value: u64) -> Vec<u8> {
    xen(kind, &value.to_le_bytes())
}

/// A Xen note holding a `.long`.
pub fn xen32(kind: u32, value: u32) -> Vec<u8> {
    xen(kind, &value.to_le_bytes())
}

/// The test kernel's recognisable bytes: 0x3000 of them (three pages, the middle
/// one the hypercall page), counting.
pub fn text() -> Vec<u8> {
    (0..0x3000u32).map(|i| (i * 7 + (i >> 8)) as u8).collect()
}

/// The entry point, 0x40 bytes into the text.
pub const ENTRY: u64 = LINUX_VIRT_BASE + TEXT_PADDR + 0x40;
/// The hypercall page, the text's second page.
pub const HYPERCALL: u64 = LINUX_VIRT_BASE + TEXT_PADDR + 0x1000;

/// The notes `xen-head.S` gives a 64-bit PV-capable Linux (in its order), less any
/// whose type is in `except`.
pub fn linux_notes_except(except: &[u32]) -> Vec<u8> {
    use keel_hypercall::abi::elfnote::*;
    let notes = [
        (XEN_ELFNOTE_GUEST_OS, xen(XEN_ELFNOTE_GUEST_OS, b"linux\0")),
        (
            XEN_ELFNOTE_GUEST_VERSION,
            xen(XEN_ELFNOTE_GUEST_VERSION, b"2.6\0"),
        ),
        (
            XEN_ELFNOTE_XEN_VERSION,
            xen(XEN_ELFNOTE_XEN_VERSION, b"xen-3.0\0"),
        ),
        (
            XEN_ELFNOTE_VIRT_BASE,
            xen64(XEN_ELFNOTE_VIRT_BASE, LINUX_VIRT_BASE),
        ),
        (
            XEN_ELFNOTE_INIT_P2M,
            xen64(XEN_ELFNOTE_INIT_P2M, LINUX_INIT_P2M),
        ),
        (XEN_ELFNOTE_ENTRY, xen64(XEN_ELFNOTE_ENTRY, ENTRY)),
        (
            XEN_ELFNOTE_HYPERCALL_PAGE,
            xen64(XEN_ELFNOTE_HYPERCALL_PAGE, HYPERCALL),
        ),
        // `.ascii`: no NUL of its own.
        (
            XEN_ELFNOTE_FEATURES,
            xen(
                XEN_ELFNOTE_FEATURES,
                b"!writable_page_tables|pae_pgdir_above_4gb",
            ),
        ),
        (
            XEN_ELFNOTE_SUPPORTED_FEATURES,
            xen32(XEN_ELFNOTE_SUPPORTED_FEATURES, (1 << 0) | (1 << 11)),
        ),
        (XEN_ELFNOTE_PAE_MODE, xen(XEN_ELFNOTE_PAE_MODE, b"yes\0")),
        (XEN_ELFNOTE_LOADER, xen(XEN_ELFNOTE_LOADER, b"generic\0")),
        (
            XEN_ELFNOTE_L1_MFN_VALID,
            xen(
                XEN_ELFNOTE_L1_MFN_VALID,
                &[1, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0],
            ),
        ),
        (
            XEN_ELFNOTE_SUSPEND_CANCEL,
            xen32(XEN_ELFNOTE_SUSPEND_CANCEL, 1),
        ),
        (
            XEN_ELFNOTE_MOD_START_PFN,
            xen32(XEN_ELFNOTE_MOD_START_PFN, 1),
        ),
        (
            XEN_ELFNOTE_HV_START_LOW,
            xen64(XEN_ELFNOTE_HV_START_LOW, 0xFFFF_8000_0000_0000),
        ),
        (XEN_ELFNOTE_PADDR_OFFSET, xen64(XEN_ELFNOTE_PADDR_OFFSET, 0)),
    ];
    notes
        .into_iter()
        .filter(|(kind, _)| !except.contains(kind))
        .flat_map(|(_, bytes)| bytes)
        .collect()
}

/// All of Linux's notes.
pub fn linux_notes() -> Vec<u8> {
    linux_notes_except(&[])
}

/// A Linux-like PV kernel: text at 16 MiB (0x3000 bytes of file, 0x6000 in
/// memory), data at 16 MiB + 0x8000 (0x100 of file, 0x2000 in memory, writable),
/// with `notes`.
pub fn kernel_with(notes: &[u8]) -> Elf {
    Elf::new()
        .load(TEXT_PADDR, &text(), 0x6000)
        .load_flags(TEXT_PADDR + 0x8000, &[0xDA; 0x100], 0x2000, PF_R | PF_W)
        .notes(notes)
        .entry(0xDEAD_BEEF)
}

/// [`kernel_with`] Linux's notes, built.
pub fn linux() -> Vec<u8> {
    kernel_with(&linux_notes()).build()
}
