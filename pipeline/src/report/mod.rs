//! `capflow report`: a clinician's view of one patient (or of every patient) from the tables of a capflow output.
//!
//! Reads the committed `sites` and `patients` tables of an output (a local folder or `s3://bucket/prefix`, opened the
//! way `capflow run` opens its output: `[output.s3]` of `--config`, else the `AWS_*` variables), keeps the windows
//! whose start is in `--from`..`--to`, and writes into the report folder:
//!
//! * `patient-<id>/<metric>.png`: each metric over time, one line per site, windows that failed the quality check
//!   shaded ([`plot`]);
//! * `patient-<id>.html`: one self-contained page (inline CSS, the charts and the latest evidence images per site
//!   embedded as data URIs) with a summary table per site ([`html`]);
//! * with `--all`, one page per patient and `index.html`, the cohort summary linking them.
//!
//! [`model`] computes what the pages show from the rows alone; this module does the reading and writing.

pub mod html;
pub mod model;
pub mod plot;

use std::collections::BTreeSet;
use std::path::PathBuf;

use anyhow::Context;
use capflow_operators::records::{PatientWindow, SiteWindow};
use capflow_sinks::read::{list_parts, read_patients_parts_async, read_sites_parts_async, Part};
use capflow_sinks::{open_output, Output, S3Options, SinkError, Table};

use self::html::{CohortPage, Evidence, PatientPage};
use self::model::{
    bad_ranges, by_site, cohort_row, file_stem, present_metrics, site_summaries, CohortRow,
    TimeRange,
};
use self::plot::{Chart, Point, Series, CHART_SIZE};

/// Options of `capflow report`.
#[derive(Clone, Debug, clap::Args)]
pub struct ReportArgs {
    /// The patient to report on (see --all).
    #[arg(long, required_unless_present = "all", conflicts_with = "all")]
    pub patient: Option<String>,
    /// One report per patient, plus index.html: the cohort summary linking them.
    #[arg(long)]
    pub all: bool,
    /// Only windows starting at or after this UTC time (RFC 3339, e.g. 2026-03-01T08:00:00Z).
    #[arg(long, value_parser = parse_time)]
    pub from: Option<i64>,
    /// Only windows starting before this UTC time (RFC 3339).
    #[arg(long, value_parser = parse_time)]
    pub to: Option<i64>,
    /// The output of `capflow run` to read: a folder, file://… or s3://bucket/prefix.
    #[arg(long)]
    pub input: String,
    /// Folder to write the report into (created if missing).
    #[arg(long)]
    pub output: PathBuf,
    /// A capflow config whose [output.s3] section (endpoint, region, credentials) opens an s3:// --input; without
    /// it the AWS_* environment variables do, as for `capflow run`.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Evidence images shown per site: the latest windows that have one.
    #[arg(long, default_value_t = 4)]
    pub evidence: usize,
    /// TrueType font for the charts' text.
    #[arg(long, default_value = plot::DEFAULT_FONT)]
    pub font: PathBuf,
}

/// `--from`/`--to`: RFC 3339 in UTC (`2026-03-01T08:00:00Z`, or without the `Z`) → ms since the Unix epoch.
pub fn parse_time(text: &str) -> Result<i64, String> {
    let time = humantime::parse_rfc3339_weak(text)
        .map_err(|e| format!("{e}: give an RFC 3339 UTC time such as 2026-03-01T08:00:00Z"))?;
    let ms = match time.duration_since(std::time::UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_millis()).map_err(|_| "time out of range".to_string())?,
        Err(before) => -i64::try_from(before.duration().as_millis())
            .map_err(|_| "time out of range".to_string())?,
    };
    Ok(ms)
}

