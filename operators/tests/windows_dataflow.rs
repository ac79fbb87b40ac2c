//! The window operators inside a real timely dataflow, with 1 and 3 workers.

use std::sync::{Arc, Mutex};

use capflow_operators::records::{FrameMetrics, WindowAggregate};
use capflow_operators::{CloseWindows, Part, PartKey, PatientWindows, WriteParts};
use timely::container::CapacityContainerBuilder;
use timely::dataflow::InputHandle;

fn frame(stream: &str, patient: &str, index: u64, event_ms: i64, count: u32) -> FrameMetrics {
    FrameMetrics {
        stream_id: stream.into(),
        patient_id: patient.into(),
        site: "s".into(),
        frame_index: index,
        pts_ns: 0,
        event_time_ms: event_ms,
        width: 10,
        height: 10,
        um_per_px: 2.2,
        capillary_count: count,
        area_fraction: 0.01,
        density_per_mm2: 1.0,
        mean_probability: 0.9,
        field_area_mm2: 1.0,
    }
}

/// Runs frames of two patients (patient `a` with two streams) through windows of 1 s and returns the parts written.
fn run(workers: usize) -> Vec<Part<WindowAggregate>> {
    let parts = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&parts);
    timely::execute(timely::Config::process(workers), move |worker| {
        let mut input: InputHandle<u64, CapacityContainerBuilder<Vec<FrameMetrics>>> =
            InputHandle::new();
        let sink = Arc::clone(&sink);
        worker.dataflow::<u64, _, _>(|scope| {
            input
                .to_stream(scope)
                .patient_windows(1000)
                .close_windows(1000)
                .write_parts(
                    "Write",
                    |w: &WindowAggregate| PartKey {
                        patient_id: w.patient_id.clone(),
                        name: format!("part-{}", w.window_start_ms / 2000),
                        complete_rows: None,
                        complete_at: Some((w.window_start_ms / 2000 * 2000 + 2000) as u64),
                    },
                    |a, b| a.window_start_ms.cmp(&b.window_start_ms),
                    move |part| sink.lock().unwrap().push(part),
                );
        });
        if worker.index() == 0 {
            // Event times in ms; timely times are floored to the 1 s window grid.
            for (stream, patient, i, t, c) in [
                ("a1", "a", 0, 100, 10),
                ("a2", "a", 0, 200, 20),
                ("a1", "a", 1, 900, 30),
                ("b1", "b", 0, 950, 5),
            ] {
                input.advance_to((t / 1000 * 1000) as u64);
                input.send(frame(stream, patient, i, t, c));
            }
            for (stream, patient, i, t, c) in [("a1", "a", 2, 1500, 40), ("b1", "b", 1, 4100, 7)] {
                input.advance_to((t / 1000 * 1000) as u64);
                input.send(frame(stream, patient, i, t, c));
            }
        }
    })
    .unwrap();
    let mut parts = parts.lock().unwrap().clone();
    parts.sort_by(|a, b| (&a.patient_id, &a.name).cmp(&(&b.patient_id, &b.name)));
    parts
}

#[test]
fn windows_aggregate_per_patient_across_streams_and_close_once() {
    let parts = run(1);
    let rows: Vec<&WindowAggregate> = parts.iter().flat_map(|p| &p.rows).collect();
    assert_eq!(rows.len(), 4, "{rows:#?}");
    let a0 = rows
        .iter()
        .find(|w| w.patient_id == "a" && w.window_start_ms == 0)
        .unwrap();
    assert_eq!((a0.n_frames, a0.n_streams), (3, 2));
    assert_eq!(a0.capillary_count.mean, 20.0);
    assert_eq!(a0.capillary_count.median, 20.0);
    let a1 = rows
        .iter()
        .find(|w| w.patient_id == "a" && w.window_start_ms == 1000)
        .unwrap();
    assert_eq!((a1.n_frames, a1.n_streams, a1.window_end_ms), (1, 1, 2000));
    // Patient a's two windows share one part; b's windows fall in two parts.
    assert_eq!(parts.iter().filter(|p| p.patient_id == "a").count(), 1);
    assert_eq!(parts.iter().filter(|p| p.patient_id == "b").count(), 2);
}

#[test]
fn three_workers_give_the_same_parts_as_one() {
    assert_eq!(run(1), run(3));
}
