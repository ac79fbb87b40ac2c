//! A GStreamer pipeline per input, ending in a bounded `appsink` that [`Source::next_frame`] pulls from.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;
use gstreamer_video as gst_video;

use crate::pool::FramePool;
use crate::sequence::{list_with_kind, ImageKind};
use crate::{Frame, FrameLimits, IngestError, PixelFormat, StreamInfo};

const DECODE_HINT: &str =
    "check that it is a complete, playable video or image sequence, e.g. with `gst-discoverer-1.0`";
const LIVE_HINT: &str = "check the address, the network and that the camera or sender is running; \
     live sources are reconnected with backoff";

/// A bus error's text with the element that raised it and GStreamer's reason: "Internal data stream error" alone
/// does not say which part of the pipeline stopped, or why.
fn describe(err: &gst::message::Error) -> String {
    let text = err.error().to_string();
    let element = err.src().map(|s| s.name().to_string());
    let reason = err
        .debug()
        .and_then(|d| d.lines().last().map(|l| l.trim().to_owned()))
        .filter(|l| !l.is_empty() && *l != text);
    match (element, reason) {
        (Some(element), Some(reason)) => format!("{text} ({element}: {reason})"),
        (Some(element), None) => format!("{text} ({element})"),
        (None, Some(reason)) => format!("{text} ({reason})"),
        (None, None) => text,
    }
}

fn hint_for(input: &str) -> &'static str {
    match crate::StreamMode::detect(input) {
        crate::StreamMode::Live => LIVE_HINT,
        crate::StreamMode::Replay => DECODE_HINT,
    }
}

/// How a source decodes and queues.
#[derive(Clone, Debug, PartialEq)]
pub struct SourceOptions {
    /// Pixel layout frames are converted to.
    pub format: PixelFormat,
    /// Frames the appsink holds before the decoder blocks (bounded memory per stream).
    pub queue_frames: u32,
    /// Frame rate given to image sequences, which carry no timing of their own.
    pub sequence_fps: f64,
    /// How long [`Source::next_frame`] waits for a frame, the end or an error before it gives the stream up as
    /// stalled. Some damaged files leave GStreamer's demuxer waiting for data that never comes, and a live sender
    /// can go silent; neither may block the worker (and every other stream on it) forever.
    pub stall_timeout: Duration,
    /// The source is a live feed: an HTTP source is then read as a camera (MJPEG over HTTP, timestamped on arrival,
    /// no buffering) rather than downloaded as a file.
    pub live: bool,
    /// Frame sizes accepted; a larger (or smaller) frame fails the source with an error naming the limit.
    pub limits: FrameLimits,
    /// The size frames are delivered at, from their decoded size; `None` delivers them as decoded. Limits apply to
    /// the decoded size.
    ///
    /// The analyses work at the model's working resolution, so a 1080p skin frame is used at about half its size.
    /// Resizing here, on the decoder's planar YUV before the conversion to RGB and before the copy out of GStreamer,
    /// costs less than converting and copying the full frame and resizing it afterwards (the copy shrinks 3.4×).
    pub resize: Option<Resize>,
}

/// The delivered size of a frame from its decoded width and height (see [`SourceOptions::resize`]).
///
/// GStreamer resizes with its multi-tap bilinear filter, which widens with the shrink factor and so averages every
/// decoded pixel, as the triangle filter the model was trained with does.
#[derive(Clone)]
pub struct Resize(Arc<dyn Fn(u32, u32) -> (u32, u32) + Send + Sync>);

impl Resize {
    /// A rule giving the delivered `(width, height)` of a decoded `(width, height)`.
    pub fn new(rule: impl Fn(u32, u32) -> (u32, u32) + Send + Sync + 'static) -> Resize {
        Resize(Arc::new(rule))
    }

    /// The delivered size of a decoded `width × height` frame (at least 1 × 1).
    pub fn size(&self, width: u32, height: u32) -> (u32, u32) {
        let (w, h) = (self.0)(width, height);
        (w.max(1), h.max(1))
    }
}

impl std::fmt::Debug for Resize {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Resize(..)")
    }
}

