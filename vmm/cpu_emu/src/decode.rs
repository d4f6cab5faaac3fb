//! Translation of decoded x86 instructions (iced-x86) into [`Op`]s.
//!
//! This runs once per instruction when a block is built, never on the hot path. Everything
//! that can be known statically is resolved here: the handler (specialized for operand size
//! and register/memory forms), register indices, the effective-address recipe, immediates and
//! branch displacements (made relative to the next instruction, so a decoded page can be reused
//! at any linear address that maps it).

use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering;

use iced_x86::ConditionCode;
use iced_x86::FlowControl;
use iced_x86::Instruction;
use iced_x86::Mnemonic as Mn;
use iced_x86::OpKind;
use iced_x86::Register;
use virt::ExitHandler;

use crate::cpu::Cpu;
use crate::cpu::RIP;
use crate::cpu::Res;
use crate::cpu::ZERO;
use crate::exec::M;
use crate::exec::R;
use crate::exec::alu::*;
use crate::exec::atomic::*;
use crate::exec::bits;
use crate::exec::bits::*;
use crate::exec::branch::*;
use crate::exec::muldiv::*;
use crate::exec::stack::*;
use crate::exec::string;
use crate::exec::string::*;
use crate::exec::system::*;
use crate::interrupt;
use crate::op::Handler;
use crate::op::Op;
use crate::size::B;
use crate::size::D;
use crate::size::Q;
use crate::size::W;

/// Size dispatch: `h!(size_in_bytes, f, [leading generics], [trailing generics])`.
macro_rules! h {
    ($s:expr, $f:ident, [$($pre:tt),*], [$($post:tt),*]) => {
        match $s {
            1 => $f::<$($pre,)* B $(, $post)*> as Handler,
            2 => $f::<$($pre,)* W $(, $post)*> as Handler,
            4 => $f::<$($pre,)* D $(, $post)*> as Handler,
            _ => $f::<$($pre,)* Q $(, $post)*> as Handler,
        }
    };
}

/// Size and register/memory dispatch (`X` is the last generic parameter).
macro_rules! hx {
    ($s:expr, $mem:expr, $f:ident $(, $pre:tt)*) => {
        if $mem { h!($s, $f, [$($pre),*], [M]) } else { h!($s, $f, [$($pre),*], [R]) }
    };
}

/// Maps a runtime condition code to a handler with a const parameter.
macro_rules! cc16 {
    ($cc:expr, $m:ident) => {
        match $cc & 15 {
            0 => $m!(0),
            1 => $m!(1),
            2 => $m!(2),
            3 => $m!(3),
            4 => $m!(4),
            5 => $m!(5),
            6 => $m!(6),
            7 => $m!(7),
            8 => $m!(8),
            9 => $m!(9),
            10 => $m!(10),
            11 => $m!(11),
            12 => $m!(12),
            13 => $m!(13),
            14 => $m!(14),
            _ => $m!(15),
        }
    };
}

/// A decoded operand.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Opnd {
    /// General-purpose register: index (8-bit: 16..19 = AH..BH) and size in bytes.
    Reg(u8, u32),
    /// Memory of this many bytes.
    Mem(u32),
    /// Immediate (sign-extended as encoded).
    Imm(u64),
    /// Anything else (segment, control, vector registers, branch targets...).
    Other,
}

/// GPR index and size in bytes.
pub(crate) fn gpr(r: Register) -> Option<(u8, u32)> {
    let v = r as u32;
    let al = Register::AL as u32;
    let ax = Register::AX as u32;
    let eax = Register::EAX as u32;
    let rax = Register::RAX as u32;
    Some(if (al..al + 20).contains(&v) {
        let n = v - al;
        let idx = match n {
            0..=3 => n,
            4..=7 => 16 + n - 4,
            8..=11 => 4 + n - 8,
            _ => 8 + n - 12,
        };
        (idx as u8, 1)
    } else if (ax..ax + 16).contains(&v) {
        ((v - ax) as u8, 2)
    } else if (eax..eax + 16).contains(&v) {
        ((v - eax) as u8, 4)
    } else if (rax..rax + 16).contains(&v) {
        ((v - rax) as u8, 8)
    } else {
        return None;
    })
}

/// Segment register index (ES=0 .. GS=5).
pub(crate) fn sreg(r: Register) -> Option<u8> {
    let v = r as u32;
    let es = Register::ES as u32;
    (es..es + 6).contains(&v).then(|| (v - es) as u8)
}

pub(crate) fn opnd(ins: &Instruction, i: u32) -> Opnd {
    match ins.op_kind(i) {
        OpKind::Register => match gpr(ins.op_register(i)) {
            Some((r, s)) => Opnd::Reg(r, s),
            None => Opnd::Other,
        },
        OpKind::Memory => Opnd::Mem(ins.memory_size().size() as u32),
        OpKind::Immediate8
        | OpKind::Immediate8_2nd
        | OpKind::Immediate16
        | OpKind::Immediate32
        | OpKind::Immediate64
        | OpKind::Immediate8to16
        | OpKind::Immediate8to32
        | OpKind::Immediate8to64
        | OpKind::Immediate32to64 => Opnd::Imm(ins.immediate(i)),
        _ => Opnd::Other,
    }
}

fn addr_size_of(r: Register) -> u8 {
    match gpr(r) {
        Some((_, 2)) => 0,
        Some((_, 4)) => 1,
        Some((_, 8)) => 2,
        _ => match r {
            Register::EIP => 1,
            Register::RIP => 2,
            _ => 2,
        },
    }
}

/// Fills the effective-address fields of `op` from the instruction's memory operand.
pub(crate) fn fill_mem(op: &mut Op, ins: &Instruction, bitness: u32) {
    let base = ins.memory_base();
    let index = ins.memory_index();
    op.asz = if base != Register::None {
        addr_size_of(base)
    } else if index != Register::None {
        addr_size_of(index)
    } else {
        match ins.memory_displ_size() {
            2 => 0,
            4 => 1,
            8 => 2,
            _ => match bitness {
                16 => 0,
                32 => 1,
                _ => 2,
            },
        }
    };
    op.seg = sreg(ins.memory_segment()).unwrap_or(3);
    if base == Register::RIP || base == Register::EIP {
        op.base = RIP as u8;
        op.disp = ins.memory_displacement64().wrapping_sub(ins.next_ip());
    } else {
        op.base = gpr(base).map_or(ZERO, |g| g.0);
        op.disp = ins.memory_displacement64();
    }
    op.index = gpr(index).map_or(ZERO, |g| g.0);
    op.scale = match ins.memory_index_scale() {
        2 => 1,
        4 => 2,
        8 => 3,
        _ => 0,
    };
}

