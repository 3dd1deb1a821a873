//! The GRUB rescue ISO that boots keel the way real machines do (multiboot2).
//!
//! Layout inside the ISO: `/boot/keel.elf`, one `/boot/<name>` per module, and
//! `/boot/grub/grub.cfg`. The config is the one measured to work in
//! `shared/EMULATORS.md`: no menu delay, GRUB's own console on COM1 at 115200 (so a
//! GRUB error shows in the serial log), then `multiboot2` + `module2` + `boot`.
//! Each module's command line starts with its file name, the way Xen's tools and
//! GRUB users write them (`module2 /boot/vmlinuz vmlinuz root=...`).
//!
//! `grub-mkrescue` needs grub-pc-bin, grub-common, xorriso and mtools. Fonts, locales
//! and themes are left out: keel never shows a menu, and the ISO builds faster.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::HarnessError;

/// A multiboot module: a file and the command line GRUB (or QEMU) passes with it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Module {
    /// The file to load.
    pub path: PathBuf,
    /// Arguments after the module's own name (may be empty).
    pub args: String,
}

impl Module {
    /// A module with arguments.
    pub fn new(path: impl Into<PathBuf>, args: impl Into<String>) -> Module {
        Module {
            path: path.into(),
            args: args.into(),
        }
    }

    /// Parses the `FILE[=cmdline]` syntax of `cargo xtask run --module`.
    pub fn parse_spec(spec: &str) -> Module {
        match spec.split_once('=') {
            Some((path, args)) => Module::new(path, args),
            None => Module::new(spec, ""),
        }
    }
}

