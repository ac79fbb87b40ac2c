//! Typed errors of the synthetic video generator.

use std::path::PathBuf;

/// Everything that can go wrong while validating a spec, rendering or writing a clip.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum SynthError {
    /// A [`crate::SynthSpec`] field holds an unusable value.
    #[error("invalid synth spec: {message}")]
    InvalidSpec {
        /// Name of the offending field, e.g. `"width"`.
        field: &'static str,
        /// Human-readable problem, always starting with the field name.
        message: String,
    },
    /// The clip name cannot be used as a file name.
    #[error("invalid clip name {name:?}: {reason}")]
    InvalidName {
        /// The rejected name.
        name: String,
        /// Why it was rejected.
        reason: &'static str,
    },
    /// A file or directory could not be created or written.
    #[error("I/O error on {path}: {source}")]
    Io {
        /// The path being written.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A PNG file could not be encoded.
    #[error("PNG encoding failed for {path}: {source}")]
    Png {
        /// The PNG being written.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: png::EncodingError,
    },
    /// A JSON file could not be serialised.
    #[error("JSON serialisation failed for {path}: {source}")]
    Json {
        /// The JSON file being written.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: serde_json::Error,
    },
    /// GStreamer could not be initialised.
    #[error("GStreamer initialisation failed: {message}")]
    GstInit {
        /// The error reported by `gst_init`.
        message: String,
    },
    /// A GStreamer element could not be created (usually a missing plugin).
    #[error("GStreamer element `{element}` could not be created ({hint})")]
    GstElement {
        /// Factory name of the element, e.g. `"x264enc"`.
        element: &'static str,
        /// Which package normally provides it.
        hint: &'static str,
    },
    /// The encoding pipeline failed while running.
    #[error("GStreamer pipeline writing {path} failed in element `{element}`: {message}")]
    GstPipeline {
        /// The MP4 being written.
        path: PathBuf,
        /// Name of the element that reported the error (or the operation that failed).
        element: String,
        /// Error text, including debug details where available.
        message: String,
    },
}

impl SynthError {
    /// Shorthand for an [`SynthError::Io`] error.
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        SynthError::Io {
            path: path.into(),
            source,
        }
    }
}
