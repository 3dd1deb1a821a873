//! Installing the Debian packages the build and the emulators need.
//!
//! A fresh machine (a new developer box, CI) has none of GRUB's ISO tools, QEMU or
//! Bochs, and the project must set itself up: every xtask command starts here. The
//! check is cheap (`dpkg-query` per package); `apt-get update` and `apt-get install`
//! run only when something is missing, as root or through `sudo -n`.

use std::process::Command;

use crate::Error;

/// What `dpkg-query -W -f='${Status}'` prints for an installed package.
const INSTALLED: &str = "install ok installed";

/// Whether dpkg-query's `${Status}` output means "installed".
pub fn status_is_installed(status: &str) -> bool {
    status.trim() == INSTALLED
}

/// The packages among `packages` that dpkg does not report as installed.
/// `None` if this is not a dpkg-based system.
fn missing(packages: &[&str]) -> Option<Vec<String>> {
    let mut missing = Vec::new();
    for &pkg in packages {
        let out = Command::new("dpkg-query")
            .args(["-W", "-f=${Status}", pkg])
            .output()
            .ok()?;
        // dpkg-query exits 1 for a package it has never heard of: that is "missing" too.
        if !status_is_installed(&String::from_utf8_lossy(&out.stdout)) {
            missing.push(pkg.to_string());
        }
    }
    Some(missing)
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

fn sudo_works() -> bool {
    Command::new("sudo")
        .args(["-n", "true"])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Runs `apt-get args...` as root (directly or via `sudo -n`).
fn apt_get(sudo: bool, args: &[&str]) -> Result<(), Error> {
    let mut cmd = if sudo {
        let mut c = Command::new("sudo");
        c.args(["-n", "env", "DEBIAN_FRONTEND=noninteractive", "apt-get"]);
        c
    } else {
        let mut c = Command::new("apt-get");
        c.env("DEBIAN_FRONTEND", "noninteractive");
        c
    };
    cmd.args(args);
    let status = cmd
        .status()
        .map_err(|e| Error(format!("cannot run apt-get {}: {e}", args.join(" "))))?;
    if status.success() {
        Ok(())
    } else {
        Err(Error(format!(
            "apt-get {} failed ({status})",
            args.join(" ")
        )))
    }
}

/// Installs whichever of the harness's Debian packages are missing.
pub fn ensure_installed() -> Result<(), Error> {
    let packages = keel_tests::DEBIAN_PACKAGES;
    let Some(missing) = missing(packages) else {
        eprintln!(
            "xtask: warning: no dpkg-query here; make sure these (Debian names) are installed: {}",
            packages.join(" ")
        );
        return Ok(());
    };
    if missing.is_empty() {
        return Ok(());
    }
    eprintln!(
        "xtask: installing missing Debian packages: {}",
        missing.join(" ")
    );
    let sudo = if is_root() {
        false
    } else if sudo_works() {
        true
    } else {
        return Err(Error(format!(
            "these Debian packages are missing and I am neither root nor allowed `sudo -n`: {}\n\
             install them with: sudo apt-get install {}",
            missing.join(" "),
            missing.join(" ")
        )));
    };
    apt_get(sudo, &["update"])?;
    let mut args = vec!["install", "-y", "--no-install-recommends"];
    args.extend(missing.iter().map(String::as_str));
    apt_get(sudo, &args)?;
    if let Some(still) = self::missing(packages).filter(|m| !m.is_empty()) {
        return Err(Error(format!(
            "apt-get install ran, but these are still missing: {}",
            still.join(" ")
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_full_install_counts() {
        assert!(status_is_installed("install ok installed"));
        assert!(!status_is_installed("deinstall ok config-files"));
        assert!(!status_is_installed("install ok half-configured"));
        assert!(!status_is_installed(""));
    }
}
