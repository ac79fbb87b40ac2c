//! `capflow eval`: score a model against truth masks — a folder of images with same-named masks, or a freshly
//! generated held-out synthetic set.
//!
//! Every image is scored at its native resolution with the pipeline's own rules: the model runs on the frame as
//! `capflow run` would feed it (`preprocess`), the valid region of the probability map is resized back to the image
//! size, thresholded with the card's `output.threshold`, and only components within the card's
//! `postprocess.min_area_um2..=max_area_um2` are kept (the counting rule). So the scores measure what the pipeline
//! reports: pixel scores and the area fraction compare that kept mask with the whole truth mask; the true count is
//! the number of truth components within the same area range (both unfiltered truth numbers are in the rows too).
//! Outputs: `report.json`, `report.md` and `overlays/<stem>.png` in the report folder.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context};
use capflow_ingest::{Frame, StreamInfo};
use capflow_operators::components::Component;
use capflow_operators::metrics::MetricParams;
use capflow_operators::model::Model;
use capflow_operators::native::{capillary_mask, keep_capillaries, native_probability};
use capflow_operators::preprocess::preprocess;
use capflow_operators::scores::{cldice, dice, iou};
use capflow_operators::{ort_environment, Segmenter};
use capflow_synth::{write_dataset, Look};
use serde::Serialize;

use crate::imageio::{is_image, read_image, Image};
use crate::model::{load_model, ort_library};

/// Default dataset seed of `capflow eval --synth`. Held out: training sets are made with small seeds
/// (`models/train/make-model.sh`: `SEED`, validation `SEED + 500000`), and every image's own seed is a hash of the
/// dataset seed and its index, so the evaluation images are scenes no model was fitted on. Keep `--seed` at or
/// above 1 000 000 (and away from any training seed) for held-out numbers.
pub const HELD_OUT_SEED: u64 = 1_000_000;

/// Options of `capflow eval`.
#[derive(Clone, Debug, clap::Args)]
pub struct EvalArgs {
    /// Model card .toml, or a built-in model name (`builtin`).
    #[arg(long)]
    pub model: String,
    /// Folder of images (PNG/JPEG) to score.
    #[arg(long, required_unless_present = "synth", conflicts_with = "synth")]
    pub images: Option<PathBuf>,
    /// Folder of truth masks, named like the images (matched by file stem, PNG/JPEG).
    #[arg(long, required_unless_present = "synth", conflicts_with = "synth")]
    pub masks: Option<PathBuf>,
    /// Generate a held-out synthetic set into REPORT/data and score it (instead of --images/--masks).
    #[arg(long)]
    pub synth: bool,
    /// Report folder: report.json, report.md, overlays/.
    #[arg(long)]
    pub report: PathBuf,
    /// Pixel size of the images, µm per pixel (overrides index.csv; default: index.csv, else the card's
    /// input.um_per_px).
    #[arg(long)]
    pub um_per_px: Option<f64>,
    /// Mask pixels brighter than this (0..255, brightest channel) are foreground.
    #[arg(long, default_value_t = 127)]
    pub mask_threshold: u8,
    /// ONNX Runtime threads (default: all cores).
    #[arg(long)]
    pub threads: Option<usize>,
    /// --synth: number of images (the looks take turns).
    #[arg(long, default_value_t = 12)]
    pub count: u32,
    /// --synth: dataset seed (default 1000000: held out from training, which uses small seeds).
    #[arg(long, default_value_t = HELD_OUT_SEED)]
    pub seed: u64,
    /// --synth: comma-separated looks: skin, sublingual, nailfold (default: all).
    #[arg(long, value_delimiter = ',')]
    pub looks: Vec<String>,
    /// Skip writing overlays (faster on large sets).
    #[arg(long)]
    pub no_overlays: bool,
    /// Overrides the card's largest working frame (megapixels), as `model.max_megapixels` does for runs:
    /// scores the resolution/accuracy trade-off.
    #[arg(long)]
    pub max_megapixels: Option<f64>,
}

