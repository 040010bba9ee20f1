//! The commands answered by a running service's admin router (`--service`): the live status of
//! its processors, their dead letters, and the controls (pause, resume, rebuild, reset, retry,
//! discard), which change nothing without `--yes`.

use std::io::Write;
use std::time::Duration;

use cqrs_core::processor::{DeadLetter, Failure};
use indicatif::{ProgressBar, ProgressStyle};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::cli::{DeadLetterAction, ProcessorAction};
use crate::command::{Output, Stop, print_dead_letters};
use crate::error::{AdminError, exit};
use crate::output::{Table, json_line};
use crate::service::{CONFIRMATION_REQUIRED, NOT_FOUND, Refusal, Service, segment};

/// How often the status is asked for while a rebuild runs.
const POLL: Duration = Duration::from_millis(250);

/// The progress bar of a rebuild: the processor and its state, the bar, events of the head.
const BAR: &str = "{msg} [{bar:30}] {pos}/{len} events ({per_sec}, {eta} left)";

/// A processor's status as the admin router's `GET /status` gives it.
#[derive(Debug, Deserialize)]
struct Status {
    name: String,
    state: State,
    leader: bool,
    checkpoint: u64,
    head: u64,
    lag: u64,
    lag_seconds: f64,
    last_error: Option<Failure>,
    dead_letters: u64,
}

/// `{"state": "live", ...}`: the other members depend on the state.
#[derive(Debug, Deserialize)]
struct State {
    state: String,
}

impl State {
    /// The state for people: `catching up` for `catching_up`.
    fn words(&self) -> String {
        self.state.replace('_', " ")
    }
}

/// `processors --service`.
pub(crate) async fn processors<W: Write>(
    service: &Service,
    output: &mut Output<W>,
) -> Result<u8, AdminError> {
    let statuses = statuses(service).await?;
    print_statuses(&statuses, output)?;
    Ok(exit::OK)
}

/// `processor NAME ...`.
pub(crate) async fn processor<W: Write>(
    service: &Service,
    name: &str,
    action: &ProcessorAction,
    output: &mut Output<W>,
) -> Result<u8, AdminError> {
    let base = format!("/processors/{}", segment(name));
    let (call, yes) = match action {
        ProcessorAction::Status => {
            let status = one_status(service, name).await?;
            print_statuses(&[status], output)?;
            return Ok(exit::OK);
        }
        ProcessorAction::Pause { yes } => (format!("{base}/pause"), *yes),
        ProcessorAction::Resume { yes } => (format!("{base}/resume"), *yes),
        ProcessorAction::Rebuild { yes, .. } => (format!("{base}/rebuild"), *yes),
        ProcessorAction::Reset { to, yes } => (format!("{base}/reset?to={to}"), *yes),
    };
    let Some(done) = control(service, name, &call, yes, output).await? else {
        return Ok(exit::OK);
    };
    match action {
        ProcessorAction::Rebuild { no_wait: false, .. } => {
            let Some(last) = wait_for_rebuild(service, name, done.status, output).await? else {
                return Ok(exit::OK);
            };
            if output.json {
                json_line(
                    &mut output.out,
                    &Finished {
                        processor: name,
                        action: "rebuild",
                        done: true,
                        status: &last.value,
                    },
                )?;
            } else {
                writeln!(
                    output.out,
                    "rebuilt `{name}`: {} at checkpoint {} of head {}",
                    last.status.state.words(),
                    last.status.checkpoint,
                    last.status.head
                )?;
            }
        }
        _ => print_done(&done, output)?,
    }
    Ok(exit::OK)
}

/// `dead-letters PROCESSOR --service`.
pub(crate) async fn dead_letters<W: Write>(
    service: &Service,
    processor: &str,
    output: &mut Output<W>,
) -> Result<u8, AdminError> {
    let path = format!("/processors/{}/dead-letters", segment(processor));
    let answer = service.get(&path).await?;
    let letters: Vec<DeadLetter> =
        serde_json::from_value(answer).map_err(|error| AdminError::ServiceAnswer {
            call: format!("GET {}{path}", service.address()),
            detail: format!("not a list of dead letters: {error}"),
        })?;
    print_dead_letters(&letters, output)?;
    Ok(exit::OK)
}

/// `dead-letters PROCESSOR retry|discard ID`.
pub(crate) async fn dead_letter<W: Write>(
    service: &Service,
    processor: &str,
    action: &DeadLetterAction,
    output: &mut Output<W>,
) -> Result<u8, AdminError> {
    let (id, verb, yes) = match action {
        DeadLetterAction::Retry { id, yes } => (id, "retry", *yes),
        DeadLetterAction::Discard { id, yes } => (id, "discard", *yes),
    };
    let call = format!(
        "/processors/{}/dead-letters/{}/{verb}",
        segment(processor),
        segment(id)
    );
    if let Some(done) = control(service, processor, &call, yes, output).await? {
        print_done(&done, output)?;
    }
    Ok(exit::OK)
}

