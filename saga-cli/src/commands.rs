//! The commands. Each returns the text to print; errors say what to do.

use std::collections::BTreeMap;
use std::time::Duration;

use saga_runtime::journal::{CompensationNext, Event, Next, Record};
use saga_runtime::retention::Retention;
use saga_runtime::store::{
    Cursor, NewRequest, Order, Request, RequestAction, RequestState, SagaQuery, SagaSummary, StoreError,
    StoredDefinition,
};
use saga_runtime::{RuntimeError, SagaId, Status};
use serde_json::{Value, json};

use crate::open::{Opened, open, owned};
use crate::render::{Steps, duration, flowchart, gantt, parse_age, run_states, table, time};
use crate::{Cli, Command, Format};

type Result<T> = std::result::Result<T, String>;

fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

fn status_of(text: &str) -> Result<Status> {
    match text {
        "running" => Ok(Status::Running),
        "completed" => Ok(Status::Completed),
        "compensated" => Ok(Status::Compensated),
        "needs_human" | "parked" => Ok(Status::NeedsHuman),
        other => {
            Err(format!("unknown status `{other}`: use running, completed, compensated or needs_human (or --parked)"))
        }
    }
}

fn summary_json(s: &SagaSummary) -> Value {
    json!({
        "id": s.id.as_str(),
        "name": s.name,
        "version": s.version,
        "status": s.status.as_str(),
        "stage": s.stage,
        "created_at_ms": s.created_at_ms,
        "updated_at_ms": s.updated_at_ms,
        "due_at_ms": s.due_at_ms,
        "owner": s.owner,
    })
}

fn pretty(value: &Value) -> String {
    format!("{}\n", serde_json::to_string_pretty(value).unwrap_or_default())
}

pub async fn run(cli: Cli) -> Result<String> {
    let format = cli.format;
    if format == Format::Mermaid && !matches!(cli.command, Command::Show { .. } | Command::Graph { .. }) {
        return Err("--format mermaid draws `show` (a gantt) and `graph`: use table or json here".to_owned());
    }
    let opened = open(&cli.store, &cli.schema).await?;
    match cli.command {
        Command::List { status, parked, name, since, limit, after } => {
            let status =
                if parked { Some(Status::NeedsHuman) } else { status.as_deref().map(status_of).transpose()? };
            list(&opened, format, status, name, since, limit, after).await
        }
        Command::Show { id } => show(&opened, format, &id).await,
        Command::Stats { name, limit } => stats(&opened, format, name, limit).await,
        Command::Graph { target } => graph(&opened, format, &target).await,
        Command::Resolve { id, note, wait } => {
            request(&opened, format, RequestAction::Resolve, Some(&id), note, wait).await
        }
        Command::Resume { id, wait } => {
            request(&opened, format, RequestAction::Resume, Some(&id), String::new(), wait).await
        }
        Command::Cancel { id, reason, wait } => {
            request(&opened, format, RequestAction::Cancel, Some(&id), reason, wait).await
        }
        Command::Sweep { wait } => request(&opened, format, RequestAction::Sweep, None, String::new(), wait).await,
        Command::Prune { older_than, keep_last, dry_run } => {
            prune(&opened, format, older_than, keep_last, dry_run).await
        }
        Command::Requests { limit } => requests(&opened, format, limit).await,
    }
}

