//! A tiny initramfs for the real-guest tests: Debian's static busybox and an
//! `/init` that prints what the tests check, then powers off.
//!
//! # What
//!
//! Linux unpacks an uncompressed "newc" cpio archive given as its initrd into the
//! root file system and runs `/init` (Linux `Documentation/driver-api/early-userspace/
//! buffer-format.rst`). [`CpioWriter`] writes that format; [`archive`] fills it with
//! `/bin /dev /proc /sys /sbin`, `/dev/console` (char 5,1: where the kernel points
//! init's stdio, i.e. `console=hvc0`), `/dev/null` (char 1,3: the shell points a
//! background job's stdin there), `/bin/busybox`, `/bin/sh -> busybox` and
//! [`init_script`]. The script prints [`MARKER`], `uname -a`,
//! `hypervisor type: <type>` ([`HYPERVISOR_TYPE_PREFIX`]), the first lines of
//! `/proc/cpuinfo` and the Xen-related lines of `dmesg` (each prefixed
//! [`DMESG_PREFIX`]), then `poweroff -f`, which is `SCHEDOP_shutdown(poweroff)` for a
//! Xen guest.
//!
//! # Invariants
//!
//! - newc: each entry is `070701`, 13 fields of 8 upper-case hex digits (`ino mode
//!   uid gid nlink mtime filesize devmajor devminor rdevmajor rdevminor namesize
//!   check`), the NUL-terminated name, padding so header+name is a multiple of 4,
//!   the data, padding to 4; the last entry is `TRAILER!!!`. Names are relative
//!   (`bin/busybox`), a directory comes before what it holds, inode numbers are
//!   distinct, and every timestamp is 0, so equal inputs give equal bytes.
//!
//! # Locking
//!
//! [`cached`] may be called from parallel tests and processes: the archive is
//! written to a unique temporary name and renamed into place, so a reader sees a
//! whole archive or none; two builders racing write the same bytes.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

use crate::HarnessError;

/// The line `/init` prints first: userspace is running.
pub const MARKER: &str = "KEEL-LINUX-USERSPACE-OK";
/// What `/init` prints before `/sys/hypervisor/type` (`hypervisor type: xen`), or
/// before `<none>` if the file is missing.
pub const HYPERVISOR_TYPE_PREFIX: &str = "hypervisor type: ";
/// The prefix of each `dmesg` line `/init` reprints (the kernel's own console
/// lines come without it).
pub const DMESG_PREFIX: &str = "dmesg: ";
/// How many lines of `/proc/cpuinfo` `/init` prints.
pub const CPUINFO_LINES: u32 = 8;
/// What `/init` selects from `dmesg` (an `grep -i -E` pattern).
pub const DMESG_PATTERN: &str = "xen|pvh|clocksource|evtchn|upcall|x2apic";

/// The magic of a newc archive entry (no checksums).
pub const NEWC_MAGIC: &[u8; 6] = b"070701";
/// The name of the last entry.
pub const TRAILER: &str = "TRAILER!!!";
/// The length of a newc header: magic and 13 eight-digit fields.
pub const HEADER_LEN: usize = 6 + 13 * 8;

/// File type bits of `st_mode` (POSIX `<sys/stat.h>`).
pub const S_IFDIR: u32 = 0o040_000;
/// A regular file.
pub const S_IFREG: u32 = 0o100_000;
/// A symbolic link.
pub const S_IFLNK: u32 = 0o120_000;
/// A character device.
pub const S_IFCHR: u32 = 0o020_000;

