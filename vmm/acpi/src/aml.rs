//! A small AML encoder: the subset of ACPI Machine Language a static DSDT needs.
//!
//! Objects are built as a tree ([`Term`], [`Data`], [`ResourceTemplate`]) and encoded with
//! [`encode_terms`], which validates names, strings and sizes and reports [`AcpiError`]
//! instead of emitting a malformed table.
//!
//! Spec: ACPI 6.5, section 20.2 (AML grammar: NameString, PkgLength, data objects,
//! DefScope/DefDevice/DefMethod/DefName/DefReturn) and section 6.4 (resource descriptors).

use crate::AcpiError;

const ZERO_OP: u8 = 0x00;
const ONE_OP: u8 = 0x01;
const NAME_OP: u8 = 0x08;
const BYTE_PREFIX: u8 = 0x0a;
const WORD_PREFIX: u8 = 0x0b;
const DWORD_PREFIX: u8 = 0x0c;
const STRING_PREFIX: u8 = 0x0d;
const QWORD_PREFIX: u8 = 0x0e;
const SCOPE_OP: u8 = 0x10;
const BUFFER_OP: u8 = 0x11;
const PACKAGE_OP: u8 = 0x12;
const METHOD_OP: u8 = 0x14;
const DUAL_NAME_PREFIX: u8 = 0x2e;
const MULTI_NAME_PREFIX: u8 = 0x2f;
const EXT_OP_PREFIX: u8 = 0x5b;
const DEVICE_OP: u8 = 0x82;
const ROOT_CHAR: u8 = b'\\';
const PARENT_PREFIX_CHAR: u8 = b'^';
const RETURN_OP: u8 = 0xa4;

/// A data object (what a `Name` holds or a `Return` returns).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Data {
    /// An integer, encoded in the smallest form.
    Integer(u64),
    /// An ASCII string without NUL.
    String(String),
    /// A compressed EISA ID such as `"PNP0501"` (encoded as an integer).
    EisaId(String),
    /// A buffer of raw bytes.
    Buffer(Vec<u8>),
    /// A package of up to 255 elements.
    Package(Vec<Data>),
    /// A resource template (a buffer of resource descriptors ending with an end tag).
    Resources(ResourceTemplate),
}

/// A term in a definition block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Term {
    /// `Name (name, value)`.
    Name(String, Data),
    /// `Scope (name) { body }`.
    Scope(String, Vec<Term>),
    /// `Device (name) { body }`.
    Device(String, Vec<Term>),
    /// `Method (name, args, serialized) { body }`.
    Method {
        /// Name (one segment or a path).
        name: String,
        /// Argument count, 0-7.
        args: u8,
        /// Whether the method is serialized.
        serialized: bool,
        /// Statements.
        body: Vec<Term>,
    },
    /// `Return (value)`.
    Return(Data),
}

impl Term {
    /// `Name (name, value)`.
    pub fn name(name: &str, value: Data) -> Self {
        Term::Name(name.to_string(), value)
    }

    /// `Device (name) { body }`.
    pub fn device(name: &str, body: Vec<Term>) -> Self {
        Term::Device(name.to_string(), body)
    }

    /// `Scope (name) { body }`.
    pub fn scope(name: &str, body: Vec<Term>) -> Self {
        Term::Scope(name.to_string(), body)
    }

    /// A method without arguments returning a constant.
    pub fn method_returning(name: &str, value: Data) -> Self {
        Term::Method {
            name: name.to_string(),
            args: 0,
            serialized: false,
            body: vec![Term::Return(value)],
        }
    }
}

/// A `ResourceTemplate ()`: resource descriptors, in order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResourceTemplate {
    items: Vec<u8>,
}

/// Resource type of an address space descriptor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddressSpace {
    /// Memory range (cacheable, read-write).
    Memory,
    /// I/O range.
    Io,
    /// Bus number range.
    BusNumber,
}

impl AddressSpace {
    fn resource_type(self) -> u8 {
        match self {
            AddressSpace::Memory => 0,
            AddressSpace::Io => 1,
            AddressSpace::BusNumber => 2,
        }
    }

    fn type_flags(self) -> u8 {
        match self {
            // Read-write, cacheable.
            AddressSpace::Memory => 0x03,
            // Entire range (ISA and non-ISA).
            AddressSpace::Io => 0x03,
            AddressSpace::BusNumber => 0,
        }
    }
}

impl ResourceTemplate {
    /// An empty template (only the end tag).
    pub fn new() -> Self {
        Self::default()
    }

    /// `IO (Decode16, min, max, align, len)`.
    pub fn io(mut self, min: u16, max: u16, align: u8, len: u8) -> Self {
        self.items.push(0x47);
        self.items.push(0x01);
        self.items.extend_from_slice(&min.to_le_bytes());
        self.items.extend_from_slice(&max.to_le_bytes());
        self.items.push(align);
        self.items.push(len);
        self
    }

