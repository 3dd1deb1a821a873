//! The legacy 8259 PICs: remapped away from the exception vectors and masked, so a
//! stray legacy interrupt can never look like a CPU exception. keel uses the APIC.

use crate::io::outb;

/// Remaps the master/slave PIC to vectors 0x20/0x28 and masks every line.
pub fn disable() {
    // SAFETY: ports 0x20/0x21/0xA0/0xA1 are the 8259 pair present on every PC
    // platform; this is the standard ICW1-4 sequence followed by a full mask, which
    // stops the PICs from raising interrupts at all.
    unsafe {
        outb(0x20, 0x11);
        outb(0xA0, 0x11);
        outb(0x21, 0x20);
        outb(0xA1, 0x28);
        outb(0x21, 0x04);
        outb(0xA1, 0x02);
        outb(0x21, 0x01);
        outb(0xA1, 0x01);
        outb(0x21, 0xFF);
        outb(0xA1, 0xFF);
    }
}
