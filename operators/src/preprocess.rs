//! Frame → model input: pick the channel the card asks for, resize to the model's pixel size, normalise, pad.
//!
//! Pure functions over plain buffers, so they are tested without GStreamer, ONNX Runtime or a dataflow.

use capflow_ingest::{Frame, PixelFormat};

use crate::model::{Channel, InputSpec};
use crate::OperatorError;

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

/// Extracts one channel plane (values 0..=255) from a frame.
pub fn channel_plane(data: &[u8], format: PixelFormat, channel: Channel) -> Vec<f32> {
    match (format, channel) {
        (PixelFormat::Gray8, Channel::Redness) => vec![0.0; data.len()],
        (PixelFormat::Gray8, _) => data.iter().map(|&v| v as f32).collect(),
        (PixelFormat::Rgb8, Channel::Green) => data.chunks_exact(3).map(|p| p[1] as f32).collect(),
        (PixelFormat::Rgb8, Channel::Luma) => data
            .chunks_exact(3)
            .map(|p| ((77 * p[0] as u32 + 150 * p[1] as u32 + 29 * p[2] as u32 + 128) >> 8) as f32)
            .collect(),
        (PixelFormat::Rgb8, Channel::Redness) => {
            // Looked up in the compiled table: bit-for-bit what the formula gives.
            data.chunks_exact(3)
                .map(|p| REDNESS[usize::from(p[0]) << 8 | usize::from(p[1])])
                .collect()
        }
    }
}

/// How much redder than green a pixel is, 0..=255: `clamp(2 (R − G) / (R + G + 1), 0, 1) × 255`.
const fn redness(r: u8, g: u8) -> f32 {
    let (r, g) = (r as f32, g as f32);
    (2.0 * (r - g) / (r + g + 1.0)).clamp(0.0, 1.0) * 255.0
}

/// [`redness`] of every (R, G) pair at index `R << 8 | G`, worked out by the compiler: a plane looks values up
/// instead of dividing per pixel, and no frame rebuilds the table. Same arithmetic (IEEE, as at run time), so
/// planes are bit-for-bit what the formula gives (tested).
static REDNESS: [f32; 1 << 16] = redness_table();

const fn redness_table() -> [f32; 1 << 16] {
    let mut table = [0.0f32; 1 << 16];
    let mut i = 0;
    while i < table.len() {
        table[i] = redness((i >> 8) as u8, (i & 0xff) as u8);
        i += 1;
    }
    table
}

/// Source taps and weights of one output pixel along one axis.
struct Taps {
    first: usize,
    weights: Vec<f32>,
}

/// Triangle-filter coefficients for resizing `n_in` samples to `n_out` (the scheme of Pillow's
/// `BILINEAR`): plain linear interpolation when enlarging, a filter widened by the scale when
/// shrinking, so that a downscaled frame averages every source pixel instead of aliasing. Training
/// (`models/train/`) resizes with Pillow, so the model sees the same pixels here.
fn taps(n_in: usize, n_out: usize) -> Vec<Taps> {
    let scale = n_in as f64 / n_out as f64;
    let filter_scale = scale.max(1.0);
    let support = filter_scale;
    (0..n_out)
        .map(|o| {
            let center = (o as f64 + 0.5) * scale;
            let lo = ((center - support + 0.5).floor().max(0.0)) as usize;
            let hi = ((center + support + 0.5).floor() as usize).min(n_in);
            let mut weights: Vec<f64> = (lo..hi)
                .map(|i| (1.0 - ((i as f64 - center + 0.5) / filter_scale).abs()).max(0.0))
                .collect();
            let sum: f64 = weights.iter().sum();
            if sum > 0.0 {
                weights.iter_mut().for_each(|w| *w /= sum);
            }
            Taps {
                first: lo,
                weights: weights.into_iter().map(|w| w as f32).collect(),
            }
        })
        .collect()
}

