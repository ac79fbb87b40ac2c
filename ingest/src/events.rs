//! What happened to a stream, as rows of the `stream_events` table: when it started and ended, when its source was
//! lost and came back, and when frames were dropped because processing fell behind.

use serde::{Deserialize, Serialize};

/// The kind of a [`StreamEvent`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// The first frame arrived (start = end = its event time).
    Started,
    /// The source was lost and later reconnected: start = the last frame before the loss, end = the first frame
    /// after it, `frames_lost` = the frames the stream's nominal rate puts in between, `attempts` = reconnects tried.
    Gap,
    /// Processing fell behind and frames were dropped by the live drop policy: start/end = first/last dropped
    /// frame of the episode, `frames_lost` = frames dropped.
    Dropped,
    /// The source ended on its own end of stream (start = end = the last frame).
    Ended,
    /// The run was stopped (duration reached, Ctrl-C, SIGTERM or removed from the config) while the stream ran.
    Stopped,
    /// The stream failed for good (a damaged file, or a live source that stayed away past the reconnect limit):
    /// start = the last frame, end = when capflow gave up, `detail` = why.
    Failed,
}

impl EventKind {
    /// Every kind.
    pub const ALL: [EventKind; 6] = [
        EventKind::Started,
        EventKind::Gap,
        EventKind::Dropped,
        EventKind::Ended,
        EventKind::Stopped,
        EventKind::Failed,
    ];

    /// The name stored in the `kind` column.
    pub fn name(self) -> &'static str {
        match self {
            EventKind::Started => "started",
            EventKind::Gap => "gap",
            EventKind::Dropped => "dropped",
            EventKind::Ended => "ended",
            EventKind::Stopped => "stopped",
            EventKind::Failed => "failed",
        }
    }

    /// The kind named `name` in the `kind` column.
    pub fn from_name(name: &str) -> Option<EventKind> {
        EventKind::ALL.into_iter().find(|k| k.name() == name)
    }
}

/// One row of the `stream_events` table.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamEvent {
    /// Stream id.
    pub stream_id: String,
    /// Patient id (the table's partition column).
    pub patient_id: String,
    /// Recording site.
    pub site: String,
    /// What happened.
    pub kind: EventKind,
    /// Start, milliseconds since the Unix epoch (event time: the stream's own clock for replays, the receive wall
    /// clock for live sources).
    pub start_ms: i64,
    /// End, milliseconds since the Unix epoch.
    pub end_ms: i64,
    /// Frames the event cost (dropped, or missing during a gap).
    pub frames_lost: u64,
    /// Reconnect attempts (gaps and failures of live sources).
    pub attempts: u32,
    /// The error behind a gap or failure.
    pub detail: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kind_names_round_trip() {
        for kind in EventKind::ALL {
            assert_eq!(EventKind::from_name(kind.name()), Some(kind));
        }
        let names: std::collections::BTreeSet<&str> =
            EventKind::ALL.iter().map(|k| k.name()).collect();
        assert_eq!(names.len(), EventKind::ALL.len(), "names are distinct");
        assert_eq!(EventKind::from_name("nope"), None);
    }
}
