//! Writes the two demo clips (skin 1920x1080 2 s @ 10 fps, sublingual 640x480 3 s @ 25 fps)
//! into a folder and prints their sizes.
//!
//! `cargo run --release -p capflow-synth --example demo_clips -- /tmp/synth_demo`

use std::path::PathBuf;
use std::time::Instant;

use capflow_synth::{write_clip, Outputs, SynthSpec};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out = PathBuf::from(
        std::env::args()
            .nth(1)
            .unwrap_or_else(|| "/tmp/synth_demo".into()),
    );
    std::fs::create_dir_all(&out)?;
    let skin = SynthSpec {
        fps: 10,
        frames: 20,
        ..SynthSpec::preset("skin").ok_or("no skin preset")?
    };
    let sublingual = SynthSpec {
        frames: 75,
        ..SynthSpec::preset("sublingual").ok_or("no sublingual preset")?
    };
    let mut total = 0;
    for (name, spec) in [("demo-skin", skin), ("demo-sublingual", sublingual)] {
        let t = Instant::now();
        let written = write_clip(&spec, &out, name, &Outputs::default())?;
        let mp4 = written.mp4.ok_or("no mp4")?;
        let bytes = std::fs::metadata(&mp4)?.len();
        total += bytes;
        println!(
            "{}: {}x{} {} frames @ {} fps, {:.2} MB, written in {:.1} s",
            mp4.display(),
            spec.width,
            spec.height,
            spec.frames,
            spec.fps,
            bytes as f64 / 1e6,
            t.elapsed().as_secs_f64()
        );
    }
    println!("total {:.2} MB", total as f64 / 1e6);
    Ok(())
}
