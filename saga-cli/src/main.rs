//! `saga`: the operators' tool. It reads a saga-runtime store (a SQLite file, while a worker
//! runs on it, or a PostgreSQL database), shows what is stuck and why, draws the pictures, and
//! leaves requests (resume, resolve, cancel, sweep) for the process that owns the saga: a saga
//! is only ever written by the runtime that holds it, and this tool has none of your sagas' code.
//!
//! ```text
//! saga --store sagas.db list --parked
//! saga --store sagas.db show 01a2…                  # the timeline, the state at failure, the outcome
//! saga --store sagas.db resolve 01a2… --note "closed PR #7 by hand" --wait
//! saga --store postgres://app@db/agents stats --format json
//! ```

mod commands;
mod open;
mod render;

use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

/// List, show, graph and act on the sagas of a saga-runtime store.
#[derive(Parser, Debug)]
#[command(name = "saga", version, about, long_about = None)]
pub struct Cli {
    /// The store: a SQLite file (read next to the worker that owns it) or a PostgreSQL URL.
    #[arg(long, env = "SAGA_STORE", global = true, default_value = "sagas.db")]
    pub store: String,

    /// The PostgreSQL schema of the store.
    #[arg(long, env = "SAGA_SCHEMA", global = true, default_value = "saga")]
    pub schema: String,

    /// How to print: `table` for people, `json` for scripts (see the README for its shape).
    #[arg(long, value_enum, global = true, default_value_t = Format::Table)]
    pub format: Format,

    #[command(subcommand)]
    pub command: Command,
}

/// How to print a result.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// A table (or a timeline) for people.
    Table,
    /// JSON for scripts.
    Json,
    /// A Mermaid diagram (`show`: a gantt of attempts and compensations; `graph`).
    Mermaid,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// The sagas, newest first.
    List {
        /// Only sagas with this status: running, completed, compensated, needs_human.
        #[arg(long)]
        status: Option<String>,
        /// Only those waiting for a human (same as `--status needs_human`).
        #[arg(long)]
        parked: bool,
        /// Only sagas of this name.
        #[arg(long)]
        name: Option<String>,
        /// Only sagas created within this long (`30m`, `2h`, `7d`).
        #[arg(long)]
        since: Option<String>,
        /// At most this many.
        #[arg(long, default_value_t = 50)]
        limit: usize,
        /// Continue after this cursor (printed under a full page).
        #[arg(long)]
        after: Option<String>,
    },
    /// One saga: its timeline (steps, attempts, failure classes, ladder levels, effects,
    /// compensations, model exchanges, durations), the state at failure, and the outcome.
    Show {
        /// The saga's id (or its start or end, when no other id has it).
        id: String,
    },
    /// Outcomes, escalations per level, compensation failures and durations, by saga name.
    Stats {
        /// Only sagas of this name.
        #[arg(long)]
        name: Option<String>,
        /// Read the journals of at most this many of the newest sagas (for the escalations).
        #[arg(long, default_value_t = 1000)]
        limit: usize,
    },
    /// A Mermaid flowchart of a saga type (by name), or of one run (by id) coloured by what
    /// happened.
    Graph {
        /// A saga name or a saga id.
        target: String,
    },
    /// Records that a human did the compensation a parked saga waits on; the rest goes on.
    Resolve {
        /// The saga's id (or its start or end, when no other id has it).
        id: String,
        /// What the human did.
        #[arg(long)]
        note: String,
        /// Wait (up to 60 s) until the owner carried it out, and print how it ended.
        #[arg(long)]
        wait: bool,
    },
    /// Un-parks a saga: the failed compensation (or the parked step) runs again.
    Resume {
        /// The saga's id (or its start or end, when no other id has it).
        id: String,
        /// Wait (up to 60 s) until the owner carried it out.
        #[arg(long)]
        wait: bool,
    },
    /// Rolls a saga back now (its commit point must not have passed).
    Cancel {
        /// The saga's id (or its start or end, when no other id has it).
        id: String,
        /// Why.
        #[arg(long)]
        reason: String,
        /// Wait (up to 60 s) until the owner carried it out.
        #[arg(long)]
        wait: bool,
    },
    /// Asks a worker to sweep (resume what nobody drives, page again, remove orphans: it needs
    /// your resource kinds, which only your workers have).
    Sweep {
        /// Wait (up to 60 s) until a worker carried it out.
        #[arg(long)]
        wait: bool,
    },
    /// Prunes finished sagas older than a duration or beyond a count (a dry run only reports).
    Prune {
        /// Prune sagas finished more than this long ago (`30d`, `12h`).
        #[arg(long)]
        older_than: Option<String>,
        /// Keep only this many finished sagas.
        #[arg(long)]
        keep_last: Option<u64>,
        /// Report what would be pruned; change nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// The operators' requests left in the store, newest first, and how each ended.
    Requests {
        /// At most this many.
        #[arg(long, default_value_t = 20)]
        limit: usize,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(commands::run(cli)) {
        Ok(text) => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::FAILURE
        }
    }
}
