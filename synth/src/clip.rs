//! Writing a whole clip to disk: MP4, PNG frames and masks, truth CSVs and the spec.

use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};

use crate::encode::Mp4Writer;
use crate::png_out::{write_gray_png, write_rgb_png};
use crate::render::Renderer;
use crate::spec::SynthSpec;
use crate::truth::{FrameTruth, VesselTruth};
use crate::SynthError;

/// Which artefacts [`write_clip`] produces (truth CSVs and `spec.json` are always written).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Outputs {
    /// Write `<out_dir>/<name>.mp4`.
    pub mp4: bool,
    /// Write `<out_dir>/<name>/frames/NNNNNN.png`.
    pub png: bool,
    /// Write `<out_dir>/<name>/masks/NNNNNN.png`.
    pub masks: bool,
}

impl Default for Outputs {
    /// MP4 only.
    fn default() -> Self {
        Outputs {
            mp4: true,
            png: false,
            masks: false,
        }
    }
}

/// What [`write_clip`] wrote.
#[derive(Clone, Debug, PartialEq)]
pub struct ClipWritten {
    /// Path of the MP4, when requested.
    pub mp4: Option<PathBuf>,
    /// Folder holding truth files, spec and (if requested) PNGs: `<out_dir>/<name>`.
    pub dir: PathBuf,
    /// Number of frames rendered.
    pub frames: u32,
    /// Per-frame truth, one entry per frame.
    pub truth: Vec<FrameTruth>,
    /// Per-vessel truth.
    pub vessels: Vec<VesselTruth>,
}

fn check_name(name: &str) -> Result<(), SynthError> {
    let reason = if name.is_empty() {
        Some("must not be empty")
    } else if name.contains(['/', '\\']) || name == "." || name == ".." {
        Some("must be a plain file name without path separators")
    } else if name.chars().any(|c| c.is_control()) {
        Some("must not contain control characters")
    } else {
        None
    };
    match reason {
        Some(reason) => Err(SynthError::InvalidName {
            name: name.to_string(),
            reason,
        }),
        None => Ok(()),
    }
}

fn write_text(path: &Path, text: &str) -> Result<(), SynthError> {
    fs::write(path, text).map_err(|e| SynthError::io(path, e))
}

fn create_dir(path: &Path) -> Result<(), SynthError> {
    fs::create_dir_all(path).map_err(|e| SynthError::io(path, e))
}

/// CSV of per-frame truth (header + one row per frame; floats in shortest round-trip form).
pub fn frames_csv(truth: &[FrameTruth]) -> String {
    let mut out =
        String::from("frame_index,pts_ns,capillary_count,area_fraction,centerline_length_um\n");
    for t in truth {
        let _ = writeln!(
            out,
            "{},{},{},{},{}",
            t.frame_index, t.pts_ns, t.capillary_count, t.area_fraction, t.centerline_length_um
        );
    }
    out
}

/// CSV of per-vessel truth.
pub fn vessels_csv(vessels: &[VesselTruth]) -> String {
    let mut out = String::from("vessel_id,kind,perfused,length_um,diameter_um,velocity_um_s\n");
    for v in vessels {
        let _ = writeln!(
            out,
            "{},{},{},{},{},{}",
            v.vessel_id, v.kind, v.perfused, v.length_um, v.diameter_um, v.velocity_um_s
        );
    }
    out
}

/// Renders the clip described by `spec` and writes the requested `outputs`:
/// `out_dir/<name>.mp4`, `out_dir/<name>/frames/000000.png…`, `out_dir/<name>/masks/000000.png…`,
/// and always `out_dir/<name>/truth_frames.csv`, `truth_vessels.csv` and `spec.json`.
pub fn write_clip(
    spec: &SynthSpec,
    out_dir: &Path,
    name: &str,
    outputs: &Outputs,
) -> Result<ClipWritten, SynthError> {
    spec.validate()?;
    check_name(name)?;
    let dir = out_dir.join(name);
    create_dir(&dir)?;
    let frames_dir = dir.join("frames");
    let masks_dir = dir.join("masks");
    if outputs.png {
        create_dir(&frames_dir)?;
    }
    if outputs.masks {
        create_dir(&masks_dir)?;
    }
    let spec_path = dir.join("spec.json");
    let json = serde_json::to_string_pretty(spec).map_err(|source| SynthError::Json {
        path: spec_path.clone(),
        source,
    })?;
    write_text(&spec_path, &(json + "\n"))?;

    let mut renderer = Renderer::new(spec)?;
    let mut mp4 = if outputs.mp4 {
        Some(Mp4Writer::create(
            &out_dir.join(format!("{name}.mp4")),
            spec.width,
            spec.height,
            spec.fps,
        )?)
    } else {
        None
    };
    let mut truth = Vec::with_capacity(spec.frames as usize);
    for i in 0..spec.frames {
        let frame = renderer.render(i);
        if let Some(writer) = mp4.as_mut() {
            writer.push_rgb(&frame.rgb)?;
        }
        let file = format!("{i:06}.png");
        if outputs.png {
            write_rgb_png(&frames_dir.join(&file), spec.width, spec.height, &frame.rgb)?;
        }
        if outputs.masks {
            write_gray_png(&masks_dir.join(&file), spec.width, spec.height, &frame.mask)?;
        }
        truth.push(frame.truth);
    }
    let mp4 = mp4.map(Mp4Writer::finish).transpose()?;
    let vessels = renderer.vessels().to_vec();
    write_text(&dir.join("truth_frames.csv"), &frames_csv(&truth))?;
    write_text(&dir.join("truth_vessels.csv"), &vessels_csv(&vessels))?;
    tracing::info!(dir = %dir.display(), frames = spec.frames, "synthetic clip written");
    Ok(ClipWritten {
        mp4,
        dir,
        frames: spec.frames,
        truth,
        vessels,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked() {
        assert!(check_name("demo-skin_1").is_ok());
        for bad in ["", "a/b", "..", "x\\y", "a\nb"] {
            assert!(
                matches!(check_name(bad), Err(SynthError::InvalidName { .. })),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn csv_has_header_and_rows() {
        let t = FrameTruth {
            frame_index: 2,
            pts_ns: 80_000_000,
            capillary_count: 7,
            area_fraction: 0.0125,
            centerline_length_um: 1234.5,
        };
        let csv = frames_csv(&[t]);
        assert_eq!(
            csv,
            "frame_index,pts_ns,capillary_count,area_fraction,centerline_length_um\n2,80000000,7,0.0125,1234.5\n"
        );
    }
}