async fn list(
    opened: &Opened,
    format: Format,
    status: Option<Status>,
    name: Option<String>,
    since: Option<String>,
    limit: usize,
    after: Option<String>,
) -> Result<String> {
    let mut query = SagaQuery::new().order(Order::NewestFirst).limit(limit.max(1));
    if let Some(status) = status {
        query = query.status(status);
    }
    if let Some(name) = name {
        query = query.name(name);
    }
    if let Some(since) = since {
        query = query.since_ms(now_ms().saturating_sub(parse_age(&since)?));
    }
    if let Some(after) = after {
        let (at, id) = after
            .split_once('/')
            .and_then(|(at, id)| Some((at.parse::<u64>().ok()?, id)))
            .ok_or_else(|| format!("`{after}` is not a cursor: pass the one printed under the last page"))?;
        query = query.after(Cursor { created_at_ms: at, id: SagaId::new(id) });
    }
    let page = opened.store.list(&query).await.map_err(|e| e.to_string())?;
    let next = page.next.as_ref().map(|c| format!("{}/{}", c.created_at_ms, c.id));
    if format == Format::Json {
        let sagas: Vec<Value> = page.sagas.iter().map(summary_json).collect();
        return Ok(pretty(&json!({ "sagas": sagas, "next": next })));
    }
    if page.sagas.is_empty() {
        return Ok("no saga matches\n".to_owned());
    }
    let mut out = table(&["id", "name", "status", "stage", "created", "updated"]);
    for s in &page.sagas {
        out.add_row(vec![
            s.id.to_string(),
            format!("{} v{}", s.name, s.version),
            s.status.to_string(),
            s.stage.clone(),
            time(s.created_at_ms),
            time(s.updated_at_ms),
        ]);
    }
    let mut text = format!("{out}\n");
    if let Some(next) = next {
        text.push_str(&format!("more: --after {next}\n"));
    }
    Ok(text)
}

/// The saga, or an error naming the nearest ids.
async fn find(opened: &Opened, id: &str) -> Result<SagaSummary> {
    let saga_id = SagaId::new(id);
    if let Some(summary) = opened.store.summary(&saga_id).await.map_err(|e| e.to_string())? {
        return Ok(summary);
    }
    if let Some(tombstone) = opened.store.tombstone(&saga_id).await.ok().flatten() {
        return Err(format!(
            "saga `{id}` was pruned at {} (it had finished {}, {}): its journal is no longer kept; look in the archive if one was written",
            time(tombstone.pruned_at_ms),
            tombstone.status,
            time(tombstone.finished_at_ms)
        ));
    }
    let page =
        opened.store.list(&SagaQuery::new().order(Order::NewestFirst).limit(1000)).await.map_err(|e| e.to_string())?;
    // An abbreviation (the start or the end of one id, four characters at least) names that saga,
    // as a short hash names a commit.
    if id.chars().count() >= 4 {
        let matching: Vec<&SagaSummary> =
            page.sagas.iter().filter(|s| s.id.as_str().starts_with(id) || s.id.as_str().ends_with(id)).collect();
        match matching.as_slice() {
            [one] => return Ok((*one).clone()),
            [] => {}
            several => {
                let names: Vec<String> = several.iter().take(3).map(|s| format!("`{}`", s.id)).collect();
                return Err(format!(
                    "`{id}` is the start or the end of {} saga ids ({}{}): give more of the id",
                    several.len(),
                    names.join(", "),
                    if several.len() > 3 { ", …" } else { "" }
                ));
            }
        }
    }
    let mut near: Vec<(usize, String)> = page
        .sagas
        .iter()
        .map(|s| s.id.to_string())
        .map(|other| {
            let distance =
                if other.starts_with(id) || other.ends_with(id) { 0 } else { strsim::levenshtein(id, &other) };
            (distance, other)
        })
        .filter(|(distance, other)| *distance <= (other.len() / 3).max(3))
        .collect();
    near.sort();
    let names: Vec<String> = near.into_iter().take(3).map(|(_, id)| format!("`{id}`")).collect();
    Err(match names.as_slice() {
        [] => format!("no saga with id `{id}` is stored: `saga list` shows the ids"),
        names => format!("no saga with id `{id}` is stored; did you mean {}?", names.join(" or ")),
    })
}

async fn definition_of(opened: &Opened, summary: &SagaSummary) -> Option<StoredDefinition> {
    let definitions = opened.store.definitions().await.ok()?;
    definitions.into_iter().find(|d| d.name == summary.name && d.fingerprint == summary.fingerprint)
}

