//! Ingest: microscope video in, plain frames out.
//!
//! capflow reads every kind of input through GStreamer so that one code path handles H.264/H.265 MP4, MKV, AVI with
//! MJPEG, image sequences and network URIs. A [`Source`] owns one GStreamer pipeline ending in an `appsink` with a
//! bounded queue, and hands out [`Frame`]s: tightly packed pixels (stride padding removed) tagged with the stream,
//! patient, frame index and presentation timestamp. Pulling is blocking, so a slow consumer holds the decoder back
//! instead of buffering without bound (archive replay must never drop frames).
//! A frame's bytes ([`FrameData`]) go back to its source when the frame is dropped and the next frame is packed into
//! them, so a long run does not allocate (and fault in) a fresh frame buffer for every frame.
//!
//! ```no_run
//! use std::sync::Arc;
//! use capflow_ingest::{PixelFormat, Source, SourceOptions, StreamInfo};
//!
//! capflow_ingest::init()?;
//! let info = Arc::new(StreamInfo::new("p1-forearm", "p1", "forearm", 2.2));
//! let mut source = Source::open("clip.mp4", info, &SourceOptions { format: PixelFormat::Rgb8, ..Default::default() })?;
//! while let Some(frame) = source.next_frame()? {
//!     println!("frame {} at {} ns: {}x{}", frame.index, frame.pts_ns, frame.width, frame.height);
//! }
//! # Ok::<(), capflow_ingest::IngestError>(())
//! ```

pub mod backoff;
mod error;
pub mod events;
mod frame;
pub mod limits;
mod luma;
pub mod pool;
pub mod queue;
pub mod reader;
mod sequence;
mod source;
pub mod synthetic;

pub use backoff::Backoff;
pub use error::IngestError;
pub use events::{EventKind, StreamEvent};
pub use frame::{Frame, PixelFormat, StreamInfo};
pub use limits::FrameLimits;
pub use pool::{FrameData, FramePool};
pub use queue::{DropPolicy, FrameQueue, Popped};
pub use reader::{ReaderOptions, StreamMode, StreamReader};
pub use sequence::list_images;
pub use source::{Resize, Source, SourceOptions};

/// Initialises GStreamer once per process; cheap to call again.
pub fn init() -> Result<(), IngestError> {
    gstreamer::init().map_err(|e| IngestError::Init(e.to_string()))
}