/// The names modules get inside the ISO (and in the work directory for QEMU's
/// `-initrd`): the file name made safe, numbered on collision.
pub fn module_names(modules: &[Module]) -> Vec<String> {
    let mut names: Vec<String> = Vec::with_capacity(modules.len());
    for (i, m) in modules.iter().enumerate() {
        let base = m
            .path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let mut name: String = base
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || "-_.".contains(c) {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        if name.is_empty() || name == "keel.elf" || name == "grub" || name.starts_with('.') {
            name = format!("module{i}");
        }
        if names.contains(&name) {
            name = format!("module{i}-{name}");
        }
        names.push(name);
    }
    names
}

fn check_one_line(context: &'static str, value: &str) -> Result<(), HarnessError> {
    if value.contains(['\n', '\r']) {
        return Err(HarnessError::Unrepresentable {
            context,
            value: value.to_string(),
        });
    }
    Ok(())
}

/// Renders `grub.cfg` for keel's command line and `(name in /boot, args)` modules.
///
/// Command lines are written verbatim (GRUB passes the words on unchanged as long as
/// they contain no quotes, `$` or `;`); a newline would start a new GRUB command and
/// is refused.
pub fn grub_cfg(cmdline: &str, modules: &[(String, String)]) -> Result<String, HarnessError> {
    check_one_line("keel's command line in grub.cfg", cmdline)?;
    let mut cfg = String::from(
        "set timeout=0\n\
         serial --unit=0 --speed=115200\n\
         terminal_output serial console\n\
         menuentry \"keel\" {\n",
    );
    let line = format!("    multiboot2 /boot/keel.elf {}", cmdline.trim());
    cfg.push_str(line.trim_end());
    cfg.push('\n');
    for (name, args) in modules {
        check_one_line("a module command line in grub.cfg", args)?;
        let line = format!("    module2 /boot/{name} {name} {}", args.trim());
        cfg.push_str(line.trim_end());
        cfg.push('\n');
    }
    cfg.push_str("    boot\n}\n");
    Ok(cfg)
}

/// Builds `<work_dir>/keel.iso` booting `elf` with `cmdline` and `modules`.
pub fn build_iso(
    work_dir: &Path,
    elf: &Path,
    cmdline: &str,
    modules: &[Module],
) -> Result<PathBuf, HarnessError> {
    let root = work_dir.join("iso");
    let boot = root.join("boot");
    let grub = boot.join("grub");
    std::fs::create_dir_all(&grub)
        .map_err(HarnessError::io(format!("creating {}", grub.display())))?;

    std::fs::copy(elf, boot.join("keel.elf")).map_err(HarnessError::io(format!(
        "copying {} into the ISO tree",
        elf.display()
    )))?;
    let names = module_names(modules);
    for (m, name) in modules.iter().zip(&names) {
        std::fs::copy(&m.path, boot.join(name)).map_err(HarnessError::io(format!(
            "copying module {} into the ISO tree",
            m.path.display()
        )))?;
    }
    let pairs: Vec<(String, String)> = names
        .into_iter()
        .zip(modules.iter().map(|m| m.args.clone()))
        .collect();
    let cfg = grub_cfg(cmdline, &pairs)?;
    let cfg_path = grub.join("grub.cfg");
    std::fs::write(&cfg_path, cfg)
        .map_err(HarnessError::io(format!("writing {}", cfg_path.display())))?;

    let iso = work_dir.join("keel.iso");
    let output = Command::new("grub-mkrescue")
        .args(["--fonts=", "--locales=", "--themes=", "-o"])
        .arg(&iso)
        .arg(&root)
        .output()
        .map_err(|source| HarnessError::Spawn {
            program: "grub-mkrescue".into(),
            package: "grub-common",
            source,
        })?;
    if !output.status.success() || !iso.is_file() {
        let mut text = String::from_utf8_lossy(&output.stdout).into_owned();
        text.push_str(&String::from_utf8_lossy(&output.stderr));
        return Err(HarnessError::GrubMkrescue {
            status: output.status,
            output: text,
        });
    }
    Ok(iso)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grub_cfg_without_modules() {
        let cfg = grub_cfg("console=com1 loglvl=all", &[]).expect("valid");
        assert_eq!(
            cfg,
            "set timeout=0\n\
             serial --unit=0 --speed=115200\n\
             terminal_output serial console\n\
             menuentry \"keel\" {\n    \
                 multiboot2 /boot/keel.elf console=com1 loglvl=all\n    \
                 boot\n\
             }\n"
        );
    }

    #[test]
    fn grub_cfg_with_modules_names_each_module_first() {
        let mods = vec![
            (
                "vmlinuz".to_string(),
                "root=/dev/xvda1 console=hvc0".to_string(),
            ),
            ("initrd.img".to_string(), String::new()),
        ];
        let cfg = grub_cfg("", &mods).expect("valid");
        assert!(cfg.contains("    multiboot2 /boot/keel.elf\n"), "{cfg}");
        assert!(
            cfg.contains("    module2 /boot/vmlinuz vmlinuz root=/dev/xvda1 console=hvc0\n"),
            "{cfg}"
        );
        assert!(
            cfg.contains("    module2 /boot/initrd.img initrd.img\n    boot\n}\n"),
            "{cfg}"
        );
    }

    #[test]
    fn grub_cfg_refuses_newlines() {
        assert!(grub_cfg("a\nreboot", &[]).is_err());
        assert!(grub_cfg("a", &[("m".into(), "x\ny".into())]).is_err());
    }

    #[test]
    fn module_names_are_safe_and_unique() {
        let mods = vec![
            Module::new("/tmp/a/dom0.elf", ""),
            Module::new("/tmp/b/dom0.elf", ""),
            Module::new("/tmp/weird name!", ""),
            Module::new("/tmp/keel.elf", ""),
        ];
        assert_eq!(
            module_names(&mods),
            ["dom0.elf", "module1-dom0.elf", "weird_name_", "module3"]
        );
    }

    #[test]
    fn module_spec_parsing() {
        assert_eq!(Module::parse_spec("k.elf"), Module::new("k.elf", ""));
        assert_eq!(
            Module::parse_spec("k.elf=console=hvc0 quiet"),
            Module::new("k.elf", "console=hvc0 quiet")
        );
    }
}
