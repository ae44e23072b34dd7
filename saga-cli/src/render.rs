//! Turning records into what people read: timestamps, durations, tables, the step names of a
//! saga, and the Mermaid pictures.

use std::collections::HashMap;

use comfy_table::presets::UTF8_FULL_CONDENSED;
use comfy_table::{ContentArrangement, Table};
use saga_runtime::journal::{CompensationNext, Event, Next, Record};
use saga_runtime::store::{RecordRow, StoredDefinition};

/// A table with the house style.
pub fn table(header: &[&str]) -> Table {
    let mut table = Table::new();
    table.load_preset(UTF8_FULL_CONDENSED).set_content_arrangement(ContentArrangement::Dynamic).set_header(header);
    table
}

/// Milliseconds since the Unix epoch as `YYYY-MM-DD HH:MM:SS.mmm` UTC.
pub fn time(ms: u64) -> String {
    let secs = ms / 1000;
    let (days, rest) = (secs / 86_400, secs % 86_400);
    let (h, m, s) = (rest / 3600, rest % 3600 / 60, rest % 60);
    // Civil from days (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{d:02} {h:02}:{m:02}:{s:02}.{:03}", ms % 1000)
}

/// A duration in milliseconds, for people.
pub fn duration(ms: u64) -> String {
    match ms {
        0..1_000 => format!("{ms} ms"),
        1_000..60_000 => format!("{:.1} s", ms as f64 / 1000.0),
        60_000..3_600_000 => format!("{:.1} min", ms as f64 / 60_000.0),
        _ => format!("{:.1} h", ms as f64 / 3_600_000.0),
    }
}

/// `30s`, `15m`, `2h`, `7d` as milliseconds.
pub fn parse_age(text: &str) -> Result<u64, String> {
    let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let n: u64 =
        number.parse().map_err(|_| format!("`{text}` is not a duration: write it like `30m`, `12h` or `7d`"))?;
    let unit_ms = match unit {
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return Err(format!("`{text}` has no unit: write it like `30m`, `12h` or `7d`")),
    };
    Ok(n.saturating_mul(unit_ms))
}

/// The step names (and compensations) of a saga: from its stored definition when the store
/// keeps it, else from the names its journal rows carry.
pub struct Steps {
    pub names: Vec<String>,
    pub compensations: Vec<Option<String>>,
    pub kinds: Vec<Option<String>>,
}

impl Steps {
    pub fn of(definition: Option<&StoredDefinition>, records: &[Record], rows: &[RecordRow]) -> Steps {
        if let Some(definition) = definition {
            return Steps {
                names: definition.steps.iter().map(|s| s.name.clone()).collect(),
                compensations: definition.steps.iter().map(|s| s.compensation.clone()).collect(),
                kinds: definition.steps.iter().map(|s| Some(s.kind.clone())).collect(),
            };
        }
        let mut names: HashMap<u32, String> = HashMap::new();
        for (record, row) in records.iter().zip(rows) {
            if let (Some(index), Some(name)) = (record.event.step(), row.step.as_deref()) {
                names.insert(index, name.to_owned());
            }
        }
        let count = names.keys().max().map_or(0, |m| *m as usize + 1);
        Steps {
            names: (0..count as u32).map(|i| names.get(&i).cloned().unwrap_or_else(|| format!("step {i}"))).collect(),
            compensations: vec![None; count],
            kinds: vec![None; count],
        }
    }

    pub fn name(&self, index: u32) -> &str {
        self.names.get(index as usize).map_or("?", String::as_str)
    }

    /// One record as a timeline line.
    pub fn line(&self, record: &Record) -> String {
        let names: Vec<&str> = self.names.iter().map(String::as_str).collect();
        let compensations: Vec<Option<&str>> = self.compensations.iter().map(Option::as_deref).collect();
        saga_runtime::journal::TimelineLine { steps: &names, compensations: &compensations, record }.to_string()
    }
}

/// Mermaid-safe text.
fn label(text: &str) -> String {
    text.replace('"', "'").replace(['<', '>'], "")
}