/// Scores of one image.
#[derive(Clone, Debug, Serialize)]
pub struct ImageRow {
    /// Image file name.
    pub file: String,
    /// Synth look / preset, when known (from index.csv).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub look: Option<String>,
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// Pixel size used, µm per pixel.
    pub um_per_px: f64,
    /// Pixel Dice of the kept prediction against the truth mask.
    pub dice: f64,
    /// Pixel IoU.
    pub iou: f64,
    /// Centre-line Dice.
    pub cldice: f64,
    /// Predicted capillaries (components kept by the area rule).
    pub count_pred: u32,
    /// True capillaries (truth components within the same area range).
    pub count_true: u32,
    /// Predicted capillary pixels ÷ image pixels.
    pub area_fraction_pred: f64,
    /// Truth mask pixels ÷ image pixels.
    pub area_fraction_true: f64,
    /// Truth components of any size.
    pub count_true_unfiltered: u32,
    /// Pixels of the truth components within the area range ÷ image pixels (the truth's counted area).
    pub area_fraction_true_counted: f64,
    /// Inference and scoring time, ms.
    pub ms: f64,
}

/// Aggregate scores over a set of images.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Summary {
    /// Images scored.
    pub n_images: usize,
    /// Mean Dice.
    pub dice: f64,
    /// Mean IoU.
    pub iou: f64,
    /// Mean clDice.
    pub cldice: f64,
    /// Mean |count_pred − count_true|.
    pub count_mae: f64,
    /// Mean |count_pred − count_true| / count_true over images with count_true > 0 (null if none).
    pub count_mape: Option<f64>,
    /// |Σ count_pred − Σ count_true| / Σ count_true (null if no true capillaries).
    pub count_total_relative_error: Option<f64>,
    /// Share of images (with count_true > 0) whose count is within 5 % of the truth.
    pub count_within_5pct: Option<f64>,
    /// Mean |area_fraction_pred − area_fraction_true|.
    pub area_fraction_mae: f64,
    /// Mean |af_pred − af_true| / af_true over images with af_true > 0 (null if none).
    pub area_fraction_relative_error: Option<f64>,
    /// |Σ af_pred − Σ af_true| / Σ af_true (null if no truth pixels).
    pub area_fraction_total_relative_error: Option<f64>,
    /// Share of images (with af_true > 0) whose area fraction is within 5 % of the truth.
    pub area_fraction_within_5pct: Option<f64>,
    /// Σ count_pred.
    pub count_pred_total: u64,
    /// Σ count_true.
    pub count_true_total: u64,
}

/// The model an evaluation ran.
#[derive(Clone, Debug, Serialize)]
pub struct ModelInfo {
    /// Card name.
    pub name: String,
    /// Card version.
    pub version: String,
    /// Card kind.
    pub kind: String,
    /// Card path or `builtin:<name>`.
    pub origin: String,
}

/// Everything `report.json` holds.
#[derive(Clone, Debug, Serialize)]
pub struct EvalReport {
    /// Scores over all images.
    #[serde(flatten)]
    pub summary: Summary,
    /// The model.
    pub model: ModelInfo,
    /// Probability threshold (card `output.threshold`).
    pub threshold: f32,
    /// Hysteresis threshold linking pieces of one capillary (card `postprocess.link_threshold`; equal to
    /// `threshold` when the card links nothing).
    pub link_threshold: f32,
    /// Smallest counted component, µm² (card `postprocess.min_area_um2`).
    pub min_area_um2: f64,
    /// Largest counted component, µm² (card `postprocess.max_area_um2`).
    pub max_area_um2: f64,
    /// Mask foreground threshold.
    pub mask_threshold: u8,
    /// Images folder.
    pub images_dir: String,
    /// Masks folder.
    pub masks_dir: String,
    /// For --synth: how the set was made.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub synth: Option<serde_json::Value>,
    /// Wall time of the whole evaluation (model load, inference, scoring, overlays), s.
    pub seconds: f64,
    /// Per look, when the looks are known.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub by_look: BTreeMap<String, Summary>,
    /// Per image.
    pub images: Vec<ImageRow>,
}

fn mean(values: impl Iterator<Item = f64>) -> Option<f64> {
    let (n, sum) = values.fold((0usize, 0.0), |(n, s), v| (n + 1, s + v));
    (n > 0).then(|| sum / n as f64)
}

fn relative(pred: f64, truth: f64) -> Option<f64> {
    (truth > 0.0).then(|| (pred - truth).abs() / truth)
}