/// Resizes a `w × h` plane to `out_w × out_h` with a separable triangle filter: linear interpolation when
/// enlarging, a filter widened by the scale when shrinking (Pillow's `BILINEAR`, which training uses).
pub fn resize(src: &[f32], w: usize, h: usize, out_w: usize, out_h: usize) -> Vec<f32> {
    if out_w == w && out_h == h {
        return src.to_vec();
    }
    let (tx, ty) = (taps(w, out_w), taps(h, out_h));
    if out_h <= h {
        // Shrinking vertically: the vertical pass first, over whole rows (contiguous, so it vectorises), leaves
        // fewer rows for the horizontal pass, whose taps gather. 1920×1080 → 1033×581 took 6.1–9.7 ms against
        // 9.3–14.6 ms horizontal-first (same runs, this 2-core machine).
        let cols = vertical(src, w, &ty);
        horizontal(&cols, w, out_h, &tx)
    } else {
        let rows = horizontal(src, w, h, &tx);
        vertical(&rows, out_w, &ty)
    }
}

/// Filters each of `h` rows of width `w` with the horizontal taps `tx`.
///
/// The taps are padded with zero weights to one length, so the inner loop has a fixed length the compiler unrolls;
/// the zeros add exactly nothing (every product is ≥ 0), so the pixels are bit-for-bit those of a plain loop over
/// each tap's own weights (`fixed_length_taps_change_no_bit`).
fn horizontal(src: &[f32], w: usize, h: usize, tx: &[Taps]) -> Vec<f32> {
    let k = tx.iter().map(|t| t.weights.len()).max().unwrap_or(0);
    match k {
        1 => horizontal_fixed::<1>(src, w, h, tx),
        2 => horizontal_fixed::<2>(src, w, h, tx),
        3 => horizontal_fixed::<3>(src, w, h, tx),
        4 => horizontal_fixed::<4>(src, w, h, tx),
        5 => horizontal_fixed::<5>(src, w, h, tx),
        6 => horizontal_fixed::<6>(src, w, h, tx),
        7 => horizontal_fixed::<7>(src, w, h, tx),
        8 => horizontal_fixed::<8>(src, w, h, tx),
        _ => horizontal_any(src, w, h, tx),
    }
}

/// [`horizontal`] for taps of at most `K` weights (`K ≤ w`, as taps never reach outside the row).
fn horizontal_fixed<const K: usize>(src: &[f32], w: usize, h: usize, tx: &[Taps]) -> Vec<f32> {
    // Each tap as K weights from a start that keeps the window inside the row; zeros before and after its own.
    let padded: Vec<(usize, [f32; K])> = tx
        .iter()
        .map(|t| {
            let start = t.first.min(w - K);
            let mut weights = [0.0f32; K];
            weights[t.first - start..][..t.weights.len()].copy_from_slice(&t.weights);
            (start, weights)
        })
        .collect();
    let mut out = Vec::with_capacity(tx.len() * h);
    for y in 0..h {
        let row = &src[y * w..][..w];
        out.extend(padded.iter().map(|(start, weights)| {
            let window: &[f32; K] = row[*start..][..K].try_into().expect("K samples");
            window.iter().zip(weights).map(|(v, k)| v * k).sum::<f32>()
        }));
    }
    out
}

/// [`horizontal`] for any tap length (strong shrinking).
fn horizontal_any(src: &[f32], w: usize, h: usize, tx: &[Taps]) -> Vec<f32> {
    let mut out = Vec::with_capacity(tx.len() * h);
    for y in 0..h {
        let row = &src[y * w..][..w];
        out.extend(tx.iter().map(|t| {
            row[t.first..][..t.weights.len()]
                .iter()
                .zip(&t.weights)
                .map(|(v, k)| v * k)
                .sum::<f32>()
        }));
    }
    out
}

