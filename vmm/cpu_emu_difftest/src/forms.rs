//! The instruction forms under test and the driver that compares host and `emu`.

use iced_x86::code_asm::*;

use crate::harness::BASE;
use crate::harness::Emu;
use crate::harness::NativeStub;
use crate::harness::State;
use crate::harness::host_base;
use crate::harness::stub;
use crate::rng::Rng;

type Emit = Box<dyn Fn(&mut CodeAssembler, u64) -> Result<(), IcedError>>;
type Prep = Box<dyn Fn(&mut State, &mut Rng, u64)>;
type FlagMask = Box<dyn Fn(&State, u64) -> u64>;

/// How much of the x87/SSE state to compare.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Fx {
    /// XMM registers, MXCSR, FCW/FSW/tags must be unchanged and equal.
    Exact,
    /// As `Exact`, but MXCSR exception flags are not modelled by `emu`.
    SseFloat,
    /// x87 results: registers and TOP/C0/C2/C3; exception flags and C1 not compared.
    X87,
}

pub struct Form {
    pub name: String,
    emit: Emit,
    /// RFLAGS bits the SDM defines, as a function of the input state and immediate.
    flags: FlagMask,
    prep: Option<Prep>,
    /// Distinct immediates to try (1: the form has none).
    imms: u32,
    fx: Fx,
    /// Divides the number of cases (families with many similar forms).
    fewer: u64,
}

impl Form {
    pub fn new(name: impl Into<String>, flags: u64, imms: u32, emit: Emit) -> Form {
        Form {
            name: name.into(),
            emit,
            flags: Box::new(move |_, _| flags),
            prep: None,
            imms,
            fx: Fx::Exact,
            fewer: 1,
        }
    }

    /// Runs `1/d` of the usual number of cases.
    pub fn fewer(mut self, d: u64) -> Form {
        self.fewer = d.max(1);
        self
    }

    pub fn flags_by(mut self, f: impl Fn(&State, u64) -> u64 + 'static) -> Form {
        self.flags = Box::new(f);
        self
    }

    pub fn prep(mut self, f: impl Fn(&mut State, &mut Rng, u64) + 'static) -> Form {
        self.prep = Some(Box::new(f));
        self
    }

    pub fn fx(mut self, fx: Fx) -> Form {
        self.fx = fx;
        self
    }
}

/// Cases per form (`EMU_DIFFTEST_CASES` overrides).
fn cases() -> u64 {
    std::env::var("EMU_DIFFTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000)
}

fn seed(name: &str) -> u64 {
    name.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    })
}

/// Runs every form; panics with the first mismatches.
pub fn check(forms: Vec<Form>) {
    let mut emu = Emu::new();
    let mut failures = Vec::new();
    let n = cases();
    let mut total = 0u64;
    let filter = std::env::var("EMU_DIFFTEST_FILTER").ok();
    for form in &forms {
        if filter
            .as_ref()
            .is_some_and(|f| !form.name.contains(f.as_str()))
        {
            continue;
        }
        let mut rng = Rng::new(seed(&form.name));
        let mut form_failures = 0;
        for k in 0..form.imms {
            let imm = if form.imms == 1 {
                0
            } else if k == 0 {
                1
            } else {
                rng.interesting()
            };
            let code = stub(&|a| (form.emit)(a, imm));
            let native = NativeStub::new(&code);
            emu.load(&code);
            for _ in 0..n.div_ceil(u64::from(form.imms) * form.fewer) {
                let mut input = State::random(&mut rng);
                if let Some(p) = &form.prep {
                    p(&mut input, &mut rng, imm);
                }
                let mut host = input.clone();
                host.gpr[BASE] = host_base(&host);
                let host_in_base = host.gpr[BASE];
                native.run(&mut host);
                let mut guest = input.clone();
                guest.gpr[BASE] = Emu::gpa_base();
                let r = emu.run(&mut guest);
                total += 1;
                let diff = match r {
                    Err(e) => Some(e),
                    Ok(()) => compare(form, &input, imm, &host, host_in_base, &guest),
                };
                if let Some(d) = diff {
                    form_failures += 1;
                    if failures.len() < 20 && form_failures <= 3 {
                        failures.push(format!(
                            "{} (imm {imm:#x}): {d}\n  input gpr {:x?} flags {:#x}",
                            form.name, input.gpr, input.flags
                        ));
                    }
                }
            }
        }
        if form_failures > 0 && failures.len() >= 20 {
            failures.push(format!("{}: {form_failures} failing cases", form.name));
        }
    }
    assert!(
        failures.is_empty(),
        "{} mismatches out of {total} cases:\n{}",
        failures.len(),
        failures.join("\n")
    );
    eprintln!("{} forms, {total} cases agree", forms.len());
}

