//! Xen's errno values (`xen/include/public/errno.h`).
//!
//! These are Xen's own numbers (they happen to follow x86 Linux), not the
//! host's: a hypercall returns `-errno` in `rax` (or `eax` for a 32-bit
//! caller). `EINTR` and `ERESTART` are internal to Xen and must never reach
//! a guest; they are here so the whole header is transcribed, and the
//! dispatcher never returns them. `EWOULDBLOCK` and `EDEADLOCK` are aliases
//! (associated constants), as in the header.

use core::fmt;

/// A Xen errno value. The discriminant is the positive number.
#[allow(clippy::upper_case_acronyms)]
#[repr(i32)]
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum Errno {
    /// Operation not permitted.
    EPERM = 1,
    /// No such file or directory.
    ENOENT = 2,
    /// No such process (Xen: no such domain).
    ESRCH = 3,
    /// Interrupted system call. Internal to Xen; never returned to guests.
    EINTR = 4,
    /// I/O error.
    EIO = 5,
    /// No such device or address.
    ENXIO = 6,
    /// Argument list too long.
    E2BIG = 7,
    /// Exec format error.
    ENOEXEC = 8,
    /// Bad file number.
    EBADF = 9,
    /// No child processes.
    ECHILD = 10,
    /// Try again (alias `EWOULDBLOCK`).
    EAGAIN = 11,
    /// Out of memory.
    ENOMEM = 12,
    /// Permission denied.
    EACCES = 13,
    /// Bad address: a guest pointer could not be accessed.
    EFAULT = 14,
    /// Device or resource busy.
    EBUSY = 16,
    /// File exists.
    EEXIST = 17,
    /// Cross-device link.
    EXDEV = 18,
    /// No such device.
    ENODEV = 19,
    /// Not a directory.
    ENOTDIR = 20,
    /// Is a directory.
    EISDIR = 21,
    /// Invalid argument.
    EINVAL = 22,
    /// File table overflow.
    ENFILE = 23,
    /// Too many open files.
    EMFILE = 24,
    /// No space left on device.
    ENOSPC = 28,
    /// Read-only file system.
    EROFS = 30,
    /// Too many links.
    EMLINK = 31,
    /// Math argument out of domain of function.
    EDOM = 33,
    /// Math result not representable.
    ERANGE = 34,
    /// Resource deadlock would occur (alias `EDEADLOCK`).
    EDEADLK = 35,
    /// File name too long.
    ENAMETOOLONG = 36,
    /// No record locks available.
    ENOLCK = 37,
    /// Function not implemented: unknown hypercall or sub-op.
    ENOSYS = 38,
    /// Directory not empty.
    ENOTEMPTY = 39,
    /// No data available.
    ENODATA = 61,
    /// Timer expired.
    ETIME = 62,
    /// Not a data message.
    EBADMSG = 74,
    /// Value too large for defined data type.
    EOVERFLOW = 75,
    /// Illegal byte sequence.
    EILSEQ = 84,
    /// Restart the interrupted call. Internal to Xen; never returned to guests.
    ERESTART = 85,
    /// Socket operation on non-socket.
    ENOTSOCK = 88,
    /// Message too large.
    EMSGSIZE = 90,
    /// Operation not supported.
    EOPNOTSUPP = 95,
    /// Address already in use.
    EADDRINUSE = 98,
    /// Cannot assign requested address.
    EADDRNOTAVAIL = 99,
    /// No buffer space available.
    ENOBUFS = 105,
    /// Transport endpoint is already connected.
    EISCONN = 106,
    /// Transport endpoint is not connected.
    ENOTCONN = 107,
    /// Connection timed out.
    ETIMEDOUT = 110,
    /// Connection refused.
    ECONNREFUSED = 111,
}

