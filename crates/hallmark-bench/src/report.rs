//! Output: aligned text tables for people, JSON for machines, and a
//! description of the machine so figures are never quoted without it.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::{Context, Result};
use serde::Serialize;

/// A text table with right-aligned columns (they hold numbers), except
/// the first, which names the row.
#[derive(Debug, Default)]
pub struct Table {
    headers: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(headers: &[&str]) -> Self {
        Table {
            headers: headers.iter().map(|h| h.to_string()).collect(),
            rows: Vec::new(),
        }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    pub fn render(&self) -> String {
        let cols = self
            .rows
            .iter()
            .map(Vec::len)
            .chain([self.headers.len()])
            .max()
            .unwrap_or(0);
        let mut widths = vec![0; cols];
        for row in std::iter::once(&self.headers).chain(&self.rows) {
            for (i, cell) in row.iter().enumerate() {
                widths[i] = widths[i].max(cell.chars().count());
            }
        }
        let mut out = String::new();
        let line = |out: &mut String, row: &[String]| {
            let mut text = String::new();
            for (i, w) in widths.iter().enumerate() {
                let cell = row.get(i).map(String::as_str).unwrap_or("");
                if i > 0 {
                    text.push_str("  ");
                }
                if i == 0 {
                    let _ = write!(text, "{cell:<w$}");
                } else {
                    let _ = write!(text, "{cell:>w$}");
                }
            }
            out.push_str(text.trim_end());
            out.push('\n');
        };
        line(&mut out, &self.headers);
        let rule: Vec<String> = widths.iter().map(|w| "-".repeat(*w)).collect();
        line(&mut out, &rule);
        for row in &self.rows {
            line(&mut out, row);
        }
        out
    }
}

/// The machine a run happened on.
#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    pub cpu_model: String,
    pub cpus: usize,
    pub kernel: String,
}

impl Machine {
    pub fn detect() -> Self {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        Machine {
            cpu_model: cpu_model(&cpuinfo).unwrap_or_else(|| "unknown".into()),
            cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
            kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .map(|s| s.trim().to_string())
                .unwrap_or_else(|_| "unknown".into()),
        }
    }
}

impl std::fmt::Display for Machine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} CPUs ({}), Linux {}",
            self.cpus, self.cpu_model, self.kernel
        )
    }
}

/// The first `model name` line of /proc/cpuinfo.
fn cpu_model(cpuinfo: &str) -> Option<String> {
    cpuinfo.lines().find_map(|l| {
        let (key, value) = l.split_once(':')?;
        (key.trim() == "model name").then(|| value.trim().to_string())
    })
}

/// Every report carries the machine and the arguments next to the figures.
#[derive(Debug, Serialize)]
pub struct Envelope<'a, T: Serialize> {
    pub benchmark: &'static str,
    pub machine: &'a Machine,
    pub result: &'a T,
}

pub fn write_json<T: Serialize>(path: &Path, benchmark: &'static str, result: &T) -> Result<()> {
    let machine = Machine::detect();
    let doc = Envelope {
        benchmark,
        machine: &machine,
        result,
    };
    let text = serde_json::to_string_pretty(&doc).context("encoding the JSON report")?;
    std::fs::write(path, text + "\n")
        .with_context(|| format!("writing the JSON report to {}", path.display()))
}

/// A number with a sensible number of digits for a table cell.
pub fn num(v: f64) -> String {
    if v >= 100.0 {
        format!("{v:.0}")
    } else if v >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

/// A ratio cell, `-` when there is nothing to divide by.
pub fn ratio_cell(r: Option<f64>) -> String {
    r.map_or_else(|| "-".into(), |r| format!("{r:.2}x"))
}

/// `met` or `MISSED`, loud enough to see in a table.
pub fn verdict(met: bool) -> String {
    if met {
        "met".into()
    } else {
        "MISSED".into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_aligns_names_left_and_numbers_right() {
        let mut t = Table::new(&["what", "p50"]);
        t.row(vec!["noop".into(), "12.5".into()]);
        t.row(vec!["agent".into(), "130".into()]);
        assert_eq!(
            t.render(),
            "what    p50\n-----  ----\nnoop   12.5\nagent   130\n"
        );
    }

    #[test]
    fn short_rows_are_padded_not_dropped() {
        let mut t = Table::new(&["a", "b"]);
        t.row(vec!["x".into()]);
        assert_eq!(t.render(), "a  b\n-  -\nx\n");
    }

    #[test]
    fn cpu_model_is_the_first_model_name_line() {
        let cases = [
            (
                "processor\t: 0\nmodel name\t: AMD EPYC\nmodel name\t: other\n",
                Some("AMD EPYC"),
            ),
            ("processor\t: 0\n", None),
            ("model name:Plain\n", Some("Plain")),
        ];
        for (input, want) in cases {
            assert_eq!(cpu_model(input).as_deref(), want, "{input:?}");
        }
    }

    #[test]
    fn number_cells() {
        assert_eq!(num(1234.56), "1235");
        assert_eq!(num(12.345), "12.3");
        assert_eq!(num(1.2345), "1.23");
        assert_eq!(ratio_cell(Some(1.5)), "1.50x");
        assert_eq!(ratio_cell(None), "-");
        assert_eq!(verdict(false), "MISSED");
    }
}
