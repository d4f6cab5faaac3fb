//! The request loop.

use std::fs::OpenOptions;
use std::io::Read;
use std::io::Seek;
use std::io::SeekFrom;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::time::Duration;

use agent_protocol::MAX_READ_CHUNK;
use agent_protocol::PROTOCOL_VERSION;
use agent_protocol::frame;
use agent_protocol::message::Message;
use agent_protocol::message::Request;
use agent_protocol::message::Response;

/// What the agent does to the machine it runs on; a test double skips the power actions.
pub trait Machine {
    /// Syncs file systems and powers off (does not return on success).
    fn power_off(&self) -> std::io::Result<()>;
    /// Syncs file systems and reboots (does not return on success).
    fn reboot(&self) -> std::io::Result<()>;
}

/// The real guest.
pub struct Guest;

impl Machine for Guest {
    fn power_off(&self) -> std::io::Result<()> {
        rustix::fs::sync();
        rustix::system::reboot(rustix::system::RebootCommand::PowerOff)?;
        Ok(())
    }
    fn reboot(&self) -> std::io::Result<()> {
        rustix::fs::sync();
        rustix::system::reboot(rustix::system::RebootCommand::Restart)?;
        Ok(())
    }
}

/// Serves requests read from `input`, writing responses to `output`, until `input` ends.
pub fn serve(
    mut input: impl Read,
    mut output: impl Write,
    machine: &dyn Machine,
) -> std::io::Result<()> {
    let mut decoder = frame::Decoder::new();
    let mut buf = vec![0u8; 64 << 10];
    loop {
        let n = match input.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        decoder.push(&buf[..n]);
        while let Some(event) = decoder.next_event() {
            let frame::Event::Frame(payload) = event else {
                continue;
            };
            let (id, request) = match Message::decode(&payload) {
                Ok(Message::Request(id, r)) => (id, r),
                // Our own responses echoed back, or a newer host: ignore.
                Ok(Message::Response(..)) | Err(_) => continue,
            };
            type Action = fn(&dyn Machine) -> std::io::Result<()>;
            let after: Option<Action> = match &request {
                Request::PowerOff => Some(|m| m.power_off()),
                Request::Reboot => Some(|m| m.reboot()),
                _ => None,
            };
            let response = handle(request);
            send(&mut output, Message::Response(id, response))?;
            if let Some(action) = after {
                // The acknowledgement must leave the UART before the machine goes away.
                std::thread::sleep(Duration::from_millis(100));
                if let Err(e) = action(machine) {
                    send(
                        &mut output,
                        Message::Response(
                            id,
                            Response::Error {
                                message: e.to_string(),
                            },
                        ),
                    )?;
                }
            }
        }
    }
}

fn send(output: &mut impl Write, message: Message) -> std::io::Result<()> {
    let bytes = frame::encode(&message.encode()).or_else(|e| {
        let id = match message {
            Message::Request(id, _) | Message::Response(id, _) => id,
        };
        frame::encode(
            &Message::Response(
                id,
                Response::Error {
                    message: e.to_string(),
                },
            )
            .encode(),
        )
    });
    // An error message always fits in a frame.
    output.write_all(&bytes.unwrap_or_default())?;
    output.flush()
}

fn error(e: impl std::fmt::Display) -> Response {
    Response::Error {
        message: e.to_string(),
    }
}