    /// `IO (Decode16, base, base, 1, len)`: a fixed range.
    pub fn io_fixed(self, base: u16, len: u8) -> Self {
        self.io(base, base, 1, len)
    }

    /// `IRQNoFlags () {irq}` (edge-triggered, active high, exclusive). `irq` must be < 16.
    pub fn irq_no_flags(mut self, irq: u8) -> Self {
        let mask = 1u16 << (irq & 0x0f);
        self.items.push(0x22);
        self.items.extend_from_slice(&mask.to_le_bytes());
        self
    }

    /// `IRQ (Level, ActiveLow, Shared) {irq}` with explicit flags. `irq` must be < 16.
    pub fn irq(mut self, irq: u8, level: bool, active_low: bool, shared: bool) -> Self {
        let mask = 1u16 << (irq & 0x0f);
        let flags = u8::from(!level) | (u8::from(active_low) << 3) | (u8::from(shared) << 4);
        self.items.push(0x23);
        self.items.extend_from_slice(&mask.to_le_bytes());
        self.items.push(flags);
        self
    }

    /// `Memory32Fixed (ReadWrite or ReadOnly, base, len)`.
    pub fn memory32_fixed(mut self, base: u32, len: u32, writable: bool) -> Self {
        self.items.push(0x86);
        self.items.extend_from_slice(&9u16.to_le_bytes());
        self.items.push(u8::from(writable));
        self.items.extend_from_slice(&base.to_le_bytes());
        self.items.extend_from_slice(&len.to_le_bytes());
        self
    }

    /// Address space descriptor header shared by the Word/DWord/QWord forms.
    fn address_header(&mut self, tag: u8, len: u16, space: AddressSpace, producer: bool) {
        self.items.push(tag);
        self.items.extend_from_slice(&len.to_le_bytes());
        self.items.push(space.resource_type());
        // General flags: MinFixed, MaxFixed, and ResourceConsumer unless producing.
        self.items.push(0x0c | u8::from(!producer));
        self.items.push(space.type_flags());
    }

    /// `WordBusNumber`/`WordIO` style descriptor covering `min..=max`, producing the range for
    /// children (a bridge).
    pub fn word_space(mut self, space: AddressSpace, min: u16, max: u16) -> Self {
        self.address_header(0x88, 13, space, true);
        let len = max.wrapping_sub(min).wrapping_add(1);
        for v in [0u16, min, max, 0, len] {
            self.items.extend_from_slice(&v.to_le_bytes());
        }
        self
    }

    /// `DWordMemory`/`DWordIO` descriptor covering `min..=max`, produced for children.
    pub fn dword_space(mut self, space: AddressSpace, min: u32, max: u32) -> Self {
        self.address_header(0x87, 23, space, true);
        let len = max.wrapping_sub(min).wrapping_add(1);
        for v in [0u32, min, max, 0, len] {
            self.items.extend_from_slice(&v.to_le_bytes());
        }
        self
    }

    /// `QWordMemory` descriptor covering `min..=max`, produced for children.
    pub fn qword_memory(mut self, min: u64, max: u64) -> Self {
        self.address_header(0x8a, 43, AddressSpace::Memory, true);
        let len = max.wrapping_sub(min).wrapping_add(1);
        for v in [0u64, min, max, 0, len] {
            self.items.extend_from_slice(&v.to_le_bytes());
        }
        self
    }

    /// The descriptor bytes including the end tag.
    pub fn bytes(&self) -> Vec<u8> {
        let mut v = self.items.clone();
        // End tag with a zero checksum ("treat as correct").
        v.extend_from_slice(&[0x79, 0x00]);
        v
    }
}

/// Encodes a PkgLength for a body of `body_len` bytes.
fn pkg_length(body_len: usize) -> Result<Vec<u8>, AcpiError> {
    if body_len + 1 < 0x40 {
        return Ok(vec![(body_len + 1) as u8]);
    }
    for extra in 1..=3usize {
        let total = body_len + 1 + extra;
        if total < 1 << (4 + 8 * extra) {
            let mut v = vec![((extra as u8) << 6) | (total & 0x0f) as u8];
            for i in 0..extra {
                v.push((total >> (4 + 8 * i)) as u8);
            }
            return Ok(v);
        }
    }
    Err(AcpiError::TooLarge("AML package"))
}

fn with_pkg_length(out: &mut Vec<u8>, body: &[u8]) -> Result<(), AcpiError> {
    out.extend_from_slice(&pkg_length(body.len())?);
    out.extend_from_slice(body);
    Ok(())
}