/// Filters rows of width `w` vertically with the taps `ty` (one output row each).
fn vertical(src: &[f32], w: usize, ty: &[Taps]) -> Vec<f32> {
    let mut out = vec![0.0f32; w * ty.len()];
    for (oy, t) in ty.iter().enumerate() {
        let dst = &mut out[oy * w..][..w];
        for (k, &weight) in t.weights.iter().enumerate() {
            let row = &src[(t.first + k) * w..][..w];
            dst.iter_mut().zip(row).for_each(|(d, v)| *d += weight * v);
        }
    }
    out
}

/// `resize(&channel_plane(data, format, channel), w, h, out_w, out_h)` without the full-resolution plane: when
/// shrinking, each source row is converted once into a ring of the few rows the vertical taps span, and the
/// vertical pass reads them there. Same values, same arithmetic in the same order, so the same bits
/// (`a_channel_resized_in_one_pass_is_the_two_step_result`); a 1080p frame no longer writes and rereads an 8 MB plane.
pub fn channel_resized(
    data: &[u8],
    format: PixelFormat,
    channel: Channel,
    w: usize,
    h: usize,
    out_w: usize,
    out_h: usize,
) -> Vec<f32> {
    if (format, channel) == (PixelFormat::Gray8, Channel::Redness) {
        // A grayscale camera has no redness: zero at any size, so there is nothing to filter (for a sublingual
        // frame this was a whole resize pass per frame).
        return vec![0.0; out_w * out_h];
    }
    if (out_w, out_h) == (w, h) {
        // Already at the working size (the source resized it): the plane itself, not a copy of it.
        return channel_plane(data, format, channel);
    }
    if out_h > h {
        return resize(&channel_plane(data, format, channel), w, h, out_w, out_h);
    }
    let (tx, ty) = (taps(w, out_w), taps(h, out_h));
    let span = ty.iter().map(|t| t.weights.len()).max().unwrap_or(1).max(1);
    let stride = w * format.channels();
    let convert = row_converter(format, channel);
    let mut ring = vec![0.0f32; span * w];
    let mut held = vec![usize::MAX; span];
    let mut cols = vec![0.0f32; w * out_h];
    for (oy, t) in ty.iter().enumerate() {
        let dst = &mut cols[oy * w..][..w];
        for (k, &weight) in t.weights.iter().enumerate() {
            // The rows one output row needs are consecutive and never more than `span`, and the taps move
            // forward: a slot is overwritten only once its row is no longer needed.
            let r = t.first + k;
            let slot = r % span;
            let row = &mut ring[slot * w..][..w];
            if held[slot] != r {
                convert(&data[r * stride..][..stride], row);
                held[slot] = r;
            }
            dst.iter_mut()
                .zip(row.iter())
                .for_each(|(d, v)| *d += weight * v);
        }
    }
    horizontal(&cols, w, out_h, &tx)
}

/// Writes one row of pixels' channel values into a row of floats.
type RowConverter = Box<dyn Fn(&[u8], &mut [f32])>;

/// Converts one row of pixels to `channel` values exactly as [`channel_plane`] does.
fn row_converter(format: PixelFormat, channel: Channel) -> RowConverter {
    match (format, channel) {
        (PixelFormat::Gray8, Channel::Redness) => Box::new(|_, out| out.fill(0.0)),
        (PixelFormat::Gray8, _) => Box::new(|src, out| {
            out.iter_mut()
                .zip(src)
                .for_each(|(o, &v)| *o = f32::from(v))
        }),
        (PixelFormat::Rgb8, Channel::Green) => Box::new(|src, out| {
            out.iter_mut()
                .zip(src.chunks_exact(3))
                .for_each(|(o, p)| *o = f32::from(p[1]))
        }),
        (PixelFormat::Rgb8, Channel::Luma) => Box::new(|src, out| {
            out.iter_mut().zip(src.chunks_exact(3)).for_each(|(o, p)| {
                *o = ((77 * p[0] as u32 + 150 * p[1] as u32 + 29 * p[2] as u32 + 128) >> 8) as f32
            })
        }),
        (PixelFormat::Rgb8, Channel::Redness) => Box::new(|src, out| {
            out.iter_mut()
                .zip(src.chunks_exact(3))
                .for_each(|(o, p)| *o = REDNESS[usize::from(p[0]) << 8 | usize::from(p[1])])
        }),
    }
}

