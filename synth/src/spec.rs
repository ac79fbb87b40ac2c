//! The clip specification ([`SynthSpec`]), its presets and its validation.

use serde::{Deserialize, Serialize};

use crate::error::SynthError;

/// Which imaging modality the synthetic clip imitates.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Look {
    /// Skin capillaroscopy: pale textured skin with small red/purple dots, commas and hairpin loops.
    #[default]
    Skin,
    /// Sublingual SDF/IDF: grayscale-looking, dark capillary networks plus larger venules.
    Sublingual,
    /// Nailfold capillaroscopy: rows of pink/red hairpin loops seen lengthwise, apex towards
    /// the nail edge (top of the frame), on a pale pinkish/yellowish background.
    Nailfold,
}

impl Look {
    /// The kebab-case name used in JSON (`"skin"`, `"sublingual"`).
    pub fn as_str(self) -> &'static str {
        match self {
            Look::Skin => "skin",
            Look::Sublingual => "sublingual",
            Look::Nailfold => "nailfold",
        }
    }

    /// Every look, in a fixed order.
    pub fn all() -> [Look; 3] {
        [Look::Skin, Look::Sublingual, Look::Nailfold]
    }

    /// Parses a look name (`"skin"`, `"sublingual"`, `"nailfold"`).
    pub fn parse(name: &str) -> Option<Look> {
        Look::all().into_iter().find(|l| l.as_str() == name)
    }
}

/// Imaging artefacts drawn on top of the rendered tissue. They never change the mask: the
/// lumen mask stays exactly the vessels, even where a hair, bubble or glare covers one.
/// Hairs are semi-transparent where they cross the field (opacity 0.55-0.9), so vessels under
/// them remain faintly visible. The default is "no artefacts".
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Artefacts {
    /// Number of hairs (dark brown/black, 30-120 µm wide, long, slightly curved, soft-edged).
    pub hairs: u32,
    /// Number of air bubbles (circles 50-400 µm across with a dark rim and a brighter centre).
    pub bubbles: u32,
    /// Number of specular glare spots/streaks (saturated, near-white).
    pub glare: u32,
    /// Extra radial darkening towards the corners (0 = none, 0.6 = corners at ~40 %).
    pub vignetting: f64,
    /// Strength of low-frequency multiplicative illumination unevenness (0 = none, 0.5 =
    /// brightness varies by about ±50 %).
    pub uneven_illumination: f64,
    /// Maximum extra Gaussian blur (pixels) of spatially varying defocus (0 = none).
    pub defocus_px: f64,
    /// Length in pixels of a directional (motion) blur of the whole frame (0 = none).
    pub motion_blur_px: f64,
    /// Direction of the motion blur in degrees (0 = along x).
    pub motion_blur_angle_deg: f64,
    /// Per-channel gains (R, G, B) applied to the whole frame: colour tint / white balance.
    pub tint: [f64; 3],
    /// Gaussian blur (sigma, pixels) of the whole finished frame, moving red cells included: an out-of-focus
    /// clip for image-quality checks (0 = none; `defocus_px` instead varies across the field).
    pub focus_blur_px: f64,
}

impl Default for Artefacts {
    fn default() -> Self {
        Artefacts {
            hairs: 0,
            bubbles: 0,
            glare: 0,
            vignetting: 0.0,
            uneven_illumination: 0.0,
            defocus_px: 0.0,
            motion_blur_px: 0.0,
            motion_blur_angle_deg: 0.0,
            tint: [1.0, 1.0, 1.0],
            focus_blur_px: 0.0,
        }
    }
}

impl Artefacts {
    /// True when no artefact is drawn at all.
    pub fn is_none(&self) -> bool {
        *self == Artefacts::default()
    }

    fn validate(&self) -> Result<(), SynthError> {
        let bad =
            |field: &'static str, message: String| Err(SynthError::InvalidSpec { field, message });
        for (name, v) in [
            ("artefacts.hairs", self.hairs),
            ("artefacts.bubbles", self.bubbles),
            ("artefacts.glare", self.glare),
        ] {
            if v > 200 {
                return bad(name, format!("{name} must be <= 200 (got {v})"));
            }
        }
        for (name, v, hi) in [
            ("artefacts.vignetting", self.vignetting, 1.0),
            (
                "artefacts.uneven_illumination",
                self.uneven_illumination,
                1.0,
            ),
            ("artefacts.defocus_px", self.defocus_px, 16.0),
            ("artefacts.focus_blur_px", self.focus_blur_px, 32.0),
            ("artefacts.motion_blur_px", self.motion_blur_px, 64.0),
        ] {
            if !(v.is_finite() && (0.0..=hi).contains(&v)) {
                return bad(name, format!("{name} must be within 0..={hi} (got {v})"));
            }
        }
        if !self.motion_blur_angle_deg.is_finite() {
            return bad(
                "artefacts.motion_blur_angle_deg",
                "artefacts.motion_blur_angle_deg must be finite".to_string(),
            );
        }
        if !self
            .tint
            .iter()
            .all(|g| g.is_finite() && (0.2..=3.0).contains(g))
        {
            return bad(
                "artefacts.tint",
                format!(
                    "artefacts.tint gains must be within 0.2..=3 (got {:?})",
                    self.tint
                ),
            );
        }
        Ok(())
    }
}

