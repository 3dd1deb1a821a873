//! `cargo xtask bench`: keel side by side with Xen 4.17 (issue #6).
//!
//! # What
//!
//! Builds keel and the test guests (release), fetches Debian's Xen 4.17 into the
//! cache, then boots the guest `pvh64.elf mode=bench` as Dom0 on keel and on Xen
//! alternately, N times each, under the one QEMU command line of
//! [`keel_tests::bench::qemu_args`] (`-icount shift=0,sleep=off`, so the guest's TSC
//! deltas are instruction counts). Each run is two boots per hypervisor
//! ([`Cpus`]): one CPU for the metrics of one vCPU, then two CPUs with Dom0's two
//! vCPUs pinned apart and the guest's `vcpus=2` for the cross-CPU IPI. It prints a
//! progress line per boot on stderr, then on stdout an aligned Markdown table
//! (paste it into docs/performance.md as is), and writes everything
//! ([`keel_tests::bench::Results::json`]) to `target/bench/bench-<unix time>.json`
//! and `target/bench/latest.json`.
//!
//! # Invariants
//!
//! - Every run of a bench boots the same bytes: the images are copied once into a
//!   snapshot work directory (`bench-images-*`) before the first run, so a rebuild
//!   by someone else meanwhile cannot mix two keels into one table.
//! - A failed run ends the bench with an error naming the hypervisor, the line and
//!   the work directory (exit status 1); a spread above 1% across runs is reported
//!   loudly but is not a failure (exit status 0).
//!
//! # Locking
//!
//! None: work directories are per process ([`keel_tests::workdir`]); only work
//! directories of earlier benches whose process is gone are removed.

use std::path::{Path, PathBuf};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use elf::ElfBytes;
use elf::abi::PT_LOAD;
use elf::endian::AnyEndian;
use keel_tests::bench::{self, Cpus, Hypervisor, HypervisorInfo, ImageSize, Results};
use keel_tests::qemu::QEMU;
use keel_tests::workdir;

use crate::args::{BenchOpts, BuildOpts};
use crate::{Error, deps, guests, image};

/// Work-directory names of a bench's boots and snapshot start with this.
const WORK_PREFIX: &str = "bench-";

/// `target/bench`, where the JSON goes.
fn results_dir() -> PathBuf {
    keel_tests::workspace_root().join("target").join("bench")
}

/// For a work directory called `<name>-<pid>-<n>` ([`workdir::create`]), its pid.
fn work_dir_pid(dir_name: &str) -> Option<u32> {
    let mut parts = dir_name.rsplitn(3, '-');
    let _n: u32 = parts.next()?.parse().ok()?;
    let pid = parts.next()?.parse().ok()?;
    parts.next().filter(|name| !name.is_empty())?;
    Some(pid)
}

