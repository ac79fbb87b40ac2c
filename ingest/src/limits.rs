//! Bounds on what a source may deliver: frame width, height, pixels and decoded bytes.
//!
//! A hostile or broken input (a 16000×16000 image, a 1×1 clip) must fail its own stream with an error that says what
//! was seen, which limit it broke and which config key raises it, before frames that size pile up in memory. A
//! [`Source`](crate::Source) checks the limits three times, as early as each input allows: on the caps a demuxer or
//! parser announces before anything is decoded, on the decoder's raw caps before the first frame is converted, and
//! on every frame.

use crate::{IngestError, PixelFormat};

/// Frame-size limits of a stream (the run config's `[limits]` table).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameLimits {
    /// Widest frame accepted, pixels (`limits.max_width`).
    pub max_width: u32,
    /// Tallest frame accepted, pixels (`limits.max_height`).
    pub max_height: u32,
    /// Most pixels per frame (`limits.max_frame_pixels`).
    pub max_pixels: u64,
    /// Most bytes per decoded frame in the pipeline's pixel format (`limits.max_frame_bytes`).
    pub max_frame_bytes: u64,
    /// Narrowest frame accepted, pixels (`limits.min_width`): smaller frames cannot show a capillary.
    pub min_width: u32,
    /// Shortest frame accepted, pixels (`limits.min_height`).
    pub min_height: u32,
}

impl FrameLimits {
    /// Default widest and tallest frame: 8192 pixels (8K).
    pub const DEFAULT_MAX_SIDE: u32 = 8192;
    /// Default most pixels per frame: 8192 × 8192.
    pub const DEFAULT_MAX_PIXELS: u64 = 8192 * 8192;
    /// Default most bytes per decoded frame: 8192 × 8192 RGB.
    pub const DEFAULT_MAX_FRAME_BYTES: u64 = 8192 * 8192 * 3;
    /// Default smallest width and height: 16 pixels.
    pub const DEFAULT_MIN_SIDE: u32 = 16;

    /// Checks a `width × height` frame in `format` from `input` against the limits; the error names the input, the
    /// size seen, the limit broken and its config key.
    pub fn check(
        &self,
        input: &str,
        width: u32,
        height: u32,
        format: PixelFormat,
    ) -> Result<(), IngestError> {
        let pixels = u64::from(width) * u64::from(height);
        let bytes = pixels * format.channels() as u64;
        let broken = |key: &'static str, limit: u64, above: bool| IngestError::FrameLimit {
            input: input.to_owned(),
            width,
            height,
            bytes,
            key,
            limit,
            above,
        };
        if width > self.max_width {
            return Err(broken("limits.max_width", self.max_width.into(), true));
        }
        if height > self.max_height {
            return Err(broken("limits.max_height", self.max_height.into(), true));
        }
        if pixels > self.max_pixels {
            return Err(broken("limits.max_frame_pixels", self.max_pixels, true));
        }
        if bytes > self.max_frame_bytes {
            return Err(broken("limits.max_frame_bytes", self.max_frame_bytes, true));
        }
        if width < self.min_width {
            return Err(broken("limits.min_width", self.min_width.into(), false));
        }
        if height < self.min_height {
            return Err(broken("limits.min_height", self.min_height.into(), false));
        }
        Ok(())
    }
}

impl Default for FrameLimits {
    fn default() -> Self {
        FrameLimits {
            max_width: Self::DEFAULT_MAX_SIDE,
            max_height: Self::DEFAULT_MAX_SIDE,
            max_pixels: Self::DEFAULT_MAX_PIXELS,
            max_frame_bytes: Self::DEFAULT_MAX_FRAME_BYTES,
            min_width: Self::DEFAULT_MIN_SIDE,
            min_height: Self::DEFAULT_MIN_SIDE,
        }
    }
}

/// Copies `height` rows of `width` pixels of `format` out of a plane whose rows start `stride` bytes apart (decoders
/// pad rows), checking that the layout is consistent: no empty frame, a stride at least one row long, a plane long
/// enough for every row and no size that overflows. The result is tightly packed, as [`Frame::data`](crate::Frame)
/// needs.
pub fn pack_plane(
    plane: &[u8],
    stride: usize,
    width: u32,
    height: u32,
    format: PixelFormat,
) -> Result<Vec<u8>, IngestError> {
    let mut out = Vec::new();
    pack_plane_into(plane, stride, width, height, format, &mut out)?;
    Ok(out)
}

