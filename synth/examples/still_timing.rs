//! Times `render_still` for a few sizes: `cargo run --release -p capflow-synth --example still_timing`.

use std::time::Instant;

use capflow_synth::{randomized, render_still, Artefacts, Look, SynthSpec};

/// CPU time of this thread so far (Linux `/proc/thread-self/schedstat`), in nanoseconds:
/// on a shared machine wall time overstates the cost.
fn cpu_ns() -> u64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

fn main() {
    let mut heavy = randomized(Look::Skin, 3);
    heavy.width = 1920;
    heavy.height = 1080;
    heavy.artefacts = Artefacts {
        hairs: 4,
        bubbles: 3,
        glare: 3,
        vignetting: 0.4,
        uneven_illumination: 0.3,
        defocus_px: 4.0,
        motion_blur_px: 6.0,
        motion_blur_angle_deg: 20.0,
        tint: [1.0, 0.98, 0.95],
        focus_blur_px: 0.0,
    };
    let cases = [
        ("skin preset 1920x1080", SynthSpec::preset("skin").unwrap()),
        ("skin randomized+all artefacts 1920x1080", heavy),
        (
            "sublingual preset 640x480",
            SynthSpec::preset("sublingual").unwrap(),
        ),
        (
            "nailfold preset 1024x768",
            SynthSpec::preset("nailfold").unwrap(),
        ),
    ];
    // Optional filter: STILL_CASE=substring of the case name.
    let only = std::env::var("STILL_CASE").unwrap_or_default();
    for (name, spec) in cases.into_iter().filter(|(n, _)| n.contains(&only)) {
        let _ = render_still(&spec).unwrap();
        let n = 5;
        let (start, cpu0) = (Instant::now(), cpu_ns());
        for _ in 0..n {
            std::hint::black_box(render_still(&spec).unwrap());
        }
        println!(
            "{name}: {:.1} ms wall, {:.1} ms CPU per still",
            start.elapsed().as_secs_f64() * 1000.0 / n as f64,
            (cpu_ns() - cpu0) as f64 / 1e6 / n as f64
        );
    }
}