/// The journal, opened (`Err` when it is sealed and no key was given), with its raw rows.
async fn journal(opened: &Opened, summary: &SagaSummary) -> Result<(Vec<Record>, Vec<saga_runtime::store::RecordRow>)> {
    let rows = opened
        .store
        .load(&summary.id)
        .await
        .map_err(|e| e.to_string())?
        .map(|stored| stored.records)
        .unwrap_or_default();
    let records = opened.runtime.journal(&summary.id).await.map_err(|e| match e {
        RuntimeError::Store { error, .. } => format!(
            "{error}\n(the store is encrypted: set SAGA_KEY=<key id>:<64 hex digits> to read the journal; `saga list` works without it)"
        ),
        other => other.to_string(),
    })?;
    Ok((records, rows))
}

async fn show(opened: &Opened, format: Format, id: &str) -> Result<String> {
    let summary = find(opened, id).await?;
    let definition = definition_of(opened, &summary).await;
    let (records, rows) = match journal(opened, &summary).await {
        Ok(journal) => journal,
        Err(error) if format != Format::Mermaid => return sealed(opened, &summary, format).await.ok_or(error)?,
        Err(error) => return Err(error),
    };
    let steps = Steps::of(definition.as_ref(), &records, &rows);
    if format == Format::Mermaid {
        return Ok(gantt(&format!("saga {} ({})", summary.id, summary.name), &steps, &records));
    }
    let outcome = outcome_of(&records);
    let took = attempt_durations(&records);
    if format == Format::Json {
        let timeline: Vec<Value> = records
            .iter()
            .zip(&took)
            .map(|(r, took)| {
                json!({
                    "seq": r.seq,
                    "at_ms": r.at_ms,
                    "kind": r.event.kind(),
                    "step": r.event.step().map(|s| steps.name(s).to_owned()),
                    "text": steps.line(r),
                    "attempt_ms": took,
                })
            })
            .collect();
        return Ok(pretty(&json!({
            "saga": summary_json(&summary),
            "timeline": timeline,
            "state_at_failure": state_at_failure(summary.status, &records, &steps).map(|s| json!(s)),
            "outcome": outcome,
        })));
    }
    let mut out = header(&summary);
    let start = records.first().map_or(0, |r| r.at_ms);
    for (record, took) in records.iter().zip(&took) {
        let offset = record.at_ms.saturating_sub(start);
        let mut line = steps.line(record);
        if let Some(took) = took {
            // After the record's first line (a failure's second line is the ladder's decision).
            let end = line.find('\n').unwrap_or(line.len());
            line.insert_str(end, &format!(" [took {}]", duration(*took)));
        }
        out.push_str(&format!("{:>9}  {line}\n", format!("+{}", duration(offset))));
    }
    if let Some(state) = state_at_failure(summary.status, &records, &steps) {
        out.push_str("\nstate at failure:\n");
        out.push_str(&state.iter().map(|(k, v)| format!("  {k}: {v}\n")).collect::<String>());
    }
    out.push_str(&format!("\noutcome: {}\n", outcome["summary"].as_str().unwrap_or_default()));
    if summary.status == Status::Running {
        // A claim counts while its lease lasts and, on SQLite, while a process owns the file.
        let now =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
        let alive = opened.sqlite.as_deref().is_none_or(owned);
        out.push_str(&match (&summary.owner, summary.lease_until_ms) {
            (Some(owner), Some(until)) if alive && until > now => {
                format!("  driven by `{owner}` (its lease runs until {})\n", time(until))
            }
            _ => "  held by nobody (its process stopped, or it waits out a backoff): a worker, or the next `recover()` of its program, resumes it when it is due\n".to_owned(),
        });
    }
    if summary.status == Status::NeedsHuman {
        out.push_str(&format!(
            "  waits for a human: fix the cause, then `saga resume {id}` (runs it again), or do the compensation by hand and `saga resolve {id} --note \"...\"`\n"
        ));
    }
    Ok(out)
}