/// Everything that determines a synthetic clip. Same spec (including `seed`) → identical frames.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SynthSpec {
    /// Modality to imitate.
    pub look: Look,
    /// Frame width in pixels (even, 64..=8192).
    pub width: u32,
    /// Frame height in pixels (even, 64..=8192).
    pub height: u32,
    /// Physical pixel size in micrometres; all vessel sizes are drawn in µm and scaled by it.
    pub um_per_px: f64,
    /// Frames per second (1..=240); sets PTS and the red-cell displacement per frame.
    pub fps: u32,
    /// Number of frames in the clip (1..=100000).
    pub frames: u32,
    /// Seed of every random choice.
    pub seed: u64,
    /// Number of vessels per field of view (skin: loops/dots/commas; sublingual: capillary
    /// network segments, venules come on top). With drift the scene is larger than one field
    /// and holds proportionally more vessels.
    pub capillaries: u32,
    /// Share of vessels with red-cell flow (0..=1), applied exactly (rounded) not randomly.
    pub perfused_fraction: f64,
    /// Whole-field drift `[x, y]` in pixels per frame; frame `i` is shifted by
    /// `round(drift * i)` whole pixels (image and mask alike).
    pub drift_px_per_frame: [f64; 2],
    /// Standard deviation of the additive Gaussian sensor noise, in 8-bit grey levels.
    pub noise_sigma: f64,
    /// Standard deviation of the optical blur in pixels.
    pub blur_sigma_px: f64,
    /// Multiplier of the vessels' contrast (absorbance), 1 = the look's usual contrast.
    pub contrast: f64,
    /// Multiplier of skin vessel sizes (lumen width, loop length, halo), 1 = the look's usual sizes.
    /// Real skin frames range from small sharp dots to large blurred loop clusters.
    pub vessel_scale: f64,
    /// Imaging artefacts on top of the tissue (never in the mask); default none.
    pub artefacts: Artefacts,
}

impl Default for SynthSpec {
    /// The `"skin"` preset.
    fn default() -> Self {
        SynthSpec {
            look: Look::Skin,
            width: 1920,
            height: 1080,
            um_per_px: 2.2,
            fps: 25,
            frames: 50,
            seed: 1,
            capillaries: 45,
            perfused_fraction: 0.8,
            drift_px_per_frame: [0.25, 0.1],
            noise_sigma: 2.0,
            blur_sigma_px: 1.6,
            contrast: 1.0,
            vessel_scale: 1.0,
            artefacts: Artefacts::default(),
        }
    }
}

const PRESET_NAMES: &[&str] = &["skin", "sublingual", "sublingual-hd", "nailfold"];

impl SynthSpec {
    /// A named preset: `"skin"` (1920x1080 RGB, 2.2 µm/px, 25 fps), `"sublingual"` (640x480
    /// grayscale-looking, 1.5 µm/px, 25 fps), `"sublingual-hd"` (1280x960, 0.75 µm/px, 25 fps)
    /// or `"nailfold"` (1024x768 RGB, 1.2 µm/px, 25 fps).
    pub fn preset(name: &str) -> Option<SynthSpec> {
        match name {
            "skin" => Some(SynthSpec::default()),
            "sublingual" => Some(SynthSpec {
                look: Look::Sublingual,
                width: 640,
                height: 480,
                um_per_px: 1.5,
                fps: 25,
                frames: 75,
                seed: 1,
                capillaries: 50,
                perfused_fraction: 0.85,
                drift_px_per_frame: [0.1, 0.05],
                noise_sigma: 3.0,
                blur_sigma_px: 0.9,
                ..SynthSpec::default()
            }),
            "nailfold" => Some(SynthSpec {
                look: Look::Nailfold,
                width: 1024,
                height: 768,
                um_per_px: 1.2,
                fps: 25,
                frames: 50,
                seed: 1,
                capillaries: 40,
                perfused_fraction: 0.9,
                drift_px_per_frame: [0.15, 0.05],
                noise_sigma: 2.0,
                blur_sigma_px: 1.2,
                ..SynthSpec::default()
            }),
            "sublingual-hd" => Some(SynthSpec {
                width: 1280,
                height: 960,
                um_per_px: 0.75,
                drift_px_per_frame: [0.2, 0.1],
                blur_sigma_px: 1.5,
                ..SynthSpec::preset("sublingual")?
            }),
            _ => None,
        }
    }

