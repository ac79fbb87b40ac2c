//! Single stills and training datasets: frame 0 of randomised specs with their masks.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use crate::png_out::{write_gray_png, write_rgb_png};
use crate::randomize::randomized;
use crate::render::{RenderedFrame, Renderer};
use crate::rng::mix;
use crate::spec::{Look, SynthSpec};
use crate::SynthError;

/// Renders frame 0 of `spec` as a still (no drift, one frame: the cheapest scene).
/// Returns the RGB image, the 0/255 lumen mask and the frame's truth (count, area fraction,
/// centre-line length).
pub fn render_still(spec: &SynthSpec) -> Result<RenderedFrame, SynthError> {
    let still = SynthSpec {
        frames: 1,
        drift_px_per_frame: [0.0, 0.0],
        ..spec.clone()
    };
    Ok(Renderer::new(&still)?.render(0))
}

/// The seed of dataset item `index` for dataset seed `seed`.
pub fn dataset_item_seed(seed: u64, index: u32) -> u64 {
    mix(&[seed, 0x0DA7_A5E7, index as u64])
}

/// One image of a dataset (one row of `index.csv`).
#[derive(Clone, Debug, PartialEq)]
pub struct DatasetItem {
    /// File name, the same under `images/` and `masks/`: `<look>-<index:05>.png`.
    pub file: String,
    /// Look of the image.
    pub look: Look,
    /// Seed of its randomised spec ([`randomized`]`(look, seed)`).
    pub seed: u64,
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// Pixel size in µm.
    pub um_per_px: f64,
    /// Connected components of the mask.
    pub capillary_count: u32,
    /// Mask pixels ÷ all pixels.
    pub area_fraction: f64,
}

/// Header of a dataset's `index.csv`.
pub const DATASET_CSV_HEADER: &str =
    "file,look,seed,width,height,um_per_px,capillary_count,area_fraction";

