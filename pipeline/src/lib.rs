//! capflow: streaming capillary microscopy analysis.
//!
//! GStreamer decodes microscope video ([`capflow_ingest`]); a timely dataflow segments every frame with an ONNX
//! model and measures it ([`capflow_operators`]); differential dataflow aggregates the measures per patient over
//! event-time windows; Arrow/Parquet tables land on object storage ([`capflow_sinks`]). This crate holds the
//! configuration, the graph assembly and the `capflow` command line.
//!
//! ```no_run
//! use capflow::config::{parse, DEFAULT_CONFIG};
//! use capflow::run::{run, ClusterArgs, RunOptions};
//!
//! let mut config = parse(DEFAULT_CONFIG, "default").unwrap();
//! config.output.location = "/tmp/capflow-demo".into();
//! let cluster = ClusterArgs { workers: 2, ..Default::default() };
//! // `resume: true` continues a job a crash or outage interrupted; committed parts are not written again.
//! let outcome = run(&config, &cluster, &RunOptions::default())?;
//! println!("{} parts committed to {}", outcome.parts.len(), outcome.output);
//! # Ok::<(), anyhow::Error>(())
//! ```

pub mod annotate;
pub mod bench;
pub mod cluster;
pub mod config;
pub mod eval;
pub mod http;
pub mod imageio;
pub mod logging;
mod manifest;
pub mod model;
pub mod monitor;
pub mod progress;
pub mod report;
pub mod run;
pub mod synth_cmd;
