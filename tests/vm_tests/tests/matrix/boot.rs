//! Boot smoke tests: every guest boots, answers through the agent, powers off.

use std::time::Duration;

use agar::HaltReason;
use agar::VmBuilder;
use agar::vm_test;

/// Boots, checks the running kernel is the artifact's (`uname -r` against the bzImage
/// header) through the agent, powers off and checks the halt reason.
#[vm_test(
    linux_direct(debian12_k61),
    linux_direct(debian12_k612),
    pcat(ide(debian12))
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

/// A guest booted by firmware from a disk sees that disk through the controller it was
/// attached to: its MBR (syslinux, partition table, 0x55aa) reads back through the guest's
/// own driver.
#[vm_test(pcat(ide(debian12)))]
async fn boot_disk_is_visible(vm: VmBuilder) -> anyhow::Result<()> {
    let mut vm = vm.run().await?;
    let agent = vm.agent().await?;
    let sectors: u64 = agent.run("cat /sys/block/sda/size").await?.parse()?;
    assert!(sectors > 2048, "{sectors} sectors");
    // Bytes 510..512 of the MBR: the boot signature.
    let sig = agent
        .run("dd if=/dev/sda bs=1 skip=510 count=2 2>/dev/null | od -An -tx1")
        .await?;
    assert_eq!(sig.split_whitespace().collect::<Vec<_>>(), ["55", "aa"]);
    // The driver is the one the cell names.
    assert!(
        agent
            .run("ls /sys/bus/pci/drivers/ata_piix")
            .await?
            .contains(':')
    );
    assert_eq!(vm.power_off().await?, HaltReason::PowerOff);
    Ok(())
}