/// Every (R, G) pair's redness, indexed `R << 8 | G`.
/// Pixel size (µm) a `w × h` frame of `um_per_px` is segmented at: the card's `um_per_px`, or with a
/// `um_per_px_range` the frame's own size clamped into it; then coarser if the frame would exceed
/// `max_megapixels`, but never coarser than the range's end.
pub fn working_um_per_px(w: usize, h: usize, um_per_px: f64, spec: &InputSpec) -> f64 {
    let mut working = match spec.um_per_px_range {
        Some([finest, coarsest]) => um_per_px.clamp(finest, coarsest),
        None => spec.um_per_px,
    };
    if let Some(max) = spec.max_megapixels {
        let megapixels = (w * h) as f64 * (um_per_px / working).powi(2) / 1e6;
        if megapixels > max {
            working *= (megapixels / max).sqrt();
            if let Some([_, coarsest]) = spec.um_per_px_range {
                working = working.min(coarsest.max(um_per_px));
            }
        }
    }
    working
}

/// Size after resizing a `w × h` frame of `um_per_px` to its working pixel size (unchanged within 5 %).
pub fn model_size(w: usize, h: usize, um_per_px: f64, spec: &InputSpec) -> (usize, usize) {
    let factor = um_per_px / working_um_per_px(w, h, um_per_px, spec);
    if (factor - 1.0).abs() < 0.05 {
        return (w, h);
    }
    let scale = |v: usize| ((v as f64 * factor).round() as usize).max(1);
    (scale(w), scale(h))
}

/// Builds the model input of a frame.
pub fn preprocess(frame: &Frame, spec: &InputSpec) -> ModelInput {
    preprocess_pixels(
        &frame.data,
        frame.format,
        frame.width as usize,
        frame.height as usize,
        frame.um_per_px(),
        spec,
    )
}

/// [`preprocess`] over a plain pixel buffer (`w × h`, `format`) of pixel size `um_per_px`.
pub fn preprocess_pixels(
    data: &[u8],
    format: PixelFormat,
    w: usize,
    h: usize,
    um_per_px: f64,
    spec: &InputSpec,
) -> ModelInput {
    preprocess_with_green(data, format, w, h, um_per_px, spec, Reuse::default())
}

/// Largest working frame (padded model input) [`try_preprocess_pixels`] builds, pixels per channel: 8192 × 8192.
/// Bounds memory when a pixel size far finer than the model's would blow a frame up.
pub const MAX_WORKING_PIXELS: usize = 8192 * 8192;

/// [`preprocess_pixels`] for pixels from anywhere: checks that `data` holds `w × h` pixels of `format`, that
/// `um_per_px` is a positive pixel size and that the working frame stays within [`MAX_WORKING_PIXELS`], and
/// returns an error naming what does not fit instead of panicking or allocating without bound.
pub fn try_preprocess_pixels(
    data: &[u8],
    format: PixelFormat,
    w: usize,
    h: usize,
    um_per_px: f64,
    spec: &InputSpec,
) -> Result<ModelInput, OperatorError> {
    let bad = |message: String| OperatorError::BadFrame {
        width: w,
        height: h,
        message,
    };
    // Checks the size and pixel size first (an empty frame included), then that the pixels are all there.
    check_working_size(w, h, um_per_px, spec)?;
    let expected = w
        .checked_mul(h)
        .and_then(|n| n.checked_mul(format.channels()))
        .ok_or_else(|| bad("the size overflows".into()))?;
    if data.len() != expected {
        return Err(bad(format!(
            "{} bytes of pixels, but {w}x{h} {format:?} needs {expected}",
            data.len()
        )));
    }
    Ok(preprocess_pixels(data, format, w, h, um_per_px, spec))
}

