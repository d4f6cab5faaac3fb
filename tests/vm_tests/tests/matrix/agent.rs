//! The guest agent end to end: commands, exit statuses, standard input and error, time
//! limits, file transfer both ways.

use std::time::Duration;

use agar::ExitStatus;
use agar::HaltReason;
use agar::VmBuilder;
use agar::vm_test;

#[vm_test(linux_direct(debian12_k61))]
async fn agent_exec_and_files(vm: VmBuilder) -> anyhow::Result<()> {
    let mut vm = vm.run().await?;
    let agent = vm.agent().await?;

    let r = agent.exec("echo out; echo err >&2; exit 7").await?;
    assert_eq!(r.status, ExitStatus::Code(7));
    assert_eq!(r.stdout_str(), "out\n");
    assert_eq!(r.stderr_str(), "err\n");
    assert!(r.clone().check().is_err());

    let r = agent
        .exec_with("tr a-z A-Z", Duration::from_secs(10), b"agar agent")
        .await?;
    assert_eq!(r.stdout_str(), "AGAR AGENT");

    let r = agent
        .exec_with("sleep 100", Duration::from_millis(500), b"")
        .await?;
    assert_eq!(r.status, ExitStatus::TimedOut);

    // A file larger than one write chunk and one UART FIFO, with every byte value.
    let data: Vec<u8> = (0..100_000u32).map(|i| (i * 7 + i / 256) as u8).collect();
    agent.write_file("/tmp/blob", &data, 0o600).await?;
    assert_eq!(agent.run("wc -c < /tmp/blob").await?, "100000");
    assert_eq!(agent.read_file("/tmp/blob").await?, data);
    assert_eq!(agent.run("stat -c %a /tmp/blob").await?, "600");
    let version = agent.read_file("/proc/version").await?;
    assert!(String::from_utf8_lossy(&version).starts_with("Linux version"));
    assert!(agent.read_file("/nonexistent").await.is_err());

    assert_eq!(vm.power_off().await?, HaltReason::PowerOff);
    Ok(())
}