impl PartialEq for Resize {
    fn eq(&self, other: &Resize) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Default for SourceOptions {
    fn default() -> Self {
        SourceOptions {
            format: PixelFormat::Rgb8,
            queue_frames: 4,
            sequence_fps: 25.0,
            stall_timeout: Duration::from_secs(20),
            live: false,
            limits: FrameLimits::default(),
            resize: None,
        }
    }
}

/// One running input: a file, a URI or an image-sequence folder, decoded by GStreamer.
pub struct Source {
    input: String,
    info: Arc<StreamInfo>,
    pipeline: gst::Pipeline,
    appsink: gst_app::AppSink,
    bus: gst::Bus,
    next_index: u64,
    first_pts: Option<u64>,
    sender_time_ms: Option<i64>,
    feeder: Option<JoinHandle<()>>,
    finished: bool,
    stall_timeout: Duration,
    cancel: Option<Arc<AtomicBool>>,
    limits: FrameLimits,
    format: PixelFormat,
    /// A limit broken before a frame reached the appsink (caps announced by a parser or decoder); reported in
    /// preference to the decoding error it causes.
    limit_error: LimitSlot,
    /// Decoded size of each delivered size the resize has produced (several entries only after a mid-stream change).
    sizes: SizeMap,
    /// Buffers of consumed frames, packed into again (see [`crate::pool`]).
    pool: Arc<FramePool>,
    /// The conversion before the appsink: what it is fed says whether GRAY8 frames hold limited-range luma.
    convert: gst::Element,
}

/// Idle frame buffers a source keeps: frames in flight are bounded by backpressure further on, so a few idle ones
/// cover the jitter between decoding a frame and dropping an older one.
const IDLE_FRAME_BUFFERS: usize = 2;

type LimitSlot = Arc<Mutex<Option<IngestError>>>;

/// Delivered `(width, height)` → decoded `(width, height)`.
type SizeMap = Arc<Mutex<std::collections::HashMap<(u32, u32), (u32, u32)>>>;

/// Keeps the first limit broken.
fn note_limit(slot: &LimitSlot, error: IngestError) {
    let mut slot = slot.lock().unwrap_or_else(|p| p.into_inner());
    if slot.is_none() {
        *slot = Some(error);
    }
}

impl std::fmt::Debug for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Source")
            .field("input", &self.input)
            .field("next_index", &self.next_index)
            .finish()
    }
}

/// The appsink's caps for `format`.
fn raw_caps(format: PixelFormat) -> gst::caps::Builder<gst::caps::NoFeature> {
    gst::Caps::builder("video/x-raw").field("format", format.gst_name())
}

/// Whether `convert` (the `videoconvert` before the appsink) is fed limited-range YUV, whose luma it passes on to
/// GRAY8 as it is (16–235; the GRAY8 caps then still read full range). Asking it for full-range GRAY8 instead makes
/// it take its generic path, slower than converting to RGB (400 frames of 640×480 H.264: 1.16–1.22 CPU-s against
/// 1.04–1.09 to RGB and 0.90–0.91 copying the luma), so the stretch is done on the copy out (see [`crate::luma`]).
fn feeds_limited_luma(convert: &gst::Element) -> bool {
    convert
        .static_pad("sink")
        .and_then(|pad| pad.current_caps())
        .and_then(|caps| gst_video::VideoInfo::from_caps(&caps).ok())
        .is_some_and(|info| {
            info.is_yuv() && info.colorimetry().range() == gst_video::VideoColorRange::Range16_235
        })
}

fn make(factory: &str) -> Result<gst::Element, IngestError> {
    gst::ElementFactory::make(factory)
        .build()
        .map_err(|_| IngestError::MissingElement {
            element: factory.to_owned(),
        })
}

