//! The per-patient windows alone: simulated per-frame metric records from many streams through the same operators
//! `capflow run` uses (routing, the two differential reductions, window closing), without decoding or inference.
//!
//! It answers two questions no clip can: how many metric records per second the aggregation sustains (10,000
//! streams by default), and whether its memory stays flat over a simulated day (records expire with their window).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use capflow_operators::quality::QualityConfig;
use capflow_operators::records::{FrameMetrics, PatientWindow, SiteWindow, StreamRecord};
use capflow_operators::windows::{window_start, PatientKey, SiteKey};
use capflow_operators::{CloseWindows, Exact, PatientWindows, WindowSpec};
use timely::container::CapacityContainerBuilder;
use timely::dataflow::operators::{Inspect, Probe};
use timely::dataflow::{InputHandle, ProbeHandle};

/// What to simulate.
#[derive(Clone, Copy, Debug)]
pub struct Simulation {
    /// Streams (sites); every 4 belong to one patient.
    pub streams: usize,
    /// Simulated seconds of event time.
    pub seconds: u64,
    /// Metric records per stream and simulated second (the segmentation rate).
    pub rate_hz: u32,
    /// Timely worker threads.
    pub workers: usize,
    /// Windows (the config's default: 10 s tumbling).
    pub spec: WindowSpec,
}

/// What one simulation measured.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Measured {
    /// Streams simulated.
    pub streams: usize,
    /// Simulated hours of event time.
    pub simulated_hours: f64,
    /// Records sent through the windows.
    pub records: u64,
    /// `sites` rows and `patients` rows closed.
    pub site_rows: u64,
    /// `patients` rows closed.
    pub patient_rows: u64,
    /// Wall-clock seconds.
    pub seconds: f64,
    /// Records per wall-clock second.
    pub records_per_s: f64,
    /// Resident memory (MiB) after each simulated hour (or each tenth of the run if shorter).
    pub rss_mib: Vec<f64>,
}

/// Resident memory of this process, MiB (0 where `/proc` is not available).
pub fn rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

/// CPU seconds (user + system, all threads) used so far by this process and by its waited-for children (0 where
/// `/proc` is not available). `/proc` counts in ticks of 1/100 s, plenty over runs of seconds.
pub fn cpu_seconds() -> (f64, f64) {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return (0.0, 0.0);
    };
    // Fields after the parenthesised command name (which may hold spaces): utime, stime, cutime, cstime are the
    // 14th to 17th fields, so the 12th to 15th after it.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let ticks: Vec<f64> = rest
        .split_whitespace()
        .skip(11)
        .take(4)
        .filter_map(|v| v.parse().ok())
        .collect();
    match ticks[..] {
        [u, s, cu, cs] => ((u + s) / 100.0, (cu + cs) / 100.0),
        _ => (0.0, 0.0),
    }
}

/// A good-quality frame row of stream `s` (patient `s / 4`).
fn template(s: usize) -> FrameMetrics {
    FrameMetrics {
        stream_id: format!("s{s:05}"),
        patient_id: format!("p{:05}", s / 4),
        site: format!("site-{}", s % 4),
        width: 640,
        height: 480,
        um_per_px: 1.5,
        segmentation: "every_nth".into(),
        segmented_frames: 1,
        capillary_count: 20 + (s % 7) as u32,
        capillary_density_per_mm2: 30.0,
        area_fraction: 0.1,
        tvd_mm_per_mm2: 15.0,
        tvd_small_mm_per_mm2: 12.0,
        mean_diameter_um: 8.0,
        mean_probability: 0.9,
        field_area_mm2: 0.69,
        mean_luma: 120.0,
        focus: 1.0,
        ..Default::default()
    }
}

