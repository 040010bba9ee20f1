//! What a story's saga did when it first caught up with the log: the replay of earlier runs on
//! the same store, which must send nothing twice.

use std::fmt;

use cqrs_core::saga::{Saga, SagaRunner, SagaStore};
use cqrs_core::{EventStore, Position};

use crate::Error;

/// What a saga did when it first caught up with the log, before its run wrote anything.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Replay {
    /// The position it caught up to: the end of the log the earlier runs left.
    pub checkpoint: Position,
    /// Events of the streams the saga reads that it went through.
    pub events: u64,
    /// Its commands that earlier runs had applied already: not applied again.
    pub deduplicated: u64,
    /// Its commands that wrote something.
    pub commands: u64,
}

/// Catches `saga` up with the log and says what this catch-up did (its processor counts since
/// it was made, hence the difference).
pub async fn catch_up<G, S, St>(saga: &SagaRunner<G, S, St>) -> Result<Replay, Error>
where
    G: Saga,
    S: EventStore,
    St: SagaStore,
{
    let before = saga.processor().report();
    let caught_up = saga.catch_up().await?;
    let after = saga.processor().report();
    Ok(Replay {
        checkpoint: caught_up.checkpoint,
        events: caught_up.events,
        deduplicated: after.deduplicated - before.deduplicated,
        commands: after.commands - before.commands,
    })
}

impl fmt::Display for Replay {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "The store holds {} events of earlier runs. The checkout saga replayed the {} it reads: \
             {} of its commands were already applied and were not sent again, {} were new.",
            self.checkpoint.0, self.events, self.deduplicated, self.commands
        )
    }
}
