//! Who talks to whom (`firewall-agent report`): flows summed per (source namespace,
//! destination namespace or `world`), as a terminal matrix and as a self-contained HTML page
//! with an inline SVG graph (no scripts, fonts or other files), nodes on a circle in name
//! order so the same log draws the same picture.
//!
//! Counts are the lines' `count`: a connection judged on two nodes (a cross-node connection
//! denied on both sides, or a flow line from each node) is counted once per node's line.
use std::{
    collections::{BTreeMap, BTreeSet},
    fmt::Write as _,
};

use super::{
    flows::{Dest, Flows},
    lines::Verdict,
};

/// The node standing for every address outside the namespaces.
pub const WORLD: &str = "(world)";

/// One cell of the matrix.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Cell {
    /// Per verdict, the connections the lines reported.
    pub by_verdict: BTreeMap<Verdict, u64>,
    /// `PROTOCOL/port` of the flows (`ICMP` alone for those without ports).
    pub ports: BTreeSet<String>,
}

impl Cell {
    /// Every connection, whatever its verdict.
    pub fn total(&self) -> u64 {
        self.by_verdict.values().sum()
    }

    fn count(&self, v: Verdict) -> u64 {
        self.by_verdict.get(&v).copied().unwrap_or(0)
    }

    /// `N connection(s): ALLOWED a, AUDIT b, DENIED c; PORTS`, for the list and the tooltips.
    pub fn summary(&self) -> String {
        let ports: Vec<&str> = self.ports.iter().map(String::as_str).collect();
        format!(
            "{} connection(s): ALLOWED {}, AUDIT {}, DENIED {}; {}",
            self.total(),
            self.count(Verdict::Allowed),
            self.count(Verdict::Audit),
            self.count(Verdict::Denied),
            ports.join(" ")
        )
    }

    /// The verdict an edge is drawn in: the most severe one seen.
    pub fn worst(&self) -> Verdict {
        Verdict::ALL
            .into_iter()
            .rev()
            .find(|v| self.count(*v) > 0)
            .unwrap_or(Verdict::Allowed)
    }
}

/// Cells by (source, destination).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Matrix {
    pub cells: BTreeMap<(String, String), Cell>,
}

impl Matrix {
    /// Sums the flows per namespace pair.
    pub fn new(flows: &Flows) -> Self {
        let mut cells: BTreeMap<(String, String), Cell> = BTreeMap::new();
        for (key, stats) in &flows.flows {
            let dst = match &key.dst {
                Dest::Namespace(n) => n.clone(),
                Dest::World(_) => WORLD.to_owned(),
            };
            let cell = cells.entry((key.src.clone(), dst)).or_default();
            for (v, seen) in &stats.verdicts {
                *cell.by_verdict.entry(*v).or_default() += seen.count;
            }
            cell.ports.insert(match key.port {
                Some(p) => format!("{}/{p}", key.protocol),
                None => key.protocol.clone(),
            });
        }
        Self { cells }
    }

    /// Every namespace that is a source or a destination, in name order (`(world)` sorts first).
    pub fn nodes(&self) -> Vec<&str> {
        let set: BTreeSet<&str> = self
            .cells
            .keys()
            .flat_map(|(a, b)| [a.as_str(), b.as_str()])
            .collect();
        set.into_iter().collect()
    }

