//! The run configuration: plain serde structs with defaults, validated as a whole so every problem is reported at
//! once with the key it concerns. The CLI only overrides fields.

use std::path::{Path, PathBuf};

use capflow_operators::flow::FlowConfig;
use capflow_operators::quality::QualityConfig;
use capflow_operators::vessels::VesselParams;
use capflow_operators::{SegmentationConfig, WindowSpec};
use capflow_sinks::S3Options;
use serde::{Deserialize, Serialize};

/// The embedded default configuration (`configs/default.toml`): the bundled sample clips of two patients.
pub const DEFAULT_CONFIG: &str = include_str!("../../configs/default.toml");

/// A whole run.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Where the tables go.
    pub output: OutputConfig,
    /// The segmentation model.
    pub model: ModelConfig,
    /// Per-site and per-patient event-time windows.
    pub windows: WindowConfig,
    /// How often frames are segmented.
    pub segmentation: SegmentationConfig,
    /// Vessel geometry (TVD, diameters).
    pub vessels: VesselConfig,
    /// Flow analysis (PPV, PVD, MFI).
    pub flow: FlowConfig,
    /// Image-quality thresholds (MIQS-style scores).
    pub quality: QualityConfig,
    /// Decoding and backpressure.
    pub ingest: IngestConfig,
    /// Bounds on frame sizes and the number of streams, against hostile or broken inputs.
    pub limits: LimitsConfig,
    /// The streams to analyse.
    pub streams: Vec<StreamConfig>,
    /// A study manifest (CSV or Parquet, one recording per row) whose rows are added to `streams`; relative to the
    /// config.
    pub manifest: Option<String>,
    /// Device profiles by name (`[profiles.<name>]`): the pixel size and frame rate of a camera, shared by the streams
    /// (and manifest rows) that name it. Added to the built-in [`BUILTIN_PROFILES`].
    pub profiles: std::collections::BTreeMap<String, DeviceProfile>,
    /// Timely's process settings (`-w`, `-n`, `-h` on the command line win); not part of the job's identity, so a
    /// resume may use another cluster shape.
    pub cluster: ClusterConfig,
    /// Status, metrics and the dashboard over HTTP (`--http` on the command line wins); not part of the job's
    /// identity.
    pub http: HttpConfig,
}

/// Where `/healthz`, `/metrics`, `/status` and the bedside dashboard are served while a run goes on.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpConfig {
    /// `IP:PORT` to serve on, e.g. `127.0.0.1:9464` (a bare port means loopback); unset: no server. Any address
    /// other than loopback needs a bearer token.
    pub listen: Option<String>,
    /// Environment variable holding the bearer token that every endpoint but `/healthz` and the dashboard page then
    /// requires (the token itself never goes in a config file).
    pub token_env: String,
    /// Hours of patient windows the dashboard's trend keeps.
    pub trend_hours: f64,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            listen: None,
            token_env: "CAPFLOW_HTTP_TOKEN".into(),
            trend_hours: 6.0,
        }
    }
}

impl HttpConfig {
    /// Every problem of the HTTP settings, each naming its key.
    pub fn problems(&self) -> Vec<String> {
        let mut p = Vec::new();
        if let Some(listen) = &self.listen {
            if crate::http::parse_listen(listen).is_err() {
                p.push(format!(
                    "http.listen {listen:?} is not PORT or IP:PORT (e.g. 127.0.0.1:9464)"
                ));
            }
        }
        if self.token_env.is_empty() {
            p.push("http.token_env must name an environment variable".into());
        }
        if !(self.trend_hours.is_finite() && self.trend_hours > 0.0 && self.trend_hours <= 168.0) {
            p.push("http.trend_hours must be within 0..=168 hours".into());
        }
        p
    }
}

/// How many workers and processes run the dataflow, and where the processes are.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClusterConfig {
    /// Worker threads per process.
    pub workers: usize,
    /// Processes in the cluster (each started with its own `-p INDEX`).
    pub processes: usize,
    /// `host:port` of every process, in process order (default `localhost:2101`, `2102`, …).
    pub hosts: Vec<String>,
    /// Seconds a process waits for its peers to connect before it gives up with an error naming them.
    pub peer_timeout_s: f64,
}

impl ModelConfig {
    /// Inference threads per worker and ONNX Runtime threads per session for each of `local_workers` workers (see
    /// `inference_threads` and `intra_threads`): by default one single-threaded session per core of the worker's
    /// share, at most [`AUTO_SESSIONS_MAX`] of them (each session has its own memory arena, and a worker has only
    /// `ingest.max_pending_frames` frames in flight to share among them); further cores become intra-op threads.
    pub fn inference_layout(&self, local_workers: usize) -> (usize, usize) {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let share = (cores / local_workers.max(1)).max(1);
        match (self.inference_threads, self.intra_threads) {
            (0, 0) => {
                let sessions = share.min(AUTO_SESSIONS_MAX);
                (sessions, share / sessions)
            }
            (0, intra) => ((share / intra).max(1), intra),
            (threads, 0) => (threads, (share / threads).max(1)),
            (threads, intra) => (threads, intra),
        }
    }

    /// Inference threads per worker and the ONNX Runtime session settings of each, for `local_workers` workers.
    pub fn session_settings(
        &self,
        local_workers: usize,
    ) -> (usize, capflow_operators::SessionSettings) {
        let (threads, intra) = self.inference_layout(local_workers);
        (
            threads,
            capflow_operators::SessionSettings {
                intra_threads: intra,
                spinning: self.intra_spinning,
            },
        )
    }
}

impl ClusterConfig {
    /// Every problem of the cluster settings, each naming its key.
    pub fn problems(&self) -> Vec<String> {
        let mut p = Vec::new();
        if !(1..=1024).contains(&self.workers) {
            p.push("cluster.workers must be within 1..=1024 (worker threads per process)".into());
        }
        if !(1..=1024).contains(&self.processes) {
            p.push("cluster.processes must be within 1..=1024".into());
        }
        if !self.hosts.is_empty() && self.hosts.len() < self.processes {
            p.push(format!(
                "cluster.hosts lists {} addresses but cluster.processes is {}: give one host:port per process",
                self.hosts.len(),
                self.processes
            ));
        }
        for (i, host) in self.hosts.iter().enumerate() {
            if host
                .rsplit_once(':')
                .is_none_or(|(h, port)| h.is_empty() || port.parse::<u16>().is_err())
            {
                p.push(format!("cluster.hosts[{i}] {host:?} is not host:port"));
            }
        }
        if !(self.peer_timeout_s.is_finite() && (0.5..=86_400.0).contains(&self.peer_timeout_s)) {
            p.push("cluster.peer_timeout_s must be within 0.5..=86400 seconds".into());
        }
        p
    }
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            workers: 1,
            processes: 1,
            hosts: Vec::new(),
            peer_timeout_s: 60.0,
        }
    }
}