impl Source {
    /// Opens `location`: a video file path, a folder of images, a V4L2 camera (`/dev/videoN` or `v4l2:///dev/videoN`),
    /// capflow's generator (`synth://skin?width=320&height=240`, see [`crate::synthetic`]) or a URI (`file://`,
    /// `rtsp://`, `udp://`, `http://`, ...).
    ///
    /// Fails fast when a path does not exist; decoding problems surface from [`Source::next_frame`].
    pub fn open(
        location: &str,
        info: Arc<StreamInfo>,
        options: &SourceOptions,
    ) -> Result<Source, IngestError> {
        crate::init()?;
        let pipeline = gst::Pipeline::new();
        let pipeline_error = |message: String| IngestError::Pipeline {
            input: location.to_owned(),
            message,
        };

        let convert = make("videoconvert")?;
        let caps = raw_caps(options.format).build();
        let appsink = gst_app::AppSink::builder()
            .caps(&caps)
            .max_buffers(options.queue_frames.max(1))
            .drop(false)
            .sync(false)
            .build();
        pipeline
            .add_many([&convert, appsink.upcast_ref()])
            .map_err(|e| pipeline_error(e.to_string()))?;
        convert
            .link(&appsink)
            .map_err(|e| pipeline_error(e.to_string()))?;
        // With a resize, decoded frames meet the scaler first (the first element every decoder links to).
        let head = match &options.resize {
            Some(_) => {
                let scale = make("videoscale")?;
                scale.set_property_from_str("method", "bilinear2");
                pipeline
                    .add(&scale)
                    .map_err(|e| pipeline_error(e.to_string()))?;
                scale
                    .link(&convert)
                    .map_err(|e| pipeline_error(e.to_string()))?;
                scale
            }
            None => convert.clone(),
        };

        let mut feeder = None;
        let is_uri = location.contains("://");
        let v4l2_device = location
            .strip_prefix("v4l2://")
            .or_else(|| location.starts_with("/dev/video").then_some(location));
        let decoder = if location.starts_with(crate::synthetic::SCHEME) {
            // capflow's generator as a live camera: raw RGB straight into the converter.
            let spec = crate::synthetic::parse(location)?;
            let (generator, handle) = crate::synthetic::generator(&pipeline, location, spec)?;
            generator
                .link(&head)
                .map_err(|e| pipeline_error(e.to_string()))?;
            feeder = Some(handle);
            generator
        } else if let Some(device) = v4l2_device {
            // A camera: its raw or MJPEG output through decodebin.
            let camera = make("v4l2src")?;
            camera.set_property("device", device);
            let decoder = make("decodebin")?;
            pipeline
                .add_many([&camera, &decoder])
                .map_err(|e| pipeline_error(e.to_string()))?;
            camera
                .link(&decoder)
                .map_err(|e| pipeline_error(e.to_string()))?;
            decoder
        } else if is_uri {
            let decoder = make("uridecodebin")?;
            decoder.set_property("uri", location);
            let live = options.live;
            decoder.connect("source-setup", false, move |args| {
                if let Some(source) = args.get(1).and_then(|v| v.get::<gst::Element>().ok()) {
                    // RTSP: tag each frame with the sender's NTP wall clock once an RTCP sender report arrives.
                    if source.has_property("add-reference-timestamp-meta") {
                        source.set_property("add-reference-timestamp-meta", true);
                    }
                    // A live HTTP camera (MJPEG): no download buffering, frames timed as they arrive.
                    if live && source.has_property("is-live") && source.has_property("do-timestamp")
                    {
                        source.set_property("is-live", true);
                        source.set_property("do-timestamp", true);
                    }
                }
                None
            });
            // MJPEG over HTTP (multipart/x-mixed-replace): one stream whose type never changes; without this the
            // demuxer never says it has all its pads and decodebin holds every frame back.
            decoder.connect("deep-element-added", false, |args| {
                if let Some(element) = args.get(2).and_then(|v| v.get::<gst::Element>().ok()) {
                    if element
                        .factory()
                        .is_some_and(|f| f.name() == "multipartdemux")
                    {
                        element.set_property("single-stream", true);
                    }
                }
                None
            });
            pipeline
                .add(&decoder)
                .map_err(|e| pipeline_error(e.to_string()))?;
            decoder
        } else {
            let path = Path::new(location);
            if !path.exists() {
                return Err(IngestError::NotFound {
                    path: path.to_owned(),
                });
            }
            if path.is_dir() {
                let (images, kind) = list_with_kind(path)?;
                let (decoder, handle) =
                    sequence_decoder(&pipeline, path, images, kind, options.sequence_fps)?;
                feeder = Some(handle);
                decoder
            } else {
                let decoder = make("uridecodebin")?;
                let absolute = std::fs::canonicalize(path).map_err(|error| IngestError::Io {
                    path: path.to_owned(),
                    error,
                })?;
                let uri = gst::glib::filename_to_uri(&absolute, None)
                    .map_err(|e| pipeline_error(format!("cannot make a URI from the path: {e}")))?;
                decoder.set_property("uri", uri.as_str());
                pipeline
                    .add(&decoder)
                    .map_err(|e| pipeline_error(e.to_string()))?;
                decoder
            }
        };

        let limit_error: LimitSlot = Arc::default();
        // Frame sizes are checked as early as the input allows. First on the caps a demuxer or parser announces
        // (AVI, MP4, PNG and JPEG headers carry the size): a pad whose frames break a limit is not decoded at all.
        if decoder
            .factory()
            .is_some_and(|f| matches!(f.name().as_str(), "uridecodebin" | "decodebin"))
        {
            let (slot, limits, format, input) = (
                Arc::clone(&limit_error),
                options.limits,
                options.format,
                location.to_owned(),
            );
            decoder.connect("autoplug-continue", false, move |args| {
                let size = args
                    .get(2)
                    .and_then(|v| v.get::<gst::Caps>().ok())
                    .and_then(|caps| {
                        let s = caps.structure(0)?;
                        Some((s.get::<i32>("width").ok()?, s.get::<i32>("height").ok()?))
                    });
                if let Some((w, h)) = size.filter(|&(w, h)| w > 0 && h > 0) {
                    if let Err(e) = limits.check(&input, w as u32, h as u32, format) {
                        note_limit(&slot, e);
                        return Some(false.to_value());
                    }
                }
                Some(true.to_value())
            });
            decoder.connect("deep-element-added", false, |args| {
                if let Some(element) = args.get(2).and_then(|v| v.get::<gst::Element>().ok()) {
                    disable_direct_rendering(&element);
                }
                None
            });
        }
        // Then on the decoded caps (also when they change mid-stream): from there on no frame reaches the converter,
        // and the decoder is told to stop. The same caps set the size the appsink asks the scaler for.
        let sizes = SizeMap::default();
        if let Some(sink) = head.static_pad("sink") {
            let (slot, limits, format, input) = (
                Arc::clone(&limit_error),
                options.limits,
                options.format,
                location.to_owned(),
            );
            let (resize, sizes, sink_weak) = (
                options.resize.clone(),
                Arc::clone(&sizes),
                appsink.downgrade(),
            );
            let blocked = AtomicBool::new(false);
            sink.add_probe(
                gst::PadProbeType::EVENT_DOWNSTREAM | gst::PadProbeType::BUFFER,
                move |_, info| {
                    match &info.data {
                        Some(gst::PadProbeData::Event(event)) => {
                            let video = match event.view() {
                                gst::EventView::Caps(caps) => {
                                    gst_video::VideoInfo::from_caps(caps.caps()).ok()
                                }
                                _ => None,
                            };
                            if let Some(video) = video {
                                let broken = limits
                                    .check(&input, video.width(), video.height(), format)
                                    .err();
                                if let Some(e) = broken {
                                    note_limit(&slot, e);
                                    blocked.store(true, Ordering::SeqCst);
                                } else if let (Some(resize), Some(appsink)) =
                                    (&resize, sink_weak.upgrade())
                                {
                                    let decoded = (video.width(), video.height());
                                    let (w, h) = resize.size(decoded.0, decoded.1);
                                    sizes
                                        .lock()
                                        .unwrap_or_else(|p| p.into_inner())
                                        .insert((w, h), decoded);
                                    appsink.set_caps(Some(
                                        &raw_caps(format)
                                            .field("width", i32::try_from(w).unwrap_or(i32::MAX))
                                            .field("height", i32::try_from(h).unwrap_or(i32::MAX))
                                            .build(),
                                    ));
                                }
                            }
                        }
                        Some(gst::PadProbeData::Buffer(_)) if blocked.load(Ordering::SeqCst) => {
                            info.flow_res = Err(gst::FlowError::NotNegotiated);
                            return gst::PadProbeReturn::Handled;
                        }
                        _ => {}
                    }
                    gst::PadProbeReturn::Ok
                },
            );
        }

        // Decoders expose their pads once the stream type is known; link the first video pad, ignore audio.
        let head_weak = head.downgrade();
        decoder.connect_pad_added(move |_, pad| {
            let Some(head) = head_weak.upgrade() else {
                return;
            };
            let is_video = pad
                .current_caps()
                .or_else(|| Some(pad.query_caps(None)))
                .and_then(|caps| caps.structure(0).map(|s| s.name().starts_with("video/")))
                .unwrap_or(false);
            let Some(sink) = head.static_pad("sink") else {
                return;
            };
            if is_video && !sink.is_linked() {
                let _ = pad.link(&sink);
            }
        });

        let bus = pipeline
            .bus()
            .ok_or_else(|| pipeline_error("pipeline has no bus".into()))?;
        let source = Source {
            input: location.to_owned(),
            info,
            pipeline,
            appsink,
            bus,
            next_index: 0,
            first_pts: None,
            sender_time_ms: None,
            feeder,
            finished: false,
            stall_timeout: options.stall_timeout,
            cancel: None,
            limits: options.limits,
            sizes,
            format: options.format,
            limit_error,
            pool: FramePool::new(IDLE_FRAME_BUFFERS),
            convert,
        };
        if source.pipeline.set_state(gst::State::Playing).is_err() {
            // The bus usually says why (missing plugin, unreadable file).
            return Err(source
                .take_limit_error()
                .or_else(|| source.bus_error())
                .unwrap_or_else(|| pipeline_error("could not start playing".into())));
        }
        Ok(source)
    }

