//! Bochs's configuration for keel.
//!
//! Bochs is the only emulator here with VMX, and it checks VM-entry conditions more
//! strictly than QEMU checks SVM. Debian's Bochs is built with its debugger and
//! without a headless display, so (per `shared/EMULATORS.md`) it runs with the RFB
//! display that does not wait for a client (`timeout=0`), with `-rc` feeding the
//! debugger `c` (continue) and `quit`, and with stdin from /dev/null. COM1 goes to a
//! file; the Bochs log goes to another. Bochs exits 1 even after a clean ACPI S5
//! (port 0xB004), so runs are judged by serial output.
//!
//! Panics are fatal except the CPU's: Bochs 2.7 raises a PANIC for any triple
//! fault, including a guest's under SVM, and only then delivers the SHUTDOWN
//! intercept (`cpu/exception.cc`); with `cpu0=report` the #VMEXIT reaches keel.
//! keel's own triple faults are still caught: keel reports faults on IST stacks
//! before they could triple-fault, and a stuck CPU ends in the harness timeout.
//!
//! All paths in the generated files are relative: Bochs runs in the work directory.

/// The Bochs binary.
pub const BOCHS: &str = "bochs";

/// The `-rc` script: run, and quit the debugger when the simulation ends. The second
/// `c` is for Bochs 2.7 breaking into its debugger on a triple fault (exception.cc)
/// before it checks the SVM SHUTDOWN intercept: continuing lets the #VMEXIT happen.
pub const BOCHS_RC: &str = "c\nc\nquit\n";

/// Renders a bochsrc booting `iso` (CD-ROM) on `cpus` CPUs of `cpu_model`, COM1 to
/// `serial_file`, the Bochs log to `log_file`. Bochs runs its CPUs in turns on one
/// host thread, `quantum` instructions at a time (EMULATORS.md: 16 works).
pub fn bochsrc(cpu_model: &str, cpus: u32, iso: &str, serial_file: &str, log_file: &str) -> String {
    let cpus = cpus.max(1);
    let quantum = if cpus > 1 { ", quantum=16" } else { "" };
    format!(
        "\
cpu: model={cpu_model}, count={cpus}{quantum}, ips=100000000, reset_on_triple_fault=0, ignore_bad_msrs=0
memory: guest=1024, host=1024
romimage: file=/usr/share/bochs/BIOS-bochs-latest
vgaromimage: file=/usr/share/bochs/VGABIOS-lgpl-latest
display_library: rfb, options=\"timeout=0\"
ata0: enabled=1, ioaddr1=0x1f0, ioaddr2=0x3f0, irq=14
ata0-master: type=cdrom, path={iso}, status=inserted
boot: cdrom
com1: enabled=1, mode=file, dev={serial_file}
port_e9_hack: enabled=0
speaker: enabled=0
sound: waveoutdrv=dummy, waveindrv=dummy, midioutdrv=dummy
clock: sync=none, time0=local
log: {log_file}
panic: action=fatal, cpu0=report
error: action=report
info: action=report
debug: action=ignore
"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bochsrc_names_model_iso_serial_and_log() {
        let rc = bochsrc("corei7_skylake_x", 1, "keel.iso", "serial.log", "bochs.log");
        assert!(rc.starts_with(
            "cpu: model=corei7_skylake_x, count=1, ips=100000000, reset_on_triple_fault=0"
        ));
        assert!(rc.contains("\nata0-master: type=cdrom, path=keel.iso, status=inserted\n"));
        assert!(rc.contains("\nboot: cdrom\n"));
        assert!(rc.contains("\ncom1: enabled=1, mode=file, dev=serial.log\n"));
        assert!(rc.contains("\nlog: bochs.log\n"));
        assert!(rc.contains("\ndisplay_library: rfb, options=\"timeout=0\"\n"));
        assert!(rc.contains("\npanic: action=fatal, cpu0=report\n"));
    }

    #[test]
    fn several_cpus_take_turns() {
        let rc = bochsrc("ryzen", 2, "keel.iso", "serial.log", "bochs.log");
        assert!(rc.starts_with("cpu: model=ryzen, count=2, quantum=16, ips=100000000"));
    }

    #[test]
    fn rc_script_continues_then_quits() {
        assert_eq!(BOCHS_RC.lines().collect::<Vec<_>>(), ["c", "c", "quit"]);
    }
}