/// The answer to a carried out control.
struct Done {
    /// The call, as the service names it (`pause`, `dead-letters/ID/retry`).
    action: String,
    /// The status it answered with, read and as sent.
    status: Read,
    /// The whole answer.
    value: Value,
}

/// A status, read and as sent (for `--json`).
struct Read {
    status: Status,
    value: Value,
}

/// What a control that was not confirmed would do.
#[derive(Serialize)]
struct Would<'a> {
    processor: &'a str,
    action: &'a str,
    done: bool,
    would: &'a str,
}

/// The end of a rebuild the tool waited for.
#[derive(Serialize)]
struct Finished<'a> {
    processor: &'a str,
    action: &'a str,
    done: bool,
    status: &'a Value,
}

/// Sends the control `call`; without `yes`, unconfirmed, and prints what it would do.
/// Returns the service's answer when it was done.
async fn control<W: Write>(
    service: &Service,
    name: &str,
    call: &str,
    yes: bool,
    output: &mut Output<W>,
) -> Result<Option<Done>, AdminError> {
    let path = if yes {
        let joint = if call.contains('?') { '&' } else { '?' };
        format!("{call}{joint}confirm=true")
    } else {
        call.to_owned()
    };
    match service.post(&path).await? {
        Ok(value) => {
            let answer = |detail: String| AdminError::ServiceAnswer {
                call: format!("POST {}{path}", service.address()),
                detail,
            };
            let action = value
                .get("action")
                .and_then(Value::as_str)
                .ok_or_else(|| answer("the answer names no action".to_owned()))?
                .to_owned();
            let status = value
                .get("status")
                .cloned()
                .ok_or_else(|| answer("the answer carries no status".to_owned()))?;
            let status = read_status(status)
                .map_err(|error| answer(format!("not a processor status: {error}")))?;
            Ok(Some(Done {
                action,
                status,
                value,
            }))
        }
        // Asked without `--yes`: the service says what it would have done.
        Err(refusal) if !yes && refusal.kind == CONFIRMATION_REQUIRED => {
            let text = |key: &str| refusal.body.get(key).and_then(Value::as_str);
            let action = text("action").unwrap_or(call);
            // A service of an older cqrs-http says it only in its `detail`.
            let effect = text("effect");
            if output.json {
                json_line(
                    &mut output.out,
                    &Would {
                        processor: name,
                        action,
                        done: false,
                        would: effect.unwrap_or(&refusal.detail),
                    },
                )?;
            } else {
                match effect {
                    Some(effect) => writeln!(output.out, "this would {effect}.")?,
                    None => writeln!(output.out, "{}", refusal.detail)?,
                }
                writeln!(
                    output.out,
                    "nothing was changed: run again with --yes to do it"
                )?;
            }
            Ok(None)
        }
        Err(refusal) => Err(AdminError::Refused(refusal)),
    }
}

fn print_done<W: Write>(done: &Done, output: &mut Output<W>) -> Result<(), AdminError> {
    if output.json {
        json_line(&mut output.out, &done.value)?;
        return Ok(());
    }
    let status = &done.status.status;
    writeln!(
        output.out,
        "{}: done. `{}` is {} at checkpoint {} of head {}, with {} dead letter(s)",
        done.action,
        status.name,
        status.state.words(),
        status.checkpoint,
        status.head,
        status.dead_letters
    )?;
    Ok(())
}