/// Checks that a `w × h` frame of `um_per_px` can be segmented with `spec`: a positive pixel size, and a working
/// frame (resized to the model's pixel size, then padded) within [`MAX_WORKING_PIXELS`]. Returns the unpadded
/// working size. A stream whose `um_per_px` is far finer than the model's would otherwise be enlarged past memory.
pub fn check_working_size(
    w: usize,
    h: usize,
    um_per_px: f64,
    spec: &InputSpec,
) -> Result<(usize, usize), OperatorError> {
    let bad = |message: String| OperatorError::BadFrame {
        width: w,
        height: h,
        message,
    };
    if w == 0 || h == 0 {
        return Err(bad("the frame is empty".into()));
    }
    if !(um_per_px.is_finite() && um_per_px > 0.0) {
        return Err(bad(format!("pixel size {um_per_px} µm is not > 0")));
    }
    if !(spec.um_per_px.is_finite() && spec.um_per_px > 0.0) || spec.channels.is_empty() {
        return Err(bad(
            "the model's input spec is invalid (um_per_px, channels)".into(),
        ));
    }
    let (out_w, out_h) = model_size(w, h, um_per_px, spec);
    let multiple = spec.pad_multiple.max(1) as usize;
    let padded = |v: usize| {
        v.max(spec.min_size as usize)
            .checked_next_multiple_of(multiple)
    };
    let fits = |a: usize, b: usize| a.checked_mul(b).is_some_and(|n| n <= MAX_WORKING_PIXELS);
    let pads = padded(out_w).zip(padded(out_h));
    if !fits(out_w, out_h) || !pads.is_some_and(|(pw, ph)| fits(pw, ph)) {
        return Err(bad(format!(
            "at {um_per_px} µm per pixel its working frame for the model ({out_w}x{out_h} before padding) would \
             exceed {MAX_WORKING_PIXELS} pixels; check the stream's um_per_px against the model card's \
             input.um_per_px ({})",
            spec.um_per_px
        )));
    }
    Ok((out_w, out_h))
}

/// What a caller already holds for a frame's model input, so the hot path neither extracts and resizes the green
/// plane twice nor allocates the input afresh for every frame.
#[derive(Debug, Default)]
pub struct Reuse<'a> {
    /// The frame's green plane already resized to the working size (the stabiliser computes it for every frame).
    pub green: Option<&'a [f32]>,
    /// A spent model input's planes, filled again here: a 1080p skin frame's two working planes are 4.8 MB, which
    /// the allocator otherwise hands back to the kernel and gets again as fresh pages to fault in and zero.
    pub buffer: Vec<f32>,
}