    /// Names accepted by [`SynthSpec::preset`].
    pub fn preset_names() -> &'static [&'static str] {
        PRESET_NAMES
    }

    /// Whole-pixel shift of frame `i`: `round(drift * i)`.
    pub fn drift_offset(&self, frame_index: u32) -> [i64; 2] {
        [
            (self.drift_px_per_frame[0] * frame_index as f64).round() as i64,
            (self.drift_px_per_frame[1] * frame_index as f64).round() as i64,
        ]
    }

    /// Presentation timestamp of frame `i` in nanoseconds (`i * 1e9 / fps`).
    pub fn pts_ns(&self, frame_index: u32) -> u64 {
        (frame_index as u128 * 1_000_000_000u128 / self.fps.max(1) as u128) as u64
    }

    /// Checks every field; the error names the first offending field (e.g. "width must be >= 64").
    pub fn validate(&self) -> Result<(), SynthError> {
        fn bad(field: &'static str, message: String) -> Result<(), SynthError> {
            Err(SynthError::InvalidSpec { field, message })
        }
        for (field, v) in [("width", self.width), ("height", self.height)] {
            if v < 64 {
                return bad(field, format!("{field} must be >= 64 (got {v})"));
            }
            if v > 8192 {
                return bad(field, format!("{field} must be <= 8192 (got {v})"));
            }
            if v % 2 != 0 {
                return bad(
                    field,
                    format!("{field} must be even for H.264/I420 (got {v})"),
                );
            }
        }
        if !(self.um_per_px.is_finite() && (0.05..=50.0).contains(&self.um_per_px)) {
            return bad(
                "um_per_px",
                format!(
                    "um_per_px must be within 0.05..=50 (got {})",
                    self.um_per_px
                ),
            );
        }
        if !(1..=240).contains(&self.fps) {
            return bad(
                "fps",
                format!("fps must be within 1..=240 (got {})", self.fps),
            );
        }
        if !(1..=100_000).contains(&self.frames) {
            return bad(
                "frames",
                format!("frames must be within 1..=100000 (got {})", self.frames),
            );
        }
        if self.capillaries > 5000 {
            return bad(
                "capillaries",
                format!("capillaries must be <= 5000 (got {})", self.capillaries),
            );
        }
        if !(self.perfused_fraction.is_finite() && (0.0..=1.0).contains(&self.perfused_fraction)) {
            return bad(
                "perfused_fraction",
                format!(
                    "perfused_fraction must be within 0..=1 (got {})",
                    self.perfused_fraction
                ),
            );
        }
        for d in self.drift_px_per_frame {
            if !(d.is_finite() && d.abs() <= 32.0) {
                return bad(
                    "drift_px_per_frame",
                    format!(
                        "drift_px_per_frame components must be finite and within -32..=32 (got {:?})",
                        self.drift_px_per_frame
                    ),
                );
            }
        }
        let [sx, sy] = self.drift_span();
        let canvas = (self.width as u64 + sx) * (self.height as u64 + sy);
        let field = self.width as u64 * self.height as u64;
        if canvas > 4 * field {
            return bad(
                "drift_px_per_frame",
                format!(
                    "drift_px_per_frame moves the field too far over {} frames: the scene would be {}x{} px, more than 4 times the field; lower the drift or the frame count",
                    self.frames,
                    self.width as u64 + sx,
                    self.height as u64 + sy
                ),
            );
        }
        if !(self.noise_sigma.is_finite() && (0.0..=64.0).contains(&self.noise_sigma)) {
            return bad(
                "noise_sigma",
                format!(
                    "noise_sigma must be within 0..=64 (got {})",
                    self.noise_sigma
                ),
            );
        }
        if !(self.blur_sigma_px.is_finite() && (0.0..=16.0).contains(&self.blur_sigma_px)) {
            return bad(
                "blur_sigma_px",
                format!(
                    "blur_sigma_px must be within 0..=16 (got {})",
                    self.blur_sigma_px
                ),
            );
        }
        if !(self.contrast.is_finite() && (0.1..=4.0).contains(&self.contrast)) {
            return bad(
                "contrast",
                format!("contrast must be within 0.1..=4 (got {})", self.contrast),
            );
        }
        if !(self.vessel_scale.is_finite() && (0.25..=4.0).contains(&self.vessel_scale)) {
            return bad(
                "vessel_scale",
                format!(
                    "vessel_scale must be within 0.25..=4 (got {})",
                    self.vessel_scale
                ),
            );
        }
        self.artefacts.validate()
    }

    /// Extra scene size `[x, y]` (pixels) needed so that every frame's field lies inside it.
    pub(crate) fn drift_span(&self) -> [u64; 2] {
        let last = self.drift_offset(self.frames.saturating_sub(1));
        [last[0].unsigned_abs(), last[1].unsigned_abs()]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_are_valid() {
        for name in SynthSpec::preset_names() {
            let spec = SynthSpec::preset(name).expect("preset exists");
            spec.validate().expect("preset validates");
        }
        assert_eq!(SynthSpec::default(), SynthSpec::preset("skin").unwrap());
        assert!(SynthSpec::preset("nope").is_none());
    }

    #[test]
    fn json_round_trip_and_defaults() {
        let spec = SynthSpec::preset("sublingual").unwrap();
        let text = serde_json::to_string(&spec).unwrap();
        assert!(text.contains("\"look\":\"sublingual\""));
        let back: SynthSpec = serde_json::from_str(&text).unwrap();
        assert_eq!(back, spec);
        let partial: SynthSpec = serde_json::from_str(r#"{"width": 320, "height": 240}"#).unwrap();
        assert_eq!(partial.width, 320);
        assert_eq!(partial.um_per_px, 2.2);
        assert!(serde_json::from_str::<SynthSpec>(r#"{"widht": 3}"#).is_err());
    }

    fn field_of(spec: &SynthSpec) -> (&'static str, String) {
        match spec.validate() {
            Err(SynthError::InvalidSpec { field, message }) => (field, message),
            other => panic!("expected InvalidSpec, got {other:?}"),
        }
    }

    #[test]
    fn validation_errors_name_the_field() {
        let ok = SynthSpec::default();
        let cases: Vec<(SynthSpec, &str)> = vec![
            (
                SynthSpec {
                    width: 10,
                    ..ok.clone()
                },
                "width",
            ),
            (
                SynthSpec {
                    height: 101,
                    ..ok.clone()
                },
                "height",
            ),
            (
                SynthSpec {
                    um_per_px: 0.0,
                    ..ok.clone()
                },
                "um_per_px",
            ),
            (
                SynthSpec {
                    um_per_px: f64::NAN,
                    ..ok.clone()
                },
                "um_per_px",
            ),
            (
                SynthSpec {
                    fps: 0,
                    ..ok.clone()
                },
                "fps",
            ),
            (
                SynthSpec {
                    frames: 0,
                    ..ok.clone()
                },
                "frames",
            ),
            (
                SynthSpec {
                    capillaries: 100_000,
                    ..ok.clone()
                },
                "capillaries",
            ),
            (
                SynthSpec {
                    perfused_fraction: 1.5,
                    ..ok.clone()
                },
                "perfused_fraction",
            ),
            (
                SynthSpec {
                    drift_px_per_frame: [f64::INFINITY, 0.0],
                    ..ok.clone()
                },
                "drift_px_per_frame",
            ),
            (
                SynthSpec {
                    drift_px_per_frame: [20.0, 0.0],
                    frames: 1000,
                    ..ok.clone()
                },
                "drift_px_per_frame",
            ),
            (
                SynthSpec {
                    noise_sigma: -1.0,
                    ..ok.clone()
                },
                "noise_sigma",
            ),
            (
                SynthSpec {
                    blur_sigma_px: 100.0,
                    ..ok.clone()
                },
                "blur_sigma_px",
            ),
            (
                SynthSpec {
                    vessel_scale: 0.0,
                    ..ok.clone()
                },
                "vessel_scale",
            ),
        ];
        for (spec, want) in cases {
            let (field, message) = field_of(&spec);
            assert_eq!(field, want);
            assert!(message.starts_with(want), "{message}");
            let shown = spec.validate().unwrap_err().to_string();
            assert!(shown.contains(want), "{shown}");
        }
        let (_, msg) = field_of(&SynthSpec { width: 10, ..ok });
        assert!(msg.contains("width must be >= 64"), "{msg}");
    }

    #[test]
    fn pts_and_drift() {
        let spec = SynthSpec {
            fps: 3,
            drift_px_per_frame: [0.5, -1.25],
            ..SynthSpec::default()
        };
        assert_eq!(spec.pts_ns(0), 0);
        assert_eq!(spec.pts_ns(1), 333_333_333);
        assert_eq!(spec.pts_ns(3), 1_000_000_000);
        assert_eq!(spec.drift_offset(3), [2, -4]);
    }
}
