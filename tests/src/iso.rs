//! The GRUB rescue ISO that boots keel the way real machines do (multiboot2).
//!
//! Layout inside the ISO: `/boot/keel.elf`, one `/boot/<file>` per distinct module
//! file (a file used by several modules is copied once), and `/boot/grub/grub.cfg`.
//! The config is the one measured to work in `shared/EMULATORS.md`: no menu delay,
//! GRUB's own console on COM1 at 115200 (so a GRUB error shows in the serial log),
//! then `multiboot2` + `module2` + `boot`.
//! Each module's command line starts with its name, the way Xen's tools and GRUB
//! users write them (`module2 /boot/vmlinuz vmlinuz root=...`): its file name unless
//! it was given one ([`Module::named`]). keel finds modules by that name: a module
//! named `*.cfg` is an xl.cfg domU description whose `kernel`/`ramdisk` name other
//! modules, so names are kept exactly (suffix included) and [`layout`] documents how
//! collisions are resolved.
//!
//! `grub-mkrescue` needs grub-pc-bin, grub-common, xorriso and mtools. Fonts, locales
//! and themes are left out: keel never shows a menu, and the ISO builds faster.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::HarnessError;

/// A multiboot module: a file, the name keel knows it by, and the command line GRUB
/// (or QEMU) passes with it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Module {
    /// The file to load.
    pub path: PathBuf,
    /// The module's name, the first word of its module string; `None` names it
    /// after its file (see [`layout`]).
    pub name: Option<String>,
    /// Arguments after the module's own name (may be empty).
    pub args: String,
}

impl Module {
    /// A module named after its file, with arguments.
    pub fn new(path: impl Into<PathBuf>, args: impl Into<String>) -> Module {
        Module {
            path: path.into(),
            name: None,
            args: args.into(),
        }
    }

