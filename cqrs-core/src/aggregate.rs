//! Aggregates: state rebuilt from events, and the decisions that produce new events.

use std::future::Future;

use crate::event::DomainEvent;

/// An aggregate: the consistency boundary whose events live in one stream.
///
/// Implement it with `#[derive(Aggregate)]` and `#[aggregate(name = "...", event = ..., error = ...)]`.
/// The initial state is [`Default::default`]; [`Aggregate::apply`] folds each event into the
/// state. Apply is the only place state changes: it never fails and never decides.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not an aggregate",
    label = "this type does not implement `Aggregate`",
    note = "add `#[derive(Aggregate)]` and `#[aggregate(name = \"...\", event = ..., error = ...)]` to `{Self}`"
)]
pub trait Aggregate: Default + Send + Sync + 'static {
    /// The aggregate's name, the prefix of its stream ids: `{NAME}-{id}`.
    const NAME: &'static str;

    /// The schema version of this aggregate's snapshots. Raise it when the state's shape changes;
    /// snapshots of other versions are then ignored and the state is rebuilt from events.
    const SNAPSHOT_VERSION: u32 = 1;

    /// The events this aggregate records.
    type Event: DomainEvent;

    /// The domain error its command handlers return.
    type Error: std::error::Error + Send + Sync + 'static;

    /// Folds one event into the state.
    fn apply(&mut self, event: Self::Event);

    /// A copy of the state, when the aggregate can make one: `#[derive(Aggregate)]` returns a
    /// clone for an aggregate that implements `Clone`, and `None` for one that does not.
    ///
    /// The repository applies a decision's events before it appends them (so that an `apply`
    /// that panics writes nothing). On a stream that meets conflicts it keeps a copy of the state
    /// from before, so that after a conflict it only reads the events it missed; without a copy
    /// it loads the aggregate again.
    fn fork(&self) -> Option<Self> {
        None
    }
}

/// The decision side of an aggregate: turns a command into events, or refuses it with a domain
/// error.
///
/// Implement it with `#[command_handler]` on the `impl` block that holds the handler methods.
#[diagnostic::on_unimplemented(
    message = "`{Self}` has no command handlers",
    label = "this type does not implement `CommandHandler`",
    note = "add `#[command_handler]` to the `impl {Self}` block that holds its command handler methods"
)]
pub trait CommandHandler: Aggregate {
    /// The command enum. Cloned once per attempt: a command is decided again after a conflict.
    type Command: Clone + Send + 'static;

    /// What the handlers need from outside (a price list, a clock); `()` when nothing.
    type Services: Send + Sync + 'static;

    /// The command's name in traces and logs: `#[command_handler]` returns the variant
    /// (`ReserveSeats`). The default, for a hand-written impl, is the command type's name.
    fn command_name(command: &Self::Command) -> &'static str {
        let _ = command;
        let name = std::any::type_name::<Self::Command>();
        name.rsplit("::").next().unwrap_or(name)
    }

    /// Decides what `command` means for the current state: the events to record (possibly none),
    /// or a domain error. Never changes the state.
    fn handle<'a>(
        &'a self,
        command: Self::Command,
        services: &'a Self::Services,
    ) -> impl Future<Output = Result<Vec<Self::Event>, Self::Error>> + Send + 'a;
}