/// Why a report could not be made; each message names the input and what to do.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReportError {
    /// A local --input that does not exist (or is not a folder).
    #[error(
        "--input {input}: no such folder. Give the folder (or s3://bucket/prefix) that `capflow run` wrote, its \
         output.location"
    )]
    Missing {
        /// The input as given.
        input: String,
    },
    /// The location could not be opened or its tables read.
    #[error(
        "cannot read the capflow output at {input}: check the location, and for s3:// the endpoint and credentials \
         (AWS_* variables, or [output.s3] of --config)"
    )]
    Unreadable {
        /// The input as given (never with credentials).
        input: String,
        /// What failed.
        #[source]
        source: Box<SinkError>,
    },
    /// The output holds no committed `sites` or `patients` rows.
    #[error(
        "the capflow output at {input} holds no committed sites or patients rows: point --input at the output of a \
         finished `capflow run` (or run one: capflow run --output {input})"
    )]
    Empty {
        /// The input.
        input: String,
    },
    /// The patient is not in the output.
    #[error(
        "patient {patient:?} is not in {input}; patients present: {}. Check the id (with output.pseudonymise, the \
         pseudonym \"pid-…\")",
        list(present)
    )]
    UnknownPatient {
        /// The patient asked for.
        patient: String,
        /// The input.
        input: String,
        /// The patients the output holds.
        present: Vec<String>,
    },
    /// No window starts in the --from/--to range.
    #[error(
        "no window of {who} in {input} starts in the range asked for ({range}); its windows start between {first} and \
         {last}: widen --from/--to"
    )]
    NoWindowsInRange {
        /// The patient, or "any patient".
        who: String,
        /// The input.
        input: String,
        /// The range, in words.
        range: String,
        /// First window start present (UTC).
        first: String,
        /// Last window start present (UTC).
        last: String,
    },
    /// --from is not before --to.
    #[error("--from ({from}) must be before --to ({to})")]
    BadRange {
        /// --from, UTC.
        from: String,
        /// --to, UTC.
        to: String,
    },
}

fn list(ids: &[String]) -> String {
    const SHOWN: usize = 20;
    if ids.is_empty() {
        return "none".into();
    }
    let mut text = ids
        .iter()
        .take(SHOWN)
        .map(|id| format!("{id:?}"))
        .collect::<Vec<_>>()
        .join(", ");
    if ids.len() > SHOWN {
        text += &format!(" and {} more", ids.len() - SHOWN);
    }
    text
}

/// One patient's report as written.
#[derive(Clone, Debug)]
pub struct PatientReport {
    /// The patient.
    pub patient_id: String,
    /// The HTML page.
    pub html: PathBuf,
    /// The chart PNGs.
    pub charts: Vec<PathBuf>,
    /// Evidence images embedded.
    pub evidence: usize,
    /// Evidence images that could not be read (named in the page).
    pub evidence_missing: usize,
    /// The patient's summary line.
    pub summary: CohortRow,
}

/// What `capflow report` wrote.
#[derive(Clone, Debug)]
pub struct ReportOutcome {
    /// The output location read, normalised.
    pub input: String,
    /// One entry per patient page written.
    pub patients: Vec<PatientReport>,
    /// The cohort page (`--all` only).
    pub cohort: Option<PathBuf>,
}

