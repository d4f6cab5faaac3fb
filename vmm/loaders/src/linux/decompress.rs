//! Decompression of a bzImage payload on the host.
//!
//! The payload is what `arch/x86/boot/compressed/Makefile` produced from the ELF vmlinux: gzip,
//! xz (with the x86 BCJ filter), lz4 in the legacy frame format, or zstd. All but gzip are
//! followed by the uncompressed size as 4 little-endian bytes, which the decoders here ignore.

use std::io::Read;

use crate::LoadError;

/// Largest decompressed kernel accepted (a decompression bomb stops here).
pub const MAX_DECOMPRESSED: u64 = 512 << 20;

/// Magic of the lz4 legacy frame format.
const LZ4_LEGACY_MAGIC: u32 = 0x184c_2102;
/// Block size of the lz4 legacy format: every block decompresses to at most this.
const LZ4_LEGACY_BLOCK: usize = 8 << 20;

/// A payload compression format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// gzip (deflate).
    Gzip,
    /// xz.
    Xz,
    /// lz4, legacy frame format.
    Lz4Legacy,
    /// zstd.
    Zstd,
    /// Not compressed: the payload is the ELF itself.
    None,
}

impl Format {
    /// Name for messages.
    pub fn name(self) -> &'static str {
        match self {
            Self::Gzip => "gzip",
            Self::Xz => "xz",
            Self::Lz4Legacy => "lz4",
            Self::Zstd => "zstd",
            Self::None => "uncompressed",
        }
    }

    /// Recognizes a payload by its magic bytes.
    pub fn detect(payload: &[u8]) -> Result<Self, LoadError> {
        let unsupported = |name: &str| LoadError::Unsupported {
            what: "bzImage payload",
            detail: format!("{name} compression (supported: gzip, xz, lz4, zstd)"),
        };
        Ok(match payload {
            [0x1f, 0x8b, ..] => Self::Gzip,
            [0xfd, b'7', b'z', b'X', b'Z', 0, ..] => Self::Xz,
            [0x02, 0x21, 0x4c, 0x18, ..] => Self::Lz4Legacy,
            [0x28, 0xb5, 0x2f, 0xfd, ..] => Self::Zstd,
            [0x7f, b'E', b'L', b'F', ..] => Self::None,
            [b'B', b'Z', b'h', ..] => return Err(unsupported("bzip2")),
            [0x5d, 0, 0, ..] => return Err(unsupported("lzma")),
            [0x89, b'L', b'Z', b'O', ..] => return Err(unsupported("lzo")),
            _ => {
                let head: Vec<String> =
                    payload.iter().take(6).map(|b| format!("{b:02x}")).collect();
                return Err(LoadError::malformed(
                    "bzImage payload",
                    format!("unknown compression (first bytes {})", head.join(" ")),
                ));
            }
        })
    }
}

/// Decompresses `payload` (format detected from its magic) into the ELF vmlinux.
pub fn decompress(payload: &[u8]) -> Result<(Format, Vec<u8>), LoadError> {
    let format = Format::detect(payload)?;
    let err = |detail: String| LoadError::Decompress {
        format: format.name(),
        detail,
    };
    let out = match format {
        Format::None => payload.to_vec(),
        Format::Gzip => read_capped(flate2::read::GzDecoder::new(payload)).map_err(err)?,
        Format::Xz => xz(payload).map_err(err)?,
        Format::Zstd => zstd_frame(payload).map_err(err)?,
        Format::Lz4Legacy => lz4_legacy(payload).map_err(err)?,
    };
    Ok((format, out))
}

fn read_capped(reader: impl Read) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    reader
        .take(MAX_DECOMPRESSED + 1)
        .read_to_end(&mut out)
        .map_err(|e| e.to_string())?;
    if out.len() as u64 > MAX_DECOMPRESSED {
        return Err(format!("larger than {} MiB", MAX_DECOMPRESSED >> 20));
    }
    Ok(out)
}

/// One zstd frame, decompressed in one call into a buffer sized from the frame header (or the
/// size trailer when the header does not record it).
fn zstd_frame(payload: &[u8]) -> Result<Vec<u8>, String> {
    let frame_len = zstd::zstd_safe::find_frame_compressed_size(payload)
        .map_err(|code| zstd::zstd_safe::get_error_name(code).to_string())?;
    let frame = payload.get(..frame_len).ok_or("frame runs past the end")?;
    let declared = match zstd::zstd_safe::get_frame_content_size(frame) {
        Ok(Some(n)) => n,
        _ => payload
            .get(frame_len..frame_len + 4)
            .and_then(|t| t.try_into().ok())
            .map_or(0, |t| u64::from(u32::from_le_bytes(t))),
    };
    if declared > MAX_DECOMPRESSED {
        return Err(format!("larger than {} MiB", MAX_DECOMPRESSED >> 20));
    }
    if declared == 0 {
        return read_capped(
            zstd::stream::read::Decoder::new(frame)
                .map_err(|e| e.to_string())?
                .single_frame(),
        );
    }
    zstd::bulk::decompress(frame, declared as usize).map_err(|e| e.to_string())
}

/// One xz stream; whatever follows it (the size trailer) is ignored.
fn xz(payload: &[u8]) -> Result<Vec<u8>, String> {
    let mut stream =
        xz2::stream::Stream::new_stream_decoder(u64::MAX, 0).map_err(|e| e.to_string())?;
    let mut out: Vec<u8> = Vec::with_capacity(payload.len().saturating_mul(4));
    loop {
        let consumed = stream.total_in() as usize;
        let input = payload.get(consumed..).unwrap_or_default();
        if out.len() == out.capacity() {
            if out.len() as u64 >= MAX_DECOMPRESSED {
                return Err(format!("larger than {} MiB", MAX_DECOMPRESSED >> 20));
            }
            out.reserve(out.len().max(1 << 20));
        }
        let before = (stream.total_in(), stream.total_out());
        let status = stream
            .process_vec(input, &mut out, xz2::stream::Action::Run)
            .map_err(|e| e.to_string())?;
        if status == xz2::stream::Status::StreamEnd {
            return Ok(out);
        }
        if (stream.total_in(), stream.total_out()) == before && out.len() < out.capacity() {
            return Err("truncated stream".into());
        }
    }
}

