//! `cargo xtask` command-line parsing, by hand: the grammar is small and a parser
//! crate would cost more build time than it saves.
//!
//! Options take their value either as the next argument or after `=`
//! (`--backend bochs-vmx`, `--backend=bochs-vmx`).

use std::fmt;
use std::ops::Range;
use std::path::PathBuf;
use std::time::Duration;

use keel_tests::{Backend, Module};

/// Usage text for `cargo xtask help` and argument errors.
pub const USAGE: &str = "\
usage: cargo xtask <command> [options]

commands:
  build [--debug]
      Build the hypervisor into target/keel/keel.elf and check its boot headers,
      and the PVH test guests into target/keel/guests/.
  run [--debug] [--backend qemu-svm|bochs-vmx|bochs-svm] [--xen-cmdline \"...\"]
      [--dom0 KERNEL [--dom0-cmdline \"...\"]] [--module FILE[=cmdline]]...
      [--domu CONFIG]... [--timeout SECS] [--direct]
      Build, make a GRUB ISO, boot it with serial on this terminal, and say how it ended.
      --dom0 boots KERNEL (a PVH ELF) as Dom0 with --dom0-cmdline as its command line;
      it becomes the first module, and --module files follow it (e.g. an initrd).
      Without --dom0 the first --module is Dom0.
      --domu adds a domU that keel builds at boot from CONFIG, an xl.cfg(5) file: the
      config and the files its kernel and ramdisk name (relative to its directory)
      become modules after Dom0's. With --domu but no --dom0 or --module, there is no
      Dom0. With none of the three, the test guest pvh64 boots as Dom0.
      --direct boots with QEMU's -kernel (multiboot v1) instead of GRUB.
      Exit status: 0 clean power-off, 1 keel failure, 2 a domain crashed (keel powered
      off with the domain-failure status), 124 timeout.
  test
      Install what is missing, build, run host unit tests, then the emulator tests.
  bench [--runs N] [--no-build] [--guest-cmdline \"...\"]
      Benchmark keel against Xen 4.17 (Debian's xen-hypervisor-4.17-amd64, fetched
      into target/keel/cache/xen/, never installed): boot the test guest pvh64 with
      mode=bench as Dom0 on each under the same QEMU options with
      -icount shift=0,sleep=off, alternately N times (default 3), each time on one
      CPU and again on two (-smp 2, Dom0's two vCPUs pinned apart, the guest's
      vcpus=2: the cross-CPU IPI), then print a Markdown table (per metric the
      median instruction counts on keel and Xen and their ratio; image sizes; wall
      time to the guest's first line) and write JSON to
      target/bench/bench-<unix time>.json and target/bench/latest.json.
      --no-build uses the keel.elf and guests already in target/keel/.
      --guest-cmdline replaces the guest's mode=bench (to debug the harness; the
      two-CPU boot adds vcpus=2 to it).
      Exit status: 0 with results (a spread above 1% across runs is reported, not
      fatal), 1 if a run failed.
  profile [--hypervisor keel|xen] [--cpus 1|2] [--guest-cmdline \"...\"] [--top N]
      [--functions N] [--guest-range LO-HI] [--no-build]
      Where each VM exit's instructions go: boot the bench guest as Dom0 on keel (or
      on Xen 4.17) under bench's QEMU options plus -d in_asm,exec,nochain, stream
      QEMU's log of every translation block through a FIFO (never to disk), and after
      the guest's first instruction split the hypervisor's execution into exits, keyed
      by the guest pc before each. Prints per key (most instructions first, --top N
      keys, default 10) the exits, the hypervisor instructions and, per exit, the
      --functions N (default 25) functions they ran most (from keel.elf's symbols;
      Xen's image is stripped: `?`), then the guest's BENCH lines. Stops at the
      guest's `Test result:`; about 2 minutes for keel.
      --cpus 2 profiles bench's two-CPU boot (the cross-CPU IPI: -smp 2, Dom0's two
      vCPUs pinned apart, the guest's vcpus=2); each CPU's exits are its own.
      --guest-cmdline defaults to \"mode=bench iterations=20\".
      --guest-range is where the guest's code runs (default 0x100000-0x200000).
      --no-build uses the keel.elf and guests already in target/keel/.
      Exit status: 0 with a profile of a guest that passed, 1 otherwise.
  help
      Show this text.
";

/// A parsed `cargo xtask` invocation.
#[derive(Clone, Debug, PartialEq)]
pub enum Command {
    /// `build`.
    Build(BuildOpts),
    /// `run`.
    Run(RunOpts),
    /// `test`.
    Test,
    /// `bench`.
    Bench(BenchOpts),
    /// `profile`.
    Profile(ProfileOpts),
    /// `help`.
    Help,
}

/// Options of `build` (and of the build inside `run`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BuildOpts {
    /// Debug profile instead of release.
    pub debug: bool,
}

/// Options of `run`.
#[derive(Clone, Debug, PartialEq)]
pub struct RunOpts {
    /// How to build keel.
    pub build: BuildOpts,
    /// The emulator configuration.
    pub backend: Backend,
    /// Added to keel's default command line.
    pub xen_cmdline: String,
    /// Multiboot modules, in order: Dom0's kernel first, then the rest of Dom0's.
    pub modules: Vec<Module>,
    /// xl.cfg files of domUs, in order.
    pub domus: Vec<PathBuf>,
    /// Time limit; `None` means the backend's default.
    pub timeout: Option<Duration>,
    /// QEMU `-kernel` instead of the GRUB ISO.
    pub direct: bool,
}

/// Options of `bench`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BenchOpts {
    /// Boots per hypervisor.
    pub runs: u32,
    /// Build keel and the guests first (release); `--no-build` uses what is there.
    pub build: bool,
    /// The guest's command line (`mode=bench`).
    pub guest_cmdline: String,
}

impl Default for BenchOpts {
    fn default() -> BenchOpts {
        BenchOpts {
            runs: 3,
            build: true,
            guest_cmdline: keel_tests::bench::GUEST_CMDLINE.to_string(),
        }
    }
}

/// Options of `profile`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProfileOpts {
    /// Which hypervisor to profile.
    pub hypervisor: keel_tests::bench::Hypervisor,
    /// Which of bench's machines (`--cpus`).
    pub cpus: keel_tests::bench::Cpus,
    /// The guest's command line (on one CPU; see `Cpus::guest_cmdline`).
    pub guest_cmdline: String,
    /// Exit keys shown.
    pub top: usize,
    /// Functions shown per key.
    pub functions: usize,
    /// Guest pcs (TBs elsewhere are the hypervisor's).
    pub guest_range: Range<u64>,
    /// Build keel and the guests first (release); `--no-build` uses what is there.
    pub build: bool,
}

/// The guest command line of `profile`: the bench with fewer rounds, as the log of
/// every TB slows QEMU down a hundredfold.
pub const PROFILE_GUEST_CMDLINE: &str = "mode=bench iterations=20";

impl Default for ProfileOpts {
    fn default() -> ProfileOpts {
        ProfileOpts {
            hypervisor: keel_tests::bench::Hypervisor::Keel,
            cpus: keel_tests::bench::Cpus::One,
            guest_cmdline: PROFILE_GUEST_CMDLINE.to_string(),
            top: 10,
            functions: 25,
            guest_range: crate::profile::DEFAULT_GUEST_RANGE,
            build: true,
        }
    }
}

/// Parses `0x100000-0x200000` (hexadecimal, `0x` optional; LO < HI).
fn parse_range(v: &str) -> Option<Range<u64>> {
    let (lo, hi) = v.split_once('-')?;
    let num = |s: &str| {
        let s = s.trim();
        u64::from_str_radix(s.strip_prefix("0x").unwrap_or(s), 16).ok()
    };
    let (lo, hi) = (num(lo)?, num(hi)?);
    (lo < hi).then_some(lo..hi)
}

/// Most runs `bench --runs` accepts (each run is four boots of 3 to 10 s).
pub const MAX_BENCH_RUNS: u32 = 100;

/// A command-line mistake; the message says which.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ArgError(pub String);

impl fmt::Display for ArgError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ArgError {}

/// One argument, split into option name and inline value.
fn split_option(arg: &str) -> (&str, Option<&str>) {
    match arg.split_once('=') {
        Some((name, value)) if name.starts_with("--") => (name, Some(value)),
        _ => (arg, None),
    }
}

/// Parses the arguments after `cargo xtask`.
pub fn parse(args: &[String]) -> Result<Command, ArgError> {
    let Some((command, rest)) = args.split_first() else {
        return Ok(Command::Help);
    };
    let mut rest = rest.iter();
    // The value of option `name`: inline after `=`, else the next argument.
    let value =
        |name: &str, inline: Option<&str>, rest: &mut std::slice::Iter<'_, String>| match inline {
            Some(v) => Ok(v.to_string()),
            None => rest
                .next()
                .cloned()
                .ok_or_else(|| ArgError(format!("{name} needs a value"))),
        };
    match command.as_str() {
        "build" => {
            let mut opts = BuildOpts::default();
            for arg in rest {
                match arg.as_str() {
                    "--debug" => opts.debug = true,
                    other => return Err(ArgError(format!("build: unexpected argument '{other}'"))),
                }
            }
            Ok(Command::Build(opts))
        }
        "run" => {
            let mut dom0: Option<String> = None;
            let mut dom0_cmdline: Option<String> = None;
            let mut opts = RunOpts {
                build: BuildOpts::default(),
                backend: Backend::QemuSvm,
                xen_cmdline: String::new(),
                modules: Vec::new(),
                domus: Vec::new(),
                timeout: None,
                direct: false,
            };
            while let Some(arg) = rest.next() {
                let (name, inline) = split_option(arg);
                match name {
                    "--debug" if inline.is_none() => opts.build.debug = true,
                    "--direct" if inline.is_none() => opts.direct = true,
                    "--backend" => {
                        let v = value(name, inline, &mut rest)?;
                        opts.backend = v.parse().map_err(|e| ArgError(format!("run: {e}")))?;
                    }
                    "--xen-cmdline" => {
                        let v = value(name, inline, &mut rest)?;
                        opts.xen_cmdline = keel_tests::join_cmdline(&opts.xen_cmdline, &v);
                    }
                    "--module" => {
                        let v = value(name, inline, &mut rest)?;
                        opts.modules.push(Module::parse_spec(&v));
                    }
                    "--domu" => opts.domus.push(value(name, inline, &mut rest)?.into()),
                    "--dom0" => dom0 = Some(value(name, inline, &mut rest)?),
                    "--dom0-cmdline" => dom0_cmdline = Some(value(name, inline, &mut rest)?),
                    "--timeout" => {
                        let v = value(name, inline, &mut rest)?;
                        let secs: u64 = v.parse().ok().filter(|&s| s > 0).ok_or_else(|| {
                            ArgError(format!("run: --timeout wants whole seconds > 0, not '{v}'"))
                        })?;
                        opts.timeout = Some(Duration::from_secs(secs));
                    }
                    other => return Err(ArgError(format!("run: unexpected argument '{other}'"))),
                }
            }
            match (dom0, dom0_cmdline) {
                (Some(k), args) => opts
                    .modules
                    .insert(0, Module::new(k, args.unwrap_or_default())),
                (None, Some(_)) => {
                    return Err(ArgError("run: --dom0-cmdline needs --dom0 KERNEL".into()));
                }
                (None, None) => {}
            }
            if opts.direct && !opts.backend.is_qemu() {
                return Err(ArgError(format!(
                    "run: --direct is QEMU's -kernel loader; backend {} boots the GRUB ISO only",
                    opts.backend
                )));
            }
            Ok(Command::Run(opts))
        }
        "bench" => {
            let mut opts = BenchOpts::default();
            while let Some(arg) = rest.next() {
                let (name, inline) = split_option(arg);
                match name {
                    "--no-build" if inline.is_none() => opts.build = false,
                    "--runs" => {
                        let v = value(name, inline, &mut rest)?;
                        opts.runs = v
                            .parse()
                            .ok()
                            .filter(|n| (1..=MAX_BENCH_RUNS).contains(n))
                            .ok_or_else(|| {
                                ArgError(format!(
                                    "bench: --runs wants a whole number from 1 to \
                                     {MAX_BENCH_RUNS}, not '{v}'"
                                ))
                            })?;
                    }
                    "--guest-cmdline" => opts.guest_cmdline = value(name, inline, &mut rest)?,
                    other => {
                        return Err(ArgError(format!("bench: unexpected argument '{other}'")));
                    }
                }
            }
            Ok(Command::Bench(opts))
        }
        "profile" => {
            let mut opts = ProfileOpts::default();
            let count = |name: &str, v: &str| {
                v.parse::<usize>().ok().filter(|&n| n > 0).ok_or_else(|| {
                    ArgError(format!("profile: {name} wants a number > 0, not '{v}'"))
                })
            };
            while let Some(arg) = rest.next() {
                let (name, inline) = split_option(arg);
                match name {
                    "--no-build" if inline.is_none() => opts.build = false,
                    "--hypervisor" => {
                        let v = value(name, inline, &mut rest)?;
                        opts.hypervisor = match v.as_str() {
                            "keel" => keel_tests::bench::Hypervisor::Keel,
                            "xen" => keel_tests::bench::Hypervisor::Xen,
                            _ => {
                                return Err(ArgError(format!(
                                    "profile: --hypervisor wants keel or xen, not '{v}'"
                                )));
                            }
                        };
                    }
                    "--cpus" => {
                        let v = value(name, inline, &mut rest)?;
                        opts.cpus = match v.as_str() {
                            "1" => keel_tests::bench::Cpus::One,
                            "2" => keel_tests::bench::Cpus::Two,
                            _ => {
                                return Err(ArgError(format!(
                                    "profile: --cpus wants 1 or 2, not '{v}'"
                                )));
                            }
                        };
                    }
                    "--guest-cmdline" => opts.guest_cmdline = value(name, inline, &mut rest)?,
                    "--top" => opts.top = count(name, &value(name, inline, &mut rest)?)?,
                    "--functions" => {
                        opts.functions = count(name, &value(name, inline, &mut rest)?)?;
                    }
                    "--guest-range" => {
                        let v = value(name, inline, &mut rest)?;
                        opts.guest_range = parse_range(&v).ok_or_else(|| {
                            ArgError(format!(
                                "profile: --guest-range wants LO-HI in hexadecimal with LO < HI \
                                 (0x100000-0x200000), not '{v}'"
                            ))
                        })?;
                    }
                    other => {
                        return Err(ArgError(format!("profile: unexpected argument '{other}'")));
                    }
                }
            }
            Ok(Command::Profile(opts))
        }
        "test" => match rest.next() {
            None => Ok(Command::Test),
            Some(other) => Err(ArgError(format!("test: unexpected argument '{other}'"))),
        },
        "help" | "--help" | "-h" => Ok(Command::Help),
        other => Err(ArgError(format!("unknown command '{other}'"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(args: &[&str]) -> Result<Command, ArgError> {
        parse(&args.iter().map(|s| s.to_string()).collect::<Vec<_>>())
    }

    #[test]
    fn build_flags() {
        assert_eq!(
            p(&["build"]),
            Ok(Command::Build(BuildOpts { debug: false }))
        );
        assert_eq!(
            p(&["build", "--debug"]),
            Ok(Command::Build(BuildOpts { debug: true }))
        );
        assert!(p(&["build", "--release"]).is_err());
    }

    #[test]
    fn run_defaults() {
        let Ok(Command::Run(o)) = p(&["run"]) else {
            panic!("run parses")
        };
        assert_eq!(o.backend, Backend::QemuSvm);
        assert_eq!(o.xen_cmdline, "");
        assert!(o.modules.is_empty() && o.domus.is_empty());
        assert!(o.timeout.is_none() && !o.direct && !o.build.debug);
    }

    #[test]
    fn run_everything() {
        let Ok(Command::Run(o)) = p(&[
            "run",
            "--backend=bochs-vmx",
            "--xen-cmdline",
            "dom0_mem=64M",
            "--xen-cmdline=noreboot",
            "--module",
            "vmlinuz=root=/dev/xvda console=hvc0",
            "--module=initrd.img",
            "--timeout",
            "30",
            "--debug",
        ]) else {
            panic!("run parses")
        };
        assert_eq!(o.backend, Backend::BochsVmx);
        assert_eq!(o.xen_cmdline, "dom0_mem=64M noreboot");
        assert_eq!(
            o.modules,
            [
                Module::new("vmlinuz", "root=/dev/xvda console=hvc0"),
                Module::new("initrd.img", "")
            ]
        );
        assert_eq!(o.timeout, Some(Duration::from_secs(30)));
        assert!(o.build.debug);
    }

    #[test]
    fn dom0_is_the_first_module() {
        let Ok(Command::Run(o)) = p(&[
            "run",
            "--module=initrd.img=x",
            "--dom0",
            "vmlinux",
            "--dom0-cmdline",
            "console=hvc0 earlyprintk=xen",
        ]) else {
            panic!("run parses")
        };
        assert_eq!(
            o.modules,
            [
                Module::new("vmlinux", "console=hvc0 earlyprintk=xen"),
                Module::new("initrd.img", "x")
            ]
        );
        assert!(p(&["run", "--dom0-cmdline", "x"]).is_err());
    }

    #[test]
    fn domus_repeat_in_order_beside_dom0() {
        let Ok(Command::Run(o)) = p(&[
            "run",
            "--domu",
            "guests/a.cfg",
            "--dom0=vmlinux",
            "--domu=b",
        ]) else {
            panic!("run parses")
        };
        assert_eq!(o.domus, [PathBuf::from("guests/a.cfg"), PathBuf::from("b")]);
        assert_eq!(o.modules, [Module::new("vmlinux", "")]);

        let Ok(Command::Run(o)) = p(&["run", "--domu", "a.cfg"]) else {
            panic!("run parses")
        };
        assert!(o.modules.is_empty(), "no Dom0 unless asked for");
        assert_eq!(o.domus, [PathBuf::from("a.cfg")]);
        assert_eq!(
            p(&["run", "--domu"]),
            Err(ArgError("--domu needs a value".into()))
        );
    }

    #[test]
    fn usage_describes_domus_and_exit_statuses() {
        assert!(USAGE.contains("[--domu CONFIG]..."));
        assert!(USAGE.contains("2 a domain crashed"));
    }

    #[test]
    fn run_mistakes_are_explained() {
        assert_eq!(
            p(&["run", "--backend"]),
            Err(ArgError("--backend needs a value".into()))
        );
        assert!(
            p(&["run", "--backend", "kvm"])
                .unwrap_err()
                .0
                .contains("expected one of")
        );
        assert!(
            p(&["run", "--timeout", "0"])
                .unwrap_err()
                .0
                .contains("--timeout")
        );
        assert!(p(&["run", "--timeout=soon"]).is_err());
        assert!(
            p(&["run", "--backend", "bochs-svm", "--direct"])
                .unwrap_err()
                .0
                .contains("GRUB")
        );
        assert!(p(&["run", "extra"]).is_err());
    }

    #[test]
    fn bench_options() {
        assert_eq!(p(&["bench"]), Ok(Command::Bench(BenchOpts::default())));
        assert_eq!(BenchOpts::default().runs, 3);
        assert_eq!(BenchOpts::default().guest_cmdline, "mode=bench");
        assert_eq!(
            p(&[
                "bench",
                "--runs",
                "5",
                "--no-build",
                "--guest-cmdline=mode=hello"
            ]),
            Ok(Command::Bench(BenchOpts {
                runs: 5,
                build: false,
                guest_cmdline: "mode=hello".into()
            }))
        );
        assert_eq!(
            p(&["bench", "--runs=1"]),
            Ok(Command::Bench(BenchOpts {
                runs: 1,
                ..BenchOpts::default()
            }))
        );
        for bad in ["0", "-1", "x", "101"] {
            let err = p(&["bench", "--runs", bad]).unwrap_err().0;
            assert!(err.contains("--runs wants"), "{bad}: {err}");
        }
        assert_eq!(
            p(&["bench", "--runs"]),
            Err(ArgError("--runs needs a value".into()))
        );
        assert!(p(&["bench", "--no-build=yes"]).is_err());
        assert!(p(&["bench", "--debug"]).is_err());
        assert!(USAGE.contains("bench [--runs N]"));
        assert!(USAGE.contains("target/bench/latest.json"));
    }

    #[test]
    fn profile_options() {
        use keel_tests::bench::{Cpus, Hypervisor};
        assert_eq!(
            p(&["profile"]),
            Ok(Command::Profile(ProfileOpts::default()))
        );
        let d = ProfileOpts::default();
        assert_eq!(d.hypervisor, Hypervisor::Keel);
        assert_eq!(d.cpus, Cpus::One);
        assert_eq!(d.guest_cmdline, "mode=bench iterations=20");
        assert_eq!((d.top, d.functions, d.build), (10, 25, true));
        assert_eq!(d.guest_range, 0x10_0000..0x20_0000);
        assert_eq!(
            p(&[
                "profile",
                "--hypervisor=xen",
                "--cpus",
                "2",
                "--guest-cmdline",
                "mode=bench iterations=5",
                "--top",
                "3",
                "--functions=7",
                "--guest-range",
                "100000-0x180000",
                "--no-build",
            ]),
            Ok(Command::Profile(ProfileOpts {
                hypervisor: Hypervisor::Xen,
                cpus: Cpus::Two,
                guest_cmdline: "mode=bench iterations=5".into(),
                top: 3,
                functions: 7,
                guest_range: 0x10_0000..0x18_0000,
                build: false,
            }))
        );
        for bad in [
            &["profile", "--hypervisor", "kvm"][..],
            &["profile", "--cpus", "3"],
            &["profile", "--top", "0"],
            &["profile", "--functions=x"],
            &["profile", "--guest-range", "0x200000-0x100000"],
            &["profile", "--guest-range=0x100000"],
            &["profile", "--runs", "3"],
            &["profile", "--no-build=1"],
        ] {
            let err = p(bad).unwrap_err().0;
            assert!(err.starts_with("profile: "), "{bad:?}: {err}");
        }
        assert_eq!(
            p(&["profile", "--top"]),
            Err(ArgError("--top needs a value".into()))
        );
        assert!(USAGE.contains("profile [--hypervisor keel|xen]"));
    }

    #[test]
    fn other_commands() {
        assert_eq!(p(&[]), Ok(Command::Help));
        assert_eq!(p(&["help"]), Ok(Command::Help));
        assert_eq!(p(&["test"]), Ok(Command::Test));
        assert!(p(&["test", "x"]).is_err());
        assert_eq!(
            p(&["frobnicate"]),
            Err(ArgError("unknown command 'frobnicate'".into()))
        );
    }
}
