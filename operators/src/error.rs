//! Typed operator errors; each names the model, file or stream it concerns and what to do.

use std::path::PathBuf;

/// Why a model could not be loaded or run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OperatorError {
    /// The model card is not valid TOML or breaks a rule.
    #[error("model card {path}: {message}")]
    ModelCard {
        /// The card.
        path: String,
        /// What is wrong, naming the key.
        message: String,
    },
    /// A card or ONNX file could not be read.
    #[error("model file {path}: {message} (check `model.card` in the config or --model; `models/` holds the shipped ones)")]
    ModelMissing {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        message: String,
    },
    /// The ONNX model does not match the input/output contract its card (and capflow) need.
    #[error("model {model}: {message}")]
    ModelContract {
        /// The model's origin.
        model: String,
        /// What does not match.
        message: String,
    },
    /// The ONNX Runtime library could not be loaded.
    #[error("ONNX Runtime library {path}: {message} (run `make setup`, or set ORT_DYLIB_PATH to libonnxruntime.so >= 1.23)")]
    RuntimeLibrary {
        /// Where it was looked for.
        path: PathBuf,
        /// The loader's message.
        message: String,
    },
    /// ONNX Runtime failed while creating a session or running the model.
    #[error("ONNX Runtime, model {model}: {message}")]
    Runtime {
        /// The model's origin.
        model: String,
        /// ONNX Runtime's message.
        message: String,
    },
}