/// The `/init` script (run by busybox's `sh`).
pub fn init_script() -> String {
    let bb = "/bin/busybox";
    let smp = smp_script(bb);
    format!(
        "#!/bin/sh\n\
         # keel's real-guest test init: report, then power off.\n\
         {bb} mount -t proc proc /proc\n\
         {bb} mount -t sysfs sysfs /sys\n\
         echo {MARKER}\n\
         {bb} uname -a\n\
         if [ -r /sys/hypervisor/type ]; then\n\
         \techo \"{HYPERVISOR_TYPE_PREFIX}$({bb} cat /sys/hypervisor/type)\"\n\
         else\n\
         \techo \"{HYPERVISOR_TYPE_PREFIX}<none>\"\n\
         fi\n\
         {bb} head -n {CPUINFO_LINES} /proc/cpuinfo\n\
         {bb} dmesg | {bb} grep -i -E '{DMESG_PATTERN}' | {bb} sed 's/^/{DMESG_PREFIX}/'\n\
         {smp}\
         {bb} poweroff -f\n\
         # poweroff -f does not return; if it does, say so rather than let init exit\n\
         # (which panics the kernel).\n\
         echo 'keel-init: poweroff -f returned'\n\
         while true; do {bb} sleep 1; done\n"
    )
}

/// The prefix of every line the SMP part of `/init` prints.
pub const SMP_PREFIX: &str = "keel-smp: ";
/// How many additions each CPU's work does (`s = 0 + 1 + ... + (N-1)`).
pub const SMP_WORK: u64 = 3000;
/// The sum each CPU's work must print.
pub const SMP_SUM: u64 = SMP_WORK * (SMP_WORK - 1) / 2;

/// The SMP part of `/init`: how many CPUs Linux has, one busy loop pinned to
/// each (`taskset`, all at once) printing its sum and the CPU it ran on
/// (`/proc/self/stat` field 39 of a process forked by the pinned shell), then,
/// with several CPUs, the last one unplugged and plugged again through sysfs,
/// what `/sys/devices/system/cpu/online` says after each, and the work run on
/// it again. Lines:
///
/// - `keel-smp: processors N online <list>`
/// - `keel-smp: cpu I sum S ran-on C` (one per CPU, any order)
/// - `keel-smp: unplugged cpu L online <list>`, `keel-smp: replugged cpu L online <list>`
/// - `keel-smp: again cpu L sum S ran-on C`
fn smp_script(bb: &str) -> String {
    let p = SMP_PREFIX;
    let n = SMP_WORK;
    // One CPU's work, pinned to CPU $1 (a function, so the shell that taskset
    // runs is the pinned one and `$(...)` forks from it).
    format!(
        "work() {{\n\
         \t{bb} taskset -c $1 /bin/sh -c \"s=0; j=0; while [ \\$j -lt {n} ]; do s=\\$((s+j)); j=\\$((j+1)); done; \
         echo \\\"{p}$2cpu $1 sum \\$s ran-on \\$({bb} cut -d' ' -f39 /proc/self/stat)\\\"\"\n\
         }}\n\
         n=$({bb} grep -c ^processor /proc/cpuinfo)\n\
         echo \"{p}processors $n online $({bb} cat /sys/devices/system/cpu/online)\"\n\
         i=0\n\
         while [ $i -lt $n ]; do work $i '' & i=$((i+1)); done\n\
         wait\n\
         if [ $n -gt 1 ]; then\n\
         \tl=$((n-1))\n\
         \techo 0 > /sys/devices/system/cpu/cpu$l/online\n\
         \techo \"{p}unplugged cpu $l online $({bb} cat /sys/devices/system/cpu/online)\"\n\
         \techo 1 > /sys/devices/system/cpu/cpu$l/online\n\
         \techo \"{p}replugged cpu $l online $({bb} cat /sys/devices/system/cpu/online)\"\n\
         \twork $l 'again '\n\
         fi\n"
    )
}

/// Writes a newc cpio archive in memory, entry by entry.
#[derive(Debug)]
pub struct CpioWriter {
    buf: Vec<u8>,
    next_ino: u32,
}

impl Default for CpioWriter {
    fn default() -> Self {
        CpioWriter::new()
    }
}

/// One entry's header values.
struct Header<'a> {
    name: &'a str,
    mode: u32,
    nlink: u32,
    rdev: (u32, u32),
}

impl CpioWriter {
    /// An empty archive.
    pub fn new() -> CpioWriter {
        CpioWriter {
            buf: Vec::new(),
            next_ino: 1,
        }
    }

    /// Appends a directory (`perm` is e.g. `0o755`).
    pub fn dir(&mut self, name: &str, perm: u32) -> &mut Self {
        self.entry(
            Header {
                name,
                mode: S_IFDIR | (perm & 0o7777),
                nlink: 2,
                rdev: (0, 0),
            },
            &[],
        )
    }

