//! agar-agent: the guest side of the framework's agent protocol.
//!
//! A static binary that `/init` starts (see docs/src/guest-contract.md). It opens the agent
//! serial device, puts it in raw mode and answers requests from the host one at a time:
//! run a command, read or write a file, power off or reboot. It never exits on a bad
//! request; garbage on the line is skipped by the framing.
//!
//! # Architecture
//!
//! - `main`: picks the device (first argument, else `agar.agent=` on the kernel command
//!   line, else `/dev/ttyS1`), configures the tty and runs [`serve::serve`].
//! - [`serve`]: the request loop over any `Read + Write` (a tty in the guest, a socket pair
//!   in unit tests).
//! - [`exec`]: runs one shell command with a timeout, capturing bounded output.

mod exec;
mod serve;

use std::fs::File;
use std::fs::OpenOptions;
use std::os::unix::fs::OpenOptionsExt;
use std::process::ExitCode;

const DEFAULT_DEVICE: &str = "/dev/ttyS1";

fn device_from_cmdline(cmdline: &str) -> Option<String> {
    cmdline
        .split_ascii_whitespace()
        .find_map(|a| a.strip_prefix("agar.agent="))
        .filter(|d| !d.is_empty())
        .map(str::to_string)
}

fn open_tty(path: &str) -> std::io::Result<File> {
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(rustix::fs::OFlags::NOCTTY.bits() as i32)
        .open(path)?;
    if rustix::termios::isatty(&f) {
        let mut t = rustix::termios::tcgetattr(&f)?;
        t.make_raw();
        // No modem control, no flow control: the UART is a plain byte pipe to the host.
        t.control_modes |= rustix::termios::ControlModes::CLOCAL;
        t.set_speed(115_200)?;
        rustix::termios::tcsetattr(&f, rustix::termios::OptionalActions::Now, &t)?;
        // Whatever arrived while the line was still cooked was mangled (echo, CR/LF
        // translation); the host retries its hello.
        rustix::termios::tcflush(&f, rustix::termios::QueueSelector::IFlush)?;
    }
    Ok(f)
}

fn main() -> ExitCode {
    let device = std::env::args()
        .nth(1)
        .or_else(|| {
            std::fs::read_to_string("/proc/cmdline")
                .ok()
                .and_then(|c| device_from_cmdline(&c))
        })
        .unwrap_or_else(|| DEFAULT_DEVICE.to_string());
    let tty = match open_tty(&device) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("agar-agent: cannot open {device}: {e}");
            return ExitCode::FAILURE;
        }
    };
    eprintln!(
        "agar-agent: serving {device} (protocol {})",
        agent_protocol::PROTOCOL_VERSION
    );
    let writer = match tty.try_clone() {
        Ok(w) => w,
        Err(e) => {
            eprintln!("agar-agent: {e}");
            return ExitCode::FAILURE;
        }
    };
    match serve::serve(tty, writer, &serve::Guest) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("agar-agent: {device}: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_comes_from_the_kernel_command_line() {
        assert_eq!(
            device_from_cmdline("console=ttyS0 agar.agent=/dev/ttyS3 quiet\n").as_deref(),
            Some("/dev/ttyS3")
        );
        assert_eq!(device_from_cmdline("console=ttyS0 agar.agent="), None);
        assert_eq!(device_from_cmdline("console=ttyS0"), None);
    }
}