/// Runs `capflow report`: reads the tables, writes the pages and charts, and says what it wrote.
pub fn report(args: &ReportArgs) -> anyhow::Result<ReportOutcome> {
    let range = TimeRange {
        from_ms: args.from,
        to_ms: args.to,
    };
    if let (Some(from), Some(to)) = (args.from, args.to) {
        if from >= to {
            return Err(ReportError::BadRange {
                from: model::utc(from),
                to: model::utc(to),
            }
            .into());
        }
    }
    // The font first: a missing one should not wait for a slow store.
    plot::load_font(&args.font)?;
    let s3 = match &args.config {
        Some(path) => {
            crate::config::load_file(path)
                .map_err(anyhow::Error::msg)
                .with_context(|| format!("reading [output.s3] from --config {}", path.display()))?
                .output
                .s3
        }
        None => S3Options::default(),
    };
    // Checked before opening: opening a local output creates its folder.
    check_local(&args.input)?;
    let output = open_output(&args.input, &s3).map_err(|source| ReportError::Unreadable {
        input: args.input.clone(),
        source: Box::new(source),
    })?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the I/O runtime")?;
    let unreadable = |source: SinkError| ReportError::Unreadable {
        input: args.input.clone(),
        source: Box::new(source),
    };
    // The commit markers name every part's patient and day: list them once, then fetch only the parts needed.
    let (site_parts, patient_parts) = runtime
        .block_on(async {
            let sites = list_parts(&output, Table::Sites).await?;
            let patients = list_parts(&output, Table::Patients).await?;
            Ok::<_, SinkError>((sites, patients))
        })
        .map_err(unreadable)?;
    if site_parts.is_empty() && patient_parts.is_empty() {
        return Err(ReportError::Empty {
            input: args.input.clone(),
        }
        .into());
    }
    let present: Vec<String> = site_parts
        .iter()
        .chain(&patient_parts)
        .map(|p| p.patient_id.clone())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let chosen: Vec<String> = match &args.patient {
        Some(patient) if !present.contains(patient) => {
            return Err(ReportError::UnknownPatient {
                patient: patient.clone(),
                input: args.input.clone(),
                present,
            }
            .into())
        }
        Some(patient) => vec![patient.clone()],
        None => present.clone(),
    };
    let read = |keep: &dyn Fn(&Part) -> bool| {
        let pick = |parts: &[Part]| {
            parts
                .iter()
                .filter(|p| keep(p))
                .cloned()
                .collect::<Vec<_>>()
        };
        runtime
            .block_on(async {
                let sites = read_sites_parts_async(&output, pick(&site_parts)).await?;
                let patients = read_patients_parts_async(&output, pick(&patient_parts)).await?;
                Ok::<_, SinkError>((sites, patients))
            })
            .map_err(unreadable)
    };
    let chosen_part = |p: &Part| chosen.contains(&p.patient_id);
    // Parts are partitioned by the UTC day of their windows' starts: days outside the range are not fetched.
    let days = days_of(range);
    let (sites, patients) = read(&|p| chosen_part(p) && days.contains(&p.date))?;
    let sites: Vec<SiteWindow> = sites
        .into_iter()
        .filter(|w| range.contains(w.window_start_ms))
        .collect();
    let patients: Vec<PatientWindow> = patients
        .into_iter()
        .filter(|w| range.contains(w.window_start_ms))
        .collect();
    if sites.is_empty() && patients.is_empty() {
        // Nothing in range: say where the windows are.
        let (all_sites, all_patients) = read(&chosen_part)?;
        let starts = all_sites
            .iter()
            .map(|w| w.window_start_ms)
            .chain(all_patients.iter().map(|w| w.window_start_ms));
        let (first, last) = starts.fold((i64::MAX, i64::MIN), |(lo, hi), t| (lo.min(t), hi.max(t)));
        return Err(ReportError::NoWindowsInRange {
            who: match &args.patient {
                Some(p) => format!("patient {p:?}"),
                None => "any patient".into(),
            },
            input: args.input.clone(),
            range: range.describe(),
            first: model::utc(first),
            last: model::utc(last),
        }
        .into());
    }

    std::fs::create_dir_all(&args.output)
        .with_context(|| format!("creating the report folder {}", args.output.display()))?;
    let mut written = Vec::new();
    let mut cohort: Vec<(CohortRow, Option<String>)> = Vec::new();
    for patient in &chosen {
        let site_rows: Vec<SiteWindow> = sites
            .iter()
            .filter(|w| &w.patient_id == patient)
            .cloned()
            .collect();
        let patient_rows: Vec<PatientWindow> = patients
            .iter()
            .filter(|w| &w.patient_id == patient)
            .cloned()
            .collect();
        if site_rows.is_empty() && patient_rows.is_empty() {
            cohort.push((cohort_row(patient, &patient_rows, &site_rows), None));
            continue;
        }
        let report = write_patient(
            args,
            &output,
            &runtime,
            range,
            patient,
            &site_rows,
            &patient_rows,
        )
        .with_context(|| format!("writing the report of patient {patient:?}"))?;
        let file = report
            .html
            .file_name()
            .map(|n| n.to_string_lossy().into_owned());
        cohort.push((report.summary.clone(), file));
        written.push(report);
    }
    let cohort_file = if args.all {
        let path = args.output.join("index.html");
        let page = html::cohort_html(&CohortPage {
            input: &output.url,
            range,
            rows: &cohort,
        });
        std::fs::write(&path, page).with_context(|| format!("writing {}", path.display()))?;
        Some(path)
    } else {
        None
    };
    Ok(ReportOutcome {
        input: output.url.clone(),
        patients: written,
        cohort: cohort_file,
    })
}

