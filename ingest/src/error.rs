//! Typed ingest errors: each names the input it concerns and, where possible, what to do.

use std::path::PathBuf;

/// Why a source could not be opened or stopped delivering frames.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IngestError {
    /// GStreamer itself could not start (missing libraries or plugins).
    #[error(
        "GStreamer failed to initialise: {0} (run `make setup` to install the GStreamer packages)"
    )]
    Init(String),
    /// A needed GStreamer element is not installed.
    #[error("GStreamer element `{element}` is missing (install the GStreamer plugin packages: `make setup`)")]
    MissingElement {
        /// Factory name of the element.
        element: String,
    },
    /// The input path does not exist.
    #[error("input {path}: no such file or folder (check the stream's `source` in the config or the --input path)")]
    NotFound {
        /// The path as given.
        path: PathBuf,
    },
    /// A folder was given but holds no images capflow can read.
    #[error("input {path}: the folder holds no .png/.jpg/.jpeg images (an image sequence needs same-type images sorted by name)")]
    EmptySequence {
        /// The folder.
        path: PathBuf,
    },
    /// An image sequence mixes PNG and JPEG files.
    #[error("input {path}: the folder mixes PNG and JPEG images; keep one type per sequence")]
    MixedSequence {
        /// The folder.
        path: PathBuf,
    },
    /// Reading an input file failed.
    #[error("input {path}: {error}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        error: std::io::Error,
    },
    /// GStreamer reported an error while decoding (not a video, truncated file, unsupported codec, lost stream).
    #[error("input {input}: {message} ({hint})")]
    Decode {
        /// The input (path or URI).
        input: String,
        /// GStreamer's message.
        message: String,
        /// What the user can do about it.
        hint: &'static str,
    },
    /// The decoder produced no frame, end or error for the stall timeout.
    #[error(
        "input {input}: no frame, end or error from the decoder for {waited_s:.0} s after {frames} frame(s); the file \
         is probably truncated or damaged, or the live sender went silent (check it with `gst-discoverer-1.0`; \
         raise ingest.stall_timeout_s for very slow sources)"
    )]
    Stalled {
        /// The input (path or URI).
        input: String,
        /// Frames decoded before the stall.
        frames: u64,
        /// How long it waited, seconds.
        waited_s: f64,
    },
    /// The pipeline could not be built or started.
    #[error("input {input}: could not start the decoding pipeline: {message}")]
    Pipeline {
        /// The input (path or URI).
        input: String,
        /// What went wrong.
        message: String,
    },
    /// A frame breaks one of the `[limits]` of the run config.
    #[error(
        "input {input}: frames are {width}x{height} ({bytes} bytes decoded), {} {key} = {limit}; {}",
        if *above { "over" } else { "under" },
        if *above {
            "raise that key in the config's [limits] table if such frames are expected (memory grows with the frame)"
        } else {
            "frames this small cannot show a capillary; lower that key in the config's [limits] table if they are expected"
        }
    )]
    FrameLimit {
        /// The input (path or URI).
        input: String,
        /// Width seen, pixels.
        width: u32,
        /// Height seen, pixels.
        height: u32,
        /// Bytes of one decoded frame in the pipeline's pixel format.
        bytes: u64,
        /// The config key of the limit broken, e.g. `limits.max_width`.
        key: &'static str,
        /// The limit's value.
        limit: u64,
        /// Above a maximum (else below a minimum).
        above: bool,
    },
    /// A pixel buffer's width, height, stride and length do not fit together.
    #[error("inconsistent frame layout: {message}")]
    FrameLayout {
        /// What does not fit.
        message: String,
    },
}
