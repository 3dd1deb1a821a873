//! A naive reference model of the [`Hub`](super::Hub) for the property test:
//! each domain is a map of the ports in use, VIRQ bindings are found by
//! searching that map, and validity is a high-water mark. Written from Xen's
//! rules independently of the hub's tables, so the two can disagree.

use std::collections::BTreeMap;

use keel_hypercall::abi::Errno;
use keel_hypercall::abi::domid::{DOMID_FIRST_RESERVED, DOMID_XEN, DomId};
use keel_hypercall::abi::evtchn::EVTCHN_2L_NR_CHANNELS;

use super::{HARDWARE_DOMAIN, Notify, PORTS_PER_BUCKET, State, Status};
use crate::Port;
use crate::virq::{VirqKind, virq_kind};

#[derive(Clone, Debug)]
pub struct MDom {
    pub max: u32,
    pub vcpus: u32,
    /// Ports below this are valid.
    pub valid: u32,
    /// Ports in use: state and notify vCPU.
    pub ports: BTreeMap<Port, (State, u32)>,
}

impl MDom {
    fn alloc(&mut self) -> Result<Port, Errno> {
        let port = (1..self.max)
            .find(|p| !self.ports.contains_key(p))
            .ok_or(Errno::ENOSPC)?;
        self.valid = self
            .valid
            .max((port / PORTS_PER_BUCKET + 1) * PORTS_PER_BUCKET);
        Ok(port)
    }

    fn get(&self, port: Port) -> Result<(State, u32), Errno> {
        if port >= self.valid {
            return Err(Errno::EINVAL);
        }
        Ok(self.ports.get(&port).copied().unwrap_or((State::Free, 0)))
    }

    fn virq_port(&self, virq: u32, vcpu: u32) -> Option<(Port, u32)> {
        let per_vcpu = virq_kind(virq)? == VirqKind::Vcpu;
        self.ports.iter().find_map(|(&p, &(s, v))| {
            (s == State::Virq { virq } && (!per_vcpu || v == vcpu)).then_some((p, v))
        })
    }
}

#[derive(Clone, Debug, Default)]
pub struct Model {
    pub doms: BTreeMap<DomId, MDom>,
    pub handlers: BTreeMap<u32, DomId>,
}

impl Model {
    pub fn add_domain(&mut self, dom: DomId, max: u32, vcpus: u32) -> Result<(), Errno> {
        if (dom >= DOMID_FIRST_RESERVED && dom != DOMID_XEN) || vcpus == 0 {
            return Err(Errno::EINVAL);
        }
        if self.doms.contains_key(&dom) {
            return Err(Errno::EEXIST);
        }
        let max = max.min(EVTCHN_2L_NR_CHANNELS);
        self.doms.insert(
            dom,
            MDom {
                max,
                vcpus,
                valid: PORTS_PER_BUCKET,
                ports: BTreeMap::new(),
            },
        );
        Ok(())
    }

    pub fn remove_domain(&mut self, dom: DomId) {
        let ports: Vec<Port> = match self.doms.get(&dom) {
            Some(d) => d.ports.keys().copied().collect(),
            None => return,
        };
        for p in ports {
            let _ = self.close(dom, p);
        }
        self.doms.remove(&dom);
        self.handlers.retain(|_, h| *h != dom);
    }

    pub fn alloc_unbound(
        &mut self,
        caller: DomId,
        privileged: bool,
        dom: DomId,
        remote: DomId,
    ) -> Result<Port, Errno> {
        let d = self.doms.get_mut(&dom).ok_or(Errno::ESRCH)?;
        let port = d.alloc()?;
        if dom != caller && !privileged {
            return Err(Errno::EPERM);
        }
        d.ports.insert(port, (State::Unbound { remote }, 0));
        Ok(port)
    }

    pub fn bind_interdomain(
        &mut self,
        caller: DomId,
        rdom: DomId,
        rport: Port,
    ) -> Result<(Port, Notify), Errno> {
        if !self.doms.contains_key(&rdom) {
            return Err(Errno::ESRCH);
        }
        let lport = self.doms.get_mut(&caller).ok_or(Errno::ESRCH)?.alloc()?;
        let rd = self.doms.get_mut(&rdom).ok_or(Errno::ESRCH)?;
        let (state, rvcpu) = rd.get(rport)?;
        if state != (State::Unbound { remote: caller }) {
            return Err(Errno::EINVAL);
        }
        rd.ports.insert(
            rport,
            (
                State::Interdomain {
                    remote_dom: caller,
                    remote_port: lport,
                },
                rvcpu,
            ),
        );
        let ld = self.doms.get_mut(&caller).ok_or(Errno::ESRCH)?;
        ld.ports.insert(
            lport,
            (
                State::Interdomain {
                    remote_dom: rdom,
                    remote_port: rport,
                },
                0,
            ),
        );
        Ok((
            lport,
            Notify {
                dom: caller,
                port: lport,
                vcpu: 0,
            },
        ))
    }

    pub fn handler(&self, virq: u32) -> DomId {
        self.handlers.get(&virq).copied().unwrap_or(HARDWARE_DOMAIN)
    }