fn compare(
    form: &Form,
    input: &State,
    imm: u64,
    host: &State,
    host_base: u64,
    guest: &State,
) -> Option<String> {
    let mut d = Vec::new();
    for i in 0..16 {
        if i == BASE {
            if host.gpr[i] != host_base {
                d.push("host base register changed".to_string());
            }
            if guest.gpr[i] != Emu::gpa_base() {
                d.push("emu base register changed".to_string());
            }
            continue;
        }
        if i == 4 {
            continue;
        }
        if host.gpr[i] != guest.gpr[i] {
            d.push(format!(
                "gpr{i}: host {:#x} emu {:#x}",
                host.gpr[i], guest.gpr[i]
            ));
        }
    }
    let mask = (form.flags)(input, imm) | 0x200;
    if (host.flags ^ guest.flags) & mask != 0 {
        d.push(format!(
            "flags (mask {mask:#x}): host {:#x} emu {:#x}",
            host.flags & mask,
            guest.flags & mask
        ));
    }
    if host.buf != guest.buf {
        let i = (0..512).find(|&i| host.buf[i] != guest.buf[i]).unwrap_or(0);
        d.push(format!(
            "memory at buf+{i:#x}: host {:02x?} emu {:02x?}",
            &host.buf[i..(i + 8).min(512)],
            &guest.buf[i..(i + 8).min(512)]
        ));
    }
    for i in 0..16 {
        if host.xmm(i) != guest.xmm(i) {
            d.push(format!(
                "xmm{i}: host {:#034x} emu {:#034x}",
                host.xmm(i),
                guest.xmm(i)
            ));
        }
    }
    let mx_mask = if form.fx == Fx::Exact {
        u32::MAX
    } else {
        !0x3f
    };
    if (host.mxcsr() ^ guest.mxcsr()) & mx_mask != 0 {
        d.push(format!(
            "mxcsr: host {:#x} emu {:#x}",
            host.mxcsr(),
            guest.mxcsr()
        ));
    }
    let fcw = |s: &State| u16::from_le_bytes([s.fx[0], s.fx[1]]);
    let fsw = |s: &State| u16::from_le_bytes([s.fx[2], s.fx[3]]);
    let fsw_mask = if form.fx == Fx::X87 { 0x7d00 } else { 0xffff };
    if fcw(host) != fcw(guest)
        || (fsw(host) ^ fsw(guest)) & fsw_mask != 0
        || host.fx[4] != guest.fx[4]
    {
        d.push(format!(
            "x87 control: host fcw {:#x} fsw {:#x} tags {:#x}, emu fcw {:#x} fsw {:#x} tags {:#x}",
            fcw(host),
            fsw(host),
            host.fx[4],
            fcw(guest),
            fsw(guest),
            guest.fx[4]
        ));
    }
    for i in 0..8 {
        let o = 32 + 16 * i;
        if host.fx[o..o + 10] != guest.fx[o..o + 10] {
            d.push(format!(
                "st{i}: host {:02x?} emu {:02x?}",
                &host.fx[o..o + 10],
                &guest.fx[o..o + 10]
            ));
        }
    }
    (!d.is_empty()).then(|| d.join("; "))
}
