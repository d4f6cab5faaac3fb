//! `agar disk`: inspect, create and convert images without qemu-img.
//!
//! ```text
//! agar disk info FILE
//! agar disk create FILE SIZE [--fixed] [--block-size SIZE] [--sector-size 512|4096]
//! agar disk convert SRC DST [--fixed] [--block-size SIZE] [--sector-size 512|4096]
//! ```
//!
//! Formats come from the extensions (`.raw`/`.img`, `.vhd`, `.vhdx`); images are dynamic
//! unless `--fixed`. The source of `convert` may be any format (it is sniffed).

use std::io::Write;
use std::path::PathBuf;

use clap::Args;
use clap::Subcommand;
use disk_spec::ByteSize;

use crate::DiskError;
use crate::DiskErrorKind;
use crate::image;

/// `agar disk`.
#[derive(Debug, Clone, Args)]
pub struct DiskArgs {
    /// What to do.
    #[command(subcommand)]
    pub command: DiskCommand,
}

/// The `agar disk` subcommands.
#[derive(Debug, Clone, Subcommand)]
pub enum DiskCommand {
    /// Describe an image: format, sizes, allocation, identity, parent.
    Info {
        /// The image.
        file: PathBuf,
    },
    /// Create an empty image; the format comes from the extension.
    Create {
        /// The new image (.raw, .img, .vhd or .vhdx); must not exist.
        file: PathBuf,
        /// Virtual size, e.g. 4GB or 512M.
        size: ByteSize,
        /// Layout options.
        #[command(flatten)]
        layout: LayoutArgs,
    },
    /// Copy a disk into a new image of the format the destination's extension names.
    Convert {
        /// The source image (raw, VHD or VHDX; sniffed).
        src: PathBuf,
        /// The new image (.raw, .img, .vhd or .vhdx); must not exist.
        dst: PathBuf,
        /// Layout options.
        #[command(flatten)]
        layout: LayoutArgs,
    },
}

/// How a new image is laid out.
#[derive(Debug, Clone, Default, Args)]
pub struct LayoutArgs {
    /// Allocate every block up front instead of on first write (VHD, VHDX).
    #[arg(long)]
    pub fixed: bool,
    /// Block size (VHD default 2MB, VHDX default 32MB).
    #[arg(long, value_name = "SIZE")]
    pub block_size: Option<ByteSize>,
    /// Logical sector size of a VHDX: 512 or 4096.
    #[arg(long, value_name = "BYTES")]
    pub sector_size: Option<u32>,
}

impl LayoutArgs {
    fn options(&self) -> Result<image::CreateOptions, DiskError> {
        let block_size = self
            .block_size
            .map(|b| {
                u32::try_from(b.0).map_err(|_| {
                    DiskError::new(DiskErrorKind::InvalidArgument, "block size is too large")
                })
            })
            .transpose()?;
        Ok(image::CreateOptions {
            fixed: self.fixed,
            block_size,
            sector_size: self.sector_size,
        })
    }
}

/// Runs a subcommand, printing its results to `out`.
pub fn run(args: &DiskArgs, out: &mut dyn Write) -> Result<(), DiskError> {
    let print = |out: &mut dyn Write, text: String| {
        out.write_all(text.as_bytes())
            .map_err(|e| DiskError::io("writing output", e))
    };
    match &args.command {
        DiskCommand::Info { file } => print(out, image::info(file)?.to_string()),
        DiskCommand::Create { file, size, layout } => {
            let format = image::ImageFormat::from_path(file)?;
            image::create(file, format, size.0, &layout.options()?)?;
            let kind = if layout.fixed { "fixed" } else { "dynamic" };
            let kind = if format == image::ImageFormat::Raw {
                ""
            } else {
                kind
            };
            print(
                out,
                format!("created {} ({format} {kind}, {size})\n", file.display()),
            )
        }
        DiskCommand::Convert { src, dst, layout } => {
            let stats = image::convert(src, dst, &layout.options()?)?;
            print(
                out,
                format!(
                    "converted {} -> {} ({} bytes, {} written)\n",
                    src.display(),
                    dst.display(),
                    stats.size,
                    stats.written
                ),
            )
        }
    }
}
