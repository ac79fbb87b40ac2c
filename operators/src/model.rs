//! Model cards: what a segmentation model expects and what its output means, read from TOML next to the ONNX file.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::metrics::MetricParams;
use crate::OperatorError;

/// A model card (see `models/*.toml`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelCard {
    /// Model name, e.g. `capillary-classical-v1`.
    pub name: String,
    /// Semantic version of the model.
    pub version: String,
    /// How it was made (`classical-onnx-graph`, `learned`).
    pub kind: String,
    /// ONNX file, relative to the card.
    pub onnx: String,
    /// What the model does.
    pub description: String,
    /// Known limitations.
    #[serde(default)]
    pub limitations: Vec<String>,
    /// Input tensor contract.
    pub input: InputSpec,
    /// Output tensor contract.
    pub output: OutputSpec,
    /// Recommended post-processing.
    pub postprocess: PostprocessSpec,
    /// Where the model came from.
    #[serde(default)]
    pub provenance: toml::Table,
    /// Measured accuracy and speed (free-form, e.g. `capflow eval` results per modality).
    #[serde(default)]
    pub metrics: toml::Table,
}

/// Input tensor contract of a model card.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InputSpec {
    /// Input tensor name.
    pub name: String,
    /// Tensor layout; only `NCHW` is supported.
    pub layout: String,
    /// One entry per input channel: `green` (green of RGB; luma of grayscale frames) or `luma`.
    pub channels: Vec<Channel>,
    /// Multiplier applied to 8-bit values.
    pub scale: f32,
    /// Subtracted after scaling.
    pub mean: f32,
    /// Divided after subtracting the mean.
    pub std: f32,
    /// Pixel size the model was made for; frames are resized to it (or into `um_per_px_range`).
    pub um_per_px: f64,
    /// Pixel sizes the model was trained on, `[finest, coarsest]` µm per pixel. When present, frames
    /// already within it keep their pixel size and others are resized to the nearest end, instead of
    /// always resizing to `um_per_px`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub um_per_px_range: Option<[f64; 2]>,
    /// Largest working frame in megapixels: larger frames are downscaled further (never coarser than
    /// the range allows). Bounds the cost per frame, which grows with its pixel count; overridable in
    /// the run config (`model.max_megapixels`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_megapixels: Option<f64>,
    /// Smallest height/width the model handles.
    pub min_size: u32,
    /// Height and width are padded up to a multiple of this.
    pub pad_multiple: u32,
}

/// An input channel a model can ask for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Channel {
    /// Green of RGB frames (haemoglobin absorbs green, so capillaries are darkest there); luma of grayscale frames.
    Green,
    /// Luma (BT.601) of RGB frames; the frame itself when grayscale.
    Luma,
    /// How much redder than green a pixel is, `clamp(2(R-G)/(R+G+1), 0, 1)` × 255; 0 for grayscale
    /// frames. Tells a red capillary from an equally dark hair or shadow.
    Redness,
}

/// Output tensor contract of a model card.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutputSpec {
    /// Output tensor name.
    pub name: String,
    /// What the values mean.
    pub meaning: String,
    /// Probability above which a pixel is capillary.
    pub threshold: f32,
}

/// Recommended component filter for counting capillaries.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PostprocessSpec {
    /// Smallest capillary, µm².
    pub min_area_um2: f64,
    /// Largest capillary, µm².
    pub max_area_um2: f64,
    /// Hysteresis threshold that links pieces of one capillary (see [`MetricParams::link_threshold`]); absent:
    /// plain components at `output.threshold`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link_threshold: Option<f32>,
}

/// A card together with its ONNX bytes.
#[derive(Clone, Debug)]
pub struct Model {
    /// The card.
    pub card: ModelCard,
    /// The ONNX file's bytes.
    pub onnx: Vec<u8>,
    /// Where it came from (a card path, or `builtin:<name>`).
    pub origin: String,
}

impl ModelCard {
    /// The counting rule the card recommends.
    pub fn metric_params(&self) -> MetricParams {
        MetricParams {
            threshold: self.output.threshold,
            link_threshold: self
                .postprocess
                .link_threshold
                .unwrap_or(self.output.threshold),
            min_area_um2: self.postprocess.min_area_um2,
            max_area_um2: self.postprocess.max_area_um2,
        }
    }

