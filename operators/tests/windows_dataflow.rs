//! The window operators inside a real timely dataflow, with 1 and 3 workers: per-site rows, per-patient rows across
//! sites, and frames arriving late (within the allowed lateness, and beyond it).

use std::sync::{Arc, Mutex};

use capflow_operators::quality::QualityConfig;
use capflow_operators::records::{
    Edge, FlowSample, FrameMetrics, PatientWindow, SiteWindow, StreamEdge, StreamRecord,
};
use capflow_operators::windows::{PatientKey, SiteKey};
use capflow_operators::{CloseWindows, Exact, PatientWindows, WindowSpec};
use timely::container::CapacityContainerBuilder;
use timely::dataflow::operators::Inspect;
use timely::dataflow::InputHandle;

/// A frame of good quality: bright enough, sharp, vessels in view.
fn frame(stream: &str, index: u64, event_ms: i64, count: u32) -> StreamRecord {
    StreamRecord::Frame(FrameMetrics {
        stream_id: stream.into(),
        patient_id: "p".into(),
        site: format!("site-{stream}"),
        frame_index: index,
        pts_ns: event_ms as u64 * 1_000_000,
        event_time_ms: event_ms,
        width: 640,
        height: 480,
        um_per_px: 1.5,
        segmentation: "every_frame".into(),
        segmented_frames: 1,
        capillary_count: count,
        capillary_density_per_mm2: 100.0,
        area_fraction: 0.1,
        tvd_mm_per_mm2: 15.0,
        tvd_small_mm_per_mm2: 12.0,
        mean_diameter_um: 8.0,
        mean_probability: 0.9,
        field_area_mm2: 0.69,
        mean_luma: 120.0,
        focus: 1e6,
        ..Default::default()
    })
}

fn flow(stream: &str, last: u64, event_ms: i64, mfi: f64) -> StreamRecord {
    StreamRecord::Flow(FlowSample {
        stream_id: stream.into(),
        patient_id: "p".into(),
        site: format!("site-{stream}"),
        first_frame: 0,
        last_frame: last,
        event_time_ms: event_ms,
        n_segments: 10,
        ppv_percent: 80.0,
        pvd_mm_per_mm2: 12.0,
        mfi,
        rbc_velocity_um_s: None,
    })
}

type Rows = (Vec<SiteWindow>, Vec<PatientWindow>);

/// 10 s tumbling windows with 5 s lateness.
const TUMBLING: WindowSpec = WindowSpec {
    length_ms: 10_000,
    hop_ms: 10_000,
    lateness_ms: 5_000,
};

/// Feeds `steps` of (watermark, records) through 10 s windows with 5 s lateness; returns the final rows, sorted.
fn run(workers: usize, steps: Vec<(u64, Vec<StreamRecord>)>) -> Rows {
    run_with(TUMBLING, workers, steps)
}

/// [`run`] with any window spec.
fn run_with(spec: WindowSpec, workers: usize, steps: Vec<(u64, Vec<StreamRecord>)>) -> Rows {
    let out: Arc<Mutex<Rows>> = Arc::default();
    let sink = Arc::clone(&out);
    timely::execute(timely::Config::process(workers), move |worker| {
        let mut input: InputHandle<u64, CapacityContainerBuilder<Vec<StreamRecord>>> =
            InputHandle::new();
        let (s1, s2) = (Arc::clone(&sink), Arc::clone(&sink));
        worker.dataflow::<u64, _, _>(|scope| {
            let (sites, patients) = input
                .to_stream(scope)
                .patient_windows(spec, QualityConfig::default());
            sites
                .close_windows(
                    "S",
                    move |k: &SiteKey| spec.close_time(k.1),
                    |_, v: Exact<SiteWindow>| v.into_inner(),
                )
                .inspect(move |row| s1.lock().unwrap().0.push(row.clone()));
            patients
                .close_windows(
                    "P",
                    move |k: &PatientKey| spec.close_time(k.1),
                    |_, v: Exact<PatientWindow>| v.into_inner(),
                )
                .inspect(move |row| s2.lock().unwrap().1.push(row.clone()));
        });
        if worker.index() == 0 {
            for (watermark, records) in steps.clone() {
                input.advance_to(watermark);
                for r in records {
                    input.send(r);
                }
                input.flush();
                worker.step();
            }
        }
    })
    .unwrap();
    let mut rows = out.lock().unwrap().clone();
    rows.0
        .sort_by(|a, b| (a.window_start_ms, &a.stream_id).cmp(&(b.window_start_ms, &b.stream_id)));
    rows.1.sort_by_key(|p| p.window_start_ms);
    rows
}

