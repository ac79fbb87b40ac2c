//! The report pages as self-contained HTML: inline CSS, every image a `data:image/png;base64,…` URI, no script and no
//! reference to another file or server (the cohort page links the patient pages next to it, nothing else).
//!
//! Summary cells carry their full-precision value in `data-value` (and what they hold in `data-key`), so the numbers
//! a reader sees rounded can be checked by a program.

use std::fmt::Write as _;

use base64::Engine as _;
use capflow_operators::records::SiteWindow;

use super::model::{utc, CohortRow, Metric, SiteSummary, Stats, TimeRange};

/// An evidence image of a site window, with what the page says about it.
#[derive(Clone, Debug, PartialEq)]
pub struct Evidence {
    /// The recording site.
    pub site: String,
    /// The stream.
    pub stream_id: String,
    /// Window start, ms.
    pub window_start_ms: i64,
    /// Whether the window passed the quality check.
    pub quality_ok: bool,
    /// The image's path relative to the output root (the `evidence_path` column).
    pub path: String,
    /// The PNG, or why it could not be shown.
    pub png: Result<Vec<u8>, String>,
}

/// What a patient's page shows.
#[derive(Clone, Debug)]
pub struct PatientPage<'a> {
    /// The patient.
    pub patient_id: &'a str,
    /// The output location the tables were read from.
    pub input: &'a str,
    /// The windows covered.
    pub range: TimeRange,
    /// Per-site summary rows.
    pub sites: &'a [SiteSummary],
    /// The patient's line from the `patients` table.
    pub patient: &'a CohortRow,
    /// One PNG chart per metric with values.
    pub charts: &'a [(Metric, Vec<u8>)],
    /// Site windows that failed the quality check.
    pub failed: &'a [&'a SiteWindow],
    /// Latest evidence images per site.
    pub evidence: &'a [Evidence],
    /// Evidence images asked for per site.
    pub evidence_per_site: usize,
}

/// What the cohort page shows.
#[derive(Clone, Debug)]
pub struct CohortPage<'a> {
    /// The output location the tables were read from.
    pub input: &'a str,
    /// The windows covered.
    pub range: TimeRange,
    /// One row per patient, with the file name of its page (`None`: no page, no window in range).
    pub rows: &'a [(CohortRow, Option<String>)],
}

/// `png` as a `data:image/png;base64,…` URI.
pub fn data_uri(png: &[u8]) -> String {
    format!(
        "data:image/png;base64,{}",
        base64::engine::general_purpose::STANDARD.encode(png)
    )
}

/// Escapes text for HTML content and attribute values.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

const STYLE: &str = "
body { font-family: 'DejaVu Sans', Verdana, Arial, sans-serif; margin: 2em auto; max-width: 1100px; color: #222;
       padding: 0 1em; line-height: 1.4; }