/// Address size of a string instruction (from its implicit memory operand kinds).
fn string_asz(ins: &Instruction) -> u8 {
    for i in 0..ins.op_count() {
        match ins.op_kind(i) {
            OpKind::MemorySegSI | OpKind::MemoryESDI => return 0,
            OpKind::MemorySegESI | OpKind::MemoryESEDI => return 1,
            OpKind::MemorySegRSI | OpKind::MemoryESRDI => return 2,
            _ => {}
        }
    }
    2
}

fn is_string(ins: &Instruction) -> bool {
    (0..ins.op_count()).any(|i| {
        matches!(
            ins.op_kind(i),
            OpKind::MemorySegSI
                | OpKind::MemorySegESI
                | OpKind::MemorySegRSI
                | OpKind::MemoryESDI
                | OpKind::MemoryESEDI
                | OpKind::MemoryESRDI
        )
    })
}

static UNIMPLEMENTED_LOGGED: AtomicU64 = AtomicU64::new(0);

/// An instruction this CPU does not implement: counted, logged with its bytes (rate-limited),
/// and #UD in the guest. `imm`/`disp` hold the instruction bytes.
fn unimplemented(c: &mut Cpu, op: &Op, _: &dyn ExitHandler) -> Res {
    c.unimplemented += 1;
    let n = UNIMPLEMENTED_LOGGED.fetch_add(1, Ordering::Relaxed);
    if n < 64 || n.is_power_of_two() {
        let mut bytes = [0u8; 16];
        bytes[..8].copy_from_slice(&op.imm.to_le_bytes());
        bytes[8..].copy_from_slice(&op.disp.to_le_bytes());
        let len = (op.x as usize).min(15);
        let hex: String = bytes[..len].iter().map(|b| format!("{b:02x}")).collect();
        let rip = c.regs[RIP].wrapping_sub(u64::from(op.len));
        let mut ins = Instruction::default();
        iced_x86::Decoder::with_ip(c.bitness, &bytes[..len], rip, 0).decode_out(&mut ins);
        tracing::warn!(
            vp = c.index,
            rip = format_args!("{rip:#x}"),
            bytes = hex,
            mnemonic = ?ins.mnemonic(),
            "unimplemented instruction: #UD"
        );
    }
    crate::cpu::ud()
}

/// The op for an instruction this CPU does not implement.
pub(crate) fn unimplemented_op(ins: &Instruction, bytes: &[u8]) -> Op {
    let mut op = Op::new(unimplemented, ins.len() as u8);
    let mut b = [0u8; 16];
    let n = bytes.len().min(15);
    b[..n].copy_from_slice(&bytes[..n]);
    op.imm = u64::from_le_bytes(b[..8].try_into().unwrap_or_default());
    op.disp = u64::from_le_bytes(b[8..].try_into().unwrap_or_default());
    op.x = n as u8;
    op
}

/// Translation context fixed per processor.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Features {
    /// TZCNT/LZCNT exist (else F3 0F BC/BD are BSF/BSR).
    pub bmi1: bool,
    pub lzcnt: bool,
}

/// Translates one instruction. Returns the op and whether it ends a block. `bytes` are the
/// instruction's bytes (for the unimplemented-instruction log).
pub(crate) fn translate(
    ins: &Instruction,
    bitness: u32,
    bytes: &[u8],
    feat: &Features,
) -> (Op, bool) {
    let len = ins.len() as u8;
    let mut op = Op::new(crate::exec::ud, len);
    let has_mem = (0..ins.op_count()).any(|i| ins.op_kind(i) == OpKind::Memory);
    if has_mem {
        fill_mem(&mut op, ins, bitness);
    }
    // Conditional branches whose handlers end the block when taken (Jcc) do not end blocks:
    // blocks extend along the fall-through path.
    let end = match ins.flow_control() {
        FlowControl::Next => false,
        FlowControl::ConditionalBranch => !is_jcc(ins.mnemonic()),
        _ => true,
    };
    let f = translate_inner(ins, &mut op, bitness, feat);
    match f {
        Some(f) => {
            op.f = f;
            (op, end)
        }
        None => {
            if let Some(f) = crate::sse::translate(ins, &mut op, bitness) {
                op.f = f;
                return (op, end);
            }
            if let Some(f) = crate::x87::translate(ins, &mut op, bitness) {
                op.f = f;
                return (op, end);
            }
            (unimplemented_op(ins, bytes), true)
        }
    }
}

fn cc_of(ins: &Instruction) -> u8 {
    match ins.condition_code() {
        ConditionCode::None => 0,
        c => c as u8 - 1,
    }
}

fn near_size(ins: &Instruction) -> u32 {
    match ins.op_kind(0) {
        OpKind::NearBranch16 => 2,
        OpKind::NearBranch32 => 4,
        _ => 8,
    }
}

fn alu_handler(m: Mn, s: u32, dst: Opnd, src: Opnd, lock: bool, op: &mut Op) -> Option<Handler> {
    macro_rules! pick {
        ($o:ident) => {{
            match (dst, src) {
                (Opnd::Reg(d, _), Opnd::Reg(r, _)) => {
                    op.rm = d;
                    op.r = r;
                    hx!(s, false, alu_rm_r, $o)
                }
                (Opnd::Reg(d, _), Opnd::Mem(_)) => {
                    op.r = d;
                    h!(s, alu_r_m, [$o], [])
                }
                (Opnd::Reg(d, _), Opnd::Imm(i)) => {
                    op.rm = d;
                    op.imm = i;
                    hx!(s, false, alu_rm_i, $o)
                }
                (Opnd::Mem(_), Opnd::Reg(r, _)) => {
                    op.r = r;
                    if lock {
                        h!(s, alu_lock_r, [$o], [])
                    } else {
                        hx!(s, true, alu_rm_r, $o)
                    }
                }
                (Opnd::Mem(_), Opnd::Imm(i)) => {
                    op.imm = i;
                    if lock {
                        h!(s, alu_lock_i, [$o], [])
                    } else {
                        hx!(s, true, alu_rm_i, $o)
                    }
                }
                _ => return None,
            }
        }};
    }
    Some(match m {
        Mn::Add => pick!(Add),
        Mn::Or => pick!(Or),
        Mn::Adc => pick!(Adc),
        Mn::Sbb => pick!(Sbb),
        Mn::And => pick!(And),
        Mn::Sub => pick!(Sub),
        Mn::Xor => pick!(Xor),
        Mn::Cmp => pick!(Cmp),
        Mn::Test => pick!(Test),
        _ => return None,
    })
}

