//! `HYPERVISOR_xen_version` (Xen `do_xen_version`, `xen/common/kernel.c`).
//!
//! `xen_version(int cmd, void *arg)`: `cmd` is the low 32 bits of the first
//! argument. Permission follows Xen's default XSM policy
//! (`xsm_xen_version`, `xen/include/xsm/dummy.h`): everything is open to
//! every domain except `XENVER_commandline` (an unprivileged domain reads
//! `"<denied>"`) and `XENVER_build_id`/`XENVER_commandline2` (`-EPERM`).
//!
//! The fixed-size sub-ops build their whole buffer zeroed, copy the string
//! in truncated with a NUL kept (`safe_strcpy`), and copy it out once, so a
//! bad pointer is `-EFAULT` with nothing else done.

use super::{Ctx, Domain, GuestWidth, Outcome};
use crate::abi::Errno;
use crate::abi::version::{
    XEN_COMMANDLINE_LEN, XEN_DENY, XEN_PAGE_SIZE, XEN_VARBUF_BUF_OFFSET, XEN_VARBUF_MAX,
    XENVER_BUILD_ID, XENVER_CAPABILITIES, XENVER_CAPABILITIES2, XENVER_CHANGESET,
    XENVER_CHANGESET2, XENVER_COMMANDLINE, XENVER_COMMANDLINE2, XENVER_COMPILE_INFO,
    XENVER_EXTRAVERSION, XENVER_EXTRAVERSION2, XENVER_GET_FEATURES, XENVER_GUEST_HANDLE,
    XENVER_PAGESIZE, XENVER_PLATFORM_PARAMETERS, XENVER_VERSION, XenCapabilitiesInfo,
    XenChangesetInfo, XenCommandline, XenCompileInfo, XenExtraversion, XenFeatureInfo,
    XenPlatformParameters, XenPlatformParametersCompat, XenVarbuf,
};

pub(super) fn do_xen_version<D: Domain + ?Sized>(
    cx: &mut Ctx<'_, D>,
    cmd: u64,
    arg: u64,
) -> Outcome {
    // `int cmd`: the low 32 bits.
    let cmd = cmd as u32;
    Outcome::from_result(xen_version(cx, cmd, arg))
}

