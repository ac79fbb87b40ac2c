//! `capflow synth`: the command-line face of the synthetic clip generator.

use std::path::PathBuf;

use anyhow::{bail, Context};
use capflow_synth::{write_clip, write_dataset, ClipWritten, FrameTruth, Look, Outputs, SynthSpec};

/// Options of `capflow synth` (all optional over the preset).
#[derive(Clone, Debug, Default, clap::Args)]
pub struct SynthArgs {
    /// Look and size: skin, sublingual, sublingual-hd or nailfold.
    #[arg(long, default_value = "skin")]
    pub preset: String,
    /// A TOML or JSON spec file (overrides the preset).
    #[arg(long)]
    pub spec: Option<PathBuf>,
    /// Output folder.
    #[arg(long, default_value = "synth-out")]
    pub out: PathBuf,
    /// Clip name (files are `OUT/NAME.mp4` and `OUT/NAME/...`).
    #[arg(long, default_value = "clip")]
    pub name: String,
    /// Number of frames.
    #[arg(long)]
    pub frames: Option<u32>,
    /// Frames per second.
    #[arg(long)]
    pub fps: Option<u32>,
    /// Random seed (the same seed gives the same clip).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Frame width.
    #[arg(long)]
    pub width: Option<u32>,
    /// Frame height.
    #[arg(long)]
    pub height: Option<u32>,
    /// Pixel size, µm per pixel.
    #[arg(long)]
    pub um_per_px: Option<f64>,
    /// Number of vessels.
    #[arg(long)]
    pub capillaries: Option<u32>,
    /// Share of vessels with red-cell flow (0..1).
    #[arg(long)]
    pub perfused_fraction: Option<f64>,
    /// Whole-field drift per frame in pixels, "DX,DY".
    #[arg(long)]
    pub drift: Option<String>,
    /// Also write PNG frames.
    #[arg(long)]
    pub png: bool,
    /// Also write PNG masks.
    #[arg(long)]
    pub masks: bool,
    /// Skip the MP4.
    #[arg(long)]
    pub no_mp4: bool,
    /// Dataset mode: write COUNT randomised stills to DIR/images/, their masks to DIR/masks/
    /// and DIR/index.csv instead of a clip (uses --seed, --count and --looks only).
    #[arg(long, value_name = "DIR")]
    pub dataset: Option<PathBuf>,
    /// Dataset mode: number of images.
    #[arg(long, default_value_t = 100)]
    pub count: u32,
    /// Dataset mode: comma-separated looks to cycle through (skin, sublingual, nailfold).
    #[arg(long, default_value = "skin,sublingual,nailfold")]
    pub looks: String,
}

impl SynthArgs {
    /// The spec these options describe.
    pub fn spec(&self) -> anyhow::Result<SynthSpec> {
        let mut spec = match &self.spec {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("reading spec {}", path.display()))?;
                if path.extension().is_some_and(|e| e == "json") {
                    serde_json::from_str(&text)
                        .with_context(|| format!("spec {}", path.display()))?
                } else {
                    toml::from_str(&text).with_context(|| format!("spec {}", path.display()))?
                }
            }
            None => SynthSpec::preset(&self.preset).with_context(|| {
                format!(
                    "unknown preset {:?}; choose one of {:?}",
                    self.preset,
                    SynthSpec::preset_names()
                )
            })?,
        };
        if let Some(v) = self.frames {
            spec.frames = v;
        }
        if let Some(v) = self.fps {
            spec.fps = v;
        }
        if let Some(v) = self.seed {
            spec.seed = v;
        }
        if let Some(v) = self.width {
            spec.width = v;
        }
        if let Some(v) = self.height {
            spec.height = v;
        }
        if let Some(v) = self.um_per_px {
            spec.um_per_px = v;
        }
        if let Some(v) = self.capillaries {
            spec.capillaries = v;
        }
        if let Some(v) = self.perfused_fraction {
            spec.perfused_fraction = v;
        }
        if let Some(d) = &self.drift {
            let parts: Vec<f64> = d
                .split(',')
                .map(|p| p.trim().parse())
                .collect::<Result<_, _>>()
                .with_context(|| format!("--drift {d:?}: expected DX,DY in pixels per frame"))?;
            let [dx, dy] = parts[..] else {
                bail!("--drift {d:?}: expected DX,DY in pixels per frame")
            };
            spec.drift_px_per_frame = [dx, dy];
        }
        spec.validate().context("invalid synth spec")?;
        Ok(spec)
    }

    /// The looks named by `--looks` (empty: every look).
    pub fn looks(&self) -> anyhow::Result<Vec<Look>> {
        self.looks
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|name| {
                Look::parse(name).with_context(|| {
                    format!(
                        "--looks: unknown look {name:?}; choose from skin, sublingual, nailfold"
                    )
                })
            })
            .collect()
    }

    /// Dataset mode: writes the randomised stills. The result lists one truth per image
    /// (`frame_index` = image number), no vessels and no MP4; `dir` is the dataset folder.
    pub fn run_dataset(&self, dir: &std::path::Path) -> anyhow::Result<ClipWritten> {
        let looks = self.looks()?;
        let seed = self.seed.unwrap_or(1);
        let items = write_dataset(dir, self.count, seed, &looks)
            .with_context(|| format!("writing dataset to {}", dir.display()))?;
        Ok(ClipWritten {
            mp4: None,
            dir: dir.to_path_buf(),
            frames: items.len() as u32,
            truth: items
                .iter()
                .enumerate()
                .map(|(i, item)| FrameTruth {
                    frame_index: i as u32,
                    pts_ns: 0,
                    capillary_count: item.capillary_count,
                    area_fraction: item.area_fraction,
                    centerline_length_um: 0.0,
                })
                .collect(),
            vessels: Vec::new(),
        })
    }

    /// Renders and writes the clip (or, with `--dataset`, the dataset).
    pub fn run(&self) -> anyhow::Result<ClipWritten> {
        if let Some(dir) = &self.dataset {
            return self.run_dataset(dir);
        }
        let spec = self.spec()?;
        let outputs = Outputs {
            mp4: !self.no_mp4,
            png: self.png,
            masks: self.masks,
        };
        std::fs::create_dir_all(&self.out)
            .with_context(|| format!("creating {}", self.out.display()))?;
        write_clip(&spec, &self.out, &self.name, &outputs)
            .with_context(|| format!("writing clip {} to {}", self.name, self.out.display()))
    }
}
