use agar_macros::vm_test;

#[vm_test(qemu_uefi(vmbus(debian12)))]
async fn qemu_has_no_vmbus(vm: Vm) -> Result {}

#[vm_test(qemu_openhcl(uefi(vmbus(debian12))))]
async fn qemu_has_no_igvm(vm: Vm) -> Result {}

#[vm_test(agarvmm_uefi(ide(debian12)))]
async fn agarvmm_ide_is_pcat_only(vm: Vm) -> Result {}

fn main() {}