    /// The terminal view: a grid of `total (ALLOWED/AUDIT/DENIED)` with sources as rows, then
    /// one line per pair with its ports.
    pub fn text(&self) -> String {
        let mut out = String::new();
        if self.cells.is_empty() {
            out.push_str("no cross-namespace connection in the log\n");
            return out;
        }
        let sources: BTreeSet<&str> = self.cells.keys().map(|(a, _)| a.as_str()).collect();
        let dests: BTreeSet<&str> = self.cells.keys().map(|(_, b)| b.as_str()).collect();
        let cell_text = |s: &str, d: &str| match self.cells.get(&(s.to_owned(), d.to_owned())) {
            Some(c) => format!(
                "{} ({}/{}/{})",
                c.total(),
                c.count(Verdict::Allowed),
                c.count(Verdict::Audit),
                c.count(Verdict::Denied)
            ),
            None => "-".to_owned(),
        };
        let mut rows = vec![
            std::iter::once("FROM \\ TO".to_owned())
                .chain(dests.iter().map(|d| (*d).to_owned()))
                .collect::<Vec<_>>(),
        ];
        for s in &sources {
            rows.push(
                std::iter::once((*s).to_owned())
                    .chain(dests.iter().map(|d| cell_text(s, d)))
                    .collect(),
            );
        }
        let widths: Vec<usize> = (0..rows[0].len())
            .map(|i| rows.iter().map(|r| r[i].len()).max().unwrap_or(0))
            .collect();
        out.push_str("connections (ALLOWED/AUDIT/DENIED), source namespace by destination:\n");
        for r in &rows {
            let line: Vec<String> = r
                .iter()
                .zip(&widths)
                .map(|(c, w)| format!("{c:<w$}"))
                .collect();
            let _ = writeln!(out, "{}", line.join("  ").trim_end());
        }
        out.push('\n');
        for ((s, d), c) in &self.cells {
            let _ = writeln!(out, "{s} -> {d}: {}", c.summary());
        }
        out
    }
}

/// Text for XML content and attribute values.
fn esc(s: &str) -> String {
    s.chars().fold(String::with_capacity(s.len()), |mut o, c| {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&apos;"),
            c => o.push(c),
        }
        o
    })
}

/// Colour of a verdict (the legend's).
fn colour(v: Verdict) -> &'static str {
    match v {
        Verdict::Allowed => "#2e8b57",
        Verdict::Audit => "#e08a00",
        Verdict::Denied => "#c62828",
    }
}

/// Node positions on a circle, first at the top, clockwise.
fn layout(n: usize, radius: f64, centre: f64) -> Vec<(f64, f64)> {
    (0..n)
        .map(|i| {
            let a =
                std::f64::consts::TAU * i as f64 / n.max(1) as f64 - std::f64::consts::FRAC_PI_2;
            (centre + radius * a.cos(), centre + radius * a.sin())
        })
        .collect()
}

/// Geometry of the drawing.
const NODE_R: f64 = 34.0;
const MARGIN: f64 = 120.0;

/// The SVG graph: namespaces as nodes, one curved arrow per pair, coloured by its most severe
/// verdict and labelled with its connections; a `<title>` on each tells the details on hover.
pub fn svg(m: &Matrix) -> String {
    let nodes = m.nodes();
    let radius = (90.0 * nodes.len() as f64 / std::f64::consts::PI).max(180.0);
    let centre = radius + MARGIN;
    let size = 2.0 * centre;
    let pos = layout(nodes.len(), radius, centre);
    let at = |name: &str| nodes.iter().position(|n| *n == name).map(|i| pos[i]);
    let max = m.cells.values().map(Cell::total).max().unwrap_or(1).max(1) as f64;
    let legend_h = 90.0;
    let mut s = String::new();
    let _ = write!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{size:.0}" height="{h:.0}" viewBox="0 0 {size:.0} {h:.0}" font-family="sans-serif" font-size="13">"#,
        h = size + legend_h
    );
    s.push_str("<defs>");
    for v in Verdict::ALL {
        let _ = write!(
            s,
            r#"<marker id="arrow-{id}" viewBox="0 0 10 10" refX="10" refY="5" markerUnits="userSpaceOnUse" markerWidth="12" markerHeight="12" orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" fill="{c}"/></marker>"#,
            id = v.as_str().to_ascii_lowercase(),
            c = colour(v)
        );
    }
    s.push_str("</defs>");
    let _ = write!(s, r##"<rect width="100%" height="100%" fill="#ffffff"/>"##);
    for ((src, dst), cell) in &m.cells {
        let (Some(a), Some(b)) = (at(src), at(dst)) else {
            continue;
        };
        edge(&mut s, a, b, cell, max, src, dst);
    }
    for (name, (x, y)) in nodes.iter().zip(&pos) {
        let fill = if *name == WORLD { "#eeeeee" } else { "#dbe9f6" };
        let _ = write!(
            s,
            r##"<g><title>{t}</title><circle cx="{x:.1}" cy="{y:.1}" r="{NODE_R}" fill="{fill}" stroke="#34495e" stroke-width="1.5"/><text x="{x:.1}" y="{ty:.1}" text-anchor="middle" font-weight="bold">{t}</text></g>"##,
            t = esc(name),
            ty = y + 4.5
        );
    }
    legend(&mut s, size + 10.0);
    s.push_str("</svg>");
    s
}

