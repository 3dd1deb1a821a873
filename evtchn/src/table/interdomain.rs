//! The operations that involve two domains' tables: binding to, closing and
//! sending on an interdomain channel, and closing every channel between two
//! domains (a step of emptying a table).
//!
//! # What
//!
//! Each function takes both tables by role (`local`: the domain whose port
//! the guest named; `remote`: the other), never by lock order; locking is
//! the caller's (see [`crate::table`]): it holds both tables' locks,
//! taken lower domain id first, for the whole call and for the delivery of
//! any returned [`Notify`].
//!
//! The caller learns which remote table to lock from a [`Reach::Remote`]
//! read under the local lock alone, then drops that lock to take both in
//! order. By then the port may have been closed, rebound, unbound by the
//! peer's close or the peer's destruction. So nothing here trusts what the
//! caller saw: each function reads the port again and acts on what it is
//! now. A port now connected to a third domain must have been freed in
//! between (only a free port is bound anew), so `EINVAL` (what the op
//! answers for a free port) is a correct answer, as in Xen's `evtchn_close`.
//!
//! # Invariants
//!
//! - Both ends of a channel change together, under both locks.
//! - A function given two tables of the same domain id (a kernel bug: loopback
//!   has its one-table forms) refuses or does nothing; nothing panics.

use keel_hypercall::abi::Errno;

use super::{Notify, Reach, State, Table};
use crate::Port;

/// `EVTCHNOP_bind_interdomain` from `local` (the caller) to `remote_port`
/// of another domain's table, which must be [`State::Unbound`] for
/// `local`'s domain: connects a fresh port of `local` to it. Returns the
/// local port and the event Xen raises on it unconditionally (the peer may
/// have signalled before the bind): deliver it under `local`'s lock. The
/// remote end keeps its notify vCPU; the local one starts on vCPU 0.
///
/// # Locking
///
/// Both tables, lower domain id first. The guest named the remote port, so
/// there is nothing stale to re-check.
///
/// # Errors
///
/// In Xen's order: `ENOSPC`/`ENOMEM` if `local` has no free port (`EINVAL`
/// if it is dying); `EINVAL` if `remote_port` is not valid, not unbound for
/// `local`'s domain, or `remote` is dying; `EINVAL` also if both tables are
/// of one domain (use [`Table::bind_loopback`]). (`ESRCH` for a missing
/// domain is the kernel's, checked first.)
pub fn bind_interdomain(
    local: &mut Table,
    remote: &mut Table,
    remote_port: Port,
) -> Result<(Port, Notify), Errno> {
    if local.dom == remote.dom {
        return Err(Errno::EINVAL);
    }
    let lport = local.get_free_port()?;
    if remote.dying || !remote.is_unbound_for(remote_port, local.dom) {
        return Err(Errno::EINVAL);
    }
    remote.set_state(
        remote_port,
        State::Interdomain {
            remote_dom: local.dom,
            remote_port: lport,
        },
    );
    local.bind(
        lport,
        State::Interdomain {
            remote_dom: remote.dom,
            remote_port,
        },
        0,
    );
    Ok((
        lport,
        Notify {
            dom: local.dom,
            port: lport,
            vcpu: 0,
        },
    ))
}

/// `EVTCHNOP_close` of `port` of `local`, with `remote`'s table also held:
/// after [`Table::close`] answered [`Reach::Remote`] with `remote`'s domain.
/// Reads the port again: if it is still connected to `remote`, frees it,
/// and the remote end becomes [`State::Unbound`] towards `local`'s domain
/// (keeping its vCPU) so it can be bound again (freed instead if `remote`
/// is dying). If the channel now lies within `local` (the peer closed its
/// end meanwhile, or the port was freed and rebound), closes it as
/// [`Table::close`] does.
///
/// # Locking
///
/// Both tables, lower domain id first.
///
/// # Errors
///
/// `EINVAL` if `port` is not valid or free; `EINVAL` if it is now connected
/// to a third domain (it was freed in between, so that is what a close then
/// would have answered; Xen answers the same), or both tables are of one
/// domain. Nothing changes on error.
pub fn close_interdomain(local: &mut Table, port: Port, remote: &mut Table) -> Result<(), Errno> {
    match local.close(port)? {
        Reach::Local(()) => Ok(()),
        Reach::Remote(d) if d == remote.dom => {
            let Some((_, remote_port)) = local.remote_end(port) else {
                // close() answered Remote only for such a port.
                return Err(Errno::EINVAL);
            };
            local.free(port);
            remote.unbind_end(remote_port, local.dom, port);
            Ok(())
        }
        Reach::Remote(_) => Err(Errno::EINVAL),
    }
}

/// `EVTCHNOP_send` on `port` of `local`, with `remote`'s table also held:
/// after [`Table::send`] answered [`Reach::Remote`] with `remote`'s domain.
/// Reads the port again: if it is still connected to `remote` (and the
/// remote end still to it), the event for the remote end; if the channel
/// now lies within `local`, what [`Table::send`] answers for it (an unbound
/// port: nothing). Deliver the event before dropping `remote`'s lock.
///
/// # Locking
///
/// Both tables, lower domain id first (shared access suffices for the
/// tables; the delivery must still exclude a close of the remote port).
///
/// # Errors
///
/// `EINVAL` if `port` is not valid, free or a VIRQ; `EINVAL` if it is now
/// connected to a third domain (it was freed in between), or the remote end
/// does not point back at it (a table of the same id but another
/// incarnation of the domain), or both tables are of one domain.
pub fn send_interdomain(
    local: &Table,
    port: Port,
    remote: &Table,
) -> Result<Option<Notify>, Errno> {
    match local.send(port)? {
        Reach::Local(n) => Ok(n),
        Reach::Remote(d) if d == remote.dom => {
            let (_, remote_port) = local.remote_end(port).ok_or(Errno::EINVAL)?;
            let connected = State::Interdomain {
                remote_dom: local.dom,
                remote_port: port,
            };
            let rc = remote
                .chan(remote_port)
                .filter(|c| c.state == connected)
                .ok_or(Errno::EINVAL)?;
            Ok(Some(Notify {
                dom: d,
                port: remote_port,
                vcpu: rc.vcpu,
            }))
        }
        Reach::Remote(_) => Err(Errno::EINVAL),
    }
}

/// Closes every port of `table` connected to `peer`'s domain, as
/// [`close_interdomain`] each: `table`'s ends are freed (clear their pending
/// bits if the domain lives on, as after a reset), `peer`'s become
/// [`State::Unbound`] towards `table`'s domain (freed if `peer` is dying).
/// A step of emptying `table` (see [`Table::close_local`]); returns the
/// number of ports of `table` freed. Ports of `table` naming `peer`'s domain
/// whose other end does not point back are freed too, so each call
/// removes every channel with that domain. Does nothing if both tables are
/// of one domain.
///
/// # Locking
///
/// Both tables, lower domain id first.
pub fn close_peer(table: &mut Table, peer: &mut Table) -> u32 {
    if table.dom == peer.dom {
        return 0;
    }
    let mut freed = 0;
    for port in (1..table.valid_ports()).rev() {
        let Some((d, remote_port)) = table.remote_end(port) else {
            continue;
        };
        if d != peer.dom {
            continue;
        }
        table.free(port);
        peer.unbind_end(remote_port, table.dom, port);
        freed += 1;
    }
    freed
}