/// Runs one simulation: every simulated second each stream sends `rate_hz` records; the watermark follows.
pub fn simulate(sim: Simulation) -> anyhow::Result<Measured> {
    let records = Arc::new(AtomicU64::new(0));
    let site_rows = Arc::new(AtomicU64::new(0));
    let patient_rows = Arc::new(AtomicU64::new(0));
    let rss: Arc<Mutex<Vec<f64>>> = Arc::default();
    let sample_every = if sim.seconds >= 7200 {
        3600
    } else {
        (sim.seconds / 10).max(1)
    };
    let (r, sr, pr, m) = (
        Arc::clone(&records),
        Arc::clone(&site_rows),
        Arc::clone(&patient_rows),
        Arc::clone(&rss),
    );
    let started = Instant::now();
    let guards = timely::execute(timely::Config::process(sim.workers.max(1)), move |worker| {
        let (index, peers) = (worker.index(), worker.peers());
        let mut input: InputHandle<u64, CapacityContainerBuilder<Vec<StreamRecord>>> =
            InputHandle::new();
        let probe = ProbeHandle::new();
        let (sr, pr) = (Arc::clone(&sr), Arc::clone(&pr));
        worker.dataflow::<u64, _, _>(|scope| {
            let (sites, patients) = input
                .to_stream(scope)
                .patient_windows(sim.spec, QualityConfig::default());
            let spec = sim.spec;
            sites
                .close_windows(
                    "CloseSites",
                    move |k: &SiteKey| spec.close_time(k.1),
                    |_, v: Exact<SiteWindow>| v.into_inner(),
                )
                .inspect(move |_| {
                    sr.fetch_add(1, Ordering::Relaxed);
                });
            patients
                .close_windows(
                    "ClosePatients",
                    move |k: &PatientKey| spec.close_time(k.1),
                    |_, v: Exact<PatientWindow>| v.into_inner(),
                )
                .inspect(move |_| {
                    pr.fetch_add(1, Ordering::Relaxed);
                })
                .probe_with(&probe);
        });
        let mine: Vec<FrameMetrics> = (0..sim.streams)
            .filter(|s| s % peers == index)
            .map(template)
            .collect();
        let mut frame_index = 0u64;
        let mut sent = 0u64;
        let step_ms = 1000 / i64::from(sim.rate_hz.max(1));
        let tick = sim.spec.tick();
        for second in 0..sim.seconds {
            let base = second as i64 * 1000;
            // Timely times are floored to the window grid, as in `capflow run`: a window's records share one time.
            input.advance_to(window_start(base, tick) as u64);
            for k in 0..i64::from(sim.rate_hz.max(1)) {
                for t in &mine {
                    let mut f = t.clone();
                    f.frame_index = frame_index;
                    f.event_time_ms = base + k * step_ms;
                    f.pts_ns = f.event_time_ms as u64 * 1_000_000;
                    input.send(StreamRecord::Frame(f));
                    sent += 1;
                }
                frame_index += 1;
            }
            input.flush();
            // Keep little in flight, as the real pipeline's backpressure does. The output's frontier waits for the
            // open windows (window closing holds them), so only what is older than those is waited for.
            let open_ms = sim.spec.length_ms + sim.spec.lateness_ms + 2000;
            let behind = (base - open_ms).max(0) as u64;
            while probe.less_than(&behind) {
                worker.step();
            }
            if index == 0 && (second + 1) % sample_every == 0 {
                m.lock().map(|mut v| v.push(rss_mib())).ok();
            }
        }
        r.fetch_add(sent, Ordering::Relaxed);
    })
    .map_err(|e| anyhow::anyhow!("starting the aggregation benchmark's workers: {e}"))?;
    for result in guards.join() {
        result.map_err(|e| anyhow::anyhow!("an aggregation worker failed: {e}"))?;
    }
    let seconds = started.elapsed().as_secs_f64();
    let records = records.load(Ordering::Relaxed);
    let rss_mib = rss.lock().map(|v| v.clone()).unwrap_or_default();
    Ok(Measured {
        streams: sim.streams,
        simulated_hours: sim.seconds as f64 / 3600.0,
        records,
        site_rows: site_rows.load(Ordering::Relaxed),
        patient_rows: patient_rows.load(Ordering::Relaxed),
        seconds,
        records_per_s: records as f64 / seconds.max(1e-9),
        rss_mib,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_window_of_every_stream_and_patient_closes_once() {
        let spec = WindowSpec {
            length_ms: 10_000,
            hop_ms: 10_000,
            lateness_ms: 0,
        };
        for workers in [1, 2] {
            let m = simulate(Simulation {
                streams: 8,
                seconds: 30,
                rate_hz: 2,
                workers,
                spec,
            })
            .unwrap();
            assert_eq!(m.records, 8 * 30 * 2);
            // Three 10 s windows: 8 sites and 2 patients each.
            assert_eq!((m.site_rows, m.patient_rows), (24, 6), "{m:?}");
        }
    }
}