/// Without `SAGA_KEY`, the journal of an encrypted store as far as it can be read: each record's
/// time, kind and step, its payload shown as sealed. `None` when the journal is not sealed (the
/// error that stopped the reading is then the one to show).
async fn sealed(opened: &Opened, summary: &SagaSummary, format: Format) -> Option<Result<String>> {
    if std::env::var_os("SAGA_KEY").is_some() {
        return None;
    }
    let rows = opened.store.load(&summary.id).await.ok()??.records;
    // The sealed format starts with 0x01 (an encrypted payload), the plain one with 0x00.
    if rows.first().is_none_or(|row| row.body.first() != Some(&1)) {
        return None;
    }
    let start = rows.first().map_or(0, |r| r.at_ms);
    if format == Format::Json {
        let timeline: Vec<Value> = rows
            .iter()
            .map(|r| json!({ "seq": r.seq, "at_ms": r.at_ms, "kind": r.kind, "step": r.step, "sealed": true }))
            .collect();
        return Some(Ok(pretty(&json!({
            "saga": summary_json(summary),
            "timeline": timeline,
            "state_at_failure": null,
            "outcome": null,
            "sealed": true,
        }))));
    }
    let mut out = header(summary);
    for row in &rows {
        let offset = row.at_ms.saturating_sub(start);
        let step = row.step.as_deref().map(|s| format!("{s}: ")).unwrap_or_default();
        out.push_str(&format!("{:>9}  {step}{} [sealed]\n", format!("+{}", duration(offset)), row.kind));
    }
    out.push_str(
        "\nthe store is encrypted: payloads (inputs, outputs, failures, model exchanges) are sealed; set SAGA_KEY=<key id>:<64 hex digits> to read them\n",
    );
    Some(Ok(out))
}

/// The first lines of `show`: the saga, its definition, where it stands.
fn header(summary: &SagaSummary) -> String {
    format!(
        "saga {} ({} v{}, fingerprint {})\nstatus {} at `{}`; created {}, last write {}\n\n",
        summary.id,
        summary.name,
        summary.version,
        summary.fingerprint,
        summary.status,
        summary.stage,
        time(summary.created_at_ms),
        time(summary.updated_at_ms)
    )
}

/// For each record that ends an attempt of a step or a compensation (completed, failed,
/// compensated), how long that attempt took, from the record that started it.
fn attempt_durations(records: &[Record]) -> Vec<Option<u64>> {
    let mut step_started: BTreeMap<u32, u64> = BTreeMap::new();
    let mut undo_started: BTreeMap<u32, u64> = BTreeMap::new();
    records
        .iter()
        .map(|record| match &record.event {
            Event::AttemptStarted { step, .. } => {
                step_started.insert(*step, record.at_ms);
                None
            }
            Event::CompensationStarted { step, .. } => {
                undo_started.insert(*step, record.at_ms);
                None
            }
            Event::StepCompleted { step, .. } | Event::StepFailed { step, .. } => {
                step_started.remove(step).map(|at| record.at_ms.saturating_sub(at))
            }
            Event::CompensationDone { step, .. } | Event::CompensationFailed { step, .. } => {
                undo_started.remove(step).map(|at| record.at_ms.saturating_sub(at))
            }
            _ => None,
        })
        .collect()
}

