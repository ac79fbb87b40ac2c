//! What a report shows, computed from table rows alone: the metrics and their units, the time filter, the time
//! ranges to shade (windows that failed the quality check), per-site and per-patient summary statistics.
//!
//! Nothing here reads or writes; [`super`] fetches the rows and [`super::plot`] and [`super::html`] draw them.

use std::collections::{BTreeMap, BTreeSet};

use capflow_operators::records::{PatientWindow, SiteWindow};

/// A clinical metric of the `sites` and `patients` tables that a report plots and summarises.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Metric {
    /// Capillaries per mm² of field (`capillary_density_per_mm2`).
    CapillaryDensity,
    /// Total vessel density, mm/mm² (`tvd_mm_per_mm2`).
    Tvd,
    /// Perfused vessel density, mm/mm² (`pvd_mm_per_mm2`; needs a flow window).
    Pvd,
    /// Proportion of perfused vessels, % (`ppv_percent`; needs a flow window).
    Ppv,
    /// Microvascular flow index, 0..3 (`mfi`; needs a flow window).
    Mfi,
}

impl Metric {
    /// Every metric, in the order a report shows them.
    pub const ALL: [Metric; 5] = [
        Metric::CapillaryDensity,
        Metric::Tvd,
        Metric::Pvd,
        Metric::Ppv,
        Metric::Mfi,
    ];

    /// Short key for file names and HTML attributes (`tvd` → `tvd.png`, `data-key="tvd_mean"`).
    pub fn key(self) -> &'static str {
        match self {
            Metric::CapillaryDensity => "capillary_density",
            Metric::Tvd => "tvd",
            Metric::Pvd => "pvd",
            Metric::Ppv => "ppv",
            Metric::Mfi => "mfi",
        }
    }

    /// The column of the `sites` and `patients` tables.
    pub fn column(self) -> &'static str {
        match self {
            Metric::CapillaryDensity => "capillary_density_per_mm2",
            Metric::Tvd => "tvd_mm_per_mm2",
            Metric::Pvd => "pvd_mm_per_mm2",
            Metric::Ppv => "ppv_percent",
            Metric::Mfi => "mfi",
        }
    }

    /// Name for titles and table headers.
    pub fn title(self) -> &'static str {
        match self {
            Metric::CapillaryDensity => "Capillary density",
            Metric::Tvd => "Total vessel density (TVD)",
            Metric::Pvd => "Perfused vessel density (PVD)",
            Metric::Ppv => "Proportion of perfused vessels (PPV)",
            Metric::Mfi => "Microvascular flow index (MFI)",
        }
    }

    /// Short name for narrow table headers.
    pub fn short(self) -> &'static str {
        match self {
            Metric::CapillaryDensity => "Capillary density",
            Metric::Tvd => "TVD",
            Metric::Pvd => "PVD",
            Metric::Ppv => "PPV",
            Metric::Mfi => "MFI",
        }
    }

    /// Unit, as printed on axes and in headers.
    pub fn unit(self) -> &'static str {
        match self {
            Metric::CapillaryDensity => "capillaries/mm²",
            Metric::Tvd | Metric::Pvd => "mm/mm²",
            Metric::Ppv => "%",
            Metric::Mfi => "score 0–3",
        }
    }

    /// Decimals shown in tables.
    pub fn decimals(self) -> usize {
        match self {
            Metric::CapillaryDensity | Metric::Ppv => 1,
            Metric::Tvd | Metric::Pvd | Metric::Mfi => 2,
        }
    }

    /// The scale's natural bounds, when the metric has them (PPV 0..100 %, MFI 0..3).
    pub fn fixed_range(self) -> Option<(f64, f64)> {
        match self {
            Metric::Ppv => Some((0.0, 100.0)),
            Metric::Mfi => Some((0.0, 3.0)),
            _ => None,
        }
    }

    /// The metric's value in a `sites` row (`None`: not measurable in that window, e.g. no flow window).
    pub fn of_site(self, w: &SiteWindow) -> Option<f64> {
        match self {
            Metric::CapillaryDensity => Some(w.capillary_density_per_mm2),
            Metric::Tvd => Some(w.tvd_mm_per_mm2),
            Metric::Pvd => w.pvd_mm_per_mm2,
            Metric::Ppv => w.ppv_percent,
            Metric::Mfi => w.mfi,
        }
        .filter(|v| v.is_finite())
    }

    /// The metric's value in a `patients` row (`None` without a valid site, or without one with flow).
    pub fn of_patient(self, w: &PatientWindow) -> Option<f64> {
        match self {
            Metric::CapillaryDensity => w.capillary_density_per_mm2,
            Metric::Tvd => w.tvd_mm_per_mm2,
            Metric::Pvd => w.pvd_mm_per_mm2,
            Metric::Ppv => w.ppv_percent,
            Metric::Mfi => w.mfi,
        }
        .filter(|v| v.is_finite())
    }
}

