//! The command line: global options and one subcommand, parsed by clap's derive.

use clap::{Parser, Subcommand};

/// The exit codes, as `--help` shows them (and the crate docs list them).
const EXIT_CODES: &str = "\
Exit codes:
  0  success
  1  `check` found problems
  2  usage error (a bad flag, a bad argument)
  3  the database could not be reached or opened
  4  any other failure (the error says what the server said)";

/// Look into a cqrs event store: its streams and events, its processors, its integrity and its
/// schema.
#[derive(Debug, Parser)]
#[command(name = "cqrs-admin", version, after_help = EXIT_CODES)]
pub(crate) struct Cli {
    /// The database: `sqlite://PATH` or a path ending in `.db` (SQLite), `postgres://...` or
    /// `key=value` pairs (PostgreSQL).
    #[arg(long, global = true, env = "DATABASE_URL", hide_env_values = true)]
    pub(crate) database: Option<String>,

    /// Print JSON for scripts: one object per line for lists and `tail`, one object for `check`
    /// and `migrate`.
    #[arg(long, global = true)]
    pub(crate) json: bool,

    /// What to do.
    #[command(subcommand)]
    pub(crate) command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// List streams with their versions and last positions, in id order.
    Streams {
        /// Only the streams of this category (the aggregate name before the first `-`).
        #[arg(long)]
        category: Option<String>,
        /// Only the streams whose id sorts after this one (the last of the previous page).
        #[arg(long)]
        after: Option<String>,
        /// At most this many streams (all of them when left out).
        #[arg(long)]
        limit: Option<usize>,
    },
    /// Show the events of one stream, oldest first.
    Stream {
        /// The stream id, such as `show-42`.
        id: String,
        /// Show each event's payload.
        #[arg(long)]
        payloads: bool,
    },
    /// Show the global log from a position on; with `--follow`, wait for new events until
    /// Ctrl-C.
    Tail {
        /// Start after this position (0: from the first event).
        #[arg(long, default_value_t = 0)]
        after: u64,
        /// Keep waiting for new events; stop with Ctrl-C.
        #[arg(long)]
        follow: bool,
        /// Only the events of streams of this category.
        #[arg(long)]
        category: Option<String>,
        /// Only the events of this type.
        #[arg(long = "type")]
        event_type: Option<String>,
        /// Show each event's payload.
        #[arg(long)]
        payloads: bool,
    },
    /// List the processors (projections and sagas) whose checkpoints the store keeps.
    Processors,
    /// Check that positions are dense, that every stream's versions are 1..=n and that no
    /// event waits for a position; exits 1 when something is wrong.
    Check {
        /// List at most this many problems of each kind.
        #[arg(long, default_value_t = cqrs_core::admin::DEFAULT_CHECK_LIMIT)]
        limit: usize,
    },
    /// Say which schema migrations the database lacks; apply them with `--yes`.
    Migrate {
        /// Apply the migrations (without it, nothing is changed).
        #[arg(long)]
        yes: bool,
    },
    /// List the dead letters of one processor, oldest position first.
    DeadLetters {
        /// The processor's name.
        processor: String,
    },
}