    /// Appends a regular file.
    pub fn file(&mut self, name: &str, perm: u32, data: &[u8]) -> &mut Self {
        self.entry(
            Header {
                name,
                mode: S_IFREG | (perm & 0o7777),
                nlink: 1,
                rdev: (0, 0),
            },
            data,
        )
    }

    /// Appends a symbolic link to `target` (its data is the target).
    pub fn symlink(&mut self, name: &str, target: &str) -> &mut Self {
        self.entry(
            Header {
                name,
                mode: S_IFLNK | 0o777,
                nlink: 1,
                rdev: (0, 0),
            },
            target.as_bytes(),
        )
    }

    /// Appends a character device node `major:minor`.
    pub fn char_dev(&mut self, name: &str, perm: u32, major: u32, minor: u32) -> &mut Self {
        self.entry(
            Header {
                name,
                mode: S_IFCHR | (perm & 0o7777),
                nlink: 1,
                rdev: (major, minor),
            },
            &[],
        )
    }

    /// Appends the trailer and returns the archive.
    pub fn finish(mut self) -> Vec<u8> {
        self.raw_entry(
            0,
            &Header {
                name: TRAILER,
                mode: 0,
                nlink: 1,
                rdev: (0, 0),
            },
            &[],
        );
        self.buf
    }

    fn entry(&mut self, header: Header<'_>, data: &[u8]) -> &mut Self {
        let ino = self.next_ino;
        self.next_ino += 1;
        self.raw_entry(ino, &header, data);
        self
    }

    fn raw_entry(&mut self, ino: u32, h: &Header<'_>, data: &[u8]) {
        let name = h.name.trim_start_matches('/');
        // A name or file over 4 GiB cannot be described in 8 hex digits; nothing
        // the harness packs comes near that, so saturate rather than fail.
        let size = u32::try_from(data.len()).unwrap_or(u32::MAX);
        let namesize = u32::try_from(name.len() + 1).unwrap_or(u32::MAX);
        let fields = [
            ino, h.mode, 0, 0, h.nlink, 0, size, 0, 0, h.rdev.0, h.rdev.1, namesize, 0,
        ];
        self.buf.extend_from_slice(NEWC_MAGIC);
        for f in fields {
            self.buf.extend_from_slice(format!("{f:08X}").as_bytes());
        }
        self.buf.extend_from_slice(name.as_bytes());
        self.buf.push(0);
        self.pad4();
        self.buf.extend_from_slice(data);
        self.pad4();
    }

    fn pad4(&mut self) {
        while !self.buf.len().is_multiple_of(4) {
            self.buf.push(0);
        }
    }
}

/// The whole initramfs around `busybox` (the binary's bytes).
pub fn archive(busybox: &[u8]) -> Vec<u8> {
    let mut w = CpioWriter::new();
    for dir in ["bin", "dev", "proc", "sys", "sbin"] {
        w.dir(dir, 0o755);
    }
    w.char_dev("dev/console", 0o600, 5, 1)
        .char_dev("dev/null", 0o666, 1, 3)
        .file("bin/busybox", 0o755, busybox)
        .symlink("bin/sh", "busybox")
        .file("init", 0o755, init_script().as_bytes());
    w.finish()
}

/// Reads `busybox` and writes the initramfs to `out`.
pub fn build(busybox: &Path, out: &Path) -> Result<(), HarnessError> {
    let bytes =
        fs::read(busybox).map_err(HarnessError::io(format!("reading {}", busybox.display())))?;
    fs::write(out, archive(&bytes)).map_err(HarnessError::io(format!("writing {}", out.display())))
}

/// `target/keel/cache/initramfs`.
pub fn cache_dir() -> PathBuf {
    crate::keel_target_dir().join("cache").join("initramfs")
}

static NEXT_TMP: AtomicU32 = AtomicU32::new(0);