impl Summary {
    /// Aggregates image rows.
    pub fn of(rows: &[&ImageRow]) -> Summary {
        let count_rel: Vec<f64> = rows
            .iter()
            .filter_map(|r| relative(r.count_pred as f64, r.count_true as f64))
            .collect();
        let af_rel: Vec<f64> = rows
            .iter()
            .filter_map(|r| relative(r.area_fraction_pred, r.area_fraction_true))
            .collect();
        let within = |v: &[f64]| mean(v.iter().map(|&e| f64::from(u8::from(e <= 0.05))));
        let count_pred_total: u64 = rows.iter().map(|r| r.count_pred as u64).sum();
        let count_true_total: u64 = rows.iter().map(|r| r.count_true as u64).sum();
        let af_pred: f64 = rows.iter().map(|r| r.area_fraction_pred).sum();
        let af_true: f64 = rows.iter().map(|r| r.area_fraction_true).sum();
        Summary {
            n_images: rows.len(),
            dice: mean(rows.iter().map(|r| r.dice)).unwrap_or(0.0),
            iou: mean(rows.iter().map(|r| r.iou)).unwrap_or(0.0),
            cldice: mean(rows.iter().map(|r| r.cldice)).unwrap_or(0.0),
            count_mae: mean(
                rows.iter()
                    .map(|r| (r.count_pred as f64 - r.count_true as f64).abs()),
            )
            .unwrap_or(0.0),
            count_mape: mean(count_rel.iter().copied()),
            count_total_relative_error: relative(count_pred_total as f64, count_true_total as f64),
            count_within_5pct: within(&count_rel),
            area_fraction_mae: mean(
                rows.iter()
                    .map(|r| (r.area_fraction_pred - r.area_fraction_true).abs()),
            )
            .unwrap_or(0.0),
            area_fraction_relative_error: mean(af_rel.iter().copied()),
            area_fraction_total_relative_error: relative(af_pred, af_true),
            area_fraction_within_5pct: within(&af_rel),
            count_pred_total,
            count_true_total,
        }
    }
}

/// Per-image metadata from an `index.csv` (`file,um_per_px,...`, optionally `look`).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct IndexEntry {
    /// Pixel size, µm per pixel.
    pub um_per_px: Option<f64>,
    /// Look / preset name.
    pub look: Option<String>,
}

/// Reads an `index.csv` with a header naming at least `file`; `um_per_px` and `look` columns are used when present.
/// Keys are file names.
pub fn read_index(path: &Path) -> anyhow::Result<HashMap<String, IndexEntry>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let mut lines = text.lines().filter(|l| !l.trim().is_empty());
    let header: Vec<&str> = lines
        .next()
        .with_context(|| {
            format!(
                "{} is empty; it needs a header line file,um_per_px,...",
                path.display()
            )
        })?
        .split(',')
        .map(str::trim)
        .collect();
    let col = |name: &str| header.iter().position(|h| *h == name);
    let file_col = col("file").with_context(|| {
        format!(
            "{} has no `file` column (header: {}); expected file,um_per_px,...",
            path.display(),
            header.join(",")
        )
    })?;
    let (um_col, look_col) = (col("um_per_px"), col("look"));
    let mut out = HashMap::new();
    for (n, line) in lines.enumerate() {
        let fields: Vec<&str> = line.split(',').map(str::trim).collect();
        let field = |c: Option<usize>| c.and_then(|c| fields.get(c)).filter(|v| !v.is_empty());
        let Some(file) = field(Some(file_col)) else {
            bail!("{} line {}: no file name", path.display(), n + 2);
        };
        let um_per_px = match field(um_col) {
            Some(v) => Some(
                v.parse::<f64>()
                    .ok()
                    .filter(|u| u.is_finite() && *u > 0.0)
                    .with_context(|| {
                        format!(
                            "{} line {}: um_per_px {v:?} is not a positive number",
                            path.display(),
                            n + 2
                        )
                    })?,
            ),
            None => None,
        };
        out.insert(
            (*file).to_owned(),
            IndexEntry {
                um_per_px,
                look: field(look_col).map(|s| (*s).to_owned()),
            },
        );
    }
    Ok(out)
}

