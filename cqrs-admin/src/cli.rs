//! The command line: global options and one subcommand, parsed by clap's derive.

use clap::{Parser, Subcommand};

/// The exit codes, as `--help` shows them (and the crate docs list them).
const EXIT_CODES: &str = "\
Exit codes:
  0  success
  1  `check` found problems
  2  usage error (a bad flag, a bad argument)
  3  the database could not be reached or opened, or the service could not be reached
  4  any other failure, a refusal of the service included (the error says what the server
     or the service said)";

/// Look into a cqrs event store (its streams and events, its processors, its integrity and its
/// schema) and control the processors of a running service.
#[derive(Debug, Parser)]
#[command(name = "cqrs-admin", version, after_help = EXIT_CODES)]
pub(crate) struct Cli {
    /// The database: `sqlite://PATH` or a path ending in `.db` (SQLite), `postgres://...` or
    /// `key=value` pairs (PostgreSQL).
    #[arg(long, global = true, env = "DATABASE_URL", hide_env_values = true)]
    pub(crate) database: Option<String>,

    /// The admin router of a running service, for the processor controls and the live status:
    /// the address it is nested at, such as `http://127.0.0.1:3000/admin` (plain HTTP).
    #[arg(long, global = true, env = "CQRS_ADMIN_SERVICE")]
    pub(crate) service: Option<String>,

    /// A header sent with every call to the service, as `Name: value` (say, the
    /// `Authorization` the proxy in front of it asks for); repeat it for more.
    #[arg(
        long = "service-header",
        global = true,
        value_name = "NAME: VALUE",
        env = "CQRS_ADMIN_SERVICE_HEADER",
        hide_env_values = true
    )]
    pub(crate) service_headers: Vec<String>,

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
    /// List the processors (projections and sagas): with `--service`, those the service runs,
    /// live (state, leader, lag, last error); otherwise those whose checkpoints the store keeps.
    Processors,
    /// Show or control one processor of the running service (needs `--service`).
    Processor {
        /// The processor's name.
        name: String,
        /// What to do.
        #[command(subcommand)]
        action: ProcessorAction,
    },
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
    /// List the dead letters of one processor, oldest position first (from the service with
    /// `--service`, else from the store); retry or discard one (needs `--service`).
    DeadLetters {
        /// The processor's name.
        processor: String,
        /// Retry or discard one of them; without it, list them.
        #[command(subcommand)]
        action: Option<DeadLetterAction>,
    },
}

/// What `processor NAME` does. The controls change nothing without `--yes`: they say what they
/// would do.
#[derive(Debug, Subcommand)]
pub(crate) enum ProcessorAction {
    /// Show its status: state, leader, checkpoint, head, lag, last error, dead letters.
    Status,
    /// Pause it after the batch in hand, until it is resumed.
    Pause {
        /// Do it.
        #[arg(long)]
        yes: bool,
    },
    /// Resume it when paused, or stopped at a failing event (tried again).
    Resume {
        /// Do it.
        #[arg(long)]
        yes: bool,
    },
    /// Empty its read model, drop its dead letters and replay the log from the start; shows
    /// the progress until it is live again.
    Rebuild {
        /// Do it.
        #[arg(long)]
        yes: bool,
        /// Return once the rebuild has started, without waiting for it.
        #[arg(long)]
        no_wait: bool,
    },
    /// Move its checkpoint forward to a position, without handling the events before it.
    Reset {
        /// The position the checkpoint moves to.
        #[arg(long)]
        to: u64,
        /// Do it.
        #[arg(long)]
        yes: bool,
    },
}

/// What `dead-letters PROCESSOR` does to one dead letter. Nothing changes without `--yes`.
#[derive(Debug, Subcommand)]
pub(crate) enum DeadLetterAction {
    /// Handle its event again; it is gone when that succeeds.
    Retry {
        /// The dead letter's id, as the list shows it.
        id: String,
        /// Do it.
        #[arg(long)]
        yes: bool,
    },
    /// Drop it without handling its event.
    Discard {
        /// The dead letter's id, as the list shows it.
        id: String,
        /// Do it.
        #[arg(long)]
        yes: bool,
    },
}