/// Writes `count` training images: item `i` is frame 0 of
/// `randomized(looks[i % looks.len()], dataset_item_seed(seed, i))`, written as
/// `dir/images/<look>-<i:05>.png` (RGB 8-bit), `dir/masks/<look>-<i:05>.png` (8-bit grey,
/// 255 = vessel lumen, 0 = anything else, artefacts included) and one row of `dir/index.csv`
/// (header [`DATASET_CSV_HEADER`]). An empty `looks` means every look.
pub fn write_dataset(
    dir: &Path,
    count: u32,
    seed: u64,
    looks: &[Look],
) -> Result<Vec<DatasetItem>, SynthError> {
    let all = Look::all();
    let looks = if looks.is_empty() { &all[..] } else { looks };
    let images = dir.join("images");
    let masks = dir.join("masks");
    for d in [&images, &masks] {
        std::fs::create_dir_all(d).map_err(|e| SynthError::io(d, e))?;
    }
    let mut items = Vec::with_capacity(count as usize);
    let mut csv = String::from(DATASET_CSV_HEADER);
    csv.push('\n');
    for i in 0..count {
        let look = looks[i as usize % looks.len()];
        let item_seed = dataset_item_seed(seed, i);
        let spec = randomized(look, item_seed);
        let frame = render_still(&spec)?;
        let file = format!("{}-{i:05}.png", look.as_str());
        write_rgb_png(&images.join(&file), spec.width, spec.height, &frame.rgb)?;
        write_gray_png(&masks.join(&file), spec.width, spec.height, &frame.mask)?;
        let item = DatasetItem {
            file,
            look,
            seed: item_seed,
            width: spec.width,
            height: spec.height,
            um_per_px: spec.um_per_px,
            capillary_count: frame.truth.capillary_count,
            area_fraction: frame.truth.area_fraction,
        };
        let _ = writeln!(
            csv,
            "{},{},{},{},{},{},{},{}",
            item.file,
            look.as_str(),
            item.seed,
            item.width,
            item.height,
            item.um_per_px,
            item.capillary_count,
            item.area_fraction
        );
        items.push(item);
    }
    let index: PathBuf = dir.join("index.csv");
    std::fs::write(&index, csv).map_err(|e| SynthError::io(&index, e))?;
    Ok(items)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::Artefacts;

    #[test]
    fn dataset_writes_images_masks_and_index() {
        let dir = tempfile::tempdir().unwrap();
        let looks = [Look::Skin, Look::Sublingual, Look::Nailfold];
        let items = write_dataset(dir.path(), 4, 9, &looks).unwrap();
        assert_eq!(items.len(), 4);
        let index = std::fs::read_to_string(dir.path().join("index.csv")).unwrap();
        let lines: Vec<&str> = index.lines().collect();
        assert_eq!(lines[0], DATASET_CSV_HEADER);
        assert_eq!(lines.len(), 5);
        for (i, (item, line)) in items.iter().zip(&lines[1..]).enumerate() {
            assert_eq!(item.look, looks[i % 3]);
            assert_eq!(item.file, format!("{}-{i:05}.png", item.look.as_str()));
            let cols: Vec<&str> = line.split(',').collect();
            assert_eq!(cols.len(), 8);
            assert_eq!(cols[0], item.file);
            assert_eq!(cols[1], item.look.as_str());
            assert_eq!(cols[2].parse::<u64>().unwrap(), item.seed);
            assert_eq!(cols[6].parse::<u32>().unwrap(), item.capillary_count);
            for sub in ["images", "masks"] {
                let p = dir.path().join(sub).join(&item.file);
                let decoder = png::Decoder::new(std::fs::File::open(&p).unwrap());
                let reader = decoder.read_info().unwrap();
                let info = reader.info();
                assert_eq!((info.width, info.height), (item.width, item.height));
                let want = if sub == "images" {
                    png::ColorType::Rgb
                } else {
                    png::ColorType::Grayscale
                };
                assert_eq!(info.color_type, want);
            }
        }
    }

    #[test]
    fn stills_are_deterministic() {
        for look in Look::all() {
            let spec = SynthSpec {
                width: 320,
                height: 240,
                ..randomized(look, 5)
            };
            let (a, b) = (render_still(&spec).unwrap(), render_still(&spec).unwrap());
            assert_eq!(a, b);
            let other = render_still(&SynthSpec { seed: 6, ..spec }).unwrap();
            assert_ne!(a.rgb, other.rgb);
        }
    }

    #[test]
    fn nailfold_has_loops_in_the_mask() {
        let spec = SynthSpec::preset("nailfold").unwrap();
        let frame = render_still(&spec).unwrap();
        assert!(frame.truth.capillary_count >= 8, "{:?}", frame.truth);
        assert!(frame.truth.area_fraction > 0.01, "{:?}", frame.truth);
        // Loops are seen lengthwise: some mask column holds a long vertical run.
        let (w, h) = (spec.width as usize, spec.height as usize);
        let longest = (0..w)
            .map(|x| {
                let (mut best, mut run) = (0, 0);
                for y in 0..h {
                    run = if frame.mask[y * w + x] > 0 {
                        run + 1
                    } else {
                        0
                    };
                    best = best.max(run);
                }
                best
            })
            .max()
            .unwrap();
        assert!(longest as f64 * spec.um_per_px >= 100.0, "{longest}");
        // Vessels are red: darker in green than in red.
        let (mut red, mut green, mut n) = (0.0, 0.0, 0.0);
        for (i, m) in frame.mask.iter().enumerate() {
            if *m > 0 {
                red += frame.rgb[i * 3] as f64;
                green += frame.rgb[i * 3 + 1] as f64;
                n += 1.0;
            }
        }
        assert!(red / n > green / n + 20.0);
    }

    #[test]
    fn artefacts_never_change_the_mask() {
        let all = Artefacts {
            hairs: 4,
            bubbles: 3,
            glare: 3,
            vignetting: 0.5,
            uneven_illumination: 0.4,
            defocus_px: 4.0,
            motion_blur_px: 8.0,
            motion_blur_angle_deg: 30.0,
            tint: [1.1, 0.95, 0.9],
            focus_blur_px: 1.5,
        };
        for look in Look::all() {
            let plain = SynthSpec {
                artefacts: Artefacts::default(),
                width: 400,
                height: 300,
                ..randomized(look, 11)
            };
            let with = SynthSpec {
                artefacts: all.clone(),
                ..plain.clone()
            };
            let (a, b) = (render_still(&plain).unwrap(), render_still(&with).unwrap());
            assert_eq!(a.mask, b.mask);
            assert_eq!(a.truth, b.truth);
            assert_ne!(a.rgb, b.rgb);
        }
    }

    #[test]
    fn old_specs_still_parse() {
        let spec: SynthSpec =
            serde_json::from_str(r#"{"look": "sublingual", "width": 320, "height": 240}"#).unwrap();
        assert_eq!(spec.artefacts, Artefacts::default());
        assert_eq!(spec.contrast, 1.0);
        let spec: SynthSpec =
            serde_json::from_str(r#"{"look": "nailfold", "artefacts": {"hairs": 2}}"#).unwrap();
        assert_eq!(spec.artefacts.hairs, 2);
        assert_eq!(spec.artefacts.tint, [1.0; 3]);
    }
}