/// Two sites of one patient, one frame per second for 10 s each, flow samples with MFI 3 and 2.
fn two_sites() -> Vec<StreamRecord> {
    let mut records = Vec::new();
    for i in 0..10u64 {
        records.push(frame("a", i, i as i64 * 1000, 10));
        records.push(frame("b", i, i as i64 * 1000 + 100, 20));
    }
    records.push(flow("a", 9, 9000, 3.0));
    records.push(flow("b", 9, 9100, 2.0));
    records
}

#[test]
fn two_sites_make_one_patient_row_with_their_heterogeneity() {
    for workers in [1, 3] {
        let (sites, patients) = run(workers, vec![(0, two_sites())]);
        assert_eq!(sites.len(), 2, "{sites:#?}");
        assert!(
            sites.iter().all(|s| s.quality_ok && s.n_frames == 10),
            "{sites:#?}"
        );
        assert_eq!(patients.len(), 1);
        let p = &patients[0];
        assert_eq!(
            (p.n_sites, p.n_valid_sites, p.n_frames, p.late_frames),
            (2, 2, 20, 0)
        );
        assert_eq!(p.capillary_count, Some(15.0));
        assert_eq!(p.mfi, Some(2.5));
        assert!((p.hi.unwrap() - 0.4).abs() < 1e-12, "{p:?}");
        assert_eq!(p.ppv_percent, Some(80.0));
    }
}

#[test]
fn a_frame_within_the_lateness_revises_its_window_and_one_beyond_is_counted() {
    for workers in [1, 3] {
        let steps = vec![
            (0, two_sites()),
            // The watermark is past the window's end (10 s) but within its lateness (closes at 15 s).
            (
                10_000,
                vec![frame("a", 10, 9_500, 100), frame("a", 11, 10_200, 10)],
            ),
            // At 20 s the first window has closed: a frame from 8 s is late, counted in the window open now.
            (
                20_000,
                vec![frame("b", 12, 8_000, 50), frame("a", 12, 20_100, 10)],
            ),
        ];
        let (sites, patients) = run(workers, steps);
        let first = &patients[0];
        assert_eq!(first.window_start_ms, 0);
        assert_eq!(
            first.n_frames, 21,
            "the frame within the lateness is in: {first:?}"
        );
        let a = sites
            .iter()
            .find(|s| s.window_start_ms == 0 && s.stream_id == "a")
            .unwrap();
        assert!((a.capillary_count - 200.0 / 11.0).abs() < 1e-9, "{a:?}");
        assert_eq!(first.late_frames, 0);
        let now = patients
            .iter()
            .find(|p| p.window_start_ms == 20_000)
            .unwrap();
        assert_eq!(now.late_frames, 1, "{now:?}");
        assert_eq!(
            now.n_frames, 1,
            "the late frame is not counted as a frame of this window"
        );
        assert_eq!(
            patients.iter().map(|p| p.late_frames).sum::<u64>(),
            1,
            "counted once: {patients:#?}"
        );
    }
}

#[test]
fn sliding_windows_aggregate_each_frame_in_every_window_that_holds_it() {
    // 20 s windows every 10 s: the two sites' frames (0-10 s) fall in [-10 s, 10 s) and [0 s, 20 s).
    let spec = WindowSpec {
        length_ms: 20_000,
        hop_ms: 10_000,
        lateness_ms: 0,
    };
    for workers in [1, 2] {
        let (sites, patients) = run_with(spec, workers, vec![(0, two_sites())]);
        assert_eq!(sites.len(), 4, "two sites × two windows");
        let starts: Vec<i64> = patients.iter().map(|p| p.window_start_ms).collect();
        assert_eq!(starts, [-10_000, 0]);
        for p in &patients {
            assert_eq!(
                (p.n_sites, p.n_frames, p.window_end_ms - p.window_start_ms),
                (2, 20, 20_000)
            );
            assert_eq!(p.mfi, Some(2.5));
        }
    }
}

#[test]
fn sliding_windows_put_a_frame_in_every_window_that_contains_it() {
    let spec = WindowSpec {
        length_ms: 10_000,
        hop_ms: 5_000,
        lateness_ms: 0,
    };
    assert_eq!(spec.starts(7_000), vec![0, 5_000]);
    assert_eq!(spec.starts(5_000), vec![0, 5_000]);
    assert_eq!(spec.starts(-1), vec![-10_000, -5_000]);
    assert_eq!(spec.tick(), 5_000);
    assert_eq!(WindowSpec::tumbling(1_000).starts(1_999), vec![1_000]);
}

