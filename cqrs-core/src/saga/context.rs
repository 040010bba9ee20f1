//! What a saga handler produces: commands addressed to aggregates, deadlines, completion.

use std::any::Any;
use std::fmt;
use std::time::{Duration, SystemTime};

use crate::aggregate::CommandHandler;
use crate::event::RecordedEvent;
use crate::projection::EventContext;
use crate::repository::CommandMetadata;
use crate::saga::bus::{BoxFuture, CommandBus};

/// An error a saga handler returns. The runner's [`FailurePolicy`](crate::processor::FailurePolicy)
/// decides what happens next.
pub type HandlerError = Box<dyn std::error::Error + Send + Sync>;

/// One command a saga emits, addressed to the aggregate `target` of one aggregate type.
///
/// The command keeps its type behind the scenes: [`command`](SagaCommand::command) gives it back
/// to code that names the aggregate type, and two `SagaCommand`s are equal when they address the
/// same aggregate with equal commands (what saga tests compare).
pub struct SagaCommand {
    aggregate: &'static str,
    target: String,
    command: Box<dyn Any + Send>,
    description: String,
    equals: fn(&dyn Any, &dyn Any) -> bool,
    dispatch: DispatchFn,
}

/// Sends a type-erased command of one aggregate type through the bus.
type DispatchFn = for<'a> fn(
    &'a CommandBus,
    String,
    &'a (dyn Any + Send),
    CommandMetadata,
) -> BoxFuture<'a, Result<Delivery, DispatchFailure>>;

/// How one dispatched command ended, when it did not fail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Delivery {
    /// Whether the target had applied the command id before, so nothing was written now.
    pub(crate) deduplicated: bool,
}

/// Why a dispatched command did not succeed.
pub(crate) enum DispatchFailure {
    /// The aggregate refused it: an input for the saga.
    Rejected(Box<dyn Any + Send>, String),
    /// The target's store failed or timed out: not the event's fault, the runner reconnects.
    Unavailable(crate::StoreError),
    /// Anything else (an invalid id, conflicts that never settled, no repository): a failure
    /// under the policy.
    Failed(HandlerError),
}

impl SagaCommand {
    /// The command `command` for the aggregate `id` of type `A`.
    pub fn to<A>(id: impl fmt::Display, command: A::Command) -> Self
    where
        A: CommandHandler,
        A::Command: fmt::Debug + PartialEq,
    {
        SagaCommand {
            aggregate: A::NAME,
            target: id.to_string(),
            description: format!("{command:?}"),
            command: Box::new(command),
            equals: equals::<A>,
            dispatch: dispatch::<A>,
        }
    }

    /// The name of the target's aggregate type.
    pub fn aggregate(&self) -> &'static str {
        self.aggregate
    }

    /// The id of the target aggregate.
    pub fn target(&self) -> &str {
        &self.target
    }

    /// The command, when it is addressed to an aggregate of type `A`.
    pub fn command<A: CommandHandler>(&self) -> Option<&A::Command> {
        self.command.downcast_ref::<A::Command>()
    }

    pub(crate) fn dispatch<'a>(
        &'a self,
        bus: &'a CommandBus,
        metadata: CommandMetadata,
    ) -> BoxFuture<'a, Result<Delivery, DispatchFailure>> {
        (self.dispatch)(bus, self.target.clone(), &*self.command, metadata)
    }
}

fn equals<A: CommandHandler>(left: &dyn Any, right: &dyn Any) -> bool
where
    A::Command: PartialEq,
{
    match (
        left.downcast_ref::<A::Command>(),
        right.downcast_ref::<A::Command>(),
    ) {
        (Some(left), Some(right)) => left == right,
        _ => false,
    }
}

fn dispatch<'a, A: CommandHandler>(
    bus: &'a CommandBus,
    target: String,
    command: &'a (dyn Any + Send),
    metadata: CommandMetadata,
) -> BoxFuture<'a, Result<Delivery, DispatchFailure>> {
    // Cloned before the future: the command is `Send` but need not be `Sync`.
    let command = command.downcast_ref::<A::Command>().cloned();
    Box::pin(async move {
        let Some(command) = command else {
            return Err(DispatchFailure::Failed(
                format!(
                    "a command for aggregate `{}` does not have its command type",
                    A::NAME
                )
                .into(),
            ));
        };
        match bus.execute::<A>(target, command, metadata).await {
            Ok(outcome) => Ok(Delivery {
                deduplicated: outcome.deduplicated,
            }),
            Err(error) => match error {
                crate::saga::DispatchError::Execute(crate::ExecuteError::Domain(domain)) => {
                    let message = domain.to_string();
                    Err(DispatchFailure::Rejected(Box::new(domain), message))
                }
                crate::saga::DispatchError::Execute(crate::ExecuteError::Store(
                    store @ (crate::StoreError::Backend(_) | crate::StoreError::Timeout { .. }),
                )) => Err(DispatchFailure::Unavailable(store)),
                other => Err(DispatchFailure::Failed(Box::new(other))),
            },
        }
    })
}