/// The initramfs for `busybox`, built once: cached under [`cache_dir`] keyed on
/// busybox's path, size and modification time, the `/init` script and the layout.
pub fn cached(busybox: &Path) -> Result<PathBuf, HarnessError> {
    cached_in(&cache_dir(), busybox)
}

/// What [`archive`] puts besides busybox and `/init`, for the cache key: change
/// it with the layout, so that a cached archive of an older layout is not used.
const ARCHIVE_LAYOUT: &[u8] = b"bin dev proc sys sbin dev/console dev/null bin/sh";

/// [`cached`] with the cache in `dir`.
pub fn cached_in(dir: &Path, busybox: &Path) -> Result<PathBuf, HarnessError> {
    let meta = fs::metadata(busybox)
        .map_err(HarnessError::io(format!("reading {}", busybox.display())))?;
    let mtime = meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_nanos());
    let key = cache_key(&[
        busybox.as_os_str().as_encoded_bytes(),
        &meta.len().to_le_bytes(),
        &mtime.to_le_bytes(),
        init_script().as_bytes(),
        ARCHIVE_LAYOUT,
    ]);
    let path = dir.join(format!("initramfs-{key:016x}.cpio"));
    if path.is_file() {
        return Ok(path);
    }
    fs::create_dir_all(dir).map_err(HarnessError::io(format!("creating {}", dir.display())))?;
    let tmp = dir.join(format!(
        ".tmp-{}-{}.cpio",
        std::process::id(),
        NEXT_TMP.fetch_add(1, Ordering::Relaxed)
    ));
    build(busybox, &tmp)?;
    fs::rename(&tmp, &path).map_err(HarnessError::io(format!(
        "renaming {} to {}",
        tmp.display(),
        path.display()
    )))?;
    Ok(path)
}