/// Which windows a report covers, by window start: `from` inclusive, `to` exclusive, both ms since the Unix epoch.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TimeRange {
    /// Earliest window start, inclusive.
    pub from_ms: Option<i64>,
    /// Latest window start, exclusive.
    pub to_ms: Option<i64>,
}

impl TimeRange {
    /// Whether a window starting at `start_ms` is in the range.
    pub fn contains(&self, start_ms: i64) -> bool {
        self.from_ms.is_none_or(|from| start_ms >= from)
            && self.to_ms.is_none_or(|to| start_ms < to)
    }

    /// Whether the range is unbounded on both sides.
    pub fn is_all(&self) -> bool {
        self.from_ms.is_none() && self.to_ms.is_none()
    }

    /// The range in words, UTC (`from 2026-03-01 08:00:00 UTC to …`), for messages and report headers.
    pub fn describe(&self) -> String {
        match (self.from_ms, self.to_ms) {
            (None, None) => "all windows".into(),
            (Some(f), None) => format!("windows starting from {}", utc(f)),
            (None, Some(t)) => format!("windows starting before {}", utc(t)),
            (Some(f), Some(t)) => format!("windows starting from {} to before {}", utc(f), utc(t)),
        }
    }
}

/// `ms` since the Unix epoch as `yyyy-mm-dd hh:mm:ss UTC` (whole seconds; the number itself if out of range).
pub fn utc(ms: i64) -> String {
    let Some(text) = rfc3339(ms) else {
        return format!("{ms} ms");
    };
    format!("{} {} UTC", &text[..10], &text[11..19])
}

/// `ms` since the Unix epoch as RFC 3339 in UTC, whole seconds (`2026-03-01T08:00:00Z`).
pub fn rfc3339(ms: i64) -> Option<String> {
    let ms = u64::try_from(ms).ok()?;
    let time = std::time::UNIX_EPOCH.checked_add(std::time::Duration::from_millis(ms))?;
    Some(humantime::format_rfc3339_seconds(time).to_string())
}

/// Mean and median of a metric over a set of windows; `None` when no window had a value.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Stats {
    /// Windows with a value.
    pub n: usize,
    /// Median (the mean of the two middle values for an even count, as SQL's `median` does).
    pub median: Option<f64>,
    /// Arithmetic mean.
    pub mean: Option<f64>,
}

impl Stats {
    /// Statistics of `values` (NaN and infinities are skipped).
    pub fn of(values: impl IntoIterator<Item = f64>) -> Stats {
        let mut v: Vec<f64> = values.into_iter().filter(|v| v.is_finite()).collect();
        if v.is_empty() {
            return Stats::default();
        }
        v.sort_by(f64::total_cmp);
        let n = v.len();
        let median = if n % 2 == 1 {
            v[n / 2]
        } else {
            (v[n / 2 - 1] + v[n / 2]) / 2.0
        };
        Stats {
            n,
            median: Some(median),
            mean: Some(v.iter().sum::<f64>() / n as f64),
        }
    }
}