/// The outcome of a journal, from its records alone (no saga code needed).
fn outcome_of(records: &[Record]) -> Value {
    // The failure that began the rollback, and the one that parked the saga (a failed
    // compensation, or a step that cannot be rolled back): a parked saga is explained by the
    // latter, a compensated one (even after a human resolved its park) by the former.
    let mut rollback: Option<&saga_runtime::Failure> = None;
    let mut parked: Option<&saga_runtime::Failure> = None;
    let mut status = "running";
    for record in records {
        match &record.event {
            Event::StepFailed { failure: f, next: Next::RollBack, .. } => rollback = Some(f),
            Event::StepFailed { failure: f, next: Next::Park, .. } => {
                parked = Some(f);
                status = "needs_human";
            }
            Event::CompensationFailed { failure: f, next: CompensationNext::Park, .. } => {
                parked = Some(f);
                status = "needs_human";
            }
            Event::Finished { status: s } => status = s.as_str(),
            Event::Resumed | Event::Resolved { .. } => status = "running",
            _ => {}
        }
    }
    let failure = match status {
        "compensated" => rollback.or(parked),
        _ => parked.or(rollback),
    };
    let text = match (status, failure) {
        ("completed", _) => "COMPLETED".to_owned(),
        ("running", _) => "still running".to_owned(),
        (status, Some(f)) => format!("{} ({f})", status.to_uppercase()),
        (status, None) => status.to_uppercase(),
    };
    json!({
        "status": status,
        "failure": failure.map(|f| json!({
            "step": f.step, "compensation": f.compensation, "class": f.class.to_string(),
            "kind": format!("{:?}", f.kind), "attempt": f.attempt, "message": f.message,
        })),
        "summary": text,
    })
}

/// What the saga held when it failed: the last failure, its observation, and the outputs
/// checkpointed so far (scrubbed of credentials, shortened).
/// Only for a saga that failed (rolled back or parked): a running or completed saga's failures
/// were retried, and the timeline shows them.
fn state_at_failure(status: Status, records: &[Record], steps: &Steps) -> Option<BTreeMap<String, String>> {
    if !matches!(status, Status::Compensated | Status::NeedsHuman) {
        return None;
    }
    let failed =
        records.iter().rposition(|r| matches!(r.event, Event::StepFailed { .. } | Event::CompensationFailed { .. }))?;
    let mut state = BTreeMap::new();
    if let Event::StepFailed { failure, .. } | Event::CompensationFailed { failure, .. } = &records[failed].event {
        state.insert("failure".to_owned(), failure.to_string());
    }
    for record in &records[..failed] {
        match &record.event {
            Event::StepCompleted { step, output, .. } => {
                let text = String::from_utf8_lossy(output);
                let mut text = saga_runtime::scrub(&text);
                if text.chars().count() > 160 {
                    text = format!("{}…", text.chars().take(160).collect::<String>());
                }
                state.insert(format!("output of `{}`", steps.name(*step)), text);
            }
            Event::StepFailed { next: Next::Restart { observation: Some(observation), .. }, .. } => {
                state.insert("observation".to_owned(), observation.to_string());
            }
            _ => {}
        }
    }
    Some(state)
}

/// Percentile of sorted milliseconds.
fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

