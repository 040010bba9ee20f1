//! What each subcommand does: ask the store, print the answer.

use std::collections::BTreeMap;
use std::io::Write;

use cqrs_core::admin::{CheckReport, StreamQuery};
use cqrs_core::processor::DeadLetter;
use cqrs_core::{LogEntry, Position, RecordedEvent, StreamId, UnreadableEvent, Version};
use serde::Serialize;

use crate::cli::Command;
use crate::control;
use crate::database::{self, Database, Target};
use crate::error::{AdminError, exit};
use crate::output::{Table, json_line, rfc3339};
use crate::service::Service;

/// How many rows one read asks the store for.
const PAGE: usize = 500;

/// Where the output goes, and in which form.
pub(crate) struct Output<W> {
    /// The stream printed to.
    pub(crate) out: W,
    /// JSON for scripts instead of tables.
    pub(crate) json: bool,
}

/// What the commands work on: the database, the running service, or both.
pub(crate) struct Sources {
    /// `--database`.
    pub(crate) database: Option<Target>,
    /// `--service`.
    pub(crate) service: Option<Service>,
}

/// Runs `command` against `sources`; returns the exit code of a run that did not fail.
pub(crate) async fn run<W: Write>(
    command: Command,
    sources: &Sources,
    output: &mut Output<W>,
) -> Result<u8, AdminError> {
    // The running service's controls, and its live view where one is given.
    match (&command, &sources.service) {
        (Command::Processor { name, action }, Some(service)) => {
            return control::processor(service, name, action, output).await;
        }
        (
            Command::DeadLetters {
                processor,
                action: Some(action),
            },
            Some(service),
        ) => return control::dead_letter(service, processor, action, output).await,
        (
            Command::Processor { .. }
            | Command::DeadLetters {
                action: Some(_), ..
            },
            None,
        ) => {
            return Err(AdminError::NoService);
        }
        (
            Command::DeadLetters {
                processor,
                action: None,
            },
            Some(service),
        ) => return control::dead_letters(service, processor, output).await,
        (Command::Processors, Some(service)) => {
            return control::processors(service, output).await;
        }
        _ => {}
    }
    let target = sources.database.as_ref().ok_or(AdminError::NoDatabase)?;
    if let Command::Migrate { yes } = command {
        return migrate(target, yes, output).await;
    }
    // Arguments are checked before the database is opened: a usage error is said as such.
    if let Command::Stream { id, .. } = &command {
        stream_id(id)?;
    }
    let database = Database::open(target, false).await?;
    let code = match command {
        Command::Streams {
            category,
            after,
            limit,
        } => streams(&database, category, after, limit, output).await?,
        Command::Stream { id, payloads } => stream(&database, &id, payloads, output).await?,
        Command::Tail {
            after,
            follow,
            category,
            event_type,
            payloads,
        } => {
            let filter = Filter {
                category,
                event_type,
                payloads,
            };
            tail(&database, Position(after), follow, &filter, output).await?
        }
        Command::Processors => processors(&database, output).await?,
        Command::Check { limit } => check(&database, limit, output).await?,
        Command::DeadLetters { processor, .. } => {
            dead_letters(&database, &processor, output).await?
        }
        Command::Migrate { .. } => exit::OK,
        // Answered by the service above.
        Command::Processor { .. } => return Err(AdminError::NoService),
    };
    database.close().await?;
    Ok(code)
}

#[derive(Serialize)]
struct StreamLine<'a> {
    stream: &'a str,
    version: Version,
    events: u64,
    last_position: Option<Position>,
}