/// Encodes a name path such as `\_SB.COM1`, `^PCI0`, `_S5_` or `COM1`.
pub fn encode_name(path: &str, out: &mut Vec<u8>) -> Result<(), AcpiError> {
    let bad = || AcpiError::InvalidName(path.to_string());
    let bytes = path.as_bytes();
    let mut rest = bytes;
    if let [ROOT_CHAR, tail @ ..] = rest {
        out.push(ROOT_CHAR);
        rest = tail;
    } else {
        while let [PARENT_PREFIX_CHAR, tail @ ..] = rest {
            out.push(PARENT_PREFIX_CHAR);
            rest = tail;
        }
    }
    if rest.is_empty() {
        out.push(0x00);
        return Ok(());
    }
    let segments: Vec<&[u8]> = rest.split(|&b| b == b'.').collect();
    match segments.len() {
        1 => {}
        2 => out.push(DUAL_NAME_PREFIX),
        n => {
            out.push(MULTI_NAME_PREFIX);
            out.push(u8::try_from(n).map_err(|_| bad())?);
        }
    }
    for seg in segments {
        let valid_first = seg
            .first()
            .is_some_and(|c| c.is_ascii_uppercase() || *c == b'_');
        let valid_rest = seg
            .iter()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || *c == b'_');
        if seg.len() > 4 || !valid_first || !valid_rest {
            return Err(bad());
        }
        out.extend_from_slice(seg);
        out.extend(std::iter::repeat_n(b'_', 4 - seg.len()));
    }
    Ok(())
}

fn encode_integer(v: u64, out: &mut Vec<u8>) {
    match v {
        0 => out.push(ZERO_OP),
        1 => out.push(ONE_OP),
        2..=0xff => out.extend_from_slice(&[BYTE_PREFIX, v as u8]),
        0x100..=0xffff => {
            out.push(WORD_PREFIX);
            out.extend_from_slice(&(v as u16).to_le_bytes());
        }
        0x1_0000..=0xffff_ffff => {
            out.push(DWORD_PREFIX);
            out.extend_from_slice(&(v as u32).to_le_bytes());
        }
        _ => {
            out.push(QWORD_PREFIX);
            out.extend_from_slice(&v.to_le_bytes());
        }
    }
}

/// The 32-bit compressed form of an EISA ID like `PNP0501`.
pub fn eisa_id(id: &str) -> Result<u32, AcpiError> {
    let bad = || AcpiError::InvalidEisaId(id.to_string());
    let b = id.as_bytes();
    if b.len() != 7 || !b[..3].iter().all(u8::is_ascii_uppercase) {
        return Err(bad());
    }
    let hex = u16::from_str_radix(&id[3..], 16).map_err(|_| bad())?;
    let c = |i: usize| u32::from(b[i] - 0x40);
    let vendor = (c(0) << 10) | (c(1) << 5) | c(2);
    // Stored big-endian: vendor (2 bytes) then product (2 bytes).
    let bytes = [
        (vendor >> 8) as u8,
        vendor as u8,
        (hex >> 8) as u8,
        hex as u8,
    ];
    Ok(u32::from_le_bytes(bytes))
}

fn encode_data(data: &Data, out: &mut Vec<u8>) -> Result<(), AcpiError> {
    match data {
        Data::Integer(v) => encode_integer(*v, out),
        Data::EisaId(id) => encode_integer(u64::from(eisa_id(id)?), out),
        Data::String(s) => {
            if !s.bytes().all(|b| b.is_ascii() && b != 0) {
                return Err(AcpiError::InvalidString(s.clone()));
            }
            out.push(STRING_PREFIX);
            out.extend_from_slice(s.as_bytes());
            out.push(0);
        }
        Data::Buffer(bytes) => encode_buffer(bytes, out)?,
        Data::Resources(rt) => encode_buffer(&rt.bytes(), out)?,
        Data::Package(elems) => {
            let count = u8::try_from(elems.len()).map_err(|_| AcpiError::TooLarge("package"))?;
            let mut body = vec![count];
            for e in elems {
                encode_data(e, &mut body)?;
            }
            out.push(PACKAGE_OP);
            with_pkg_length(out, &body)?;
        }
    }
    Ok(())
}

fn encode_buffer(bytes: &[u8], out: &mut Vec<u8>) -> Result<(), AcpiError> {
    let mut body = Vec::with_capacity(bytes.len() + 4);
    encode_integer(bytes.len() as u64, &mut body);
    body.extend_from_slice(bytes);
    out.push(BUFFER_OP);
    with_pkg_length(out, &body)
}