/// A camera or microscope: what its streams share.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceProfile {
    /// Pixel size at the camera's working resolution, µm per pixel (calibrate with a stage micrometer).
    pub um_per_px: f64,
    /// Nominal frame rate, frames per second.
    #[serde(default = "default_fps")]
    pub fps: f64,
    /// Frame width in pixels, if known: with `height`, the expected cost that balances streams across workers.
    #[serde(default)]
    pub width: Option<u32>,
    /// Frame height in pixels, if known.
    #[serde(default)]
    pub height: Option<u32>,
    /// Free text: device, objective, resolution, where the calibration came from.
    #[serde(default)]
    pub description: String,
    /// A grayscale camera (sublingual SDF/IDF): its streams are decoded to one luma plane, not RGB.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub grayscale: bool,
}

/// A built-in device profile: name, µm per pixel, fps, width, height.
pub type BuiltinProfile = (&'static str, f64, f64, u32, u32);

/// Profiles every config knows: `hdmia-skin`, the replaced system's skin capillaroscope (1920×1080, 2.2 µm per
/// pixel, the constant its code uses, 25 fps). Sublingual SDF/IDF pixel sizes vary by device and resolution and are
/// not well published, so they are left to `[profiles.<name>]` with a measured value.
pub const BUILTIN_PROFILES: &[BuiltinProfile] = &[("hdmia-skin", 2.2, 25.0, 1920, 1080)];

/// Output location and table layout.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OutputConfig {
    /// A folder, `file://…`, or `s3://bucket/prefix`.
    pub location: String,
    /// Endpoint, region and credentials for `s3://` (else the standard AWS_* environment variables).
    pub s3: S3Options,
    /// Rows of the `frames` table per Parquet part, per stream (replays).
    pub frames_per_part: usize,
    /// Live runs: seconds of event time per `frames` part, per stream. A part is written once the watermark passes
    /// its end, so a crash loses at most this much of the frame rows (windows are written as they close).
    pub live_frames_part_s: f64,
    /// Windows of the `sites` and `patients` tables per Parquet part, per patient.
    pub windows_per_part: usize,
    /// How long a write keeps retrying while the store is unreachable before the run fails, seconds. The pipeline
    /// waits meanwhile (memory stays bounded); committed parts are never touched.
    pub retry_timeout_s: f64,
    /// Replace every patient id by a keyed pseudonym (`pid-` + 32 hex digits) before anything is analysed, so that
    /// identifiers never reach object names, rows or logs. The key is read from `pseudonym_key_env`.
    pub pseudonymise: bool,
    /// Write one evidence image per site window (its first segmented frame with the vessels drawn) under
    /// `<root>/evidence/`, referenced from the `sites` table's `evidence_path`.
    pub evidence: bool,
    /// Environment variable holding the pseudonymisation key (at least 16 bytes; keep it, the same key gives the
    /// same pseudonyms).
    pub pseudonym_key_env: String,
}

impl Default for OutputConfig {
    fn default() -> Self {
        OutputConfig {
            location: "./capflow-out".into(),
            s3: S3Options::default(),
            frames_per_part: 10_000,
            live_frames_part_s: 60.0,
            windows_per_part: 360,
            retry_timeout_s: 300.0,
            pseudonymise: false,
            evidence: false,
            pseudonym_key_env: capflow_sinks::pseudonym::DEFAULT_KEY_ENV.into(),
        }
    }
}

/// Model and inference settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ModelConfig {
    /// A model card path, or `builtin` for the model compiled into capflow.
    pub card: String,
    /// Frames inferred together (same size only). 1 by default: on CPUs a batch of large frames measured slower per
    /// frame than one at a time (1080p: 37.7 against 32.7 CPU-ms), and the worker's inference thread overlaps
    /// inference with everything else anyway; larger batches pay on accelerators and with many small streams.
    pub batch_size: usize,
    /// Longest a frame waits for its inference batch to fill, ms (a partial batch runs then); batching never
    /// changes a number, so it is not part of the fingerprint (left out of its form at the default, so outputs
    /// written before it existed keep theirs).
    #[serde(skip_serializing_if = "is_default_batch_wait")]
    pub batch_max_wait_ms: u64,
    /// ONNX Runtime intra-op threads per session; 0 = this machine's cores divided among the workers of every
    /// cluster process on this host and their inference threads (at least 1), so workers × inference threads ×
    /// intra-op threads never exceeds the cores.
    pub intra_threads: usize,
    /// Inference threads per worker, each with its own ONNX Runtime session, taking batches in turn; 0 = the cores
    /// divided among the workers (at most [`AUTO_SESSIONS_MAX`]), divided by `intra_threads` when that is set (at
    /// least 1). Several single-threaded
    /// sessions on different frames use the cores better than one session splitting each operator (see
    /// `operators/src/inference.rs`). Speed only (results come back in order), so not part of the fingerprint.
    #[serde(skip_serializing_if = "is_zero")]
    pub inference_threads: usize,
    /// Whether idle ONNX Runtime threads spin-wait (its own default) instead of sleeping. Off by default: the
    /// spinning takes CPU that decoding and the other operators on the same cores need. Speed only, so not part of
    /// the fingerprint.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub intra_spinning: bool,
    /// ONNX Runtime shared library; else `ORT_DYLIB_PATH`, else `.deps/onnxruntime/` as `make setup` leaves it.
    pub ort_library: Option<PathBuf>,
    /// Overrides the card's probability threshold.
    pub threshold: Option<f32>,
    /// Overrides the card's hysteresis threshold linking pieces of one capillary (`postprocess.link_threshold`).
    /// Left out of the fingerprint's form when unset, so outputs written before it existed keep theirs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub link_threshold: Option<f32>,
    /// Overrides the card's smallest capillary area, µm².
    pub min_area_um2: Option<f64>,
    /// Overrides the card's largest capillary area, µm².
    pub max_area_um2: Option<f64>,
    /// Overrides the card's largest working frame in megapixels: lower trades fine detail for speed.
    pub max_megapixels: Option<f64>,
}

const DEFAULT_BATCH_WAIT_MS: u64 = 200;

/// Most inference sessions per worker chosen automatically (`model.inference_threads = 0`).
pub const AUTO_SESSIONS_MAX: usize = 4;

fn is_zero(n: &usize) -> bool {
    *n == 0
}

fn is_default_batch_wait(ms: &u64) -> bool {
    *ms == DEFAULT_BATCH_WAIT_MS
}

impl Default for ModelConfig {
    fn default() -> Self {
        ModelConfig {
            card: "builtin".into(),
            batch_size: 1,
            batch_max_wait_ms: DEFAULT_BATCH_WAIT_MS,
            intra_threads: 0,
            inference_threads: 0,
            intra_spinning: false,
            ort_library: None,
            threshold: None,
            link_threshold: None,
            min_area_um2: None,
            max_area_um2: None,
            max_megapixels: None,
        }
    }
}

