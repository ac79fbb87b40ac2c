//! `write_parts` inside a real timely dataflow with 1 and 3 workers: parts complete by row count or by event time,
//! rows split by day, every row lands in exactly one part, and the parts do not depend on the worker count.

use std::sync::{Arc, Mutex};

use capflow_operators::{Part, PartKey, WriteParts};
use timely::container::CapacityContainerBuilder;
use timely::dataflow::InputHandle;

/// (patient, event time ms, value).
type Row = (String, i64, u32);

const DAY_MS: i64 = 86_400_000;

fn run(workers: usize) -> Vec<(String, String, String, Vec<Row>)> {
    let parts = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&parts);
    timely::execute(timely::Config::process(workers), move |worker| {
        let mut input: InputHandle<u64, CapacityContainerBuilder<Vec<Row>>> = InputHandle::new();
        let sink = Arc::clone(&sink);
        let index = worker.index();
        worker.dataflow::<u64, _, _>(|scope| {
            input.to_stream(scope).write_parts(
                "WriteTest",
                |row: &Row| {
                    // Chunks of 1000 ms; patient "a" completes by count (4 rows), "b" by event time.
                    let chunk = row.1.div_euclid(1000) * 1000;
                    PartKey {
                        patient_id: row.0.clone(),
                        date: format!("day{}", row.1.div_euclid(DAY_MS)),
                        name: format!("part-{chunk}"),
                        complete_rows: (row.0 == "a").then_some(4),
                        complete_at: (row.0 == "b")
                            .then_some((chunk + 1000 - (DAY_MS - 2000)) as u64),
                    }
                },
                |x, y| x.1.cmp(&y.1),
                move |part: Part<Row>| {
                    sink.lock()
                        .unwrap()
                        .push((part.patient_id, part.date, part.name, part.rows))
                },
            );
        });
        // Worker 0 feeds event times around midnight of day 0 → 1, out of order within each tick.
        if index == 0 {
            for t in 0..8i64 {
                let base = DAY_MS - 2000 + t * 500;
                input.advance_to(t as u64 * 500);
                for (patient, dt) in [("a", 300), ("b", 100), ("a", 0), ("b", 400)] {
                    input.send((patient.to_string(), base + dt, t as u32));
                }
            }
        }
    })
    .unwrap();
    let mut parts: Vec<_> = parts.lock().unwrap().drain(..).collect();
    parts.sort();
    parts
}

#[test]
fn parts_are_complete_disjoint_split_by_day_and_independent_of_workers() {
    let one = run(1);
    assert_eq!(one, run(3));
    // 32 rows: every row in exactly one part, each part's rows in event-time order.
    let rows: usize = one.iter().map(|p| p.3.len()).sum();
    assert_eq!(rows, 32);
    for (patient, date, name, rows) in &one {
        assert!(
            rows.windows(2).all(|w| w[0].1 <= w[1].1),
            "{name}: {rows:?}"
        );
        assert!(rows.iter().all(|r| &r.0 == patient));
        let day = format!("day{}", rows[0].1.div_euclid(DAY_MS));
        assert!(rows
            .iter()
            .all(|r| format!("day{}", r.1.div_euclid(DAY_MS)) == *date && *date == day));
    }
    // Midnight splits the stream: two days per patient, each with two 1 s chunks.
    let names: Vec<(&str, &str, &str)> = one
        .iter()
        .map(|p| (p.0.as_str(), p.1.as_str(), p.2.as_str()))
        .collect();
    assert_eq!(
        names,
        [
            ("a", "day0", "part-86398000"),
            ("a", "day0", "part-86399000"),
            ("a", "day1", "part-86400000"),
            ("a", "day1", "part-86401000"),
            ("b", "day0", "part-86398000"),
            ("b", "day0", "part-86399000"),
            ("b", "day1", "part-86400000"),
            ("b", "day1", "part-86401000"),
        ]
    );
}