/// The UTC days (`yyyy-mm-dd`, as in the `date=` partitions) on which a window in `range` can start.
pub fn days_of(range: TimeRange) -> std::ops::RangeInclusive<String> {
    let day = |ms: i64| model::rfc3339(ms).map(|t| t[..10].to_string());
    let first = range.from_ms.and_then(day).unwrap_or_default();
    let last = range
        .to_ms
        .and_then(|to| day(to - 1))
        .unwrap_or_else(|| "9999-12-31".into());
    first..=last
}

/// A local --input must be an existing folder (opening one would create it).
fn check_local(input: &str) -> Result<(), ReportError> {
    let trimmed = input.trim();
    let local = match trimmed.split_once("://") {
        None => Some(PathBuf::from(trimmed)),
        Some((scheme, _)) if scheme.eq_ignore_ascii_case("file") => url::Url::parse(trimmed)
            .ok()
            .and_then(|u| u.to_file_path().ok()),
        Some(_) => None,
    };
    match local {
        Some(path) if !path.is_dir() => Err(ReportError::Missing {
            input: input.to_string(),
        }),
        _ => Ok(()),
    }
}

fn write_patient(
    args: &ReportArgs,
    output: &Output,
    runtime: &tokio::runtime::Runtime,
    range: TimeRange,
    patient: &str,
    sites: &[SiteWindow],
    patients: &[PatientWindow],
) -> anyhow::Result<PatientReport> {
    let stem = file_stem(patient);
    let chart_dir = args.output.join(&stem);
    std::fs::create_dir_all(&chart_dir)
        .with_context(|| format!("creating {}", chart_dir.display()))?;
    let summary = cohort_row(patient, patients, sites);
    let summaries = site_summaries(sites);
    let grouped = by_site(sites);
    let x_range = (summary.first_ms.unwrap_or(0), summary.last_ms.unwrap_or(0));
    let bad = bad_ranges(sites);
    let mut charts = Vec::new();
    let mut chart_files = Vec::new();
    for metric in present_metrics(sites) {
        let chart = Chart {
            metric,
            title: format!("{}: patient {patient}", metric.title()),
            series: grouped
                .iter()
                .map(|(site, windows)| Series {
                    label: site.clone(),
                    points: windows
                        .iter()
                        .map(|w| Point {
                            t_ms: w.window_start_ms + (w.window_end_ms - w.window_start_ms) / 2,
                            value: metric.of_site(w),
                            ok: w.quality_ok,
                        })
                        .collect(),
                })
                .collect(),
            bad: bad.clone(),
            x_range,
        };
        let png = plot::render_png(&chart, CHART_SIZE)?;
        let path = chart_dir.join(format!("{}.png", metric.key()));
        std::fs::write(&path, &png).with_context(|| format!("writing {}", path.display()))?;
        chart_files.push(path);
        charts.push((metric, png));
    }
    let evidence = read_evidence(output, runtime, &grouped, args.evidence);
    let missing = evidence.iter().filter(|e| e.png.is_err()).count();
    for e in evidence.iter().filter(|e| e.png.is_err()) {
        if let Err(why) = &e.png {
            eprintln!(
                "capflow report: evidence image {} of patient {patient:?} not shown: {why}",
                e.path
            );
        }
    }
    let failed: Vec<&SiteWindow> = sites.iter().filter(|w| !w.quality_ok).collect();
    let page = html::patient_html(&PatientPage {
        patient_id: patient,
        input: &output.url,
        range,
        sites: &summaries,
        patient: &summary,
        charts: &charts,
        failed: &failed,
        evidence: &evidence,
        evidence_per_site: args.evidence,
    });
    let html_path = args.output.join(format!("{stem}.html"));
    std::fs::write(&html_path, page).with_context(|| format!("writing {}", html_path.display()))?;
    Ok(PatientReport {
        patient_id: patient.to_string(),
        html: html_path,
        charts: chart_files,
        evidence: evidence.len() - missing,
        evidence_missing: missing,
        summary,
    })
}