/// Removes the work directories of earlier benches whose process has ended.
fn remove_old_benches() {
    let Ok(entries) = std::fs::read_dir(workdir::work_root()) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .starts_with(WORK_PREFIX)
            .then(|| work_dir_pid(&name))
            .flatten()
        else {
            continue;
        };
        if pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists() {
            // Best effort: a leftover directory only costs disk space.
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// PT_LOAD sizes of the ELF at `path` (ELF32 or ELF64).
fn image_size(path: &Path) -> Result<ImageSize, Error> {
    let data =
        std::fs::read(path).map_err(|e| Error(format!("reading {}: {e}", path.display())))?;
    let file = ElfBytes::<AnyEndian>::minimal_parse(&data)
        .map_err(|e| Error(format!("{}: not an ELF file: {e}", path.display())))?;
    let segments = file
        .segments()
        .ok_or_else(|| Error(format!("{}: no program headers", path.display())))?;
    let (load_filesz, load_memsz) = segments
        .iter()
        .filter(|p| p.p_type == PT_LOAD)
        .fold((0u64, 0u64), |(f, m), p| {
            (f.saturating_add(p.p_filesz), m.saturating_add(p.p_memsz))
        });
    Ok(ImageSize {
        file_bytes: data.len() as u64,
        load_filesz,
        load_memsz,
    })
}

/// Installs what is missing and, with `build`, builds keel and the test guests
/// (release), saying so as `who`; returns keel's ELF and the bench guest's.
pub(crate) fn keel_and_guest(build: bool, who: &str) -> Result<(PathBuf, PathBuf), Error> {
    deps::ensure_installed()?;
    let (keel_elf, guests_dir) = if build {
        let release = BuildOpts { debug: false };
        eprintln!("{who}: building keel and the test guests (release)");
        (image::build(&release)?, guests::build(&release)?)
    } else {
        (
            keel_tests::try_keel_elf()?,
            keel_tests::guests::guests_dir(),
        )
    };
    let guest = guests_dir.join(keel_tests::guests::PVH64);
    if !guest.is_file() {
        return Err(Error(format!(
            "no bench guest at {} (build it: cargo xtask build)",
            guest.display()
        )));
    }
    Ok((keel_elf, guest))
}

/// Runs `cargo xtask bench`; returns the process exit status.
pub fn bench(opts: &BenchOpts) -> Result<u8, Error> {
    let (keel_elf, guest) = keel_and_guest(opts.build, "bench")?;

    eprintln!("bench: fetching Xen ({})", bench::XEN_PACKAGE);
    let xen = bench::fetch_xen()?;
    eprintln!(
        "bench: Xen: {} {}: {} ({})",
        xen.package,
        xen.version,
        xen.image.display(),
        if xen.cached {
            "cached"
        } else {
            "fetched and unpacked"
        }
    );

    remove_old_benches();
    let snap = workdir::create(&format!("{WORK_PREFIX}images"))?;
    let sources = [(Hypervisor::Keel, &keel_elf), (Hypervisor::Xen, &xen.image)];
    let mut kernels = Vec::new();
    for (hv, source) in sources {
        kernels.push((hv, bench::copy_into(&snap, source, hv.kernel_file())?));
    }
    let guest = bench::copy_into(&snap, &guest, bench::GUEST_FILE)?;
    eprintln!("bench: images snapshotted in {}", snap.display());

    let mut hypervisors = Vec::new();
    for ((hv, path), (_, source)) in kernels.iter().zip(sources) {
        let image = match image_size(path) {
            Ok(size) => Some(size),
            Err(e) => {
                eprintln!("bench: warning: no image size for {hv}: {e}");
                None
            }
        };
        let mut qemu_commands = Vec::new();
        for cpus in Cpus::ALL {
            let args = bench::qemu_args(*hv, cpus, &opts.guest_cmdline)?;
            qemu_commands.push((cpus, bench::shell_line(QEMU, &args)));
        }
        hypervisors.push(HypervisorInfo {
            hypervisor: *hv,
            image_path: source.clone(),
            image,
            package: (*hv == Hypervisor::Xen).then(|| (xen.package.clone(), xen.version.clone())),
            qemu_commands,
        });
    }
    for info in &hypervisors {
        for (cpus, command) in &info.qemu_commands {
            eprintln!("bench: {}, {cpus}: {command}", info.hypervisor);
        }
    }

    let unix_time = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let mut samples = Vec::new();
    let started = Instant::now();
    for i in 1..=opts.runs {
        for (hv, kernel) in &kernels {
            for cpus in Cpus::ALL {
                eprint!("bench: {hv} run {i}/{}, {cpus} ... ", opts.runs);
                let result = bench::boot(
                    *hv,
                    cpus,
                    kernel,
                    &guest,
                    &opts.guest_cmdline,
                    bench::RUN_TIMEOUT,
                )
                .and_then(|run| run.sample());
                match result {
                    Ok(sample) => {
                        eprintln!(
                            "{:.1} s (first guest line at {:.2} s)",
                            sample.elapsed.as_secs_f64(),
                            sample.first_line.as_secs_f64()
                        );
                        samples.push(sample);
                    }
                    Err(e) => {
                        eprintln!("failed");
                        return Err(e.into());
                    }
                }
            }
        }
    }
    eprintln!(
        "bench: {} boots in {:.0} s",
        samples.len(),
        started.elapsed().as_secs_f64()
    );

    let results = Results {
        unix_time,
        guest_cmdline: opts.guest_cmdline.clone(),
        hypervisors,
        samples,
    };
    let version = |hv| results.version(hv).unwrap_or("(version unknown)");
    println!();
    println!(
        "keel {} vs Xen {} ({} {}), QEMU TCG -icount shift=0,sleep=off: instructions, \
         median over {} run(s) of each run's median",
        version(Hypervisor::Keel),
        version(Hypervisor::Xen),
        xen.package,
        xen.version,
        opts.runs
    );
    println!();
    print!("{}", results.table());
    println!();
    println!(
        "net: the median less the same hypervisor's {} minimum on the same machine (the \
         two TSC reads around each operation; Xen traps RDTSC under TCG, keel does not). \
         `2 CPUs`: measured in a boot of its own with -smp 2 and Dom0's two vCPUs pinned \
         to pCPUs 0 and 1 ({}); {} is one round trip, both CPUs' instructions.",
        bench::RDTSC_OVERHEAD,
        Cpus::Two.hypervisor_args(),
        bench::IPI_METRIC
    );
    println!();

    let unstable = results.unstable();
    if !unstable.is_empty() {
        eprintln!(
            "bench: !!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!"
        );
        eprintln!(
            "bench: WARNING: instruction counts differ by more than {:.0}% across runs:",
            bench::SPREAD_LIMIT * 100.0
        );
        for u in &unstable {
            eprintln!(
                "bench:   {} {}: spread {:.2}% (per-run medians {:?})",
                u.hypervisor,
                u.metric,
                u.spread * 100.0,
                u.runs_median
            );
        }
        eprintln!(
            "bench: !!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!"
        );
    } else if opts.runs > 1 {
        eprintln!(
            "bench: every instruction metric reproduced within {:.0}% across the {} runs",
            bench::SPREAD_LIMIT * 100.0,
            opts.runs
        );
    }

    let json = results.json();
    let dir = results_dir();
    std::fs::create_dir_all(&dir).map_err(|e| Error(format!("creating {}: {e}", dir.display())))?;
    let latest = dir.join("latest.json");
    let previous = std::fs::read_to_string(&latest)
        .ok()
        .and_then(|text| serde_json::from_str::<serde_json::Value>(&text).ok());
    let text = serde_json::to_string_pretty(&json)
        .map_err(|e| Error(format!("encoding the results: {e}")))?;
    let file = dir.join(format!("bench-{unix_time}.json"));
    for path in [&file, &latest] {
        std::fs::write(path, format!("{text}\n"))
            .map_err(|e| Error(format!("writing {}: {e}", path.display())))?;
    }
    eprintln!(
        "bench: results in {} (and {})",
        file.display(),
        latest.display()
    );
    if let Some((hv, metric, change)) = previous.and_then(|p| bench::drift(&p, &json)) {
        eprintln!(
            "bench: largest change from the previous bench: {:.2}% ({hv} {metric})",
            change * 100.0
        );
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn work_dir_names_give_their_pid() {
        assert_eq!(work_dir_pid("bench-keel-1234-0"), Some(1234));
        assert_eq!(work_dir_pid("bench-images-77-12"), Some(77));
        assert_eq!(work_dir_pid("bench-keel-x-0"), None);
        assert_eq!(work_dir_pid("1234-0"), None);
        assert_eq!(work_dir_pid("-1234-0"), None);
    }

    #[test]
    fn image_size_of_an_elf() {
        let me = std::env::current_exe().expect("test binary path");
        let size = image_size(&me).expect("the test binary is an ELF");
        assert!(size.load_filesz > 0 && size.load_filesz <= size.file_bytes);
        assert!(size.load_memsz >= size.load_filesz);
        let not_elf = std::env::temp_dir().join(format!("keel-bench-{}", std::process::id()));
        std::fs::write(&not_elf, b"#!/bin/sh\n").expect("scratch file");
        assert!(image_size(&not_elf).is_err());
        std::fs::remove_file(&not_elf).expect("clean up");
    }
}
