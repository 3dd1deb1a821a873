//! What the boot loader told keel, in one shape whichever protocol it used.
//!
//! - multiboot2 (GRUB `multiboot2`, the path on real hardware) is read with the
//!   `multiboot2` crate ([`from_multiboot2`]);
//! - multiboot v1 (QEMU `-kernel`, GRUB `multiboot`) is small enough to read here
//!   ([`from_multiboot1`]), from physical memory through a `read` function, so that the
//!   host tests can hand it fake memory.
//!
//! Everything the loader placed in memory (the information structure, the memory-map
//! buffer, module lists, strings, the modules) is listed in [`BootInfo::reserved`] so that
//! the frame allocator never hands it out: GRUB puts these in gaps between keel's own
//! segments (EMULATORS.md).
//!
//! The boot loader is trusted, but its data is still checked: lengths and pointers are
//! bounded, strings must end within [`MAX_STRING`] bytes and be UTF-8, and anything
//! malformed is an error naming the field, never a fault.

use core::fmt;

use multiboot2::{BootInformation, MemoryAreaType};

/// Magic in EAX after a multiboot2 loader (Multiboot2 spec §3.3).
pub const MULTIBOOT2_MAGIC: u32 = 0x36D7_6289;
/// Magic in EAX after a multiboot v1 loader (Multiboot 0.6.96 §3.2).
pub const MULTIBOOT1_MAGIC: u32 = 0x2BAD_B002;

/// At most this many modules are taken; more is an error (not silently dropped).
pub const MAX_MODULES: usize = 16;
/// At most this many memory-map entries.
pub const MAX_REGIONS: usize = 128;
/// At most this many ranges the loader occupies.
pub const MAX_RESERVED: usize = 2 * MAX_MODULES + 8;
/// Longest string (command line, module string, loader name) accepted.
pub const MAX_STRING: usize = 4096;

/// Which protocol keel was booted with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    Multiboot2,
    Multiboot1,
}

/// Kind of a firmware memory-map entry (e820 types, ACPI 6.4 §15).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MemKind {
    Usable,
    Reserved,
    AcpiReclaimable,
    AcpiNvs,
    Defective,
}

/// One firmware memory-map entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemRegion {
    pub start: u64,
    pub len: u64,
    pub kind: MemKind,
}

/// One boot module: its bytes are at physical `[start, end)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Module<'a> {
    pub start: u64,
    pub end: u64,
    /// The module's string as the loader gave it; its first word is the module's name.
    pub string: &'a str,
}

impl Module<'_> {
    pub fn len(&self) -> u64 {
        self.end - self.start
    }

    pub fn is_empty(&self) -> bool {
        self.end == self.start
    }

    /// The module's name: the first word of its string.
    pub fn name(&self) -> &str {
        self.string.split_whitespace().next().unwrap_or("")
    }

    /// The module's own command line: its string less the first word (Xen's rule for
    /// `module2 /boot/kernel args...`).
    pub fn cmdline(&self) -> &str {
        crate::cmdline::skip_first_word(self.string)
    }
}

/// A physical range the boot loader's data occupies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Range {
    pub start: u64,
    pub end: u64,
    pub what: Occupant,
}

/// What occupies a reserved range.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Occupant {
    BootInfo,
    Module,
}

/// Everything keel takes from the boot loader.
#[derive(Clone, Debug)]
pub struct BootInfo<'a> {
    pub protocol: Protocol,
    /// keel's command line with any image name removed.
    pub cmdline: &'a str,
    pub loader: &'a str,
    regions: [MemRegion; MAX_REGIONS],
    region_count: usize,
    modules: [Module<'a>; MAX_MODULES],
    module_count: usize,
    reserved: [Range; MAX_RESERVED],
    reserved_count: usize,
    /// Physical address of an RSDP (or a copy of it), if the loader gave one.
    pub rsdp: Option<u64>,
}