async fn streams<W: Write>(
    database: &Database,
    category: Option<String>,
    after: Option<String>,
    limit: Option<usize>,
    output: &mut Output<W>,
) -> Result<u8, AdminError> {
    let mut table = Table::new(&["STREAM", "VERSION", "EVENTS", "LAST POSITION"]);
    let mut query = StreamQuery {
        category,
        after,
        limit: limit.unwrap_or(PAGE).min(PAGE),
    };
    let mut left = limit.unwrap_or(usize::MAX);
    while left > 0 {
        query.limit = query.limit.min(left);
        let page = database.admin().streams(&query).await?;
        for summary in &page {
            if output.json {
                json_line(
                    &mut output.out,
                    &StreamLine {
                        stream: &summary.stream,
                        version: summary.version,
                        events: summary.events,
                        last_position: summary.last_position,
                    },
                )?;
            } else {
                table.row(vec![
                    summary.stream.clone(),
                    summary.version.to_string(),
                    summary.events.to_string(),
                    summary
                        .last_position
                        .map_or_else(|| "-".to_owned(), |position| position.to_string()),
                ]);
            }
        }
        left = left.saturating_sub(page.len());
        match page.last() {
            Some(last) if page.len() == query.limit => query.after = Some(last.stream.clone()),
            _ => break,
        }
    }
    if !output.json {
        table.print(&mut output.out)?;
    }
    Ok(exit::OK)
}

/// One event, as printed.
#[derive(Serialize)]
struct EventLine<'a> {
    position: Position,
    stream: &'a str,
    version: Version,
    event_type: &'a str,
    schema_version: u32,
    event_id: String,
    occurred_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    correlation_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    causation_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    command_id: Option<&'a str>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    headers: &'a BTreeMap<String, String>,
    /// Only with `--payloads`: the payload as JSON, or as text when it is not JSON.
    #[serde(skip_serializing_if = "Option::is_none")]
    payload: Option<serde_json::Value>,
}

impl<'a> EventLine<'a> {
    fn of(event: &'a RecordedEvent, payloads: bool) -> Self {
        let metadata = &event.metadata;
        EventLine {
            position: event.position,
            stream: event.stream.as_str(),
            version: event.version,
            event_type: &event.event_type,
            schema_version: event.schema_version,
            event_id: event.event_id.to_string(),
            occurred_at: rfc3339(metadata.timestamp),
            correlation_id: metadata.correlation_id.map(|id| id.to_string()),
            causation_id: metadata.causation_id.map(|id| id.to_string()),
            command_id: metadata.command_id.as_ref().map(|id| id.as_str()),
            headers: &metadata.headers,
            payload: payloads.then(|| payload(event)),
        }
    }

    fn cells(&self) -> Vec<String> {
        let mut cells = vec![
            self.position.to_string(),
            self.stream.to_owned(),
            self.version.to_string(),
            self.event_type.to_owned(),
            self.occurred_at.clone(),
        ];
        if let Some(payload) = &self.payload {
            cells.push(payload.to_string());
        }
        cells
    }
}

/// The payload as JSON, whatever its codec (a MessagePack payload is shown as the JSON it
/// reads as), or as text when it is neither.
fn payload(event: &RecordedEvent) -> serde_json::Value {
    let bytes = event.payload.as_bytes();
    cqrs_core::codec::to_json(bytes)
        .unwrap_or_else(|_| serde_json::Value::String(String::from_utf8_lossy(bytes).into_owned()))
}

fn stream_id(id: &str) -> Result<StreamId, AdminError> {
    StreamId::new(id)
        .map_err(|error| AdminError::Usage(format!("`{id}` is not a stream id: {error}")))
}

const EVENT_HEADER: [&str; 5] = ["POSITION", "STREAM", "VERSION", "TYPE", "OCCURRED AT"];

fn event_table(payloads: bool) -> Table {
    let mut header = EVENT_HEADER.to_vec();
    if payloads {
        header.push("PAYLOAD");
    }
    Table::new(&header)
}

async fn stream<W: Write>(
    database: &Database,
    id: &str,
    payloads: bool,
    output: &mut Output<W>,
) -> Result<u8, AdminError> {
    let stream = stream_id(id)?;
    let mut table = event_table(payloads);
    let mut from = Version(1);
    loop {
        let events = database.events().read_stream(&stream, from, PAGE).await?;
        for event in &events {
            let line = EventLine::of(event, payloads);
            if output.json {
                json_line(&mut output.out, &line)?;
            } else {
                table.row(line.cells());
            }
        }
        match events.last() {
            Some(last) if events.len() == PAGE => from = last.version.next(),
            _ => break,
        }
    }
    if !output.json {
        table.print(&mut output.out)?;
    }
    Ok(exit::OK)
}

