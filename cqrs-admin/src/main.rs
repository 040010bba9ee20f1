//! `cqrs-admin`: a command line tool to look into a cqrs event store (SQLite or PostgreSQL):
//! its streams and events, its processors and their dead letters, the integrity of its log, and
//! its schema migrations; and to control the processors of a running service (pause, resume,
//! rebuild, reset, retry or discard a dead letter) through its admin router.
//!
//! ```text
//! cqrs-admin --database sqlite://app.db streams --category show
//! cqrs-admin --database app.db stream show-42 --payloads
//! DATABASE_URL=postgres://app@localhost/app cqrs-admin tail --follow --category show --json
//! cqrs-admin --database 'host=/run/postgresql dbname=app' check
//! cqrs-admin --database app.db migrate          # says what it would do
//! cqrs-admin --database app.db migrate --yes    # does it
//! cqrs-admin --database app.db dead-letters reserved_seats
//! cqrs-admin --service http://127.0.0.1:3000/admin processors
//! cqrs-admin --service http://127.0.0.1:3000/admin processor orders_by_customer rebuild --yes
//! cqrs-admin --service http://127.0.0.1:3000/admin dead-letters reserved_seats retry 7 --yes
//! ```
//!
//! # The database
//!
//! `--database` (or the `DATABASE_URL` environment variable) names it: `sqlite://PATH`,
//! `sqlite:PATH` or a path ending in `.db` open a SQLite file (which must exist, except for
//! `migrate --yes`); `postgres://...`, `postgresql://...` or `key=value` pairs (as libpq reads
//! them) open PostgreSQL. A PostgreSQL connection string is never printed: it may hold a
//! password.
//!
//! # Commands
//!
//! * `streams [--category C] [--after ID] [--limit N]`: streams in id order, with version, event
//!   count and last position.
//! * `stream ID [--payloads]`: the events of one stream.
//! * `tail [--after N] [--follow] [--category C] [--type T] [--payloads]`: the global log after
//!   position N; `--follow` waits for new events (without polling) until Ctrl-C or SIGTERM,
//!   then exits 0.
//! * `processors`: the projections and sagas whose checkpoints the store keeps, how far behind
//!   the head each is, and how many dead letters each has.
//! * `check [--limit N]`: positions dense, every stream's versions 1..=n, no event waiting for a
//!   position (PostgreSQL); at most N problems of each kind are listed.
//! * `migrate [--yes]`: the schema migrations the database lacks; applied only with `--yes`.
//! * `dead-letters PROCESSOR`: the events a processor parked.
//!
//! Payloads are left out unless `--payloads` is given.
//!
//! # The running service
//!
//! `--service` (or `CQRS_ADMIN_SERVICE`) is the address a service nests `cqrs_http`'s admin
//! router at, such as `http://127.0.0.1:3000/admin` (plain HTTP: put the tool on the host or
//! through a tunnel, not across a network). With it, `processors`, `dead-letters PROCESSOR`
//! and these ask the service, which knows more than the store (state, leader, last error):
//!
//! * `processor NAME status`: one processor's status.
//! * `processor NAME pause|resume [--yes]`.
//! * `processor NAME rebuild [--yes] [--no-wait]`: empties the read model and replays the log;
//!   the tool shows a progress bar on a terminal and returns once the processor is live again
//!   (Ctrl-C stops waiting, not the rebuild), or at once with `--no-wait`.
//! * `processor NAME reset --to N [--yes]`: moves the checkpoint forward to position N, past
//!   the events in between.
//! * `dead-letters PROCESSOR retry|discard ID [--yes]`.
//!
//! Without `--yes` a control changes nothing: it prints what it would do, as the service says.
//! `--service-header 'Name: value'` (repeatable; `CQRS_ADMIN_SERVICE_HEADER` holds one) is sent
//! with every call, for the proxy in front of the admin router; its value is never printed.
//!
//! # Output
//!
//! An aligned table for people by default. `--json` prints JSON for scripts: one object per
//! line for `streams`, `stream`, `tail`, `processors` and `dead-letters`, one object for
//! `check` (the report, with `"clean": true` or `false`) and for `migrate` (`pending` and
//! `applied`). Errors go to stderr, with what the server or SQLite said.
//!
//! # Exit codes
//!
//! | code | meaning |
//! |------|---------|
//! | 0 | success |
//! | 1 | `check` found problems |
//! | 2 | usage error: a bad flag or argument |
//! | 3 | the database could not be reached or opened (a bad `--database` value included), or the service could not be reached |
//! | 4 | any other failure, a control the service refused included (the error says what it said) |

mod cli;
mod command;
mod control;
mod database;
mod error;
mod output;
mod service;

use std::io::Write as _;
use std::process::ExitCode;

use clap::Parser as _;

use crate::cli::Cli;
use crate::command::{Output, Sources};
use crate::database::Target;
use crate::error::{AdminError, exit};
use crate::service::Service;

fn main() -> ExitCode {
    // clap prints usage errors to stderr and exits 2, `--help` and `--version` to stdout with 0.
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("cqrs-admin: cannot start the async runtime: {error}");
            return ExitCode::from(exit::FAILED);
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => ExitCode::from(code),
        // A reader that closed the pipe (`| head`) has all it wanted.
        Err(AdminError::Output(error)) if error.kind() == std::io::ErrorKind::BrokenPipe => {
            ExitCode::from(exit::OK)
        }
        Err(error) => {
            let _ = writeln!(std::io::stderr(), "cqrs-admin: {error}");
            ExitCode::from(error.exit_code())
        }
    }
}

async fn run(cli: Cli) -> Result<u8, AdminError> {
    let database = cli
        .database
        .filter(|value| !value.is_empty())
        .map(|value| Target::parse(&value))
        .transpose()?;
    let service = cli
        .service
        .filter(|value| !value.is_empty())
        .map(|value| Service::new(&value, &cli.service_headers))
        .transpose()?;
    let sources = Sources { database, service };
    let mut output = Output {
        out: std::io::stdout().lock(),
        json: cli.json,
    };
    // The work runs on a worker thread: the PostgreSQL store wants to be used from spawned
    // tasks (see cqrs_postgres, "Tasks and threads"); stdout's lock stays on this thread.
    let (sender, mut lines) = tokio::sync::mpsc::unbounded_channel::<Vec<u8>>();
    let work = tokio::spawn(async move {
        let mut output = Output {
            out: ChannelWriter(sender),
            json: cli.json,
        };
        command::run(cli.command, &sources, &mut output).await
    });
    while let Some(line) = lines.recv().await {
        output.out.write_all(&line)?;
        output.out.flush()?;
    }
    work.await
        .map_err(|error| AdminError::Task(error.to_string()))?
}

/// Hands what a command writes to the thread that owns stdout.
struct ChannelWriter(tokio::sync::mpsc::UnboundedSender<Vec<u8>>);

impl std::io::Write for ChannelWriter {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0
            .send(bytes.to_vec())
            .map_err(|_| std::io::Error::from(std::io::ErrorKind::BrokenPipe))?;
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
