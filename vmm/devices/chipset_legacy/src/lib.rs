//! PC chipset devices: PIC, IOAPIC, PIT, CMOS/RTC, i8042, ACPI PM, debug ports