/// A curved arrow from `a` to `b` (bent to its left, so the two directions of a pair do not
/// overlap), stopping at the node's rim, with its count at the bend.
fn edge(s: &mut String, a: (f64, f64), b: (f64, f64), c: &Cell, max: f64, src: &str, dst: &str) {
    let (dx, dy) = (b.0 - a.0, b.1 - a.1);
    let len = (dx * dx + dy * dy).sqrt().max(1.0);
    let (ux, uy) = (dx / len, dy / len);
    let (nx, ny) = (uy, -ux);
    let bend = len * 0.12;
    let ctrl = ((a.0 + b.0) / 2.0 + nx * bend, (a.1 + b.1) / 2.0 + ny * bend);
    let start = (a.0 + ux * NODE_R, a.1 + uy * NODE_R);
    let end = (b.0 - ux * (NODE_R + 2.0), b.1 - uy * (NODE_R + 2.0));
    let worst = c.worst();
    let width = 1.5 + 4.5 * ((c.total() as f64).ln_1p() / max.ln_1p());
    let label = (
        (start.0 + 2.0 * ctrl.0 + end.0) / 4.0,
        (start.1 + 2.0 * ctrl.1 + end.1) / 4.0,
    );
    let title = format!("{src} -> {dst}: {}", c.summary());
    let _ = write!(
        s,
        r##"<g><title>{t}</title><path d="M{:.1},{:.1} Q{:.1},{:.1} {:.1},{:.1}" fill="none" stroke="{col}" stroke-width="{width:.1}" marker-end="url(#arrow-{id})"/><text x="{:.1}" y="{:.1}" text-anchor="middle" font-size="15" font-weight="bold" fill="{col}" stroke="#ffffff" stroke-width="4" paint-order="stroke">{n}</text></g>"##,
        start.0,
        start.1,
        ctrl.0,
        ctrl.1,
        end.0,
        end.1,
        label.0,
        label.1 + 4.0,
        t = esc(&title),
        col = colour(worst),
        id = worst.as_str().to_ascii_lowercase(),
        n = c.total()
    );
}

fn legend(s: &mut String, top: f64) {
    let _ = write!(
        s,
        r#"<text x="20" y="{top:.0}" font-weight="bold">Edge colour: the most severe verdict of the pair; label: connections</text>"#
    );
    for (i, v) in Verdict::ALL.into_iter().enumerate() {
        let y = top + 22.0 + 20.0 * i as f64;
        let what = match v {
            Verdict::Allowed => "ALLOWED (flow lines)",
            Verdict::Audit => "AUDIT (monitor: would be dropped)",
            Verdict::Denied => "DENIED (enforce: dropped)",
        };
        let _ = write!(
            s,
            r#"<line x1="20" y1="{y:.0}" x2="60" y2="{y:.0}" stroke="{c}" stroke-width="4"/><text x="70" y="{ty:.0}">{what}</text>"#,
            c = colour(v),
            ty = y + 4.0
        );
    }
}

