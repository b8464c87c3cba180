//! The HTML report: one self-contained page with the verdict, the tables of the Markdown
//! report, and charts of the run over simulated time (changes committed and made visible so
//! far, and the worst lake latency), with every fault window shaded, drawn as inline SVG.

use crate::analysis::TimelineSecond;
use crate::anomaly::AnomalyKind;
use crate::render::{count_rows, human_ms, latency_rows, percentile_cells, xml_escape};
use crate::report::{Report, Verdict};
use plotters::prelude::*;
use std::fmt::Write;

const WIDTH: u32 = 960;
const HEIGHT: u32 = 300;

/// Renders `report` as a self-contained HTML page.
pub fn to_html(report: &Report) -> String {
    let mut h = String::new();
    let title = format!("nrtsim: {} (seed {})", report.scenario, report.seed);
    let verdict = match report.verdict {
        Verdict::Pass => "<span class=\"pass\">PASS</span>",
        Verdict::Fail => "<span class=\"fail\">FAIL</span>",
    };
    let _ = write!(
        h,
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{}</title>\
         <style>body{{font-family:sans-serif;margin:2em;max-width:{}px}}\
         table{{border-collapse:collapse;margin:0.5em 0 1.5em}}\
         td,th{{border:1px solid #ccc;padding:2px 8px;text-align:right}}\
         th:first-child,td:first-child{{text-align:left}}\
         .pass{{color:#fff;background:#2a7d2a;padding:2px 8px}}\
         .fail{{color:#fff;background:#b02a2a;padding:2px 8px}}\
         code{{background:#f3f3f3;padding:2px 4px}}</style></head><body>",
        xml_escape(&title),
        WIDTH + 40
    );
    let _ = write!(
        h,
        "<h1>{}</h1><p>{verdict} exit code {} &middot; simulated {} &middot; wall {} \
         &middot; replay: <code>{}</code></p>",
        xml_escape(&title),
        report.exit_code,
        human_ms(report.sim_duration_ms),
        human_ms(report.wall_ms),
        xml_escape(&report.replay)
    );
    h.push_str("<h2>Over simulated time</h2>");
    h.push_str(&throughput_chart(&report.timeline, report));
    h.push_str(&latency_chart(&report.timeline, report));
    h.push_str(&tables(report));
    h.push_str("</body></html>\n");
    h
}

/// Changes committed and made visible in the lake so far: the gap between the lines is what
/// is still on its way.
fn throughput_chart(timeline: &[TimelineSecond], report: &Report) -> String {
    let running = |f: fn(&TimelineSecond) -> u64| {
        let mut total = 0;
        timeline
            .iter()
            .map(|t| {
                total += f(t);
                (t.second, total)
            })
            .collect::<Vec<_>>()
    };
    let series = [
        ("committed at the source", BLUE, running(|t| t.committed)),
        ("visible in the lake", GREEN, running(|t| t.visible)),
    ];
    chart("Changes so far, by simulated second", &series, report)
}

/// The worst commit-to-lake latency of the changes committed in each second, in seconds.
fn latency_chart(timeline: &[TimelineSecond], report: &Report) -> String {
    let points = timeline
        .iter()
        .filter(|t| t.committed > 0)
        .map(|t| (t.second, t.lake_latency_max_ms.div_ceil(1000)))
        .collect::<Vec<_>>();
    chart(
        "Worst lake latency (s) by commit second",
        &[("lake latency, max", RED, points)],
        report,
    )
}

type Series<'a> = (&'a str, RGBColor, Vec<(u64, u64)>);

fn chart(caption: &str, series: &[Series<'_>], report: &Report) -> String {
    let mut svg = String::new();
    let x_max = report.sim_duration_ms.div_ceil(1000).max(1);
    let y_max = series
        .iter()
        .flat_map(|(_, _, points)| points.iter().map(|p| p.1))
        .max()
        .unwrap_or(0)
        .max(1);
    let drawn = (|| -> Result<(), Box<dyn std::error::Error>> {
        let root = SVGBackend::with_string(&mut svg, (WIDTH, HEIGHT)).into_drawing_area();
        root.fill(&WHITE)?;
        let mut c = ChartBuilder::on(&root)
            .caption(caption, ("sans-serif", 16))
            .margin(10)
            .x_label_area_size(30)
            .y_label_area_size(50)
            .build_cartesian_2d(0u64..x_max, 0u64..y_max + y_max / 10 + 1)?;
        c.configure_mesh().x_desc("simulated seconds").draw()?;
        // Fault windows first, so the lines are drawn over them.
        for f in &report.faults {
            let start = f.start_ms / 1000;
            // A permanent action is an instant; a fault that never healed lasts to the end.
            let end = match f.end_ms {
                None if f.is_permanent() => f.start_ms,
                end => end.unwrap_or(report.sim_duration_ms),
            }
            .div_ceil(1000)
            .max(start + 1);
            let band = [(start, 0), (end, y_max + y_max / 10 + 1)];
            c.draw_series(std::iter::once(Rectangle::new(
                band,
                RGBAColor(255, 140, 0, 0.18).filled(),
            )))?;
        }
        for (name, color, points) in series {
            let color = *color;
            c.draw_series(LineSeries::new(
                points.iter().copied(),
                color.stroke_width(2),
            ))?
            .label(*name)
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 16, y)], color.stroke_width(2))
            });
        }
        c.configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()?;
        root.present()?;
        Ok(())
    })();
    match drawn {
        Ok(()) => svg,
        Err(e) => format!("<p>(chart not drawn: {})</p>", xml_escape(&e.to_string())),
    }
}

fn tables(r: &Report) -> String {
    let mut h = String::new();
    h.push_str("<h2>Counts</h2><table><tr><th>place</th><th>changes</th></tr>");
    for (name, n) in count_rows(r) {
        let _ = write!(h, "<tr><td>{name}</td><td>{n}</td></tr>");
    }
    h.push_str("</table><h2>Latency from the source commit</h2><table><tr><th>path</th><th>p50</th><th>p90</th><th>p99</th><th>p99.9</th><th>max</th><th>count</th></tr>");
    for (name, p, _) in latency_rows(r) {
        let cells = percentile_cells(p).join("</td><td>");
        let _ = write!(h, "<tr><td>{name}</td><td>{cells}</td></tr>");
    }
    h.push_str("</table><h2>Exactly once</h2><table><tr><th>anomaly</th><th>count</th></tr>");
    let eo = &r.exactly_once;
    for kind in eo.checked() {
        let warning = kind == AnomalyKind::TornTransaction && !eo.torn_transaction_is_violation;
        let name = if warning {
            format!("{} (warning)", kind.name())
        } else {
            kind.name().to_string()
        };
        let _ = write!(h, "<tr><td>{name}</td><td>{}</td></tr>", eo.count(kind));
    }
    h.push_str("</table>");
    if !eo.examples.is_empty() {
        h.push_str("<table><tr><th>anomaly</th><th>change</th><th>key</th><th>where</th></tr>");
        for e in &eo.examples {
            let _ = write!(
                h,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td style=\"text-align:left\">{}</td></tr>",
                xml_escape(&e.anomaly),
                e.change_id.map_or(String::new(), |c| c.to_string()),
                xml_escape(e.key.as_deref().unwrap_or("")),
                xml_escape(&e.location)
            );
        }
        h.push_str("</table>");
    }
    let l = &r.lake;
    let _ = write!(
        h,
        "<h2>Lake files</h2><table><tr><th>snapshots</th><th>files written</th>\
         <th>per snapshot</th><th>small written</th><th>live files</th><th>small live</th>\
         <th>versions folded</th><th>pre-commits rolled back</th></tr>\
         <tr><td>{}</td><td>{}</td><td>{:.1}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td>\
         <td>{}</td></tr></table>",
        l.snapshots,
        l.files_written,
        l.files_per_snapshot,
        l.small_files_written,
        l.live_files,
        l.small_files,
        l.versions_folded,
        l.pre_commits_rolled_back
    );
    if !r.slo.is_empty() {
        h.push_str(
            "<h2>SLOs</h2><table><tr><th>SLO</th><th>limit</th><th>actual</th><th>result</th></tr>",
        );
        for s in &r.slo {
            let _ = write!(
                h,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                xml_escape(&s.name),
                human_ms(s.limit_ms),
                human_ms(s.actual_ms),
                if s.pass { "pass" } else { "breached" }
            );
        }
        h.push_str("</table>");
    }
    if !r.faults.is_empty() {
        h.push_str(
            "<h2>Faults</h2><table><tr><th>kind</th><th>target</th><th>start</th><th>end</th></tr>",
        );
        for f in &r.faults {
            let _ = write!(
                h,
                "<tr><td>{}</td><td style=\"text-align:left\">{}</td><td>{}</td><td>{}</td></tr>",
                xml_escape(&f.kind),
                xml_escape(&f.target),
                human_ms(f.start_ms),
                f.end_text()
            );
        }
        h.push_str("</table>");
    }
    if !r.offset_resets.is_empty() {
        h.push_str(
            "<h2>Offset resets</h2><table><tr><th>time</th><th>reader</th><th>partition</th>\
             <th>from</th><th>to</th><th>deleted</th><th>held but skipped</th></tr>",
        );
        for x in &r.offset_resets {
            let _ = write!(
                h,
                "<tr><td>{}</td><td style=\"text-align:left\">{}</td><td>{} p{}</td><td>{}</td>\
                 <td>{}</td><td>{}</td><td>{}</td></tr>",
                human_ms(x.t_ms),
                xml_escape(&x.host),
                x.topic.name(),
                x.partition,
                x.from,
                x.to_text(),
                x.deleted(),
                x.skipped_held()
            );
        }
        h.push_str("</table>");
    }
    if !r.leader_cuts.is_empty() {
        h.push_str(
            "<h2>Leader changes that cut acknowledged records</h2><table><tr><th>time</th>\
             <th>new leader</th><th>partition</th><th>epoch</th><th>log end</th>\
             <th>acknowledged to</th><th>cut</th></tr>",
        );
        for x in &r.leader_cuts {
            let _ = write!(
                h,
                "<tr><td>{}</td><td style=\"text-align:left\">{}</td><td>{} p{}</td><td>{}</td>\
                 <td>{}</td><td>{}</td><td>{}</td></tr>",
                human_ms(x.t_ms),
                xml_escape(&x.host),
                x.topic.name(),
                x.partition,
                x.epoch,
                x.log_end,
                x.acknowledged_end,
                x.cut()
            );
        }
        h.push_str("</table>");
    }
    if !r.truncations_detected.is_empty() {
        h.push_str(
            "<h2>Truncations detected</h2><table><tr><th>time</th><th>reader</th>\
             <th>partition</th><th>from</th><th>to</th><th>offsets diverged</th></tr>",
        );
        for x in &r.truncations_detected {
            let _ = write!(
                h,
                "<tr><td>{}</td><td style=\"text-align:left\">{}</td><td>{} p{}</td><td>{}</td>\
                 <td>{}</td><td>{}</td></tr>",
                human_ms(x.t_ms),
                xml_escape(&x.host),
                x.topic.name(),
                x.partition,
                x.from,
                x.to_text(),
                x.diverged()
            );
        }
        h.push_str("</table>");
    }
    h
}