/// A flowchart of a saga type, and, for one run, each step coloured by what happened to it.
pub fn flowchart(steps: &Steps, run: Option<&[Record]>) -> String {
    let mut out = String::from("flowchart LR\n");
    for (i, name) in steps.names.iter().enumerate() {
        let kind = steps.kinds[i].as_deref().unwrap_or("step");
        let node = match kind {
            "commit" => format!("    s{i}[[\"{} (commit point)\"]]\n", label(name)),
            _ => format!("    s{i}[\"{}<br/>{kind}\"]\n", label(name)),
        };
        out.push_str(&node);
        if i > 0 {
            out.push_str(&format!("    s{} --> s{i}\n", i - 1));
        }
        if let Some(compensation) = &steps.compensations[i] {
            out.push_str(&format!("    c{i}([\"undo: {}\"])\n    s{i} -.-> c{i}\n", label(compensation)));
        }
    }
    if let Some(records) = run {
        let state = run_states(steps, records);
        out.push_str(
            "    classDef done fill:#d4f7d4,stroke:#2a8a2a\n    classDef failed fill:#f9d0d0,stroke:#b22\n    classDef compensated fill:#fde8c4,stroke:#c80\n    classDef stuck fill:#f9d0d0,stroke:#b22,stroke-width:3px\n    classDef retried fill:#fff6c4,stroke:#aa0\n    classDef running fill:#d6e6ff,stroke:#36c\n    classDef pending fill:#eeeeee,stroke:#999\n",
        );
        for (i, state) in state.iter().enumerate() {
            out.push_str(&format!("    class s{i} {state}\n"));
        }
    }
    out
}

/// Where each step of a run ended up: `pending`, `running`, `done`, `retried` (its last
/// attempt failed and the ladder went on), `failed` (its failure rolled the saga back or parked
/// it), `compensated`, or `stuck` (its compensation failed and the saga is parked).
pub fn run_states(steps: &Steps, records: &[Record]) -> Vec<&'static str> {
    let mut state: Vec<&'static str> = vec!["pending"; steps.names.len()];
    for record in records {
        let Some(step) = record.event.step().map(|s| s as usize).filter(|s| *s < state.len()) else { continue };
        match &record.event {
            Event::AttemptStarted { .. } if state[step] == "pending" => state[step] = "running",
            Event::StepCompleted { .. } => state[step] = "done",
            Event::StepFailed { next, .. } => {
                state[step] = match next {
                    Next::RollBack | Next::Park => "failed",
                    _ => "retried",
                }
            }
            Event::CompensationDone { .. } | Event::Resolved { .. } => state[step] = "compensated",
            Event::CompensationFailed { next: CompensationNext::Park, .. } => state[step] = "stuck",
            Event::Cancelled { .. } => state[step] = "failed",
            _ => {}
        }
    }
    state
}

/// A gantt of a run: each attempt and each compensation attempt as a bar.
pub fn gantt(title: &str, steps: &Steps, records: &[Record]) -> String {
    let mut out = format!("gantt\n    title {}\n    dateFormat x\n    axisFormat %H:%M:%S\n", label(title));
    let mut open: HashMap<(u32, bool), (u32, u64)> = HashMap::new();
    let mut bars: Vec<(u32, String, &str, u64, u64)> = Vec::new();
    for record in records {
        match &record.event {
            Event::AttemptStarted { step, attempt, .. } => {
                open.insert((*step, false), (*attempt, record.at_ms));
            }
            Event::CompensationStarted { step, attempt } => {
                open.insert((*step, true), (*attempt, record.at_ms));
            }
            Event::StepCompleted { step, .. } | Event::StepFailed { step, .. } => {
                if let Some((attempt, start)) = open.remove(&(*step, false)) {
                    let tag = if matches!(record.event, Event::StepCompleted { .. }) { "done" } else { "crit" };
                    bars.push((*step, format!("attempt {attempt}"), tag, start, record.at_ms));
                }
            }
            Event::CompensationDone { step, .. } | Event::CompensationFailed { step, .. } => {
                if let Some((attempt, start)) = open.remove(&(*step, true)) {
                    let tag = if matches!(record.event, Event::CompensationDone { .. }) { "active" } else { "crit" };
                    bars.push((*step, format!("undo {attempt}"), tag, start, record.at_ms));
                }
            }
            _ => {}
        }
    }
    let mut section = None;
    for (n, (step, name, tag, start, end)) in bars.iter().enumerate() {
        if section != Some(*step) {
            out.push_str(&format!("    section {}\n", label(steps.name(*step))));
            section = Some(*step);
        }
        out.push_str(&format!("    {name} :{tag}, b{n}, {start}, {}\n", (*end).max(start + 1)));
    }
    out
}