/// Which events `tail` prints.
struct Filter {
    category: Option<String>,
    event_type: Option<String>,
    payloads: bool,
}

/// A row of the log that cannot be read as an event, as printed.
#[derive(Serialize)]
struct UnreadableLine<'a> {
    position: Position,
    stream: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    version: Option<Version>,
    #[serde(skip_serializing_if = "Option::is_none")]
    event_type: Option<&'a str>,
    unreadable: &'a str,
}

impl<'a> UnreadableLine<'a> {
    fn of(row: &'a UnreadableEvent) -> Self {
        UnreadableLine {
            position: row.position,
            stream: &row.stream,
            version: row.version,
            event_type: row.event_type.as_deref(),
            unreadable: &row.reason,
        }
    }
}

async fn tail<W: Write>(
    database: &Database,
    mut after: Position,
    follow: bool,
    filter: &Filter,
    output: &mut Output<W>,
) -> Result<u8, AdminError> {
    // Installed before anything is read, so that Ctrl-C from now on stops the loop below
    // instead of killing the process half way through a line.
    let mut stop = if follow { Some(Stop::new()?) } else { None };
    let aggregates: Vec<&str> = filter.category.iter().map(String::as_str).collect();
    if !output.json {
        let mut header: Vec<String> = EVENT_HEADER.iter().map(|name| (*name).to_owned()).collect();
        if filter.payloads {
            header.push("PAYLOAD".to_owned());
        }
        tail_row(&mut output.out, &header)?;
    }
    loop {
        let batch = database.events().read_log(after, PAGE, &aggregates).await?;
        for entry in &batch.entries {
            print_entry(entry, filter, output)?;
        }
        if let Some(last) = batch.last {
            after = last;
            continue;
        }
        let Some(stop) = stop.as_mut() else {
            break;
        };
        tokio::select! {
            waited = database.events().wait_for_events(after) => { waited?; }
            () = stop.signalled() => break,
        }
    }
    Ok(exit::OK)
}

fn print_entry<W: Write>(
    entry: &LogEntry,
    filter: &Filter,
    output: &mut Output<W>,
) -> Result<(), AdminError> {
    match entry {
        LogEntry::Event(event) => {
            if filter
                .event_type
                .as_deref()
                .is_some_and(|wanted| wanted != event.event_type)
            {
                return Ok(());
            }
            let line = EventLine::of(event, filter.payloads);
            if output.json {
                json_line(&mut output.out, &line)?;
            } else {
                tail_row(&mut output.out, &line.cells())?;
            }
        }
        LogEntry::Unreadable(row) => {
            if filter.event_type.is_some() {
                return Ok(());
            }
            if output.json {
                json_line(&mut output.out, &UnreadableLine::of(row))?;
            } else {
                writeln!(
                    output.out,
                    "{:<8}  {:<24}  unreadable: {}",
                    row.position, row.stream, row.reason
                )?;
                output.out.flush()?;
            }
        }
    }
    Ok(())
}

/// One row of `tail`'s table. Rows go out as they come, so the columns have fixed widths.
fn tail_row(out: &mut impl Write, cells: &[String]) -> std::io::Result<()> {
    let widths = [8, 24, 7, 24];
    let mut line = String::new();
    for (cell, width) in cells.iter().zip(widths) {
        line.push_str(&format!("{cell:<width$}  "));
    }
    line.push_str(&cells.get(widths.len()..).unwrap_or_default().join("  "));
    writeln!(out, "{}", line.trim_end())?;
    out.flush()
}

/// The signals that stop `tail --follow` (and the wait for a rebuild): Ctrl-C (SIGINT) and
/// SIGTERM.
pub(crate) struct Stop {
    #[cfg(unix)]
    interrupt: tokio::signal::unix::Signal,
    #[cfg(unix)]
    terminate: tokio::signal::unix::Signal,
}