/// The lz4 legacy frame: magic, then blocks of (u32 compressed size, data), each decompressing
/// to at most 8 MiB. A repeated magic starts a concatenated frame. The kernel build appends the
/// uncompressed size, so 4 bytes left over at the end end the stream.
fn lz4_legacy(payload: &[u8]) -> Result<Vec<u8>, String> {
    let mut pos = 4; // past the magic `detect` checked
    let mut out: Vec<u8> = Vec::new();
    while pos < payload.len() {
        if payload.len() - pos == 4 {
            break;
        }
        let size_bytes = payload
            .get(pos..pos + 4)
            .ok_or_else(|| format!("truncated block header at offset {pos}"))?;
        let size = u32::from_le_bytes(size_bytes.try_into().map_err(|_| "short read")?);
        pos += 4;
        if size == LZ4_LEGACY_MAGIC {
            continue;
        }
        let block = pos
            .checked_add(size as usize)
            .and_then(|end| payload.get(pos..end))
            .ok_or_else(|| format!("block of {size} bytes at offset {pos} runs past the end"))?;
        pos += block.len();
        let start = out.len();
        if (start + LZ4_LEGACY_BLOCK) as u64 > MAX_DECOMPRESSED + LZ4_LEGACY_BLOCK as u64 {
            return Err(format!("larger than {} MiB", MAX_DECOMPRESSED >> 20));
        }
        out.resize(start + LZ4_LEGACY_BLOCK, 0);
        let n = lz4_flex::block::decompress_into(block, &mut out[start..])
            .map_err(|e| format!("block at offset {pos}: {e}"))?;
        out.truncate(start + n);
    }
    if out.len() as u64 > MAX_DECOMPRESSED {
        return Err(format!("larger than {} MiB", MAX_DECOMPRESSED >> 20));
    }
    Ok(out)
}

#[cfg(test)]
pub(crate) mod tests {
    use std::io::Write;

    use super::*;

    /// `data` compressed as the kernel build would for `format`, size trailer included.
    pub(crate) fn compress(format: Format, data: &[u8]) -> Vec<u8> {
        let trailer = (data.len() as u32).to_le_bytes();
        let mut out = match format {
            Format::None => return data.to_vec(),
            Format::Gzip => {
                let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
                e.write_all(data).unwrap();
                return e.finish().unwrap();
            }
            Format::Xz => {
                let mut e = xz2::write::XzEncoder::new(Vec::new(), 1);
                e.write_all(data).unwrap();
                e.finish().unwrap()
            }
            Format::Zstd => zstd::bulk::compress(data, 1).unwrap(),
            Format::Lz4Legacy => {
                let mut v = LZ4_LEGACY_MAGIC.to_le_bytes().to_vec();
                for block in data.chunks(LZ4_LEGACY_BLOCK) {
                    let c = lz4_flex::block::compress(block);
                    v.extend_from_slice(&(c.len() as u32).to_le_bytes());
                    v.extend_from_slice(&c);
                }
                v
            }
        };
        out.extend_from_slice(&trailer);
        out
    }

    fn sample() -> Vec<u8> {
        // Compressible but not trivial, and more than one lz4 legacy block.
        (0..(9u32 << 20))
            .map(|i| (i % 251) as u8 ^ (i >> 13) as u8)
            .collect()
    }

    #[test]
    fn every_format_round_trips() {
        let data = sample();
        for f in [Format::Gzip, Format::Xz, Format::Lz4Legacy, Format::Zstd] {
            let (got_format, out) = decompress(&compress(f, &data)).unwrap();
            assert_eq!(got_format, f);
            assert!(out == data, "{} output differs", f.name());
        }
    }

    #[test]
    fn corrupt_payloads_are_errors() {
        let data = sample();
        for f in [Format::Gzip, Format::Xz, Format::Lz4Legacy, Format::Zstd] {
            let mut c = compress(f, &data);
            let n = c.len();
            c.truncate(n / 2);
            let e = decompress(&c).unwrap_err();
            assert!(
                matches!(e, LoadError::Decompress { .. }),
                "{}: {e}",
                f.name()
            );
            let mut c = compress(f, &data);
            for b in &mut c[8..64] {
                *b ^= 0x5a;
            }
            assert!(
                decompress(&c).is_err(),
                "{}: corrupted header accepted",
                f.name()
            );
        }
    }

    #[test]
    fn lz4_block_sizes_are_checked() {
        let mut p = LZ4_LEGACY_MAGIC.to_le_bytes().to_vec();
        p.extend_from_slice(&u32::MAX.to_le_bytes());
        p.extend_from_slice(&[0; 16]);
        assert!(
            decompress(&p)
                .unwrap_err()
                .to_string()
                .contains("past the end")
        );
    }

    #[test]
    fn unknown_and_unsupported_formats() {
        assert!(matches!(
            Format::detect(b"BZh91AY"),
            Err(LoadError::Unsupported { .. })
        ));
        assert!(
            Format::detect(&[1, 2, 3, 4, 5, 6])
                .unwrap_err()
                .to_string()
                .contains("01 02")
        );
        assert!(Format::detect(&[]).is_err());
    }
}
