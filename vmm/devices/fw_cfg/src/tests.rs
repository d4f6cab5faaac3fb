use super::*;

const DESC: u64 = 0x1000;
const BUF: u64 = 0x2000;

fn config() -> FwCfgConfig {
    FwCfgConfig {
        processors: 2,
        max_processors: 4,
        ram_size: 256 << 20,
        uuid: [7; 16],
        nographic: true,
        boot_menu: false,
    }
}

fn device() -> (FwCfg, GuestMemory) {
    let mem = GuestMemory::allocate(0x10000);
    (FwCfg::new(mem.clone(), &config()), mem)
}

fn select(d: &mut FwCfg, key: u16) {
    d.io_write(PORT_SELECTOR, &key.to_le_bytes()).unwrap();
}

fn read_bytes(d: &mut FwCfg, n: usize) -> Vec<u8> {
    (0..n)
        .map(|_| {
            let mut b = [0];
            d.io_read(PORT_DATA, &mut b).unwrap();
            b[0]
        })
        .collect()
}

/// Writes a DMA descriptor and kicks it, as SeaBIOS's `qemu_cfg_dma_transfer` does.
fn dma(d: &mut FwCfg, mem: &GuestMemory, control: u32, length: u32, address: u64) -> u32 {
    let mut desc = Vec::new();
    desc.extend_from_slice(&control.to_be_bytes());
    desc.extend_from_slice(&length.to_be_bytes());
    desc.extend_from_slice(&address.to_be_bytes());
    mem.write_at(DESC, &desc).unwrap();
    d.io_write(PORT_DMA_HIGH, &((DESC >> 32) as u32).to_be_bytes())
        .unwrap();
    d.io_write(PORT_DMA_LOW, &(DESC as u32).to_be_bytes())
        .unwrap();
    let mut status = [0u8; 4];
    mem.read_at(DESC, &mut status).unwrap();
    u32::from_be_bytes(status)
}

/// Parses the file directory the way firmware does.
fn directory(d: &mut FwCfg) -> Vec<(String, u16, u32)> {
    select(d, key::FILE_DIR);
    let count = u32::from_be_bytes(read_bytes(d, 4).try_into().unwrap());
    (0..count)
        .map(|_| {
            let e = read_bytes(d, 64);
            let size = u32::from_be_bytes(e[0..4].try_into().unwrap());
            let key = u16::from_be_bytes([e[4], e[5]]);
            let end = e[8..].iter().position(|&b| b == 0).unwrap();
            (
                String::from_utf8(e[8..8 + end].to_vec()).unwrap(),
                key,
                size,
            )
        })
        .collect()
}

#[test]
fn signature_id_and_standard_items() {
    let (mut d, _) = device();
    select(&mut d, key::SIGNATURE);
    assert_eq!(read_bytes(&mut d, 4), b"QEMU");
    select(&mut d, key::ID);
    assert_eq!(read_bytes(&mut d, 4), [3, 0, 0, 0], "traditional + DMA");
    select(&mut d, key::NB_CPUS);
    assert_eq!(read_bytes(&mut d, 2), [2, 0]);
    select(&mut d, key::MAX_CPUS);
    assert_eq!(read_bytes(&mut d, 2), [4, 0]);
    select(&mut d, key::RAM_SIZE);
    assert_eq!(read_bytes(&mut d, 8), (256u64 << 20).to_le_bytes());
    select(&mut d, key::UUID);
    assert_eq!(read_bytes(&mut d, 16), [7; 16]);
    // Past the end and unknown keys read zeros.
    select(&mut d, key::NOGRAPHIC);
    assert_eq!(read_bytes(&mut d, 4), [1, 0, 0, 0]);
    select(&mut d, 0x1234);
    assert_eq!(read_bytes(&mut d, 2), [0, 0]);
    let mut sig = [0u8; 8];
    for (i, b) in sig.iter_mut().enumerate() {
        let mut one = [0u8];
        d.io_read(PORT_DMA_HIGH + i as u16, &mut one).unwrap();
        *b = one[0];
    }
    assert_eq!(&sig, DMA_SIGNATURE);
}

#[test]
fn files_appear_in_a_sorted_directory() {
    let (mut d, _) = device();
    let k1 = d.add_file("opt/zzz", vec![1, 2, 3]).unwrap();
    let k2 = d
        .set_boot_order(&[ide_boot_path(0, 0), ide_boot_path(1, 0)])
        .unwrap();
    let dir = directory(&mut d);
    assert_eq!(
        dir,
        vec![
            ("bootorder".to_string(), k2, 69),
            ("opt/zzz".to_string(), k1, 3),
        ]
    );
    select(&mut d, k2);
    let text = read_bytes(&mut d, 69);
    assert_eq!(
        &text[..],
        b"/pci@i0cf8/ide@1,1/drive@0/disk@0\n/pci@i0cf8/ide@1,1/drive@1/disk@0\n\0"
    );
    assert_eq!(
        d.add_file("opt/zzz", vec![]),
        Err(FwCfgError::DuplicateFile("opt/zzz".into()))
    );
    assert!(d.add_file(&"x".repeat(56), vec![]).is_err());
    assert!(d.add_file("", vec![]).is_err());
}