/// [`preprocess_pixels`], reusing what `reuse` holds (the green plane and a buffer for the planes).
pub fn preprocess_with_green(
    data: &[u8],
    format: PixelFormat,
    w: usize,
    h: usize,
    um_per_px: f64,
    spec: &InputSpec,
    reuse: Reuse<'_>,
) -> ModelInput {
    let (out_w, out_h) = model_size(w, h, um_per_px, spec);
    let green = reuse.green.filter(|g| g.len() == out_w * out_h);
    let multiple = spec.pad_multiple.max(1) as usize;
    let min = spec.min_size as usize;
    let pad_w = out_w.max(min).div_ceil(multiple) * multiple;
    let pad_h = out_h.max(min).div_ceil(multiple) * multiple;
    let mut out = reuse.buffer;
    out.clear();
    out.reserve(spec.channels.len() * pad_w * pad_h);
    // Padding repeats the edge so the background estimate near the border stays sane.
    let push_row = |out: &mut Vec<f32>, row: &[f32]| {
        if spec.mean == 0.0 && spec.std == 1.0 {
            // `(x − 0) / 1` is `x` exactly: the same values without a division per pixel (the cards standardise
            // inside the graph, so this is the usual case).
            out.extend(row.iter().map(|&v| v * spec.scale));
        } else {
            out.extend(row.iter().map(|&v| (v * spec.scale - spec.mean) / spec.std));
        }
        let last = *out.last().unwrap_or(&0.0);
        out.extend(std::iter::repeat_n(last, pad_w - out_w));
    };
    for &channel in &spec.channels {
        match (channel, green) {
            (Channel::Green, Some(g)) => {
                for y in 0..pad_h {
                    push_row(&mut out, &g[y.min(out_h - 1) * out_w..][..out_w]);
                }
            }
            _ if (out_w, out_h) == (w, h) => {
                // Already at the working size (the source resized it): each row converted straight into the
                // input, without a plane of its own in between (same values as `channel_plane`).
                let convert = row_converter(format, channel);
                let stride = w * format.channels();
                let mut row = vec![0.0f32; w];
                for y in 0..pad_h {
                    convert(&data[y.min(h - 1) * stride..][..stride], &mut row);
                    push_row(&mut out, &row);
                }
            }
            _ => {
                let resized = channel_resized(data, format, channel, w, h, out_w, out_h);
                for y in 0..pad_h {
                    push_row(&mut out, &resized[y.min(out_h - 1) * out_w..][..out_w]);
                }
            }
        }
    }
    // The exact pixel size after rounding the resized width.
    let um_per_px = um_per_px * w as f64 / out_w as f64;
    ModelInput {
        data: out,
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
            um_per_px_range: None,
            max_megapixels: None,
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
            source_width: w,
            source_height: h,
            format,
            data: data.into(),
        }
    }

    #[test]
    fn picks_green_from_rgb_and_luma_from_gray() {
        assert_eq!(
            channel_plane(&[10, 20, 30, 40, 50, 60], PixelFormat::Rgb8, Channel::Green),
            [20.0, 50.0]
        );
        assert_eq!(
            channel_plane(&[7, 8], PixelFormat::Gray8, Channel::Green),
            [7.0, 8.0]
        );
        assert_eq!(
            channel_plane(&[100, 100, 100], PixelFormat::Rgb8, Channel::Luma),
            [100.0]
        );
        // Red skin-coloured pixel, a dark hair, a grey pixel; grayscale frames have no redness.
        let red = channel_plane(
            &[200, 100, 120, 60, 55, 50, 90, 90, 90],
            PixelFormat::Rgb8,
            Channel::Redness,
        );
        assert!((red[0] - 255.0 * 200.0 / 301.0).abs() < 1e-3, "{red:?}");
        assert!(red[1] < 0.1 * 255.0 && red[2] == 0.0, "{red:?}");
        assert_eq!(
            channel_plane(&[7, 8], PixelFormat::Gray8, Channel::Redness),
            [0.0, 0.0]
        );
    }

    #[test]
    fn resize_keeps_constant_images_constant_and_halves_size() {
        let out = resize(&[50.0; 16], 4, 4, 2, 2);
        assert!(out.iter().all(|v| (v - 50.0).abs() < 1e-4), "{out:?}");
        let ramp: Vec<f32> = (0..4).flat_map(|_| [0.0, 100.0, 200.0, 255.0]).collect();
        let out = resize(&ramp, 4, 4, 2, 4);
        assert!(out[0] > 0.0 && out[1] < 255.0 && out[1] > out[0]);
        // Halving uses a triangle filter twice as wide: Pillow's BILINEAR gives 71.42857 and 209.28572 here.
        assert!(
            (out[0] - 71.42857).abs() < 1e-3 && (out[1] - 209.28572).abs() < 1e-3,
            "{out:?}"
        );
        // Enlarging interpolates linearly between pixel centres.
        let up = resize(&[0.0, 100.0], 2, 1, 4, 1);
        assert!(
            (up[1] - 25.0).abs() < 1e-4 && (up[2] - 75.0).abs() < 1e-4,
            "{up:?}"
        );
    }

    #[test]
    fn redness_from_its_table_is_the_formula_for_every_pixel_value() {
        let rgb: Vec<u8> = (0..=255u8)
            .flat_map(|r| (0..=255u8).flat_map(move |g| [r, g, 255 - g]))
            .collect();
        let plane = channel_plane(&rgb, PixelFormat::Rgb8, Channel::Redness);
        for (p, v) in rgb.chunks_exact(3).zip(plane) {
            let (r, g) = (p[0] as f32, p[1] as f32);
            let expected = (2.0 * (r - g) / (r + g + 1.0)).clamp(0.0, 1.0) * 255.0;
            assert_eq!(v.to_bits(), expected.to_bits(), "{p:?}");
        }
    }

    #[test]
    fn fixed_length_taps_change_no_bit() {
        let (w, h) = (1920, 3);
        let src: Vec<f32> = (0..w * h)
            .map(|i| ((i * 7919) % 256) as f32 * 0.73)
            .collect();
        for out_w in [1920, 1033, 960, 480, 200, 2500, 3] {
            let tx = taps(w, out_w);
            let fast = horizontal(&src, w, h, &tx);
            let plain = horizontal_any(&src, w, h, &tx);
            assert_eq!(fast.len(), plain.len());
            assert!(
                fast.iter()
                    .zip(&plain)
                    .all(|(a, b)| a.to_bits() == b.to_bits()),
                "{out_w}"
            );
        }
    }

    #[test]
    fn a_channel_resized_in_one_pass_is_the_two_step_result() {
        let (w, h) = (211, 137);
        let rgb: Vec<u8> = (0..w * h * 3)
            .map(|i| ((i * 2654435761usize) >> 7) as u8)
            .collect();
        let gray: Vec<u8> = rgb.iter().step_by(3).copied().collect();
        for (ow, oh) in [
            (113, 73),
            (211, 137),
            (50, 20),
            (300, 60),
            (211, 200),
            (7, 5),
        ] {
            for (data, format) in [(&rgb, PixelFormat::Rgb8), (&gray, PixelFormat::Gray8)] {
                for channel in [Channel::Green, Channel::Luma, Channel::Redness] {
                    let two = resize(&channel_plane(data, format, channel), w, h, ow, oh);
                    let one = channel_resized(data, format, channel, w, h, ow, oh);
                    assert_eq!(one.len(), two.len());
                    assert!(
                        one.iter()
                            .zip(&two)
                            .all(|(a, b)| a.to_bits() == b.to_bits()),
                        "{ow}x{oh} {format:?} {channel:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn both_pass_orders_give_the_same_pixels() {
        // Shrinking runs the vertical pass first, enlarging the horizontal one: the filter is separable, so either
        // order gives the same image up to float rounding.
        let (w, h) = (97, 61);
        let src: Vec<f32> = (0..w * h).map(|i| ((i * 7919) % 256) as f32).collect();
        for (ow, oh) in [(50, 31), (200, 30), (40, 90)] {
            let (tx, ty) = (taps(w, ow), taps(h, oh));
            let a = vertical(&horizontal(&src, w, h, &tx), ow, &ty);
            let b = horizontal(&vertical(&src, w, &ty), w, oh, &tx);
            assert!(
                a.iter().zip(&b).all(|(x, y)| (x - y).abs() < 1e-3),
                "{ow}x{oh}"
            );
            assert_eq!(resize(&src, w, h, ow, oh).len(), ow * oh);
        }
    }

    #[test]
    fn rows_converted_straight_into_a_reused_buffer_are_the_planes_padded() {
        let (w, h) = (37, 11);
        let rgb: Vec<u8> = (0..w * h * 3).map(|i| ((i * 7919) % 256) as u8).collect();
        let gray: Vec<u8> = rgb.iter().step_by(3).copied().collect();
        let cases = [
            (
                PixelFormat::Rgb8,
                &rgb,
                vec![Channel::Green, Channel::Redness],
            ),
            (PixelFormat::Rgb8, &rgb, vec![Channel::Luma]),
            (
                PixelFormat::Gray8,
                &gray,
                vec![Channel::Luma, Channel::Redness],
            ),
        ];
        for (format, data, channels) in cases {
            for (mean, std) in [(0.0, 1.0), (0.3, 0.7)] {
                let spec = InputSpec {
                    channels: channels.clone(),
                    mean,
                    std,
                    ..spec(2.2, 16)
                };
                // The reference: each channel's whole plane, then scaled and padded by repeating the edge.
                let mut expected = Vec::new();
                for &channel in &channels {
                    let plane = channel_plane(data, format, channel);
                    for y in 0..16 {
                        let row = &plane[y.min(h - 1) * w..][..w];
                        expected.extend(row.iter().map(|&v| (v * spec.scale - mean) / std));
                        let last = *expected.last().unwrap();
                        expected.extend(std::iter::repeat_n(last, 48 - w));
                    }
                }
                let dirty = vec![f32::NAN; 5 * expected.len()];
                let reuse = Reuse {
                    green: None,
                    buffer: dirty,
                };
                let input = preprocess_with_green(data, format, w, h, 2.2, &spec, reuse);
                assert_eq!((input.width, input.height), (48, 16));
                assert!(
                    input
                        .data
                        .iter()
                        .zip(&expected)
                        .all(|(a, b)| a.to_bits() == b.to_bits())
                        && input.data.len() == expected.len(),
                    "{format:?} {channels:?} mean {mean}"
                );
            }
        }
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

    #[test]
    fn inconsistent_pixels_are_errors_not_panics() {
        let s = spec(2.2, 4);
        let ok = try_preprocess_pixels(&[0; 6], PixelFormat::Gray8, 3, 2, 2.2, &s).unwrap();
        assert_eq!((ok.valid_width, ok.valid_height), (3, 2));
        for (data, format, w, h, um) in [
            (vec![0; 6], PixelFormat::Gray8, 0, 2, 2.2),
            (vec![0; 5], PixelFormat::Gray8, 3, 2, 2.2),
            (vec![0; 6], PixelFormat::Rgb8, 3, 2, 2.2),
            (vec![0; 6], PixelFormat::Gray8, 3, 2, f64::NAN),
            (vec![0; 6], PixelFormat::Gray8, 3, 2, -1.0),
            (vec![0; 6], PixelFormat::Gray8, usize::MAX, 2, 2.2),
            // 1e9 µm per pixel against the model's 2.2: a working frame of billions of pixels.
            (vec![0; 6], PixelFormat::Gray8, 3, 2, 1e9),
        ] {
            let err = try_preprocess_pixels(&data, format, w, h, um, &s);
            assert!(
                matches!(err, Err(OperatorError::BadFrame { .. })),
                "{w}x{h} {format:?} {um}: {err:?}"
            );
        }
        let mut huge_min = spec(2.2, 4);
        huge_min.min_size = u32::MAX;
        assert!(try_preprocess_pixels(&[0; 6], PixelFormat::Gray8, 3, 2, 2.2, &huge_min).is_err());
    }

    #[test]
    fn working_pixel_size_follows_range_and_megapixel_cap() {
        let mut s = spec(3.0, 16);
        s.um_per_px_range = Some([1.5, 4.5]);
        s.max_megapixels = Some(0.6);
        // Inside the range and small: kept as is.
        assert_eq!(working_um_per_px(640, 480, 1.5, &s), 1.5);
        // Finer than the range: brought to its finest end.
        assert_eq!(working_um_per_px(1280, 960, 0.75, &s), 1.5);
        // 1080p at 2.2 µm/px is 2.07 MP: coarsened to 0.6 MP.
        let w = working_um_per_px(1920, 1080, 2.2, &s);
        let mp = 1920.0 * 1080.0 * (2.2 / w).powi(2) / 1e6;
        assert!((mp - 0.6).abs() < 1e-6, "{w} {mp}");
        // ...but never beyond the coarse end of the range.
        assert_eq!(working_um_per_px(8000, 8000, 2.2, &s), 4.5);
        // Without a range the card's pixel size is used.
        assert_eq!(working_um_per_px(640, 480, 1.1, &spec(2.2, 1)), 2.2);
    }
}