/// Boot information keel cannot use. The variant's doc is the message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BootInfoError {
    /// keel was not started by a multiboot loader (unknown magic in EAX)
    BadMagic(u32),
    /// the multiboot2 information structure is malformed
    BadMultiboot2,
    /// a field points at memory keel cannot read
    Unreadable(&'static str),
    /// a string is not NUL-terminated within 4096 bytes, or is not UTF-8
    BadString(&'static str),
    /// there is no memory map
    NoMemoryMap,
    /// the memory map has more entries than keel takes
    TooManyRegions,
    /// more modules than keel takes
    TooManyModules(usize),
    /// a module's end is before its start
    BadModule(usize),
}

impl fmt::Display for BootInfoError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BootInfoError::BadMagic(m) => {
                write!(
                    f,
                    "not started by a multiboot loader (EAX = {m:#010x}); boot keel with GRUB's multiboot2 or QEMU -kernel"
                )
            }
            BootInfoError::BadMultiboot2 => {
                f.write_str("the multiboot2 information structure is malformed")
            }
            BootInfoError::Unreadable(what) => write!(
                f,
                "the boot loader's {what} points at memory keel cannot read"
            ),
            BootInfoError::BadString(what) => {
                write!(
                    f,
                    "the boot loader's {what} is not a NUL-terminated UTF-8 string of at most {MAX_STRING} bytes"
                )
            }
            BootInfoError::NoMemoryMap => f.write_str("the boot loader gave no memory map"),
            BootInfoError::TooManyRegions => {
                write!(f, "the memory map has more than {MAX_REGIONS} entries")
            }
            BootInfoError::TooManyModules(n) => {
                write!(f, "{n} modules given; keel takes at most {MAX_MODULES}")
            }
            BootInfoError::BadModule(i) => write!(f, "module {i} ends before it starts"),
        }
    }
}

const EMPTY_MODULE: Module<'static> = Module {
    start: 0,
    end: 0,
    string: "",
};

impl<'a> BootInfo<'a> {
    fn new(protocol: Protocol) -> Self {
        BootInfo {
            protocol,
            cmdline: "",
            loader: "",
            regions: [MemRegion {
                start: 0,
                len: 0,
                kind: MemKind::Reserved,
            }; MAX_REGIONS],
            region_count: 0,
            modules: [EMPTY_MODULE; MAX_MODULES],
            module_count: 0,
            reserved: [Range {
                start: 0,
                end: 0,
                what: Occupant::BootInfo,
            }; MAX_RESERVED],
            reserved_count: 0,
            rsdp: None,
        }
    }

    /// The firmware memory map.
    pub fn regions(&self) -> &[MemRegion] {
        &self.regions[..self.region_count]
    }

    /// The modules, in the order the loader listed them (module 0 is dom0's kernel).
    pub fn modules(&self) -> &[Module<'a>] {
        &self.modules[..self.module_count]
    }

    /// Physical ranges the loader's data occupies (to reserve before allocating).
    pub fn reserved(&self) -> &[Range] {
        &self.reserved[..self.reserved_count]
    }

    fn push_region(&mut self, start: u64, len: u64, kind: MemKind) -> Result<(), BootInfoError> {
        let slot = self
            .regions
            .get_mut(self.region_count)
            .ok_or(BootInfoError::TooManyRegions)?;
        *slot = MemRegion { start, len, kind };
        self.region_count += 1;
        Ok(())
    }

    fn push_module(
        &mut self,
        index: usize,
        start: u64,
        end: u64,
        string: &'a str,
    ) -> Result<(), BootInfoError> {
        if end < start {
            return Err(BootInfoError::BadModule(index));
        }
        self.modules[self.module_count] = Module { start, end, string };
        self.module_count += 1;
        self.push_reserved(start, end, Occupant::Module);
        Ok(())
    }

    fn push_reserved(&mut self, start: u64, end: u64, what: Occupant) {
        if end > start && self.reserved_count < MAX_RESERVED {
            self.reserved[self.reserved_count] = Range { start, end, what };
            self.reserved_count += 1;
        }
    }
}

/// keel's own command line from the loader's: multiboot v1 loaders (QEMU) and
/// loaders other than GRUB 2 put the image's name first; GRUB 2 does not (Xen's
/// `cmdline_cook` rule).
fn cook_cmdline<'a>(raw: &'a str, loader: &str) -> &'a str {
    let raw = raw.trim_start();
    if loader.starts_with("GRUB 2") {
        raw
    } else if raw
        .split_whitespace()
        .next()
        .is_some_and(|w| !w.contains('='))
    {
        crate::cmdline::skip_first_word(raw)
    } else {
        raw
    }
}

