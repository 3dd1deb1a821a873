//! QEMU's command line for keel.
//!
//! TCG only (`-accel tcg`): the build machines have no usable KVM, and TCG is what
//! emulates SVM (`-cpu max` = AMD vendor with SVM and NPT). No display, no monitor,
//! no reboot (a triple fault ends the run instead of looping), serial to a file (read
//! after exit, so nothing is lost when the run is killed), and `isa-debug-exit` at
//! 0xf4 so keel can report failure through QEMU's exit status.
//!
//! Two ways in: the GRUB ISO (multiboot2, like real machines) or `-kernel` (QEMU's own
//! multiboot v1 loader, which copies the file linearly per the a.out-kludge header;
//! modules go in `-initrd "file args,file2 args"`). Paths are relative to the work
//! directory QEMU runs in, which keeps QEMU's comma-separated option syntax safe.

use std::ffi::OsString;
use std::path::Path;

use crate::HarnessError;

/// The QEMU binary.
pub const QEMU: &str = "qemu-system-x86_64";

/// How QEMU gets keel into memory.
#[derive(Clone, Debug)]
pub enum QemuBoot<'a> {
    /// Boot GRUB from this ISO (relative to the work directory).
    Iso(&'a str),
    /// QEMU's multiboot v1 loader.
    Direct {
        /// keel's ELF.
        elf: &'a Path,
        /// keel's command line (`-append`).
        cmdline: &'a str,
        /// `(file relative to the work directory, args)` per module.
        modules: &'a [(String, String)],
    },
}

/// The `-initrd` value for `modules`: `"file args,file2 args"`.
///
/// QEMU splits the list at commas, so a comma anywhere is refused.
pub fn initrd_arg(modules: &[(String, String)]) -> Result<Option<String>, HarnessError> {
    if modules.is_empty() {
        return Ok(None);
    }
    let mut parts = Vec::with_capacity(modules.len());
    for (file, args) in modules {
        let part = if args.trim().is_empty() {
            file.clone()
        } else {
            format!("{file} {}", args.trim())
        };
        if part.contains(',') {
            return Err(HarnessError::Unrepresentable {
                context: "QEMU's comma-separated -initrd list",
                value: part,
            });
        }
        parts.push(part);
    }
    Ok(Some(parts.join(",")))
}

/// Arguments for `qemu-system-x86_64` (not including the program name), for a
/// machine with `cpus` CPUs: with more than one, TCG runs each on its own host
/// thread (`thread=multi`), so the CPUs really run at once.
pub fn qemu_args(
    boot: &QemuBoot<'_>,
    serial_file: &str,
    cpus: u32,
    cpu_model: &str,
) -> Result<Vec<OsString>, HarnessError> {
    let accel = if cpus > 1 { "tcg,thread=multi" } else { "tcg" };
    let smp = cpus.max(1).to_string();
    let mut args: Vec<OsString> = [
        "-accel",
        accel,
        "-cpu",
        cpu_model,
        "-smp",
        &smp,
        "-m",
        "512M",
        "-display",
        "none",
        "-monitor",
        "none",
        "-no-reboot",
        "-device",
        "isa-debug-exit,iobase=0xf4,iosize=0x04",
        "-serial",
    ]
    .iter()
    .map(OsString::from)
    .collect();
    args.push(format!("file:{serial_file}").into());
    match boot {
        QemuBoot::Iso(iso) => {
            args.extend(["-cdrom", iso, "-boot", "d"].map(OsString::from));
        }
        QemuBoot::Direct {
            elf,
            cmdline,
            modules,
        } => {
            args.push("-kernel".into());
            args.push(elf.as_os_str().to_owned());
            args.push("-append".into());
            args.push(cmdline.into());
            if let Some(initrd) = initrd_arg(modules)? {
                args.push("-initrd".into());
                args.push(initrd.into());
            }
        }
    }
    Ok(args)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(args: Vec<OsString>) -> Vec<String> {
        args.into_iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect()
    }

    #[test]
    fn iso_boot_arguments() {
        let args = strings(qemu_args(&QemuBoot::Iso("keel.iso"), "serial.log", 1, "max").expect("ok"));
        let line = args.join(" ");
        assert!(line.starts_with(
            "-accel tcg -cpu max -smp 1 -m 512M -display none -monitor none -no-reboot"
        ));
        assert!(line.contains("-device isa-debug-exit,iobase=0xf4,iosize=0x04"));
        assert!(line.contains("-serial file:serial.log"));
        assert!(line.ends_with("-cdrom keel.iso -boot d"));
    }

    #[test]
    fn direct_boot_arguments() {
        let mods = vec![
            ("junk.bin".to_string(), "dom0 x=1".to_string()),
            ("b".to_string(), String::new()),
        ];
        let boot = QemuBoot::Direct {
            elf: Path::new("/w/keel.elf"),
            cmdline: "console=com1 loglvl=all",
            modules: &mods,
        };
        let args = strings(qemu_args(&boot, "serial.log", 4, "max").expect("ok"));
        assert!(
            args.join(" ")
                .starts_with("-accel tcg,thread=multi -cpu max -smp 4 -m 512M")
        );
        let tail: Vec<&str> = args
            .iter()
            .rev()
            .take(6)
            .rev()
            .map(String::as_str)
            .collect();
        assert_eq!(
            tail,
            [
                "-kernel",
                "/w/keel.elf",
                "-append",
                "console=com1 loglvl=all",
                "-initrd",
                "junk.bin dom0 x=1,b"
            ]
        );
    }

    #[test]
    fn no_initrd_without_modules_and_no_commas() {
        assert_eq!(initrd_arg(&[]).expect("ok"), None);
        assert!(initrd_arg(&[("m".into(), "a,b".into())]).is_err());
    }
}
