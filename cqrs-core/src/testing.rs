//! Given / when / then for aggregates: given these past events, when this command, then expect
//! these new events (or this domain error).
//!
//! `Show::given([scheduled])`, `.when(reserve_three_seats)`,
//! `.then_expect_error(ShowError::SoldOut { requested: 3, available: 2 })`: the crate-level
//! example shows one that compiles and runs.
//!
//! A failed expectation panics with a line diff of the expected and actual values, as test
//! assertions do.

use std::fmt::{self, Debug};
use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::thread::{self, Thread};

use crate::aggregate::CommandHandler;

/// Starts a given/when/then test on an aggregate type. Implemented for every aggregate.
pub trait AggregateTest: CommandHandler {
    /// The aggregate after these past events, with default services.
    fn given(events: impl IntoIterator<Item = Self::Event>) -> Given<Self>
    where
        Self::Services: Default,
    {
        Given::new(events, Self::Services::default())
    }

    /// The aggregate after these past events, with these services.
    fn given_with_services(
        services: Self::Services,
        events: impl IntoIterator<Item = Self::Event>,
    ) -> Given<Self> {
        Given::new(events, services)
    }
}

impl<A: CommandHandler> AggregateTest for A {}

/// An aggregate rebuilt from past events, waiting for a command.
pub struct Given<A: CommandHandler> {
    state: A,
    services: A::Services,
}

impl<A: CommandHandler> Given<A> {
    fn new(events: impl IntoIterator<Item = A::Event>, services: A::Services) -> Self {
        let mut state = A::default();
        for event in events {
            state.apply(event);
        }
        Given { state, services }
    }

    /// The state the past events built, for assertions on it.
    pub fn state(&self) -> &A {
        &self.state
    }

    /// Decides `command`, blocking this thread until the handler is done.
    ///
    /// Handlers that wait on a tokio timer or socket need a runtime: use
    /// [`when_async`](Given::when_async) from a `#[tokio::test]` instead.
    pub fn when(self, command: A::Command) -> Then<A> {
        block_on(self.when_async(command))
    }

    /// Decides `command`.
    pub async fn when_async(self, command: A::Command) -> Then<A> {
        let result = self.state.handle(command, &self.services).await;
        Then { result }
    }
}

/// The result of a command, waiting for expectations.
pub struct Then<A: CommandHandler> {
    result: Result<Vec<A::Event>, A::Error>,
}

impl<A: CommandHandler> Then<A>
where
    A::Event: Debug + PartialEq,
    A::Error: Debug + PartialEq,
{
    /// Asserts that the command produced exactly these events, in this order.
    #[track_caller]
    pub fn then_expect(self, expected: impl IntoIterator<Item = A::Event>) {
        let expected: Vec<A::Event> = expected.into_iter().collect();
        match &self.result {
            Ok(actual) if *actual == expected => {}
            Ok(actual) => fail("events differ", &expected, actual),
            Err(error) => fail("expected events, the command was refused", &expected, error),
        }
    }

    /// Asserts that the command produced no events (an idempotent no-op).
    #[track_caller]
    pub fn then_expect_no_events(self) {
        self.then_expect([]);
    }

    /// Asserts that the command was refused with this domain error.
    #[track_caller]
    pub fn then_expect_error(self, expected: A::Error) {
        match &self.result {
            Err(actual) if *actual == expected => {}
            Err(actual) => fail("domain errors differ", &expected, actual),
            Ok(events) => fail(
                "expected a domain error, the command produced events",
                &expected,
                events,
            ),
        }
    }

    /// The raw result, for assertions of your own.
    pub fn into_result(self) -> Result<Vec<A::Event>, A::Error> {
        self.result
    }
}

impl<A: CommandHandler> Debug for Then<A>
where
    A::Event: Debug,
    A::Error: Debug,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Then")
            .field("result", &self.result)
            .finish()
    }
}

/// Panics with `what` and a line diff of the pretty-printed values: the failure message of every
/// given/when/then expectation (aggregates, sagas, projections).
#[track_caller]
pub(crate) fn fail(what: &str, expected: &dyn Debug, actual: &dyn Debug) -> ! {
    let expected = format!("{expected:#?}");
    let actual = format!("{actual:#?}");
    panic!(
        "{what}\n--- expected\n+++ actual\n{}",
        line_diff(&expected, &actual)
    );
}

/// A unified-style diff of two texts, line by line (longest common subsequence).
pub fn line_diff(expected: &str, actual: &str) -> String {
    let old: Vec<&str> = expected.lines().collect();
    let new: Vec<&str> = actual.lines().collect();
    // lengths[i][j]: the longest common subsequence of old[i..] and new[j..].
    let mut lengths = vec![vec![0usize; new.len() + 1]; old.len() + 1];
    for i in (0..old.len()).rev() {
        for j in (0..new.len()).rev() {
            lengths[i][j] = if old[i] == new[j] {
                lengths[i + 1][j + 1] + 1
            } else {
                lengths[i + 1][j].max(lengths[i][j + 1])
            };
        }
    }
    let mut out = String::new();
    let (mut i, mut j) = (0, 0);
    while i < old.len() || j < new.len() {
        if i < old.len() && j < new.len() && old[i] == new[j] {
            out.push_str("  ");
            out.push_str(old[i]);
            i += 1;
            j += 1;
        } else if j < new.len() && (i == old.len() || lengths[i][j + 1] >= lengths[i + 1][j]) {
            out.push_str("+ ");
            out.push_str(new[j]);
            j += 1;
        } else {
            out.push_str("- ");
            out.push_str(old[i]);
            i += 1;
        }
        out.push('\n');
    }
    out
}

/// Runs a future to completion on this thread, parking between polls.
pub fn block_on<F: Future>(future: F) -> F::Output {
    struct Unpark(Thread);
    impl Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
        fn wake_by_ref(self: &Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = Waker::from(Arc::new(Unpark(thread::current())));
    let mut context = Context::from_waker(&waker);
    let mut future = pin!(future);
    loop {
        if let Poll::Ready(output) = future.as_mut().poll(&mut context) {
            return output;
        }
        thread::park();
    }
}

#[cfg(test)]
mod tests {
    use super::line_diff;

    #[test]
    fn diff_marks_changed_lines() {
        let diff = line_diff("a\nb\nc", "a\nx\nc");
        assert_eq!(diff, "  a\n+ x\n- b\n  c\n");
    }

    #[test]
    fn diff_of_equal_texts_has_no_marks() {
        assert_eq!(line_diff("a\nb", "a\nb"), "  a\n  b\n");
    }
}