    pub fn bind_virq(&mut self, caller: DomId, virq: u32, vcpu: u32) -> Result<Port, Errno> {
        let kind = virq_kind(virq).ok_or(Errno::EINVAL)?;
        if kind != VirqKind::Vcpu && vcpu != 0 {
            return Err(Errno::EINVAL);
        }
        let handler = self.handler(virq);
        let d = self.doms.get_mut(&caller).ok_or(Errno::ESRCH)?;
        if vcpu >= d.vcpus {
            return Err(Errno::ENOENT);
        }
        if kind == VirqKind::Global && handler != caller {
            return Err(Errno::EBUSY);
        }
        if d.virq_port(virq, vcpu).is_some() {
            return Err(Errno::EEXIST);
        }
        let port = d.alloc()?;
        d.ports.insert(port, (State::Virq { virq }, vcpu));
        Ok(port)
    }

    pub fn bind_ipi(&mut self, caller: DomId, vcpu: u32) -> Result<Port, Errno> {
        let d = self.doms.get_mut(&caller).ok_or(Errno::ESRCH)?;
        if vcpu >= d.vcpus {
            return Err(Errno::ENOENT);
        }
        let port = d.alloc()?;
        d.ports.insert(port, (State::Ipi, vcpu));
        Ok(port)
    }

    pub fn bind_vcpu(&mut self, caller: DomId, port: Port, vcpu: u32) -> Result<(), Errno> {
        let d = self.doms.get_mut(&caller).ok_or(Errno::ESRCH)?;
        if vcpu >= d.vcpus {
            return Err(Errno::ENOENT);
        }
        let (state, _) = d.get(port)?;
        match state {
            State::Unbound { .. } | State::Interdomain { .. } => {}
            State::Virq { virq } if virq_kind(virq) != Some(VirqKind::Vcpu) => {}
            _ => return Err(Errno::EINVAL),
        }
        d.ports.insert(port, (state, vcpu));
        Ok(())
    }

    pub fn close(&mut self, caller: DomId, port: Port) -> Result<(), Errno> {
        let d = self.doms.get_mut(&caller).ok_or(Errno::ESRCH)?;
        let (state, _) = d.get(port)?;
        if state == State::Free {
            return Err(Errno::EINVAL);
        }
        d.ports.remove(&port);
        if let State::Interdomain {
            remote_dom,
            remote_port,
        } = state
        {
            let rd = self
                .doms
                .get_mut(&remote_dom)
                .expect("model: interdomain peer exists");
            let entry = rd
                .ports
                .get_mut(&remote_port)
                .expect("model: interdomain peer port in use");
            entry.0 = State::Unbound { remote: caller };
        }
        Ok(())
    }

    pub fn send(&self, caller: DomId, port: Port) -> Result<Option<Notify>, Errno> {
        let d = self.doms.get(&caller).ok_or(Errno::ESRCH)?;
        match d.get(port)? {
            (
                State::Interdomain {
                    remote_dom,
                    remote_port,
                },
                _,
            ) => {
                let (_, v) = self.doms[&remote_dom].get(remote_port)?;
                Ok(Some(Notify {
                    dom: remote_dom,
                    port: remote_port,
                    vcpu: v,
                }))
            }
            (State::Ipi, v) => Ok(Some(Notify {
                dom: caller,
                port,
                vcpu: v,
            })),
            (State::Unbound { .. }, _) => Ok(None),
            _ => Err(Errno::EINVAL),
        }
    }

    pub fn status(
        &self,
        caller: DomId,
        privileged: bool,
        dom: DomId,
        port: Port,
    ) -> Result<Status, Errno> {
        let d = self.doms.get(&dom).ok_or(Errno::ESRCH)?;
        let (state, vcpu) = d.get(port)?;
        if dom != caller && !privileged {
            return Err(Errno::EPERM);
        }
        Ok(Status { state, vcpu })
    }

    pub fn reset(&mut self, caller: DomId, privileged: bool, dom: DomId) -> Result<(), Errno> {
        let d = self.doms.get(&dom).ok_or(Errno::ESRCH)?;
        if dom != caller && !privileged {
            return Err(Errno::EPERM);
        }
        let ports: Vec<Port> = d.ports.keys().copied().collect();
        for p in ports {
            // A loopback peer closed earlier in this loop turned this one
            // unbound, which still closes.
            let _ = self.close(dom, p);
        }
        Ok(())
    }

    pub fn set_global_virq_handler(&mut self, dom: DomId, virq: u32) -> Result<(), Errno> {
        if virq_kind(virq) != Some(VirqKind::Global) || !self.doms.contains_key(&dom) {
            return Err(Errno::EINVAL);
        }
        let current = self.handler(virq);
        if current == dom {
            return Ok(());
        }
        if self
            .doms
            .get(&current)
            .and_then(|d| d.virq_port(virq, 0))
            .is_some()
        {
            return Err(Errno::EBUSY);
        }
        self.handlers.insert(virq, dom);
        Ok(())
    }

    pub fn virq(&self, dom: DomId, vcpu: u32, virq: u32) -> Option<Notify> {
        let kind = virq_kind(virq)?;
        let d = self.doms.get(&dom)?;
        if kind == VirqKind::Vcpu && vcpu >= d.vcpus {
            return None;
        }
        let (port, v) = d.virq_port(virq, vcpu)?;
        Some(Notify {
            dom,
            port,
            vcpu: if kind == VirqKind::Vcpu { vcpu } else { v },
        })
    }

    pub fn global_virq(&self, virq: u32) -> Option<Notify> {
        if virq_kind(virq) != Some(VirqKind::Global) {
            return None;
        }
        self.virq(self.handler(virq), 0, virq)
    }

    pub fn ports_in_use(&self, dom: DomId) -> u32 {
        self.doms.get(&dom).map_or(0, |d| d.ports.len() as u32)
    }
}
