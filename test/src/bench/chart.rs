//! A hand-written SVG bar chart of the benchmark's headline numbers: a few panels side by
//! side, each with its own scale (ms, tasks/s and MiB do not share an axis). Plain text
//! output, so no plotting dependency and the file diffs and renders anywhere.

use std::fmt::Write;

/// Which runtime a bar stands for; decides its colour, the same in every panel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// This shim.
    Wasm,
    /// runc.
    Runc,
    /// The in-process floor.
    Floor,
}

impl Kind {
    fn colour(self) -> &'static str {
        match self {
            Kind::Wasm => "#4c72b0",
            Kind::Runc => "#dd8452",
            Kind::Floor => "#8c8c8c",
        }
    }

    fn legend(self) -> &'static str {
        match self {
            Kind::Wasm => "wasmtime shim",
            Kind::Runc => "runc",
            Kind::Floor => "in-process floor",
        }
    }
}

/// One bar.
#[derive(Debug, Clone)]
pub struct Bar {
    /// Short label under the bar.
    pub label: String,
    /// Its value, in the panel's unit.
    pub value: f64,
    /// Its runtime.
    pub kind: Kind,
}

/// One panel: a title, a note (unit and which way is better), bars.
#[derive(Debug, Clone)]
pub struct Panel {
    /// First line above the bars.
    pub title: String,
    /// Second line, smaller.
    pub note: String,
    /// Decimals of the value labels.
    pub decimals: usize,
    /// The bars, left to right.
    pub bars: Vec<Bar>,
}

const PANEL_WIDTH: f64 = 270.0;
const MARGIN: f64 = 20.0;
const HEADER: f64 = 60.0;
const PLOT_TOP: f64 = HEADER + 70.0;
const PLOT_HEIGHT: f64 = 200.0;
const PLOT_BOTTOM: f64 = PLOT_TOP + PLOT_HEIGHT;
const HEIGHT: f64 = PLOT_BOTTOM + 80.0;

/// How a piece of text looks.
struct Style {
    size: u32,
    anchor: &'static str,
    weight: &'static str,
}

const HEADING: Style = Style {
    size: 16,
    anchor: "start",
    weight: "bold",
};
const SUBHEADING: Style = Style {
    size: 11,
    anchor: "start",
    weight: "normal",
};
const PANEL_TITLE: Style = Style {
    size: 13,
    anchor: "middle",
    weight: "bold",
};
const CENTRED: Style = Style {
    size: 11,
    anchor: "middle",
    weight: "normal",
};
const LEGEND: Style = Style {
    size: 12,
    anchor: "start",
    weight: "normal",
};

/// The whole chart: `title` and `subtitle` on top, then the panels left to right, then a
/// legend of the runtimes that appear.
pub fn render(title: &str, subtitle: &str, panels: &[Panel]) -> String {
    let width = MARGIN * 2.0 + PANEL_WIDTH * panels.len() as f64;
    let mut svg = String::new();
    let _ = writeln!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{HEIGHT}" viewBox="0 0 {width} {HEIGHT}" font-family="sans-serif">"#
    );
    let _ = writeln!(
        svg,
        r#"<rect width="{width}" height="{HEIGHT}" fill="white"/>"#
    );
    text(&mut svg, MARGIN, 26.0, &HEADING, title);
    text(&mut svg, MARGIN, 46.0, &SUBHEADING, subtitle);
    for (i, panel) in panels.iter().enumerate() {
        render_panel(&mut svg, MARGIN + PANEL_WIDTH * i as f64, panel);
    }
    render_legend(&mut svg, panels);
    svg.push_str("</svg>\n");
    svg
}

/// One panel at horizontal offset `x`: bars scaled to the panel's largest value, each with
/// its value above and its label below.
fn render_panel(svg: &mut String, x: f64, panel: &Panel) {
    let centre = x + PANEL_WIDTH / 2.0;
    text(svg, centre, HEADER + 24.0, &PANEL_TITLE, &panel.title);
    text(svg, centre, HEADER + 42.0, &CENTRED, &panel.note);
    let max = panel
        .bars
        .iter()
        .map(|b| b.value)
        .fold(0.0_f64, f64::max)
        .max(f64::MIN_POSITIVE);
    let slot = (PANEL_WIDTH - 40.0) / panel.bars.len().max(1) as f64;
    for (i, bar) in panel.bars.iter().enumerate() {
        // A negative value (noise in a difference) gets no height but keeps its label.
        let height = (bar.value.max(0.0) / max) * PLOT_HEIGHT;
        let left = x + 20.0 + slot * i as f64 + slot * 0.2;
        let bar_width = slot * 0.6;
        let _ = writeln!(
            svg,
            r#"<rect x="{left:.1}" y="{:.1}" width="{bar_width:.1}" height="{height:.1}" fill="{}"/>"#,
            PLOT_BOTTOM - height,
            bar.kind.colour()
        );
        let middle = left + bar_width / 2.0;
        let value = format!("{:.*}", panel.decimals, bar.value);
        text(svg, middle, PLOT_BOTTOM - height - 5.0, &CENTRED, &value);
        text(svg, middle, PLOT_BOTTOM + 16.0, &CENTRED, &bar.label);
    }
    let _ = writeln!(
        svg,
        r##"<line x1="{:.1}" y1="{PLOT_BOTTOM}" x2="{:.1}" y2="{PLOT_BOTTOM}" stroke="#333"/>"##,
        x + 15.0,
        x + PANEL_WIDTH - 15.0
    );
}

/// A swatch and name for each runtime shown, in first-appearance order.
fn render_legend(svg: &mut String, panels: &[Panel]) {
    let mut kinds: Vec<Kind> = Vec::new();
    for bar in panels.iter().flat_map(|p| &p.bars) {
        if !kinds.contains(&bar.kind) {
            kinds.push(bar.kind);
        }
    }
    let y = PLOT_BOTTOM + 48.0;
    for (i, kind) in kinds.iter().enumerate() {
        let x = MARGIN + 20.0 + 170.0 * i as f64;
        let _ = writeln!(
            svg,
            r#"<rect x="{x}" y="{:.1}" width="12" height="12" fill="{}"/>"#,
            y - 10.0,
            kind.colour()
        );
        text(svg, x + 18.0, y, &LEGEND, kind.legend());
    }
}

/// A `<text>` element with its content escaped.
fn text(svg: &mut String, x: f64, y: f64, style: &Style, content: &str) {
    let _ = writeln!(
        svg,
        r#"<text x="{x:.1}" y="{y:.1}" font-size="{}" text-anchor="{}" font-weight="{}">{}</text>"#,
        style.size,
        style.anchor,
        style.weight,
        escape(content)
    );
}

/// XML escaping for text content.
fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_every_bar_and_escapes_text() {
        let panel = Panel {
            title: "a < b & c".into(),
            note: "ms".into(),
            decimals: 1,
            bars: vec![
                Bar {
                    label: "shim".into(),
                    value: 2.0,
                    kind: Kind::Wasm,
                },
                Bar {
                    label: "runc".into(),
                    value: -1.0,
                    kind: Kind::Runc,
                },
            ],
        };
        let svg = render("t", "s", &[panel]);
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        assert!(svg.contains("a &lt; b &amp; c"));
        assert!(svg.contains(">2.0<") && svg.contains(">-1.0<"));
        assert_eq!(svg.matches("fill=\"#4c72b0\"").count(), 2); // bar + legend
    }
}
