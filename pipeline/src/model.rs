//! Finding the model and the ONNX Runtime library a run uses.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use capflow_operators::model::Model;

/// A model compiled into the binary: its card and ONNX bytes from `models/`.
pub struct BuiltinModel {
    /// Name accepted by `model.card` and `--model`.
    pub name: &'static str,
    /// The card's TOML text.
    pub card: &'static str,
    /// The ONNX file's bytes.
    pub onnx: &'static [u8],
}

/// The models compiled into capflow; the first is the default (`builtin`).
pub const BUILTIN_MODELS: &[BuiltinModel] = &[
    BuiltinModel {
        name: "capillary-seg-v1",
        card: include_str!("../../models/capillary-seg-v1.toml"),
        onnx: include_bytes!("../../models/capillary-seg-v1.onnx"),
    },
    BuiltinModel {
        name: "capillary-classical-v1",
        card: include_str!("../../models/capillary-classical-v1.toml"),
        onnx: include_bytes!("../../models/capillary-classical-v1.onnx"),
    },
];

/// The built-in model a `model.card` value names, if it names one.
fn builtin(card: &str) -> Option<&'static BuiltinModel> {
    let name = match card {
        "builtin" | "learned" => "capillary-seg-v1",
        "classical" => "capillary-classical-v1",
        other => other.strip_prefix("builtin:").unwrap_or(other),
    };
    BUILTIN_MODELS.iter().find(|m| m.name == name)
}

/// Whether `card` names a built-in model rather than a card file.
pub fn is_builtin(card: &str) -> bool {
    builtin(card).is_some()
}

/// Loads a built-in model by name (`builtin` = the default, the learned `capillary-seg-v1`;
/// `classical` = `capillary-classical-v1`) or a model card path.
pub fn load_model(card: &str) -> anyhow::Result<Model> {
    if let Some(builtin) = builtin(card) {
        return Model::from_parts(
            builtin.card,
            builtin.onnx,
            &format!("builtin:{}", builtin.name),
        )
        .with_context(|| {
            format!(
                "the built-in model card {} is invalid (a build problem)",
                builtin.name
            )
        });
    }
    Model::load(Path::new(card)).with_context(|| {
        format!(
            "loading model card {card} (built-in models: builtin, learned, classical, {})",
            BUILTIN_MODELS
                .iter()
                .map(|m| m.name)
                .collect::<Vec<_>>()
                .join(", ")
        )
    })
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

/// Hex SHA-256 of what in a model shapes its results: the ONNX file and the card's input contract, output and
/// post-processing (not its version, description, limitations, metrics or provenance). Part of a run's job
/// fingerprint, so an output written with one model refuses a re-run or resume with another (a new card under the
/// same `builtin` name, or an edited card or ONNX file at the same path) instead of keeping the old model's parts
/// beside the new one's.
pub fn model_fingerprint(model: &Model) -> String {
    #[derive(serde::Serialize)]
    struct Shaping<'a> {
        name: &'a str,
        input: &'a capflow_operators::model::InputSpec,
        output: &'a capflow_operators::model::OutputSpec,
        postprocess: &'a capflow_operators::model::PostprocessSpec,
        onnx_sha256: String,
    }
    let card = &model.card;
    let view = Shaping {
        name: &card.name,
        input: &card.input,
        output: &card.output,
        postprocess: &card.postprocess,
        onnx_sha256: capflow_sinks::commit::sha256_hex(&model.onnx),
    };
    let json = serde_json::to_vec(&view).expect("a model card always serialises");
    capflow_sinks::commit::sha256_hex(&json)
}

