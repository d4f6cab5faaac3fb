//! The crate's error: [`image_file::Error`] named for VHDX.

pub use image_file::ErrorKind;

/// The VHDX format, as error messages name it.
#[derive(Debug)]
pub enum VhdxFormat {}

impl image_file::ImageFormat for VhdxFormat {
    const NAME: &'static str = "VHDX";
}

/// A VHDX error: kind, context and (for I/O and parent errors) the cause.
pub type Error = image_file::Error<VhdxFormat>;

/// Results of this crate.
pub type Result<T> = std::result::Result<T, Error>;