    /// The input as given to [`Source::open`].
    pub fn input(&self) -> &str {
        &self.input
    }

    /// The stream this source feeds.
    pub fn info(&self) -> &Arc<StreamInfo> {
        &self.info
    }

    /// Makes [`Source::next_frame`] return `Ok(None)` within ~50 ms once `flag` is set, even while the source is
    /// silent: how a stream is stopped at shutdown or removed at run time.
    pub fn set_cancel(&mut self, flag: Arc<AtomicBool>) {
        self.cancel = Some(flag);
    }

    /// The sender's wall-clock time of the frame [`Source::next_frame`] returned last, ms since the Unix epoch: the
    /// NTP time an RTSP sender reports in its RTCP sender reports (the first few frames, before the first report, have
    /// none), or `None` for sources without one.
    pub fn sender_time_ms(&self) -> Option<i64> {
        self.sender_time_ms
    }

    /// Length of a file's media, when the demuxer knows it (replays of files; `None` for live sources and image
    /// folders): what progress bars count towards.
    pub fn duration_ms(&self) -> Option<i64> {
        self.pipeline
            .query_duration::<gst::ClockTime>()
            .map(|d| d.mseconds() as i64)
    }

    /// Blocks until the next frame is decoded; `Ok(None)` at end of stream or once cancelled.
    pub fn next_frame(&mut self) -> Result<Option<Frame>, IngestError> {
        if self.finished {
            return Ok(None);
        }
        let waiting_since = Instant::now();
        loop {
            if self
                .cancel
                .as_ref()
                .is_some_and(|c| c.load(Ordering::SeqCst))
            {
                self.finish();
                return Ok(None);
            }
            // A broken limit first: frames decoded before it still come out, then the limit's error (the decoding
            // error it causes says less). Buffers after the offending caps never reach the appsink.
            if self.limit_broken() {
                if let Some(sample) = self.appsink.try_pull_sample(gst::ClockTime::ZERO) {
                    return self.deliver(&sample);
                }
                self.finish();
                if let Some(error) = self.take_limit_error() {
                    return Err(error);
                }
            }
            if let Some(error) = self.bus_error() {
                if self.limit_broken() {
                    continue; // the limit was broken just now: reported above
                }
                self.finish();
                return Err(error);
            }
            if waiting_since.elapsed() > self.stall_timeout {
                self.finish();
                return Err(IngestError::Stalled {
                    input: self.input.clone(),
                    frames: self.next_index,
                    waited_s: self.stall_timeout.as_secs_f64(),
                });
            }
            if let Some(sample) = self
                .appsink
                .try_pull_sample(gst::ClockTime::from_mseconds(50))
            {
                return self.deliver(&sample);
            }
            if self.appsink.is_eos() {
                // An error may race the EOS; prefer reporting it.
                if self.limit_broken() {
                    continue;
                }
                if let Some(error) = self.bus_error() {
                    self.finish();
                    return Err(error);
                }
                self.finish();
                if self.next_index == 0 {
                    return Err(IngestError::Decode {
                        input: self.input.clone(),
                        message: "no video frames could be decoded".into(),
                        hint: DECODE_HINT,
                    });
                }
                return Ok(None);
            }
        }
    }

