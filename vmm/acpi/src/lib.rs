//! ACPI table builder (RSDP, XSDT, FADT, MADT, DSDT with minimal AML)
