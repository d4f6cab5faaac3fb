use agar_macros::vm_test;

#[vm_test(ignore(linux_direct(debian12_k61)))]
async fn ignore_needs_a_reason(vm: Vm) -> Result {}

#[vm_test(unstable(reason = 42), linux_direct(debian12_k61))]
async fn reason_is_a_string(vm: Vm) -> Result {}

#[vm_test(requires(tpm), linux_direct(debian12_k61))]
async fn unknown_capability(vm: Vm) -> Result {}

#[vm_test(linux_direct(debian12_k61), qemu_linux_direct(debian12_k61))]
async fn duplicate_cell(vm: Vm) -> Result {}

#[vm_test(requires(kvm))]
async fn no_cells(vm: Vm) -> Result {}

#[vm_test(timeout = 0, linux_direct(debian12_k61))]
async fn zero_timeout(vm: Vm) -> Result {}

#[vm_test(linux_direct(debian12_k61))]
fn not_async(vm: Vm) -> Result {}

#[vm_test(linux_direct(debian12_k61))]
async fn two_arguments(vm: Vm, extra: u32) -> Result {}

#[vm_test(artifacts("seabios_bios"), linux_direct(debian12_k61))]
async fn artifact_ids_are_paths(vm: Vm) -> Result {}

fn main() {}