    /// The frame of `sample`; on an error the source is finished.
    fn deliver(&mut self, sample: &gst::Sample) -> Result<Option<Frame>, IngestError> {
        match self.frame_from(sample) {
            Ok(frame) => Ok(Some(frame)),
            Err(error) => {
                self.finish();
                Err(error)
            }
        }
    }

    fn limit_broken(&self) -> bool {
        self.limit_error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_some()
    }

    fn take_limit_error(&self) -> Option<IngestError> {
        self.limit_error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
    }

    fn bus_error(&self) -> Option<IngestError> {
        while let Some(message) = self.bus.pop_filtered(&[gst::MessageType::Error]) {
            if let gst::MessageView::Error(err) = message.view() {
                return Some(IngestError::Decode {
                    input: self.input.clone(),
                    message: describe(err),
                    hint: hint_for(&self.input),
                });
            }
        }
        None
    }

    fn frame_from(&mut self, sample: &gst::Sample) -> Result<Frame, IngestError> {
        let decode_error = |message: &str| IngestError::Decode {
            input: self.input.clone(),
            message: message.to_owned(),
            hint: DECODE_HINT,
        };
        let caps = sample
            .caps()
            .ok_or_else(|| decode_error("decoded sample without caps"))?;
        let info = gst_video::VideoInfo::from_caps(caps)
            .map_err(|_| decode_error("decoded sample with bad caps"))?;
        let buffer = sample
            .buffer()
            .ok_or_else(|| decode_error("decoded sample without a buffer"))?;
        let video = gst_video::VideoFrameRef::from_buffer_ref_readable(buffer, &info)
            .map_err(|_| decode_error("cannot map a decoded frame"))?;
        let format = match info.format() {
            gst_video::VideoFormat::Rgb => PixelFormat::Rgb8,
            gst_video::VideoFormat::Gray8 => PixelFormat::Gray8,
            _ => return Err(decode_error("decoder produced an unexpected pixel format")),
        };
        if format != self.format {
            return Err(decode_error("decoder produced an unexpected pixel format"));
        }
        let (width, height) = (info.width(), info.height());
        let (source_width, source_height) = self
            .sizes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&(width, height))
            .copied()
            .unwrap_or((width, height));
        self.limits
            .check(&self.input, source_width, source_height, format)?;
        let stride = usize::try_from(info.stride()[0])
            .map_err(|_| decode_error("decoded frame with a negative stride"))?;
        let plane = video
            .plane_data(0)
            .map_err(|_| decode_error("cannot read a decoded plane"))?;
        let mut data = self
            .pool
            .take(width as usize * height as usize * format.channels());
        crate::limits::pack_plane_into(plane, stride, width, height, format, data.bytes_mut())?;
        if format == PixelFormat::Gray8 && feeds_limited_luma(&self.convert) {
            crate::luma::expand_limited(data.bytes_mut());
        }
        let index = self.next_index;
        self.next_index += 1;
        // Encoders with B-frames start PTS above zero; frames are timed from the first one.
        let pts = buffer.pts().map(|t| t.nseconds()).unwrap_or(0);
        let first = *self.first_pts.get_or_insert(pts);
        self.sender_time_ms = buffer
            .iter_meta::<gst::meta::ReferenceTimestampMeta>()
            .find_map(|meta| sender_ms(meta.reference().structure(0)?.name(), meta.timestamp()));
        Ok(Frame {
            stream: Arc::clone(&self.info),
            index,
            pts_ns: pts.saturating_sub(first),
            width,
            height,
            source_width,
            source_height,
            format,
            data,
        })
    }

    fn finish(&mut self) {
        self.finished = true;
        let _ = self.pipeline.set_state(gst::State::Null);
        if let Some(handle) = self.feeder.take() {
            let _ = handle.join();
        }
    }
}