fn translate_inner(
    ins: &Instruction,
    op: &mut Op,
    _bitness: u32,
    feat: &Features,
) -> Option<Handler> {
    let m = ins.mnemonic();
    let o0 = opnd(ins, 0);
    let o1 = if ins.op_count() > 1 {
        opnd(ins, 1)
    } else {
        Opnd::Other
    };
    let lock = ins.has_lock_prefix();
    // Size of the first operand.
    let s0 = match o0 {
        Opnd::Reg(_, s) | Opnd::Mem(s) => s,
        _ => 0,
    };
    let mem0 = matches!(o0, Opnd::Mem(_));
    // For r/m operands: the register index goes to `rm`.
    let set_rm0 = |op: &mut Op| {
        if let Opnd::Reg(r, _) = o0 {
            op.rm = r;
        }
    };
    Some(match m {
        Mn::Add | Mn::Or | Mn::Adc | Mn::Sbb | Mn::And | Mn::Sub | Mn::Xor | Mn::Cmp | Mn::Test => {
            return alu_handler(m, s0, o0, o1, lock, op);
        }
        Mn::Inc | Mn::Dec | Mn::Not | Mn::Neg => {
            set_rm0(op);
            macro_rules! un {
                ($o:ident) => {
                    if lock && mem0 {
                        h!(s0, unary_lock, [$o], [])
                    } else {
                        hx!(s0, mem0, unary, $o)
                    }
                };
            }
            match m {
                Mn::Inc => un!(Inc),
                Mn::Dec => un!(Dec),
                Mn::Not => un!(Not),
                _ => un!(Neg),
            }
        }
        Mn::Mov => {
            // Control, debug and segment registers.
            let r0 = if ins.op_kind(0) == OpKind::Register {
                ins.op_register(0)
            } else {
                Register::None
            };
            let r1 = if ins.op_count() > 1 && ins.op_kind(1) == OpKind::Register {
                ins.op_register(1)
            } else {
                Register::None
            };
            if r0.is_cr() {
                op.x = r0.number() as u8;
                op.rm = gpr(r1)?.0;
                return Some(mov_to_cr);
            }
            if r1.is_cr() {
                op.x = r1.number() as u8;
                op.rm = gpr(r0)?.0;
                return Some(mov_from_cr);
            }
            if r0.is_dr() {
                op.x = r0.number() as u8;
                op.rm = gpr(r1)?.0;
                return Some(mov_to_dr);
            }
            if r1.is_dr() {
                op.x = r1.number() as u8;
                op.rm = gpr(r0)?.0;
                return Some(mov_from_dr);
            }
            if let Some(sr) = sreg(r0) {
                op.x = sr;
                if let Opnd::Reg(r, _) = o1 {
                    op.rm = r;
                }
                return Some(if matches!(o1, Opnd::Mem(_)) {
                    mov_sreg::<M>
                } else {
                    mov_sreg::<R>
                });
            }
            if let Some(sr) = sreg(r1) {
                op.x = sr;
                set_rm0(op);
                let s = if mem0 { 2 } else { s0 };
                return Some(hx!(s, mem0, mov_from_sreg));
            }
            match (o0, o1) {
                (Opnd::Reg(d, s), Opnd::Reg(r, _)) => {
                    op.rm = d;
                    op.r = r;
                    hx!(s, false, mov_rm_r)
                }
                (Opnd::Reg(d, s), Opnd::Mem(_)) => {
                    op.r = d;
                    h!(s, mov_r_m, [], [])
                }
                (Opnd::Reg(d, s), Opnd::Imm(i)) => {
                    op.rm = d;
                    op.imm = i;
                    hx!(s, false, mov_rm_i)
                }
                (Opnd::Mem(s), Opnd::Reg(r, _)) => {
                    op.r = r;
                    hx!(s, true, mov_rm_r)
                }
                (Opnd::Mem(s), Opnd::Imm(i)) => {
                    op.imm = i;
                    hx!(s, true, mov_rm_i)
                }
                _ => return None,
            }
        }
        Mn::Movzx | Mn::Movsx | Mn::Movsxd => {
            let Opnd::Reg(d, sd) = o0 else { return None };
            op.r = d;
            let (ss, mem) = match o1 {
                Opnd::Reg(r, s) => {
                    op.rm = r;
                    (s, false)
                }
                Opnd::Mem(s) => (s, true),
                _ => return None,
            };
            macro_rules! ext {
                ($f:ident) => {
                    match (sd, ss, mem) {
                        (2, 1, false) => $f::<W, B, R> as Handler,
                        (2, 1, true) => $f::<W, B, M>,
                        (4, 1, false) => $f::<D, B, R>,
                        (4, 1, true) => $f::<D, B, M>,
                        (8, 1, false) => $f::<Q, B, R>,
                        (8, 1, true) => $f::<Q, B, M>,
                        (4, 2, false) => $f::<D, W, R>,
                        (4, 2, true) => $f::<D, W, M>,
                        (8, 2, false) => $f::<Q, W, R>,
                        (8, 2, true) => $f::<Q, W, M>,
                        (2, 2, false) => $f::<W, W, R>,
                        (2, 2, true) => $f::<W, W, M>,
                        (8, 4, false) => $f::<Q, D, R>,
                        (8, 4, true) => $f::<Q, D, M>,
                        (4, 4, false) => $f::<D, D, R>,
                        (4, 4, true) => $f::<D, D, M>,
                        _ => return None,
                    }
                };
            }
            if m == Mn::Movzx || (m == Mn::Movsxd && sd <= ss) {
                ext!(movzx)
            } else {
                ext!(movsx)
            }
        }
        Mn::Lea => {
            let Opnd::Reg(d, s) = o0 else { return None };
            op.r = d;
            h!(s, lea, [], [])
        }
        Mn::Xchg => match (o0, o1) {
            (Opnd::Reg(a, s), Opnd::Reg(b, _)) => {
                op.rm = a;
                op.r = b;
                hx!(s, false, xchg)
            }
            (Opnd::Mem(s), Opnd::Reg(b, _)) | (Opnd::Reg(b, s), Opnd::Mem(_)) => {
                op.r = b;
                hx!(s, true, xchg)
            }
            _ => return None,
        },
        Mn::Nop
        | Mn::Pause
        | Mn::Endbr32
        | Mn::Endbr64
        | Mn::Lfence
        | Mn::Sfence
        | Mn::Prefetch
        | Mn::Prefetchnta
        | Mn::Prefetcht0
        | Mn::Prefetcht1
        | Mn::Prefetcht2
        | Mn::Prefetchw
        | Mn::Prefetchwt1 => crate::exec::nop,
        Mn::Mfence => mfence,
        Mn::Clflush | Mn::Clflushopt | Mn::Clwb => clflush,
        Mn::Push => {
            let s = (-ins.stack_pointer_increment()) as u32;
            match o0 {
                Opnd::Reg(r, _) => {
                    op.r = r;
                    h!(s, push_r, [], [])
                }
                Opnd::Imm(i) => {
                    op.imm = i;
                    h!(s, push_i, [], [])
                }
                Opnd::Mem(_) => h!(s, push_m, [], []),
                Opnd::Other => {
                    op.x = sreg(ins.op_register(0))?;
                    h!(s, push_sreg, [], [])
                }
            }
        }
        Mn::Pop => {
            let s = ins.stack_pointer_increment() as u32;
            match o0 {
                Opnd::Reg(r, _) => {
                    op.r = r;
                    h!(s, pop_r, [], [])
                }
                Opnd::Mem(_) => h!(s, pop_m, [], []),
                _ => {
                    op.x = sreg(ins.op_register(0))?;
                    h!(s, pop_sreg, [], [])
                }
            }
        }
        m if is_jcc(m) => {
            op.imm = ins.near_branch_target().wrapping_sub(ins.next_ip());
            let s = near_size(ins);
            macro_rules! j {
                ($c:literal) => {
                    match s {
                        2 => jcc::<$c, W> as Handler,
                        4 => jcc::<$c, D>,
                        _ => jcc::<$c, Q>,
                    }
                };
            }
            cc16!(cc_of(ins), j)
        }
        Mn::Jmp => match ins.op_kind(0) {
            OpKind::NearBranch16 | OpKind::NearBranch32 | OpKind::NearBranch64 => {
                op.imm = ins.near_branch_target().wrapping_sub(ins.next_ip());
                h!(near_size(ins), jmp_rel, [], [])
            }
            OpKind::FarBranch16 | OpKind::FarBranch32 => {
                op.disp = u64::from(ins.far_branch_selector());
                op.imm = if ins.op_kind(0) == OpKind::FarBranch16 {
                    u64::from(ins.far_branch16())
                } else {
                    u64::from(ins.far_branch32())
                };
                jmp_far_direct
            }
            _ => match o0 {
                Opnd::Reg(r, s) => {
                    op.rm = r;
                    hx!(s, false, jmp_rm)
                }
                Opnd::Mem(sz) if is_far_mem(ins) => h!(sz - 2, jmp_far_mem, [], []),
                Opnd::Mem(s) => hx!(s, true, jmp_rm),
                _ => return None,
            },
        },
        Mn::Call => match ins.op_kind(0) {
            OpKind::NearBranch16 | OpKind::NearBranch32 | OpKind::NearBranch64 => {
                op.imm = ins.near_branch_target().wrapping_sub(ins.next_ip());
                h!(near_size(ins), call_rel, [], [])
            }
            OpKind::FarBranch16 | OpKind::FarBranch32 => {
                op.disp = u64::from(ins.far_branch_selector());
                if ins.op_kind(0) == OpKind::FarBranch16 {
                    op.imm = u64::from(ins.far_branch16());
                    op.x = 2;
                } else {
                    op.imm = u64::from(ins.far_branch32());
                    op.x = 4;
                }
                call_far_direct
            }
            _ => match o0 {
                Opnd::Reg(r, s) => {
                    op.rm = r;
                    hx!(s, false, call_rm)
                }
                Opnd::Mem(sz) if is_far_mem(ins) => h!(sz - 2, call_far_mem, [], []),
                Opnd::Mem(s) => hx!(s, true, call_rm),
                _ => return None,
            },
        },
        Mn::Ret => {
            let imm = if ins.op_count() > 0 {
                ins.immediate(0)
            } else {
                0
            };
            op.imm = imm;
            let s = (ins.stack_pointer_increment() as u64 - imm) as u32;
            h!(s, ret, [], [])
        }
        Mn::Retf => {
            op.imm = if ins.op_count() > 0 {
                ins.immediate(0)
            } else {
                0
            };
            use iced_x86::Code as C;
            match ins.code() {
                C::Retfw | C::Retfw_imm16 => retf::<W>,
                C::Retfd | C::Retfd_imm16 => retf::<D>,
                _ => retf::<Q>,
            }
        }
        Mn::Loop | Mn::Loope | Mn::Loopne | Mn::Jcxz | Mn::Jecxz | Mn::Jrcxz => {
            op.imm = ins.near_branch_target().wrapping_sub(ins.next_ip());
            op.asz = match m {
                Mn::Jcxz => 0,
                Mn::Jecxz => 1,
                Mn::Jrcxz => 2,
                _ => {
                    // LOOPcc counts in CX, ECX or RCX, named by the encoding.
                    let name = format!("{:?}", ins.code());
                    if name.ends_with("_RCX") {
                        2
                    } else if name.ends_with("_ECX") {
                        1
                    } else {
                        0
                    }
                }
            };
            let s = near_size(ins);
            match m {
                Mn::Loop | Mn::Loope | Mn::Loopne => {
                    op.x = match m {
                        Mn::Loope => 1,
                        Mn::Loopne => 2,
                        _ => 0,
                    };
                    h!(s, loop_, [], [])
                }
                _ => h!(s, jcxz, [], []),
            }
        }
        Mn::Cmovo
        | Mn::Cmovno
        | Mn::Cmovb
        | Mn::Cmovae
        | Mn::Cmove
        | Mn::Cmovne
        | Mn::Cmovbe
        | Mn::Cmova
        | Mn::Cmovs
        | Mn::Cmovns
        | Mn::Cmovp
        | Mn::Cmovnp
        | Mn::Cmovl
        | Mn::Cmovge
        | Mn::Cmovle
        | Mn::Cmovg => {
            let Opnd::Reg(d, s) = o0 else { return None };
            op.r = d;
            let mem = match o1 {
                Opnd::Reg(r, _) => {
                    op.rm = r;
                    false
                }
                _ => true,
            };
            macro_rules! cm {
                ($c:literal) => {
                    hx!(s, mem, cmov, $c)
                };
            }
            cc16!(cc_of(ins), cm)
        }
        Mn::Seto
        | Mn::Setno
        | Mn::Setb
        | Mn::Setae
        | Mn::Sete
        | Mn::Setne
        | Mn::Setbe
        | Mn::Seta
        | Mn::Sets
        | Mn::Setns
        | Mn::Setp
        | Mn::Setnp
        | Mn::Setl
        | Mn::Setge
        | Mn::Setle
        | Mn::Setg => {
            set_rm0(op);
            macro_rules! st {
                ($c:literal) => {
                    if mem0 {
                        setcc::<$c, M> as Handler
                    } else {
                        setcc::<$c, R>
                    }
                };
            }
            cc16!(cc_of(ins), st)
        }
        Mn::Rol | Mn::Ror | Mn::Rcl | Mn::Rcr | Mn::Shl | Mn::Sal | Mn::Shr | Mn::Sar => {
            set_rm0(op);
            let cl = matches!(o1, Opnd::Reg(1, 1));
            if let Opnd::Imm(i) = o1 {
                op.imm = i;
            }
            macro_rules! sh {
                ($k:expr) => {
                    if cl {
                        hx!(s0, mem0, shift_cl, { $k })
                    } else {
                        hx!(s0, mem0, shift_i, { $k })
                    }
                };
            }
            match m {
                Mn::Rol => sh!(bits::ROL),
                Mn::Ror => sh!(bits::ROR),
                Mn::Rcl => sh!(bits::RCL),
                Mn::Rcr => sh!(bits::RCR),
                Mn::Shl | Mn::Sal => sh!(bits::SHL),
                Mn::Shr => sh!(bits::SHR),
                _ => sh!(bits::SAR),
            }
        }
        Mn::Shld | Mn::Shrd => {
            set_rm0(op);
            let Opnd::Reg(r, _) = o1 else { return None };
            op.r = r;
            let o2 = opnd(ins, 2);
            let cl = matches!(o2, Opnd::Reg(1, 1));
            if let Opnd::Imm(i) = o2 {
                op.imm = i;
            }
            match (m == Mn::Shrd, cl) {
                (false, false) => hx!(s0, mem0, shxd, false, false),
                (false, true) => hx!(s0, mem0, shxd, false, true),
                (true, false) => hx!(s0, mem0, shxd, true, false),
                (true, true) => hx!(s0, mem0, shxd, true, true),
            }
        }
        Mn::Bt | Mn::Bts | Mn::Btr | Mn::Btc => {
            set_rm0(op);
            macro_rules! bt {
                ($k:expr) => {
                    match o1 {
                        Opnd::Imm(i) => {
                            op.imm = i;
                            if lock && mem0 {
                                h!(s0, bt_lock_i, [{ $k }], [])
                            } else {
                                hx!(s0, mem0, bt_i, { $k })
                            }
                        }
                        Opnd::Reg(r, _) => {
                            op.r = r;
                            if mem0 {
                                if lock {
                                    h!(s0, bt_mr, [{ $k }, true], [])
                                } else {
                                    h!(s0, bt_mr, [{ $k }, false], [])
                                }
                            } else {
                                hx!(s0, false, bt_rr, { $k })
                            }
                        }
                        _ => return None,
                    }
                };
            }
            match m {
                Mn::Bt => bt!(bits::BT),
                Mn::Bts => bt!(bits::BTS),
                Mn::Btr => bt!(bits::BTR),
                _ => bt!(bits::BTC),
            }
        }
        Mn::Bsf | Mn::Bsr | Mn::Tzcnt | Mn::Lzcnt | Mn::Popcnt => {
            let Opnd::Reg(d, s) = o0 else { return None };
            op.r = d;
            let mem = match o1 {
                Opnd::Reg(r, _) => {
                    op.rm = r;
                    false
                }
                _ => true,
            };
            match m {
                Mn::Bsf => hx!(s, mem, bsf_bsr, false),
                Mn::Bsr => hx!(s, mem, bsf_bsr, true),
                Mn::Tzcnt if feat.bmi1 => hx!(s, mem, tzcnt_lzcnt, false),
                Mn::Lzcnt if feat.lzcnt => hx!(s, mem, tzcnt_lzcnt, true),
                Mn::Tzcnt => hx!(s, mem, bsf_bsr, false),
                Mn::Lzcnt => hx!(s, mem, bsf_bsr, true),
                _ => hx!(s, mem, popcnt),
            }
        }
        Mn::Bswap => {
            let Opnd::Reg(r, s) = o0 else { return None };
            op.r = r;
            h!(s, bswap, [], [])
        }
        Mn::Mul | Mn::Imul | Mn::Div | Mn::Idiv if ins.op_count() == 1 => {
            set_rm0(op);
            match m {
                Mn::Mul => hx!(s0, mem0, mul),
                Mn::Imul => hx!(s0, mem0, imul1),
                Mn::Div => hx!(s0, mem0, div),
                _ => hx!(s0, mem0, idiv),
            }
        }
        Mn::Imul => {
            let Opnd::Reg(d, s) = o0 else { return None };
            op.r = d;
            let mem = match o1 {
                Opnd::Reg(r, _) => {
                    op.rm = r;
                    false
                }
                _ => true,
            };
            if ins.op_count() == 3 {
                op.imm = ins.immediate(2);
                hx!(s, mem, imul3)
            } else {
                hx!(s, mem, imul2)
            }
        }
        Mn::Cbw => cbw::<W>,
        Mn::Cwde => cbw::<D>,
        Mn::Cdqe => cbw::<Q>,
        Mn::Cwd => cwd::<W>,
        Mn::Cdq => cwd::<D>,
        Mn::Cqo => cwd::<Q>,
        Mn::Clc | Mn::Stc | Mn::Cmc => {
            op.x = match m {
                Mn::Clc => 0,
                Mn::Stc => 1,
                _ => 2,
            };
            carry_op
        }
        Mn::Cld | Mn::Std => {
            op.x = (m == Mn::Std) as u8;
            dir_op
        }
        Mn::Cli | Mn::Sti => {
            op.x = (m == Mn::Sti) as u8;
            cli_sti
        }
        Mn::Lahf => lahf,
        Mn::Sahf => sahf,
        Mn::Xlatb => xlat,
        Mn::Salc => salc,
        Mn::Pushf => pushf::<W>,
        Mn::Pushfd => pushf::<D>,
        Mn::Pushfq => pushf::<Q>,
        Mn::Popf => popf::<W>,
        Mn::Popfd => popf::<D>,
        Mn::Popfq => popf::<Q>,
        Mn::Pusha => pusha::<W>,
        Mn::Pushad => pusha::<D>,
        Mn::Popa => popa::<W>,
        Mn::Popad => popa::<D>,
        Mn::Enter => {
            op.imm = ins.immediate(0);
            op.x = ins.immediate(1) as u8;
            let s = match ins.code() {
                iced_x86::Code::Enterw_imm16_imm8 => 2,
                iced_x86::Code::Enterd_imm16_imm8 => 4,
                _ => 8,
            };
            h!(s, enter, [], [])
        }
        Mn::Leave => {
            let s = match ins.code() {
                iced_x86::Code::Leavew => 2,
                iced_x86::Code::Leaved => 4,
                _ => 8,
            };
            h!(s, leave, [], [])
        }
        Mn::Movsb
        | Mn::Movsw
        | Mn::Movsd
        | Mn::Movsq
        | Mn::Stosb
        | Mn::Stosw
        | Mn::Stosd
        | Mn::Stosq
        | Mn::Lodsb
        | Mn::Lodsw
        | Mn::Lodsd
        | Mn::Lodsq
        | Mn::Cmpsb
        | Mn::Cmpsw
        | Mn::Cmpsd
        | Mn::Cmpsq
        | Mn::Scasb
        | Mn::Scasw
        | Mn::Scasd
        | Mn::Scasq
        | Mn::Insb
        | Mn::Insw
        | Mn::Insd
        | Mn::Outsb
        | Mn::Outsw
        | Mn::Outsd
            if is_string(ins) =>
        {
            op.asz = string_asz(ins);
            op.seg = sreg(ins.memory_segment()).unwrap_or(3);
            let s = match m {
                Mn::Movsb
                | Mn::Stosb
                | Mn::Lodsb
                | Mn::Cmpsb
                | Mn::Scasb
                | Mn::Insb
                | Mn::Outsb => 1,
                Mn::Movsw
                | Mn::Stosw
                | Mn::Lodsw
                | Mn::Cmpsw
                | Mn::Scasw
                | Mn::Insw
                | Mn::Outsw => 2,
                Mn::Movsd
                | Mn::Stosd
                | Mn::Lodsd
                | Mn::Cmpsd
                | Mn::Scasd
                | Mn::Insd
                | Mn::Outsd => 4,
                _ => 8,
            };
            let compare = matches!(
                m,
                Mn::Cmpsb
                    | Mn::Cmpsw
                    | Mn::Cmpsd
                    | Mn::Cmpsq
                    | Mn::Scasb
                    | Mn::Scasw
                    | Mn::Scasd
                    | Mn::Scasq
            );
            op.x = if ins.has_repne_prefix() {
                if compare {
                    string::REP_NE
                } else {
                    string::REP_E
                }
            } else if ins.has_rep_prefix() || ins.has_repe_prefix() {
                string::REP_E
            } else {
                string::REP_NONE
            };
            match m {
                Mn::Movsb | Mn::Movsw | Mn::Movsd | Mn::Movsq => h!(s, movs, [], []),
                Mn::Stosb | Mn::Stosw | Mn::Stosd | Mn::Stosq => h!(s, stos, [], []),
                Mn::Lodsb | Mn::Lodsw | Mn::Lodsd | Mn::Lodsq => h!(s, lods, [], []),
                Mn::Cmpsb | Mn::Cmpsw | Mn::Cmpsd | Mn::Cmpsq => h!(s, cmps, [], []),
                Mn::Scasb | Mn::Scasw | Mn::Scasd | Mn::Scasq => h!(s, scas, [], []),
                Mn::Insb | Mn::Insw | Mn::Insd => h!(s, ins_op, [], []),
                _ => h!(s, outs_op, [], []),
            }
        }
        Mn::Cmpxchg => {
            set_rm0(op);
            let Opnd::Reg(r, _) = o1 else { return None };
            op.r = r;
            if mem0 {
                h!(s0, cmpxchg_m, [], [])
            } else {
                h!(s0, cmpxchg_r, [], [])
            }
        }
        Mn::Xadd => {
            set_rm0(op);
            let Opnd::Reg(r, _) = o1 else { return None };
            op.r = r;
            if mem0 {
                if lock {
                    h!(s0, xadd_lock, [], [])
                } else {
                    hx!(s0, true, xadd)
                }
            } else {
                hx!(s0, false, xadd)
            }
        }
        Mn::Cmpxchg8b => cmpxchg8b,
        Mn::Cmpxchg16b => cmpxchg16b,
        Mn::In => {
            let Opnd::Reg(_, s) = o0 else { return None };
            if let Opnd::Imm(i) = o1 {
                op.imm = i;
                op.x2 = 1;
            }
            h!(s, in_op, [], [])
        }
        Mn::Out => {
            let Opnd::Reg(_, s) = o1 else { return None };
            if let Opnd::Imm(i) = o0 {
                op.imm = i;
                op.x2 = 1;
            }
            h!(s, out_op, [], [])
        }
        Mn::Int => {
            op.imm = ins.immediate(0);
            interrupt::int_n
        }
        Mn::Int3 => interrupt::int3,
        Mn::Into => interrupt::into,
        Mn::Int1 => interrupt::int1,
        Mn::Iret => interrupt::iret::<W>,
        Mn::Iretd => interrupt::iret::<D>,
        Mn::Iretq => interrupt::iret::<Q>,
        Mn::Hlt => hlt,
        Mn::Cpuid => cpuid_op,
        Mn::Rdtsc => rdtsc,
        Mn::Rdtscp => rdtscp,
        Mn::Rdmsr => rdmsr_op,
        Mn::Wrmsr => wrmsr_op,
        Mn::Rdpmc => rdpmc,
        Mn::Lgdt | Mn::Lidt => {
            op.x = (m == Mn::Lidt) as u8;
            op.x2 = match ins.memory_size().size() {
                10 => 8,
                6 if !is_code16(ins) => 4,
                _ => 2,
            };
            lgdt_lidt
        }
        Mn::Sgdt | Mn::Sidt => {
            op.x = (m == Mn::Sidt) as u8;
            sgdt_sidt
        }
        Mn::Sldt | Mn::Str => {
            op.x = (m == Mn::Str) as u8;
            set_rm0(op);
            let s = if mem0 { 2 } else { s0 };
            hx!(s, mem0, sldt_str)
        }
        Mn::Lldt | Mn::Ltr => {
            op.x = (m == Mn::Ltr) as u8;
            set_rm0(op);
            if mem0 { lldt_ltr::<M> } else { lldt_ltr::<R> }
        }
        Mn::Smsw => {
            set_rm0(op);
            let s = if mem0 { 2 } else { s0 };
            hx!(s, mem0, smsw)
        }
        Mn::Lmsw => {
            set_rm0(op);
            if mem0 { lmsw::<M> } else { lmsw::<R> }
        }
        Mn::Clts => clts,
        Mn::Invlpg => invlpg,
        Mn::Wbinvd | Mn::Invd | Mn::Wbnoinvd => wbinvd,
        Mn::Swapgs => swapgs,
        Mn::Syscall => syscall,
        Mn::Sysret | Mn::Sysretq => {
            op.x = (m == Mn::Sysretq) as u8;
            sysret
        }
        Mn::Sysenter => sysenter,
        Mn::Sysexit | Mn::Sysexitq => {
            op.x = (m == Mn::Sysexitq) as u8;
            sysexit
        }
        Mn::Lar | Mn::Lsl => {
            let Opnd::Reg(d, s) = o0 else { return None };
            op.r = d;
            op.x = (m == Mn::Lsl) as u8;
            let mem = match o1 {
                Opnd::Reg(r, _) => {
                    op.rm = r;
                    false
                }
                _ => true,
            };
            hx!(s, mem, lar_lsl)
        }
        Mn::Verr | Mn::Verw => {
            op.x = if m == Mn::Verr { 2 } else { 3 };
            set_rm0(op);
            if mem0 { verr_verw::<M> } else { verr_verw::<R> }
        }
        Mn::Arpl => {
            set_rm0(op);
            let Opnd::Reg(r, _) = o1 else { return None };
            op.r = r;
            if mem0 { arpl::<M> } else { arpl::<R> }
        }
        Mn::Lds | Mn::Les | Mn::Lfs | Mn::Lgs | Mn::Lss => {
            let Opnd::Reg(d, s) = o0 else { return None };
            op.r = d;
            op.x = match m {
                Mn::Les => 0,
                Mn::Lss => 2,
                Mn::Lds => 3,
                Mn::Lfs => 4,
                _ => 5,
            };
            h!(s, load_far_ptr, [], [])
        }
        Mn::Vmcall | Mn::Vmmcall => vmcall,
        Mn::Ud0 | Mn::Ud1 | Mn::Ud2 => ud2,
        Mn::Daa | Mn::Das | Mn::Aaa | Mn::Aas | Mn::Aam | Mn::Aad => {
            if matches!(m, Mn::Aam | Mn::Aad) {
                op.imm = ins.immediate(0);
            }
            op.x = match m {
                Mn::Daa => 0,
                Mn::Das => 1,
                Mn::Aaa => 2,
                Mn::Aas => 3,
                Mn::Aam => 4,
                _ => 5,
            };
            crate::exec::alu::bcd
        }
        _ => return None,
    })
}

