//! H.264/MP4 writing through GStreamer:
//! `appsrc ! videoconvert ! video/x-raw,format=I420 ! x264enc ! video/x-h264,profile=high
//! ! h264parse ! mp4mux ! filesink`.

use std::path::{Path, PathBuf};

use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;
use gstreamer_video as gst_video;

use crate::SynthError;

/// Initialises GStreamer (idempotent), mapping failure to [`SynthError::GstInit`].
pub fn gst_init() -> Result<(), SynthError> {
    gst::init().map_err(|e| SynthError::GstInit {
        message: e.to_string(),
    })
}

/// x264 quantizer used for every clip: high enough to keep demo clips small, low enough
/// that capillaries and red-cell texture survive.
pub const X264_QUANTIZER: u32 = 22;

/// How long `finish` waits for the muxer to finalise the file.
const FINISH_TIMEOUT_S: u64 = 300;

fn make(factory: &'static str, hint: &'static str) -> Result<gst::Element, SynthError> {
    gst::ElementFactory::make(factory)
        .build()
        .map_err(|_| SynthError::GstElement {
            element: factory,
            hint,
        })
}

/// Streams RGB frames into an H.264 MP4 file. Frame `i` gets PTS `i * 1e9 / fps`.
#[derive(Debug)]
pub struct Mp4Writer {
    pipeline: gst::Pipeline,
    src: gst_app::AppSrc,
    path: PathBuf,
    info: gst_video::VideoInfo,
    fps: u32,
    pushed: u64,
    finished: bool,
}

impl Mp4Writer {
    /// Builds and starts the encoding pipeline writing `path`. `width` and `height` must be even.
    pub fn create(path: &Path, width: u32, height: u32, fps: u32) -> Result<Self, SynthError> {
        gst_init()?;
        let pipe_err = |element: &str, message: String| SynthError::GstPipeline {
            path: path.to_path_buf(),
            element: element.to_string(),
            message,
        };
        let info = gst_video::VideoInfo::builder(gst_video::VideoFormat::Rgb, width, height)
            .fps(gst::Fraction::new(fps as i32, 1))
            .build()
            .map_err(|e| pipe_err("appsrc", format!("bad video format: {e}")))?;
        let caps = info
            .to_caps()
            .map_err(|e| pipe_err("appsrc", format!("bad caps: {e}")))?;
        let frame_bytes = info.size() as u64;
        let src = gst_app::AppSrc::builder()
            .name("src")
            .caps(&caps)
            .format(gst::Format::Time)
            .is_live(false)
            .block(true)
            .max_bytes(frame_bytes * 4)
            .build();
        let convert = make("videoconvert", "gstreamer1.0-plugins-base")?;
        let i420 = make("capsfilter", "gstreamer core")?;
        i420.set_property(
            "caps",
            gst::Caps::builder("video/x-raw")
                .field("format", "I420")
                .build(),
        );
        let enc = make("x264enc", "gstreamer1.0-plugins-ugly")?;
        enc.set_property_from_str("speed-preset", "medium");
        enc.set_property_from_str("pass", "quant");
        enc.set_property("quantizer", X264_QUANTIZER);
        enc.set_property("key-int-max", (2 * fps).max(1));
        // No B-frames: with them mp4mux (1.22) shifts the first PTS by the reorder delay.
        enc.set_property("bframes", 0u32);
        let profile = make("capsfilter", "gstreamer core")?;
        profile.set_property(
            "caps",
            gst::Caps::builder("video/x-h264")
                .field("profile", "high")
                .build(),
        );
        let parse = make("h264parse", "gstreamer1.0-plugins-bad")?;
        let mux = make("mp4mux", "gstreamer1.0-plugins-good")?;
        let sink = make("filesink", "gstreamer core")?;
        sink.set_property("location", path.to_string_lossy().to_string());

        let pipeline = gst::Pipeline::new();
        let elements = [
            src.upcast_ref::<gst::Element>(),
            &convert,
            &i420,
            &enc,
            &profile,
            &parse,
            &mux,
            &sink,
        ];
        pipeline
            .add_many(elements)
            .map_err(|e| pipe_err("pipeline", e.to_string()))?;
        gst::Element::link_many(elements)
            .map_err(|e| pipe_err("pipeline", format!("linking failed: {e}")))?;
        let writer = Mp4Writer {
            pipeline,
            src,
            path: path.to_path_buf(),
            info,
            fps,
            pushed: 0,
            finished: false,
        };
        if writer.pipeline.set_state(gst::State::Playing).is_err() {
            return Err(writer.bus_error().unwrap_or_else(|| {
                pipe_err(
                    "pipeline",
                    "could not start (state change to Playing failed)".into(),
                )
            }));
        }
        Ok(writer)
    }

