//! The smp mode's step 1: how many vCPUs there are and what they are called,
//! by `VCPUOP_is_up` and by the MADT ([`super::acpi`]), and vCPU 0's own local
//! APIC and upcall.

use core::sync::atomic::Ordering;

use keel_hypercall::abi::Errno;

use super::vcpus::{self, MAX_VCPUS};
use super::{Smp, Why, acpi, lapic};
use crate::checks::Rc;
use crate::events;

impl Smp<'_> {
    pub(super) fn topology(
        &self,
        expect_vcpus: Option<u32>,
        expect_max: Option<u32>,
    ) -> Option<usize> {
        let c = &self.c;
        let madt = acpi::find_madt(self.boot.raw.rsdp_paddr);
        let mut enabled = None;
        match &madt {
            Ok(m) => {
                c.ok("MADT found");
                c.info(format_args!(
                    "MADT at {:#x}: {} processor entries, {} enabled, local APIC at {:#x}",
                    m.pa,
                    m.count + m.dropped,
                    m.cpus().iter().filter(|p| p.enabled).count(),
                    m.lapic_base
                ));
            }
            Err(e) => c.fail("MADT found", format_args!("{e}")),
        }

        // VCPUOP_is_up: 1 for vCPU 0, 0 for the others, -ENOENT from N on.
        let mut n = None;
        let mut up_at_start = Why::new();
        for k in 0..4096u32 {
            let rc = vcpus::is_up(k);
            if rc == Errno::ENOENT.neg() {
                n = Some(k as usize);
                break;
            }
            let want = i64::from(k == 0);
            if rc != want {
                up_at_start.set(format_args!(
                    "VCPUOP_is_up({k}) returned {}, expected {want}",
                    Rc(rc)
                ));
            }
        }
        let Some(n) = n else {
            c.fail(
                "vCPU count as configured",
                format_args!("VCPUOP_is_up never answered -ENOENT for ids 0..4096"),
            );
            return None;
        };
        c.info(format_args!("VCPUOP_is_up: {n} vCPUs"));

        // Xen's layout until the MADT says otherwise (and for vCPUs it lacks).
        for (k, id) in vcpus::APIC_IDS.iter().enumerate() {
            id.store(2 * k as u32, Ordering::Relaxed);
        }
        if let Ok(m) = &madt {
            c.check(
                "MADT lists every vCPU",
                m.count + m.dropped == n,
                format_args!(
                    "{} processor entries, VCPUOP_is_up says {n} vCPUs",
                    m.count + m.dropped
                ),
            );
            let bad = m
                .cpus()
                .iter()
                .enumerate()
                .find(|(k, p)| p.apic_id != 2 * *k as u32);
            let own = lapic::id();
            match bad {
                Some((k, p)) => c.fail(
                    "MADT APIC ids are 2 x vcpu id",
                    format_args!("entry {k} has APIC id {}", p.apic_id),
                ),
                None => {
                    c.check(
                        "MADT APIC ids are 2 x vcpu id",
                        m.count > 0 && own == m.cpus[0].apic_id,
                        format_args!("vCPU 0's local APIC ID register says {own}"),
                    );
                }
            }
            let prefix = m.cpus().iter().take_while(|p| p.enabled).count();
            let more = m.cpus()[prefix..].iter().filter(|p| p.enabled).count();
            c.check(
                "MADT enabled flags",
                prefix >= 1 && more == 0,
                format_args!("the first {prefix} entries are enabled, then {more} more further on"),
            );
            enabled = Some(prefix + more);
            for (k, p) in m.cpus().iter().enumerate().take(MAX_VCPUS) {
                vcpus::APIC_IDS[k].store(p.apic_id, Ordering::Relaxed);
            }
        } else {
            for name in [
                "MADT lists every vCPU",
                "MADT APIC ids are 2 x vcpu id",
                "MADT enabled flags",
            ] {
                c.fail(name, format_args!("no MADT"));
            }
        }

        let want_n = expect_max.or(expect_vcpus);
        let mut count = Why::new();
        if let Some(w) = want_n
            && n != w as usize
        {
            count.set(format_args!("{n} vCPUs, the command line says {w}"));
        }
        if let (Some(e), Some(got)) = (expect_vcpus, enabled)
            && got != e as usize
        {
            count.set(format_args!(
                "{got} enabled MADT entries, the command line says vcpus={e}"
            ));
        }
        if n < 2 {
            count.set(format_args!("{n} vCPU: the smp mode needs at least 2"));
        }
        if n > MAX_VCPUS {
            count.set(format_args!(
                "{n} vCPUs: this guest handles at most {MAX_VCPUS}"
            ));
        }
        let usable = count.is_empty() || (2..=MAX_VCPUS).contains(&n);
        count.report(c, "vCPU count as configured");
        up_at_start.report(c, "only vCPU 0 up at start");
        usable.then_some(n)
    }

    /// vCPU 0's local APIC (uncached, enabled) and its upcall vector.
    pub(super) fn local_apic(&self) -> bool {
        let c = &self.c;
        let mapped = lapic::map_uncached();
        lapic::enable();
        let svr = lapic::svr();
        let ok = c.check(
            "local APIC enabled",
            mapped.is_ok() && svr & lapic::SVR_ENABLE != 0,
            format_args!(
                "uncached mapping: {}; SVR reads {svr:#x}",
                mapped.err().unwrap_or("done")
            ),
        );
        vcpus::install_handlers();
        let rc = events::set_upcall_vector(0);
        c.rc("upcall registered", rc, 0) && ok
    }
}
