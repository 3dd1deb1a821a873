//! Every domain on the machine, by id (Xen: `domain_list`, `rcu_lock_domain_by_id`):
//! the table admission adds to and destruction takes from (`domains.rs`), and the
//! look-ups everyone else makes. Shared, not lent: a look-up hands out an
//! `Arc<Domain>`, which keeps the domain (and every frame it owns) alive for as
//! long as it is held.
//!
//! # Locking
//! [`DOMAINS`] is a read-write lock, read under any other lock and written under
//! none (only `domains::admit` and `domains::destroy` write it). [`DYING`] is a
//! leaf.

use alloc::collections::BTreeMap;
use alloc::sync::Arc;
use alloc::vec::Vec;

use crate::domain::Domain;

/// Every live domain.
pub static DOMAINS: spin::RwLock<BTreeMap<u16, Arc<Domain>>> = spin::RwLock::new(BTreeMap::new());
/// Domains being destroyed: out of [`DOMAINS`] (nothing new can reach them) but
/// still reachable by their peers' channel teardown until theirs is done
/// ([`find`]).
pub static DYING: spin::Mutex<BTreeMap<u16, Arc<Domain>>> = spin::Mutex::new(BTreeMap::new());
/// Domain `id`, kept alive while the `Arc` is held.
pub fn get(id: u16) -> Option<Arc<Domain>> {
    DOMAINS.read().get(&id).cloned()
}

/// Domain `id`, live or being destroyed: for event-channel teardown, which must
/// reach a dying peer's table until it is empty.
pub fn find(id: u16) -> Option<Arc<Domain>> {
    get(id).or_else(|| DYING.lock().get(&id).cloned())
}

/// Whether any domain is left.
pub fn any() -> bool {
    !DOMAINS.read().is_empty()
}

/// The ids of every live domain.
pub fn ids() -> Vec<u16> {
    DOMAINS.read().keys().copied().collect()
}
