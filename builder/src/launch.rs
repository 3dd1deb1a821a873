//! The launch plan: which domains keel builds at boot, from the modules the boot
//! loader gave it.
//!
//! # Rules
//!
//! Each module has a string (GRUB: `module2 FILE ARGS...`); its *name* is the first
//! word, its *command line* the rest.
//!
//! 1. A module whose name ends in `.cfg` is a domU configuration: its bytes are an
//!    xl.cfg file ([`crate::xlcfg`]; trailing NUL bytes are ignored).
//! 2. A configuration's `kernel = "X"` and `ramdisk = "Y"` name other modules: the
//!    module whose name is exactly X, else the one whose name's last path component
//!    (after the last `/`) equals X's. Two modules matching equally well is an error
//!    (give the full name; neither goes to Dom0); so is naming no module, or a
//!    configuration. Each module named belongs to the domUs that name it (several
//!    may share one kernel: each gets its own copy) and never to Dom0; naming the
//!    same module as both kernel and ramdisk is an error.
//! 3. Dom0 is the first module that is neither a configuration nor named by one; the
//!    other such modules are Dom0's modules, in order (e.g. its initrd). With no such
//!    module there is no Dom0, which is allowed when at least one configuration is
//!    given.
//! 4. domU ids are 1, 2, ... in the module order of their configurations; a
//!    configuration that is refused keeps its id, so the others' ids do not depend
//!    on it. A domU's name must be unique (a later duplicate is refused) and may not
//!    be `Domain-0`.
//! 5. A domU's command line is its configuration's `cmdline` (or `root`/`extra`),
//!    followed by the kernel module's own command line, if any.
//!
//! A configuration that is refused (unreadable, malformed, or breaking a rule above)
//! is reported in [`Plan::domus`] and does not stop the others: the kernel says why
//! and boots the rest. The modules it names still belong to it (they are not given
//! to Dom0) whenever its syntax can be read, even if its settings are refused.
//!
//! One hazard remains: a configuration whose bytes are missing or whose syntax is
//! broken names modules keel cannot know. They would otherwise fall to Dom0, and
//! becoming *Dom0's kernel* would run a domU's kernel with Dom0's privileges. So no
//! module after such a configuration becomes Dom0's kernel (there is then no Dom0,
//! with a warning); modules after it can still become Dom0's modules, with a warning
//! each.
//!
//! # Invariants
//!
//! - Every module index in a [`Plan`] is below `modules.len()`; no module is both
//!   Dom0's (kernel or module) and a domU's; domUs may share kernels and ramdisks.
//! - Nothing here panics on any module strings or bytes (property-tested).
//!
//! # Locking
//!
//! None: a pure function, run once at boot.

extern crate alloc;

use alloc::collections::{BTreeMap, BTreeSet};
use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;

use keel_hypercall::abi::domid::DOMID_FIRST_RESERVED;

use crate::xlcfg::{self, Config, Value};

/// A boot module as the loader gave it.
#[derive(Clone, Copy, Debug)]
pub struct ModuleInfo<'a> {
    /// The module's string: its name, then its command line.
    pub string: &'a str,
    /// Its contents; `None` if keel cannot read them (only configurations are read).
    pub bytes: Option<&'a [u8]>,
}

impl<'a> ModuleInfo<'a> {
    /// The first word of the string.
    pub fn name(&self) -> &'a str {
        self.string.split_whitespace().next().unwrap_or("")
    }

    /// The string less its first word.
    pub fn cmdline(&self) -> &'a str {
        crate::cmdline::skip_first_word(self.string)
    }

    fn is_config(&self) -> bool {
        self.name().ends_with(".cfg")
    }
}

/// What keel builds at boot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    pub dom0: Option<Dom0Plan>,
    /// One entry per configuration module, in module order.
    pub domus: Vec<Result<DomUPlan, LaunchError>>,
    /// Remarks for the console (unknown keys, unused modules, ...).
    pub warnings: Vec<String>,
}

/// Dom0: its kernel module and its other modules, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Dom0Plan {
    pub kernel: usize,
    pub modules: Vec<usize>,
}