/// The page: a title, the graph and the matrix as a table. XHTML, so it is also well-formed XML.
pub fn html(m: &Matrix, title: &str) -> String {
    let mut s = String::new();
    let _ = write!(
        s,
        r#"<!DOCTYPE html>
<html xmlns="http://www.w3.org/1999/xhtml" lang="en"><head><meta charset="utf-8"/><title>{t}</title>
<style>body{{font-family:sans-serif;margin:24px;color:#222}}table{{border-collapse:collapse;margin-top:16px}}td,th{{border:1px solid #bbb;padding:4px 8px;text-align:right}}th{{background:#f2f2f2;text-align:left}}td.k{{text-align:left}}</style>
</head><body><h1>{t}</h1>
"#,
        t = esc(title)
    );
    s.push_str(&svg(m));
    s.push_str("\n<table><tr><th>from</th><th>to</th><th>connections</th><th>ALLOWED</th><th>AUDIT</th><th>DENIED</th><th>ports</th></tr>\n");
    for ((src, dst), c) in &m.cells {
        let ports: Vec<&str> = c.ports.iter().map(String::as_str).collect();
        let _ = writeln!(
            s,
            r#"<tr><td class="k">{}</td><td class="k">{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td class="k">{}</td></tr>"#,
            esc(src),
            esc(dst),
            c.total(),
            c.count(Verdict::Allowed),
            c.count(Verdict::Audit),
            c.count(Verdict::Denied),
            esc(&ports.join(" "))
        );
    }
    s.push_str("</table>\n</body></html>\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::observed::lines::LogRecord;

    fn rec(src: &str, dst: Option<&str>, verdict: &str, count: u64, port: u16) -> LogRecord {
        let kind = if verdict == "ALLOWED" {
            "flow"
        } else {
            "violation"
        };
        let dst_ns = dst.map_or("null".to_owned(), |d| format!("{d:?}"));
        serde_json::from_str(&format!(
            r#"{{"ts":"2026-11-23T04:00:00.000000Z","type":"{kind}","verdict":"{verdict}","direction":"egress","node":"n","protocol":"TCP","src":{{"namespace":"{src}","pod":"p","ip":"10.0.0.1","port":1}},"dst":{{"namespace":{dst_ns},"pod":null,"ip":"192.0.2.1","port":{port}}},"policy":"default","count":{count}}}"#
        ))
        .unwrap()
    }

    fn matrix(recs: &[LogRecord]) -> Matrix {
        let mut f = Flows::default();
        recs.iter().for_each(|r| f.add(r));
        Matrix::new(&f)
    }

    fn sample() -> Vec<LogRecord> {
        vec![
            rec("web", Some("db"), "AUDIT", 3, 5432),
            rec("web", Some("db"), "ALLOWED", 2, 5433),
            rec("batch", Some("db"), "DENIED", 1, 5432),
            rec("web", None, "ALLOWED", 4, 443),
            rec("web", Some("web"), "AUDIT", 9, 80),
        ]
    }

    #[test]
    fn the_matrix_sums_each_pair_per_verdict() {
        let expected = "connections (ALLOWED/AUDIT/DENIED), source namespace by destination:
FROM \\ TO  (world)    db
batch      -          1 (0/0/1)
web        4 (4/0/0)  5 (2/3/0)

batch -> db: 1 connection(s): ALLOWED 0, AUDIT 0, DENIED 1; TCP/5432
web -> (world): 4 connection(s): ALLOWED 4, AUDIT 0, DENIED 0; TCP/443
web -> db: 5 connection(s): ALLOWED 2, AUDIT 3, DENIED 0; TCP/5432 TCP/5433
";
        assert_eq!(matrix(&sample()).text(), expected);
        let mut rev = sample();
        rev.reverse();
        assert_eq!(matrix(&rev), matrix(&sample()));
        assert_eq!(
            Matrix::default().text(),
            "no cross-namespace connection in the log\n"
        );
    }

    #[test]
    fn the_page_is_well_formed_xml_with_a_node_per_namespace_and_an_edge_per_pair() {
        let page = html(&matrix(&sample()), "a <title> & more");
        let opts = roxmltree::ParsingOptions {
            allow_dtd: true,
            ..roxmltree::ParsingOptions::default()
        };
        let doc = roxmltree::Document::parse_with_options(&page, opts).expect("well-formed XML");
        let svg = "http://www.w3.org/2000/svg";
        let count = |name: &str| {
            doc.descendants()
                .filter(|n| n.tag_name().namespace() == Some(svg) && n.tag_name().name() == name)
                .count()
        };
        // batch, db, web and the world.
        assert_eq!(count("circle"), 4);
        assert_eq!(count("path"), 3 + 3); // one per pair, one per arrowhead marker
        let edges: Vec<&str> = doc
            .descendants()
            .filter(|n| n.tag_name().name() == "path" && n.attribute("marker-end").is_some())
            .filter_map(|n| n.attribute("stroke"))
            .collect();
        // batch -> db DENIED, web -> (world) ALLOWED, web -> db AUDIT (the most severe).
        assert_eq!(
            edges,
            vec![
                colour(Verdict::Denied),
                colour(Verdict::Allowed),
                colour(Verdict::Audit)
            ]
        );
        assert!(page.contains("a &lt;title&gt; &amp; more"));
        // Self-contained: nothing is fetched.
        assert!(!page.contains("<script") && !page.contains("href=\"http"));
        assert!(!page.contains("@import") && !page.contains("src="));
    }
}