impl Drop for Source {
    fn drop(&mut self) {
        self.finish();
    }
}

/// Tells a libav decoder to decode into its own frames and copy each one into a pooled buffer.
///
/// With direct rendering (the default) libav keeps a reference to the output buffer for later reference frames, so
/// the decoder base class cannot write its timestamps without a deep copy into a freshly allocated buffer: a new
/// 6 MB block per 1080p frame, whose pages the kernel faults in and zeroes every time. Without it the single copy
/// lands in a buffer the pool hands back frame after frame.
fn disable_direct_rendering(element: &gst::Element) {
    if element
        .factory()
        .is_some_and(|f| f.name().starts_with("avdec_"))
        && element.has_property("direct-rendering")
    {
        element.set_property("direct-rendering", false);
    }
}

/// Seconds from the NTP epoch (1900) to the Unix epoch (1970).
const NTP_TO_UNIX_S: i64 = 2_208_988_800;

/// A reference timestamp as Unix milliseconds, for the NTP and Unix references (`timestamp/x-ntp`, `timestamp/x-unix`).
fn sender_ms(reference: &str, timestamp: gst::ClockTime) -> Option<i64> {
    let ms = (timestamp.nseconds() / 1_000_000) as i64;
    match reference {
        "timestamp/x-ntp" => Some(ms - NTP_TO_UNIX_S * 1000),
        "timestamp/x-unix" => Some(ms),
        _ => None,
    }
}

