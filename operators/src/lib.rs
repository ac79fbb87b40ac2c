//! capflow's dataflow operators and the pure image/metric code they call.
//!
//! The per-frame path is `preprocess` (channel, resize, normalise) → [`Segmenter`] (ONNX Runtime) → `metrics`
//! (threshold, connected components, count, area fraction, density). The per-patient path turns frame measures
//! into tumbling or sliding event-time windows with differential dataflow ([`PatientWindows`]), closes each window once
//! ([`CloseWindows`]) and groups rows into deterministic parts for the sinks ([`WriteParts`]). [`Evidence`] picks
//! each window's first segmented frame and renders it with the vessels drawn (`overlay`) for the evidence images.
//!
//! Every operator is a small extension trait over a timely stream; the maths lives in plain functions so it is
//! tested without a dataflow:
//!
//! ```
//! use capflow_operators::metrics::{measure, MetricParams};
//!
//! // A 4x4 probability map at 1 µm/px with one 2x2 capillary.
//! let mut prob = vec![0.0f32; 16];
//! for i in [5, 6, 9, 10] { prob[i] = 0.9; }
//! let params = MetricParams { threshold: 0.5, link_threshold: 0.5, min_area_um2: 2.0, max_area_um2: 100.0 };
//! let m = measure(&prob, 4, 4, 1.0, &params);
//! assert_eq!(m.capillary_count, 1);
//! assert_eq!(m.area_fraction, 0.25);
//! ```

pub mod analyse_flow;
pub mod close_windows;
pub mod components;
pub mod drift;
mod error;
pub mod evidence;
mod exact;
pub mod flow;
pub mod inference;
pub mod metrics;
pub mod model;
pub mod native;
mod ordf64;
pub mod overlay;
pub mod preprocess;
pub mod quality;
pub mod records;
pub mod scores;
pub mod segment;
pub mod segmenter;
pub mod stabilise;
pub mod vessels;
pub mod windows;
pub mod write_parts;

pub use analyse_flow::AnalyseFlow;
pub use close_windows::CloseWindows;
pub use error::OperatorError;
pub use evidence::{Evidence, EvidenceImage};
pub use exact::Exact;
pub use ordf64::OrdF64;
pub use segment::{Analysed, Segment, SegmentParams, SegmentShared, SegmentationConfig};
pub use segmenter::{ort_environment, ProbPlane, Segmenter, SessionSettings};
pub use stabilise::Stabilise;
pub use windows::{PatientWindows, WindowSpec};
pub use write_parts::{Part, PartKey, WriteParts};