    /// A module with its own name (checked by [`check_module_name`] when the boot
    /// is laid out), whatever its file is called.
    pub fn named(
        path: impl Into<PathBuf>,
        name: impl Into<String>,
        args: impl Into<String>,
    ) -> Module {
        Module {
            path: path.into(),
            name: Some(name.into()),
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

/// Names no module may have: the files the harness itself puts beside the modules,
/// in `/boot` of the ISO or in the work directory of a QEMU `-kernel` boot.
pub const RESERVED_NAMES: &[&str] = &[
    "keel.elf",
    "grub",
    "keel.iso",
    "iso",
    "domu",
    "serial.log",
    "emulator.out",
    "command.txt",
    "bochsrc",
    "bochs.rc",
    "bochs.log",
];

/// `name` with every character but ASCII letters, digits, `-`, `_` and `.`
/// replaced by `_`.
pub fn sanitize_name(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_.".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// Whether `name` can be a module's name: non-empty, only ASCII letters, digits,
/// `-`, `_` and `.`, not starting with `.`, and not one of [`RESERVED_NAMES`].
/// Such a name is one word in `grub.cfg` and in QEMU's `-initrd` list, and a plain
/// file name in `/boot` or the work directory.
pub fn is_valid_module_name(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with('.')
        && sanitize_name(name) == name
        && !RESERVED_NAMES.contains(&name)
}

/// Refuses a name [`is_valid_module_name`] rejects.
pub fn check_module_name(name: &str) -> Result<(), HarnessError> {
    if is_valid_module_name(name) {
        Ok(())
    } else {
        Err(HarnessError::Unrepresentable {
            context: "a module name (ASCII letters, digits, '-', '_', '.'; not starting \
                      with '.'; not a file name the harness uses)",
            value: name.to_string(),
        })
    }
}

/// One `module2` line: which file in `/boot`, the module's name, its arguments.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ModuleLine {
    /// The file's name in `/boot`.
    pub file: String,
    /// The module's name: the first word of its module string.
    pub name: String,
    /// The rest of its module string.
    pub args: String,
}

/// Where the modules' files go and the lines that load them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Layout {
    /// `(source, file name in /boot)`: one entry per distinct file, in first-use
    /// order.
    pub files: Vec<(PathBuf, String)>,
    /// One line per module, in module order.
    pub lines: Vec<ModuleLine>,
}

/// What identifies a file: its canonical path, or the path as given when it cannot
/// be resolved (copying it will then report the error).
fn file_key(path: &Path) -> PathBuf {
    std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf())
}

/// The name a module without one gets from its file, before collisions: the file
/// name made safe.
fn name_from_file(index: usize, path: &Path) -> String {
    let base = path
        .file_name()
        .map(|n| sanitize_name(&n.to_string_lossy()))
        .unwrap_or_default();
    if base.is_empty() || base.starts_with('.') {
        // Keep the suffix (`.cfg` matters to keel) behind a visible stem.
        format!("module{index}{base}")
    } else {
        base
    }
}

/// Lays the modules out: each distinct file (by canonical path) is copied once,
/// and every module gets its own `module2` line.
///
/// A file's name in `/boot` is the explicit name of the first module using it, or
/// else its own file name made safe; two different files never share one (a later
/// one becomes `module<i>-<name>`). A module without an explicit name is named
/// after its file in `/boot`, and such names never collide with explicit ones: so
/// two different files called `vmlinuz` get two names, while one file added twice
/// without names gets the same name twice (give one of them a name with
/// [`Module::named`] to tell them apart). Explicit names are used as given, even
/// twice.
pub fn layout(modules: &[Module]) -> Result<Layout, HarnessError> {
    let mut explicit: HashSet<&str> = HashSet::new();
    for m in modules {
        if let Some(name) = &m.name {
            check_module_name(name)?;
            explicit.insert(name);
        }
    }
    let mut keys: Vec<PathBuf> = Vec::new();
    let mut files: Vec<(PathBuf, String)> = Vec::new();
    let mut lines = Vec::with_capacity(modules.len());
    for (i, m) in modules.iter().enumerate() {
        let key = file_key(&m.path);
        let file = match keys.iter().position(|k| *k == key) {
            Some(at) => files[at].1.clone(),
            None => {
                let base = m.name.clone().unwrap_or_else(|| name_from_file(i, &m.path));
                let taken = |c: &str| {
                    files.iter().any(|(_, f)| f == c)
                        || RESERVED_NAMES.contains(&c)
                        || (m.name.is_none() && explicit.contains(c))
                };
                let mut candidate = base.clone();
                let mut k = 1;
                while taken(&candidate) {
                    candidate = if k == 1 {
                        format!("module{i}-{base}")
                    } else {
                        format!("module{i}-{k}-{base}")
                    };
                    k += 1;
                }
                keys.push(key);
                files.push((m.path.clone(), candidate.clone()));
                candidate
            }
        };
        lines.push(ModuleLine {
            name: m.name.clone().unwrap_or_else(|| file.clone()),
            file,
            args: m.args.clone(),
        });
    }
    Ok(Layout { files, lines })
}

/// The names the modules get (the first word of each module string); see
/// [`layout`].
pub fn module_names(modules: &[Module]) -> Result<Vec<String>, HarnessError> {
    Ok(layout(modules)?.lines.into_iter().map(|l| l.name).collect())
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

/// Renders `grub.cfg` for keel's command line and one `module2` line per module.
///
/// Command lines are written verbatim (GRUB passes the words on unchanged as long as
/// they contain no quotes, `$` or `;`); a newline would start a new GRUB command and
/// is refused.
pub fn grub_cfg(cmdline: &str, modules: &[ModuleLine]) -> Result<String, HarnessError> {
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
    for m in modules {
        check_one_line("a module command line in grub.cfg", &m.args)?;
        let line = format!("    module2 /boot/{} {} {}", m.file, m.name, m.args.trim());
        cfg.push_str(line.trim_end());
        cfg.push('\n');
    }
    cfg.push_str("    boot\n}\n");
    Ok(cfg)
}

/// Builds `<work_dir>/keel.iso` booting `elf` with `cmdline` and `modules` (laid
/// out by [`layout`]: one copy of each file, one `module2` line per module).
pub fn build_iso(
    work_dir: &Path,
    elf: &Path,
    cmdline: &str,
    modules: &[Module],
) -> Result<PathBuf, HarnessError> {
    let layout = layout(modules)?;
    let root = work_dir.join("iso");
    let boot = root.join("boot");
    let grub = boot.join("grub");
    std::fs::create_dir_all(&grub)
        .map_err(HarnessError::io(format!("creating {}", grub.display())))?;

    std::fs::copy(elf, boot.join("keel.elf")).map_err(HarnessError::io(format!(
        "copying {} into the ISO tree",
        elf.display()
    )))?;
    for (source, file) in &layout.files {
        std::fs::copy(source, boot.join(file)).map_err(HarnessError::io(format!(
            "copying module {} into the ISO tree",
            source.display()
        )))?;
    }
    let cfg = grub_cfg(cmdline, &layout.lines)?;
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

    fn line(file: &str, name: &str, args: &str) -> ModuleLine {
        ModuleLine {
            file: file.into(),
            name: name.into(),
            args: args.into(),
        }
    }

    /// A scratch directory of this test process (removed by the caller).
    fn scratch(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("keel-iso-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("scratch dir");
        dir
    }

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
            line("vmlinuz", "vmlinuz", "root=/dev/xvda1 console=hvc0"),
            line("initrd.img", "initrd.img", ""),
            line("pvh64.elf", "d1-pvh64.elf", ""),
        ];
        let cfg = grub_cfg("", &mods).expect("valid");
        assert!(cfg.contains("    multiboot2 /boot/keel.elf\n"), "{cfg}");
        assert!(
            cfg.contains("    module2 /boot/vmlinuz vmlinuz root=/dev/xvda1 console=hvc0\n"),
            "{cfg}"
        );
        assert!(
            cfg.contains("    module2 /boot/initrd.img initrd.img\n"),
            "{cfg}"
        );
        assert!(
            cfg.contains("    module2 /boot/pvh64.elf d1-pvh64.elf\n    boot\n}\n"),
            "{cfg}"
        );
    }

    #[test]
    fn grub_cfg_refuses_newlines() {
        assert!(grub_cfg("a\nreboot", &[]).is_err());
        assert!(grub_cfg("a", &[line("m", "m", "x\ny")]).is_err());
    }

    #[test]
    fn module_names_are_safe_and_unique_per_file() {
        let mods = vec![
            Module::new("/nonexistent/a/dom0.elf", ""),
            Module::new("/nonexistent/b/dom0.elf", ""),
            Module::new("/nonexistent/weird name!", ""),
            Module::new("/nonexistent/keel.elf", ""),
            Module::new("/nonexistent/.hidden.cfg", ""),
            Module::new("/", ""),
        ];
        assert_eq!(
            module_names(&mods).expect("valid"),
            [
                "dom0.elf",
                "module1-dom0.elf",
                "weird_name_",
                "module3-keel.elf",
                "module4.hidden.cfg",
                "module5"
            ]
        );
    }

    #[test]
    fn one_file_twice_is_one_copy_and_two_lines() {
        let dir = scratch("twice");
        let kernel = dir.join("pvh64.elf");
        std::fs::write(&kernel, b"kernel").expect("write");
        // The same file through a different spelling of its path.
        let other_spelling = dir.join(".").join("pvh64.elf");
        let mods = vec![
            Module::new(&kernel, "mode=probe"),
            Module::new(&other_spelling, ""),
            Module::named(&kernel, "d1-kernel.elf", ""),
        ];
        let l = layout(&mods).expect("valid");
        assert_eq!(l.files, [(kernel.clone(), "pvh64.elf".to_string())]);
        assert_eq!(
            l.lines,
            [
                line("pvh64.elf", "pvh64.elf", "mode=probe"),
                line("pvh64.elf", "pvh64.elf", ""),
                line("pvh64.elf", "d1-kernel.elf", ""),
            ]
        );
        std::fs::remove_dir_all(&dir).expect("clean up");
    }

    #[test]
    fn explicit_names_name_the_file_and_are_never_taken_by_derived_ones() {
        let mods = vec![
            Module::new("/nonexistent/a/k.elf", ""),
            Module::named("/nonexistent/b/x.elf", "k.elf", ""),
            Module::named("/nonexistent/c/guest.cfg", "guest.cfg", ""),
            Module::new("/nonexistent/d/guest.cfg", ""),
        ];
        let l = layout(&mods).expect("valid");
        assert_eq!(
            l.lines,
            [
                line("module0-k.elf", "module0-k.elf", ""),
                line("k.elf", "k.elf", ""),
                line("guest.cfg", "guest.cfg", ""),
                line("module3-guest.cfg", "module3-guest.cfg", ""),
            ]
        );
        // Two different files may be given one name on purpose (a bad-input test):
        // each keeps its own copy.
        let twins = vec![
            Module::named("/nonexistent/a", "same", ""),
            Module::named("/nonexistent/b", "same", ""),
        ];
        let l = layout(&twins).expect("valid");
        assert_eq!(
            l.files.iter().map(|(_, f)| f.as_str()).collect::<Vec<_>>(),
            ["same", "module1-same"]
        );
        assert_eq!(module_names(&twins).expect("valid"), ["same", "same"]);
    }

    #[test]
    fn bad_explicit_names_are_refused() {
        for bad in ["", ".cfg", "a b", "a/b", "grub", "serial.log", "x\ny", "k$"] {
            assert!(!is_valid_module_name(bad), "{bad:?}");
            let err = layout(&[Module::named("/nonexistent", bad, "")]).expect_err(bad);
            assert!(matches!(err, HarnessError::Unrepresentable { .. }), "{err}");
        }
        for good in ["d1.cfg", "vmlinuz-6.1.0-13-amd64", "initrd.img", "a_b"] {
            assert!(is_valid_module_name(good), "{good:?}");
        }
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
