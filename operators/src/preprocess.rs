//! Frame → model input: pick the channel the card asks for, resize to the model's pixel size, normalise, pad.
//!
//! Pure functions over plain buffers, so they are tested without GStreamer, ONNX Runtime or a dataflow.

use capflow_ingest::{Frame, PixelFormat};

use crate::model::{Channel, InputSpec};

/// A frame ready for the model: one `f32` plane per channel, `height * width` each, channel-major (CHW).
#[derive(Clone, Debug, PartialEq)]
pub struct ModelInput {
    /// Planes, channel-major.
    pub data: Vec<f32>,
    /// Padded height fed to the model.
    pub height: usize,
    /// Padded width fed to the model.
    pub width: usize,
    /// Height of the valid (unpadded) region.
    pub valid_height: usize,
    /// Width of the valid (unpadded) region.
    pub valid_width: usize,
    /// Pixel size of the model input, µm per pixel (after resizing).
    pub um_per_px: f64,
}

/// Extracts one 8-bit channel plane from a frame.
pub fn channel_plane(data: &[u8], format: PixelFormat, channel: Channel) -> Vec<u8> {
    match (format, channel) {
        (PixelFormat::Gray8, _) => data.to_vec(),
        (PixelFormat::Rgb8, Channel::Green) => data.chunks_exact(3).map(|p| p[1]).collect(),
        (PixelFormat::Rgb8, Channel::Luma) => data
            .chunks_exact(3)
            .map(|p| ((77 * p[0] as u32 + 150 * p[1] as u32 + 29 * p[2] as u32 + 128) >> 8) as u8)
            .collect(),
    }
}

/// Bilinear resize of an 8-bit plane to `out_w × out_h` (pixel centres aligned), into `f32`.
pub fn resize_bilinear(src: &[u8], w: usize, h: usize, out_w: usize, out_h: usize) -> Vec<f32> {
    if out_w == w && out_h == h {
        return src.iter().map(|&v| v as f32).collect();
    }
    let sx = w as f32 / out_w as f32;
    let sy = h as f32 / out_h as f32;
    let mut out = Vec::with_capacity(out_w * out_h);
    for oy in 0..out_h {
        let fy = ((oy as f32 + 0.5) * sy - 0.5).clamp(0.0, (h - 1) as f32);
        let y0 = fy as usize;
        let y1 = (y0 + 1).min(h - 1);
        let ty = fy - y0 as f32;
        for ox in 0..out_w {
            let fx = ((ox as f32 + 0.5) * sx - 0.5).clamp(0.0, (w - 1) as f32);
            let x0 = fx as usize;
            let x1 = (x0 + 1).min(w - 1);
            let tx = fx - x0 as f32;
            let top = src[y0 * w + x0] as f32 * (1.0 - tx) + src[y0 * w + x1] as f32 * tx;
            let bottom = src[y1 * w + x0] as f32 * (1.0 - tx) + src[y1 * w + x1] as f32 * tx;
            out.push(top * (1.0 - ty) + bottom * ty);
        }
    }
    out
}

/// Size after resizing a `w × h` frame of `um_per_px` to the model's pixel size (unchanged within 5 %).
pub fn model_size(w: usize, h: usize, um_per_px: f64, spec: &InputSpec) -> (usize, usize) {
    let factor = um_per_px / spec.um_per_px;
    if (factor - 1.0).abs() < 0.05 {
        return (w, h);
    }
    let scale = |v: usize| ((v as f64 * factor).round() as usize).max(1);
    (scale(w), scale(h))
}