/// Event-time windows per site and patient: tumbling by default, sliding when `hop_s` is shorter than `length_s`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WindowConfig {
    /// Window length in seconds (whole milliseconds).
    pub length_s: f64,
    /// Seconds between window starts; unset = `length_s` (tumbling windows).
    pub hop_s: Option<f64>,
    /// How long after its end a window still takes late frames, seconds; later frames are counted in
    /// `late_frames` and logged.
    pub allowed_lateness_s: f64,
}

impl Default for WindowConfig {
    fn default() -> Self {
        WindowConfig {
            length_s: 10.0,
            hop_s: None,
            allowed_lateness_s: 0.0,
        }
    }
}

impl WindowConfig {
    /// Window length in milliseconds.
    pub fn length_ms(&self) -> i64 {
        (self.length_s * 1000.0).round() as i64
    }

    /// Length, hop and lateness in milliseconds.
    pub fn spec(&self) -> WindowSpec {
        let length_ms = self.length_ms();
        WindowSpec {
            length_ms,
            hop_ms: self
                .hop_s
                .map_or(length_ms, |h| (h * 1000.0).round() as i64),
            lateness_ms: (self.allowed_lateness_s * 1000.0).round() as i64,
        }
    }
}

/// Vessel geometry settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct VesselConfig {
    /// Vessels thinner than this count as small vessels in `tvd_small_mm_per_mm2`, µm (consensus: 20).
    pub small_diameter_um: f64,
    /// Centre-line spurs shorter than this are pruned as noise, µm.
    pub min_branch_um: f64,
}

impl Default for VesselConfig {
    fn default() -> Self {
        let d = VesselParams::default();
        VesselConfig {
            small_diameter_um: d.small_diameter_um,
            min_branch_um: d.min_branch_um,
        }
    }
}

impl VesselConfig {
    /// The operator parameters.
    pub fn params(&self) -> VesselParams {
        VesselParams {
            small_diameter_um: self.small_diameter_um,
            min_branch_um: self.min_branch_um,
        }
    }
}

/// Decoding queues and backpressure.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IngestConfig {
    /// Decoded frames queued per stream before the decoder blocks.
    pub queue_frames: u32,
    /// Frames per worker sent into the dataflow and not yet segmented before decoding pauses.
    pub max_pending_frames: usize,
    /// Seconds a stream may go without a frame, end or error before it is given up as stalled (damaged files,
    /// silent live senders); the other streams go on.
    pub stall_timeout_s: f64,
    /// How live sources (cameras, RTSP, RTP/UDP) queue, drop and reconnect.
    pub live: LiveConfig,
    /// Endpoint, region and credentials for `s3://` sources (else the standard AWS_* environment variables).
    pub s3: S3Options,
    /// Resize frames to the model's working resolution in the GStreamer pipeline, on the decoded YUV before the
    /// conversion to RGB and the copy out (the default; cheaper), rather than after it in capflow (the same
    /// triangle filter `capflow eval` applies to images). The two differ by a fraction of a grey level per pixel.
    #[serde(skip_serializing_if = "is_true")]
    pub resize_in_decoder: bool,
}

/// Serialises a default-on switch only when it is off (fingerprints of configs from before it existed stay).
fn is_true(v: &bool) -> bool {
    *v
}

impl Default for IngestConfig {
    fn default() -> Self {
        IngestConfig {
            queue_frames: 4,
            max_pending_frames: 8,
            stall_timeout_s: 20.0,
            live: LiveConfig::default(),
            s3: S3Options::default(),
            resize_in_decoder: true,
        }
    }
}

/// Bounds on what one run accepts: a stream whose frames break a frame limit fails with an error naming the limit's
/// key (the other streams go on); more streams than `max_streams` is a config error.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsConfig {
    /// Widest frame accepted, pixels.
    pub max_width: u32,
    /// Tallest frame accepted, pixels.
    pub max_height: u32,
    /// Most pixels per frame.
    pub max_frame_pixels: u64,
    /// Most bytes per decoded frame (RGB: 3 per pixel).
    pub max_frame_bytes: u64,
    /// Narrowest frame accepted, pixels (smaller frames cannot show a capillary).
    pub min_width: u32,
    /// Shortest frame accepted, pixels.
    pub min_height: u32,
    /// Most streams in one run (config streams and manifest rows together).
    pub max_streams: usize,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        let frame = capflow_ingest::FrameLimits::default();
        LimitsConfig {
            max_width: frame.max_width,
            max_height: frame.max_height,
            max_frame_pixels: frame.max_pixels,
            max_frame_bytes: frame.max_frame_bytes,
            min_width: frame.min_width,
            min_height: frame.min_height,
            max_streams: 1024,
        }
    }
}

impl LimitsConfig {
    /// The frame limits every source of the run checks.
    pub fn frame(&self) -> capflow_ingest::FrameLimits {
        capflow_ingest::FrameLimits {
            max_width: self.max_width,
            max_height: self.max_height,
            max_pixels: self.max_frame_pixels,
            max_frame_bytes: self.max_frame_bytes,
            min_width: self.min_width,
            min_height: self.min_height,
        }
    }

    /// Every problem of the limits themselves, and a stream count over `max_streams`, each naming its key.
    pub fn problems(&self, streams: usize) -> Vec<String> {
        let mut p = Vec::new();
        for (key, v) in [
            ("max_width", self.max_width),
            ("max_height", self.max_height),
            ("min_width", self.min_width),
            ("min_height", self.min_height),
        ] {
            if !(1..=65_535).contains(&v) {
                p.push(format!("limits.{key} must be within 1..=65535 pixels"));
            }
        }
        if self.min_width > self.max_width {
            p.push("limits.min_width must be <= limits.max_width".into());
        }
        if self.min_height > self.max_height {
            p.push("limits.min_height must be <= limits.max_height".into());
        }
        if self.max_frame_pixels == 0 {
            p.push("limits.max_frame_pixels must be >= 1".into());
        }
        if self.max_frame_bytes == 0 {
            p.push("limits.max_frame_bytes must be >= 1".into());
        }
        if self.max_streams == 0 {
            p.push("limits.max_streams must be >= 1".into());
        } else if streams > self.max_streams {
            p.push(format!(
                "streams: {streams} streams (config and manifest together) are more than limits.max_streams = {}; \
                 raise limits.max_streams, or split the study into several runs",
                self.max_streams
            ));
        }
        p
    }
}

/// Which frames a live stream drops when processing falls behind.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DropPolicyName {
    /// Drop the oldest queued frame: analysis stays on the freshest frames.
    #[default]
    DropOldest,
    /// While behind, keep only every `keep_every_nth`-th frame: evenly thinned instead of bursts.
    KeepEveryNth,
}

