//! Times scene preparation and per-frame rendering for a preset, and writes a few frames
//! and masks as PNG for inspection.
//!
//! `cargo run --release -p capflow-synth --example render_bench -- skin 20 /tmp/synth_look`

use std::path::PathBuf;
use std::time::Instant;

use capflow_synth::{write_gray_png, write_rgb_png, Renderer, SynthSpec};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let preset = args.next().unwrap_or_else(|| "skin".into());
    let frames: u32 = args.next().map(|s| s.parse()).transpose()?.unwrap_or(20);
    let out = args.next().map(PathBuf::from);
    let seed: u64 = args.next().map(|s| s.parse()).transpose()?.unwrap_or(1);
    let spec = SynthSpec {
        frames: frames.max(1),
        seed,
        ..SynthSpec::preset(&preset).ok_or("unknown preset")?
    };
    let t0 = Instant::now();
    let mut renderer = Renderer::new(&spec)?;
    let setup = t0.elapsed();
    let t1 = Instant::now();
    let mut last = None;
    for i in 0..spec.frames {
        last = Some(renderer.render(i));
    }
    let per_frame = t1.elapsed().as_secs_f64() * 1000.0 / spec.frames as f64;
    println!(
        "{preset} {}x{}: setup {:.0} ms, render {:.1} ms/frame over {} frames",
        spec.width,
        spec.height,
        setup.as_secs_f64() * 1000.0,
        per_frame,
        spec.frames
    );
    let last = last.expect("at least one frame");
    println!("last frame truth: {:?}", last.truth);
    if let Some(dir) = out {
        std::fs::create_dir_all(&dir)?;
        let f0 = renderer.render(0);
        write_rgb_png(
            &dir.join(format!("{preset}_frame0.png")),
            spec.width,
            spec.height,
            &f0.rgb,
        )?;
        write_gray_png(
            &dir.join(format!("{preset}_mask0.png")),
            spec.width,
            spec.height,
            &f0.mask,
        )?;
        let f1 = renderer.render(1);
        write_rgb_png(
            &dir.join(format!("{preset}_frame1.png")),
            spec.width,
            spec.height,
            &f1.rgb,
        )?;
    }
    Ok(())
}
