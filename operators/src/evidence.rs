//! Picks one evidence frame per stream and window, renders it, and hands it to a writer; the frames pass on
//! unchanged.
//!
//! The evidence frame of a window is its first segmented frame in stream order, so the choice depends only on the
//! stream, never on worker count or timing, and a re-run writes the same image under the same name. With sliding
//! windows one frame may be the first of several windows; it is rendered once per window.

use std::collections::HashMap;

use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::Operator;
use timely::dataflow::Stream;

use crate::overlay::{vessel_overlay, Rgb};
use crate::segment::Analysed;
use crate::windows::WindowSpec;

/// One window's evidence image.
#[derive(Clone, Debug, PartialEq)]
pub struct EvidenceImage {
    /// Patient.
    pub patient_id: String,
    /// Stream (site recording).
    pub stream_id: String,
    /// Start of the window the image stands for, ms since the Unix epoch.
    pub window_start_ms: i64,
    /// The frame's event time, ms since the Unix epoch.
    pub event_time_ms: i64,
    /// The rendered image.
    pub image: Rgb,
}

/// Which windows still need their evidence frame, per stream.
#[derive(Clone, Debug, Default)]
pub struct EvidencePicker {
    /// Per stream, the latest window start already covered.
    covered: HashMap<String, i64>,
}

impl EvidencePicker {
    /// The starts of the windows whose first segmented frame is the one at `event_ms` of `stream` (frames of a
    /// stream must come in event-time order), oldest first; empty if every window holding it has its frame.
    pub fn windows_for(&mut self, stream: &str, event_ms: i64, spec: &WindowSpec) -> Vec<i64> {
        let covered = self.covered.get(stream).copied().unwrap_or(i64::MIN);
        let mut starts: Vec<i64> = spec
            .starts(event_ms)
            .into_iter()
            .filter(|&s| s > covered)
            .collect();
        starts.sort_unstable();
        if let Some(&last) = starts.last() {
            self.covered.insert(stream.to_string(), last);
        }
        starts
    }
}

/// Extension trait: write one evidence image per stream and window.
pub trait Evidence {
    /// Calls `write` with each window's evidence image (the frame's working plane with the vessels drawn, yellow
    /// below `small_diameter_um`, magenta above) and passes every frame on unchanged.
    fn evidence<W>(self, spec: WindowSpec, small_diameter_um: f64, write: W) -> Self
    where
        W: FnMut(EvidenceImage) + 'static;
}

impl<'scope> Evidence for Stream<'scope, u64, Vec<Analysed>> {
    fn evidence<W>(self, spec: WindowSpec, small_diameter_um: f64, mut write: W) -> Self
    where
        W: FnMut(EvidenceImage) + 'static,
    {
        let mut picker = EvidencePicker::default();
        self.unary(Pipeline, "Evidence", move |_, _| {
            move |input, output| {
                input.for_each_stamp(|cap, data| {
                    let Some(cap) = cap.retain_least(output.output_index()) else {
                        return;
                    };
                    let mut session = output.session(&cap);
                    for batch in data {
                        for analysed in batch.drain(..) {
                            if let (Some(row), Some(map)) = (&analysed.row, &analysed.map) {
                                let starts =
                                    picker.windows_for(&row.stream_id, row.event_time_ms, &spec);
                                if !starts.is_empty() {
                                    let s = &analysed.stable;
                                    let image = vessel_overlay(
                                        &s.luma,
                                        s.luma_width,
                                        s.luma_height,
                                        &map.vessels,
                                        small_diameter_um,
                                    );
                                    for window_start_ms in starts {
                                        write(EvidenceImage {
                                            patient_id: row.patient_id.clone(),
                                            stream_id: row.stream_id.clone(),
                                            window_start_ms,
                                            event_time_ms: row.event_time_ms,
                                            image: image.clone(),
                                        });
                                    }
                                }
                            }
                            session.give(analysed);
                        }
                    }
                });
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_frame_of_each_window_is_picked_once_per_stream() {
        let tumbling = WindowSpec {
            length_ms: 1000,
            hop_ms: 1000,
            lateness_ms: 0,
        };
        let mut p = EvidencePicker::default();
        assert_eq!(p.windows_for("a", 100, &tumbling), [0]);
        assert!(p.windows_for("a", 900, &tumbling).is_empty());
        // Another stream has its own windows.
        assert_eq!(p.windows_for("b", 950, &tumbling), [0]);
        // A window without frames (1000..2000) gets none; the next frame opens 2000.
        assert_eq!(p.windows_for("a", 2500, &tumbling), [2000]);
        let sliding = WindowSpec {
            length_ms: 1000,
            hop_ms: 250,
            lateness_ms: 0,
        };
        let mut p = EvidencePicker::default();
        // The first frame is the first of every window holding it.
        assert_eq!(p.windows_for("a", 600, &sliding), [-250, 0, 250, 500]);
        assert!(p.windows_for("a", 700, &sliding).is_empty());
        assert_eq!(p.windows_for("a", 800, &sliding), [750]);
    }
}
