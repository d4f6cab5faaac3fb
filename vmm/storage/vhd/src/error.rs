//! The crate's error: [`image_file::Error`] named for VHD.

pub use image_file::ErrorKind;

/// The VHD format, as error messages name it.
#[derive(Debug)]
pub enum VhdFormat {}

impl image_file::ImageFormat for VhdFormat {
    const NAME: &'static str = "VHD";
}

/// A VHD error: kind, context and (for I/O and parent errors) the cause.
pub type Error = image_file::Error<VhdFormat>;

/// Results of this crate.
pub type Result<T> = std::result::Result<T, Error>;
