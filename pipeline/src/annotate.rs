//! `capflow annotate`: segment unlabelled images and draw what was found — the streaming equivalent of the
//! replaced system's analysed image, for checking a model by eye on a device's own frames.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{bail, Context};
use capflow_operators::native::capillary_mask;
use capflow_operators::{ort_environment, Segmenter};

use crate::eval::{draw_boxes, draw_contour, list_images, segment_image, stem, BOX_RGB, PRED_RGB};
use crate::imageio::read_image;
use crate::model::{load_model, ort_library};

/// Options of `capflow annotate`.
#[derive(Clone, Debug, clap::Args)]
pub struct AnnotateArgs {
    /// Model: a built-in name (builtin, learned, classical) or a model card .toml.
    #[arg(long, default_value = "builtin")]
    pub model: String,
    /// Folder of images (PNG/JPEG).
    #[arg(long)]
    pub images: PathBuf,
    /// Pixel size of the images, µm per pixel.
    #[arg(long)]
    pub um_per_px: f64,
    /// Output folder: `<stem>.png` overlays and `counts.csv`.
    #[arg(long, default_value = "annotate-out")]
    pub out: PathBuf,
    /// ONNX Runtime threads (default: all cores).
    #[arg(long)]
    pub threads: Option<usize>,
}

/// One annotated image.
#[derive(Clone, Debug, PartialEq)]
pub struct Annotated {
    /// Image file name.
    pub file: String,
    /// Counted capillaries (components within the card's area range).
    pub capillary_count: usize,
    /// Pixels of counted capillaries ÷ image pixels.
    pub area_fraction: f64,
}

/// Segments every image of `args.images`, writes overlays (outline green, component boxes yellow) and
/// `counts.csv`; returns the rows.
pub fn annotate(args: &AnnotateArgs) -> anyhow::Result<Vec<Annotated>> {
    if !(args.um_per_px.is_finite() && args.um_per_px > 0.0) {
        bail!(
            "--um-per-px must be a positive number (got {})",
            args.um_per_px
        );
    }
    let images = list_images(&args.images, "images")?;
    if images.is_empty() {
        bail!("no PNG or JPEG images in {}", args.images.display());
    }
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating the output folder {}", args.out.display()))?;
    let model = load_model(&args.model)?;
    let env = ort_environment(&ort_library(None)?)?;
    let threads = args
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let mut segmenter = Segmenter::new(&env, &model, threads)?;
    let params = model.card.metric_params();
    let mut rows = Vec::with_capacity(images.len());
    for path in &images {
        let image = read_image(path)?;
        let (w, h) = (image.width as usize, image.height as usize);
        let native = segment_image(&mut segmenter, &model, &image, args.um_per_px, "image")
            .with_context(|| format!("segmenting {}", path.display()))?;
        let (mask, kept) = capillary_mask(&native, w, h, args.um_per_px, &params);
        let mut rgb = image.to_rgb();
        draw_contour(&mut rgb, &mask, w, h, PRED_RGB);
        draw_boxes(&mut rgb, &kept, w, h, BOX_RGB);
        let out = args.out.join(format!("{}.png", stem(path)));
        capflow_synth::write_rgb_png(&out, image.width, image.height, &rgb)?;
        let file = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let area_fraction = mask.iter().filter(|&&m| m).count() as f64 / (w * h) as f64;
        rows.push(Annotated {
            file,
            capillary_count: kept.len(),
            area_fraction,
        });
    }
    let csv_path = args.out.join("counts.csv");
    let mut csv = std::fs::File::create(&csv_path)
        .with_context(|| format!("creating {}", csv_path.display()))?;
    writeln!(csv, "file,capillary_count,area_fraction")?;
    for r in &rows {
        writeln!(
            csv,
            "{},{},{:.6}",
            r.file, r.capillary_count, r.area_fraction
        )?;
    }
    Ok(rows)
}
