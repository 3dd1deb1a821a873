//! `cargo xtask`: the one entry point for building, booting and testing keel.
//!
//! keel is a bare-metal binary for a custom target that needs nightly flags
//! (`-Zbuild-std`, a JSON target spec), boot-loader images, and emulators installed
//! from Debian; none of that fits in plain `cargo build`/`cargo test`. The xtask
//! pattern (a host binary in the workspace, run through the `.cargo/config.toml`
//! alias) keeps it all in Rust and in one place:
//!
//! - `build`: compile the hypervisor, copy it to `target/keel/keel.elf`, and check
//!   that both boot loaders will accept it ([`image`]); build the PVH test guests
//!   into `target/keel/guests/` ([`guests`]).
//! - `run`: build, boot it in an emulator with serial on the terminal, and say how
//!   it ended ([`run_cmd`]); `--domu` configs become modules ([`domu`]).
//! - `test`: everything CI runs: install, build, host unit tests, emulator tests
//!   ([`test_cmd`]).
//! - `bench`: the bench guest on keel and on Xen 4.17 under QEMU icount, side by
//!   side ([`bench_cmd`]); not part of `test`.
//! - `profile`: where a bench boot's VM exits spend their instructions, from QEMU's
//!   log of every translation block ([`profile_cmd`] runs it, [`profile`] reads it).
//!
//! The emulator and ISO code is not here but in the `keel-tests` library, which the
//! integration tests use too: `run` and the tests boot keel the same way.

mod args;
mod bench_cmd;
mod deps;
mod domu;
mod elfcheck;
mod guests;
mod image;
mod profile;
mod profile_cmd;
mod run_cmd;
mod test_cmd;

use std::fmt;
use std::process::{Command, ExitCode};

use args::Command as Cmd;

/// An xtask failure; the message is what the user reads.
#[derive(Debug)]
pub struct Error(pub String);

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Error {}

impl From<keel_tests::HarnessError> for Error {
    fn from(e: keel_tests::HarnessError) -> Error {
        Error(e.to_string())
    }
}

impl From<keel_tests::bench::BenchError> for Error {
    fn from(e: keel_tests::bench::BenchError) -> Error {
        Error(e.to_string())
    }
}

/// A `cargo` command running in the workspace root, using the same cargo that runs
/// this xtask (cargo exports its own path as `$CARGO`).
pub fn cargo() -> Command {
    let program = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(program);
    cmd.current_dir(keel_tests::workspace_root());
    cmd
}

fn main() -> ExitCode {
    let argv: Vec<String> = std::env::args_os()
        .skip(1)
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    let command = match args::parse(&argv) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("xtask: {e}\n\n{}", args::USAGE);
            return ExitCode::from(2);
        }
    };
    let result = match command {
        Cmd::Help => {
            print!("{}", args::USAGE);
            Ok(0)
        }
        Cmd::Build(opts) => deps::ensure_installed()
            .and_then(|()| image::build(&opts))
            .and_then(|elf| Ok((elf, guests::build(&opts)?)))
            .map(|(elf, guests)| {
                println!("{}", elf.display());
                println!("{}", guests.display());
                0
            }),
        Cmd::Run(opts) => run_cmd::run(&opts),
        Cmd::Test => test_cmd::test(),
        Cmd::Bench(opts) => bench_cmd::bench(&opts),
        Cmd::Profile(opts) => profile_cmd::profile(&opts),
    };
    match result {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("xtask: error: {e}");
            ExitCode::FAILURE
        }
    }
}