/// One site of a patient over the report's range: one row of the report's summary table.
#[derive(Clone, Debug, PartialEq)]
pub struct SiteSummary {
    /// The recording site (the `site` column).
    pub site: String,
    /// Streams that recorded the site.
    pub streams: Vec<String>,
    /// Site windows.
    pub windows: usize,
    /// Windows that passed the quality check (`quality_ok`).
    pub good_windows: usize,
    /// Windows cut by the start or end of a recording (`partial`).
    pub partial_windows: usize,
    /// Earliest window start, ms.
    pub first_ms: i64,
    /// Latest window end, ms.
    pub last_ms: i64,
    /// Per metric, over the windows that passed the quality check.
    pub stats: Vec<(Metric, Stats)>,
}

impl SiteSummary {
    /// Share of windows that passed the quality check, 0..1 (0 without windows).
    pub fn good_share(&self) -> f64 {
        if self.windows == 0 {
            0.0
        } else {
            self.good_windows as f64 / self.windows as f64
        }
    }

    /// The statistics of one metric.
    pub fn stats(&self, metric: Metric) -> Stats {
        self.stats
            .iter()
            .find(|(m, _)| *m == metric)
            .map(|(_, s)| *s)
            .unwrap_or_default()
    }
}

/// Groups one patient's site windows by site (sorted by name), each sorted by window start.
pub fn by_site(windows: &[SiteWindow]) -> BTreeMap<String, Vec<&SiteWindow>> {
    let mut sites: BTreeMap<String, Vec<&SiteWindow>> = BTreeMap::new();
    for w in windows {
        sites.entry(w.site.clone()).or_default().push(w);
    }
    for list in sites.values_mut() {
        list.sort_by_key(|w| (w.window_start_ms, w.window_end_ms, w.stream_id.clone()));
    }
    sites
}

/// The summary table of one patient's site windows: per site, window counts and the statistics of every metric over
/// the windows that passed the quality check (failed windows are counted but do not enter the statistics, as they do
/// not enter the `patients` table).
pub fn site_summaries(windows: &[SiteWindow]) -> Vec<SiteSummary> {
    by_site(windows)
        .into_iter()
        .map(|(site, list)| {
            let good: Vec<&&SiteWindow> = list.iter().filter(|w| w.quality_ok).collect();
            SiteSummary {
                streams: list
                    .iter()
                    .map(|w| w.stream_id.clone())
                    .collect::<BTreeSet<_>>()
                    .into_iter()
                    .collect(),
                windows: list.len(),
                good_windows: good.len(),
                partial_windows: list.iter().filter(|w| w.partial).count(),
                first_ms: list.iter().map(|w| w.window_start_ms).min().unwrap_or(0),
                last_ms: list.iter().map(|w| w.window_end_ms).max().unwrap_or(0),
                stats: Metric::ALL
                    .iter()
                    .map(|&m| (m, Stats::of(good.iter().filter_map(|w| m.of_site(w)))))
                    .collect(),
                site,
            }
        })
        .collect()
}

/// The time ranges `[start, end)` of the site windows that failed the quality check, overlapping and touching ones
/// merged, sorted: what a chart shades.
pub fn bad_ranges<'a>(windows: impl IntoIterator<Item = &'a SiteWindow>) -> Vec<(i64, i64)> {
    let mut ranges: Vec<(i64, i64)> = windows
        .into_iter()
        .filter(|w| !w.quality_ok)
        .map(|w| (w.window_start_ms, w.window_end_ms.max(w.window_start_ms)))
        .collect();
    ranges.sort_unstable();
    let mut merged: Vec<(i64, i64)> = Vec::with_capacity(ranges.len());
    for (start, end) in ranges {
        match merged.last_mut() {
            Some(last) if start <= last.1 => last.1 = last.1.max(end),
            _ => merged.push((start, end)),
        }
    }
    merged
}

/// Which metrics have at least one value among `windows` (the others get no chart).
pub fn present_metrics(windows: &[SiteWindow]) -> Vec<Metric> {
    Metric::ALL
        .into_iter()
        .filter(|m| windows.iter().any(|w| m.of_site(w).is_some()))
        .collect()
}

