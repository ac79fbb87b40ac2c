//! Frame preprocessing: arbitrary width, height, stride, pixel format and pixel size, with arbitrary pixels, go
//! through the ingest packing and the model-input builder. Either may refuse, with an error, what does not fit;
//! neither may panic, and a packed frame's preprocessing fails only for a working size out of bounds.
#![no_main]

use capflow_ingest::limits::pack_plane;
use capflow_ingest::PixelFormat;
use capflow_operators::model::{Channel, InputSpec};
use capflow_operators::preprocess::{model_size, try_preprocess_pixels, MAX_WORKING_PIXELS};
use capflow_operators::OperatorError;
use libfuzzer_sys::fuzz_target;

fn spec(selector: u8, max_megapixels: Option<f64>) -> InputSpec {
    let channels = match selector % 4 {
        0 => vec![Channel::Green],
        1 => vec![Channel::Luma],
        2 => vec![Channel::Green, Channel::Redness],
        _ => vec![Channel::Redness, Channel::Luma, Channel::Green],
    };
    InputSpec {
        name: "image".into(),
        layout: "NCHW".into(),
        channels,
        scale: 1.0 / 255.0,
        mean: 0.5,
        std: 0.25,
        um_per_px: 2.2,
        um_per_px_range: (selector & 4 != 0).then_some([1.5, 4.5]),
        max_megapixels,
        min_size: u32::from(selector >> 4) * 4,
        pad_multiple: u32::from(selector & 8 != 0) * 15 + 1,
    }
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 16 {
        return;
    }
    let (head, pixels) = data.split_at(16);
    let width = u32::from(u16::from_le_bytes([head[0], head[1]]));
    let height = u32::from(u16::from_le_bytes([head[2], head[3]]));
    let stride = usize::from(u16::from_le_bytes([head[4], head[5]]));
    let format = if head[6] & 1 == 0 {
        PixelFormat::Gray8
    } else {
        PixelFormat::Rgb8
    };
    // Pixel sizes from 1/64 to 64 × the model's, or anything (NaN, negative, huge) from the raw bits.
    let um_per_px = if head[7] & 1 == 0 {
        2.2 * 2f64.powf((f64::from(head[8]) - 128.0) / 21.0)
    } else {
        f64::from_le_bytes(head[8..16].try_into().expect("8 bytes"))
    };
    let max_mp = (head[7] & 2 != 0).then_some(0.05);
    let spec = spec(head[7] >> 2, max_mp);
    if um_per_px.is_finite() && um_per_px > 0.0 {
        // Valid but slow: enlarging to millions of pixels says nothing new and would slow the search down.
        let (w, h) = model_size(
            width.max(1) as usize,
            height.max(1) as usize,
            um_per_px,
            &spec,
        );
        let pixels = w.saturating_mul(h);
        if pixels > 1 << 20 && pixels <= MAX_WORKING_PIXELS {
            return;
        }
    }

    // Raw pixels as given: must match width × height × channels exactly, else an error.
    let raw = try_preprocess_pixels(
        pixels,
        format,
        width as usize,
        height as usize,
        um_per_px,
        &spec,
    );
    let consistent = width > 0
        && height > 0
        && pixels.len() == width as usize * height as usize * format.channels();
    if !consistent {
        assert!(
            matches!(raw, Err(OperatorError::BadFrame { .. })),
            "inconsistent input accepted: {width}x{height} {format:?}, {} bytes",
            pixels.len()
        );
    }

    // Through the decoder's packing: a plane with a stride, then the model input.
    if let Ok(packed) = pack_plane(pixels, stride, width, height, format) {
        assert_eq!(
            packed.len(),
            width as usize * height as usize * format.channels()
        );
        match try_preprocess_pixels(
            &packed,
            format,
            width as usize,
            height as usize,
            um_per_px,
            &spec,
        ) {
            Ok(input) => {
                assert_eq!(
                    input.data.len(),
                    spec.channels.len() * input.width * input.height
                );
                assert!(input.valid_width <= input.width && input.valid_height <= input.height);
                assert!(
                    input.data.iter().all(|v| v.is_finite()),
                    "non-finite model input"
                );
            }
            Err(OperatorError::BadFrame { .. }) => {}
            Err(e) => panic!("unexpected error {e}"),
        }
    }
});
