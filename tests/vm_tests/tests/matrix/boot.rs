//! Boot smoke tests: every guest boots, answers through the agent, powers off.

use std::time::Duration;

use agar::HaltReason;
use agar::VmBuilder;
use agar::vm_test;

/// Boots, checks the running kernel is the artifact's (`uname -r` against the bzImage
/// header) through the agent, powers off and checks the halt reason.
#[vm_test(
    linux_direct(debian12_k61),
    agarvmm_linux_direct(debian12_k612),
    unstable(
        reason = "Linux 6.12 double-faults in about one boot in four under QEMU 7.2 TCG (any -cpu \
                  model, nokaslr, mitigations=off); 6.1 does not. nextest retries it (.config/nextest.toml)",
        qemu_linux_direct(debian12_k612)
    )
)]
async fn boot_agent_poweroff(vm: VmBuilder) -> anyhow::Result<()> {
    let release = vm.kernel_release()?;
    let mut vm = vm.run().await?;
    vm.wait_for_ready(Duration::from_secs(120)).await?;
    let agent = vm.agent().await?;
    assert_eq!(agent.run("uname -r").await?, release);
    assert_eq!(vm.power_off().await?, HaltReason::PowerOff);
    Ok(())
}