/// Live-source behaviour. Replays (files, folders) never drop: they block instead.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LiveConfig {
    /// Decoded frames queued per live stream; beyond it frames are dropped by `drop_policy` and counted.
    pub queue_frames: u32,
    /// `drop_oldest` or `keep_every_nth`.
    pub drop_policy: DropPolicyName,
    /// N of `keep_every_nth`.
    pub keep_every_nth: u32,
    /// Seconds without a frame before a live source counts as lost and is reconnected.
    pub stall_timeout_s: f64,
    /// First reconnect delay, seconds (doubling, with jitter, up to `reconnect_max_s`).
    pub reconnect_initial_s: f64,
    /// Largest reconnect delay, seconds.
    pub reconnect_max_s: f64,
    /// Give a lost live source up as failed after this many seconds (unset: keep trying until the run stops).
    pub give_up_after_s: Option<f64>,
    /// How far behind the wall clock windows of live streams close, seconds: frames delayed longer (network,
    /// queues) count as late.
    pub watermark_delay_s: f64,
    /// How often a running live stream's events are written, seconds (they are always written at its end).
    pub events_flush_s: f64,
}

impl Default for LiveConfig {
    fn default() -> Self {
        LiveConfig {
            queue_frames: 8,
            drop_policy: DropPolicyName::DropOldest,
            keep_every_nth: 2,
            stall_timeout_s: 5.0,
            reconnect_initial_s: 0.5,
            reconnect_max_s: 30.0,
            give_up_after_s: None,
            watermark_delay_s: 2.0,
            events_flush_s: 60.0,
        }
    }
}

/// Whether a stream is replayed in full or followed live.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StreamModeName {
    /// From the source: `rtsp://`, `udp://`, `rtp://`, `srt://` and `/dev/video*` are live, the rest replays.
    #[default]
    Auto,
    /// Keep up with the source: drop when behind, reconnect when lost, event time from the receive clock.
    Live,
    /// Read everything, never drop, the same output on every run.
    Replay,
}

/// One stream: a recording of one site of one patient.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StreamConfig {
    /// Unique id (letters, digits, `-`, `_`; at most 64), used in part names.
    pub id: String,
    /// Patient id.
    pub patient: String,
    /// Recording site.
    #[serde(default)]
    pub site: String,
    /// File, image folder or URI; relative paths are relative to the config file.
    pub source: String,
    /// Device profile (a `[profiles.<name>]` or built-in name) giving `um_per_px` and `fps` where the stream does not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile: Option<String>,
    /// Pixel size, µm per pixel; from the profile if unset, else 2.2.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub um_per_px: Option<f64>,
    /// Frame rate of image sequences (videos carry their own timing); for live streams, the nominal rate that
    /// counts the frames a gap cost. From the profile if unset, else 25.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fps: Option<f64>,
    /// A grayscale camera (sublingual SDF/IDF): decoded straight to one luma plane (for I420/NV12 video its Y plane)
    /// instead of converted to RGB that the model would only read one channel of. From the profile if unset, else
    /// false. A colour stream marked grayscale loses the redness that tells a red capillary from a dark hair.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grayscale: Option<bool>,
    /// RFC 3339 time of the first frame, e.g. `2026-03-01T08:00:00Z`; event times start at the Unix epoch if unset.
    /// Live streams are timed by the receive wall clock instead.
    #[serde(default)]
    pub recorded_at: Option<String>,
    /// `auto` (from the source), `live` or `replay`.
    #[serde(default)]
    pub mode: StreamModeName,
    /// What GStreamer opens when it is not `source` itself: a presigned HTTP URL for an `s3://` source. Never
    /// configured, never printed or stored (it grants read access until it expires).
    #[serde(skip)]
    pub fetch_url: Option<String>,
}

fn default_um_per_px() -> f64 {
    2.2
}

fn default_fps() -> f64 {
    25.0
}

impl StreamConfig {
    /// Pixel size, µm per pixel (after [`Config::apply_profiles`], the profile's if the stream sets none).
    pub fn um_per_px(&self) -> f64 {
        self.um_per_px.unwrap_or_else(default_um_per_px)
    }

    /// Nominal frame rate (after [`Config::apply_profiles`], the profile's if the stream sets none).
    pub fn fps(&self) -> f64 {
        self.fps.unwrap_or_else(default_fps)
    }

    /// Whether the stream comes from a grayscale camera (after [`Config::apply_profiles`], the profile's if unset).
    pub fn grayscale(&self) -> bool {
        self.grayscale.unwrap_or(false)
    }

    /// Whether the stream is followed live.
    pub fn is_live(&self) -> bool {
        match self.mode {
            StreamModeName::Live => true,
            StreamModeName::Replay => false,
            StreamModeName::Auto => {
                capflow_ingest::StreamMode::detect(&self.source) == capflow_ingest::StreamMode::Live
            }
        }
    }

    /// Recording start in milliseconds since the Unix epoch.
    pub fn recorded_at_ms(&self) -> Result<i64, String> {
        match &self.recorded_at {
            None => Ok(0),
            Some(text) => {
                let time =
                    humantime::parse_rfc3339_weak(text).map_err(|e| format!("{text:?}: {e}"))?;
                let ms = time
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_err(|_| format!("{text:?} is before 1970"))?
                    .as_millis();
                Ok(ms as i64)
            }
        }
    }
}

/// One row of a study manifest: an archived recording. Only `source` and `patient` are required.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ManifestRow {
    pub(crate) source: String,
    pub(crate) patient: String,
    #[serde(default)]
    pub(crate) site: Option<String>,
    #[serde(default)]
    pub(crate) recorded_at: Option<String>,
    #[serde(default)]
    pub(crate) um_per_px: Option<f64>,
    #[serde(default)]
    pub(crate) fps: Option<f64>,
    #[serde(default)]
    pub(crate) id: Option<String>,
    #[serde(default)]
    pub(crate) mode: Option<StreamModeName>,
    #[serde(default)]
    pub(crate) profile: Option<String>,
}

/// The manifest columns, in the order the errors list them.
pub(crate) const MANIFEST_COLUMNS: &str =
    "source, patient, site, recorded_at, profile, um_per_px, fps, id, mode";

/// A stream id made of a patient id and a source's file name: letters, digits, `-` and `_`, at most 64.
fn derived_id(patient: &str, source: &str) -> String {
    let stem = source
        .trim_end_matches('/')
        .rsplit('/')
        .next()
        .unwrap_or(source)
        .split('?')
        .next()
        .unwrap_or("");
    let stem = stem.rsplit_once('.').map_or(stem, |(s, _)| s);
    let id: String = format!("{patient}-{stem}")
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    id.chars().take(64).collect()
}