/// Every value, in numeric order (for `from_raw`, tests and tables).
const ALL: [Errno; 49] = {
    use Errno::*;
    [
        EPERM,
        ENOENT,
        ESRCH,
        EINTR,
        EIO,
        ENXIO,
        E2BIG,
        ENOEXEC,
        EBADF,
        ECHILD,
        EAGAIN,
        ENOMEM,
        EACCES,
        EFAULT,
        EBUSY,
        EEXIST,
        EXDEV,
        ENODEV,
        ENOTDIR,
        EISDIR,
        EINVAL,
        ENFILE,
        EMFILE,
        ENOSPC,
        EROFS,
        EMLINK,
        EDOM,
        ERANGE,
        EDEADLK,
        ENAMETOOLONG,
        ENOLCK,
        ENOSYS,
        ENOTEMPTY,
        ENODATA,
        ETIME,
        EBADMSG,
        EOVERFLOW,
        EILSEQ,
        ERESTART,
        ENOTSOCK,
        EMSGSIZE,
        EOPNOTSUPP,
        EADDRINUSE,
        EADDRNOTAVAIL,
        ENOBUFS,
        EISCONN,
        ENOTCONN,
        ETIMEDOUT,
        ECONNREFUSED,
    ]
};

#[allow(clippy::upper_case_acronyms)]
impl Errno {
    /// Alias of [`Errno::EAGAIN`].
    pub const EWOULDBLOCK: Errno = Errno::EAGAIN;
    /// Alias of [`Errno::EDEADLK`].
    pub const EDEADLOCK: Errno = Errno::EDEADLK;

    /// The positive errno number.
    #[must_use]
    pub const fn raw(self) -> i32 {
        self as i32
    }

    /// The hypercall return value for this error: `-errno`.
    #[must_use]
    pub const fn neg(self) -> i64 {
        -(self as i64)
    }

    /// The errno for a positive number, if Xen defines one.
    #[must_use]
    pub fn from_raw(raw: i32) -> Option<Errno> {
        ALL.iter().copied().find(|e| e.raw() == raw)
    }

    /// The errno a hypercall return value denotes (`ret` in `-4095..=-1`).
    #[must_use]
    pub fn from_ret(ret: i64) -> Option<Errno> {
        if (-4095..0).contains(&ret) {
            Self::from_raw(i32::try_from(-ret).ok()?)
        } else {
            None
        }
    }

    /// Every errno value, in numeric order.
    pub fn all() -> impl Iterator<Item = Errno> {
        ALL.iter().copied()
    }

    /// The symbolic name, e.g. `"EFAULT"`.
    #[must_use]
    pub const fn name(self) -> &'static str {
        use Errno::*;
        match self {
            EPERM => "EPERM",
            ENOENT => "ENOENT",
            ESRCH => "ESRCH",
            EINTR => "EINTR",
            EIO => "EIO",
            ENXIO => "ENXIO",
            E2BIG => "E2BIG",
            ENOEXEC => "ENOEXEC",
            EBADF => "EBADF",
            ECHILD => "ECHILD",
            EAGAIN => "EAGAIN",
            ENOMEM => "ENOMEM",
            EACCES => "EACCES",
            EFAULT => "EFAULT",
            EBUSY => "EBUSY",
            EEXIST => "EEXIST",
            EXDEV => "EXDEV",
            ENODEV => "ENODEV",
            ENOTDIR => "ENOTDIR",
            EISDIR => "EISDIR",
            EINVAL => "EINVAL",
            ENFILE => "ENFILE",
            EMFILE => "EMFILE",
            ENOSPC => "ENOSPC",
            EROFS => "EROFS",
            EMLINK => "EMLINK",
            EDOM => "EDOM",
            ERANGE => "ERANGE",
            EDEADLK => "EDEADLK",
            ENAMETOOLONG => "ENAMETOOLONG",
            ENOLCK => "ENOLCK",
            ENOSYS => "ENOSYS",
            ENOTEMPTY => "ENOTEMPTY",
            ENODATA => "ENODATA",
            ETIME => "ETIME",
            EBADMSG => "EBADMSG",
            EOVERFLOW => "EOVERFLOW",
            EILSEQ => "EILSEQ",
            ERESTART => "ERESTART",
            ENOTSOCK => "ENOTSOCK",
            EMSGSIZE => "EMSGSIZE",
            EOPNOTSUPP => "EOPNOTSUPP",
            EADDRINUSE => "EADDRINUSE",
            EADDRNOTAVAIL => "EADDRNOTAVAIL",
            ENOBUFS => "ENOBUFS",
            EISCONN => "EISCONN",
            ENOTCONN => "ENOTCONN",
            ETIMEDOUT => "ETIMEDOUT",
            ECONNREFUSED => "ECONNREFUSED",
        }
    }
}

impl fmt::Display for Errno {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}