#[test]
fn e820_file_layout() {
    let (mut d, _) = device();
    let k = d
        .set_e820(&[
            E820Entry {
                address: 0,
                length: 0x9fc00,
                kind: E820Entry::RAM,
            },
            E820Entry {
                address: 0x10_0000,
                length: 0x0ff0_0000,
                kind: E820Entry::RAM,
            },
        ])
        .unwrap();
    select(&mut d, k);
    let raw = read_bytes(&mut d, 40);
    assert_eq!(
        u64::from_le_bytes(raw[20..28].try_into().unwrap()),
        0x10_0000
    );
    assert_eq!(
        u64::from_le_bytes(raw[28..36].try_into().unwrap()),
        0x0ff0_0000
    );
    assert_eq!(u32::from_le_bytes(raw[36..40].try_into().unwrap()), 1);
}

#[test]
fn dma_select_read_skip_and_zero_fill() {
    let (mut d, mem) = device();
    let k = d.add_file("etc/acpi/tables", (0..=99).collect()).unwrap();
    mem.fill_at(BUF, 0xaa, 64).unwrap();
    // Select + read 10.
    let control = (u32::from(k) << 16) | DMA_SELECT | DMA_READ;
    assert_eq!(dma(&mut d, &mem, control, 10, BUF), 0);
    let mut got = [0u8; 10];
    mem.read_at(BUF, &mut got).unwrap();
    assert_eq!(got, [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
    // Skip 80, read 16: 10 data bytes then zeros.
    assert_eq!(dma(&mut d, &mem, DMA_SKIP, 80, 0), 0);
    assert_eq!(dma(&mut d, &mem, DMA_READ, 16, BUF), 0);
    let mut got = [0u8; 17];
    mem.read_at(BUF, &mut got).unwrap();
    assert_eq!(&got[..10], &(90..100).collect::<Vec<u8>>()[..]);
    assert_eq!(&got[10..16], &[0; 6]);
    assert_eq!(got[16], 0xaa, "nothing written past the length");
    // The legacy port continues from the DMA offset.
    assert_eq!(read_bytes(&mut d, 1), [0]);
}

#[test]
fn dma_errors_are_reported_not_fatal() {
    let (mut d, mem) = device();
    let k = d.add_file("ro", vec![1; 8]).unwrap();
    // Read to an address outside guest memory.
    let control = (u32::from(k) << 16) | DMA_SELECT | DMA_READ;
    assert_eq!(dma(&mut d, &mem, control, 8, 0xffff_0000), DMA_ERROR);
    // Huge length beyond memory.
    assert_eq!(dma(&mut d, &mem, control, u32::MAX, BUF), DMA_ERROR);
    // Write to a read-only file.
    let control = (u32::from(k) << 16) | DMA_SELECT | DMA_WRITE;
    assert_eq!(dma(&mut d, &mem, control, 4, BUF), DMA_ERROR);
    assert_eq!(d.file("ro"), Some(&[1u8; 8][..]));
    // Descriptor outside memory: nothing happens, no panic.
    d.io_write(PORT_DMA_HIGH, &[0, 0, 0, 1]).unwrap();
    d.io_write(PORT_DMA_LOW, &[0, 0, 0, 0]).unwrap();
}

#[test]
fn dma_write_to_a_writable_file_stays_in_bounds() {
    let (mut d, mem) = device();
    let k = d.add_writable_file("etc/vmgenid_addr", vec![0; 8]).unwrap();
    mem.write_at(BUF, &[9, 8, 7, 6, 5, 4, 3, 2, 1]).unwrap();
    let control = (u32::from(k) << 16) | DMA_SELECT | DMA_WRITE;
    assert_eq!(dma(&mut d, &mem, control, 8, BUF), 0);
    assert_eq!(
        d.file("etc/vmgenid_addr"),
        Some(&[9, 8, 7, 6, 5, 4, 3, 2][..])
    );
    assert_eq!(
        dma(&mut d, &mem, control, 9, BUF),
        DMA_ERROR,
        "past the end"
    );
}

#[test]
fn access_sizes() {
    let (mut d, _) = device();
    assert_eq!(
        d.io_write(PORT_DMA_LOW, &[0, 0]),
        Err(IoError::InvalidAccessSize)
    );
    d.io_write(PORT_SELECTOR, &[0]).unwrap();
    let mut four = [0u8; 4];
    d.io_read(PORT_DATA, &mut four).unwrap();
    assert_eq!(&four, b"QEMU");
    assert_eq!(FwCfg::port_ranges(), [0x510..=0x511, 0x514..=0x51b]);
}

#[test]
fn garbage_dma_never_panics() {
    let (mut d, mem) = device();
    d.add_writable_file("w", vec![0; 32]).unwrap();
    d.add_file("r", vec![5; 300]).unwrap();
    let mut x: u64 = 0x0bad_cafe_dead_beef;
    for _ in 0..20_000 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let control = (x as u32) & 0x003f_001f;
        let length = ((x >> 32) as u32) % 0x3000;
        let address = (x >> 20) % 0x12000;
        dma(&mut d, &mem, control, length, address);
        if x & 1 == 0 {
            select(&mut d, (x >> 40) as u16);
            read_bytes(&mut d, 3);
        }
    }
}