    /// Path of the MP4 being written.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Number of frames pushed so far.
    pub fn frames_pushed(&self) -> u64 {
        self.pushed
    }

    /// Queues one tightly packed RGB frame (`width * height * 3` bytes).
    pub fn push_rgb(&mut self, rgb: &[u8]) -> Result<(), SynthError> {
        let (w, h) = (self.info.width() as usize, self.info.height() as usize);
        if rgb.len() != w * h * 3 {
            return Err(SynthError::GstPipeline {
                path: self.path.clone(),
                element: "appsrc".into(),
                message: format!("frame has {} bytes, expected {}", rgb.len(), w * h * 3),
            });
        }
        let stride = self.info.stride()[0] as usize;
        let mut data = vec![0u8; self.info.size()];
        for (dst, src) in data.chunks_mut(stride).zip(rgb.chunks(w * 3)) {
            dst[..w * 3].copy_from_slice(src);
        }
        let mut buffer = gst::Buffer::from_mut_slice(data);
        {
            let b = buffer.get_mut().expect("fresh buffer is writable");
            let ns = |i: u64| i * 1_000_000_000 / self.fps as u64;
            b.set_pts(gst::ClockTime::from_nseconds(ns(self.pushed)));
            b.set_duration(gst::ClockTime::from_nseconds(
                ns(self.pushed + 1) - ns(self.pushed),
            ));
        }
        if let Err(flow) = self.src.push_buffer(buffer) {
            return Err(self.bus_error().unwrap_or_else(|| SynthError::GstPipeline {
                path: self.path.clone(),
                element: "appsrc".into(),
                message: format!("push failed: {flow:?}"),
            }));
        }
        if let Some(err) = self.bus_error() {
            return Err(err);
        }
        self.pushed += 1;
        Ok(())
    }

    /// Sends end-of-stream, waits until the MP4 is finalised and returns its path.
    pub fn finish(mut self) -> Result<PathBuf, SynthError> {
        self.finished = true;
        let fail = |element: &str, message: String, path: &Path| SynthError::GstPipeline {
            path: path.to_path_buf(),
            element: element.to_string(),
            message,
        };
        if let Err(flow) = self.src.end_of_stream() {
            return Err(self.bus_error().unwrap_or_else(|| {
                fail(
                    "appsrc",
                    format!("end-of-stream failed: {flow:?}"),
                    &self.path,
                )
            }));
        }
        let bus = self.pipeline.bus().expect("pipelines have a bus");
        let msg = bus.timed_pop_filtered(
            gst::ClockTime::from_seconds(FINISH_TIMEOUT_S),
            &[gst::MessageType::Eos, gst::MessageType::Error],
        );
        let result = match msg.as_ref().map(|m| m.view()) {
            Some(gst::MessageView::Eos(_)) => Ok(self.path.clone()),
            Some(gst::MessageView::Error(err)) => Err(error_from(&self.path, err)),
            _ => Err(fail(
                "pipeline",
                format!("no end-of-stream within {FINISH_TIMEOUT_S} s"),
                &self.path,
            )),
        };
        let _ = self.pipeline.set_state(gst::State::Null);
        result
    }

    /// Pops a pending error message from the bus, if any.
    fn bus_error(&self) -> Option<SynthError> {
        let bus = self.pipeline.bus()?;
        let msg = bus.pop_filtered(&[gst::MessageType::Error])?;
        match msg.view() {
            gst::MessageView::Error(err) => Some(error_from(&self.path, err)),
            _ => None,
        }
    }
}

fn error_from(path: &Path, err: &gst::message::Error) -> SynthError {
    let element = err
        .src()
        .map(|s| s.name().to_string())
        .unwrap_or_else(|| "pipeline".into());
    let debug = err.debug().map(|d| format!(" ({d})")).unwrap_or_default();
    SynthError::GstPipeline {
        path: path.to_path_buf(),
        element,
        message: format!("{}{debug}", err.error()),
    }
}

impl Drop for Mp4Writer {
    fn drop(&mut self) {
        if !self.finished {
            tracing::warn!(path = %self.path.display(), "Mp4Writer dropped before finish(); file is incomplete");
        }
        let _ = self.pipeline.set_state(gst::State::Null);
    }
}
