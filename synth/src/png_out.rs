//! PNG writing of frames (RGB) and masks (8-bit grey).

use std::fs::File;
use std::io::BufWriter;
use std::path::Path;

use crate::SynthError;

fn write_png(
    path: &Path,
    width: u32,
    height: u32,
    color: png::ColorType,
    data: &[u8],
) -> Result<(), SynthError> {
    let file = File::create(path).map_err(|e| SynthError::io(path, e))?;
    let mut encoder = png::Encoder::new(BufWriter::new(file), width, height);
    encoder.set_color(color);
    encoder.set_depth(png::BitDepth::Eight);
    encoder.set_compression(png::Compression::Fast);
    let png_err = |source| SynthError::Png {
        path: path.to_path_buf(),
        source,
    };
    let mut writer = encoder.write_header().map_err(png_err)?;
    writer.write_image_data(data).map_err(png_err)?;
    writer.finish().map_err(png_err)
}

/// Writes a tightly packed RGB image as PNG.
pub fn write_rgb_png(path: &Path, width: u32, height: u32, rgb: &[u8]) -> Result<(), SynthError> {
    write_png(path, width, height, png::ColorType::Rgb, rgb)
}

/// Writes an 8-bit single-channel image (e.g. a 0/255 mask) as PNG.
pub fn write_gray_png(path: &Path, width: u32, height: u32, gray: &[u8]) -> Result<(), SynthError> {
    write_png(path, width, height, png::ColorType::Grayscale, gray)
}
