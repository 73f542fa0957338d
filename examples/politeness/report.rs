//! The results as a text table, a markdown file, a CSV file and a rate chart.

use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use plotters::prelude::*;

use crate::clients::Documented;
use crate::outcome::Outcome;

const COLUMNS: [&str; 12] = [
    "scenario",
    "client",
    "ok/issued",
    "non-2xx",
    "errors",
    "reached server",
    "429 sent",
    "hits in outage",
    "recovered after",
    "wall",
    "p50",
    "p99",
];

fn cells(o: &Outcome) -> [String; 12] {
    let (absorbed, recovered) = match o.outage {
        Some(outage) => (
            outage.absorbed.to_string(),
            outage.recovered_after.map_or("never".to_string(), human),
        ),
        None => ("-".to_string(), "-".to_string()),
    };
    [
        o.scenario.to_string(),
        o.client.to_string(),
        format!("{}/{}", o.ok, o.issued),
        o.not_ok.to_string(),
        o.errors.to_string(),
        o.reached.to_string(),
        o.refused.to_string(),
        absorbed,
        recovered,
        human(o.wall),
        human(o.p50),
        human(o.p99),
    ]
}

/// `850 ms`, `2.31 s`.
fn human(d: Duration) -> String {
    if d < Duration::from_secs(1) {
        format!("{} ms", d.as_millis())
    } else {
        format!("{:.2} s", d.as_secs_f64())
    }
}

/// The table, aligned for a terminal.
pub fn text_table(outcomes: &[Outcome]) -> String {
    let rows: Vec<[String; 12]> = outcomes.iter().map(cells).collect();
    let widths: Vec<usize> = (0..COLUMNS.len())
        .map(|i| {
            rows.iter()
                .map(|r| r[i].len())
                .chain([COLUMNS[i].len()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let line = |cells: &[String]| {
        let padded: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        padded.join("  ").trim_end().to_string()
    };
    let header: Vec<String> = COLUMNS.iter().map(|c| c.to_string()).collect();
    let mut out = line(&header) + "\n";
    let mut previous = None;
    for (outcome, row) in outcomes.iter().zip(&rows) {
        if previous.is_some_and(|s| s != outcome.scenario) {
            out.push('\n');
        }
        previous = Some(outcome.scenario);
        out += &(line(row) + "\n");
    }
    out
}

/// `results.md`: what ran, on what, and the table.
pub fn markdown(outcomes: &[Outcome], scenarios: &[String], run_time: Duration) -> String {
    let mut md = String::from("# Politeness harness\n\n");
    md += "`cargo run --release --example politeness`: every client on every scenario, each pair \
           on fresh loopback servers that count what reaches them.\n\n";
    for scenario in scenarios {
        let _ = writeln!(md, "- {scenario}");
    }
    md += "\n| ";
    md += &COLUMNS.join(" | ");
    md += " |\n|";
    md += &"---|".repeat(COLUMNS.len());
    md += "\n";
    for outcome in outcomes {
        md += "| ";
        md += &cells(outcome).join(" | ");
        md += " |\n";
    }
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let date = httpdate::fmt_http_date(std::time::SystemTime::now());
    let _ = writeln!(
        md,
        "\nMachine: nproc = {cores}; run on {date}; whole run {}.",
        human(run_time)
    );
    md
}

/// `results.csv`: one row per (scenario, client), durations in milliseconds.
pub fn csv(outcomes: &[Outcome]) -> String {
    let mut csv = String::from(
        "scenario,client,issued,ok,non_2xx,errors,reached_server,refused_429,\
         absorbed_in_outage,recovered_after_ms,wall_ms,p50_ms,p99_ms\n",
    );
    let ms = |d: Duration| d.as_millis().to_string();
    for o in outcomes {
        let (absorbed, recovered) = match o.outage {
            Some(outage) => (
                outage.absorbed.to_string(),
                outage.recovered_after.map_or(String::new(), ms),
            ),
            None => (String::new(), String::new()),
        };
        let _ = writeln!(
            csv,
            "{},{},{},{},{},{},{},{},{},{},{},{},{}",
            o.scenario,
            o.client,
            o.issued,
            o.ok,
            o.not_ok,
            o.errors,
            o.reached,
            o.refused,
            absorbed,
            recovered,
            ms(o.wall),
            ms(o.p50),
            ms(o.p99)
        );
    }
    csv
}

/// How often the rate chart samples the rate.
const STEP: Duration = Duration::from_millis(50);

/// The colours of the clients' lines, in the order of the outcomes.
const COLOURS: [RGBColor; 6] = [
    RGBColor(228, 26, 28),
    RGBColor(255, 127, 0),
    RGBColor(166, 86, 40),
    RGBColor(152, 78, 163),
    RGBColor(55, 126, 184),
    RGBColor(77, 175, 74),
];

/// Requests that reached the server in the trailing `window`, every [`STEP`] up to `until`:
/// the count a strict sliding-window server compares with its quota.
fn trailing_counts(arrivals: &[Duration], window: Duration, until: Duration) -> Vec<(f64, f64)> {
    let samples = (until.as_nanos() / STEP.as_nanos()) as u32 + 1;
    (0..=samples)
        .map(|i| {
            let t = STEP * i;
            let n = arrivals
                .iter()
                .filter(|&&at| at <= t && at + window > t)
                .count();
            (t.as_secs_f64(), n as f64)
        })
        .collect()
}

/// `rate.svg`: for each client, the requests that reached the server in the trailing quota
/// window over time, against the quota. Counts above `y_max` are clipped at the top edge; each
/// legend entry gives the client's peak.
pub fn rate_chart(
    path: &Path,
    title: &str,
    outcomes: &[&Outcome],
    quota: Documented,
    y_max: f64,
) -> Result<(), Box<dyn std::error::Error>> {
    let last = outcomes
        .iter()
        .flat_map(|o| o.arrivals.iter().copied())
        .max()
        .unwrap_or(Duration::ZERO);
    let until = last + quota.window;

    let root = SVGBackend::new(path, (1000, 560)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(55)
        .build_cartesian_2d(0f64..until.as_secs_f64(), 0f64..y_max)?;
    chart
        .configure_mesh()
        .x_desc("seconds since the burst was issued")
        .y_desc(format!(
            "requests reaching the server in the trailing {:?}",
            quota.window
        ))
        .draw()?;
    // the quota first, so that a client keeping to it is drawn on top
    let limit = f64::from(quota.count);
    chart
        .draw_series(LineSeries::new(
            [(0.0, limit), (until.as_secs_f64(), limit)],
            BLACK.mix(0.5).stroke_width(3),
        ))?
        .label(format!(
            "server quota: {} per {:?}",
            quota.count, quota.window
        ))
        .legend(|(x, y)| {
            PathElement::new(vec![(x, y), (x + 20, y)], BLACK.mix(0.5).stroke_width(3))
        });
    for (outcome, colour) in outcomes.iter().zip(COLOURS.iter().cycle()) {
        let counts = trailing_counts(&outcome.arrivals, quota.window, until);
        let peak = counts.iter().map(|&(_, n)| n).fold(0.0, f64::max);
        let style = colour.stroke_width(2);
        chart
            .draw_series(LineSeries::new(
                counts.into_iter().map(|(t, n)| (t, n.min(y_max))),
                style,
            ))?
            .label(format!("{} (peak {peak})", outcome.client))
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], style));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(())
}