    /// Parses and validates a card; `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> Result<ModelCard, OperatorError> {
        let card: ModelCard = toml::from_str(text).map_err(|e| OperatorError::ModelCard {
            path: origin.to_owned(),
            message: e.to_string(),
        })?;
        card.validate(origin)?;
        Ok(card)
    }

    fn validate(&self, origin: &str) -> Result<(), OperatorError> {
        let mut problems = Vec::new();
        if self.input.layout != "NCHW" {
            problems.push(format!(
                "input.layout is {:?}; only \"NCHW\" is supported",
                self.input.layout
            ));
        }
        if self.input.channels.is_empty() {
            problems.push("input.channels must list at least one channel".to_owned());
        }
        if self.input.um_per_px.is_nan() || self.input.um_per_px <= 0.0 {
            problems.push("input.um_per_px must be > 0".to_owned());
        }
        if let Some([lo, hi]) = self.input.um_per_px_range {
            if !(lo > 0.0 && hi >= lo) {
                problems.push(
                    "input.um_per_px_range must be [finest, coarsest] with 0 < finest <= coarsest"
                        .to_owned(),
                );
            }
        }
        if let Some(mp) = self.input.max_megapixels {
            if mp.is_nan() || mp <= 0.0 {
                problems.push("input.max_megapixels must be > 0".to_owned());
            }
        }
        if self.input.std == 0.0 {
            problems.push("input.std must not be 0".to_owned());
        }
        if self.input.pad_multiple == 0 {
            problems.push("input.pad_multiple must be >= 1".to_owned());
        }
        if !(0.0..=1.0).contains(&self.output.threshold) {
            problems.push("output.threshold must be within 0..=1".to_owned());
        }
        if let Some(link) = self.postprocess.link_threshold {
            if !(link > 0.0 && link <= self.output.threshold) {
                problems.push(
                    "postprocess.link_threshold must be above 0 and at most output.threshold"
                        .to_owned(),
                );
            }
        }
        let (min, max) = (self.postprocess.min_area_um2, self.postprocess.max_area_um2);
        if min.is_nan() || max.is_nan() || min < 0.0 || max <= min {
            problems.push("postprocess needs 0 <= min_area_um2 < max_area_um2".to_owned());
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(OperatorError::ModelCard {
                path: origin.to_owned(),
                message: problems.join("; "),
            })
        }
    }
}

impl Model {
    /// Loads a card from a `.toml` path and the ONNX file it names (relative to the card).
    pub fn load(card_path: &Path) -> Result<Model, OperatorError> {
        let origin = card_path.display().to_string();
        let text = std::fs::read_to_string(card_path).map_err(|e| OperatorError::ModelMissing {
            path: card_path.to_owned(),
            message: e.to_string(),
        })?;
        let card = ModelCard::parse(&text, &origin)?;
        let onnx_path: PathBuf = card_path
            .parent()
            .unwrap_or(Path::new("."))
            .join(&card.onnx);
        let onnx = std::fs::read(&onnx_path).map_err(|e| OperatorError::ModelMissing {
            path: onnx_path.clone(),
            message: e.to_string(),
        })?;
        Ok(Model { card, onnx, origin })
    }

    /// A model whose card and bytes are already in memory (e.g. compiled into the binary).
    pub fn from_parts(card_text: &str, onnx: &[u8], origin: &str) -> Result<Model, OperatorError> {
        Ok(Model {
            card: ModelCard::parse(card_text, origin)?,
            onnx: onnx.to_vec(),
            origin: origin.to_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) const CARD: &str = r#"
name = "t"
version = "1.0.0"
kind = "classical-onnx-graph"
onnx = "t.onnx"
description = "test"
[input]
name = "image"
layout = "NCHW"
channels = ["green"]
scale = 0.00392156862745098
mean = 0.0
std = 1.0
um_per_px = 2.2
min_size = 64
pad_multiple = 1
[output]
name = "prob"
meaning = "p"
threshold = 0.5
[postprocess]
min_area_um2 = 100.0
max_area_um2 = 20000.0
"#;

    #[test]
    fn parses_a_card() {
        let card = ModelCard::parse(CARD, "t.toml").unwrap();
        assert_eq!(card.input.channels, [Channel::Green]);
        assert_eq!(card.output.threshold, 0.5);
    }

    #[test]
    fn the_counting_rule_links_only_when_the_card_says_so() {
        let plain = ModelCard::parse(CARD, "t.toml").unwrap().metric_params();
        assert_eq!(plain.link_threshold, plain.threshold);
        let linked = CARD.replace(
            "max_area_um2 = 20000.0",
            "max_area_um2 = 20000.0\nlink_threshold = 0.1",
        );
        let params = ModelCard::parse(&linked, "t.toml").unwrap().metric_params();
        assert_eq!((params.threshold, params.link_threshold), (0.5, 0.1));
        let above = CARD.replace(
            "max_area_um2 = 20000.0",
            "max_area_um2 = 20000.0\nlink_threshold = 0.7",
        );
        let err = ModelCard::parse(&above, "t.toml").unwrap_err().to_string();
        assert!(
            err.contains("t.toml") && err.contains("postprocess.link_threshold"),
            "{err}"
        );
    }

    #[test]
    fn invalid_cards_name_the_card_and_the_key() {
        let bad = CARD
            .replace("layout = \"NCHW\"", "layout = \"NHWC\"")
            .replace("threshold = 0.5", "threshold = 2.0");
        let err = ModelCard::parse(&bad, "bad.toml").unwrap_err().to_string();
        assert!(
            err.contains("bad.toml")
                && err.contains("input.layout")
                && err.contains("output.threshold"),
            "{err}"
        );
        let err = ModelCard::parse("name = 1", "x.toml")
            .unwrap_err()
            .to_string();
        assert!(err.contains("x.toml"), "{err}");
    }

    #[test]
    fn missing_model_file_names_the_path() {
        let err = Model::load(Path::new("/nonexistent/card.toml"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("/nonexistent/card.toml"), "{err}");
    }
}