impl Stop {
    pub(crate) fn new() -> Result<Self, AdminError> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            Ok(Stop {
                interrupt: signal(SignalKind::interrupt())?,
                terminate: signal(SignalKind::terminate())?,
            })
        }
        #[cfg(not(unix))]
        {
            Ok(Stop {})
        }
    }

    pub(crate) async fn signalled(&mut self) {
        #[cfg(unix)]
        {
            tokio::select! {
                _ = self.interrupt.recv() => {}
                _ = self.terminate.recv() => {}
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

#[derive(Serialize)]
struct ProcessorLine<'a> {
    name: &'a str,
    checkpoint: Position,
    /// How many positions the head is ahead of the checkpoint.
    behind: u64,
    dead_letters: u64,
}

async fn processors<W: Write>(
    database: &Database,
    output: &mut Output<W>,
) -> Result<u8, AdminError> {
    let head = database.events().head().await?;
    let processors = database.admin().processors().await?;
    let mut table = Table::new(&["NAME", "CHECKPOINT", "BEHIND", "DEAD LETTERS"]);
    for processor in &processors {
        let line = ProcessorLine {
            name: &processor.name,
            checkpoint: processor.checkpoint,
            behind: head.0.saturating_sub(processor.checkpoint.0),
            dead_letters: processor.dead_letters,
        };
        if output.json {
            json_line(&mut output.out, &line)?;
        } else {
            table.row(vec![
                line.name.to_owned(),
                line.checkpoint.to_string(),
                line.behind.to_string(),
                line.dead_letters.to_string(),
            ]);
        }
    }
    if !output.json {
        table.print(&mut output.out)?;
    }
    Ok(exit::OK)
}

#[derive(Serialize)]
struct CheckLine<'a> {
    clean: bool,
    #[serde(flatten)]
    report: &'a CheckReport,
}

async fn check<W: Write>(
    database: &Database,
    limit: usize,
    output: &mut Output<W>,
) -> Result<u8, AdminError> {
    let report = database.admin().check(limit).await?;
    let clean = report.is_clean();
    if output.json {
        json_line(
            &mut output.out,
            &CheckLine {
                clean,
                report: &report,
            },
        )?;
    } else {
        let out = &mut output.out;
        writeln!(
            out,
            "{} events in {} streams, head at position {}",
            report.events, report.streams, report.head
        )?;
        if clean {
            writeln!(out, "no problems found")?;
        } else {
            writeln!(out, "problems found:")?;
            for problem in report.problems() {
                writeln!(out, "  {problem}")?;
            }
            let more = [
                (report.position_holes_truncated, "holes in the positions"),
                (report.version_breaks_truncated, "breaks in stream versions"),
                (report.unnumbered_truncated, "events waiting for a position"),
            ];
            for (truncated, what) in more {
                if truncated {
                    writeln!(
                        out,
                        "  (more {what} than the {limit} listed: run with a higher --limit)"
                    )?;
                }
            }
        }
    }
    Ok(if clean { exit::OK } else { exit::PROBLEMS })
}

#[derive(Serialize)]
struct PendingMigration<'a> {
    version: u32,
    name: &'a str,
}

#[derive(Serialize)]
struct MigrateLine<'a> {
    /// The migrations the database lacked.
    pending: Vec<PendingMigration<'a>>,
    /// The numbers of those this run applied (none without `--yes`).
    applied: Vec<u32>,
}

async fn migrate<W: Write>(
    target: &Target,
    yes: bool,
    output: &mut Output<W>,
) -> Result<u8, AdminError> {
    // Without `--yes` a SQLite file that does not exist is not made: it lacks everything.
    let (database, states) = if !yes && database::is_missing_file(target) {
        (None, database::sqlite_migrations_of_a_new_file())
    } else {
        let database = Database::open(target, yes).await?;
        let states = database.admin().migrations().await?;
        (Some(database), states)
    };
    let pending: Vec<PendingMigration<'_>> = states
        .iter()
        .filter(|state| !state.applied)
        .map(|state| PendingMigration {
            version: state.version,
            name: &state.name,
        })
        .collect();
    let applied = match &database {
        Some(database) if yes && !pending.is_empty() => database.migrate().await?,
        _ => Vec::new(),
    };
    if output.json {
        json_line(&mut output.out, &MigrateLine { pending, applied })?;
    } else {
        let out = &mut output.out;
        if pending.is_empty() {
            writeln!(out, "nothing to do: every migration is applied")?;
        } else if yes {
            writeln!(out, "applied {} migration(s):", applied.len())?;
            for migration in pending.iter().filter(|m| applied.contains(&m.version)) {
                writeln!(out, "  {} {}", migration.version, migration.name)?;
            }
        } else {
            writeln!(out, "the database lacks {} migration(s):", pending.len())?;
            for migration in &pending {
                writeln!(out, "  {} {}", migration.version, migration.name)?;
            }
            writeln!(
                out,
                "nothing was changed: run again with --yes to apply them"
            )?;
        }
    }
    if let Some(database) = database {
        database.close().await?;
    }
    Ok(exit::OK)
}