async fn stats(opened: &Opened, format: Format, name: Option<String>, limit: usize) -> Result<String> {
    #[derive(Default)]
    struct ByName {
        outcomes: BTreeMap<&'static str, u64>,
        levels: BTreeMap<u8, u64>,
        compensation_failures: u64,
        durations: Vec<u64>,
    }
    let mut by_name: BTreeMap<String, ByName> = BTreeMap::new();
    let mut query = SagaQuery::new().order(Order::NewestFirst).limit(500);
    if let Some(name) = &name {
        query = query.name(name.clone());
    }
    let mut read = 0;
    let mut sealed = 0;
    loop {
        let page = opened.store.list(&query).await.map_err(|e| e.to_string())?;
        for summary in &page.sagas {
            let entry = by_name.entry(summary.name.clone()).or_default();
            *entry.outcomes.entry(summary.status.as_str()).or_default() += 1;
            if summary.status != Status::Running {
                entry.durations.push(summary.updated_at_ms.saturating_sub(summary.created_at_ms));
            }
            if read < limit {
                read += 1;
                match opened.runtime.journal(&summary.id).await {
                    Ok(records) => {
                        for record in &records {
                            match &record.event {
                                Event::StepFailed { next, .. } => {
                                    *entry.levels.entry(next.level() as u8).or_default() += 1
                                }
                                Event::CompensationFailed { next, .. } => {
                                    entry.compensation_failures += 1;
                                    if matches!(next, CompensationNext::Park) {
                                        *entry.levels.entry(4).or_default() += 1;
                                    }
                                }
                                _ => {}
                            }
                        }
                    }
                    Err(_) => sealed += 1,
                }
            }
        }
        match page.next {
            Some(cursor) => query = query.after(cursor),
            None => break,
        }
    }
    let rows: Vec<Value> = by_name
        .iter_mut()
        .map(|(name, s)| {
            s.durations.sort_unstable();
            json!({
                "name": name,
                "outcomes": s.outcomes,
                "escalations_by_level": s.levels.iter().map(|(l, n)| (l.to_string(), *n)).collect::<BTreeMap<_, _>>(),
                "compensation_failures": s.compensation_failures,
                "duration_ms": { "p50": percentile(&s.durations, 0.5), "p99": percentile(&s.durations, 0.99) },
            })
        })
        .collect();
    if format == Format::Json {
        return Ok(pretty(&json!({ "by_name": rows, "journals_read": read, "journals_sealed": sealed })));
    }
    if rows.is_empty() {
        return Ok("no saga stored\n".to_owned());
    }
    let mut out = table(&[
        "saga",
        "completed",
        "compensated",
        "needs human",
        "running",
        "escalations (level: count)",
        "compensation failures",
        "duration p50 / p99",
    ]);
    for (name, s) in &by_name {
        let count = |status: &str| s.outcomes.get(status).copied().unwrap_or_default().to_string();
        out.add_row(vec![
            name.clone(),
            count("completed"),
            count("compensated"),
            count("needs_human"),
            count("running"),
            s.levels.iter().map(|(l, n)| format!("{l}: {n}")).collect::<Vec<_>>().join(", "),
            s.compensation_failures.to_string(),
            format!("{} / {}", duration(percentile(&s.durations, 0.5)), duration(percentile(&s.durations, 0.99))),
        ]);
    }
    let mut text = format!("{out}\n");
    if read >= limit {
        text.push_str(&format!("escalations from the newest {limit} journals (--limit to read more)\n"));
    }
    if sealed > 0 {
        text.push_str(&format!("{sealed} journal(s) are encrypted: set SAGA_KEY to count their escalations\n"));
    }
    Ok(text)
}

async fn graph(opened: &Opened, format: Format, target: &str) -> Result<String> {
    let definitions = opened.store.definitions().await.unwrap_or_default();
    let mut of_name: Vec<&StoredDefinition> = definitions.iter().filter(|d| d.name == target).collect();
    if !of_name.is_empty() {
        of_name.sort_by_key(|d| d.version);
        let definition = of_name.last().expect("one at least");
        let steps = Steps::of(Some(definition), &[], &[]);
        let chart = flowchart(&steps, None);
        if format == Format::Json {
            return Ok(pretty(&json!({
                "name": definition.name,
                "version": definition.version,
                "fingerprint": definition.fingerprint,
                "steps": graph_steps(&steps, None),
                "mermaid": chart,
            })));
        }
        return Ok(chart);
    }
    let summary = find(opened, target).await.map_err(|e| {
        let names: Vec<&str> = definitions.iter().map(|d| d.name.as_str()).collect();
        format!(
            "{e}\n(or give a saga type's name: the store knows {})",
            if names.is_empty() { "none".to_owned() } else { names.join(", ") }
        )
    })?;
    let definition = definition_of(opened, &summary).await;
    let (records, rows) = journal(opened, &summary).await?;
    let steps = Steps::of(definition.as_ref(), &records, &rows);
    let chart = flowchart(&steps, Some(&records));
    if format == Format::Json {
        return Ok(pretty(&json!({
            "saga": summary_json(&summary),
            "steps": graph_steps(&steps, Some(&run_states(&steps, &records))),
            "mermaid": chart,
        })));
    }
    Ok(chart)
}