/// Shows the rebuild's progress until the processor has caught up (`Some`), or the operator
/// stopped waiting (`None`); a rebuild that stops is an error.
async fn wait_for_rebuild<W: Write>(
    service: &Service,
    name: &str,
    first: Read,
    output: &Output<W>,
) -> Result<Option<Read>, AdminError> {
    // On stderr, drawn only when it is a terminal.
    let bar = if output.json {
        ProgressBar::hidden()
    } else {
        ProgressBar::new(first.status.head)
    };
    bar.set_style(bar_style());
    let mut stop = Stop::new()?;
    let mut read = first;
    loop {
        let status = &read.status;
        bar.set_length(status.head.max(status.checkpoint));
        bar.set_position(status.checkpoint);
        bar.set_message(format!("{name} {}", status.state.words()));
        match status.state.state.as_str() {
            "live" | "catching_up" => {
                bar.finish_and_clear();
                return Ok(Some(read));
            }
            // Still replaying, or getting past a failing event or a store that came back.
            "rebuilding" | "starting" | "retrying" | "reconnecting" => {}
            _ => {
                bar.abandon();
                return Err(AdminError::RebuildStopped {
                    processor: name.to_owned(),
                    state: status.state.words(),
                    reason: status
                        .last_error
                        .as_ref()
                        .map(|failure| format!(": {}", failure.error))
                        .unwrap_or_default(),
                });
            }
        }
        tokio::select! {
            () = stop.signalled() => {
                bar.abandon();
                eprintln!(
                    "cqrs-admin: stopped waiting; the rebuild of `{name}` goes on in the service \
                     (`cqrs-admin processor {name} status` shows how far it is)"
                );
                return Ok(None);
            }
            () = tokio::time::sleep(POLL) => {}
        }
        read = one_status(service, name).await?;
    }
}

fn bar_style() -> ProgressStyle {
    ProgressStyle::with_template(BAR)
        .map(|style| style.progress_chars("=> "))
        .unwrap_or_else(|_| ProgressStyle::default_bar())
}

fn read_status(value: Value) -> Result<Read, serde_json::Error> {
    let status = Status::deserialize(&value)?;
    Ok(Read { status, value })
}

/// Every processor's status, in the service's order.
async fn statuses(service: &Service) -> Result<Vec<Read>, AdminError> {
    let answer = service.get("/status").await?;
    let not_statuses = |detail: String| AdminError::ServiceAnswer {
        call: format!("GET {}/status", service.address()),
        detail,
    };
    let Value::Array(values) = answer else {
        return Err(not_statuses("not a list of processor statuses".to_owned()));
    };
    values
        .into_iter()
        .map(|value| {
            read_status(value).map_err(|error| not_statuses(format!("not a status: {error}")))
        })
        .collect()
}

/// The status of processor `name`.
async fn one_status(service: &Service, name: &str) -> Result<Read, AdminError> {
    let statuses = statuses(service).await?;
    let names: Vec<String> = statuses
        .iter()
        .map(|read| read.status.name.clone())
        .collect();
    statuses
        .into_iter()
        .find(|read| read.status.name == name)
        .ok_or_else(|| {
            // As the service refuses a control of a processor it does not run.
            AdminError::Refused(Refusal {
                status: 404,
                kind: NOT_FOUND.to_owned(),
                title: "no such processor".to_owned(),
                detail: format!(
                    "the service runs no processor named `{name}`; it runs: {}",
                    if names.is_empty() {
                        "none".to_owned()
                    } else {
                        names.join(", ")
                    }
                ),
                body: Value::Null,
            })
        })
}

fn print_statuses<W: Write>(statuses: &[Read], output: &mut Output<W>) -> Result<(), AdminError> {
    if output.json {
        for read in statuses {
            json_line(&mut output.out, &read.value)?;
        }
        return Ok(());
    }
    let mut table = Table::new(&[
        "NAME",
        "STATE",
        "LEADER",
        "CHECKPOINT",
        "HEAD",
        "LAG",
        "LAG (S)",
        "DEAD LETTERS",
        "LAST ERROR",
    ]);
    for Read { status, .. } in statuses {
        table.row(vec![
            status.name.clone(),
            status.state.words(),
            if status.leader { "yes" } else { "no" }.to_owned(),
            status.checkpoint.to_string(),
            status.head.to_string(),
            status.lag.to_string(),
            format!("{:.1}", status.lag_seconds),
            status.dead_letters.to_string(),
            status
                .last_error
                .as_ref()
                .map_or_else(|| "-".to_owned(), |failure| failure.error.clone()),
        ]);
    }
    table.print(&mut output.out)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_progress_bar_template_is_valid() {
        assert!(ProgressStyle::with_template(BAR).is_ok());
    }

    #[test]
    fn a_status_as_the_router_sends_it_is_read() {
        let value = serde_json::json!({
            "name": "orders", "state": {"state": "retrying", "attempts": 2}, "leader": true,
            "checkpoint": 7, "head": 9, "lag": 2, "lag_seconds": 0.5,
            "oldest_unhandled": null, "checkpoint_moved": {"secs_since_epoch": 1, "nanos_since_epoch": 0},
            "last_error": null, "dead_letters": 1
        });
        let read = read_status(value.clone()).unwrap_or_else(|error| panic!("{error}"));
        assert_eq!(read.status.state.state, "retrying");
        assert_eq!((read.status.checkpoint, read.status.head), (7, 9));
        assert_eq!(read.value, value);
    }
}
