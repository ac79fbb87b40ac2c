//! `synth://` sources: capflow's own generator as a live camera, for tests, demos and load checks without hardware.
//!
//! `synth://<preset>?width=320&height=240&fps=25&seed=7&length_s=2&um_per_px=2.2&capillaries=12` renders the
//! preset's scene (`skin`, `sublingual`, `sublingual-hd`, `nailfold`; see `capflow synth`) and plays it in real time,
//! looping a clip of `length_s` seconds for as long as the stream runs. Each loop frame is rendered once and kept
//! (the loop is bounded to [`MAX_LOOP_BYTES`]), so after the first pass the source costs only the copy, like a
//! camera. It is a live source: it never ends by itself, drops frames by the stream's policy when the worker falls
//! behind, and stops with the stream.

use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use capflow_synth::{Renderer, SynthSpec};
use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;

use crate::IngestError;

/// The URI scheme of generated sources.
pub const SCHEME: &str = "synth://";

/// Largest loop kept in memory (all frames of `length_s`, RGB): beyond it, lower the size or the loop length.
pub const MAX_LOOP_BYTES: u64 = 512 << 20;

/// Parses a `synth://` location into the spec it renders; errors name the location and the bad key.
pub fn parse(location: &str) -> Result<SynthSpec, IngestError> {
    let bad = |message: String| IngestError::Pipeline {
        input: location.to_owned(),
        message,
    };
    let rest = location
        .strip_prefix(SCHEME)
        .ok_or_else(|| bad(format!("a generated source starts with {SCHEME}")))?;
    let (preset, query) = rest.split_once('?').unwrap_or((rest, ""));
    let preset = preset.trim_end_matches('/');
    let preset = if preset.is_empty() { "skin" } else { preset };
    let mut spec = SynthSpec::preset(preset).ok_or_else(|| {
        bad(format!(
            "unknown generator preset `{preset}` (use skin, sublingual, sublingual-hd or nailfold)"
        ))
    })?;
    let mut length_s = 2.0f64;
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair
            .split_once('=')
            .ok_or_else(|| bad(format!("`{pair}` is not key=value")))?;
        let number = |what: &str| -> Result<f64, IngestError> {
            value
                .parse::<f64>()
                .ok()
                .filter(|v| v.is_finite() && *v > 0.0)
                .ok_or_else(|| bad(format!("`{key}` must be a positive {what}, not `{value}`")))
        };
        let whole = |what: &str| -> Result<u32, IngestError> {
            value
                .parse::<u32>()
                .ok()
                .filter(|v| *v > 0)
                .ok_or_else(|| bad(format!("`{key}` must be a positive {what}, not `{value}`")))
        };
        match key {
            "width" => spec.width = whole("whole number of pixels")?,
            "height" => spec.height = whole("whole number of pixels")?,
            "fps" => spec.fps = whole("whole number of frames per second")?,
            "capillaries" => spec.capillaries = whole("whole number")?,
            "um_per_px" => spec.um_per_px = number("number of µm")?,
            "length_s" => length_s = number("number of seconds")?,
            "seed" => {
                spec.seed = value
                    .parse()
                    .map_err(|_| bad(format!("`seed` must be a whole number, not `{value}`")))?
            }
            other => {
                return Err(bad(format!(
                    "unknown key `{other}` (use width, height, fps, seed, length_s, um_per_px or capillaries)"
                )))
            }
        }
    }
    spec.frames = ((length_s * f64::from(spec.fps)).round() as u32).max(1);
    let bytes = u64::from(spec.width) * u64::from(spec.height) * 3 * u64::from(spec.frames);
    if bytes > MAX_LOOP_BYTES {
        return Err(bad(format!(
            "a {}x{} loop of {} frames needs {} MiB (at most {} MiB); lower width/height or length_s",
            spec.width,
            spec.height,
            spec.frames,
            bytes >> 20,
            MAX_LOOP_BYTES >> 20
        )));
    }
    // The renderer checks the rest (even sizes, ranges) and says which field is wrong.
    Renderer::new(&spec).map_err(|e| bad(e.to_string()))?;
    Ok(spec)
}