/// The steps of a graph for scripts: name, kind, compensation, and for a run where each ended up.
fn graph_steps(steps: &Steps, states: Option<&[&str]>) -> Vec<Value> {
    (0..steps.names.len())
        .map(|i| {
            json!({
                "name": steps.names[i],
                "kind": steps.kinds[i],
                "compensation": steps.compensations[i],
                "state": states.map(|states| states[i]),
            })
        })
        .collect()
}

fn request_json(request: &Request) -> Value {
    json!({
        "request": request.id,
        "action": request.action.as_str(),
        "saga_id": request.saga_id.as_ref().map(|id| id.to_string()),
        "state": request.state.as_str(),
        "result": request.result,
        "requested_at_ms": request.requested_at_ms,
        "done_at_ms": request.done_at_ms,
    })
}

async fn request(
    opened: &Opened,
    format: Format,
    action: RequestAction,
    id: Option<&str>,
    note: String,
    wait: bool,
) -> Result<String> {
    let summary = match id {
        Some(id) => Some(find(opened, id).await?),
        None => None,
    };
    if let Some(summary) = &summary {
        let refused = match action {
            RequestAction::Resolve | RequestAction::Resume if summary.status != Status::NeedsHuman => {
                Some(format!("it is {}, not waiting for a human", summary.status))
            }
            RequestAction::Cancel if matches!(summary.status, Status::Completed | Status::Compensated) => {
                Some(format!("it is {} already", summary.status))
            }
            _ => None,
        };
        if let Some(why) = refused {
            let done = match action {
                RequestAction::Resolve => "resolved",
                RequestAction::Resume => "resumed",
                _ => "cancelled",
            };
            return Err(format!("saga `{}` cannot be {done} now: {why}", summary.id));
        }
    }
    let new = NewRequest::new(
        action,
        summary.as_ref().map(|s| s.id.clone()),
        summary.as_ref().map(|s| (s.name.clone(), s.fingerprint.clone())),
        note,
        now_ms(),
    );
    let number = opened.store.submit(new).await.map_err(|e| e.to_string())?;
    let who = match &summary {
        Some(s) => format!("a worker that registers `{}` (version {})", s.name, s.version),
        None => "a worker".to_owned(),
    };
    let nobody = opened.sqlite.as_deref().is_some_and(|path| !owned(path));
    if !wait {
        let what = match &summary {
            Some(s) => format!("{} saga {}", action.as_str(), s.id),
            None => action.as_str().to_owned(),
        };
        if format == Format::Json {
            return Ok(pretty(
                &json!({ "request": number, "action": action.as_str(), "state": "pending", "owner_running": !nobody }),
            ));
        }
        let when = if nobody {
            "no process owns the store now: it will be carried out when a worker opens it".to_owned()
        } else {
            "it is carried out within the worker's poll interval (about a second)".to_owned()
        };
        return Ok(format!(
            "request #{number}: {what}\n{who} carries it out (this tool has none of your sagas' code); {when}.\n`saga requests` shows how it ended, or pass --wait.\n"
        ));
    }
    let started = std::time::Instant::now();
    loop {
        let recent = opened.store.requests(200).await.map_err(|e| e.to_string())?;
        if let Some(request) = recent.iter().find(|r| r.id == number)
            && matches!(request.state, RequestState::Done | RequestState::Failed)
        {
            if format == Format::Json {
                return Ok(pretty(&request_json(request)));
            }
            let result = request.result.clone().unwrap_or_default();
            return match request.state {
                RequestState::Done => Ok(format!("request #{number} done: {result}\n")),
                _ => Err(format!("request #{number} failed: {result}")),
            };
        }
        if started.elapsed() > Duration::from_secs(60) {
            return Err(format!(
                "request #{number} was not carried out within 60 s: {}; it stays queued (`saga requests`)",
                if nobody { "no process owns the store now" } else { "is a worker of that saga type running?" }
            ));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn requests(opened: &Opened, format: Format, limit: usize) -> Result<String> {
    let recent = opened.store.requests(limit).await.map_err(|e| e.to_string())?;
    if format == Format::Json {
        let rows: Vec<Value> = recent.iter().map(request_json).collect();
        return Ok(pretty(&json!({ "requests": rows })));
    }
    if recent.is_empty() {
        return Ok("no request\n".to_owned());
    }
    let mut out = table(&["#", "action", "saga", "state", "asked", "result"]);
    for r in &recent {
        out.add_row(vec![
            r.id.to_string(),
            r.action.as_str().to_owned(),
            r.saga_id.as_ref().map_or("-".to_owned(), ToString::to_string),
            r.state.as_str().to_owned(),
            time(r.requested_at_ms),
            r.result.clone().unwrap_or_default(),
        ]);
    }
    Ok(format!("{out}\n"))
}

async fn prune(
    opened: &Opened,
    format: Format,
    older_than: Option<String>,
    keep_last: Option<u64>,
    dry_run: bool,
) -> Result<String> {
    let retention = match (older_than, keep_last) {
        (Some(age), keep) => {
            let mut r = Retention::older_than(Duration::from_millis(parse_age(&age)?)).map_err(|e| e.to_string())?;
            if let Some(keep) = keep {
                r = r.or_beyond(keep).map_err(|e| e.to_string())?;
            }
            r
        }
        (None, Some(keep)) => Retention::keep_last(keep).map_err(|e| e.to_string())?,
        (None, None) => return Err("say what to prune: --older-than 30d and/or --keep-last 10000".to_owned()),
    };
    let report = if dry_run {
        opened.runtime.prune_dry_run(&retention).await.map_err(|e| e.to_string())?
    } else if let Some(path) = &opened.sqlite {
        if owned(path) {
            return Err(format!(
                "a process owns `{}`: prune there (`Runtime::prune`, or `RuntimeBuilder::retention`), or stop it and run this again",
                path.display()
            ));
        }
        let mut options = saga_runtime::store::SqliteOptions::new(path);
        if let Some(keys) = crate::open::keyring()? {
            options = options.encryption(keys);
        }
        let owner = options.open().await.map_err(|e| e.to_string())?;
        let runtime = saga_runtime::Runtime::builder().store(owner).build();
        runtime.prune(&retention).await.map_err(|e| match e {
            RuntimeError::Store { error: error @ StoreError::ReadOnly { .. }, .. }
                if std::env::var_os("SAGA_KEY").is_none() =>
            {
                format!("{error}\n(set SAGA_KEY=<key id>:<64 hex digits> to prune an encrypted store)")
            }
            other => other.to_string(),
        })?
    } else {
        opened.runtime.prune(&retention).await.map_err(|e| e.to_string())?
    };
    if format == Format::Json {
        let pruned: Vec<Value> = report
            .pruned
            .iter()
            .map(|p| json!({ "id": p.id.as_str(), "name": p.name, "status": p.status.as_str(), "finished_at_ms": p.finished_at_ms }))
            .collect();
        return Ok(pretty(&json!({ "dry_run": report.dry_run, "count": report.count, "pruned": pruned })));
    }
    let verb = if report.dry_run { "would prune" } else { "pruned" };
    let mut out = format!("{verb} {} finished saga(s)\n", report.count);
    for p in report.pruned.iter().take(20) {
        out.push_str(&format!("  {} ({}, {} at {})\n", p.id, p.name, p.status, time(p.finished_at_ms)));
    }
    if report.pruned.len() > 20 {
        out.push_str(&format!("  … and {} more\n", report.pruned.len() - 20));
    }
    Ok(out)
}