h1 { font-size: 1.6em; margin-bottom: 0.2em; }
h2 { font-size: 1.25em; margin-top: 1.8em; border-bottom: 1px solid #ccc; padding-bottom: 0.2em; }
h3 { font-size: 1.05em; margin: 1.2em 0 0.4em; }
.meta { color: #555; font-size: 0.92em; }
table { border-collapse: collapse; font-size: 0.9em; margin: 0.6em 0; }
th, td { border: 1px solid #ccc; padding: 0.3em 0.55em; }
th { background: #f2f2f2; text-align: left; vertical-align: bottom; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
tr.bad td { background: #fdecec; }
figure { margin: 1em 0; }
figure img { max-width: 100%; border: 1px solid #ddd; }
figcaption { font-size: 0.88em; color: #555; }
.evidence { display: flex; flex-wrap: wrap; gap: 12px; }
.evidence figure { margin: 0; width: 260px; }
.evidence img { width: 260px; }
.note { font-size: 0.88em; color: #555; }
.swatch { display: inline-block; width: 1.2em; height: 0.8em; background: #facdcd; border: 1px solid #ccc;
          vertical-align: middle; }
";

fn head(out: &mut String, title: &str) {
    let _ = write!(
        out,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <meta name=\"generator\" content=\"capflow {}\">\n<title>{}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n",
        env!("CARGO_PKG_VERSION"),
        escape(title)
    );
}

fn number(value: Option<f64>, decimals: usize, key: &str) -> String {
    match value {
        Some(v) => {
            format!("<td class=\"num\" data-key=\"{key}\" data-value=\"{v}\">{v:.decimals$}</td>")
        }
        None => format!("<td class=\"num\" data-key=\"{key}\" data-value=\"\">–</td>"),
    }
}

fn count(value: usize, key: &str) -> String {
    format!("<td class=\"num\" data-key=\"{key}\" data-value=\"{value}\">{value}</td>")
}

fn share(part: usize, whole: usize, key: &str) -> String {
    if whole == 0 {
        return format!("<td class=\"num\" data-key=\"{key}\" data-value=\"\">–</td>");
    }
    let v = part as f64 / whole as f64;
    format!(
        "<td class=\"num\" data-key=\"{key}\" data-value=\"{v}\">{:.0} %</td>",
        v * 100.0
    )
}

fn span(first: Option<i64>, last: Option<i64>) -> String {
    match (first, last) {
        (Some(f), Some(l)) => format!("{} – {}", escape(&utc(f)), escape(&utc(l))),
        _ => "–".into(),
    }
}

fn range_text(range: &TimeRange) -> String {
    if range.is_all() {
        "all windows in the output".into()
    } else {
        range.describe()
    }
}

/// A patient's report page.
pub fn patient_html(page: &PatientPage<'_>) -> String {
    let mut out = String::new();
    let title = format!("Capillary microscopy report: patient {}", page.patient_id);
    head(&mut out, &title);
    let p = page.patient;
    let _ = write!(
        out,
        "<h1>{}</h1>\n<p class=\"meta\">Source: <code>{}</code><br>Windows: {} (window start times, UTC)<br>\
         Recorded between {} · {} site(s) · {} patient window(s), {} with at least one site that passed the quality \
         check</p>\n",
        escape(&title),
        escape(page.input),
        escape(&range_text(&page.range)),
        span(p.first_ms, p.last_ms),
        p.sites,
        p.windows,
        p.valid_windows,
    );

    // Summary per site.
    out.push_str(
        "<h2>Summary per site</h2>\n<p class=\"note\">Medians and means over the site's windows that passed the \
         quality check (failed windows are counted but left out, as they are left out of the patient means). \
         PPV, PVD and MFI need a flow window; “–” means no value.</p>\n<table class=\"summary\">\n<tr><th rowspan=\"2\">Site</th>\
         <th rowspan=\"2\">Windows</th><th rowspan=\"2\">Good quality</th><th rowspan=\"2\">Partial</th>",
    );
    for m in Metric::ALL {
        let _ = write!(
            out,
            "<th colspan=\"2\">{} ({})</th>",
            escape(m.short()),
            escape(m.unit())
        );
    }
    out.push_str("</tr>\n<tr>");
    for _ in Metric::ALL {
        out.push_str("<th>median</th><th>mean</th>");
    }
    out.push_str("</tr>\n");
    for s in page.sites {
        let _ = write!(
            out,
            "<tr data-site=\"{}\"><td>{}</td>{}{}{}",
            escape(&s.site),
            escape(&s.site),
            count(s.windows, "windows"),
            share(s.good_windows, s.windows, "good_share"),
            count(s.partial_windows, "partial_windows"),
        );
        for m in Metric::ALL {
            let Stats { median, mean, .. } = s.stats(m);
            out.push_str(&number(
                median,
                m.decimals(),
                &format!("{}_median", m.key()),
            ));
            out.push_str(&number(mean, m.decimals(), &format!("{}_mean", m.key())));
        }
        out.push_str("</tr>\n");
    }
    let _ = write!(
        out,
        "<tr data-site=\"\" class=\"patient\"><td><b>Patient</b> (patients table)</td>{}{}<td></td>",
        count(p.windows, "windows"),
        share(p.valid_windows, p.windows, "valid_share"),
    );
    for m in Metric::ALL {
        let stats = p.stats(m);
        out.push_str("<td></td>");
        out.push_str(&number(
            stats.mean,
            m.decimals(),
            &format!("{}_mean", m.key()),
        ));
    }
    out.push_str("</tr>\n</table>\n");
    out.push_str(
        "<p class=\"note\">The patient row: windows of the patients table and the share with at least one valid site; \
         means over those windows of the mean of the valid sites.</p>\n",
    );

    // Charts.
    out.push_str("<h2>Metrics over time</h2>\n");
    if page.charts.is_empty() {
        out.push_str("<p>No metric has a value in these windows.</p>\n");
    } else {
        out.push_str(
            "<p class=\"note\">One line per site, one point per window (at its middle). Filled dots: windows that \
             passed the quality check; crosses: windows that failed it. <span class=\"swatch\"></span> shaded: time \
             where a site window failed the quality check.</p>\n",
        );
    }
    for (metric, png) in page.charts {
        let _ = writeln!(
            out,
            "<figure id=\"chart-{key}\"><img src=\"{}\" alt=\"{} over time per site\"><figcaption>{} ({}) per site \
             and window.</figcaption></figure>",
            data_uri(png),
            escape(metric.title()),
            escape(metric.title()),
            escape(metric.unit()),
            key = metric.key(),
        );
    }

    // Failed windows.
    if !page.failed.is_empty() {
        out.push_str(
            "<h2>Windows that failed the quality check</h2>\n<p class=\"note\">MIQS-style scores per category: 0 \
             optimal, 1 acceptable, 10 unacceptable.</p>\n<table>\n<tr><th>Site</th><th>Window start</th>\
             <th>Score</th><th>Illumination</th><th>Duration</th><th>Focus</th><th>Content</th><th>Stability</th>\
             <th>Partial</th></tr>\n",
        );
        for w in page.failed {
            let _ = writeln!(
                out,
                "<tr class=\"bad\"><td>{}</td><td>{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td>\
                 <td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td>\
                 <td>{}</td></tr>",
                escape(&w.site),
                escape(&utc(w.window_start_ms)),
                w.quality_score,
                w.q_illumination,
                w.q_duration,
                w.q_focus,
                w.q_content,
                w.q_stability,
                if w.partial { "yes" } else { "no" },
            );
        }
        out.push_str("</table>\n");
    }

    // Evidence images.
    out.push_str("<h2>Evidence images</h2>\n");
    if page.evidence.is_empty() {
        out.push_str(
            "<p class=\"note\">No evidence images in these windows (runs write them with <code>output.evidence = \
             true</code>).</p>\n",
        );
    } else {
        let _ = writeln!(
            out,
            "<p class=\"note\">The latest {} window(s) per site: the window's first segmented frame with the vessel \
             centre lines drawn (yellow: small vessels, magenta: larger).</p>",
            page.evidence_per_site
        );
    }
    let mut current: Option<&str> = None;
    for e in page.evidence {
        if current != Some(e.site.as_str()) {
            if current.is_some() {
                out.push_str("</div>\n");
            }
            let _ = write!(
                out,
                "<h3>{}</h3>\n<div class=\"evidence\">\n",
                escape(&e.site)
            );
            current = Some(&e.site);
        }
        let quality = if e.quality_ok {
            "quality ok"
        } else {
            "quality check failed"
        };
        match &e.png {
            Ok(png) => {
                let _ = writeln!(
                    out,
                    "<figure><img src=\"{}\" alt=\"evidence image of {} at {}\"><figcaption>{} · {} · {}</figcaption>\
                     </figure>",
                    data_uri(png),
                    escape(&e.site),
                    escape(&utc(e.window_start_ms)),
                    escape(&utc(e.window_start_ms)),
                    escape(&e.stream_id),
                    quality
                );
            }
            Err(why) => {
                let _ = writeln!(
                    out,
                    "<figure><figcaption>{} · {}: image {} not shown: {}</figcaption></figure>",
                    escape(&utc(e.window_start_ms)),
                    escape(&e.stream_id),
                    escape(&e.path),
                    escape(why)
                );
            }
        }
    }
    if current.is_some() {
        out.push_str("</div>\n");
    }

    out.push_str(
        "<h2>About these numbers</h2>\n<p class=\"note\">Capillary density: capillaries per mm² of field. TVD: \
         vessel centre-line length per field area (mm/mm²). PPV: share of vessel length with continuous or sluggish \
         flow (%). PVD = TVD × PPV (mm/mm²). MFI: microvascular flow index, 0 no flow to 3 continuous. Quality: \
         MIQS-style scores for illumination, duration, focus, content and stability; a window passes when no category \
         is unacceptable. Times are window starts in UTC.</p>\n</body>\n</html>\n",
    );
    out
}

/// The cohort page: one row per patient, linking each patient's page.
pub fn cohort_html(page: &CohortPage<'_>) -> String {
    let mut out = String::new();
    head(&mut out, "Capillary microscopy: cohort summary");
    let _ = write!(
        out,
        "<h1>Cohort summary</h1>\n<p class=\"meta\">Source: <code>{}</code><br>Windows: {} (window start times, \
         UTC)<br>{} patient(s)</p>\n\
         <p class=\"note\">Per patient, from the patients table: windows, the share with at least one site that passed \
         the quality check, and the means over those windows. “Good site windows”: the share of site windows that \
         passed the quality check.</p>\n<table class=\"cohort\">\n<tr><th>Patient</th><th>Sites</th><th>Windows</th>\
         <th>With a valid site</th><th>Good site windows</th><th>Recorded</th>",
        escape(page.input),
        escape(&range_text(&page.range)),
        page.rows.len(),
    );
    for m in Metric::ALL {
        let _ = write!(
            out,
            "<th>{}<br>({}) mean</th>",
            escape(m.short()),
            escape(m.unit())
        );
    }
    out.push_str("</tr>\n");
    for (row, link) in page.rows {
        let name = match link {
            Some(file) => format!(
                "<a href=\"{}\">{}</a>",
                escape(file),
                escape(&row.patient_id)
            ),
            None => format!("{} (no window in range)", escape(&row.patient_id)),
        };
        let _ = write!(
            out,
            "<tr data-patient=\"{}\"><td>{name}</td>{}{}{}{}<td>{}</td>",
            escape(&row.patient_id),
            count(row.sites, "sites"),
            count(row.windows, "windows"),
            share(row.valid_windows, row.windows, "valid_share"),
            share(row.site_windows.1, row.site_windows.0, "good_share"),
            span(row.first_ms, row.last_ms),
        );
        for m in Metric::ALL {
            out.push_str(&number(
                row.stats(m).mean,
                m.decimals(),
                &format!("{}_mean", m.key()),
            ));
        }
        out.push_str("</tr>\n");
    }
    out.push_str("</table>\n</body>\n</html>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::model::{cohort_row, site_summaries};

    fn window(site: &str, start_s: i64, ok: bool, evidence: bool) -> SiteWindow {
        SiteWindow {
            patient_id: "p<1>".into(),
            stream_id: format!("{site}-s"),
            site: site.into(),
            window_start_ms: 1_772_352_000_000 + start_s * 1000,
            window_end_ms: 1_772_352_000_000 + (start_s + 10) * 1000,
            tvd_mm_per_mm2: 12.5 + start_s as f64,
            capillary_density_per_mm2: 30.0,
            ppv_percent: Some(85.0),
            mfi: Some(2.75),
            quality_ok: ok,
            quality_score: if ok { 0 } else { 10 },
            evidence_path: evidence.then(|| format!("evidence/x/{site}_{start_s}.png")),
            ..Default::default()
        }
    }

    /// A page with two charts and three evidence images whose bytes differ, so each must appear.
    fn page_html() -> (String, Vec<Vec<u8>>) {
        let windows = [
            window("sub-1", 0, true, true),
            window("sub-1", 10, false, true),
            window("tongue & <b>", 0, true, true),
        ];
        let sites = site_summaries(&windows);
        let patient = cohort_row("p<1>", &[], &windows);
        let charts = vec![
            (Metric::Tvd, b"\x89PNG chart one".to_vec()),
            (Metric::Mfi, b"\x89PNG chart two".to_vec()),
        ];
        let evidence: Vec<Evidence> = windows
            .iter()
            .enumerate()
            .map(|(i, w)| Evidence {
                site: w.site.clone(),
                stream_id: w.stream_id.clone(),
                window_start_ms: w.window_start_ms,
                quality_ok: w.quality_ok,
                path: w.evidence_path.clone().unwrap(),
                png: Ok(format!("\u{89}PNG evidence {i}").into_bytes()),
            })
            .collect();
        let failed: Vec<&SiteWindow> = windows.iter().filter(|w| !w.quality_ok).collect();
        let html = patient_html(&PatientPage {
            patient_id: "p<1>",
            input: "s3://bucket/out",
            range: TimeRange::default(),
            sites: &sites,
            patient: &patient,
            charts: &charts,
            failed: &failed,
            evidence: &evidence,
            evidence_per_site: 4,
        });
        let mut images: Vec<Vec<u8>> = charts.into_iter().map(|(_, png)| png).collect();
        images.extend(evidence.into_iter().map(|e| e.png.unwrap()));
        (html, images)
    }

    #[test]
    fn patient_page_embeds_every_image_and_references_nothing_outside() {
        let (html, images) = page_html();
        for png in &images {
            assert!(
                html.contains(&format!("src=\"{}\"", data_uri(png))),
                "image missing"
            );
        }
        assert_eq!(html.matches("<img ").count(), images.len());
        assert_eq!(
            html.matches("src=\"").count(),
            html.matches("src=\"data:image/png;base64,").count(),
            "every src is a data URI"
        );
        for forbidden in ["http://", "https://", "href=", "<link", "<script", "url("] {
            assert!(!html.contains(forbidden), "{forbidden} in the page");
        }
        // Ids and site names are escaped, never markup.
        assert!(html.contains("p&lt;1&gt;") && !html.contains("p<1>"));
        assert!(html.contains("tongue &amp; &lt;b&gt;") && !html.contains("<b>\""));
    }

    #[test]
    fn summary_cells_carry_the_statistics_of_the_good_windows() {
        let (html, _) = page_html();
        // sub-1: one good window of two, TVD 12.5 (the failed window's 22.5 is left out).
        let row = html
            .lines()
            .find(|l| l.starts_with("<tr data-site=\"sub-1\""))
            .expect("sub-1 row");
        assert!(
            row.contains("data-key=\"windows\" data-value=\"2\""),
            "{row}"
        );
        assert!(
            row.contains("data-key=\"good_share\" data-value=\"0.5\">50 %"),
            "{row}"
        );
        assert!(
            row.contains("data-key=\"tvd_mean\" data-value=\"12.5\">12.50<"),
            "{row}"
        );
        assert!(
            row.contains("data-key=\"mfi_median\" data-value=\"2.75\">2.75<"),
            "{row}"
        );
        assert!(
            row.contains("data-key=\"pvd_mean\" data-value=\"\">–"),
            "{row}"
        );
        assert!(html.contains("Windows that failed the quality check"));
    }

    #[test]
    fn data_uri_is_standard_base64() {
        assert_eq!(data_uri(b"\x89PNG"), "data:image/png;base64,iVBORw==");
    }

    #[test]
    fn cohort_page_links_patients_with_a_page_only() {
        let a = cohort_row("a", &[], &[window("s", 0, true, false)]);
        let b = cohort_row("b\"x", &[], &[]);
        let rows = vec![(a, Some("patient-a.html".to_string())), (b, None)];
        let html = cohort_html(&CohortPage {
            input: "/data/out",
            range: TimeRange::default(),
            rows: &rows,
        });
        assert!(html.contains("<a href=\"patient-a.html\">a</a>"));
        assert_eq!(html.matches("href=").count(), 1);
        assert!(html.contains("b&quot;x (no window in range)"));
        assert!(!html.contains("http"));
    }
}