/// One patient's line of the cohort summary, from the `patients` table (and the site count from `sites`).
#[derive(Clone, Debug, PartialEq)]
pub struct CohortRow {
    /// Patient id.
    pub patient_id: String,
    /// Distinct sites in the `sites` table.
    pub sites: usize,
    /// Patient windows.
    pub windows: usize,
    /// Patient windows with at least one valid site (`n_valid_sites > 0`).
    pub valid_windows: usize,
    /// Site windows and how many of them passed the quality check.
    pub site_windows: (usize, usize),
    /// Earliest window start, ms (`None` without windows).
    pub first_ms: Option<i64>,
    /// Latest window end, ms.
    pub last_ms: Option<i64>,
    /// Per metric: the mean over the patient windows that have a value (those with a valid site).
    pub means: Vec<(Metric, Stats)>,
}

impl CohortRow {
    /// The statistics of one metric over the patient windows.
    pub fn stats(&self, metric: Metric) -> Stats {
        self.means
            .iter()
            .find(|(m, _)| *m == metric)
            .map(|(_, s)| *s)
            .unwrap_or_default()
    }
}

/// The cohort line of one patient from its (already filtered) `patients` and `sites` rows.
pub fn cohort_row(patient_id: &str, patients: &[PatientWindow], sites: &[SiteWindow]) -> CohortRow {
    let starts = patients
        .iter()
        .map(|w| w.window_start_ms)
        .chain(sites.iter().map(|w| w.window_start_ms));
    let ends = patients
        .iter()
        .map(|w| w.window_end_ms)
        .chain(sites.iter().map(|w| w.window_end_ms));
    CohortRow {
        patient_id: patient_id.to_string(),
        sites: sites.iter().map(|w| &w.site).collect::<BTreeSet<_>>().len(),
        windows: patients.len(),
        valid_windows: patients.iter().filter(|w| w.n_valid_sites > 0).count(),
        site_windows: (sites.len(), sites.iter().filter(|w| w.quality_ok).count()),
        first_ms: starts.min(),
        last_ms: ends.max(),
        means: Metric::ALL
            .iter()
            .map(|&m| {
                (
                    m,
                    Stats::of(patients.iter().filter_map(|w| m.of_patient(w))),
                )
            })
            .collect(),
    }
}

