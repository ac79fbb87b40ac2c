//! Still images for `capflow eval`: PNG (any bit depth and colour type) and baseline/progressive JPEG decoded into
//! 8-bit grey or RGB, and masks into a foreground map.

use std::path::Path;

use anyhow::{bail, Context};
use capflow_ingest::PixelFormat;

/// A decoded 8-bit image, rows tightly packed.
#[derive(Clone, Debug, PartialEq)]
pub struct Image {
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// `Gray8` or `Rgb8`.
    pub format: PixelFormat,
    /// `width * height * channels` bytes.
    pub data: Vec<u8>,
}

/// Encodes a tightly packed 8-bit RGB image as PNG in memory (fast compression: evidence images are many).
pub fn encode_rgb_png(width: usize, height: usize, rgb: &[u8]) -> anyhow::Result<Vec<u8>> {
    let mut bytes = Vec::new();
    let mut encoder = png::Encoder::new(&mut bytes, u32::try_from(width)?, u32::try_from(height)?);
    encoder.set_color(png::ColorType::Rgb);
    encoder.set_depth(png::BitDepth::Eight);
    encoder.set_compression(png::Compression::Fast);
    let mut writer = encoder.write_header().context("encoding a PNG")?;
    writer.write_image_data(rgb).context("encoding a PNG")?;
    writer.finish().context("encoding a PNG")?;
    Ok(bytes)
}

/// Whether `path` has a still-image extension capflow reads (`.png`, `.jpg`, `.jpeg`, any case).
pub fn is_image(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| matches!(e.to_ascii_lowercase().as_str(), "png" | "jpg" | "jpeg"))
}

/// Reads a PNG or JPEG (by extension) into 8-bit grey or RGB; alpha is dropped, 16-bit samples are reduced to 8.
pub fn read_image(path: &Path) -> anyhow::Result<Image> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase)
        .unwrap_or_default();
    let decoded = match ext.as_str() {
        "png" => decode_png(&bytes),
        "jpg" | "jpeg" => decode_jpeg(&bytes),
        _ => bail!("not a .png/.jpg/.jpeg file"),
    };
    decoded.with_context(|| {
        format!(
            "{} is not a readable PNG/JPEG image; re-export it as 8-bit PNG or JPEG, or remove it",
            path.display()
        )
    })
}

fn decode_png(bytes: &[u8]) -> anyhow::Result<Image> {
    let mut decoder = png::Decoder::new(bytes);
    decoder.set_transformations(png::Transformations::normalize_to_color8());
    let mut reader = decoder.read_info()?;
    let mut buf = vec![0; reader.output_buffer_size()];
    let info = reader.next_frame(&mut buf)?;
    let (w, h) = (info.width as usize, info.height as usize);
    let rows = buf
        .chunks(info.line_size)
        .take(h)
        .map(|row| &row[..w * info.color_type.samples()]);
    let (format, data): (PixelFormat, Vec<u8>) = match info.color_type {
        png::ColorType::Grayscale => (PixelFormat::Gray8, rows.flatten().copied().collect()),
        png::ColorType::GrayscaleAlpha => (
            PixelFormat::Gray8,
            rows.flat_map(|r| r.chunks_exact(2).map(|p| p[0])).collect(),
        ),
        png::ColorType::Rgb => (PixelFormat::Rgb8, rows.flatten().copied().collect()),
        png::ColorType::Rgba => (
            PixelFormat::Rgb8,
            rows.flat_map(|r| r.chunks_exact(4).flat_map(|p| [p[0], p[1], p[2]]))
                .collect(),
        ),
        png::ColorType::Indexed => bail!("palette PNG was not expanded"),
    };
    Ok(Image {
        width: info.width,
        height: info.height,
        format,
        data,
    })
}

fn decode_jpeg(bytes: &[u8]) -> anyhow::Result<Image> {
    use zune_jpeg::zune_core::colorspace::ColorSpace;
    use zune_jpeg::zune_core::options::DecoderOptions;
    let options = DecoderOptions::default().jpeg_set_out_colorspace(ColorSpace::RGB);
    let mut decoder =
        zune_jpeg::JpegDecoder::new_with_options(std::io::Cursor::new(bytes), options);
    let data = decoder.decode().map_err(|e| anyhow::anyhow!("{e:?}"))?;
    let (w, h) = decoder.dimensions().context("JPEG without dimensions")?;
    if data.len() != w * h * 3 {
        bail!("JPEG decoded to {} bytes, not {w}x{h} RGB", data.len());
    }
    Ok(Image {
        width: w as u32,
        height: h as u32,
        format: PixelFormat::Rgb8,
        data,
    })
}

impl Image {
    /// Foreground map of a mask image: a pixel is foreground when its brightest colour channel is above
    /// `threshold` (so white, grey and coloured masks all work, and JPEG ringing below the threshold is ignored).
    pub fn foreground(&self, threshold: u8) -> Vec<bool> {
        match self.format {
            PixelFormat::Gray8 => self.data.iter().map(|&v| v > threshold).collect(),
            PixelFormat::Rgb8 => self
                .data
                .chunks_exact(3)
                .map(|p| p[0].max(p[1]).max(p[2]) > threshold)
                .collect(),
        }
    }

    /// The image as interleaved RGB (grey is replicated).
    pub fn to_rgb(&self) -> Vec<u8> {
        match self.format {
            PixelFormat::Gray8 => self.data.iter().flat_map(|&v| [v, v, v]).collect(),
            PixelFormat::Rgb8 => self.data.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn png_round_trip_grey_and_rgb_and_foreground() {
        let dir = tempfile::tempdir().unwrap();
        let gray = dir.path().join("m.png");
        capflow_synth::write_gray_png(&gray, 3, 2, &[0, 255, 127, 128, 0, 200]).unwrap();
        let img = read_image(&gray).unwrap();
        assert_eq!(
            (img.width, img.height, img.format),
            (3, 2, PixelFormat::Gray8)
        );
        assert_eq!(img.foreground(127), [false, true, false, true, false, true]);
        let rgb = dir.path().join("f.PNG");
        capflow_synth::write_rgb_png(&rgb, 2, 1, &[255, 0, 0, 10, 20, 30]).unwrap();
        let encoded = encode_rgb_png(2, 1, &[255, 0, 0, 10, 20, 30]).unwrap();
        assert_eq!(std::fs::read(&rgb).unwrap().len() > 8, encoded.len() > 8);
        let again = dir.path().join("again.png");
        std::fs::write(&again, &encoded).unwrap();
        assert_eq!(read_image(&again).unwrap().data, [255, 0, 0, 10, 20, 30]);
        let img = read_image(&rgb).unwrap();
        assert_eq!(img.format, PixelFormat::Rgb8);
        assert_eq!(img.data, [255, 0, 0, 10, 20, 30]);
        assert_eq!(img.foreground(127), [true, false]);
        assert!(is_image(&rgb) && is_image(Path::new("a.JPeG")) && !is_image(Path::new("a.txt")));
    }

    #[test]
    fn unreadable_files_name_the_file_and_the_fix() {
        let dir = tempfile::tempdir().unwrap();
        let bad = dir.path().join("broken.jpg");
        std::fs::write(&bad, b"not a jpeg").unwrap();
        let err = format!("{:#}", read_image(&bad).unwrap_err());
        assert!(
            err.contains("broken.jpg") && err.contains("re-export"),
            "{err}"
        );
    }
}
