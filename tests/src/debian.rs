//! Debian's own binaries for the real-guest tests: the kernels of
//! `linux-image-amd64` and `linux-image-cloud-amd64`, and `busybox-static`.
//!
//! # What
//!
//! The tier-4 tests boot unmodified Debian kernels, so they need the kernels as
//! Debian ships them, without installing them into the build machine's `/boot`.
//! [`kernel`] and [`busybox`] resolve a package with `apt-cache show`
//! (following a metapackage to the versioned package it depends on), fetch the
//! candidate version's `.deb` with `apt-get download`, and unpack only the members
//! needed (`./boot` of a kernel, `./bin/busybox`) with
//! `dpkg-deb --fsys-tarfile | tar -x`, so a kernel's hundreds of MiB of modules are
//! never written. Everything lives under `target/keel/cache/debian/` ([`cache_dir`]):
//!
//! - `<package>_<version>/`: one unpacked package (plus `PACKAGE`, its name and
//!   version), present only when complete;
//! - `<requested>.last`: the package and version the last fetch of a requested name
//!   resolved to, used when apt cannot answer (no lists, no network);
//! - `.lock`: the lock below; `.tmp-*`: work in progress.
//!
//! apt-cache is local, so a second call answers from the cache without the network.
//! If apt knows no such package (a fresh machine without lists) the harness runs
//! `apt-get update` once (as root, or through `sudo -n`), as `cargo xtask` does.
//!
//! # Invariants
//!
//! - A `<package>_<version>/` directory exists only complete: it is unpacked under a
//!   temporary name and renamed into place, and the `.deb` is gone before that.
//! - The version recorded is the one apt downloaded (`pkg=version`), never whatever
//!   the candidate became later.
//!
//! # Locking
//!
//! Tests run on several threads and test binaries may run in parallel processes.
//! One exclusive lock (`File::lock`, i.e. `flock(2)`, which also excludes other
//! threads of the same process since each call opens the file anew) on
//! `cache/debian/.lock` covers resolving, downloading, unpacking and `apt-get
//! update` (whose own lock would otherwise make a second updater fail). The lock is
//! released when the file is closed, also when a fetch fails or panics. Each
//! process also remembers what it fetched (a `Mutex`ed list), so only its first
//! call per name pays for `apt-cache` (about a second a call where apt's binary
//! cache is disabled, as in Debian's container images).

use std::fs::{self, File};
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};

use crate::HarnessError;

/// Which Debian 12 kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Flavour {
    /// `linux-image-amd64`: the generic kernel (everything as modules).
    Generic,
    /// `linux-image-cloud-amd64`: the kernel for virtual machines (fewer drivers).
    Cloud,
}

impl Flavour {
    /// Both flavours.
    pub const ALL: [Flavour; 2] = [Flavour::Generic, Flavour::Cloud];

    /// The metapackage that depends on the current kernel of this flavour.
    pub fn metapackage(self) -> &'static str {
        match self {
            Flavour::Generic => "linux-image-amd64",
            Flavour::Cloud => "linux-image-cloud-amd64",
        }
    }

    /// A short name for messages and test names.
    pub fn name(self) -> &'static str {
        match self {
            Flavour::Generic => "generic",
            Flavour::Cloud => "cloud",
        }
    }
}

/// A package unpacked in the cache.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fetched {
    /// The name asked for (`linux-image-amd64`, `busybox-static`).
    pub requested: String,
    /// The package actually fetched (`linux-image-6.1.0-56-amd64`).
    pub package: String,
    /// Its Debian version (`6.1.192-2`).
    pub version: String,
    /// Where its members were unpacked (paths inside are as in the package,
    /// e.g. `boot/vmlinuz-...`).
    pub root: PathBuf,
}

/// A Debian kernel unpacked in the cache.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Kernel {
    /// Which flavour.
    pub flavour: Flavour,
    /// The versioned package (`linux-image-6.1.0-56-cloud-amd64`).
    pub package: String,
    /// The package's Debian version (`6.1.192-2`).
    pub version: String,
    /// The kernel release, what `uname -r` prints (`6.1.0-56-cloud-amd64`).
    pub release: String,
    /// The compressed kernel image (`.../boot/vmlinuz-<release>`).
    pub vmlinuz: PathBuf,
}