/// FNV-1a (64-bit) over the parts, each followed by its length: stable across
/// toolchains, unlike `DefaultHasher`, so the cache survives a compiler update.
fn cache_key(parts: &[&[u8]]) -> u64 {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let mut h = OFFSET;
    for part in parts {
        for &b in part.iter().chain(&(part.len() as u64).to_le_bytes()) {
            h ^= u64::from(b);
            h = h.wrapping_mul(PRIME);
        }
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One entry as read back.
    #[derive(Debug, PartialEq)]
    struct Entry {
        ino: u32,
        mode: u32,
        nlink: u32,
        rdev: (u32, u32),
        name: String,
        data: Vec<u8>,
        /// Offsets of the header and of the data, to check alignment.
        header_at: usize,
        data_at: usize,
    }

    fn align4(n: usize) -> usize {
        n.div_ceil(4) * 4
    }

    /// A strict newc reader: every rule the writer promises, or a panic.
    fn read(archive: &[u8]) -> Vec<Entry> {
        let mut entries = Vec::new();
        let mut at = 0;
        loop {
            assert_eq!(at % 4, 0, "header at {at} not aligned");
            let header = &archive[at..at + HEADER_LEN];
            assert_eq!(&header[..6], NEWC_MAGIC, "magic at {at}");
            let field = |i: usize| {
                let hex = std::str::from_utf8(&header[6 + 8 * i..6 + 8 * (i + 1)]).expect("ascii");
                assert!(
                    hex.bytes()
                        .all(|b| b.is_ascii_digit() || (b'A'..=b'F').contains(&b)),
                    "field {i} {hex:?}"
                );
                u32::from_str_radix(hex, 16).expect("hex")
            };
            let [
                ino,
                mode,
                uid,
                gid,
                nlink,
                mtime,
                size,
                maj,
                min,
                rmaj,
                rmin,
                namesize,
                check,
            ] = std::array::from_fn(field);
            assert_eq!((uid, gid, mtime, maj, min, check), (0, 0, 0, 0, 0, 0));
            let name_at = at + HEADER_LEN;
            let name_end = name_at + namesize as usize;
            assert_eq!(archive[name_end - 1], 0, "name not NUL-terminated");
            let name = std::str::from_utf8(&archive[name_at..name_end - 1])
                .expect("utf-8 name")
                .to_string();
            assert!(!name.contains('\0'));
            let data_at = align4(name_end);
            assert!(
                archive[name_end..data_at].iter().all(|&b| b == 0),
                "name padding"
            );
            let data_end = data_at + size as usize;
            let next = align4(data_end);
            assert!(
                archive[data_end..next].iter().all(|&b| b == 0),
                "data padding"
            );
            let done = name == TRAILER;
            entries.push(Entry {
                ino,
                mode,
                nlink,
                rdev: (rmaj, rmin),
                name,
                data: archive[data_at..data_end].to_vec(),
                header_at: at,
                data_at,
            });
            at = next;
            if done {
                assert_eq!(at, archive.len(), "bytes after the trailer");
                return entries;
            }
        }
    }

    #[test]
    fn the_archive_holds_what_init_needs() {
        let busybox = b"\x7fELF pretend busybox, 33 bytes.";
        let entries = read(&archive(busybox));
        let names: Vec<&str> = entries.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "bin",
                "dev",
                "proc",
                "sys",
                "sbin",
                "dev/console",
                "dev/null",
                "bin/busybox",
                "bin/sh",
                "init",
                TRAILER
            ]
        );
        let get = |n: &str| entries.iter().find(|e| e.name == n).expect(n);
        for d in ["bin", "dev", "proc", "sys", "sbin"] {
            assert_eq!((get(d).mode, get(d).nlink), (S_IFDIR | 0o755, 2), "{d}");
        }
        let console = get("dev/console");
        assert_eq!((console.mode, console.rdev), (S_IFCHR | 0o600, (5, 1)));
        assert!(console.data.is_empty());
        // Where the shell points a background job's stdin.
        let null = get("dev/null");
        assert_eq!((null.mode, null.rdev), (S_IFCHR | 0o666, (1, 3)));
        let bb = get("bin/busybox");
        assert_eq!(
            (bb.mode, bb.data.as_slice()),
            (S_IFREG | 0o755, &busybox[..])
        );
        let sh = get("bin/sh");
        assert_eq!(
            (sh.mode, sh.data.as_slice()),
            (S_IFLNK | 0o777, &b"busybox"[..])
        );
        let init = get("init");
        assert_eq!(init.mode, S_IFREG | 0o755);
        assert_eq!(init.data, init_script().as_bytes());
        let trailer = get(TRAILER);
        assert_eq!((trailer.ino, trailer.mode, trailer.data.len()), (0, 0, 0));
        let mut inos: Vec<u32> = entries[..entries.len() - 1].iter().map(|e| e.ino).collect();
        inos.dedup();
        assert_eq!(inos.len(), entries.len() - 1, "distinct inode numbers");
    }

    #[test]
    fn every_name_and_data_length_mod_4_pads_correctly() {
        // Names of 1..=8 bytes and data of 0..=8 bytes cover every padding case
        // (header 110 bytes: 110 + namesize is 0..3 mod 4).
        let mut w = CpioWriter::new();
        let mut want = Vec::new();
        for n in 1..=8usize {
            for d in 0..=8usize {
                let name = format!("{}{}", "n".repeat(n), d);
                let data = vec![0xa5u8; d];
                w.file(&name, 0o644, &data);
                want.push((name, data));
            }
        }
        let archive = w.finish();
        assert_eq!(archive.len() % 4, 0);
        let entries = read(&archive);
        assert_eq!(entries.len(), want.len() + 1);
        for (e, (name, data)) in entries.iter().zip(&want) {
            assert_eq!((&e.name, &e.data), (name, data));
            assert_eq!(e.data_at % 4, 0);
            assert!(e.data_at > e.header_at + HEADER_LEN + name.len());
            assert!(e.data_at < e.header_at + HEADER_LEN + name.len() + 1 + 4);
        }
    }

    #[test]
    fn the_header_layout_is_byte_exact() {
        let mut w = CpioWriter::new();
        w.symlink("/bin/sh", "busybox");
        let a = w.finish();
        let want = b"070701\
            00000001\
            0000A1FF\
            00000000\
            00000000\
            00000001\
            00000000\
            00000007\
            00000000\
            00000000\
            00000000\
            00000000\
            00000007\
            00000000\
            bin/sh\0";
        assert_eq!(
            &a[..want.len()],
            &want[..],
            "leading / dropped, fields in order"
        );
        // 110 + 7 = 117 -> padded to 120; then 7 bytes of data padded to 8.
        assert_eq!(&a[117..120], &[0, 0, 0]);
        assert_eq!(&a[120..127], b"busybox");
        assert_eq!(a[127], 0);
        assert_eq!(&a[128..134], NEWC_MAGIC);
    }

    #[test]
    fn init_prints_the_contract_and_powers_off() {
        let s = init_script();
        assert!(s.starts_with("#!/bin/sh\n"));
        assert!(s.contains("mount -t proc proc /proc\n"));
        assert!(s.contains("mount -t sysfs sysfs /sys\n"));
        assert!(s.contains(&format!("echo {MARKER}\n")));
        assert!(s.contains("uname -a\n"));
        assert!(s.contains("/sys/hypervisor/type"));
        assert!(s.contains(&format!("{HYPERVISOR_TYPE_PREFIX}<none>")));
        assert!(s.contains(&format!("head -n {CPUINFO_LINES} /proc/cpuinfo")));
        assert!(s.contains("poweroff -f\n"));
        let marker = s.find(MARKER).expect("marker");
        let poweroff = s.find("poweroff -f").expect("poweroff");
        assert!(marker < poweroff);
        // Only busybox applets by full path (there is no PATH set up), sh
        // builtins and keywords, shell variables and the script's `work`.
        for line in s.lines().filter(|l| !l.trim_start().starts_with('#')) {
            let first = line.split_whitespace().next().unwrap_or("");
            let assignment = first
                .split_once('=')
                .is_some_and(|(name, _)| name.chars().all(|c| c.is_ascii_lowercase()));
            assert!(
                assignment
                    || [
                        "", "/bin/busybox", "echo", "if", "else", "fi", "while", "wait", "work",
                        "work()", "}"
                    ]
                    .contains(&first),
                "{line:?}"
            );
        }
        // The SMP part: one pinned worker per CPU, then an unplug and replug.
        assert!(s.contains("taskset -c $1"));
        assert!(s.contains("/sys/devices/system/cpu/cpu$l/online"));
        assert!(s.find(SMP_PREFIX).expect("smp") < poweroff);
    }

    #[test]
    fn build_and_cache() {
        let dir = std::env::temp_dir().join(format!("keel-initramfs-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).expect("scratch dir");
        let bb = dir.join("busybox");
        fs::write(&bb, b"first").expect("busybox");
        let out = dir.join("out.cpio");
        build(&bb, &out).expect("built");
        let entries = read(&fs::read(&out).expect("read back"));
        let busybox = entries.iter().find(|e| e.name == "bin/busybox");
        assert_eq!(busybox.map(|e| e.data.as_slice()), Some(&b"first"[..]));
        let cache = dir.join("cache");
        let a = cached_in(&cache, &bb).expect("cached");
        let b = cached_in(&cache, &bb).expect("cached again");
        assert_eq!(a, b, "same busybox, same archive");
        fs::write(&bb, b"second, longer").expect("busybox changed");
        let c = cached_in(&cache, &bb).expect("rebuilt");
        assert_ne!(a, c, "a different busybox gets a different archive");
        let entries = read(&fs::read(&c).expect("read"));
        let busybox = entries.iter().find(|e| e.name == "bin/busybox");
        assert_eq!(
            busybox.map(|e| e.data.as_slice()),
            Some(&b"second, longer"[..])
        );
        let leftovers = fs::read_dir(&cache)
            .expect("cache")
            .filter(|e| {
                e.as_ref()
                    .is_ok_and(|e| e.file_name().to_string_lossy().starts_with(".tmp"))
            })
            .count();
        fs::remove_dir_all(&dir).expect("clean up");
        assert_eq!(leftovers, 0);
        assert!(build(&dir.join("missing"), &out).is_err());
    }

    #[test]
    fn cache_key_separates_parts() {
        assert_ne!(cache_key(&[b"ab", b"c"]), cache_key(&[b"a", b"bc"]));
        assert_eq!(cache_key(&[b"x"]), cache_key(&[b"x"]));
    }
}