/// A domU to build.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DomUPlan {
    pub id: u16,
    pub config_module: usize,
    pub config: Config,
    pub kernel: usize,
    pub ramdisk: Option<usize>,
    /// The guest's command line (rule 5).
    pub cmdline: String,
}

/// Why a plan, or one domU in it, cannot be made. The variant's doc is the message.
#[derive(Clone, Debug, PartialEq, Eq, displaydoc::Display)]
pub enum LaunchError {
    /// no boot modules: keel needs a Dom0 kernel or a domU configuration (NAME.cfg)
    NoModules,
    /// module {index} ({name}): its contents are not readable
    Unreadable { index: usize, name: String },
    /// module {index} ({name}): {error}
    Config {
        index: usize,
        name: String,
        error: xlcfg::Error,
    },
    /// module {index} ({name}): {key} = "{wanted}" names no boot module
    Missing {
        index: usize,
        name: String,
        key: &'static str,
        wanted: String,
    },
    /// module {index} ({name}): {key} = "{wanted}" names module {module}, which is a configuration
    NamesConfig {
        index: usize,
        name: String,
        key: &'static str,
        wanted: String,
        module: usize,
    },
    /// module {index} ({name}): {key} = "{wanted}" matches modules {first} and {second}; give the module's full name
    Ambiguous {
        index: usize,
        name: String,
        key: &'static str,
        wanted: String,
        first: usize,
        second: usize,
    },
    /// module {index} ({name}): kernel and ramdisk are the same module ({module})
    SameModule {
        index: usize,
        name: String,
        module: usize,
    },
    /// module {index} ({name}): domain name "{domain}" is already used by module {first}
    DuplicateName {
        index: usize,
        name: String,
        domain: String,
        first: usize,
    },
    /// module {index} ({name}): domain name "Domain-0" is Dom0's
    ReservedName { index: usize, name: String },
    /// module {index} ({name}): too many domUs (domain id {id} would be reserved)
    TooMany { index: usize, name: String, id: u32 },
}

/// The name xl gives Dom0.
pub const DOM0_NAME: &str = "Domain-0";

/// What pass 1 learnt about one configuration module.
struct ConfigModule {
    index: usize,
    id: u32,
    /// `Err` if unreadable or malformed: it names nothing keel can know.
    parsed: Result<Parsed, LaunchError>,
}

struct Parsed {
    /// The settings' verdict.
    config: Result<Config, xlcfg::Error>,
    /// `kernel` and `ramdisk`, resolved to modules (`None` if not given).
    kernel: Option<Result<usize, LaunchError>>,
    ramdisk: Option<Result<usize, LaunchError>>,
    /// Every non-configuration module `kernel` or `ramdisk` matches, even
    /// ambiguously: none of them may become Dom0's.
    named: Vec<usize>,
}