fn is_jcc(m: Mn) -> bool {
    matches!(
        m,
        Mn::Jo
            | Mn::Jno
            | Mn::Jb
            | Mn::Jae
            | Mn::Je
            | Mn::Jne
            | Mn::Jbe
            | Mn::Ja
            | Mn::Js
            | Mn::Jns
            | Mn::Jp
            | Mn::Jnp
            | Mn::Jl
            | Mn::Jge
            | Mn::Jle
            | Mn::Jg
    )
}

fn is_code16(ins: &Instruction) -> bool {
    ins.code() == iced_x86::Code::Lgdt_m1632_16 || ins.code() == iced_x86::Code::Lidt_m1632_16
}

fn is_far_mem(ins: &Instruction) -> bool {
    use iced_x86::Code as C;
    matches!(
        ins.code(),
        C::Jmp_m1616 | C::Jmp_m1632 | C::Jmp_m1664 | C::Call_m1616 | C::Call_m1632 | C::Call_m1664
    )
}

/// Whether `ins` can be the first half of a fused op with a conditional branch (see
/// `exec::fused`).
pub(crate) fn fusable(ins: &Instruction, bitness: u32) -> bool {
    bitness != 16 && !ins.has_lock_prefix() && fuse_form(ins).is_some()
}

/// What a fusable first instruction is.
#[derive(Clone, Copy)]
enum First {
    /// A two-operand ALU operation in this `exec::fused` form.
    Alu(u8),
    /// `inc`/`dec reg`.
    Unary,
}