/// Reads a study manifest: a CSV file with a header row, or a Parquet file (`.parquet`), with columns naming some of
/// `source`, `patient` (both required), `site`, `recorded_at`, `profile`, `um_per_px`, `fps`, `id` and `mode`.
/// Relative sources are relative to the manifest's folder; sources may be files, folders, URIs or `s3://bucket/key`
/// objects. A missing `id` is made of the patient and the file name. Errors name the file and the row.
pub fn load_manifest(path: &Path) -> Result<Vec<StreamConfig>, String> {
    let is_parquet = path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("parquet"));
    let rows = if is_parquet {
        crate::manifest::parquet_rows(path)?
    } else {
        let file = std::fs::File::open(path)
            .map_err(|e| format!("manifest {}: {e} (check the manifest path)", path.display()))?;
        csv_rows(file, path)?
    };
    streams_from_rows(rows, path)
}

/// Parses the text of a CSV study manifest as [`load_manifest`] reads a file: `path` names it in errors and its
/// folder is where relative sources are resolved (the file itself is not read).
pub fn parse_manifest_csv(text: &[u8], path: &Path) -> Result<Vec<StreamConfig>, String> {
    streams_from_rows(csv_rows(text, path)?, path)
}

/// Streams from manifest rows; relative sources are resolved against the manifest's folder.
fn streams_from_rows(rows: Vec<ManifestRow>, path: &Path) -> Result<Vec<StreamConfig>, String> {
    let base = path.parent().unwrap_or(Path::new("."));
    let mut streams = Vec::new();
    for row in rows {
        let source = if !row.source.contains("://") && Path::new(&row.source).is_relative() {
            base.join(&row.source).display().to_string()
        } else {
            row.source.clone()
        };
        streams.push(StreamConfig {
            id: row
                .id
                .unwrap_or_else(|| derived_id(&row.patient, &row.source)),
            site: row.site.unwrap_or_default(),
            profile: row.profile.filter(|p| !p.is_empty()),
            um_per_px: row.um_per_px,
            fps: row.fps,
            grayscale: None,
            recorded_at: row.recorded_at.filter(|t| !t.is_empty()),
            mode: row.mode.unwrap_or_default(),
            patient: row.patient,
            source,
            fetch_url: None,
        });
    }
    if streams.is_empty() {
        return Err(format!("manifest {}: no rows", path.display()));
    }
    Ok(streams)
}

fn csv_rows(input: impl std::io::Read, path: &Path) -> Result<Vec<ManifestRow>, String> {
    let mut reader = csv::ReaderBuilder::new()
        .trim(csv::Trim::All)
        .comment(Some(b'#'))
        .from_reader(input);
    reader
        .deserialize::<ManifestRow>()
        .enumerate()
        .map(|(i, row)| {
            row.map_err(|e| {
                format!(
                    "manifest {} row {}: {e} (columns: {MANIFEST_COLUMNS})",
                    path.display(),
                    i + 1
                )
            })
        })
        .collect()
}

/// Reads a config file: parsed, its relative paths resolved against its folder, its manifest's rows added.
pub fn load_file(path: &Path) -> Result<Config, String> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        format!(
            "reading config {}: {e} (check the --config path)",
            path.display()
        )
    })?;
    let mut config = parse(&text, &path.display().to_string())?;
    let base = path.parent().unwrap_or(Path::new("."));
    config.resolve_paths(base);
    config.load_manifest(base)?;
    Ok(config)
}

/// Parses a config file's text; `origin` names it in errors.
pub fn parse(text: &str, origin: &str) -> Result<Config, String> {
    toml::from_str(text).map_err(|e| format!("config {origin}: {e}"))
}

