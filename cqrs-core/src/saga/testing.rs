//! Given / when / then for sagas: given these past inputs, when this event (or deadline, or
//! refusal) arrives, then expect these commands (or none) and these deadlines.
//!
//! The saga runs without a store or a bus, at a fixed time ([`SagaGiven::at`] changes it), so a
//! deadline is expected as "due this long after now". The module docs of [`saga`](mod@crate::saga) show one
//! that compiles and runs. A failed expectation panics with a line diff, as test assertions do.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::time::{Duration, SystemTime};

use crate::aggregate::CommandHandler;
use crate::event::{DomainEvent, EventId, Metadata, Position, RecordedEvent, StreamId, Version};
use crate::projection::EventContext;
use crate::saga::context::{DeadlineChange, HandlerError, Rejection, SagaCommand, SagaContext};
use crate::saga::{Route, Saga};
use crate::testing::fail;

/// The time saga tests run at unless [`SagaGiven::at`] says otherwise: 2001-09-09T01:46:40Z.
pub const TEST_NOW: Duration = Duration::from_secs(1_000_000_000);

/// Starts a given/when/then test on a saga type. Implemented for every saga.
pub trait SagaTest: Saga {
    /// The saga instance after handling these past inputs (their commands are not checked).
    #[track_caller]
    fn given<I: Into<Self::Input>>(inputs: impl IntoIterator<Item = I>) -> SagaGiven<Self> {
        SagaGiven::new().and(inputs)
    }

    /// The saga instance in this state, with no deadlines.
    fn given_state(state: Self) -> SagaGiven<Self> {
        SagaGiven {
            state,
            now: SystemTime::UNIX_EPOCH + TEST_NOW,
            deadlines: BTreeMap::new(),
            completed: false,
            recorded: 0,
        }
    }
}

impl<G: Saga> SagaTest for G {}

/// A saga instance built from past inputs, waiting for the next one.
#[derive(Debug)]
pub struct SagaGiven<G: Saga> {
    state: G,
    now: SystemTime,
    deadlines: BTreeMap<String, SystemTime>,
    completed: bool,
    /// Events recorded by [`SagaGiven::when_in`] so far: their versions and positions.
    recorded: u64,
}

impl<G: Saga> SagaGiven<G> {
    fn new() -> Self {
        G::given_state(G::default())
    }

    /// Handles more past inputs.
    #[track_caller]
    pub fn and<I: Into<G::Input>>(mut self, inputs: impl IntoIterator<Item = I>) -> Self {
        for input in inputs {
            let mut context = SagaContext::new(self.now);
            if let Err(error) = self.state.handle(input.into(), &mut context) {
                panic!("a given input failed: {error}");
            }
            self.record(&mut context);
        }
        self
    }

    /// Runs the rest of the test at `now`.
    #[must_use]
    pub fn at(mut self, now: SystemTime) -> Self {
        self.now = now;
        self
    }

    /// The state the past inputs built.
    pub fn state(&self) -> &G {
        &self.state
    }

    /// When `input` arrives.
    pub fn when(mut self, input: impl Into<G::Input>) -> SagaThen<G> {
        let mut context = SagaContext::new(self.now);
        let result = self.state.handle(input.into(), &mut context);
        self.then(context, result)
    }

    /// When `event`, recorded in `stream` (e.g. `"order-7"`), arrives: the handler's
    /// [`SagaContext::event`] tells that stream, its aggregate id and the event's metadata, as
    /// the runner's would. The route is checked too: the event must go to an instance
    /// ([`Saga::route`] does not say [`Route::Ignore`]), or the test fails.
    ///
    /// Panics when `stream` is not a stream id or the event does not encode: the test itself is
    /// wrong then.
    #[track_caller]
    pub fn when_in<E>(mut self, stream: &str, event: E) -> SagaThen<G>
    where
        E: DomainEvent + Into<G::Input>,
    {
        let stream = match StreamId::new(stream) {
            Ok(stream) => stream,
            Err(error) => panic!("`{stream}` is not a stream id: {error}"),
        };
        let payload = match event.encode() {
            Ok(payload) => payload,
            Err(error) => panic!("the event does not encode: {error}"),
        };
        self.recorded += 1;
        let recorded = RecordedEvent {
            stream,
            version: Version(self.recorded),
            position: Position(self.recorded),
            event_id: EventId::new(),
            event_type: event.event_type().into(),
            schema_version: event.schema_version(),
            payload,
            metadata: Metadata::default(),
        };
        let input = event.into();
        if G::route(&input, &EventContext::new(&recorded)) == Route::Ignore {
            panic!(
                "the saga ignores this event in `{}`: its route says `Route::Ignore`",
                recorded.stream
            );
        }
        let mut context = SagaContext::new(self.now).handling(recorded);
        let result = self.state.handle(input, &mut context);
        self.then(context, result)
    }