/// `capflow model inspect`: a model's card and the tensors ONNX Runtime finds in its file, as text.
///
/// Opening a session checks the file against the card the way a run does, so a model that would fail a run fails
/// here with the same message.
pub fn inspect(card: &str, ort: Option<&Path>) -> anyhow::Result<String> {
    use std::fmt::Write as _;

    let model = load_model(card)?;
    let library = ort_library(ort)?;
    let env = capflow_operators::ort_environment(&library)?;
    let segmenter = capflow_operators::Segmenter::new(&env, &model, 1)?;
    let (inputs, outputs) = segmenter.signature();
    let c = &model.card;
    let mut out = String::new();
    let digest = capflow_sinks::commit::sha256_hex(&model.onnx);
    // Writing to a String cannot fail.
    let _ = writeln!(
        out,
        "model   {} {} ({}), from {}",
        c.name, c.version, c.kind, model.origin
    );
    let _ = writeln!(
        out,
        "onnx    {} ({} bytes, sha256 {digest})",
        c.onnx,
        model.onnx.len()
    );
    let _ = writeln!(out, "about   {}", c.description.trim());
    for i in &inputs {
        let _ = writeln!(out, "input   {i}");
    }
    for o in &outputs {
        let _ = writeln!(out, "output  {o}");
    }
    let channels: Vec<String> = c
        .input
        .channels
        .iter()
        .map(|ch| format!("{ch:?}").to_lowercase())
        .collect();
    let range = c
        .input
        .um_per_px_range
        .map(|[lo, hi]| format!(", frames kept within {lo}-{hi} µm/px"))
        .unwrap_or_default();
    let _ = writeln!(
        out,
        "frames  {} channels [{}], (x·{} − {}) / {}; resized to {} µm/px{range}; padded to a multiple of {}, at \
         least {} px",
        c.input.layout,
        channels.join(", "),
        c.input.scale,
        c.input.mean,
        c.input.std,
        c.input.um_per_px,
        c.input.pad_multiple,
        c.input.min_size
    );
    let _ = writeln!(
        out,
        "mask    {} > {}; capillaries of {}-{} µm²",
        c.output.meaning.trim(),
        c.output.threshold,
        c.postprocess.min_area_um2,
        c.postprocess.max_area_um2
    );
    for limitation in &c.limitations {
        let _ = writeln!(out, "limit   {limitation}");
    }
    // The card's free-form tables, as TOML under their own names.
    let mut tables = toml::Table::new();
    for (title, table) in [("metrics", &c.metrics), ("provenance", &c.provenance)] {
        if !table.is_empty() {
            tables.insert(title.into(), toml::Value::Table(table.clone()));
        }
    }
    let _ = write!(
        out,
        "{}",
        toml::to_string_pretty(&tables).unwrap_or_default()
    );
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_model_fingerprint_follows_what_shapes_results_only() {
        let learned = load_model("builtin").unwrap();
        assert_eq!(
            model_fingerprint(&learned),
            model_fingerprint(&load_model("learned").unwrap())
        );
        assert_ne!(
            model_fingerprint(&learned),
            model_fingerprint(&load_model("classical").unwrap())
        );
        // Words about the model do not change its results; its pixel-size range and its weights do.
        let mut described = learned.clone();
        described.card.description.push_str(" More words.");
        described.card.version = "9.9.9".into();
        assert_eq!(model_fingerprint(&described), model_fingerprint(&learned));
        let mut coarser = learned.clone();
        coarser.card.input.um_per_px_range = Some([2.0, 4.5]);
        assert_ne!(model_fingerprint(&coarser), model_fingerprint(&learned));
        let mut retrained = learned.clone();
        retrained.onnx[100] ^= 1;
        assert_ne!(model_fingerprint(&retrained), model_fingerprint(&learned));
    }

    #[test]
    fn built_in_names_resolve_and_the_default_is_the_learned_model() {
        assert_eq!(load_model("builtin").unwrap().card.name, "capillary-seg-v1");
        assert_eq!(load_model("learned").unwrap().card.kind, "learned");
        assert_eq!(
            load_model("classical").unwrap().card.name,
            "capillary-classical-v1"
        );
        assert_eq!(
            load_model("builtin:capillary-classical-v1").unwrap().origin,
            "builtin:capillary-classical-v1"
        );
        assert!(is_builtin("capillary-seg-v1") && !is_builtin("models/x.toml"));
        let err = format!("{:#}", load_model("no/such/card.toml").unwrap_err());
        assert!(
            err.contains("no/such/card.toml") && err.contains("classical"),
            "{err}"
        );
    }
}