/// Builds the model input of a frame.
pub fn preprocess(frame: &Frame, spec: &InputSpec) -> ModelInput {
    let (w, h) = (frame.width as usize, frame.height as usize);
    let (out_w, out_h) = model_size(w, h, frame.stream.um_per_px, spec);
    let multiple = spec.pad_multiple.max(1) as usize;
    let min = spec.min_size as usize;
    let pad_w = out_w.max(min).div_ceil(multiple) * multiple;
    let pad_h = out_h.max(min).div_ceil(multiple) * multiple;
    let mut data = Vec::with_capacity(spec.channels.len() * pad_w * pad_h);
    for &channel in &spec.channels {
        let plane = channel_plane(&frame.data, frame.format, channel);
        let resized = resize_bilinear(&plane, w, h, out_w, out_h);
        // Padding repeats the edge so the background estimate near the border stays sane.
        for y in 0..pad_h {
            let row = &resized[y.min(out_h - 1) * out_w..][..out_w];
            data.extend(row.iter().map(|&v| (v * spec.scale - spec.mean) / spec.std));
            let last = *data.last().unwrap_or(&0.0);
            data.extend(std::iter::repeat_n(last, pad_w - out_w));
        }
    }
    // The exact pixel size after rounding the resized width.
    let um_per_px = frame.stream.um_per_px * w as f64 / out_w as f64;
    ModelInput {
        data,
        height: pad_h,
        width: pad_w,
        valid_height: out_h,
        valid_width: out_w,
        um_per_px,
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use capflow_ingest::StreamInfo;

    use super::*;

    fn spec(um_per_px: f64, pad_multiple: u32) -> InputSpec {
        InputSpec {
            name: "image".into(),
            layout: "NCHW".into(),
            channels: vec![Channel::Green],
            scale: 1.0 / 255.0,
            mean: 0.0,
            std: 1.0,
            um_per_px,
            min_size: 1,
            pad_multiple,
        }
    }

    fn frame(w: u32, h: u32, um_per_px: f64, format: PixelFormat, data: Vec<u8>) -> Frame {
        Frame {
            stream: Arc::new(StreamInfo::new("s", "p", "x", um_per_px)),
            index: 0,
            pts_ns: 0,
            width: w,
            height: h,
            format,
            data,
        }
    }

    #[test]
    fn picks_green_from_rgb_and_luma_from_gray() {
        assert_eq!(
            channel_plane(&[10, 20, 30, 40, 50, 60], PixelFormat::Rgb8, Channel::Green),
            [20, 50]
        );
        assert_eq!(
            channel_plane(&[7, 8], PixelFormat::Gray8, Channel::Green),
            [7, 8]
        );
        assert_eq!(
            channel_plane(&[100, 100, 100], PixelFormat::Rgb8, Channel::Luma),
            [100]
        );
    }

    #[test]
    fn resize_keeps_constant_images_constant_and_halves_size() {
        let out = resize_bilinear(&[50; 16], 4, 4, 2, 2);
        assert_eq!(out, vec![50.0; 4]);
        let ramp: Vec<u8> = (0..4).flat_map(|_| [0, 100, 200, 255]).collect();
        let out = resize_bilinear(&ramp, 4, 4, 2, 4);
        assert!(out[0] > 0.0 && out[1] < 255.0 && out[1] > out[0]);
    }

    #[test]
    fn normalises_pads_and_resizes_to_the_model_pixel_size() {
        let f = frame(3, 2, 2.2, PixelFormat::Gray8, vec![0, 255, 51, 0, 255, 51]);
        let input = preprocess(&f, &spec(2.2, 4));
        assert_eq!(
            (
                input.width,
                input.height,
                input.valid_width,
                input.valid_height
            ),
            (4, 4, 3, 2)
        );
        let expected = [0.0, 1.0, 0.2, 0.2];
        assert!(
            input.data[..4]
                .iter()
                .zip(expected)
                .all(|(a, b)| (a - b).abs() < 1e-6),
            "{:?}",
            &input.data[..4]
        );
        assert_eq!(input.data.len(), 16);

        // 1.1 µm/px frames are halved for a 2.2 µm/px model.
        let f = frame(8, 6, 1.1, PixelFormat::Gray8, vec![0; 48]);
        let input = preprocess(&f, &spec(2.2, 1));
        assert_eq!((input.valid_width, input.valid_height), (4, 3));
        assert!((input.um_per_px - 2.2).abs() < 1e-9);
    }
}