/// Copies `height` rows of `row_bytes` out of a plane whose rows are `stride` bytes apart (GStreamer pads rows) into
/// `out`, which is cleared first.
pub(crate) fn pack_rows_into(
    plane: &[u8],
    stride: usize,
    row_bytes: usize,
    height: usize,
    out: &mut Vec<u8>,
) {
    out.clear();
    if stride == row_bytes {
        out.extend_from_slice(&plane[..row_bytes * height]);
        return;
    }
    out.reserve(row_bytes * height);
    for row in plane.chunks(stride).take(height) {
        out.extend_from_slice(&row[..row_bytes]);
    }
}

/// `appsrc` fed by a thread with the encoded images, then `decodebin`: one pipeline for the whole sequence.
fn sequence_decoder(
    pipeline: &gst::Pipeline,
    dir: &Path,
    images: Vec<PathBuf>,
    kind: ImageKind,
    fps: f64,
) -> Result<(gst::Element, JoinHandle<()>), IngestError> {
    let pipeline_error = |message: String| IngestError::Pipeline {
        input: dir.display().to_string(),
        message,
    };
    let fps = if fps.is_finite() && fps > 0.0 {
        fps
    } else {
        25.0
    };
    let caps = gst::Caps::builder(kind.caps_name())
        .field(
            "framerate",
            gst::Fraction::approximate_f64(fps).unwrap_or(gst::Fraction::new(25, 1)),
        )
        .build();
    let appsrc = gst_app::AppSrc::builder()
        .caps(&caps)
        .format(gst::Format::Time)
        .block(true)
        .max_bytes(32 << 20)
        .build();
    let decoder = make("decodebin")?;
    pipeline
        .add_many([appsrc.upcast_ref(), &decoder])
        .map_err(|e| pipeline_error(e.to_string()))?;
    appsrc
        .link(&decoder)
        .map_err(|e| pipeline_error(e.to_string()))?;
    let frame_ns = (1e9 / fps) as u64;
    let handle = std::thread::Builder::new()
        .name("capflow-sequence".into())
        .spawn(move || {
            for (i, path) in images.iter().enumerate() {
                let Ok(bytes) = std::fs::read(path) else {
                    // A vanished or unreadable image ends the sequence with an error the bus reports.
                    gst::element_error!(
                        appsrc,
                        gst::ResourceError::Read,
                        ("cannot read image {}", path.display())
                    );
                    return;
                };
                let mut buffer = gst::Buffer::from_mut_slice(bytes);
                if let Some(buf) = buffer.get_mut() {
                    buf.set_pts(gst::ClockTime::from_nseconds(i as u64 * frame_ns));
                    buf.set_duration(gst::ClockTime::from_nseconds(frame_ns));
                }
                if appsrc.push_buffer(buffer).is_err() {
                    return; // pipeline stopped
                }
            }
            let _ = appsrc.end_of_stream();
        })
        .map_err(|e| pipeline_error(e.to_string()))?;
    Ok((decoder, handle))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn libav_decoders_of_a_file_run_without_direct_rendering() {
        crate::init().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("clip.mp4");
        let status = std::process::Command::new("gst-launch-1.0")
            .args([
                "-q",
                "videotestsrc",
                "num-buffers=3",
                "!",
                "video/x-raw,width=64,height=48",
            ])
            .args([
                "!",
                "x264enc",
                "!",
                "h264parse",
                "!",
                "mp4mux",
                "!",
                "filesink",
            ])
            .arg(format!("location={}", path.display()))
            .status()
            .expect("gst-launch-1.0 is installed by `make setup`");
        assert!(status.success());
        let info = Arc::new(StreamInfo::new("s", "p", "site", 2.2));
        let mut source =
            Source::open(path.to_str().unwrap(), info, &SourceOptions::default()).unwrap();
        assert!(source.next_frame().unwrap().is_some());
        let decoders: Vec<gst::Element> = source
            .pipeline
            .iterate_recurse()
            .into_iter()
            .filter_map(Result::ok)
            .filter(|e| e.factory().is_some_and(|f| f.name().starts_with("avdec_")))
            .collect();
        assert_eq!(decoders.len(), 1, "one libav decoder for the H.264 stream");
        assert!(!decoders[0].property::<bool>("direct-rendering"));
    }

    #[test]
    fn sender_times_convert_from_the_ntp_epoch() {
        // 2026-11-28T00:00:00Z is 1_795_824_000 s after 1970.
        let ntp = gst::ClockTime::from_seconds((1_795_824_000 + NTP_TO_UNIX_S) as u64);
        assert_eq!(sender_ms("timestamp/x-ntp", ntp), Some(1_795_824_000_000));
        let unix = gst::ClockTime::from_mseconds(1_500);
        assert_eq!(sender_ms("timestamp/x-unix", unix), Some(1_500));
        assert_eq!(sender_ms("timestamp/x-ptp", unix), None);
    }

    #[test]
    fn pack_rows_drops_stride_padding() {
        let plane = [1, 2, 3, 0, 4, 5, 6, 0];
        let mut out = vec![9; 20];
        pack_rows_into(&plane, 4, 3, 2, &mut out);
        assert_eq!(out, vec![1, 2, 3, 4, 5, 6]);
        pack_rows_into(&plane[..6], 3, 3, 2, &mut out);
        assert_eq!(out, vec![1, 2, 3, 0, 4, 5]);
    }

    #[test]
    fn missing_path_names_the_input() {
        let info = Arc::new(StreamInfo::new("s", "p", "site", 2.2));
        let err =
            Source::open("/nonexistent/clip.mp4", info, &SourceOptions::default()).unwrap_err();
        assert!(matches!(err, IngestError::NotFound { .. }));
        assert!(err.to_string().contains("/nonexistent/clip.mp4"));
    }
}