fn kind_from_e820(t: u32) -> MemKind {
    match t {
        1 => MemKind::Usable,
        3 => MemKind::AcpiReclaimable,
        4 => MemKind::AcpiNvs,
        5 => MemKind::Defective,
        _ => MemKind::Reserved,
    }
}

/// Reads a multiboot2 information structure that the caller has loaded from
/// physical address `mbi_phys`.
pub fn from_multiboot2<'a>(
    mbi: &'a BootInformation<'a>,
    mbi_phys: u64,
) -> Result<BootInfo<'a>, BootInfoError> {
    let mut info = BootInfo::new(Protocol::Multiboot2);
    info.push_reserved(
        mbi_phys,
        mbi_phys + mbi.total_size() as u64,
        Occupant::BootInfo,
    );
    info.loader = match mbi.boot_loader_name_tag() {
        Some(t) => t
            .name()
            .map_err(|_| BootInfoError::BadString("boot loader name"))?,
        None => "",
    };
    info.cmdline = match mbi.command_line_tag() {
        Some(t) => cook_cmdline(
            t.cmdline()
                .map_err(|_| BootInfoError::BadString("command line"))?,
            info.loader,
        ),
        None => "",
    };
    let mmap = mbi.memory_map_tag().ok_or(BootInfoError::NoMemoryMap)?;
    for area in mmap.memory_areas() {
        let kind = match MemoryAreaType::from(area.typ()) {
            MemoryAreaType::Available => MemKind::Usable,
            MemoryAreaType::AcpiAvailable => MemKind::AcpiReclaimable,
            MemoryAreaType::ReservedHibernate => MemKind::AcpiNvs,
            MemoryAreaType::Defective => MemKind::Defective,
            _ => MemKind::Reserved,
        };
        info.push_region(area.start_address(), area.size(), kind)?;
    }
    let count = mbi.module_tags().count();
    if count > MAX_MODULES {
        return Err(BootInfoError::TooManyModules(count));
    }
    for (i, m) in mbi.module_tags().enumerate() {
        let string = m
            .cmdline()
            .map_err(|_| BootInfoError::BadString("module string"))?;
        info.push_module(
            i,
            u64::from(m.start_address()),
            u64::from(m.end_address()),
            string,
        )?;
    }
    // The RSDP copy sits in the tag right after its 8-byte header.
    let base = mbi.start_address() as u64;
    let rsdp_tag = mbi
        .rsdp_v2_tag()
        .map(|t| t as *const _ as *const u8 as u64)
        .or_else(|| mbi.rsdp_v1_tag().map(|t| t as *const _ as *const u8 as u64));
    info.rsdp = rsdp_tag.map(|tag| mbi_phys + (tag - base) + 8);
    Ok(info)
}