fn encode_term(term: &Term, out: &mut Vec<u8>) -> Result<(), AcpiError> {
    match term {
        Term::Name(name, value) => {
            out.push(NAME_OP);
            encode_name(name, out)?;
            encode_data(value, out)?;
        }
        Term::Scope(name, body) | Term::Device(name, body) => {
            let mut inner = Vec::new();
            encode_name(name, &mut inner)?;
            encode_terms(body, &mut inner)?;
            if matches!(term, Term::Scope(..)) {
                out.push(SCOPE_OP);
            } else {
                out.extend_from_slice(&[EXT_OP_PREFIX, DEVICE_OP]);
            }
            with_pkg_length(out, &inner)?;
        }
        Term::Method {
            name,
            args,
            serialized,
            body,
        } => {
            if *args > 7 {
                return Err(AcpiError::InvalidName(format!("{name}: {args} arguments")));
            }
            let mut inner = Vec::new();
            encode_name(name, &mut inner)?;
            inner.push(args | (u8::from(*serialized) << 3));
            encode_terms(body, &mut inner)?;
            out.push(METHOD_OP);
            with_pkg_length(out, &inner)?;
        }
        Term::Return(value) => {
            out.push(RETURN_OP);
            encode_data(value, out)?;
        }
    }
    Ok(())
}

/// Encodes a list of terms (a TermList) into `out`.
pub fn encode_terms(terms: &[Term], out: &mut Vec<u8>) -> Result<(), AcpiError> {
    for t in terms {
        encode_term(t, out)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pkg_length_forms() {
        assert_eq!(pkg_length(0).unwrap(), [1]);
        assert_eq!(pkg_length(0x3e).unwrap(), [0x3f]);
        // 0x3f body bytes + 2 length bytes = 0x41.
        assert_eq!(pkg_length(0x3f).unwrap(), [0x41, 0x04]);
        assert_eq!(pkg_length(0xffd).unwrap(), [0x4f, 0xff]);
        assert_eq!(pkg_length(0xffe).unwrap(), [0x81, 0x00, 0x01]);
        assert!(pkg_length(1 << 28).is_err());
    }

    #[test]
    fn names() {
        let enc = |p: &str| {
            let mut v = Vec::new();
            encode_name(p, &mut v).map(|()| v)
        };
        assert_eq!(enc("_S5").unwrap(), b"_S5_");
        assert_eq!(enc("\\_SB.COM1").unwrap(), b"\\\x2e_SB_COM1");
        assert_eq!(enc("^^A.B.C").unwrap(), b"^^\x2f\x03A___B___C___");
        assert_eq!(enc("\\").unwrap(), b"\\\0");
        for bad in ["com1", "1ABC", "ABCDE", "A..B", "A-B", ""] {
            assert!(enc(bad).is_err() || bad.is_empty(), "{bad}");
        }
    }

    #[test]
    fn eisa_ids() {
        assert_eq!(eisa_id("PNP0501").unwrap(), 0x0105_d041);
        assert_eq!(eisa_id("PNP0A03").unwrap(), 0x030a_d041);
        assert!(eisa_id("pnp0501").is_err());
        assert!(eisa_id("PNP050").is_err());
        assert!(eisa_id("PNP05G1").is_err());
    }

    #[test]
    fn integers_use_the_smallest_encoding() {
        let enc = |v| {
            let mut out = Vec::new();
            encode_integer(v, &mut out);
            out
        };
        assert_eq!(enc(0), [0x00]);
        assert_eq!(enc(1), [0x01]);
        assert_eq!(enc(5), [0x0a, 5]);
        assert_eq!(enc(0x3f8), [0x0b, 0xf8, 0x03]);
        assert_eq!(enc(0xfec0_0000), [0x0c, 0, 0, 0xc0, 0xfe]);
        assert_eq!(enc(1 << 32).len(), 9);
    }

    #[test]
    fn invalid_objects_are_errors() {
        let mut out = Vec::new();
        assert!(encode_data(&Data::String("a\0b".into()), &mut out).is_err());
        assert!(encode_data(&Data::Package(vec![Data::Integer(0); 256]), &mut out).is_err());
        let m = Term::Method {
            name: "FOO".into(),
            args: 8,
            serialized: false,
            body: vec![],
        };
        assert!(encode_term(&m, &mut out).is_err());
    }

    #[test]
    fn device_with_resources_encodes() {
        let t = Term::device(
            "COM1",
            vec![
                Term::name("_HID", Data::EisaId("PNP0501".into())),
                Term::name(
                    "_CRS",
                    Data::Resources(ResourceTemplate::new().io_fixed(0x3f8, 8).irq_no_flags(4)),
                ),
            ],
        );
        let mut out = Vec::new();
        encode_term(&t, &mut out).unwrap();
        assert_eq!(&out[..2], [0x5b, 0x82]);
        assert_eq!(
            usize::from(out[2]),
            out.len() - 2,
            "one-byte PkgLength covers the rest"
        );
        assert_eq!(&out[3..7], b"COM1");
    }
}
