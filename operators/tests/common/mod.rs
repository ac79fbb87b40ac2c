//! Fixtures shared by the integration tests that run the real ONNX Runtime on the shipped classical model.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use capflow_ingest::{Frame, PixelFormat, StreamInfo};
use capflow_operators::model::Model;
use capflow_synth::{Renderer, SynthSpec};

/// The ONNX Runtime library `make setup` installs, or `ORT_DYLIB_PATH`.
pub fn ort_library() -> PathBuf {
    std::env::var_os("ORT_DYLIB_PATH")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../.deps/onnxruntime/libonnxruntime.so")
        })
}

/// The shipped classical model: small and fast, so the tests measure the operators, not the network.
pub fn classical_model() -> Model {
    Model::load(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/capillary-classical-v1.toml"),
    )
    .expect("the shipped model card loads")
}

/// Frame 0 of a generated skin clip of `width`×`height` drawn from `seed`, as stream "s" of patient "p".
pub fn skin_frame(width: u32, height: u32, seed: u64) -> Frame {
    let mut spec = SynthSpec::preset("skin").unwrap();
    (spec.width, spec.height, spec.frames, spec.seed) = (width, height, 1, seed);
    Frame {
        stream: Arc::new(StreamInfo::new("s", "p", "forearm", spec.um_per_px)),
        index: 0,
        pts_ns: 0,
        width: spec.width,
        height: spec.height,
        source_width: spec.width,
        source_height: spec.height,
        format: PixelFormat::Rgb8,
        data: Renderer::new(&spec).unwrap().render(0).rgb.into(),
    }
}
