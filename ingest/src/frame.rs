//! The frame record every operator downstream of ingest works on.

use std::sync::Arc;

use crate::pool::FrameData;

/// Pixel layout of [`Frame::data`].
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum PixelFormat {
    /// 8-bit R, G, B interleaved.
    #[default]
    Rgb8,
    /// 8-bit luma only.
    Gray8,
}

impl PixelFormat {
    /// Bytes per pixel.
    pub fn channels(self) -> usize {
        match self {
            PixelFormat::Rgb8 => 3,
            PixelFormat::Gray8 => 1,
        }
    }

    /// The GStreamer raw video format name.
    pub fn gst_name(self) -> &'static str {
        match self {
            PixelFormat::Rgb8 => "RGB",
            PixelFormat::Gray8 => "GRAY8",
        }
    }
}

/// What is known about a stream before its first frame: who and where it films, and at what scale.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct StreamInfo {
    /// Unique id of the stream within a run.
    pub stream_id: String,
    /// Patient the stream belongs to.
    pub patient_id: String,
    /// Recording site (free text).
    pub site: String,
    /// Pixel size of the decoded frames, micrometres per pixel.
    pub um_per_px: f64,
    /// Wall-clock time of the stream's first frame, milliseconds since the Unix epoch (0 when unknown).
    pub recorded_at_ms: i64,
}

impl StreamInfo {
    /// A stream recorded at an unknown time (event times then start at the Unix epoch).
    pub fn new(stream_id: &str, patient_id: &str, site: &str, um_per_px: f64) -> Self {
        StreamInfo {
            stream_id: stream_id.to_owned(),
            patient_id: patient_id.to_owned(),
            site: site.to_owned(),
            um_per_px,
            recorded_at_ms: 0,
        }
    }
}

/// One decoded frame with tightly packed rows (no stride padding), possibly resized by its source to the
/// resolution the analyses work at (see [`crate::SourceOptions::resize`]).
#[derive(Clone, Debug)]
pub struct Frame {
    /// The stream the frame belongs to (shared, so cloning a frame's metadata is cheap).
    pub stream: Arc<StreamInfo>,
    /// 0-based index within the stream.
    pub index: u64,
    /// Presentation timestamp, nanoseconds after the stream's first frame.
    pub pts_ns: u64,
    /// Width in pixels of `data`.
    pub width: u32,
    /// Height in pixels of `data`.
    pub height: u32,
    /// Width as decoded, before the source resized it to the working resolution (`width` when it did not).
    pub source_width: u32,
    /// Height as decoded (`height` when the source did not resize).
    pub source_height: u32,
    /// Layout of `data`.
    pub format: PixelFormat,
    /// `width * height * format.channels()` bytes, row-major; back to the source's pool when the frame is dropped.
    /// Empty once the pipeline has made the model input from it (later stages work on a working-resolution plane).
    pub data: FrameData,
}

impl Frame {
    /// Event time of the frame: the stream's recording start plus the PTS, in milliseconds since the Unix epoch.
    pub fn event_time_ms(&self) -> i64 {
        self.stream.recorded_at_ms + (self.pts_ns / 1_000_000) as i64
    }

    /// Pixel size of `data`, µm: the stream's (which describes the decoded frames) scaled by the source's resize.
    pub fn um_per_px(&self) -> f64 {
        if self.width == 0 || self.source_width == self.width {
            return self.stream.um_per_px;
        }
        self.stream.um_per_px * f64::from(self.source_width) / f64::from(self.width)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_time_adds_pts_to_recording_start() {
        let mut info = StreamInfo::new("s", "p", "site", 2.2);
        info.recorded_at_ms = 1_000;
        let frame = Frame {
            stream: Arc::new(info),
            index: 3,
            pts_ns: 120_000_000,
            width: 1,
            height: 1,
            source_width: 1,
            source_height: 1,
            format: PixelFormat::Gray8,
            data: vec![0].into(),
        };
        assert_eq!(frame.event_time_ms(), 1_120);
        assert_eq!(frame.um_per_px(), 2.2);
    }
}
