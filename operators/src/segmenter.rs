//! ONNX Runtime session wrapper: one per timely worker (running a session needs `&mut`).

use std::ops::Deref;
use std::path::Path;

use ort::environment::Environment;
use ort::session::Session;
use ort::value::{DynValue, TensorRef, ValueType};

use crate::model::Model;
use crate::preprocess::ModelInput;
use crate::OperatorError;

/// Loads the ONNX Runtime shared library at `library` and creates the process's one environment.
///
/// ort panics on first use when the library is missing; checking the path first turns that into an error that says
/// how to fix it.
pub fn ort_environment(library: &Path) -> Result<Environment, OperatorError> {
    let lib_error = |message: String| OperatorError::RuntimeLibrary {
        path: library.to_owned(),
        message,
    };
    if !library.is_file() {
        return Err(lib_error("file not found".into()));
    }
    let builder = ort::init_from(library).map_err(|e| lib_error(e.to_string()))?;
    builder
        .with_name("capflow")
        .build()
        .map_err(|e| lib_error(e.to_string()))
}

/// Fails when a model output holds NaN or infinite values: thresholding them would silently count nothing (NaN
/// compares false) or everything (+inf), and write plausible-looking garbage rows.
pub fn check_finite(values: &[f32], model: &str, output: &str) -> Result<(), OperatorError> {
    let Some(first) = values.iter().copied().find(|v| !v.is_finite()) else {
        return Ok(());
    };
    Err(OperatorError::NonFiniteOutput {
        model: model.to_owned(),
        output: output.to_owned(),
        count: values.iter().filter(|v| !v.is_finite()).count(),
        total: values.len(),
        first,
    })
}

/// How an ONNX Runtime session uses the CPU.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SessionSettings {
    /// Intra-op threads (at least 1 is used).
    pub intra_threads: usize,
    /// Whether idle intra-op threads spin-wait for the next job instead of sleeping. ONNX Runtime spins by default,
    /// which pays off only when inference has the cores to itself: in capflow decoding, preprocessing and flow run
    /// between inferences on the same cores, and spinning threads take their CPU (a 1080p frame cost 41.5 CPU-ms
    /// spinning against 32.7 ms not, on this project's 2-core machine; `docs/benchmarks.md`).
    pub spinning: bool,
}

impl SessionSettings {
    /// `intra_threads` threads that sleep when idle.
    pub fn threads(intra_threads: usize) -> Self {
        SessionSettings {
            intra_threads,
            spinning: false,
        }
    }
}

/// A checked ONNX segmentation session: input `[N, C, H, W]` f32 in, probability `[N, 1, H, W]` f32 out.
pub struct Segmenter {
    session: Session,
    model: String,
    input_name: String,
    output_name: String,
    channels: usize,
}

/// One input or output tensor of a model.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TensorSignature {
    /// Tensor name.
    pub name: String,
    /// Element type, e.g. `float32`.
    pub element: String,
    /// Dimensions; -1 is dynamic.
    pub shape: Vec<i64>,
}

impl std::fmt::Display for TensorSignature {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {} {:?}", self.name, self.element, self.shape)
    }
}

impl std::fmt::Debug for Segmenter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Segmenter")
            .field("model", &self.model)
            .finish()
    }
}

impl Segmenter {
    /// Creates a session with `intra_threads` threads (sleeping when idle) and checks the model against its card.
    pub fn new(
        env: &Environment,
        model: &Model,
        intra_threads: usize,
    ) -> Result<Segmenter, OperatorError> {
        Segmenter::with_settings(env, model, SessionSettings::threads(intra_threads))
    }

    /// Creates a session with explicit CPU settings and checks the model against its card.
    pub fn with_settings(
        env: &Environment,
        model: &Model,
        settings: SessionSettings,
    ) -> Result<Segmenter, OperatorError> {
        let runtime = |message: String| OperatorError::Runtime {
            model: model.origin.clone(),
            message,
        };
        let contract = |message: String| OperatorError::ModelContract {
            model: model.origin.clone(),
            message,
        };
        let mut builder = Session::builder(env).map_err(|e| runtime(e.to_string()))?;
        builder = builder
            .with_intra_threads(settings.intra_threads.max(1))
            .map_err(|e| runtime(e.to_string()))?;
        builder = builder
            .with_inter_threads(1)
            .map_err(|e| runtime(e.to_string()))?;
        builder = builder
            .with_intra_op_spinning(settings.spinning)
            .map_err(|e| runtime(e.to_string()))?;
        let session = builder
            .commit_from_memory(&model.onnx)
            .map_err(|e| runtime(e.to_string()))?;

        let card = &model.card;
        let channels = card.input.channels.len();
        let input = session
            .inputs()
            .iter()
            .find(|i| i.name() == card.input.name)
            .ok_or_else(|| {
                contract(format!(
                    "has no input named {:?} as its card says (input.name)",
                    card.input.name
                ))
            })?;
        match input.dtype() {
            ValueType::Tensor { ty, shape, .. } => {
                let dims: &[i64] = shape;
                let ok_dim = |d: i64, want: i64| d == -1 || d == want;
                if dims.len() != 4
                    || !ok_dim(dims[1], channels as i64)
                    || *ty != ort::value::TensorElementType::Float32
                {
                    return Err(contract(format!(
                        "input {:?} is {ty:?} {dims:?}; capflow needs float32 [N, {channels}, H, W] \
                         ({channels} channel(s) as input.channels in the card says; -1 = dynamic)",
                        card.input.name
                    )));
                }
            }
            other => {
                return Err(contract(format!(
                    "input {:?} is {other:?}, not a tensor",
                    card.input.name
                )))
            }
        }
        if !session
            .outputs()
            .iter()
            .any(|o| o.name() == card.output.name)
        {
            return Err(contract(format!(
                "has no output named {:?} as its card says (output.name)",
                card.output.name
            )));
        }
        Ok(Segmenter {
            session,
            model: model.origin.clone(),
            input_name: card.input.name.clone(),
            output_name: card.output.name.clone(),
            channels,
        })
    }