/// [`pack_plane`] into `out` (cleared first), so that a buffer can serve frame after frame.
pub fn pack_plane_into(
    plane: &[u8],
    stride: usize,
    width: u32,
    height: u32,
    format: PixelFormat,
    out: &mut Vec<u8>,
) -> Result<(), IngestError> {
    let layout = |message: String| IngestError::FrameLayout { message };
    if width == 0 || height == 0 {
        return Err(layout(format!("empty frame {width}x{height}")));
    }
    let row_bytes = (width as usize)
        .checked_mul(format.channels())
        .ok_or_else(|| layout(format!("width {width} overflows")))?;
    if stride < row_bytes {
        return Err(layout(format!(
            "stride {stride} is shorter than a row of {width} {format:?} pixels ({row_bytes} bytes)"
        )));
    }
    let needed = stride
        .checked_mul(height as usize - 1)
        .and_then(|n| n.checked_add(row_bytes))
        .ok_or_else(|| layout(format!("{width}x{height} with stride {stride} overflows")))?;
    if plane.len() < needed {
        return Err(layout(format!(
            "plane of {} bytes is shorter than {height} rows of stride {stride} ({needed} bytes)",
            plane.len()
        )));
    }
    crate::source::pack_rows_into(plane, stride, row_bytes, height as usize, out);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_limit_is_named_with_the_size_seen() {
        let limits = FrameLimits::default();
        assert!(limits.check("a.mp4", 1920, 1080, PixelFormat::Rgb8).is_ok());
        assert!(limits.check("a.mp4", 8192, 8192, PixelFormat::Rgb8).is_ok());
        let cases = [
            (16000, 100, "limits.max_width"),
            (100, 16000, "limits.max_height"),
            (16, 16, "limits.min_width"),
            (1, 1, "limits.min_width"),
            (640, 8, "limits.min_height"),
        ];
        for (w, h, key) in cases {
            let err = limits
                .check("big.avi", w, h, PixelFormat::Rgb8)
                .err()
                .map(|e| e.to_string());
            if w == 16 && h == 16 {
                assert!(err.is_none(), "16x16 is allowed: {err:?}");
                continue;
            }
            let err = err.unwrap_or_else(|| panic!("{w}x{h} passes"));
            assert!(
                err.contains("big.avi") && err.contains(&format!("{w}x{h}")) && err.contains(key),
                "{err}"
            );
        }
        let small = FrameLimits {
            max_pixels: 100 * 100,
            max_frame_bytes: 50 * 50,
            ..FrameLimits::default()
        };
        let err = small
            .check("x", 200, 100, PixelFormat::Gray8)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("limits.max_frame_pixels = 10000") && err.contains("raise"),
            "{err}"
        );
        let err = small
            .check("x", 60, 60, PixelFormat::Gray8)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("limits.max_frame_bytes = 2500") && err.contains("3600 bytes"),
            "{err}"
        );
    }

    #[test]
    fn pack_plane_rejects_inconsistent_layouts() {
        let plane = [1, 2, 3, 0, 4, 5, 6, 0];
        assert_eq!(
            pack_plane(&plane, 4, 3, 2, PixelFormat::Gray8).unwrap(),
            [1, 2, 3, 4, 5, 6]
        );
        // The last row needs no padding after it.
        assert_eq!(
            pack_plane(&plane[..7], 4, 3, 2, PixelFormat::Gray8).unwrap(),
            [1, 2, 3, 4, 5, 6]
        );
        assert!(pack_plane(&plane, 4, 0, 2, PixelFormat::Gray8).is_err());
        assert!(pack_plane(&plane, 2, 3, 2, PixelFormat::Gray8).is_err());
        assert!(pack_plane(&plane, 4, 3, 3, PixelFormat::Gray8).is_err());
        assert!(pack_plane(&plane, 4, 2, 2, PixelFormat::Rgb8).is_err());
        assert!(pack_plane(&plane, usize::MAX, 3, u32::MAX, PixelFormat::Rgb8).is_err());
    }
}