/// The busybox package: statically linked, so it runs alone in an initramfs.
pub const BUSYBOX_PACKAGE: &str = "busybox-static";
/// Where `busybox-static` puts the binary.
pub const BUSYBOX_MEMBER: &str = "./bin/busybox";
/// The directory of a kernel package that holds the image (and config, System.map).
pub const KERNEL_MEMBER: &str = "./boot";

/// `target/keel/cache/debian`.
pub fn cache_dir() -> PathBuf {
    crate::keel_target_dir().join("cache").join("debian")
}

/// The path of the unpacked `boot/vmlinuz-*` of the current Debian kernel of
/// `flavour`, fetching it first if needed.
pub fn kernel(flavour: Flavour) -> Result<PathBuf, HarnessError> {
    kernel_package(flavour).map(|k| k.vmlinuz)
}

/// Like [`kernel`], with the package name, version and kernel release.
pub fn kernel_package(flavour: Flavour) -> Result<Kernel, HarnessError> {
    let fetched = fetch_in(&cache_dir(), flavour.metapackage(), true, &[KERNEL_MEMBER])?;
    let boot = fetched.root.join("boot");
    let entries = fs::read_dir(&boot).map_err(HarnessError::io(format!(
        "listing {} of {}",
        boot.display(),
        fetched.package
    )))?;
    let mut images: Vec<(String, PathBuf)> = Vec::new();
    for entry in entries {
        let entry = entry.map_err(HarnessError::io(format!("listing {}", boot.display())))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if let Some(release) = kernel_release(&name) {
            images.push((release.to_string(), entry.path()));
        }
    }
    match <[_; 1]>::try_from(images) {
        Ok([(release, vmlinuz)]) => Ok(Kernel {
            flavour,
            package: fetched.package,
            version: fetched.version,
            release,
            vmlinuz,
        }),
        Err(images) => Err(failed(
            format!("finding the kernel image of {}", fetched.package),
            format!(
                "expected exactly one boot/vmlinuz-* in {}, found {}",
                boot.display(),
                images.len()
            ),
        )),
    }
}

/// The path of the unpacked `bin/busybox` of `busybox-static`, fetching it first
/// if needed.
pub fn busybox() -> Result<PathBuf, HarnessError> {
    busybox_package().map(|f| f.root.join("bin").join("busybox"))
}

/// Like [`busybox`], with the package's version.
pub fn busybox_package() -> Result<Fetched, HarnessError> {
    let fetched = fetch_in(&cache_dir(), BUSYBOX_PACKAGE, false, &[BUSYBOX_MEMBER])?;
    let path = fetched.root.join("bin").join("busybox");
    if path.is_file() {
        Ok(fetched)
    } else {
        Err(failed(
            format!("unpacking {}", fetched.package),
            format!("no {} in it", path.display()),
        ))
    }
}

/// Fetches `requested` into `cache` and unpacks `members` (paths as in the
/// package's data tarball, `./boot`); with `metapackage`, fetches instead the
/// `linux-image-*` package it depends on.
pub fn fetch_in(
    cache: &Path,
    requested: &str,
    metapackage: bool,
    members: &[&str],
) -> Result<Fetched, HarnessError> {
    // Asked once per process and name: the answer cannot change under a running
    // test, and the directory it names is never removed (checked anyway).
    static SEEN: Mutex<Vec<(PathBuf, String, Fetched)>> = Mutex::new(Vec::new());
    let memo = |seen: &[(PathBuf, String, Fetched)]| {
        seen.iter()
            .find(|(c, r, f)| c == cache && r == requested && f.root.is_dir())
            .map(|(_, _, f)| f.clone())
    };
    // A poisoned memo only means another test panicked while holding it; the list
    // itself is always whole.
    if let Some(f) = memo(&SEEN.lock().unwrap_or_else(|p| p.into_inner())) {
        return Ok(f);
    }
    fs::create_dir_all(cache).map_err(HarnessError::io(format!("creating {}", cache.display())))?;
    let lock_path = cache.join(".lock");
    let lock = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(HarnessError::io(format!("opening {}", lock_path.display())))?;
    lock.lock()
        .map_err(HarnessError::io(format!("locking {}", lock_path.display())))?;
    let result = fetch_locked(cache, requested, metapackage, members);
    drop(lock);
    if let Ok(f) = &result {
        SEEN.lock().unwrap_or_else(|p| p.into_inner()).push((
            cache.to_path_buf(),
            requested.to_string(),
            f.clone(),
        ));
    }
    result
}