/// A file-name-safe, injective form of a patient id: `[A-Za-z0-9_.-]` kept, every other byte as `~XX` (upper-case
/// hex); very long ids are cut and suffixed with a hash of the whole id so names stay under file-system limits.
pub fn file_stem(patient_id: &str) -> String {
    let mut out = String::with_capacity(patient_id.len());
    for b in patient_id.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-') {
            out.push(b as char);
        } else {
            out.push_str(&format!("~{b:02X}"));
        }
    }
    const MAX: usize = 180;
    if out.len() > MAX {
        // FNV-1a 64: stable across builds and platforms.
        let hash = patient_id.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
        });
        out.truncate(MAX);
        out.push_str(&format!("~{hash:016x}"));
    }
    format!("patient-{out}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn site(site: &str, start_s: i64, ok: bool, tvd: f64, ppv: Option<f64>) -> SiteWindow {
        SiteWindow {
            patient_id: "p".into(),
            stream_id: format!("{site}-stream"),
            site: site.into(),
            window_start_ms: start_s * 1000,
            window_end_ms: (start_s + 10) * 1000,
            tvd_mm_per_mm2: tvd,
            capillary_density_per_mm2: tvd * 10.0,
            ppv_percent: ppv,
            quality_ok: ok,
            ..Default::default()
        }
    }

    #[test]
    fn bad_ranges_merge_touching_and_overlapping_failed_windows_only() {
        let windows = [
            site("a", 0, true, 1.0, None),
            site("a", 10, false, 1.0, None),
            site("a", 20, false, 1.0, None), // touches the one before: merged into [10, 30)
            site("b", 25, false, 1.0, None), // overlaps: [10, 35)
            site("a", 50, true, 1.0, None),
            site("b", 60, false, 1.0, None),
        ];
        assert_eq!(
            bad_ranges(&windows),
            vec![(10_000, 35_000), (60_000, 70_000)]
        );
        assert!(bad_ranges(&windows[..1]).is_empty());
    }

    #[test]
    fn stats_take_the_sql_median_and_skip_non_finite_values() {
        let s = Stats::of([4.0, 1.0, 3.0, 2.0, f64::NAN]);
        assert_eq!(s.n, 4);
        assert_eq!(s.median, Some(2.5));
        assert_eq!(s.mean, Some(2.5));
        let odd = Stats::of([5.0, 1.0, 2.0]);
        assert_eq!((odd.median, odd.mean), (Some(2.0), Some(8.0 / 3.0)));
        assert_eq!(Stats::of([]), Stats::default());
    }

    #[test]
    fn site_summaries_count_every_window_but_summarise_the_good_ones() {
        let windows = [
            site("sub-1", 0, true, 2.0, Some(80.0)),
            site("sub-1", 10, true, 4.0, None),
            site("sub-1", 20, false, 100.0, Some(10.0)),
            site("sub-2", 0, false, 3.0, Some(50.0)),
        ];
        let s = site_summaries(&windows);
        assert_eq!(s.len(), 2);
        let (one, two) = (&s[0], &s[1]);
        assert_eq!(
            (one.site.as_str(), one.windows, one.good_windows),
            ("sub-1", 3, 2)
        );
        assert!((one.good_share() - 2.0 / 3.0).abs() < 1e-12);
        assert_eq!(one.stats(Metric::Tvd).mean, Some(3.0));
        assert_eq!(one.stats(Metric::Ppv).n, 1, "null PPV is not a value");
        assert_eq!(one.stats(Metric::Ppv).median, Some(80.0));
        assert_eq!((one.first_ms, one.last_ms), (0, 30_000));
        assert_eq!(two.good_windows, 0);
        assert_eq!(two.stats(Metric::Tvd), Stats::default());
    }

    #[test]
    fn time_range_is_inclusive_at_from_and_exclusive_at_to() {
        let r = TimeRange {
            from_ms: Some(1000),
            to_ms: Some(2000),
        };
        assert!(!r.contains(999));
        assert!(r.contains(1000));
        assert!(r.contains(1999));
        assert!(!r.contains(2000));
        assert!(TimeRange::default().contains(i64::MIN));
        assert_eq!(utc(1_772_352_000_000), "2026-03-01 08:00:00 UTC");
    }

    #[test]
    fn file_stems_are_safe_and_distinct() {
        assert_eq!(file_stem("p001"), "patient-p001");
        assert_eq!(file_stem("../x y"), "patient-..~2Fx~20y");
        assert_ne!(file_stem("a~41"), file_stem("aA"));
        let long = "é".repeat(200);
        let stem = file_stem(&long);
        assert!(stem.len() < 220, "{}", stem.len());
        assert_ne!(stem, file_stem(&"é".repeat(201)));
    }

    #[test]
    fn cohort_row_means_are_over_patient_windows_with_a_value() {
        let p = |start: i64, valid: u32, tvd: Option<f64>| PatientWindow {
            patient_id: "p".into(),
            window_start_ms: start,
            window_end_ms: start + 10,
            n_valid_sites: valid,
            tvd_mm_per_mm2: tvd,
            ..Default::default()
        };
        let rows = [p(0, 1, Some(2.0)), p(10, 0, None), p(20, 2, Some(4.0))];
        let sites = [
            site("a", 0, true, 1.0, None),
            site("b", 0, false, 1.0, None),
        ];
        let row = cohort_row("p", &rows, &sites);
        assert_eq!((row.windows, row.valid_windows, row.sites), (3, 2, 2));
        assert_eq!(row.site_windows, (2, 1));
        assert_eq!(row.stats(Metric::Tvd).mean, Some(3.0));
        assert_eq!(row.stats(Metric::Mfi).mean, None);
        assert_eq!((row.first_ms, row.last_ms), (Some(0), Some(10_000)));
    }
}