fn edge(stream: &str, edge: Edge, frame: u64, event_ms: i64) -> StreamRecord {
    StreamRecord::Edge(StreamEdge {
        stream_id: stream.into(),
        patient_id: "p".into(),
        site: format!("site-{stream}"),
        edge,
        frame,
        event_time_ms: event_ms,
    })
}

#[test]
fn streams_starting_or_ending_inside_a_window_mark_it_and_its_patient_partial() {
    for workers in [1, 3] {
        let mut records = two_sites();
        // `a` goes on for 15 s and stops at 15.5 s; `b` ends one interval after its frame at 9.1 s, exactly on the
        // window's end, so its window is whole and the next (empty) one gets no row.
        for i in 10..15u64 {
            records.push(frame("a", i, i as i64 * 1000, 10));
        }
        records.push(edge("a", Edge::End, 14, 15_500));
        records.push(edge("b", Edge::End, 9, 10_000));
        // Both start on the window's start (`b` 100 ms in: its first window is partial), `c` starts at 12 s.
        records.push(edge("a", Edge::Start, 0, 0));
        records.push(edge("b", Edge::Start, 0, 100));
        records.push(frame("c", 0, 12_000, 10));
        records.push(edge("c", Edge::Start, 0, 12_000));
        let (sites, patients) = run(workers, vec![(0, records)]);
        let marks: Vec<(i64, &str, bool)> = sites
            .iter()
            .map(|s| (s.window_start_ms, s.stream_id.as_str(), s.partial))
            .collect();
        assert_eq!(
            marks,
            [
                (0, "a", false),
                (0, "b", true),
                (10_000, "a", true),
                (10_000, "c", true)
            ],
            "{sites:#?}"
        );
        let marks: Vec<(i64, bool)> = patients
            .iter()
            .map(|p| (p.window_start_ms, p.partial))
            .collect();
        assert_eq!(marks, [(0, true), (10_000, true)]);
        assert_eq!(patients[1].n_frames, 6, "edges are not frames");
    }
}

/// Every update of the `sites` and `patients` collections: (window start, time, diff).
type Updates = Vec<(i64, u64, isize)>;

#[test]
fn a_closed_window_leaves_no_state_behind() {
    // Records expire when their window closes, so the reductions hold only open windows: over a run of any length
    // their state stays bounded. Seen from outside: each window's value is retracted exactly at its close time.
    for workers in [1, 3] {
        let out: Arc<Mutex<(Updates, Updates)>> = Arc::default();
        let sink = Arc::clone(&out);
        timely::execute(timely::Config::process(workers), move |worker| {
            let mut input: InputHandle<u64, CapacityContainerBuilder<Vec<StreamRecord>>> =
                InputHandle::new();
            let (s1, s2) = (Arc::clone(&sink), Arc::clone(&sink));
            worker.dataflow::<u64, _, _>(|scope| {
                let (sites, patients) = input
                    .to_stream(scope)
                    .patient_windows(TUMBLING, QualityConfig::default());
                sites
                    .inner
                    .inspect(move |((k, _), t, d): &((SiteKey, _), u64, isize)| {
                        s1.lock().unwrap().0.push((k.1, *t, *d))
                    });
                patients
                    .inner
                    .inspect(move |((k, _), t, d): &((PatientKey, _), u64, isize)| {
                        s2.lock().unwrap().1.push((k.1, *t, *d))
                    });
            });
            if worker.index() == 0 {
                for second in 0..40u64 {
                    input.advance_to(second * 1000);
                    input.send(frame("a", second, second as i64 * 1000, 10));
                    input.send(frame("b", second, second as i64 * 1000 + 500, 20));
                    input.flush();
                    worker.step();
                }
            }
        })
        .unwrap();
        let (sites, patients) = out.lock().unwrap().clone();
        for (table, updates) in [("sites", sites), ("patients", patients)] {
            let mut net = std::collections::BTreeMap::<i64, isize>::new();
            for (start, time, diff) in &updates {
                *net.entry(*start).or_default() += diff;
                if *diff < 0 && *time >= TUMBLING.close_time(*start) {
                    assert_eq!(*time, TUMBLING.close_time(*start), "{table}: {updates:?}");
                }
            }
            assert_eq!(net.len(), 4, "{table}: windows 0, 10, 20, 30 s");
            assert!(
                net.values().all(|&n| n == 0),
                "{table}: every window's value is retracted at its close: {net:?}"
            );
            let expired = updates
                .iter()
                .filter(|(s, t, d)| *d < 0 && *t == TUMBLING.close_time(*s))
                .count();
            assert!(expired >= 4, "{table}: {updates:?}");
        }
    }
}