/// [`fetch_in`] under the cache lock.
fn fetch_locked(
    cache: &Path,
    requested: &str,
    metapackage: bool,
    members: &[&str],
) -> Result<Fetched, HarnessError> {
    let last = read_last(cache, requested);
    let (package, version) = match resolve(requested, metapackage, false) {
        Ok(pv) => pv,
        Err(e) => match last {
            Some(pv) => {
                eprintln!(
                    "harness: apt cannot resolve {requested} ({e}); using the cached {} {}",
                    pv.0, pv.1
                );
                pv
            }
            None => resolve(requested, metapackage, true)?,
        },
    };
    let root = cache.join(entry_name(&package, &version));
    if !root.is_dir()
        && let Err(e) = download_and_unpack(cache, &package, &version, members, &root)
    {
        // Offline with newer lists than the cache: an older kernel still tests keel.
        let fallback = read_last(cache, requested)
            .map(|(p, v)| (cache.join(entry_name(&p, &v)), p, v))
            .filter(|(dir, _, _)| dir.is_dir());
        let Some((dir, p, v)) = fallback else {
            return Err(e);
        };
        eprintln!("harness: {e}; using the cached {p} {v} instead");
        return Ok(Fetched {
            requested: requested.to_string(),
            package: p,
            version: v,
            root: dir,
        });
    }
    write_last(cache, requested, &package, &version)?;
    Ok(Fetched {
        requested: requested.to_string(),
        package,
        version,
        root,
    })
}

/// The package and version apt would fetch for `requested` (following a
/// metapackage's `linux-image-*` dependency). With `update`, runs `apt-get update`
/// first if apt knows no such package.
fn resolve(
    requested: &str,
    metapackage: bool,
    update: bool,
) -> Result<(String, String), HarnessError> {
    let stanza = match apt_show(requested)? {
        Ok(stanza) => stanza,
        Err(stderr) if !update => {
            return Err(failed(format!("apt-cache show {requested}"), stderr));
        }
        Err(_) => {
            apt_get_update()?;
            apt_show(requested)?.map_err(|stderr| {
                failed(
                    format!("apt-cache show {requested} (after apt-get update)"),
                    stderr,
                )
            })?
        }
    };
    let fields = parse_stanza(&stanza);
    if !metapackage {
        let version = field(&fields, "Version")
            .ok_or_else(|| failed(format!("apt-cache show {requested}"), "no Version field"))?;
        return Ok((requested.to_string(), version.to_string()));
    }
    let depends = field(&fields, "Depends").unwrap_or("");
    let real = kernel_dependency(depends).ok_or_else(|| {
        failed(
            format!("resolving {requested}"),
            format!("no linux-image-* in its Depends: {depends:?}"),
        )
    })?;
    let stanza =
        apt_show(&real)?.map_err(|stderr| failed(format!("apt-cache show {real}"), stderr))?;
    let version = field(&parse_stanza(&stanza), "Version")
        .ok_or_else(|| failed(format!("apt-cache show {real}"), "no Version field"))?
        .to_string();
    Ok((real, version))
}