/// The latest `per_site` evidence images of each site (oldest first within a site), read from the output.
fn read_evidence(
    output: &Output,
    runtime: &tokio::runtime::Runtime,
    grouped: &std::collections::BTreeMap<String, Vec<&SiteWindow>>,
    per_site: usize,
) -> Vec<Evidence> {
    const PNG_SIGNATURE: &[u8] = b"\x89PNG\r\n\x1a\n";
    let mut out = Vec::new();
    for windows in grouped.values() {
        let with_image: Vec<&&SiteWindow> = windows
            .iter()
            .filter(|w| w.evidence_path.is_some())
            .collect();
        let latest = &with_image[with_image.len().saturating_sub(per_site)..];
        for w in latest {
            let path = w.evidence_path.clone().unwrap_or_default();
            let png = runtime
                .block_on(capflow_sinks::read::read_object_async(output, &path))
                .map_err(|e| e.to_string())
                .and_then(|bytes| {
                    if bytes.starts_with(PNG_SIGNATURE) {
                        Ok(bytes.to_vec())
                    } else {
                        Err("the object is not a PNG image".to_string())
                    }
                });
            out.push(Evidence {
                site: w.site.clone(),
                stream_id: w.stream_id.clone(),
                window_start_ms: w.window_start_ms,
                quality_ok: w.quality_ok,
                path,
                png,
            });
        }
    }
    out
}

/// Prints what `capflow report` wrote.
pub fn print_outcome(outcome: &ReportOutcome) {
    println!("report of {}:", outcome.input);
    for p in &outcome.patients {
        let missing = if p.evidence_missing > 0 {
            format!(", {} missing", p.evidence_missing)
        } else {
            String::new()
        };
        println!(
            "  patient {:<12} {:>5} window(s) {:>3} site(s) {:>2} chart(s) {:>3} evidence image(s){missing}  {}",
            p.patient_id,
            p.summary.windows,
            p.summary.sites,
            p.charts.len(),
            p.evidence,
            p.html.display()
        );
    }
    if let Some(cohort) = &outcome.cohort {
        println!("  cohort summary: {}", cohort.display());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_days_a_window_in_range_can_start_on_are_fetched() {
        let t = |text: &str| parse_time(text).unwrap();
        let night = TimeRange {
            from_ms: Some(t("2026-02-28T18:00:00Z")),
            to_ms: Some(t("2026-03-01T00:00:00Z")),
        };
        // `to` is exclusive: a window starting at midnight is not in range, so 03-01 is not fetched.
        assert_eq!(
            days_of(night),
            "2026-02-28".to_string()..="2026-02-28".to_string()
        );
        let days = days_of(TimeRange {
            from_ms: Some(t("2026-02-28T18:00:00Z")),
            to_ms: None,
        });
        assert!(
            days.contains(&"2026-02-28".to_string()) && days.contains(&"2031-01-01".to_string())
        );
        assert!(!days.contains(&"2026-02-27".to_string()));
        assert!(days_of(TimeRange::default()).contains(&"1970-01-01".to_string()));
    }

    #[test]
    fn times_parse_as_utc_rfc3339_and_other_text_is_refused_with_the_format() {
        assert_eq!(parse_time("2026-03-01T08:00:00Z"), Ok(1_772_352_000_000));
        assert_eq!(parse_time("2026-03-01 08:00:00"), Ok(1_772_352_000_000));
        let e = parse_time("yesterday").unwrap_err();
        assert!(e.contains("2026-03-01T08:00:00Z"), "{e}");
    }

    #[test]
    fn unknown_patient_lists_what_is_present_and_cuts_long_lists() {
        let e = ReportError::UnknownPatient {
            patient: "p9".into(),
            input: "s3://b/out".into(),
            present: (0..25).map(|i| format!("p{i:02}")).collect(),
        };
        let text = e.to_string();
        assert!(text.contains("\"p9\" is not in s3://b/out"), "{text}");
        assert!(text.contains("\"p00\", \"p01\""), "{text}");
        assert!(text.contains("and 5 more"), "{text}");
        assert!(!text.contains("p24"), "{text}");
    }
}
