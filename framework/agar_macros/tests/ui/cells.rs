use agar_macros::vm_test;

#[vm_test(pcat(vmbus(debian12)))]
async fn pcat_cannot_boot_vmbus(vm: Vm) -> Result {}

#[vm_test(linux_direct(debian12))]
async fn linux_direct_needs_a_kernel(vm: Vm) -> Result {}

#[vm_test(linux_direct(ide(debian12)))]
async fn linux_direct_takes_no_disk(vm: Vm) -> Result {}

#[vm_test(pcat(ide(debian12_k61)))]
async fn firmware_boots_a_disk_image(vm: Vm) -> Result {}

#[vm_test(pcat(debian12))]
async fn firmware_needs_a_controller(vm: Vm) -> Result {}

#[vm_test(bios(ide(debian12)))]
async fn unknown_firmware(vm: Vm) -> Result {}

#[vm_test(linux_direct(ubuntu2404))]
async fn unknown_os(vm: Vm) -> Result {}

#[vm_test(igvm(uefi(vmbus(debian12))))]
async fn igvm_wraps_linux_direct(vm: Vm) -> Result {}

#[vm_test(openhcl(linux_direct(debian12_k61)))]
async fn openhcl_hosts_firmware(vm: Vm) -> Result {}

fn main() {}