/// `apt-cache show --no-all-versions <package>`: `Ok(Ok(record))`, or
/// `Ok(Err(stderr))` if apt does not know it; `Err` if apt-cache cannot run.
fn apt_show(package: &str) -> Result<Result<String, String>, HarnessError> {
    let out = Command::new("apt-cache")
        .args(["show", "--no-all-versions", package])
        .env("LC_ALL", "C")
        .stdin(Stdio::null())
        .output()
        .map_err(spawn_error("apt-cache", "apt"))?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if out.status.success() && !stdout.trim().is_empty() {
        Ok(Ok(stdout))
    } else {
        let stderr = String::from_utf8_lossy(&out.stderr).trim().to_string();
        Ok(Err(if stderr.is_empty() {
            format!("no record ({})", out.status)
        } else {
            stderr
        }))
    }
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// `apt-get update`, as root or through `sudo -n`.
fn apt_get_update() -> Result<(), HarnessError> {
    eprintln!("harness: apt knows no such package; running apt-get update");
    let mut cmd = if is_root() {
        Command::new("apt-get")
    } else {
        let mut c = Command::new("sudo");
        c.args(["-n", "apt-get"]);
        c
    };
    let out = cmd
        .arg("update")
        .env("LC_ALL", "C")
        .env("DEBIAN_FRONTEND", "noninteractive")
        .stdin(Stdio::null())
        .output()
        .map_err(spawn_error("apt-get update", "apt"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(failed(
            "apt-get update (as root, or via sudo -n)",
            format!(
                "{}: {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        ))
    }
}

static NEXT_TMP: AtomicU32 = AtomicU32::new(0);

/// Downloads `package=version` and unpacks `members` into `dest` (which must not
/// exist), through a temporary directory in `cache`.
fn download_and_unpack(
    cache: &Path,
    package: &str,
    version: &str,
    members: &[&str],
    dest: &Path,
) -> Result<(), HarnessError> {
    let tmp = cache.join(format!(
        ".tmp-{}-{}",
        std::process::id(),
        NEXT_TMP.fetch_add(1, Ordering::Relaxed)
    ));
    if tmp.exists() {
        // Left by an earlier process with the same pid that died mid-fetch.
        fs::remove_dir_all(&tmp).map_err(HarnessError::io(format!(
            "removing stale {}",
            tmp.display()
        )))?;
    }
    let result = (|| {
        let root = tmp.join("root");
        fs::create_dir_all(&root)
            .map_err(HarnessError::io(format!("creating {}", root.display())))?;
        let deb = download(&tmp, package, version)?;
        unpack(&deb, &root, members).map_err(|e| {
            failed(
                format!("unpacking {} from {}", members.join(" "), deb.display()),
                e,
            )
        })?;
        fs::remove_file(&deb).map_err(HarnessError::io(format!("removing {}", deb.display())))?;
        fs::write(root.join("PACKAGE"), format!("{package}\n{version}\n")).map_err(
            HarnessError::io(format!("writing {}/PACKAGE", root.display())),
        )?;
        fs::rename(&root, dest).map_err(HarnessError::io(format!(
            "renaming {} to {}",
            root.display(),
            dest.display()
        )))
    })();
    // Best effort: a leftover temporary directory is only wasted space.
    let _ = fs::remove_dir_all(&tmp);
    result
}

/// `apt-get download package=version` in `dir`; returns the `.deb`.
fn download(dir: &Path, package: &str, version: &str) -> Result<PathBuf, HarnessError> {
    let spec = format!("{package}={version}");
    eprintln!("harness: apt-get download {spec}");
    let started = std::time::Instant::now();
    let out = Command::new("apt-get")
        .args(["download", "-q", &spec])
        .current_dir(dir)
        .env("LC_ALL", "C")
        .stdin(Stdio::null())
        .output()
        .map_err(spawn_error("apt-get download", "apt"))?;
    if !out.status.success() {
        return Err(failed(
            format!("apt-get download {spec}"),
            format!(
                "{}: {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        ));
    }
    let mut debs = Vec::new();
    for entry in
        fs::read_dir(dir).map_err(HarnessError::io(format!("listing {}", dir.display())))?
    {
        let path = entry
            .map_err(HarnessError::io(format!("listing {}", dir.display())))?
            .path();
        if path.extension().is_some_and(|e| e == "deb") {
            debs.push(path);
        }
    }
    match <[_; 1]>::try_from(debs) {
        Ok([deb]) => {
            let size = fs::metadata(&deb).map(|m| m.len()).unwrap_or(0);
            eprintln!(
                "harness: downloaded {} ({:.1} MiB) in {:.1} s",
                deb.display(),
                size as f64 / (1024.0 * 1024.0),
                started.elapsed().as_secs_f64()
            );
            Ok(deb)
        }
        Err(debs) => Err(failed(
            format!("apt-get download {spec}"),
            format!(
                "expected one .deb in {}, found {}",
                dir.display(),
                debs.len()
            ),
        )),
    }
}

/// `dpkg-deb --fsys-tarfile deb | tar -x -C root members...`; on failure, both
/// programs' stderr.
fn unpack(deb: &Path, root: &Path, members: &[&str]) -> Result<(), String> {
    let mut dpkg = Command::new("dpkg-deb")
        .arg("--fsys-tarfile")
        .arg(deb)
        .env("LC_ALL", "C")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run dpkg-deb (Debian package dpkg): {e}"))?;
    let Some(tarball) = dpkg.stdout.take() else {
        // stdout was set to piped just above, so it is there; kill and reap if not.
        let _ = dpkg.kill();
        let _ = dpkg.wait();
        return Err("dpkg-deb has no stdout pipe".to_string());
    };
    let tar = Command::new("tar")
        .arg("-x")
        .arg("-C")
        .arg(root)
        .args(members)
        .env("LC_ALL", "C")
        .stdin(Stdio::from(tarball))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output();
    // tar has read everything it will (or failed); dpkg-deb ends on EOF or SIGPIPE.
    let mut dpkg_err = String::new();
    if let Some(mut e) = dpkg.stderr.take() {
        let _ = e.read_to_string(&mut dpkg_err);
    }
    let dpkg_status = dpkg
        .wait()
        .map_err(|e| format!("waiting for dpkg-deb: {e}"))?;
    let tar = tar.map_err(|e| format!("cannot run tar (Debian package tar): {e}"))?;
    if !tar.status.success() {
        return Err(format!(
            "tar {}: {}{}",
            tar.status,
            String::from_utf8_lossy(&tar.stderr).trim(),
            if dpkg_err.trim().is_empty() {
                String::new()
            } else {
                format!("; dpkg-deb: {}", dpkg_err.trim())
            }
        ));
    }
    if !dpkg_status.success() {
        return Err(format!(
            "dpkg-deb --fsys-tarfile {dpkg_status}: {}",
            dpkg_err.trim()
        ));
    }
    Ok(())
}

/// `<cache>/<requested>.last`: what `requested` resolved to last time.
fn last_path(cache: &Path, requested: &str) -> PathBuf {
    cache.join(format!("{}.last", escape(requested)))
}

fn read_last(cache: &Path, requested: &str) -> Option<(String, String)> {
    let text = fs::read_to_string(last_path(cache, requested)).ok()?;
    parse_last(&text).filter(|(p, v)| cache.join(entry_name(p, v)).is_dir())
}

fn write_last(
    cache: &Path,
    requested: &str,
    package: &str,
    version: &str,
) -> Result<(), HarnessError> {
    let path = last_path(cache, requested);
    let tmp = cache.join(format!(".tmp-last-{}", std::process::id()));
    fs::write(&tmp, format!("{package}\n{version}\n"))
        .and_then(|()| fs::rename(&tmp, &path))
        .map_err(HarnessError::io(format!("writing {}", path.display())))
}

/// Reads a `.last` record: the package name and version on two lines.
pub fn parse_last(text: &str) -> Option<(String, String)> {
    let mut lines = text.lines().map(str::trim);
    let package = lines.next().filter(|s| is_package_name(s))?;
    let version = lines
        .next()
        .filter(|s| !s.is_empty() && !s.contains(char::is_whitespace))?;
    Some((package.to_string(), version.to_string()))
}

/// Debian policy 5.6.1: lower-case letters, digits, `+ - .`; at least two
/// characters, starting with an alphanumeric.
pub fn is_package_name(s: &str) -> bool {
    s.len() >= 2
        && s.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "+-.".contains(c))
}

/// The cache directory name of `package` at `version`: `<package>_<version>` with
/// the epoch's `:` (and anything else unusual in a path) escaped as `%xx`, as apt
/// names its `.deb` files.
pub fn entry_name(package: &str, version: &str) -> String {
    format!("{}_{}", escape(package), escape(version))
}

fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"+-.~_".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02x}"));
        }
    }
    out
}

/// The fields of the first stanza of a Debian control record (`apt-cache show`
/// output), continuation lines dropped: `(name, value)` in order.
pub fn parse_stanza(text: &str) -> Vec<(String, String)> {
    let mut fields = Vec::new();
    for line in text.lines() {
        if line.trim().is_empty() {
            if fields.is_empty() {
                continue;
            }
            break;
        }
        if line.starts_with([' ', '\t']) {
            continue;
        }
        if let Some((name, value)) = line.split_once(':') {
            fields.push((name.trim().to_string(), value.trim().to_string()));
        }
    }
    fields
}

/// The value of field `name` (case-insensitive, as in deb-control(5)).
pub fn field<'a>(fields: &'a [(String, String)], name: &str) -> Option<&'a str> {
    fields
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// The first `linux-image-*` package named in a `Depends:` value (alternatives
/// included), without its version constraint or architecture qualifier.
pub fn kernel_dependency(depends: &str) -> Option<String> {
    depends
        .split([',', '|'])
        .map(|d| {
            let d = d.trim();
            let end = d.find([' ', '(', ':', '[']).unwrap_or(d.len());
            &d[..end]
        })
        .find(|name| name.starts_with("linux-image-") && is_package_name(name))
        .map(str::to_string)
}

/// The kernel release of an image file name: `vmlinuz-6.1.0-56-amd64` gives
/// `6.1.0-56-amd64`.
pub fn kernel_release(file_name: &str) -> Option<&str> {
    file_name
        .strip_prefix("vmlinuz-")
        .filter(|r| !r.is_empty() && !r.contains('/'))
}

/// A failure described by what was done and what the tool said (`"apt-get download
/// x: <stderr>"`).
fn failed(what: impl Into<String>, detail: impl Into<String>) -> HarnessError {
    HarnessError::Io {
        what: what.into(),
        source: io::Error::other(detail.into()),
    }
}

fn spawn_error(program: &str, package: &'static str) -> impl FnOnce(io::Error) -> HarnessError {
    let program = program.to_string();
    move |source| HarnessError::Spawn {
        program,
        package,
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const META: &str = "Package: linux-image-cloud-amd64\n\
        Source: linux-signed-amd64 (6.1.192+2)\n\
        Version: 6.1.192-2\n\
        Depends: linux-image-6.1.0-56-cloud-amd64 (= 6.1.192-2)\n\
        Description-en: Linux for x86-64 cloud (meta-package)\n \
        This package depends on the latest Linux kernel\n \
        Depends: not-a-field\n\
        \n\
        Package: linux-image-cloud-amd64\n\
        Version: 6.1.176-1\n";

    #[test]
    fn stanza_fields_stop_at_the_first_record_and_skip_continuations() {
        let fields = parse_stanza(META);
        assert_eq!(field(&fields, "Version"), Some("6.1.192-2"));
        assert_eq!(field(&fields, "version"), Some("6.1.192-2"));
        assert_eq!(
            field(&fields, "Depends"),
            Some("linux-image-6.1.0-56-cloud-amd64 (= 6.1.192-2)")
        );
        assert_eq!(
            field(&fields, "Source"),
            Some("linux-signed-amd64 (6.1.192+2)")
        );
        assert_eq!(field(&fields, "Missing"), None);
        assert_eq!(fields.iter().filter(|(n, _)| n == "Depends").count(), 1);
        assert!(parse_stanza("").is_empty());
        assert_eq!(parse_stanza("\n\nA: b\n").len(), 1);
    }

    #[test]
    fn the_kernel_dependency_is_the_first_linux_image() {
        assert_eq!(
            kernel_dependency("linux-image-6.1.0-56-amd64 (= 6.1.192-2)").as_deref(),
            Some("linux-image-6.1.0-56-amd64")
        );
        assert_eq!(
            kernel_dependency(
                "initramfs-tools | linux-initramfs-tool, linux-image-6.1.0-56-cloud-amd64:amd64"
            )
            .as_deref(),
            Some("linux-image-6.1.0-56-cloud-amd64")
        );
        assert_eq!(kernel_dependency("busybox, libc6 (>= 2.36)"), None);
        assert_eq!(kernel_dependency(""), None);
        assert_eq!(kernel_dependency("linux-image-BAD"), None);
    }

    #[test]
    fn kernel_release_from_the_image_name() {
        assert_eq!(
            kernel_release("vmlinuz-6.1.0-56-cloud-amd64"),
            Some("6.1.0-56-cloud-amd64")
        );
        assert_eq!(kernel_release("config-6.1.0-56-amd64"), None);
        assert_eq!(kernel_release("vmlinuz-"), None);
        assert_eq!(kernel_release("vmlinuz"), None);
    }

    #[test]
    fn cache_names_escape_epochs_and_separators() {
        assert_eq!(
            entry_name("busybox-static", "1:1.35.0-4+deb12u1+b1"),
            "busybox-static_1%3a1.35.0-4+deb12u1+b1"
        );
        assert_eq!(entry_name("a", "../x y"), "a_..%2fx%20y");
        assert!(!entry_name("p", "1/2").contains('/'));
    }

    #[test]
    fn last_records_round_trip_and_reject_junk() {
        assert_eq!(
            parse_last("linux-image-6.1.0-56-amd64\n6.1.192-2\n"),
            Some(("linux-image-6.1.0-56-amd64".into(), "6.1.192-2".into()))
        );
        for bad in ["", "pkg\n", "Bad_Name\n1\n", "pkg\n1 2\n", "../x\n1\n"] {
            assert_eq!(parse_last(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn package_names_follow_policy() {
        for good in ["busybox-static", "linux-image-6.1.0-56-amd64", "g++", "0ad"] {
            assert!(is_package_name(good), "{good}");
        }
        for bad in ["", "a", "-x", "Upper", "a_b", "a b", "a/b"] {
            assert!(!is_package_name(bad), "{bad}");
        }
    }

    #[test]
    fn flavours_name_their_metapackages() {
        assert_eq!(Flavour::Generic.metapackage(), "linux-image-amd64");
        assert_eq!(Flavour::Cloud.metapackage(), "linux-image-cloud-amd64");
        assert_eq!(Flavour::ALL.map(Flavour::name), ["generic", "cloud"]);
    }

    /// A scratch cache of this test process (removed by the caller).
    fn scratch(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("keel-debian-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).expect("scratch dir");
        dir
    }

    #[test]
    fn a_cached_entry_answers_when_apt_does_not_know_the_name() {
        let cache = scratch("offline");
        let entry = cache.join(entry_name("linux-image-9.9.9-1-amd64", "9.9.9-1"));
        fs::create_dir_all(entry.join("boot")).expect("entry");
        fs::write(
            last_path(&cache, "keel-no-such-package-x"),
            "linux-image-9.9.9-1-amd64\n9.9.9-1\n",
        )
        .expect("record");
        let got = fetch_in(&cache, "keel-no-such-package-x", true, &[KERNEL_MEMBER]);
        // Without the record's directory the same call has nothing to fall back on.
        fs::remove_dir_all(&entry).expect("remove entry");
        assert_eq!(read_last(&cache, "keel-no-such-package-x"), None);
        fs::remove_dir_all(&cache).expect("clean up");
        let got = got.expect("served from the cache");
        assert_eq!(got.package, "linux-image-9.9.9-1-amd64");
        assert_eq!(got.version, "9.9.9-1");
        assert_eq!(got.root, entry);
    }

    #[test]
    fn unpack_reports_both_tools() {
        let dir = scratch("unpack");
        let deb = dir.join("not-a.deb");
        fs::write(&deb, b"garbage").expect("deb");
        let err = unpack(&deb, &dir, &["./boot"]).expect_err("garbage is no .deb");
        fs::remove_dir_all(&dir).expect("clean up");
        assert!(err.contains("dpkg-deb") || err.contains("tar"), "{err}");
    }
}