#[derive(Serialize)]
struct DeadLetterLine<'a> {
    id: &'a str,
    processor: &'a str,
    kind: &'static str,
    position: Option<Position>,
    stream: Option<&'a str>,
    version: Option<Version>,
    event_type: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    subject: Option<&'a str>,
    attempts: u32,
    error: &'a str,
    at: String,
}

impl<'a> DeadLetterLine<'a> {
    fn of(letter: &'a DeadLetter) -> Self {
        let failure = &letter.failure;
        let event = failure.event.as_ref();
        DeadLetterLine {
            id: &letter.id,
            processor: &letter.processor,
            kind: failure.kind.as_str(),
            position: event.map(|event| event.position),
            stream: event.map(|event| event.stream.as_str()),
            version: event.and_then(|event| event.version),
            event_type: event.and_then(|event| event.event_type.as_deref()),
            subject: failure.subject.as_deref(),
            attempts: failure.attempts,
            error: &failure.error,
            at: rfc3339(failure.at),
        }
    }
}

async fn dead_letters<W: Write>(
    database: &Database,
    processor: &str,
    output: &mut Output<W>,
) -> Result<u8, AdminError> {
    let letters = database.processors().dead_letters(processor).await?;
    print_dead_letters(&letters, output)?;
    Ok(exit::OK)
}

/// Prints `letters`, one JSON line each or as a table.
pub(crate) fn print_dead_letters<W: Write>(
    letters: &[DeadLetter],
    output: &mut Output<W>,
) -> Result<(), AdminError> {
    let mut table = Table::new(&["ID", "STREAM", "VERSION", "TYPE", "ATTEMPTS", "AT", "ERROR"]);
    for letter in letters {
        let line = DeadLetterLine::of(letter);
        if output.json {
            json_line(&mut output.out, &line)?;
        } else {
            let or_dash = |value: Option<String>| value.unwrap_or_else(|| "-".to_owned());
            table.row(vec![
                line.id.to_owned(),
                or_dash(
                    line.stream
                        .map(str::to_owned)
                        .or(line.subject.map(str::to_owned)),
                ),
                or_dash(line.version.map(|version| version.to_string())),
                or_dash(line.event_type.map(str::to_owned)),
                line.attempts.to_string(),
                line.at.clone(),
                line.error.to_owned(),
            ]);
        }
    }
    if !output.json {
        table.print(&mut output.out)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use cqrs_core::event::Metadata;
    use cqrs_core::{EventId, Payload};

    use super::*;

    fn recorded(payload: &[u8]) -> RecordedEvent {
        RecordedEvent {
            stream: StreamId::new("gauge-1").expect("valid stream id"),
            version: Version(1),
            position: Position(1),
            event_id: EventId::new(),
            event_type: "Read".into(),
            schema_version: 1,
            payload: Payload::from(payload),
            metadata: Metadata::default(),
        }
    }

    #[test]
    fn payloads_show_as_json_whatever_their_codec() {
        assert_eq!(
            payload(&recorded(br#"{"kwh":7}"#)),
            serde_json::json!({ "kwh": 7 })
        );
        // The MessagePack marker, then the map {"kwh": 7}: fixmap of one, fixstr of three, 7.
        let message_pack = [0xC1, 0x81, 0xA3, b'k', b'w', b'h', 0x07];
        assert_eq!(
            payload(&recorded(&message_pack)),
            serde_json::json!({ "kwh": 7 })
        );
        // Neither: shown as text rather than dropped.
        assert_eq!(
            payload(&recorded(b"not json")),
            serde_json::Value::String("not json".to_owned())
        );
    }
}