/// An `appsrc` playing `spec` in real time from a feeder thread, until the pipeline stops.
pub(crate) fn generator(
    pipeline: &gst::Pipeline,
    location: &str,
    spec: SynthSpec,
) -> Result<(gst::Element, JoinHandle<()>), IngestError> {
    let pipeline_error = |message: String| IngestError::Pipeline {
        input: location.to_owned(),
        message,
    };
    let caps = gst::Caps::builder("video/x-raw")
        .field("format", "RGB")
        .field("width", spec.width as i32)
        .field("height", spec.height as i32)
        .field("framerate", gst::Fraction::new(spec.fps as i32, 1))
        .build();
    let appsrc = gst_app::AppSrc::builder()
        .caps(&caps)
        .format(gst::Format::Time)
        .is_live(true)
        // A slow consumer holds the feeder back (a few frames queued at most); the reader drops by policy.
        .block(true)
        .max_bytes(3 * 3 * u64::from(spec.width) * u64::from(spec.height))
        .build();
    let element = appsrc.upcast_ref::<gst::Element>().clone();
    pipeline
        .add(&appsrc)
        .map_err(|e| pipeline_error(e.to_string()))?;
    let frame_ns = 1_000_000_000 / u64::from(spec.fps);
    let handle = std::thread::Builder::new()
        .name("capflow-synth-source".into())
        .spawn(move || {
            let Ok(mut renderer) = Renderer::new(&spec) else {
                return; // checked by `parse`
            };
            let mut frames: Vec<gst::Buffer> = Vec::with_capacity(spec.frames as usize);
            let start = Instant::now();
            for i in 0u64.. {
                let at = start + Duration::from_nanos(i * frame_ns);
                if let Some(wait) = at.checked_duration_since(Instant::now()) {
                    std::thread::sleep(wait);
                }
                let slot = (i % u64::from(spec.frames)) as usize;
                if slot == frames.len() {
                    frames.push(gst::Buffer::from_mut_slice(
                        renderer.render(slot as u32).rgb,
                    ));
                }
                // A shallow copy: the loop's pixels are shared, each push gets its own timestamps.
                let mut buffer = frames[slot].copy();
                if let Some(buf) = buffer.get_mut() {
                    buf.set_pts(gst::ClockTime::from_nseconds(i * frame_ns));
                    buf.set_duration(gst::ClockTime::from_nseconds(frame_ns));
                }
                if appsrc.push_buffer(buffer).is_err() {
                    break; // the pipeline stopped
                }
            }
        })
        .map_err(|e| pipeline_error(e.to_string()))?;
    Ok((element, handle))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_location_sets_the_preset_size_rate_and_loop() {
        let spec =
            parse("synth://sublingual?width=160&height=120&fps=10&seed=3&length_s=1.5").unwrap();
        assert_eq!(
            (spec.width, spec.height, spec.fps, spec.seed, spec.frames),
            (160, 120, 10, 3, 15)
        );
        assert_eq!(spec.look, SynthSpec::preset("sublingual").unwrap().look);
        assert_eq!(parse("synth://").unwrap().look, SynthSpec::default().look);
    }

    #[test]
    fn bad_locations_name_the_key_and_the_fix() {
        for (location, says) in [
            ("synth://lung", "unknown generator preset `lung`"),
            ("synth://skin?width=abc", "`width` must be a positive"),
            ("synth://skin?colour=red", "unknown key `colour`"),
            ("synth://skin?fps", "not key=value"),
            (
                "synth://skin?length_s=600",
                "lower width/height or length_s",
            ),
            ("synth://skin?width=161&height=120&length_s=0.1", "161"),
        ] {
            let e = parse(location).unwrap_err().to_string();
            assert!(e.contains(location) && e.contains(says), "{location}: {e}");
        }
    }
}