/// The fused form and operand size of a first instruction, if it has one.
fn fuse_form(ins: &Instruction) -> Option<(First, u32)> {
    use crate::exec::fused::*;
    let m = ins.mnemonic();
    let compare = matches!(m, Mn::Cmp | Mn::Test);
    let alu = matches!(m, Mn::Add | Mn::Sub | Mn::And | Mn::Or | Mn::Xor);
    let o1 = if ins.op_count() > 1 {
        opnd(ins, 1)
    } else {
        Opnd::Other
    };
    let (first, s) = match (opnd(ins, 0), o1) {
        (Opnd::Reg(_, s), Opnd::Reg(..)) if compare || alu => (First::Alu(RM_R_REG), s),
        (Opnd::Mem(s), Opnd::Reg(..)) if compare => (First::Alu(RM_R_MEM), s),
        (Opnd::Reg(_, s), Opnd::Imm(_)) if compare || alu => (First::Alu(RM_I_REG), s),
        (Opnd::Reg(_, s), Opnd::Mem(_)) if m == Mn::Cmp => (First::Alu(R_M), s),
        (Opnd::Reg(_, s), Opnd::Other) if matches!(m, Mn::Inc | Mn::Dec) && ins.op_count() == 1 => {
            (First::Unary, s)
        }
        _ => return None,
    };
    matches!(s, 1 | 4 | 8).then_some((first, s))
}