fn handle(request: Request) -> Response {
    match request {
        Request::Hello { min, max } => {
            if (min..=max).contains(&PROTOCOL_VERSION) {
                Response::Hello {
                    version: PROTOCOL_VERSION,
                    agent: format!("agar-agent {}", env!("CARGO_PKG_VERSION")),
                }
            } else {
                error(format!(
                    "host speaks protocol {min}..={max}, agent speaks {PROTOCOL_VERSION}"
                ))
            }
        }
        Request::Exec {
            command,
            timeout_ms,
            stdin,
        } => {
            let timeout = (timeout_ms != 0).then(|| Duration::from_millis(timeout_ms.into()));
            match crate::exec::run(&command, timeout, &stdin) {
                Ok(o) => Response::Exec(o),
                Err(e) => error(format!("cannot run /bin/sh: {e}")),
            }
        }
        Request::ReadFile { path, offset, max } => {
            let max = (max as usize).min(MAX_READ_CHUNK);
            let read = || -> std::io::Result<(Vec<u8>, bool)> {
                let mut f = std::fs::File::open(&path)?;
                f.seek(SeekFrom::Start(offset))?;
                let mut data = Vec::new();
                f.take(max as u64).read_to_end(&mut data)?;
                let eof = data.len() < max;
                Ok((data, eof))
            };
            match read() {
                Ok((data, eof)) => Response::FileData { data, eof },
                Err(e) => error(format!("{path}: {e}")),
            }
        }
        Request::WriteFile {
            path,
            offset,
            mode,
            data,
        } => {
            let write = || -> std::io::Result<()> {
                let mut f = OpenOptions::new()
                    .write(true)
                    .create(true)
                    .truncate(offset == 0)
                    .mode(mode)
                    .open(&path)?;
                f.seek(SeekFrom::Start(offset))?;
                f.write_all(&data)
            };
            match write() {
                Ok(()) => Response::Done,
                Err(e) => error(format!("{path}: {e}")),
            }
        }
        Request::PowerOff | Request::Reboot => Response::Done,
    }
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;
    use std::os::unix::net::UnixStream;

    use agent_protocol::message::ExitStatus;

    use super::*;

    #[derive(Default)]
    struct Recorder {
        power_offs: Cell<u32>,
    }

    impl Machine for Recorder {
        fn power_off(&self) -> std::io::Result<()> {
            self.power_offs.set(self.power_offs.get() + 1);
            Ok(())
        }
        fn reboot(&self) -> std::io::Result<()> {
            Err(std::io::Error::other("reboot refused"))
        }
    }

    /// Sends `requests` (with noise in between) to a serving agent and returns its answers.
    fn exchange(requests: &[Request], machine: &Recorder) -> Vec<Response> {
        let (host, agent) = UnixStream::pair().unwrap();
        let mut wire = Vec::new();
        for (i, r) in requests.iter().enumerate() {
            wire.extend_from_slice(b"\r\nnoise\xAA\xAAA");
            wire.extend(frame::encode(&Message::Request(i as u32, r.clone()).encode()).unwrap());
        }
        (&host).write_all(&wire).unwrap();
        host.shutdown(std::net::Shutdown::Write).unwrap();
        let out = agent.try_clone().unwrap();
        serve(agent, out, machine).unwrap();
        let mut got = Vec::new();
        (&host).read_to_end(&mut got).unwrap();
        let mut d = frame::Decoder::new();
        d.push(&got);
        let mut responses = Vec::new();
        while let Some(e) = d.next_event() {
            if let frame::Event::Frame(p) = e {
                let Message::Response(_, r) = Message::decode(&p).unwrap() else {
                    panic!("agent sent a request")
                };
                responses.push(r);
            }
        }
        responses
    }

    #[test]
    fn serves_a_session_through_noise() {
        let dir = std::env::temp_dir().join(format!("agar-agent-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("f").display().to_string();
        let m = Recorder::default();
        let r = exchange(
            &[
                Request::Hello { min: 1, max: 1 },
                Request::Exec {
                    command: "printf hi; exit 7".into(),
                    timeout_ms: 10_000,
                    stdin: vec![],
                },
                Request::WriteFile {
                    path: file.clone(),
                    offset: 0,
                    mode: 0o600,
                    data: b"abc".to_vec(),
                },
                Request::WriteFile {
                    path: file.clone(),
                    offset: 3,
                    mode: 0o600,
                    data: b"def".to_vec(),
                },
                Request::ReadFile {
                    path: file.clone(),
                    offset: 2,
                    max: 100,
                },
                Request::ReadFile {
                    path: "/nonexistent/x".into(),
                    offset: 0,
                    max: 100,
                },
                Request::PowerOff,
                Request::Reboot,
            ],
            &m,
        );
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(matches!(&r[0], Response::Hello { version: 1, .. }));
        let Response::Exec(o) = &r[1] else {
            panic!("{:?}", r[1])
        };
        assert_eq!(
            (o.status, o.stdout.as_slice()),
            (ExitStatus::Code(7), &b"hi"[..])
        );
        assert_eq!(r[2], Response::Done);
        assert_eq!(r[3], Response::Done);
        assert_eq!(
            r[4],
            Response::FileData {
                data: b"cdef".to_vec(),
                eof: true
            }
        );
        assert!(matches!(&r[5], Response::Error { message } if message.contains("/nonexistent/x")));
        assert_eq!(r[6], Response::Done);
        assert_eq!(m.power_offs.get(), 1);
        // Reboot is acknowledged, then its failure is reported.
        assert_eq!(r[7], Response::Done);
        assert!(matches!(&r[8], Response::Error { message } if message == "reboot refused"));
    }

    #[test]
    fn refuses_a_host_that_speaks_only_newer_versions() {
        let r = exchange(&[Request::Hello { min: 2, max: 5 }], &Recorder::default());
        assert!(
            matches!(&r[0], Response::Error { message } if message.contains("agent speaks 1")),
            "{r:?}"
        );
    }
}