/// Writes a held-out synthetic set into `dir` in the dataset layout `capflow eval` reads — `dir/images/*.png`,
/// `dir/masks/*.png` (0/255) and `dir/index.csv` (`file,look,seed,width,height,um_per_px,capillary_count,
/// area_fraction`) — with [`capflow_synth::write_dataset`] (domain-randomised stills, as `capflow synth --dataset`
/// makes for training). `looks` are look names; empty means every look.
pub fn synth_set(dir: &Path, looks: &[String], count: u32, seed: u64) -> anyhow::Result<()> {
    let looks: Vec<Look> = looks
        .iter()
        .map(|name| {
            Look::parse(name).with_context(|| {
                format!(
                    "unknown look {name:?} in --looks; choose from {}",
                    Look::all().map(Look::as_str).join(",")
                )
            })
        })
        .collect::<anyhow::Result<_>>()?;
    write_dataset(dir, count, seed, &looks)
        .with_context(|| format!("writing the synthetic set to {}", dir.display()))?;
    Ok(())
}

/// An image and its mask, paired by file stem.
#[derive(Clone, Debug)]
struct Pair {
    image: PathBuf,
    mask: PathBuf,
}

pub(crate) fn list_images(dir: &Path, what: &str) -> anyhow::Result<Vec<PathBuf>> {
    if !dir.is_dir() {
        bail!(
            "{what} folder {} does not exist or is not a folder; check the --{what} path",
            dir.display()
        );
    }
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("listing {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file() && is_image(p))
        .collect();
    files.sort();
    Ok(files)
}

pub(crate) fn stem(path: &Path) -> String {
    path.file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Pairs every image with its mask; an image without a mask is an error naming it.
fn pair_up(images: &Path, masks: &Path) -> anyhow::Result<Vec<Pair>> {
    let image_files = list_images(images, "images")?;
    if image_files.is_empty() {
        bail!(
            "images folder {} holds no .png/.jpg/.jpeg files; point --images at the images",
            images.display()
        );
    }
    let mut by_stem: HashMap<String, PathBuf> = HashMap::new();
    for mask in list_images(masks, "masks")? {
        by_stem.insert(stem(&mask), mask);
    }
    image_files
        .into_iter()
        .map(|image| {
            let mask = by_stem.get(&stem(&image)).cloned().with_context(|| {
                format!(
                    "image {} has no mask: expected {}/{}.png (or .jpg) — add the mask, or move the image out of \
                     --images",
                    image.display(),
                    masks.display(),
                    stem(&image)
                )
            })?;
            Ok(Pair { image, mask })
        })
        .collect()
}

/// Colours of the overlays.
const TRUTH_RGB: [u8; 3] = [255, 0, 255];
pub(crate) const PRED_RGB: [u8; 3] = [0, 255, 0];
pub(crate) const BOX_RGB: [u8; 3] = [255, 255, 0];

/// Paints the outline of `mask` (mask pixels with a 4-neighbour outside it) in `colour`.
pub(crate) fn draw_contour(rgb: &mut [u8], mask: &[bool], w: usize, h: usize, colour: [u8; 3]) {
    for y in 0..h {
        for x in 0..w {
            let i = y * w + x;
            if !mask[i] {
                continue;
            }
            let edge = x == 0
                || y == 0
                || x + 1 == w
                || y + 1 == h
                || !mask[i - 1]
                || !mask[i + 1]
                || !mask[i - w]
                || !mask[i + w];
            if edge {
                rgb[i * 3..i * 3 + 3].copy_from_slice(&colour);
            }
        }
    }
}

/// Paints a one-pixel rectangle one pixel outside each component's bounding box.
pub(crate) fn draw_boxes(rgb: &mut [u8], comps: &[Component], w: usize, h: usize, colour: [u8; 3]) {
    let mut put = |x: usize, y: usize| {
        let i = (y * w + x) * 3;
        rgb[i..i + 3].copy_from_slice(&colour);
    };
    for c in comps {
        let x0 = c.bbox[0].saturating_sub(1);
        let y0 = c.bbox[1].saturating_sub(1);
        let x1 = (c.bbox[2] + 1).min(w - 1);
        let y1 = (c.bbox[3] + 1).min(h - 1);
        for x in x0..=x1 {
            put(x, y0);
            put(x, y1);
        }
        for y in y0..=y1 {
            put(x0, y);
            put(x1, y);
        }
    }
}

/// The model's probability map of one still image, at the image's native size: the frame goes through the
/// pipeline's preprocessing, and the valid region of the output is resized back.
pub(crate) fn segment_image(
    segmenter: &mut Segmenter,
    model: &Model,
    image: &Image,
    um_per_px: f64,
    name: &str,
) -> anyhow::Result<Vec<f32>> {
    let frame = Frame {
        stream: Arc::new(StreamInfo::new("eval", "eval", name, um_per_px)),
        index: 0,
        pts_ns: 0,
        width: image.width,
        height: image.height,
        source_width: image.width,
        source_height: image.height,
        format: image.format,
        data: image.data.clone().into(),
    };
    let input = preprocess(&frame, &model.card.input);
    let prob = segmenter
        .run(&[&input])?
        .pop()
        .context("the model returned no output")?;
    Ok(native_probability(
        &prob,
        &input,
        image.width as usize,
        image.height as usize,
    ))
}

struct Scorer {
    model: Model,
    segmenter: Segmenter,
    params: MetricParams,
}

impl Scorer {
    fn score(
        &mut self,
        image: &Image,
        truth_raw: &[bool],
        um_per_px: f64,
        name: &str,
    ) -> anyhow::Result<(ImageRow, Vec<bool>, Vec<Component>)> {
        let start = Instant::now();
        let (w, h) = (image.width as usize, image.height as usize);
        let native = segment_image(&mut self.segmenter, &self.model, image, um_per_px, name)?;
        let (pred, kept) = capillary_mask(&native, w, h, um_per_px, &self.params);
        let ones = vec![1.0f32; w * h];
        let (truth_counted, truth_kept) =
            keep_capillaries(truth_raw, &ones, w, h, um_per_px, &self.params);
        let raw_count = capflow_operators::components::components(truth_raw, &ones, w, h).len();
        let truth = truth_raw;
        let px = (w * h) as f64;
        let frac = |m: &[bool]| m.iter().filter(|&&v| v).count() as f64 / px;
        let row = ImageRow {
            file: name.to_owned(),
            look: None,
            width: image.width,
            height: image.height,
            um_per_px,
            dice: dice(&pred, truth),
            iou: iou(&pred, truth),
            cldice: cldice(&pred, truth, w, h),
            count_pred: kept.len() as u32,
            count_true: truth_kept.len() as u32,
            area_fraction_pred: frac(&pred),
            area_fraction_true: frac(truth),
            count_true_unfiltered: raw_count as u32,
            area_fraction_true_counted: frac(&truth_counted),
            ms: start.elapsed().as_secs_f64() * 1e3,
        };
        Ok((row, pred, kept))
    }
}

/// Runs `capflow eval` and writes its report; returns the report.
pub fn eval(args: &EvalArgs) -> anyhow::Result<EvalReport> {
    let start = Instant::now();
    if let Some(u) = args.um_per_px {
        if !(u.is_finite() && u > 0.0) {
            bail!("--um-per-px must be a positive number (got {u})");
        }
    }
    std::fs::create_dir_all(&args.report)
        .with_context(|| format!("creating the report folder {}", args.report.display()))?;
    let (images_dir, masks_dir, synth_info) = if args.synth {
        let data = args.report.join("data");
        let looks: Vec<String> = if args.looks.is_empty() {
            Look::all().map(|l| l.as_str().to_owned()).to_vec()
        } else {
            args.looks.clone()
        };
        synth_set(&data, &looks, args.count, args.seed)?;
        let info = serde_json::json!({
            "count": args.count, "seed": args.seed, "looks": looks, "data": data.display().to_string(),
        });
        (data.join("images"), data.join("masks"), Some(info))
    } else {
        let images = args
            .images
            .clone()
            .context("--images is required without --synth")?;
        let masks = args
            .masks
            .clone()
            .context("--masks is required without --synth")?;
        (images, masks, None)
    };
    let pairs = pair_up(&images_dir, &masks_dir)?;

    // index.csv beside the images folder (dataset layout) or inside it.
    let mut index = HashMap::new();
    for candidate in [
        images_dir.parent().map(|p| p.join("index.csv")),
        Some(images_dir.join("index.csv")),
    ]
    .into_iter()
    .flatten()
    {
        if candidate.is_file() {
            index = read_index(&candidate)?;
            break;
        }
    }

    let mut model = load_model(&args.model)?;
    if let Some(mp) = args.max_megapixels {
        if !(mp.is_finite() && mp > 0.0) {
            bail!("--max-megapixels must be a positive number (got {mp})");
        }
        model.card.input.max_megapixels = Some(mp);
    }
    let env = ort_environment(&ort_library(None)?)?;
    let threads = args.threads.unwrap_or_else(|| {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    });
    let segmenter = Segmenter::new(&env, &model, threads)?;
    let params = model.card.metric_params();
    let mut scorer = Scorer {
        model,
        segmenter,
        params,
    };

    let overlays = args.report.join("overlays");
    if !args.no_overlays {
        std::fs::create_dir_all(&overlays)
            .with_context(|| format!("creating {}", overlays.display()))?;
    }
    let mut rows = Vec::with_capacity(pairs.len());
    for pair in &pairs {
        let name = pair
            .image
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let image = read_image(&pair.image)?;
        let mask = read_image(&pair.mask)?;
        if (mask.width, mask.height) != (image.width, image.height) {
            bail!(
                "mask {} is {}x{} but image {} is {}x{}; masks must be drawn on the image at its native size",
                pair.mask.display(),
                mask.width,
                mask.height,
                pair.image.display(),
                image.width,
                image.height
            );
        }
        let entry = index
            .get(&name)
            .or_else(|| {
                index
                    .iter()
                    .find(|(k, _)| stem(Path::new(k)) == stem(&pair.image))
                    .map(|(_, v)| v)
            })
            .cloned()
            .unwrap_or_default();
        let um_per_px = args
            .um_per_px
            .or(entry.um_per_px)
            .unwrap_or(scorer.model.card.input.um_per_px);
        let truth = mask.foreground(args.mask_threshold);
        let (mut row, pred, kept) = scorer
            .score(&image, &truth, um_per_px, &name)
            .with_context(|| format!("scoring {}", pair.image.display()))?;
        row.look = entry.look;
        if !args.no_overlays {
            let (w, h) = (image.width as usize, image.height as usize);
            let mut rgb = image.to_rgb();
            draw_contour(&mut rgb, &truth, w, h, TRUTH_RGB);
            draw_contour(&mut rgb, &pred, w, h, PRED_RGB);
            draw_boxes(&mut rgb, &kept, w, h, BOX_RGB);
            let path = overlays.join(format!("{}.png", stem(&pair.image)));
            capflow_synth::write_rgb_png(&path, image.width, image.height, &rgb)?;
        }
        tracing::info!(file = %name, dice = row.dice, count_pred = row.count_pred, count_true = row.count_true, "scored");
        rows.push(row);
    }

    let all: Vec<&ImageRow> = rows.iter().collect();
    let mut looks: BTreeMap<String, Vec<&ImageRow>> = BTreeMap::new();
    for row in &rows {
        if let Some(look) = &row.look {
            looks.entry(look.clone()).or_default().push(row);
        }
    }
    let card = &scorer.model.card;
    let report = EvalReport {
        summary: Summary::of(&all),
        model: ModelInfo {
            name: card.name.clone(),
            version: card.version.clone(),
            kind: card.kind.clone(),
            origin: scorer.model.origin.clone(),
        },
        threshold: card.output.threshold,
        link_threshold: card.metric_params().link_threshold,
        min_area_um2: card.postprocess.min_area_um2,
        max_area_um2: card.postprocess.max_area_um2,
        mask_threshold: args.mask_threshold,
        images_dir: images_dir.display().to_string(),
        masks_dir: masks_dir.display().to_string(),
        synth: synth_info,
        seconds: start.elapsed().as_secs_f64(),
        by_look: looks
            .iter()
            .map(|(k, v)| (k.clone(), Summary::of(v)))
            .collect(),
        images: rows.clone(),
    };
    let json_path = args.report.join("report.json");
    std::fs::write(&json_path, serde_json::to_string_pretty(&report)?)
        .with_context(|| format!("writing {}", json_path.display()))?;
    let md_path = args.report.join("report.md");
    std::fs::write(&md_path, markdown(&report))
        .with_context(|| format!("writing {}", md_path.display()))?;
    Ok(report)
}

fn pct(v: Option<f64>) -> String {
    v.map_or("–".to_owned(), |v| format!("{:.1} %", v * 100.0))
}

/// `report.md`: a summary table (all images and each look), then one row per image.
pub fn markdown(report: &EvalReport) -> String {
    let mut md = String::new();
    let m = &report.model;
    let _ = writeln!(md, "# capflow eval: {} {}\n", m.name, m.version);
    let _ = writeln!(
        md,
        "Model `{}` ({}), threshold {} (pieces linked above {}), counted components {}–{} µm²; {} image(s) from \
         `{}`, masks `{}`; {:.1} s.\n",
        m.origin,
        m.kind,
        report.threshold,
        report.link_threshold,
        report.min_area_um2,
        report.max_area_um2,
        report.summary.n_images,
        report.images_dir,
        report.masks_dir,
        report.seconds
    );
    let mut columns: Vec<(String, &Summary)> = vec![("all".to_owned(), &report.summary)];
    columns.extend(report.by_look.iter().map(|(k, v)| (k.clone(), v)));
    let _ = writeln!(
        md,
        "| metric | {} |",
        columns
            .iter()
            .map(|c| c.0.as_str())
            .collect::<Vec<_>>()
            .join(" | ")
    );
    let _ = writeln!(md, "|---|{}", "---:|".repeat(columns.len()));
    type Cell = fn(&Summary) -> String;
    let rows: [(&str, Cell); 13] = [
        ("images", |s| s.n_images.to_string()),
        ("Dice", |s| format!("{:.3}", s.dice)),
        ("IoU", |s| format!("{:.3}", s.iou)),
        ("clDice", |s| format!("{:.3}", s.cldice)),
        ("count MAE", |s| format!("{:.2}", s.count_mae)),
        ("count mean rel. error", |s| pct(s.count_mape)),
        ("count total rel. error", |s| {
            pct(s.count_total_relative_error)
        }),
        ("count within 5 %", |s| pct(s.count_within_5pct)),
        ("area fraction MAE", |s| {
            format!("{:.4}", s.area_fraction_mae)
        }),
        ("area fraction mean rel. error", |s| {
            pct(s.area_fraction_relative_error)
        }),
        ("area fraction total rel. error", |s| {
            pct(s.area_fraction_total_relative_error)
        }),
        ("area fraction within 5 %", |s| {
            pct(s.area_fraction_within_5pct)
        }),
        ("capillaries pred / true", |s| {
            format!("{} / {}", s.count_pred_total, s.count_true_total)
        }),
    ];
    for (name, cell) in rows {
        let _ = writeln!(
            md,
            "| {name} | {} |",
            columns
                .iter()
                .map(|(_, s)| cell(s))
                .collect::<Vec<_>>()
                .join(" | ")
        );
    }
    let _ = writeln!(
        md,
        "\nRelative errors are over images with a non-zero truth. The prediction keeps the components within the \
         counted area range (as `capflow run` counts); the true count applies the same range to the truth's \
         components, the pixel scores and the true area fraction use the whole truth mask. Overlays: `overlays/<image>.png` — truth outline magenta, prediction outline \
         green, counted components boxed yellow.\n"
    );
    let _ = writeln!(
        md,
        "| image | look | µm/px | Dice | IoU | clDice | count pred | count true | area fr. pred | area fr. true |"
    );
    let _ = writeln!(md, "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    for r in &report.images {
        let _ = writeln!(
            md,
            "| {} | {} | {} | {:.3} | {:.3} | {:.3} | {} | {} | {:.4} | {:.4} |",
            r.file,
            r.look.as_deref().unwrap_or(""),
            r.um_per_px,
            r.dice,
            r.iou,
            r.cldice,
            r.count_pred,
            r.count_true,
            r.area_fraction_pred,
            r.area_fraction_true
        );
    }
    md
}

/// Prints the summary `capflow eval` shows on stdout.
pub fn print_summary(report: &EvalReport, dir: &Path) {
    let s = &report.summary;
    println!(
        "capflow eval: {} {} on {} image(s) in {:.1} s",
        report.model.name, report.model.version, s.n_images, report.seconds
    );
    let mut lines: Vec<(String, &Summary)> = vec![("all".to_owned(), s)];
    lines.extend(report.by_look.iter().map(|(k, v)| (k.clone(), v)));
    println!(
        "  {:<14} {:>6} {:>6} {:>6} {:>7} {:>10} {:>10} {:>10}",
        "set", "images", "dice", "iou", "cldice", "count err", "area err", "count MAE"
    );
    for (name, v) in lines {
        println!(
            "  {:<14} {:>6} {:>6.3} {:>6.3} {:>7.3} {:>10} {:>10} {:>10.2}",
            name,
            v.n_images,
            v.dice,
            v.iou,
            v.cldice,
            pct(v.count_total_relative_error),
            pct(v.area_fraction_total_relative_error),
            v.count_mae
        );
    }
    println!(
        "  (count/area err: relative error of the totals) report in {}",
        dir.display()
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(count_pred: u32, count_true: u32, afp: f64, aft: f64) -> ImageRow {
        ImageRow {
            file: "x.png".into(),
            look: None,
            width: 1,
            height: 1,
            um_per_px: 1.0,
            dice: 0.5,
            iou: 0.25,
            cldice: 1.0,
            count_pred,
            count_true,
            area_fraction_pred: afp,
            area_fraction_true: aft,
            count_true_unfiltered: count_true,
            area_fraction_true_counted: aft,
            ms: 0.0,
        }
    }

    #[test]
    fn summary_means_and_relative_errors() {
        let rows = [
            row(11, 10, 0.2, 0.1),
            row(0, 0, 0.0, 0.0),
            row(19, 20, 0.1, 0.1),
        ];
        let refs: Vec<&ImageRow> = rows.iter().collect();
        let s = Summary::of(&refs);
        assert_eq!(s.n_images, 3);
        assert_eq!(s.dice, 0.5);
        assert!((s.count_mae - 2.0 / 3.0).abs() < 1e-12);
        // Per image: 10 % and 5 %; totals 30 vs 30.
        assert!((s.count_mape.unwrap() - 0.075).abs() < 1e-12);
        assert_eq!(s.count_total_relative_error, Some(0.0));
        assert_eq!(s.count_within_5pct, Some(0.5));
        assert!((s.area_fraction_relative_error.unwrap() - 0.5).abs() < 1e-12);
        assert!((s.area_fraction_total_relative_error.unwrap() - 0.5).abs() < 1e-12);
        let empty = Summary::of(&[&rows[1]]);
        assert_eq!(empty.count_mape, None);
        assert_eq!(empty.count_total_relative_error, None);
    }

    #[test]
    fn index_csv_gives_pixel_sizes_and_looks() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("index.csv");
        std::fs::write(
            &path,
            "file,look,seed,width,height,um_per_px,capillary_count,area_fraction\n\
             a.png,skin,1,64,64,2.2,3,0.01\nb.png,,2,64,64,,0,0\n",
        )
        .unwrap();
        let index = read_index(&path).unwrap();
        assert_eq!(
            index["a.png"],
            IndexEntry {
                um_per_px: Some(2.2),
                look: Some("skin".into())
            }
        );
        assert_eq!(index["b.png"], IndexEntry::default());
        std::fs::write(&path, "file,um_per_px\na.png,-1\n").unwrap();
        let err = format!("{:#}", read_index(&path).unwrap_err());
        assert!(err.contains("line 2") && err.contains("um_per_px"), "{err}");
        std::fs::write(&path, "name,um_per_px\n").unwrap();
        assert!(format!("{:#}", read_index(&path).unwrap_err()).contains("no `file` column"));
    }

    #[test]
    fn contours_and_boxes_are_drawn_in_place() {
        let (w, h) = (5, 5);
        let mut mask = vec![false; 25];
        for y in 1..4 {
            for x in 1..4 {
                mask[y * w + x] = true;
            }
        }
        let mut rgb = vec![0u8; 75];
        draw_contour(&mut rgb, &mask, w, h, PRED_RGB);
        // The centre pixel is inside, not on the outline.
        assert_eq!(&rgb[(2 * w + 2) * 3..][..3], [0, 0, 0]);
        assert_eq!(&rgb[(w + 1) * 3..][..3], PRED_RGB);
        let comp = Component {
            area_px: 9,
            prob_sum: 9.0,
            bbox: [1, 1, 3, 3],
        };
        draw_boxes(&mut rgb, &[comp], w, h, BOX_RGB);
        assert_eq!(&rgb[..3], BOX_RGB);
        assert_eq!(&rgb[(4 * w + 4) * 3..][..3], BOX_RGB);
    }
}