/// Reads a multiboot v1 information structure at physical `mbi_phys`. `read(pa, len)`
/// returns the bytes at physical `pa`, or `None` if keel cannot reach them.
pub fn from_multiboot1<'a>(
    mbi_phys: u64,
    read: impl Fn(u64, usize) -> Option<&'a [u8]>,
) -> Result<BootInfo<'a>, BootInfoError> {
    const INFO_SIZE: usize = 88;
    let hdr =
        read(mbi_phys, INFO_SIZE).ok_or(BootInfoError::Unreadable("information structure"))?;
    let u32_at =
        |b: &[u8], off: usize| u32::from_le_bytes([b[off], b[off + 1], b[off + 2], b[off + 3]]);
    let flags = u32_at(hdr, 0);
    let mut info = BootInfo::new(Protocol::Multiboot1);
    info.push_reserved(mbi_phys, mbi_phys + INFO_SIZE as u64, Occupant::BootInfo);

    let cstr =
        |pa: u32, what: &'static str, info: &mut BootInfo<'a>| -> Result<&'a str, BootInfoError> {
            let pa = u64::from(pa);
            // Read what is reachable up to MAX_STRING + 1 bytes (strings near the end of
            // reachable memory are still readable).
            let mut len = MAX_STRING + 1;
            let bytes = loop {
                if let Some(b) = read(pa, len) {
                    break b;
                }
                len /= 2;
                if len == 0 {
                    return Err(BootInfoError::Unreadable(what));
                }
            };
            let end = bytes
                .iter()
                .position(|&b| b == 0)
                .ok_or(BootInfoError::BadString(what))?;
            info.push_reserved(pa, pa + end as u64 + 1, Occupant::BootInfo);
            core::str::from_utf8(&bytes[..end]).map_err(|_| BootInfoError::BadString(what))
        };

    if flags & (1 << 9) != 0 {
        info.loader = cstr(u32_at(hdr, 64), "boot loader name", &mut info)?;
    }
    if flags & (1 << 2) != 0 {
        let raw = cstr(u32_at(hdr, 16), "command line", &mut info)?;
        info.cmdline = cook_cmdline(raw, info.loader);
    }
    if flags & (1 << 6) == 0 {
        return Err(BootInfoError::NoMemoryMap);
    }
    let (mmap_len, mmap_addr) = (u32_at(hdr, 44) as usize, u64::from(u32_at(hdr, 48)));
    let mmap = read(mmap_addr, mmap_len).ok_or(BootInfoError::Unreadable("memory map"))?;
    info.push_reserved(mmap_addr, mmap_addr + mmap_len as u64, Occupant::BootInfo);
    let mut off = 0;
    while off + 24 <= mmap.len() {
        let size = u32_at(mmap, off) as usize;
        let e = &mmap[off + 4..];
        let base = u64::from(u32_at(e, 0)) | (u64::from(u32_at(e, 4)) << 32);
        let len = u64::from(u32_at(e, 8)) | (u64::from(u32_at(e, 12)) << 32);
        info.push_region(base, len, kind_from_e820(u32_at(e, 16)))?;
        // `size` excludes its own 4 bytes; a size below 20 would loop or misread.
        if size < 20 {
            return Err(BootInfoError::Unreadable("memory map entry size"));
        }
        off += size + 4;
    }
    if flags & (1 << 3) != 0 {
        let (count, addr) = (u32_at(hdr, 20) as usize, u64::from(u32_at(hdr, 24)));
        if count > MAX_MODULES {
            return Err(BootInfoError::TooManyModules(count));
        }
        let list = read(addr, count * 16).ok_or(BootInfoError::Unreadable("module list"))?;
        info.push_reserved(addr, addr + (count * 16) as u64, Occupant::BootInfo);
        for i in 0..count {
            let m = &list[i * 16..];
            let string = match u32_at(m, 8) {
                0 => "",
                pa => cstr(pa, "module string", &mut info)?,
            };
            info.push_module(i, u64::from(u32_at(m, 0)), u64::from(u32_at(m, 4)), string)?;
        }
    }
    Ok(info)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Fake physical memory: a buffer that starts at physical `base`.
    struct Phys {
        base: u64,
        bytes: Vec<u8>,
    }

    impl Phys {
        fn new(base: u64, size: usize) -> Self {
            Phys {
                base,
                bytes: vec![0; size],
            }
        }
        fn put(&mut self, pa: u64, data: &[u8]) {
            let off = (pa - self.base) as usize;
            self.bytes[off..off + data.len()].copy_from_slice(data);
        }
        fn put32(&mut self, pa: u64, v: u32) {
            self.put(pa, &v.to_le_bytes());
        }
        fn reader<'s>(&'s self) -> impl Fn(u64, usize) -> Option<&'s [u8]> + 's {
            move |pa, len| {
                let off = pa.checked_sub(self.base)? as usize;
                self.bytes.get(off..off.checked_add(len)?)
            }
        }
    }

    /// A QEMU-like multiboot v1 structure at 0x9000 with `modules`.
    fn qemu_mb1(modules: &[(u32, u32, &str)]) -> Phys {
        let mut m = Phys::new(0x9000, 0x4000);
        let mbi = 0x9000;
        m.put32(mbi, (1 << 2) | (1 << 3) | (1 << 6) | (1 << 9));
        m.put32(mbi + 16, 0x9800); // cmdline
        m.put(0x9800, b"/tmp/keel.elf console=com1 loglvl=all\0");
        m.put32(mbi + 64, 0x9900);
        m.put(0x9900, b"qemu\0");
        // memory map: two entries
        m.put32(mbi + 44, 48);
        m.put32(mbi + 48, 0x9A00);
        for (i, (base, len, typ)) in [(0u64, 0x9FC00u64, 1u32), (0x100000, 0x1FF0_0000, 1)]
            .iter()
            .enumerate()
        {
            let e = 0x9A00 + i as u64 * 24;
            m.put32(e, 20);
            m.put(e + 4, &base.to_le_bytes());
            m.put(e + 12, &len.to_le_bytes());
            m.put32(e + 20, *typ);
        }
        m.put32(mbi + 20, modules.len() as u32);
        m.put32(mbi + 24, 0xA000);
        for (i, (start, end, s)) in modules.iter().enumerate() {
            let e = 0xA000 + i as u64 * 16;
            let spa = 0xA800 + i as u64 * 0x100;
            m.put32(e, *start);
            m.put32(e + 4, *end);
            m.put32(e + 8, spa as u32);
            m.put(spa, s.as_bytes());
            m.put(spa + s.len() as u64, &[0]);
        }
        m
    }

    #[test]
    fn multiboot1_like_qemu_gives_it() {
        let m = qemu_mb1(&[(0x40_0000, 0x40_2000, "/tmp/dom0.elf root=/dev/xvda")]);
        let info = from_multiboot1(0x9000, m.reader()).expect("parses");
        assert_eq!(info.protocol, Protocol::Multiboot1);
        assert_eq!(info.loader, "qemu");
        assert_eq!(
            info.cmdline, "console=com1 loglvl=all",
            "image name dropped"
        );
        assert_eq!(info.regions().len(), 2);
        assert_eq!(
            info.regions()[1],
            MemRegion {
                start: 0x100000,
                len: 0x1FF0_0000,
                kind: MemKind::Usable
            }
        );
        let m0 = info.modules()[0];
        assert_eq!((m0.start, m0.end, m0.len()), (0x40_0000, 0x40_2000, 0x2000));
        assert_eq!(m0.name(), "/tmp/dom0.elf");
        assert_eq!(m0.cmdline(), "root=/dev/xvda");
        // The structure, the map, the module list, each string and the module are reserved.
        let r = info.reserved();
        for (pa, what) in [
            (0x9000, Occupant::BootInfo),
            (0x9800, Occupant::BootInfo),
            (0x9A00, Occupant::BootInfo),
            (0xA000, Occupant::BootInfo),
            (0xA800, Occupant::BootInfo),
            (0x40_0000, Occupant::Module),
        ] {
            assert!(
                r.iter().any(|x| x.start == pa && x.what == what),
                "{pa:#x} reserved"
            );
        }
    }

    #[test]
    fn multiboot1_hostile_fields_are_errors_not_faults() {
        // Module list pointing outside reachable memory.
        let mut m = qemu_mb1(&[(0x40_0000, 0x40_2000, "x")]);
        m.put32(0x9000 + 24, 0xFFFF_0000);
        assert_eq!(
            from_multiboot1(0x9000, m.reader()).unwrap_err(),
            BootInfoError::Unreadable("module list")
        );
        // Too many modules.
        let mut m = qemu_mb1(&[]);
        m.put32(0x9000 + 20, 1000);
        assert_eq!(
            from_multiboot1(0x9000, m.reader()).unwrap_err(),
            BootInfoError::TooManyModules(1000)
        );
        // Module ending before it starts.
        let m = qemu_mb1(&[(0x5000, 0x4000, "x")]);
        assert_eq!(
            from_multiboot1(0x9000, m.reader()).unwrap_err(),
            BootInfoError::BadModule(0)
        );
        // Unterminated command line (no NUL anywhere up to the end of memory).
        let mut m = qemu_mb1(&[]);
        let end = m.base + m.bytes.len() as u64;
        m.put32(0x9000 + 16, (end - 8) as u32);
        m.put(end - 8, b"AAAAAAAA");
        assert_eq!(
            from_multiboot1(0x9000, m.reader()).unwrap_err(),
            BootInfoError::BadString("command line")
        );
        // Invalid UTF-8.
        let mut m = qemu_mb1(&[]);
        m.put(0x9800, b"\xff\xfe\0");
        assert_eq!(
            from_multiboot1(0x9000, m.reader()).unwrap_err(),
            BootInfoError::BadString("command line")
        );
        // Memory-map entry with a size that would loop.
        let mut m = qemu_mb1(&[]);
        m.put32(0x9A00, 0);
        assert!(matches!(
            from_multiboot1(0x9000, m.reader()),
            Err(BootInfoError::Unreadable(_))
        ));
        // No memory map.
        let mut m = qemu_mb1(&[]);
        m.put32(0x9000, 1 << 2);
        assert_eq!(
            from_multiboot1(0x9000, m.reader()).unwrap_err(),
            BootInfoError::NoMemoryMap
        );
        // Structure itself unreadable.
        assert!(from_multiboot1(0x100_0000, m.reader()).is_err());
    }

    #[test]
    fn cmdline_cooking_follows_the_loader() {
        assert_eq!(cook_cmdline("console=com1", "GRUB 2.06"), "console=com1");
        assert_eq!(
            cook_cmdline("/boot/keel.elf console=com1", "qemu"),
            "console=com1"
        );
        assert_eq!(
            cook_cmdline("console=com1 loglvl=all", "qemu"),
            "console=com1 loglvl=all"
        );
        assert_eq!(cook_cmdline("  ", "qemu"), "");
    }

    #[test]
    #[allow(unsafe_code)]
    fn multiboot2_from_a_built_structure() {
        use multiboot2::{
            BootLoaderNameTag, Builder as InformationBuilder, CommandLineTag, MemoryArea,
            MemoryMapTag, ModuleTag,
        };
        let mbi = InformationBuilder::new()
            .bootloader(BootLoaderNameTag::new("GRUB 2.06"))
            .cmdline(CommandLineTag::new("console=com1 bogus"))
            .mmap(MemoryMapTag::new(&[
                MemoryArea::new(0, 0x9FC00, MemoryAreaType::Available),
                MemoryArea::new(0xF0000, 0x10000, MemoryAreaType::Reserved),
                MemoryArea::new(0x100000, 0x1000_0000, MemoryAreaType::Available),
                MemoryArea::new(0x1010_0000, 0x1000, MemoryAreaType::ReservedHibernate),
            ]))
            .add_module(ModuleTag::new(
                0x80_0000,
                0x80_3000,
                "/boot/dom0.elf dom0 quiet",
            ))
            .add_module(ModuleTag::new(0x90_0000, 0x90_1000, "initrd"))
            .build();
        let ptr = &*mbi as *const _ as *const multiboot2::BootInformationHeader;
        // SAFETY: `mbi` is a complete, aligned structure built by the crate's builder and
        // outlives `boot`.
        let boot = unsafe { BootInformation::load(ptr) }.expect("loads");
        let info = from_multiboot2(&boot, 0x10_000).expect("parses");
        assert_eq!(info.protocol, Protocol::Multiboot2);
        assert_eq!(
            info.cmdline, "console=com1 bogus",
            "GRUB 2 puts no image name first"
        );
        assert_eq!(info.regions().len(), 4);
        assert_eq!(info.regions()[3].kind, MemKind::AcpiNvs);
        assert_eq!(info.modules().len(), 2);
        assert_eq!(info.modules()[0].cmdline(), "dom0 quiet");
        assert_eq!(info.modules()[1].name(), "initrd");
        assert_eq!(info.reserved()[0].start, 0x10_000);
        assert_eq!(info.reserved()[0].end, 0x10_000 + boot.total_size() as u64);
        assert!(
            info.reserved()
                .iter()
                .any(|r| r.start == 0x80_0000 && r.end == 0x80_3000)
        );
        assert_eq!(info.rsdp, None);
    }
}
