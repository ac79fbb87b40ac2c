//! Finding the model and the ONNX Runtime library a run uses.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use capflow_operators::model::Model;

/// Card of the model compiled into capflow (the classical detector in `models/`).
pub const BUILTIN_CARD: &str = include_str!("../../models/capillary-classical-v1.toml");
/// ONNX bytes of the built-in model.
pub const BUILTIN_ONNX: &[u8] = include_bytes!("../../models/capillary-classical-v1.onnx");

/// Loads `builtin` or a model card path.
pub fn load_model(card: &str) -> anyhow::Result<Model> {
    if card == "builtin" {
        return Model::from_parts(BUILTIN_CARD, BUILTIN_ONNX, "builtin:capillary-classical-v1")
            .context("the built-in model card is invalid (a build problem)");
    }
    Model::load(Path::new(card)).with_context(|| format!("loading model card {card}"))
}

/// The ONNX Runtime library: the configured path, else `ORT_DYLIB_PATH`, else where `make setup` puts it
/// (`.deps/onnxruntime/` beside the binary's workspace or under the current directory).
pub fn ort_library(configured: Option<&Path>) -> anyhow::Result<PathBuf> {
    if let Some(path) = configured {
        return Ok(path.to_owned());
    }
    if let Some(path) = std::env::var_os("ORT_DYLIB_PATH") {
        return Ok(PathBuf::from(path));
    }
    let mut candidates = Vec::new();
    if let Ok(exe) = std::env::current_exe() {
        // target/<profile>/capflow → workspace root
        for ancestor in exe.ancestors().skip(1).take(4) {
            candidates.push(ancestor.join(".deps/onnxruntime/libonnxruntime.so"));
        }
    }
    candidates.push(PathBuf::from(".deps/onnxruntime/libonnxruntime.so"));
    if let Some(found) = candidates.iter().find(|p| p.is_file()) {
        return Ok(found.clone());
    }
    bail!(
        "ONNX Runtime library not found (looked in ORT_DYLIB_PATH and {}); run `make setup`, or set \
         ORT_DYLIB_PATH / model.ort_library to a libonnxruntime.so >= 1.23",
        candidates.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")
    )
}
