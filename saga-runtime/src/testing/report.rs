//! What a fault matrix found: one row per cell, as data and as a table.

use std::fmt;

use super::{Cell, Fault, levels};
use crate::outcome::{Level, Outcome, Status};

/// The result of one cell.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct CellResult {
    /// The cell.
    pub cell: Cell,
    /// The outcome the ladder must reach.
    pub expected: Option<Status>,
    /// The outcome reached (after the resume, for a parked compensation or a crash).
    pub outcome: Option<Status>,
    /// The levels the ladder climbed.
    pub levels: Vec<Level>,
    /// Whether the world was `done` (after a completion) or `clean` (after a rollback); `None`
    /// when there was nothing to check (a park after the commit point, or no predicate).
    pub world: Option<bool>,
    /// What was wrong; empty when the cell passed.
    pub problems: Vec<String>,
    /// The saga's timeline, for a cell that failed.
    pub timeline: Vec<String>,
}

impl CellResult {
    pub(super) fn new(cell: Cell) -> Self {
        CellResult {
            cell,
            expected: None,
            outcome: None,
            levels: Vec::new(),
            world: None,
            problems: Vec::new(),
            timeline: Vec::new(),
        }
    }

    /// Records the outcome and compares it with the one expected.
    pub(super) fn record<O>(&mut self, outcome: &Outcome<O>, expected: Status) {
        self.expected = Some(expected);
        self.outcome = Some(outcome.status());
        self.levels = outcome.report().levels();
        if outcome.status() != expected {
            let failure = outcome.failure().map(|f| format!(" ({f})")).unwrap_or_default();
            self.problems.push(format!("it ended {}{failure} where the ladder says {expected}", outcome.status()));
        }
    }

    /// Whether the cell passed.
    pub fn passed(&self) -> bool {
        self.problems.is_empty()
    }
}

/// Every cell of a matrix.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct MatrixReport {
    /// The saga's name.
    pub saga: &'static str,
    /// The cells, by step, then fault.
    pub cells: Vec<CellResult>,
}

impl MatrixReport {
    /// The cells that failed.
    pub fn failed(&self) -> impl Iterator<Item = &CellResult> {
        self.cells.iter().filter(|c| !c.passed())
    }

    /// The cells at `step` with `fault`.
    pub fn cell(&self, step: &str, fault: Fault) -> Option<&CellResult> {
        self.cells.iter().find(|c| c.cell.step == step && c.cell.fault == fault)
    }

    /// Prints the matrix, and panics naming every cell that failed, with what was wrong and
    /// the saga's timeline.
    #[track_caller]
    pub fn assert_all_pass(&self) {
        eprintln!("{self}");
        let failed: Vec<&CellResult> = self.failed().collect();
        if failed.is_empty() {
            return;
        }
        let mut message = format!("{} of {} cells of `{}` failed:\n", failed.len(), self.cells.len(), self.saga);
        for cell in failed {
            message.push_str(&format!("\n- `{}`, {}:\n", cell.cell.step, cell.cell.fault));
            for problem in &cell.problems {
                message.push_str(&format!("    {problem}\n"));
            }
            if !cell.timeline.is_empty() {
                message.push_str("    timeline:\n");
                for line in &cell.timeline {
                    for part in line.lines() {
                        message.push_str(&format!("      {part}\n"));
                    }
                }
            }
        }
        panic!("{message}");
    }
}

impl fmt::Display for MatrixReport {
    /// The matrix as a table: step, fault, outcome, levels, world, verdict.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let passed = self.cells.iter().filter(|c| c.passed()).count();
        writeln!(f, "fault matrix of `{}`: {passed} of {} cells pass", self.saga, self.cells.len())?;
        let rows: Vec<[String; 6]> = self
            .cells
            .iter()
            .map(|c| {
                [
                    c.cell.step.to_owned(),
                    c.cell.fault.to_string(),
                    c.outcome.map_or("-".to_owned(), |s| s.to_string()),
                    levels(&c.levels),
                    match c.world {
                        Some(true) => "yes".to_owned(),
                        Some(false) => "NO".to_owned(),
                        None => "-".to_owned(),
                    },
                    if c.passed() { "ok".to_owned() } else { "FAIL".to_owned() },
                ]
            })
            .collect();
        let header = ["step", "fault", "outcome", "levels", "done/clean", ""];
        let mut widths = header.map(str::len);
        for row in &rows {
            for (width, cell) in widths.iter_mut().zip(row) {
                *width = (*width).max(cell.chars().count());
            }
        }
        let line = |f: &mut fmt::Formatter<'_>, cells: [&str; 6]| -> fmt::Result {
            let mut text = String::new();
            for (cell, width) in cells.iter().zip(widths) {
                text.push_str(&format!("{cell:<width$}  "));
            }
            writeln!(f, "{}", text.trim_end())
        };
        line(f, header)?;
        for row in &rows {
            line(f, row.each_ref().map(String::as_str))?;
        }
        Ok(())
    }
}