/// Decides what to build from the boot modules (see the module documentation).
/// `Err` only when there is nothing at all; each domU's own problems are in
/// [`Plan::domus`].
pub fn plan(modules: &[ModuleInfo<'_>]) -> Result<Plan, LaunchError> {
    if modules.is_empty() {
        return Err(LaunchError::NoModules);
    }
    let mut warnings = Vec::new();

    // Pass 1: read every configuration and find the modules it names.
    let mut configs = Vec::new();
    for (index, _) in modules.iter().enumerate().filter(|(_, m)| m.is_config()) {
        let id = u32::try_from(configs.len()).map_or(u32::MAX, |n| n.saturating_add(1));
        configs.push(ConfigModule {
            index,
            id,
            parsed: read_config(modules, index),
        });
    }

    // Every module a readable configuration names belongs to the first one naming it.
    let mut owner: BTreeMap<usize, usize> = BTreeMap::new();
    for c in &configs {
        if let Ok(p) = &c.parsed {
            for &m in &p.named {
                owner.entry(m).or_insert(c.index);
            }
        }
    }

    // Pass 2: each configuration's verdict.
    let mut names: BTreeMap<String, usize> = BTreeMap::new();
    let mut domus = Vec::new();
    for c in configs.iter() {
        let name = modules[c.index].name().to_string();
        let verdict = decide(modules, c, &mut names);
        if let Ok(d) = &verdict {
            for w in &d.config.warnings {
                warnings.push(format!("module {} ({name}): {w}", c.index));
            }
        }
        domus.push(verdict);
    }

    // Dom0: the first module that is neither a configuration nor named by one, as
    // long as no unreadable configuration comes before it.
    let blind_from = configs
        .iter()
        .find(|c| c.parsed.is_err())
        .map_or(usize::MAX, |c| c.index);
    let mut free =
        (0..modules.len()).filter(|&i| !modules[i].is_config() && !owner.contains_key(&i));
    let dom0 = match free.next() {
        Some(kernel) if kernel < blind_from => Some(Dom0Plan {
            kernel,
            modules: free.collect(),
        }),
        Some(kernel) => {
            warnings.push(format!(
                "module {kernel} ({}) is not made Dom0's kernel: it comes after module \
                 {blind_from} ({}), a configuration keel could not read, which may name it",
                modules[kernel].name(),
                modules[blind_from].name()
            ));
            for i in core::iter::once(kernel).chain(free) {
                warnings.push(format!("module {i} ({}) is not used", modules[i].name()));
            }
            None
        }
        None => None,
    };
    if let Some(d) = &dom0 {
        for &i in d.modules.iter().filter(|&&i| i > blind_from) {
            warnings.push(format!(
                "module {i} ({}) is given to Dom0, but module {blind_from} ({}), a \
                 configuration keel could not read, may have named it",
                modules[i].name(),
                modules[blind_from].name()
            ));
        }
    }
    // Modules owned by a refused configuration are not used.
    let built: BTreeSet<usize> = domus
        .iter()
        .flatten()
        .flat_map(|d| [Some(d.kernel), d.ramdisk])
        .flatten()
        .collect();
    for (&m, &o) in &owner {
        if !built.contains(&m) {
            warnings.push(format!(
                "module {m} ({}) is not used: the configuration in module {o} ({}) that names it was refused",
                modules[m].name(),
                modules[o].name()
            ));
        }
    }

    Ok(Plan {
        dom0,
        domus,
        warnings,
    })
}

/// Pass 1 for the configuration in module `index`.
fn read_config(modules: &[ModuleInfo<'_>], index: usize) -> Result<Parsed, LaunchError> {
    let m = &modules[index];
    let name = || m.name().to_string();
    let bytes = m.bytes.ok_or_else(|| LaunchError::Unreadable {
        index,
        name: name(),
    })?;
    let end = bytes.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
    let bytes = &bytes[..end];
    let settings = xlcfg::parse_settings(bytes).map_err(|error| LaunchError::Config {
        index,
        name: name(),
        error,
    })?;
    let mut named = Vec::new();
    let mut resolve = |key: &'static str| {
        let s = settings.get(key)?;
        Some(match &s.value {
            Value::Str(w) | Value::Num(w) => {
                let candidates = matching_modules(modules, index, w);
                named.extend(candidates.iter().filter(|&&i| !modules[i].is_config()));
                pick_module(modules, index, key, w, &candidates)
            }
            // Config::parse reports it.
            Value::List(_) => Err(LaunchError::Config {
                index,
                name: name(),
                error: xlcfg::Error {
                    line: s.line,
                    kind: xlcfg::ErrorKind::NotAString(key),
                },
            }),
        })
    };
    let kernel = resolve("kernel");
    let ramdisk = resolve("ramdisk");
    Ok(Parsed {
        kernel,
        ramdisk,
        named,
        config: Config::parse(bytes),
    })
}

/// The modules (other than `index`) a configuration's `wanted` matches (rule 2):
/// those named exactly `wanted`, else those with its last path component.
fn matching_modules(modules: &[ModuleInfo<'_>], index: usize, wanted: &str) -> Vec<usize> {
    let base = |s: &str| -> String { s.rsplit('/').next().unwrap_or("").into() };
    let others = || (0..modules.len()).filter(move |&i| i != index);
    let exact: Vec<usize> = others().filter(|&i| modules[i].name() == wanted).collect();
    let wanted_base = base(wanted);
    if !exact.is_empty() || wanted_base.is_empty() {
        return exact;
    }
    others()
        .filter(|&i| base(modules[i].name()) == wanted_base)
        .collect()
}

/// The one module `candidates` must hold for `key = "wanted"`.
fn pick_module(
    modules: &[ModuleInfo<'_>],
    index: usize,
    key: &'static str,
    wanted: &str,
    candidates: &[usize],
) -> Result<usize, LaunchError> {
    let name = modules[index].name().to_string();
    let wanted = wanted.to_string();
    match *candidates {
        [] => Err(LaunchError::Missing {
            index,
            name,
            key,
            wanted,
        }),
        [m] if modules[m].is_config() => Err(LaunchError::NamesConfig {
            index,
            name,
            key,
            wanted,
            module: m,
        }),
        [m] => Ok(m),
        [first, second, ..] => Err(LaunchError::Ambiguous {
            index,
            name,
            key,
            wanted,
            first,
            second,
        }),
    }
}

/// Pass 2: the verdict on one configuration.
fn decide(
    modules: &[ModuleInfo<'_>],
    c: &ConfigModule,
    names: &mut BTreeMap<String, usize>,
) -> Result<DomUPlan, LaunchError> {
    let index = c.index;
    let name = || modules[index].name().to_string();
    let p = c.parsed.as_ref().map_err(Clone::clone)?;
    let config = p.config.clone().map_err(|error| LaunchError::Config {
        index,
        name: name(),
        error,
    })?;
    // Config::parse succeeded, so `kernel` is present and a string.
    let kernel = match &p.kernel {
        Some(r) => r.clone()?,
        None => {
            return Err(LaunchError::Config {
                index,
                name: name(),
                error: xlcfg::Error {
                    line: 0,
                    kind: xlcfg::ErrorKind::Missing("kernel"),
                },
            });
        }
    };
    let ramdisk = p.ramdisk.clone().transpose()?;
    if ramdisk == Some(kernel) {
        return Err(LaunchError::SameModule {
            index,
            name: name(),
            module: kernel,
        });
    }
    if config.name == DOM0_NAME {
        return Err(LaunchError::ReservedName {
            index,
            name: name(),
        });
    }
    if let Some(&first) = names.get(&config.name) {
        return Err(LaunchError::DuplicateName {
            index,
            name: name(),
            domain: config.name.clone(),
            first,
        });
    }
    let id = match u16::try_from(c.id) {
        Ok(id) if id < DOMID_FIRST_RESERVED => id,
        _ => {
            return Err(LaunchError::TooMany {
                index,
                name: name(),
                id: c.id,
            });
        }
    };
    names.insert(config.name.clone(), index);
    let own = modules[kernel].cmdline();
    let cmdline = match (config.cmdline.is_empty(), own.is_empty()) {
        (_, true) => config.cmdline.clone(),
        (true, false) => own.to_string(),
        (false, false) => format!("{} {own}", config.cmdline),
    };
    Ok(DomUPlan {
        id,
        config_module: index,
        config,
        kernel,
        ramdisk,
        cmdline,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A module: its string, and for configurations their text.
    fn m<'a>(string: &'a str, text: Option<&'a str>) -> ModuleInfo<'a> {
        ModuleInfo {
            string,
            bytes: Some(text.unwrap_or("\x7fELF...").as_bytes()),
        }
    }

    fn cfg(name: &str, kernel: &str, extra: &str) -> String {
        format!("name = '{name}'\ntype = 'pvh'\nkernel = '{kernel}'\n{extra}")
    }

    fn ok(p: &Result<DomUPlan, LaunchError>) -> &DomUPlan {
        p.as_ref().expect("domU refused")
    }

    fn err(p: &Result<DomUPlan, LaunchError>) -> String {
        p.as_ref().expect_err("domU accepted").to_string()
    }

    #[test]
    fn dom0_alone() {
        let mods = [
            m("/boot/vmlinuz console=hvc0", None),
            m("/boot/initrd.img", None),
        ];
        let p = plan(&mods).unwrap();
        assert_eq!(
            p.dom0,
            Some(Dom0Plan {
                kernel: 0,
                modules: vec![1]
            })
        );
        assert!(p.domus.is_empty());
        assert!(p.warnings.is_empty());
        assert_eq!(mods[0].name(), "/boot/vmlinuz");
        assert_eq!(mods[0].cmdline(), "console=hvc0");
    }

    #[test]
    fn dom0_and_a_domu() {
        let web = cfg(
            "web",
            "/boot/web-vmlinuz",
            "ramdisk = \"web-initrd\"\nroot = '/dev/xvda'\ndisk = ['x']\n",
        );
        let mods = [
            m("/boot/vmlinuz dom0 args", None),
            m("/boot/initrd.img", None),
            m("/boot/web.cfg", Some(&web)),
            m("/boot/web-vmlinuz  console=hvc0 quiet", None),
            m("(hd0,1)/boot/web-initrd", None),
        ];
        let p = plan(&mods).unwrap();
        assert_eq!(
            p.dom0,
            Some(Dom0Plan {
                kernel: 0,
                modules: vec![1]
            })
        );
        assert_eq!(p.domus.len(), 1);
        let d = ok(&p.domus[0]);
        assert_eq!(
            (d.id, d.config_module, d.kernel, d.ramdisk),
            (1, 2, 3, Some(4))
        );
        assert_eq!(d.config.name, "web");
        assert_eq!(d.cmdline, "root=/dev/xvda console=hvc0 quiet");
        assert_eq!(
            p.warnings,
            [
                "module 2 (/boot/web.cfg): line 6: `disk` is not supported by keel yet and is ignored"
            ]
        );
    }

    #[test]
    fn domus_without_dom0_in_any_order() {
        let a = cfg("a", "ak", "cmdline = 'x'");
        let b = cfg("b", "bk", "");
        let mods = [
            m("bk", None),
            m("a.cfg", Some(&a)),
            m("b.cfg", Some(&b)),
            m("ak", None),
        ];
        let p = plan(&mods).unwrap();
        assert_eq!(p.dom0, None);
        let (da, db) = (ok(&p.domus[0]), ok(&p.domus[1]));
        assert_eq!((da.id, da.kernel, da.cmdline.as_str()), (1, 3, "x"));
        assert_eq!((db.id, db.kernel, db.cmdline.as_str()), (2, 0, ""));
        // A Dom0 may come after the configurations too.
        let mods = [m("a.cfg", Some(&a)), m("ak y", None), m("dom0", None)];
        let p = plan(&mods).unwrap();
        assert_eq!(p.dom0.map(|d| d.kernel), Some(2));
        assert_eq!(ok(&p.domus[0]).cmdline, "x y");
    }

    #[test]
    fn a_broken_config_does_not_stop_the_others_and_keeps_its_id() {
        let bad = cfg("bad", "bk", "memory = lots");
        let good = cfg("good", "gk", "");
        let mods = [
            m("dom0", None),
            m("bad.cfg", Some(&bad)),
            m("bk", None),
            m("good.cfg", Some(&good)),
            m("gk", None),
        ];
        let p = plan(&mods).unwrap();
        assert_eq!(
            err(&p.domus[0]),
            "module 1 (bad.cfg): line 4: expected a value for `memory` (a \"string\", a number or a [list]), found a bare word"
        );
        assert_eq!(ok(&p.domus[1]).id, 2);
        // bk was named by bad.cfg... whose syntax is broken: keel cannot know. It is
        // after the unreadable config, so it only becomes a Dom0 module, with a warning.
        assert_eq!(
            p.dom0,
            Some(Dom0Plan {
                kernel: 0,
                modules: vec![2]
            })
        );
        assert_eq!(
            p.warnings,
            [
                "module 2 (bk) is given to Dom0, but module 1 (bad.cfg), a configuration keel could not read, may have named it"
            ]
        );
    }

    #[test]
    fn a_refused_but_readable_config_keeps_its_modules() {
        let hvm = "name='h'\ntype='hvm'\nkernel='hk'\nramdisk='hr'";
        let mods = [m("hk", None), m("h.cfg", Some(hvm)), m("hr", None)];
        let p = plan(&mods).unwrap();
        assert_eq!(
            err(&p.domus[0]),
            "module 1 (h.cfg): line 2: type = \"hvm\" is not supported yet: keel builds PVH (and checks PV) domUs only (type = \"pvh\" or \"pv\")"
        );
        assert_eq!(p.dom0, None, "hk is h.cfg's, not Dom0's");
        assert_eq!(
            p.warnings,
            [
                "module 0 (hk) is not used: the configuration in module 1 (h.cfg) that names it was refused",
                "module 2 (hr) is not used: the configuration in module 1 (h.cfg) that names it was refused",
            ]
        );
    }

    #[test]
    fn an_unreadable_config_before_the_first_free_module_means_no_dom0() {
        let mods = [
            ModuleInfo {
                string: "x.cfg",
                bytes: None,
            },
            m("xk", None),
            m("xr", None),
        ];
        let p = plan(&mods).unwrap();
        assert_eq!(
            err(&p.domus[0]),
            "module 0 (x.cfg): its contents are not readable"
        );
        assert_eq!(p.dom0, None);
        assert_eq!(
            p.warnings,
            [
                "module 1 (xk) is not made Dom0's kernel: it comes after module 0 (x.cfg), a configuration keel could not read, which may name it",
                "module 1 (xk) is not used",
                "module 2 (xr) is not used",
            ]
        );
    }

    #[test]
    fn module_references() {
        let c = |kernel: &str, extra: &str| cfg("d", kernel, extra);
        let run = |text: &str, others: &[&str]| {
            let mut mods = vec![m("d.cfg", Some(text))];
            mods.extend(others.iter().map(|s| m(s, None)));
            plan(&mods).unwrap().domus.remove(0)
        };
        // Exact name beats last component; last component; missing; a config.
        assert_eq!(ok(&run(&c("/x/k", ""), &["/y/k", "/x/k"])).kernel, 2);
        assert_eq!(ok(&run(&c("/boot/k", ""), &["(hd0)/k"])).kernel, 1);
        assert_eq!(ok(&run(&c("k", ""), &["/a/b/k"])).kernel, 1);
        assert_eq!(
            err(&run(&c("k", ""), &["/a/b/kk"])),
            "module 0 (d.cfg): kernel = \"k\" names no boot module"
        );
        assert_eq!(
            err(&run(&c("k/", ""), &["k"])),
            "module 0 (d.cfg): kernel = \"k/\" names no boot module"
        );
        assert_eq!(
            err(&run(&c("k", "ramdisk = 'e.cfg'"), &["k", "e.cfg"])),
            "module 0 (d.cfg): ramdisk = \"e.cfg\" names module 2, which is a configuration"
        );
        assert_eq!(
            err(&run(&c("d.cfg", ""), &[])),
            "module 0 (d.cfg): kernel = \"d.cfg\" names no boot module",
            "a configuration does not name itself"
        );
        assert_eq!(
            err(&run(&c("k", ""), &["/x/k", "/y/k"])),
            "module 0 (d.cfg): kernel = \"k\" matches modules 1 and 2; give the module's full name"
        );
        assert_eq!(
            err(&run(&c("k", "ramdisk = '/x/k'"), &["/x/k"])),
            "module 0 (d.cfg): kernel and ramdisk are the same module (1)"
        );
        // An ambiguous reference keeps both candidates from Dom0.
        let text = c("k", "");
        let mods = [m("d.cfg", Some(&text)), m("/x/k", None), m("/y/k", None)];
        let p = plan(&mods).unwrap();
        assert_eq!(p.dom0, None);
    }

    #[test]
    fn two_configs_share_one_kernel() {
        let a = cfg("a", "k", "");
        let b = cfg("b", "/boot/k", "");
        let mods = [
            m("a.cfg", Some(&a)),
            m("b.cfg", Some(&b)),
            m("/boot/k", None),
        ];
        let p = plan(&mods).unwrap();
        // Both domUs boot the same kernel; Dom0 gets none of it.
        assert_eq!(ok(&p.domus[0]).kernel, 2);
        assert_eq!(ok(&p.domus[1]).kernel, 2);
        assert_eq!(p.dom0, None);
    }

    #[test]
    fn domain_names() {
        let a = cfg("same", "ak", "");
        let b = cfg("same", "bk", "");
        let z = cfg("Domain-0", "zk", "");
        let mods = [
            m("a.cfg", Some(&a)),
            m("ak", None),
            m("b.cfg", Some(&b)),
            m("bk", None),
            m("z.cfg", Some(&z)),
            m("zk", None),
        ];
        let p = plan(&mods).unwrap();
        assert_eq!(ok(&p.domus[0]).id, 1);
        assert_eq!(
            err(&p.domus[1]),
            "module 2 (b.cfg): domain name \"same\" is already used by module 0"
        );
        assert_eq!(
            err(&p.domus[2]),
            "module 4 (z.cfg): domain name \"Domain-0\" is Dom0's"
        );
        assert_eq!(p.dom0, None, "refused configurations keep their modules");
    }

    #[test]
    fn config_bytes_may_end_in_nul_padding() {
        let text = format!("{}\0\0\0", cfg("a", "ak", ""));
        let mods = [m("a.cfg", Some(&text)), m("ak", None)];
        assert!(plan(&mods).unwrap().domus[0].is_ok());
    }

    #[test]
    fn nothing_to_boot() {
        assert_eq!(plan(&[]), Err(LaunchError::NoModules));
        assert_eq!(
            LaunchError::NoModules.to_string(),
            "no boot modules: keel needs a Dom0 kernel or a domU configuration (NAME.cfg)"
        );
    }

    /// Module strings and configuration texts drawn from a few names, so that
    /// references hit, miss, collide and point at configurations.
    fn module() -> impl Strategy<Value = (String, Option<String>)> {
        let names = prop_oneof![
            Just("k"),
            Just("/boot/k"),
            Just("/x/k"),
            Just("r"),
            Just("a.cfg"),
            Just("b.cfg"),
            Just("/boot/c.cfg"),
            Just(""),
            Just("  "),
        ];
        let refs = prop_oneof![
            Just("k"),
            Just("/boot/k"),
            Just("r"),
            Just("a.cfg"),
            Just("zz")
        ];
        let dname = prop_oneof![Just("d"), Just("e"), Just("Domain-0")];
        let text = (
            dname,
            refs.clone(),
            prop::option::of(refs),
            any::<bool>(),
            ".{0,8}",
        )
            .prop_map(|(n, k, r, typed, junk)| {
                let mut t = format!("name = '{n}'\nkernel = '{k}'\n");
                if let Some(r) = r {
                    t += &format!("ramdisk = '{r}'\n");
                }
                if typed {
                    t += "type = 'pvh'\n";
                }
                t + &junk
            });
        (names, ".{0,6}", prop::option::of(text))
            .prop_map(|(n, args, text)| (format!("{n} {args}"), text))
    }

    proptest! {
        #[test]
        fn plans_are_consistent(mods in prop::collection::vec(module(), 0..8)) {
            let infos: Vec<ModuleInfo<'_>> = mods
                .iter()
                .map(|(s, t)| ModuleInfo { string: s, bytes: t.as_deref().map(str::as_bytes) })
                .collect();
            let Ok(p) = plan(&infos) else {
                prop_assert!(infos.is_empty());
                return Ok(());
            };
            let mut used = BTreeSet::new();
            if let Some(d) = &p.dom0 {
                for &i in core::iter::once(&d.kernel).chain(&d.modules) {
                    prop_assert!(i < infos.len() && !infos[i].is_config());
                    prop_assert!(used.insert(i), "module {} twice", i);
                }
            }
            let configs = infos.iter().filter(|m| m.is_config()).count();
            prop_assert_eq!(p.domus.len(), configs);
            let mut ids = BTreeSet::new();
            let mut names = BTreeSet::new();
            for d in p.domus.iter().flatten() {
                prop_assert!(infos[d.config_module].is_config());
                prop_assert!(ids.insert(d.id) && d.id >= 1);
                prop_assert!(names.insert(d.config.name.clone()));
                for i in core::iter::once(d.kernel).chain(d.ramdisk) {
                    prop_assert!(i < infos.len() && !infos[i].is_config());
                    prop_assert!(used.insert(i), "module {} twice", i);
                }
            }
        }

        #[test]
        fn arbitrary_module_bytes_never_panic(
            strings in prop::collection::vec(".{0,12}", 1..5),
            texts in prop::collection::vec(prop::option::of(prop::collection::vec(any::<u8>(), 0..64)), 5),
        ) {
            let infos: Vec<ModuleInfo<'_>> = strings
                .iter()
                .zip(&texts)
                .map(|(s, t)| ModuleInfo { string: s, bytes: t.as_deref() })
                .collect();
            let _ = plan(&infos);
        }
    }
}