/// Fuses `first` (an instruction for which [`fusable`] held, decoded as `first_op`) with
/// `next` when `next` is a conditional branch. Returns the op that replaces `first_op`.
pub(crate) fn fuse(first: &Instruction, first_op: &Op, next: &Instruction) -> Option<Op> {
    use crate::exec::fused::*;
    if !is_jcc(next.mnemonic()) {
        return None;
    }
    let (kind, s) = fuse_form(first)?;
    let cc = cc_of(next);
    let m = first.mnemonic();
    // Compares branch on any condition; the others (which also write a result) on the
    // zero and sign conditions loops and masks use, to bound the number of handlers.
    if !matches!(m, Mn::Cmp | Mn::Test) && !matches!(cc, 4 | 5 | 8 | 9) {
        return None;
    }
    let disp = next.near_branch_target().wrapping_sub(next.next_ip());
    let mut op = *first_op;
    op.len = first_op.len.checked_add(next.len() as u8)?;
    op.x = first_op.len;
    op.x2 = match near_size(next) {
        2 => 0,
        4 => 1,
        _ => 2,
    };
    if matches!(kind, First::Alu(RM_I_REG)) {
        op.disp = disp;
    } else {
        op.imm = disp;
    }
    if op.base == RIP as u8 {
        // RIP-relative operands are relative to the end of the op, now the branch's end.
        op.disp = op.disp.wrapping_sub(next.len() as u64);
    }
    fn alu<O: AluOp, const FORM: u8, const CC: u8>(s: u32) -> Handler {
        match s {
            1 => alu_jcc::<O, B, FORM, CC>,
            4 => alu_jcc::<O, D, FORM, CC>,
            _ => alu_jcc::<O, Q, FORM, CC>,
        }
    }
    fn unary<U: UnOp, const CC: u8>(s: u32) -> Handler {
        match s {
            1 => unary_jcc::<U, B, CC>,
            4 => unary_jcc::<U, D, CC>,
            _ => unary_jcc::<U, Q, CC>,
        }
    }
    /// Any condition (compares).
    fn any_cc<O: AluOp, const FORM: u8>(s: u32, cc: u8) -> Handler {
        macro_rules! c {
            ($c:literal) => {
                alu::<O, FORM, $c>(s)
            };
        }
        cc16!(cc, c)
    }
    /// Zero and sign conditions, register forms (operations that store).
    fn zs_cc<O: AluOp>(form: u8, s: u32, cc: u8) -> Handler {
        match (form, cc) {
            (RM_R_REG, 4) => alu::<O, RM_R_REG, 4>(s),
            (RM_R_REG, 5) => alu::<O, RM_R_REG, 5>(s),
            (RM_R_REG, 8) => alu::<O, RM_R_REG, 8>(s),
            (RM_R_REG, _) => alu::<O, RM_R_REG, 9>(s),
            (_, 4) => alu::<O, RM_I_REG, 4>(s),
            (_, 5) => alu::<O, RM_I_REG, 5>(s),
            (_, 8) => alu::<O, RM_I_REG, 8>(s),
            _ => alu::<O, RM_I_REG, 9>(s),
        }
    }
    fn compare<O: AluOp>(form: u8, s: u32, cc: u8) -> Handler {
        match form {
            RM_R_REG => any_cc::<O, RM_R_REG>(s, cc),
            RM_R_MEM => any_cc::<O, RM_R_MEM>(s, cc),
            RM_I_REG => any_cc::<O, RM_I_REG>(s, cc),
            _ => any_cc::<O, R_M>(s, cc),
        }
    }
    fn unary_cc<U: UnOp>(s: u32, cc: u8) -> Handler {
        match cc {
            4 => unary::<U, 4>(s),
            5 => unary::<U, 5>(s),
            8 => unary::<U, 8>(s),
            _ => unary::<U, 9>(s),
        }
    }
    op.f = match (kind, m) {
        (First::Unary, Mn::Inc) => unary_cc::<Inc>(s, cc),
        (First::Unary, _) => unary_cc::<Dec>(s, cc),
        (First::Alu(f), Mn::Cmp) => compare::<Cmp>(f, s, cc),
        (First::Alu(f), Mn::Test) => compare::<Test>(f, s, cc),
        (First::Alu(f), Mn::Add) => zs_cc::<Add>(f, s, cc),
        (First::Alu(f), Mn::Sub) => zs_cc::<Sub>(f, s, cc),
        (First::Alu(f), Mn::And) => zs_cc::<And>(f, s, cc),
        (First::Alu(f), Mn::Or) => zs_cc::<Or>(f, s, cc),
        (First::Alu(f), _) => zs_cc::<Xor>(f, s, cc),
    };
    Some(op)
}