    /// The model's input and output tensors as ONNX Runtime sees them: name, element type and shape (-1 = dynamic).
    pub fn signature(&self) -> (Vec<TensorSignature>, Vec<TensorSignature>) {
        let describe = |name: &str, value: &ValueType| match value {
            ValueType::Tensor { ty, shape, .. } => TensorSignature {
                name: name.to_owned(),
                element: format!("{ty:?}").to_lowercase(),
                shape: shape.iter().copied().collect(),
            },
            other => TensorSignature {
                name: name.to_owned(),
                element: format!("{other:?}"),
                shape: Vec::new(),
            },
        };
        (
            self.session
                .inputs()
                .iter()
                .map(|i| describe(i.name(), i.dtype()))
                .collect(),
            self.session
                .outputs()
                .iter()
                .map(|o| describe(o.name(), o.dtype()))
                .collect(),
        )
    }

    /// Runs one batch of same-sized inputs and returns one probability plane (`height * width`) per input.
    ///
    /// The model reads the inputs' planes where they are (one input) or from one copy of them side by side (several),
    /// so the caller keeps them, to fill again for the next frame.
    pub fn run(&mut self, batch: &[&ModelInput]) -> Result<Vec<ProbPlane>, OperatorError> {
        let Some(first) = batch.first() else {
            return Ok(Vec::new());
        };
        let (h, w) = (first.height, first.width);
        if batch.iter().any(|i| i.height != h || i.width != w) {
            return Err(OperatorError::Runtime {
                model: self.model.clone(),
                message: "a batch mixes input sizes".into(),
            });
        }
        if let [one] = batch {
            return self.run_planes(&one.data, 1, h, w);
        }
        let mut data = Vec::with_capacity(batch.len() * self.channels * h * w);
        for input in batch {
            data.extend_from_slice(&input.data);
        }
        self.run_planes(&data, batch.len(), h, w)
    }

    /// Runs the model on `n` inputs of `h × w` whose planes are concatenated in `data`.
    fn run_planes(
        &mut self,
        data: &[f32],
        n: usize,
        h: usize,
        w: usize,
    ) -> Result<Vec<ProbPlane>, OperatorError> {
        let runtime = |message: String| OperatorError::Runtime {
            model: self.model.clone(),
            message,
        };
        if data.len() != n * self.channels * h * w {
            return Err(runtime(format!(
                "{} input values for {n} input(s) of {} channel(s) of {h}x{w}",
                data.len(),
                self.channels
            )));
        }
        let shape = [n, self.channels, h, w];
        let tensor =
            TensorRef::from_array_view((shape, data)).map_err(|e| runtime(e.to_string()))?;
        let mut outputs = self
            .session
            .run(ort::inputs![self.input_name.as_str() => tensor])
            .map_err(|e| OperatorError::Runtime {
                model: self.model.clone(),
                message: e.to_string(),
            })?;
        let output = outputs
            .remove(self.output_name.as_str())
            .ok_or_else(|| runtime(format!("returned no output {:?}", self.output_name)))?;
        let (out_shape, values) =
            output
                .try_extract_tensor::<f32>()
                .map_err(|e| OperatorError::Runtime {
                    model: self.model.clone(),
                    message: e.to_string(),
                })?;
        let plane = h * w;
        if values.len() != n * plane {
            return Err(OperatorError::ModelContract {
                model: self.model.clone(),
                message: format!(
                    "output shape {:?} is not [{n}, 1, {h}, {w}]",
                    &out_shape[..]
                ),
            });
        }
        check_finite(values, &self.model, &self.output_name)?;
        if n == 1 {
            return Ok(vec![ProbPlane(PlaneData::Tensor(output))]);
        }
        Ok(values
            .chunks_exact(plane)
            .map(|p| ProbPlane::from(p.to_vec()))
            .collect())
    }
}

/// One frame's probability plane (`height * width` values, row-major), read as a slice.
///
/// For a batch of one (the default) it is ONNX Runtime's output tensor itself, handed on without a copy: copying it
/// out cost an inference thread 0.7–0.8 ms per 1080p working frame (2.4 MB), about 4 % of the model's time. A frame
/// of a larger batch gets a copy of its share of the batch's tensor.
#[derive(Debug)]
pub struct ProbPlane(PlaneData);

#[derive(Debug)]
enum PlaneData {
    /// A whole output tensor of one frame, already checked to hold `f32` values.
    Tensor(DynValue),
    Owned(Vec<f32>),
}

impl Deref for ProbPlane {
    type Target = [f32];

    fn deref(&self) -> &[f32] {
        match &self.0 {
            PlaneData::Tensor(value) => value
                .try_extract_tensor::<f32>()
                .map(|(_, values)| values)
                .expect("a plane's tensor was read as f32 when the plane was made"),
            PlaneData::Owned(values) => values,
        }
    }
}

impl From<Vec<f32>> for ProbPlane {
    fn from(values: Vec<f32>) -> Self {
        ProbPlane(PlaneData::Owned(values))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn non_finite_outputs_are_errors_naming_the_model() {
        assert!(check_finite(&[0.0, 0.5, 1.0], "m.toml", "prob").is_ok());
        let err = check_finite(&[0.0, f32::NAN, f32::INFINITY, 1.0], "nan.toml", "prob")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("nan.toml") && err.contains("2 NaN or infinite value(s) among 4"),
            "{err}"
        );
        assert!(check_finite(&[f32::NEG_INFINITY], "m", "prob").is_err());
    }
}
