//! Deterministic synthetic capillary microscopy video with exact ground truth.
//!
//! `capflow-synth` renders clips that look like skin capillaroscopy (pale textured skin with
//! small red/purple dots, commas and hairpin loops) or sublingual SDF/IDF video (grey
//! capillary networks and venules), with red cells flowing in perfused vessels, whole-field
//! drift, blur and sensor noise. Every frame comes with its lumen mask and measurements
//! (capillary count = connected components of the mask, area fraction, visible centre-line
//! length), and every vessel with its kind, diameter, length, perfusion and velocity.
//!
//! Everything is a pure function of the [`SynthSpec`] (including its `seed`): the crate uses
//! its own small PRNG, so frames never change with dependency versions. Rendering
//! ([`Renderer`]) is separate from I/O ([`write_clip`], [`Mp4Writer`]).
//!
//! ```
//! use capflow_synth::{count_components, Renderer, SynthSpec};
//!
//! let spec = SynthSpec {
//!     width: 320,
//!     height: 180,
//!     capillaries: 8,
//!     drift_px_per_frame: [0.0, 0.0], // with drift the scene is larger and holds more vessels
//!     ..SynthSpec::default()
//! };
//! let mut renderer = Renderer::new(&spec)?;
//! let frame = renderer.render(0);
//! assert_eq!(frame.rgb.len(), 320 * 180 * 3);
//! assert_eq!(frame.truth.capillary_count, count_components(&frame.mask, 320, 180, 1));
//! assert_eq!(renderer.vessels().len(), 8);
//! # Ok::<(), capflow_synth::SynthError>(())
//! ```
//!
//! To write a clip (`demo.mp4`, truth CSVs and `spec.json`):
//!
//! ```no_run
//! use capflow_synth::{write_clip, Outputs, SynthSpec};
//!
//! let spec = SynthSpec::preset("sublingual").unwrap();
//! let written = write_clip(&spec, std::path::Path::new("/tmp/synth"), "demo", &Outputs::default())?;
//! println!("{:?}: {} frames", written.mp4, written.frames);
//! # Ok::<(), capflow_synth::SynthError>(())
//! ```

mod artefacts;
mod background;
mod clip;
mod dataset;
mod encode;
mod error;
mod flow;
mod noise;
mod png_out;
mod randomize;
mod raster;
mod render;
mod rng;
mod scene;
mod spec;
mod truth;

pub use clip::{frames_csv, vessels_csv, write_clip, ClipWritten, Outputs};
pub use dataset::{
    dataset_item_seed, render_still, write_dataset, DatasetItem, DATASET_CSV_HEADER,
};
pub use encode::{gst_init, Mp4Writer, X264_QUANTIZER};
pub use error::SynthError;
pub use png_out::{write_gray_png, write_rgb_png};
pub use randomize::randomized;
pub use render::{RenderedFrame, Renderer};
pub use spec::{Artefacts, Look, SynthSpec};
pub use truth::{count_components, FrameTruth, VesselTruth, MIN_COMPONENT_PIXELS};
