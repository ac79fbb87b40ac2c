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
    /// The model's output holds NaN or infinite values, which no threshold can read: the model is broken or does
    /// not fit the frames.
    #[error(
        "model {model}: its output {output:?} holds {count} NaN or infinite value(s) among {total} (first: {first}); \
         the model is broken or does not fit these frames, so their measures would be garbage (check it with \
         `capflow model inspect` and `capflow eval`, or choose another model.card)"
    )]
    NonFiniteOutput {
        /// The model's origin.
        model: String,
        /// The output tensor's name.
        output: String,
        /// Values that are NaN or infinite.
        count: usize,
        /// Values in the output.
        total: usize,
        /// The first such value (NaN, inf or -inf).
        first: f32,
    },
    /// A frame's pixels do not fit its width, height and format, or its size cannot be segmented.
    #[error("frame {width}x{height}: {message}")]
    BadFrame {
        /// Width as given.
        width: usize,
        /// Height as given.
        height: usize,
        /// What is wrong.
        message: String,
    },
}