fn xen_version<D: Domain + ?Sized>(cx: &mut Ctx<'_, D>, cmd: u32, arg: u64) -> Result<i64, Errno> {
    let privileged = cx.d.is_privileged();
    match cmd {
        XENVER_VERSION => {
            let v = cx.d.version();
            Ok(i64::from(v.major) << 16 | i64::from(v.minor))
        }
        XENVER_EXTRAVERSION => {
            let mut buf: XenExtraversion = Default::default();
            safe_strcpy(&mut buf, cx.d.version().extraversion);
            cx.write(arg, &buf).map(|()| 0)
        }
        XENVER_COMPILE_INFO => {
            let v = cx.d.version();
            let mut info = XenCompileInfo::default();
            safe_strcpy(&mut info.compiler, v.compiler);
            safe_strcpy(&mut info.compile_by, v.compile_by);
            safe_strcpy(&mut info.compile_domain, v.compile_domain);
            safe_strcpy(&mut info.compile_date, v.compile_date);
            cx.write(arg, &info.to_bytes()).map(|()| 0)
        }
        XENVER_CAPABILITIES => {
            let mut buf: XenCapabilitiesInfo = [0; _];
            safe_strcpy(&mut buf, cx.d.version().capabilities);
            cx.write(arg, &buf).map(|()| 0)
        }
        XENVER_CHANGESET => {
            let mut buf: XenChangesetInfo = [0; _];
            safe_strcpy(&mut buf, cx.d.version().changeset);
            cx.write(arg, &buf).map(|()| 0)
        }
        XENVER_PLATFORM_PARAMETERS => {
            // keel runs no PV guests: there is no hypervisor hole in the
            // guest's address space, and Xen reports 0 to HVM guests.
            match cx.width {
                GuestWidth::Bits64 => {
                    let p = XenPlatformParameters { virt_start: 0 };
                    cx.write(arg, &p.to_bytes())
                }
                GuestWidth::Bits32 => {
                    let p = XenPlatformParametersCompat { virt_start: 0 };
                    cx.write(arg, &p.to_bytes())
                }
            }
            .map(|()| 0)
        }
        XENVER_GET_FEATURES => {
            let mut fi = XenFeatureInfo::from_bytes(&cx.read(arg)?);
            let features = cx.d.version().features;
            fi.submap = *features.get(fi.submap_idx as usize).ok_or(Errno::EINVAL)?;
            cx.write(arg, &fi.to_bytes()).map(|()| 0)
        }
        XENVER_PAGESIZE => {
            // The argument must be NULL.
            if arg != 0 {
                return Err(Errno::EINVAL);
            }
            Ok(XEN_PAGE_SIZE as i64)
        }
        XENVER_GUEST_HANDLE => {
            let handle = cx.d.version().handle;
            cx.write(arg, &handle).map(|()| 0)
        }
        XENVER_COMMANDLINE => {
            if privileged {
                let mut buf: XenCommandline = [0; XEN_COMMANDLINE_LEN];
                safe_strcpy(&mut buf, cx.d.version().commandline);
                cx.write(arg, &buf)
            } else {
                // Xen copies strlen("<denied>") + 1 bytes.
                let mut denied = [0u8; XEN_DENY.len() + 1];
                denied[..XEN_DENY.len()].copy_from_slice(XEN_DENY);
                cx.write(arg, &denied)
            }
            .map(|()| 0)
        }
        XENVER_BUILD_ID | XENVER_COMMANDLINE2 if !privileged => Err(Errno::EPERM),
        XENVER_BUILD_ID => {
            let id = cx.d.version().build_id;
            if id.is_empty() {
                return Err(Errno::ENODATA);
            }
            varbuf_op(cx, arg, id.len(), |v| v.build_id)
        }
        XENVER_EXTRAVERSION2 => {
            let len = strlen(cx.d.version().extraversion);
            varbuf_op(cx, arg, len, |v| v.extraversion)
        }
        XENVER_CAPABILITIES2 => {
            let len = strlen(cx.d.version().capabilities);
            varbuf_op(cx, arg, len, |v| v.capabilities)
        }
        XENVER_CHANGESET2 => {
            let len = strlen(cx.d.version().changeset);
            varbuf_op(cx, arg, len, |v| v.changeset)
        }
        XENVER_COMMANDLINE2 => {
            let len = strlen(cx.d.version().commandline);
            varbuf_op(cx, arg, len, |v| v.commandline)
        }
        _ => Err(Errno::ENOSYS),
    }
}

/// The `xen_varbuf` protocol (`xenver_varbuf_op`): a NULL `arg` asks for the
/// length; otherwise the buffer must hold `len` bytes, which are copied to
/// `buf[]` without a NUL, and the length is returned.
fn varbuf_op<D: Domain + ?Sized>(
    cx: &mut Ctx<'_, D>,
    arg: u64,
    len: usize,
    pick: impl for<'v> Fn(&super::VersionInfo<'v>) -> &'v [u8],
) -> Result<i64, Errno> {
    if len > XEN_VARBUF_MAX {
        return Err(Errno::E2BIG);
    }
    // Bounded by XEN_VARBUF_MAX just above.
    let ret = len as i64;
    if arg == 0 {
        return Ok(ret);
    }
    let header = XenVarbuf::from_bytes(&cx.read(arg)?);
    if len > header.len as usize {
        return Err(Errno::ENOBUFS);
    }
    let buf = cx.offset(arg, XEN_VARBUF_BUF_OFFSET as u64)?;
    // Copy in bounded pieces: the string is borrowed from the domain, which
    // the copy needs mutably.
    let mut done = 0;
    let mut chunk = [0u8; 128];
    while done < len {
        let n = (len - done).min(chunk.len());
        chunk[..n].copy_from_slice(&pick(&cx.d.version())[done..done + n]);
        cx.write(cx.offset(buf, done as u64)?, &chunk[..n])?;
        done += n;
    }
    Ok(ret)
}

/// Length of a string that may carry a NUL terminator.
fn strlen(s: &[u8]) -> usize {
    s.iter().position(|&b| b == 0).unwrap_or(s.len())
}

/// Xen's `safe_strcpy` into a zeroed buffer: at most `dst.len() - 1` bytes,
/// so a NUL always follows.
fn safe_strcpy(dst: &mut [u8], src: &[u8]) {
    let n = strlen(src).min(dst.len().saturating_sub(1));
    dst[..n].copy_from_slice(&src[..n]);
}