impl Config {
    /// Hex SHA-256 of the settings that shape the results: everything except where the output goes, its
    /// credentials, retry patience, and decoding/threading knobs that do not change a number. A re-run or
    /// `--resume` into an output must have the same fingerprint (see `capflow_sinks::commit`).
    pub fn fingerprint(&self) -> String {
        let mut shaping = self.clone();
        shaping.output.location.clear();
        shaping.output.s3 = S3Options::default();
        shaping.output.retry_timeout_s = 0.0;
        shaping.output.pseudonym_key_env.clear();
        shaping.model.intra_threads = 0;
        shaping.model.inference_threads = 0;
        shaping.model.batch_max_wait_ms = DEFAULT_BATCH_WAIT_MS;
        // Batching never changes a number either; 4 was the default when fingerprints began, so outputs written
        // then keep theirs.
        shaping.model.batch_size = 4;
        shaping.model.intra_spinning = false;
        shaping.model.ort_library = None;
        // Where frames are resized moves numbers slightly, so that switch stays.
        shaping.ingest = IngestConfig {
            resize_in_decoder: self.ingest.resize_in_decoder,
            ..IngestConfig::default()
        };
        shaping.cluster = ClusterConfig::default();
        // The manifest's rows are in `streams` already.
        shaping.manifest = None;
        // Limits only decide which inputs run at all (a stream over one fails, it is never measured differently):
        // left out, so raising one resumes the same job, and outputs written before limits existed keep their
        // fingerprint (the view serialises every other field in the config's own order). `[http]` only says where
        // status is served: left out too.
        #[derive(Serialize)]
        struct Shaping<'a> {
            output: &'a OutputConfig,
            model: &'a ModelConfig,
            windows: &'a WindowConfig,
            segmentation: &'a SegmentationConfig,
            vessels: &'a VesselConfig,
            flow: &'a FlowConfig,
            quality: &'a QualityConfig,
            ingest: &'a IngestConfig,
            streams: &'a [StreamConfig],
            manifest: &'a Option<String>,
            profiles: &'a std::collections::BTreeMap<String, DeviceProfile>,
            cluster: &'a ClusterConfig,
        }
        let Config {
            output,
            model,
            windows,
            segmentation,
            vessels,
            flow,
            quality,
            ingest,
            limits: _,
            http: _,
            streams,
            manifest,
            profiles,
            cluster,
        } = &shaping;
        let view = Shaping {
            output,
            model,
            windows,
            segmentation,
            vessels,
            flow,
            quality,
            ingest,
            streams,
            manifest,
            profiles,
            cluster,
        };
        let json = serde_json::to_vec(&view).expect("a config always serialises");
        capflow_sinks::commit::sha256_hex(&json)
    }

    /// The profile called `name`: the config's own, else a built-in one.
    pub fn profile(&self, name: &str) -> Option<DeviceProfile> {
        self.profiles.get(name).cloned().or_else(|| {
            BUILTIN_PROFILES.iter().find(|(n, ..)| *n == name).map(
                |&(_, um_per_px, fps, width, height)| DeviceProfile {
                    um_per_px,
                    fps,
                    width: Some(width),
                    height: Some(height),
                    description: "built in".into(),
                    grayscale: false,
                },
            )
        })
    }

    /// Every profile name a stream may use, sorted.
    pub fn profile_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.profiles.keys().cloned().collect();
        names.extend(BUILTIN_PROFILES.iter().map(|(n, ..)| n.to_string()));
        names.sort();
        names.dedup();
        names
    }

    /// Fills each stream's unset `um_per_px` and `fps` from its profile (an unknown profile is left for
    /// [`Config::problems`] to report). Values a stream sets itself win.
    pub fn apply_profiles(&mut self) {
        let resolved: Vec<Option<DeviceProfile>> = self
            .streams
            .iter()
            .map(|s| s.profile.as_deref().and_then(|n| self.profile(n)))
            .collect();
        for (stream, profile) in self.streams.iter_mut().zip(resolved) {
            if let Some(profile) = profile {
                stream.um_per_px.get_or_insert(profile.um_per_px);
                stream.fps.get_or_insert(profile.fps);
                // Only a grayscale profile sets it, so configs without the key print and fingerprint as before.
                if profile.grayscale {
                    stream.grayscale.get_or_insert(true);
                }
            }
        }
    }

    /// Adds the manifest's rows (if any) to the streams; the manifest path is relative to `base`.
    pub fn load_manifest(&mut self, base: &Path) -> Result<(), String> {
        if let Some(manifest) = &self.manifest {
            let path = base.join(manifest);
            self.streams.extend(load_manifest(&path)?);
        }
        Ok(())
    }

    /// Makes relative stream sources relative to `base` (the config file's folder); URIs are left alone.
    pub fn resolve_paths(&mut self, base: &Path) {
        for stream in &mut self.streams {
            if !stream.source.contains("://") && Path::new(&stream.source).is_relative() {
                stream.source = base.join(&stream.source).display().to_string();
            }
        }
        if !crate::model::is_builtin(&self.model.card) && Path::new(&self.model.card).is_relative()
        {
            self.model.card = base.join(&self.model.card).display().to_string();
        }
    }

    /// Every problem of the config, each naming its key; empty when valid.
    pub fn problems(&self) -> Vec<String> {
        let mut p = Vec::new();
        if self.output.location.trim().is_empty() {
            p.push("output.location must not be empty".into());
        }
        if self.output.frames_per_part == 0 {
            p.push("output.frames_per_part must be >= 1".into());
        }
        if !(1.0..=86_400.0).contains(&self.output.live_frames_part_s) {
            p.push("output.live_frames_part_s must be within 1..=86400 seconds".into());
        }
        if self.output.windows_per_part == 0 {
            p.push("output.windows_per_part must be >= 1".into());
        }
        let stall = self.ingest.stall_timeout_s;
        if !(stall.is_finite() && (0.1..=86_400.0).contains(&stall)) {
            p.push("ingest.stall_timeout_s must be within 0.1..=86400 seconds".into());
        }
        let live = &self.ingest.live;
        let seconds = |key: &str, v: f64, min: f64, p: &mut Vec<String>| {
            if !(v.is_finite() && (min..=86_400.0).contains(&v)) {
                p.push(format!(
                    "ingest.live.{key} must be within {min}..=86400 seconds"
                ));
            }
        };
        seconds("stall_timeout_s", live.stall_timeout_s, 0.1, &mut p);
        seconds(
            "reconnect_initial_s",
            live.reconnect_initial_s,
            0.01,
            &mut p,
        );
        seconds("reconnect_max_s", live.reconnect_max_s, 0.01, &mut p);
        seconds("watermark_delay_s", live.watermark_delay_s, 0.0, &mut p);
        seconds("events_flush_s", live.events_flush_s, 1.0, &mut p);
        if let Some(g) = live.give_up_after_s {
            seconds("give_up_after_s", g, 0.0, &mut p);
        }
        if live.reconnect_max_s < live.reconnect_initial_s {
            p.push("ingest.live.reconnect_max_s must be >= reconnect_initial_s".into());
        }
        if !(1..=4096).contains(&live.queue_frames) {
            p.push("ingest.live.queue_frames must be within 1..=4096".into());
        }
        if live.keep_every_nth < 2 && live.drop_policy == DropPolicyName::KeepEveryNth {
            p.push(
                "ingest.live.keep_every_nth must be >= 2 (1 would drop nothing under overload)"
                    .into(),
            );
        }
        let retry = self.output.retry_timeout_s;
        if !(retry.is_finite() && (0.0..=86_400.0).contains(&retry)) {
            p.push("output.retry_timeout_s must be within 0..=86400 seconds".into());
        }
        if self.output.pseudonymise && self.output.pseudonym_key_env.trim().is_empty() {
            p.push("output.pseudonym_key_env must name an environment variable".into());
        }
        if !(1..=256).contains(&self.model.batch_size) {
            p.push("model.batch_size must be within 1..=256".into());
        }
        if self.model.batch_max_wait_ms > 60_000 {
            p.push("model.batch_max_wait_ms must be at most 60000".into());
        }
        if self.model.intra_threads > 256 {
            p.push("model.intra_threads must be within 0..=256 (0 = the cores divided among the workers)".into());
        }
        if self.model.inference_threads > 64 {
            p.push(
                "model.inference_threads must be within 0..=64 (0 = the cores divided among the workers)".into(),
            );
        }
        if let Some(t) = self.model.threshold {
            if !(0.0..=1.0).contains(&t) {
                p.push("model.threshold must be within 0..=1".into());
            }
        }
        if let Some(l) = self.model.link_threshold {
            if !(l > 0.0 && l <= 1.0) {
                p.push("model.link_threshold must be above 0 and at most 1".into());
            }
        }
        if let Some(mp) = self.model.max_megapixels {
            if !(mp.is_finite() && (0.01..=100.0).contains(&mp)) {
                p.push("model.max_megapixels must be within 0.01..=100".into());
            }
        }
        let w = self.windows.length_s;
        if !(0.001..=86_400.0).contains(&w) {
            p.push("windows.length_s must be within 0.001..=86400 seconds".into());
        }
        if let Some(h) = self.windows.hop_s {
            if !(h >= 0.001 && h <= w) {
                p.push(format!(
                    "windows.hop_s = {h} must be within 0.001..=windows.length_s ({w}); leave it out for tumbling windows"
                ));
            }
        }
        let late = self.windows.allowed_lateness_s;
        if !(0.0..=86_400.0).contains(&late) {
            p.push("windows.allowed_lateness_s must be within 0..=86400 seconds".into());
        }
        if !(self.vessels.small_diameter_um > 0.0 && self.vessels.small_diameter_um < 1000.0) {
            p.push("vessels.small_diameter_um must be within (0, 1000) µm (consensus: 20)".into());
        }
        if !(self.vessels.min_branch_um >= 0.0 && self.vessels.min_branch_um < 1000.0) {
            p.push("vessels.min_branch_um must be within [0, 1000) µm".into());
        }
        p.extend(self.segmentation.problems());
        p.extend(self.flow.problems());
        p.extend(self.quality.problems());
        if self.ingest.queue_frames == 0 {
            p.push("ingest.queue_frames must be >= 1".into());
        }
        if self.ingest.max_pending_frames < self.model.batch_size {
            p.push(
                "ingest.max_pending_frames must be >= model.batch_size (else batches never fill)"
                    .into(),
            );
        }
        for (name, profile) in &self.profiles {
            if !(profile.um_per_px.is_finite()
                && profile.um_per_px > 0.0
                && profile.um_per_px < 1000.0)
            {
                p.push(format!(
                    "profiles.{name}.um_per_px must be within (0, 1000) µm per pixel"
                ));
            }
            if !(profile.fps.is_finite() && profile.fps > 0.0 && profile.fps <= 1000.0) {
                p.push(format!("profiles.{name}.fps must be within (0, 1000]"));
            }
            for (key, v) in [("width", profile.width), ("height", profile.height)] {
                if v.is_some_and(|v| !(1..=65_536).contains(&v)) {
                    p.push(format!(
                        "profiles.{name}.{key} must be within 1..=65536 pixels"
                    ));
                }
            }
        }
        p.extend(self.cluster.problems());
        p.extend(self.http.problems());
        p.extend(self.limits.problems(self.streams.len()));
        if self.streams.is_empty() {
            p.push("streams: at least one stream is needed ([[streams]] in the config, or --input/--patient)".into());
        }
        let mut seen = std::collections::BTreeSet::new();
        for (i, s) in self.streams.iter().enumerate() {
            let key = format!("streams[{i}]");
            let id_ok = !s.id.is_empty()
                && s.id.len() <= 64
                && s.id
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
            if !id_ok {
                p.push(format!(
                    "{key}.id {:?} must be 1-64 letters, digits, '-' or '_'",
                    s.id
                ));
            } else if !seen.insert(s.id.clone()) {
                p.push(format!("{key}.id {:?} is used by another stream", s.id));
            }
            if s.patient.is_empty() {
                p.push(format!("{key}.patient must not be empty"));
            } else if !self.output.pseudonymise {
                if let Err(e) = capflow_sinks::partition::segment(&s.patient) {
                    p.push(format!(
                        "{key}.patient: {e} (shorten the id, or set output.pseudonymise = true to store a fixed-length \
                         keyed pseudonym instead)"
                    ));
                }
            }
            if s.source.trim().is_empty() {
                p.push(format!("{key}.source must not be empty"));
            }
            if let Some(name) = &s.profile {
                if self.profile(name).is_none() {
                    p.push(format!(
                        "{key}.profile {name:?} is not defined (add [profiles.{name}] with um_per_px and fps; known: {})",
                        self.profile_names().join(", ")
                    ));
                }
            }
            let (um, fps) = (s.um_per_px(), s.fps());
            if !(um.is_finite() && um > 0.0 && um < 1000.0) {
                p.push(format!(
                    "{key}.um_per_px must be within (0, 1000) µm per pixel"
                ));
            }
            if !(fps.is_finite() && fps > 0.0 && fps <= 1000.0) {
                p.push(format!("{key}.fps must be within (0, 1000]"));
            }
            if let Err(e) = s.recorded_at_ms() {
                p.push(format!(
                    "{key}.recorded_at {e} (use RFC 3339, e.g. 2026-03-01T08:00:00Z)"
                ));
            }
        }
        let live: Vec<&str> = self
            .streams
            .iter()
            .filter(|s| s.is_live())
            .map(|s| s.id.as_str())
            .collect();
        let replay: Vec<&str> = self
            .streams
            .iter()
            .filter(|s| !s.is_live())
            .map(|s| s.id.as_str())
            .collect();
        if !live.is_empty() && !replay.is_empty() {
            // A live run's windows follow the wall clock; a replay's follow the recording. One watermark cannot do both.
            p.push(format!(
                "streams: live streams ({}) and replays ({}) cannot share a run; run them as two capflow runs (or set \
                 streams[].mode)",
                live.join(", "),
                replay.join(", ")
            ));
        }
        p
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inference_defaults_to_one_single_threaded_session_per_core_of_a_worker() {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let layout = |threads: usize, intra: usize, workers: usize| {
            ModelConfig {
                inference_threads: threads,
                intra_threads: intra,
                ..ModelConfig::default()
            }
            .inference_layout(workers)
        };
        let sessions = cores.min(AUTO_SESSIONS_MAX);
        assert_eq!(layout(0, 0, 1), (sessions, cores / sessions));
        assert_eq!(layout(0, 0, cores), (1, 1));
        assert_eq!(layout(0, 0, 4 * cores), (1, 1), "never less than one");
        // Threads set by hand keep the total within the worker's share where they can.
        assert_eq!(layout(0, 2, 1), ((cores / 2).max(1), 2));
        assert_eq!(layout(3, 0, 1), (3, (cores / 3).max(1)));
        assert_eq!(layout(2, 2, 1), (2, 2));
        // Speed only: the fingerprint does not change with either.
        let config = Config::default();
        let mut threaded = config.clone();
        threaded.model.inference_threads = 3;
        assert_eq!(config.fingerprint(), threaded.fingerprint());
    }

    #[test]
    fn the_embedded_default_is_valid() {
        let config = parse(DEFAULT_CONFIG, "default").unwrap();
        assert_eq!(config.problems(), Vec::<String>::new());
        assert!(config.streams.len() >= 2);
        let patients: std::collections::BTreeSet<_> =
            config.streams.iter().map(|s| &s.patient).collect();
        assert!(patients.len() >= 2, "the demo covers two patients");
    }

    #[test]
    fn every_problem_names_its_key() {
        let text = r#"
[model]
batch_size = 0
[windows]
length_s = -1
[[streams]]
id = "a/b"
patient = ""
source = "x.mp4"
um_per_px = 0
recorded_at = "yesterday"
[[streams]]
id = "ok"
patient = "p"
source = "y.mp4"
[[streams]]
id = "ok"
patient = "p"
source = "z.mp4"
"#;
        let problems = parse(text, "t.toml").unwrap().problems();
        for key in [
            "model.batch_size",
            "windows.length_s",
            "streams[0].id",
            "streams[0].patient",
            "streams[0].um_per_px",
            "streams[0].recorded_at",
            "streams[2].id",
        ] {
            assert!(
                problems.iter().any(|p| p.starts_with(key)),
                "{key} missing from {problems:#?}"
            );
        }
    }

    #[test]
    fn unknown_keys_are_rejected_with_the_file_name() {
        let err = parse("[model]\nbatchsize = 3\n", "bad.toml").unwrap_err();
        assert!(
            err.contains("bad.toml") && err.contains("batchsize"),
            "{err}"
        );
    }

    #[test]
    fn relative_sources_resolve_against_the_config_folder() {
        let mut config = parse(DEFAULT_CONFIG, "default").unwrap();
        config.streams[0].source = "clips/a.mp4".into();
        config.streams[1].source = "rtsp://cam/1".into();
        config.resolve_paths(Path::new("/data/study"));
        assert_eq!(config.streams[0].source, "/data/study/clips/a.mp4");
        assert_eq!(config.streams[1].source, "rtsp://cam/1");
    }

    #[test]
    fn recorded_at_parses_rfc3339() {
        let mut s = parse(DEFAULT_CONFIG, "default").unwrap().streams.remove(0);
        s.recorded_at = Some("1970-01-01T00:00:01Z".into());
        assert_eq!(s.recorded_at_ms(), Ok(1000));
    }

    #[test]
    fn a_manifest_adds_streams_relative_to_its_folder_and_errors_name_the_row() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("study.csv");
        std::fs::write(
            &path,
            "# a study\nsource,patient,site,um_per_px\nvisits/a b.mp4,P1,sublingual,1.5\n\
             s3://bucket/x/p2.avi,P2,,\n",
        )
        .unwrap();
        let streams = load_manifest(&path).unwrap();
        assert_eq!(streams.len(), 2);
        assert_eq!(streams[0].id, "P1-a_b");
        assert_eq!(
            streams[0].source,
            dir.path().join("visits/a b.mp4").display().to_string()
        );
        assert_eq!(streams[0].um_per_px, Some(1.5));
        assert_eq!(
            (streams[1].id.as_str(), streams[1].source.as_str()),
            ("P2-p2", "s3://bucket/x/p2.avi")
        );
        assert_eq!(streams[1].um_per_px, None);
        assert_eq!(streams[1].um_per_px(), default_um_per_px());

        std::fs::write(&path, "source,patient,colour\na.mp4,P1,red\n").unwrap();
        let err = load_manifest(&path).unwrap_err();
        assert!(
            err.contains("study.csv row 1") && err.contains("colour"),
            "{err}"
        );
    }

    #[test]
    fn profiles_fill_what_a_stream_leaves_unset_and_unknown_ones_are_named() {
        let text = r#"
[profiles.cytocam]
um_per_px = 1.0
fps = 30
description = "IDF, calibrated 2026-01 with a stage micrometer"
grayscale = true

[[streams]]
id = "a"
patient = "P1"
source = "a.mp4"
profile = "cytocam"

[[streams]]
id = "b"
patient = "P1"
source = "b.mp4"
profile = "cytocam"
um_per_px = 1.2
grayscale = false

[[streams]]
id = "c"
patient = "P1"
source = "c.mp4"
profile = "hdmia-skin"

[[streams]]
id = "d"
patient = "P1"
source = "d.mp4"
profile = "microscan"
"#;
        let mut config = parse(text, "t.toml").unwrap();
        config.apply_profiles();
        let got: Vec<(f64, f64, bool)> = config
            .streams
            .iter()
            .map(|s| (s.um_per_px(), s.fps(), s.grayscale()))
            .collect();
        assert_eq!(
            got,
            [
                (1.0, 30.0, true),
                (1.2, 30.0, false),
                (2.2, 25.0, false),
                (2.2, 25.0, false)
            ]
        );
        let problems = config.problems();
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(
            problems[0].contains("streams[3].profile \"microscan\"")
                && problems[0].contains("[profiles.microscan]")
                && problems[0].contains("cytocam, hdmia-skin"),
            "{problems:?}"
        );
    }

    #[test]
    fn limits_are_validated_and_too_many_streams_names_the_count_and_key() {
        let mut config = parse(DEFAULT_CONFIG, "default").unwrap();
        assert_eq!(
            config.limits.frame(),
            capflow_ingest::FrameLimits::default()
        );
        assert_eq!(config.limits.max_streams, 1024);
        let streams = config.streams.len();
        config.limits.max_streams = streams - 1;
        let problems = config.problems();
        assert!(
            problems
                .iter()
                .any(|p| p.contains(&format!("{streams} streams"))
                    && p.contains(&format!("limits.max_streams = {}", streams - 1))),
            "{problems:?}"
        );
        let text =
            "[limits]\nmax_width = 0\nmin_height = 9000\nmax_frame_bytes = 0\nmax_streams = 0\n";
        let problems = parse(text, "t.toml").unwrap().problems();
        for key in [
            "limits.max_width",
            "limits.min_height",
            "limits.max_frame_bytes",
            "limits.max_streams",
        ] {
            assert!(
                problems.iter().any(|p| p.starts_with(key)),
                "{key} missing from {problems:#?}"
            );
        }
        let err = parse("[limits]\nmax_pixels = 3\n", "t.toml").unwrap_err();
        assert!(err.contains("max_pixels"), "{err}");
    }

    #[test]
    fn limits_do_not_change_the_fingerprint() {
        let config = parse(DEFAULT_CONFIG, "default").unwrap();
        let mut raised = config.clone();
        raised.limits.max_width = 16_384;
        raised.limits.max_streams = 5;
        // Batching never changes a number either.
        raised.model.batch_max_wait_ms = 20;
        raised.model.intra_spinning = true;
        raised.model.batch_size = 8;
        assert_eq!(config.fingerprint(), raised.fingerprint());
        let mut linked = config.clone();
        linked.model.link_threshold = Some(0.2);
        assert_ne!(config.fingerprint(), linked.fingerprint());
        let mut other = config.clone();
        other.windows.length_s = 5.0;
        assert_ne!(config.fingerprint(), other.fingerprint());
    }

    #[test]
    fn a_manifest_parses_from_text_naming_the_file_in_errors() {
        let path = Path::new("/study/visits.csv");
        let streams = parse_manifest_csv(b"source,patient\na.mp4,P1\n", path).unwrap();
        assert_eq!(streams[0].source, "/study/a.mp4");
        let err = parse_manifest_csv(b"source,patient\n", path).unwrap_err();
        assert!(
            err.contains("/study/visits.csv") && err.contains("no rows"),
            "{err}"
        );
        let err = parse_manifest_csv(b"source\na.mp4\n", path).unwrap_err();
        assert!(err.contains("visits.csv row 1"), "{err}");
    }

    #[test]
    fn live_and_replay_streams_cannot_share_a_run() {
        let mut config = parse(DEFAULT_CONFIG, "default").unwrap();
        config.streams[0].source = "rtsp://cam/1".into();
        assert!(config.streams[0].is_live());
        let problems = config.problems();
        assert!(
            problems.iter().any(|p| p.contains("cannot share a run")),
            "{problems:?}"
        );
        config.streams[0].mode = StreamModeName::Replay;
        assert!(!config.streams[0].is_live());
    }
}