    /// When the deadline `name` fires (whether or not it was scheduled: a test may ask).
    pub fn when_deadline(mut self, name: &str) -> SagaThen<G> {
        let mut context = SagaContext::new(self.now);
        self.deadlines.remove(name);
        let result = self.state.on_deadline(name, &mut context);
        self.then(context, result)
    }

    /// When the aggregate `id` of type `A` refuses `command` with `error`.
    pub fn when_rejected<A>(
        mut self,
        id: impl std::fmt::Display,
        command: A::Command,
        error: A::Error,
    ) -> SagaThen<G>
    where
        A: CommandHandler,
        A::Command: Debug + PartialEq,
    {
        let mut context = SagaContext::new(self.now);
        let rejection = Rejection::new::<A>(SagaCommand::to::<A>(id, command), error);
        let result = self.state.on_rejected(rejection, &mut context);
        self.then(context, result)
    }

    fn then(mut self, mut context: SagaContext, result: Result<(), HandlerError>) -> SagaThen<G> {
        let commands = std::mem::take(&mut context.commands);
        self.record(&mut context);
        SagaThen {
            result,
            commands,
            given: self,
        }
    }

    fn record(&mut self, context: &mut SagaContext) {
        for change in context.deadlines.drain(..) {
            match change {
                DeadlineChange::Schedule { name, due } => {
                    self.deadlines.insert(name, due);
                }
                DeadlineChange::Cancel { name } => {
                    self.deadlines.remove(&name);
                }
            }
        }
        if context.completed {
            self.completed = true;
            self.deadlines.clear();
        }
    }
}

/// What the saga did with the input, waiting for expectations. Expectations chain.
#[derive(Debug)]
pub struct SagaThen<G: Saga> {
    result: Result<(), HandlerError>,
    commands: Vec<SagaCommand>,
    given: SagaGiven<G>,
}

impl<G: Saga> SagaThen<G> {
    /// Asserts that the saga sent exactly these commands, in this order.
    #[track_caller]
    pub fn then_expect_commands(self, expected: impl IntoIterator<Item = SagaCommand>) -> Self {
        let expected: Vec<SagaCommand> = expected.into_iter().collect();
        self.expect_ok();
        if self.commands != expected {
            fail("commands differ", &expected, &self.commands);
        }
        self
    }

    /// Asserts that the saga sent no command.
    #[track_caller]
    pub fn then_expect_no_commands(self) -> Self {
        self.then_expect_commands([])
    }

    /// Asserts that the deadline `name` is scheduled `after` the test's current time.
    #[track_caller]
    pub fn then_expect_deadline(self, name: &str, after: Duration) -> Self {
        self.expect_ok();
        let expected = Some(self.given.now + after);
        let actual = self.given.deadlines.get(name).copied();
        if actual != expected {
            fail(
                &format!("deadline `{name}` differs"),
                &expected,
                &self.given.deadlines,
            );
        }
        self
    }

    /// Asserts that no deadline `name` is scheduled.
    #[track_caller]
    pub fn then_expect_no_deadline(self, name: &str) -> Self {
        self.expect_ok();
        if self.given.deadlines.contains_key(name) {
            fail(
                &format!("expected no deadline `{name}`"),
                &Option::<SystemTime>::None,
                &self.given.deadlines,
            );
        }
        self
    }

    /// Asserts that the saga instance completed.
    #[track_caller]
    pub fn then_expect_completed(self) -> Self {
        self.expect_ok();
        if !self.given.completed {
            panic!("expected the saga instance to complete, it did not");
        }
        self
    }

    /// Asserts that the handler failed with an error whose message contains `part`.
    #[track_caller]
    pub fn then_expect_failure(self, part: &str) -> Self {
        match &self.result {
            Err(error) if error.to_string().contains(part) => {}
            Err(error) => fail("failure messages differ", &part, &error.to_string()),
            Ok(()) => fail(
                "expected a failure, the handler succeeded",
                &part,
                &self.commands,
            ),
        }
        self
    }

    /// The state after the input, for assertions of your own.
    pub fn state(&self) -> &G {
        &self.given.state
    }

    /// The commands sent.
    pub fn commands(&self) -> &[SagaCommand] {
        &self.commands
    }

    /// Goes on: the state after this input, waiting for the next one.
    pub fn and_then(self) -> SagaGiven<G> {
        self.given
    }

    #[track_caller]
    fn expect_ok(&self) {
        if let Err(error) = &self.result {
            panic!("the saga handler failed: {error}");
        }
    }
}