impl PartialEq for SagaCommand {
    fn eq(&self, other: &Self) -> bool {
        self.aggregate == other.aggregate
            && self.target == other.target
            && (self.equals)(&*self.command, &*other.command)
    }
}

impl fmt::Debug for SagaCommand {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Reads as `show-42 <- ReserveSeats { .. }` in a test's diff.
        write!(
            f,
            "{}-{} <- {}",
            self.aggregate, self.target, self.description
        )
    }
}

/// A command the target aggregate refused with a domain error, handed back to the saga that sent
/// it ([`Saga::on_rejected`](crate::saga::Saga::on_rejected)) so it can compensate.
pub struct Rejection {
    command: SagaCommand,
    error: Box<dyn Any + Send>,
    message: String,
}

impl Rejection {
    /// A rejection of `command` with `error`, the domain error of `A`: what saga tests feed in.
    pub fn new<A>(command: SagaCommand, error: A::Error) -> Self
    where
        A: CommandHandler,
    {
        let message = error.to_string();
        Rejection {
            command,
            error: Box::new(error),
            message,
        }
    }

    pub(crate) fn from_parts(
        command: SagaCommand,
        error: Box<dyn Any + Send>,
        message: String,
    ) -> Self {
        Rejection {
            command,
            error,
            message,
        }
    }

    /// The refused command.
    pub fn command(&self) -> &SagaCommand {
        &self.command
    }

    /// The domain error, when the refused command was addressed to an aggregate of type `A`.
    pub fn error<A: CommandHandler>(&self) -> Option<&A::Error> {
        self.error.downcast_ref::<A::Error>()
    }

    /// The refused command and its error, when they were addressed to an aggregate of type `A`.
    pub fn of<A: CommandHandler>(&self) -> Option<(&str, &A::Command, &A::Error)> {
        Some((
            self.command.target(),
            self.command.command::<A>()?,
            self.error::<A>()?,
        ))
    }

    /// The domain error's message.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Debug for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Rejection")
            .field("command", &self.command)
            .field("error", &self.message)
            .finish()
    }
}

/// A change to a saga instance's deadlines, made by a handler.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum DeadlineChange {
    Schedule { name: String, due: SystemTime },
    Cancel { name: String },
}

/// What a saga handler works with: the current time, the event it handles (stream, aggregate
/// id, version, position, metadata), and what it wants done.
///
/// Commands are dispatched in the order they were sent, after the handler returns, each with a
/// command id derived from the saga instance and the triggering event.
#[derive(Debug)]
pub struct SagaContext {
    now: SystemTime,
    event: Option<RecordedEvent>,
    pub(crate) commands: Vec<SagaCommand>,
    pub(crate) deadlines: Vec<DeadlineChange>,
    pub(crate) completed: bool,
}

impl SagaContext {
    /// A context at `now` (from the runner's [`Clock`](crate::saga::Clock)).
    pub(crate) fn new(now: SystemTime) -> Self {
        SagaContext {
            now,
            event: None,
            commands: Vec::new(),
            deadlines: Vec::new(),
            completed: false,
        }
    }

    /// The same context, handling `event`.
    pub(crate) fn handling(mut self, event: RecordedEvent) -> Self {
        self.event = Some(event);
        self
    }

    /// Where the event being handled was recorded: its stream, aggregate id, version, position
    /// and metadata. `None` in a deadline's or a refusal's handler, and in a saga test that gave
    /// no stream.
    pub fn event(&self) -> Option<EventContext<'_>> {
        self.event.as_ref().map(EventContext::new)
    }

    /// The current time, from the runner's clock. Use it instead of the system time so that tests
    /// control it.
    pub fn now(&self) -> SystemTime {
        self.now
    }

    /// Sends `command` to the aggregate `id` of type `A`.
    pub fn send<A>(&mut self, id: impl fmt::Display, command: A::Command)
    where
        A: CommandHandler,
        A::Command: fmt::Debug + PartialEq,
    {
        self.commands.push(SagaCommand::to::<A>(id, command));
    }

    /// Asks to be woken by [`Saga::on_deadline`](crate::saga::Saga::on_deadline) with `name`
    /// once `after` has passed. Scheduling a name again replaces the earlier deadline.
    pub fn schedule(&mut self, name: impl Into<String>, after: Duration) {
        let due = self.now + after;
        self.schedule_at(name, due);
    }

    /// Asks to be woken with `name` at `due`. Scheduling a name again replaces the earlier one.
    pub fn schedule_at(&mut self, name: impl Into<String>, due: SystemTime) {
        self.deadlines.push(DeadlineChange::Schedule {
            name: name.into(),
            due,
        });
    }

    /// Cancels the deadline `name`, if it is scheduled.
    pub fn cancel(&mut self, name: impl Into<String>) {
        self.deadlines
            .push(DeadlineChange::Cancel { name: name.into() });
    }

    /// Ends this saga instance after this handler: later events routed to it are ignored and its
    /// deadlines are dropped.
    pub fn complete(&mut self) {
        self.completed = true;
    }

    /// The commands sent so far.
    pub fn commands(&self) -> &[SagaCommand] {
        &self.commands
    }
}
