//! Projections as processors: a [`Projection`] applied to the model of a [`ProjectionStore`].

use std::panic::{AssertUnwindSafe, catch_unwind};

use super::checkpoint::{Applied, ProjectionCommit, ProjectionStore};
use super::{EventContext, Projection, decode_read};
use crate::event::RecordedEvent;
use crate::processor::{
    Batch, CommitError, Committed, EventFailure, FailureKind, Processor, ProcessorRunner,
    ProcessorStore, ResetError,
};
use crate::store::EventStore;

/// A runner of a projection over a [`ProjectionStore`]: [`ProcessorRunner`] over a
/// [`Projector`].
pub type ProjectionRunner<P, S, R> = ProcessorRunner<Projector<P, S, R>>;

/// A [`Projection`] as a [`Processor`]: reads `events`' log, applies the events of the
/// projection's aggregates to the model of `store` and commits each batch with the checkpoint.
///
/// ```text
/// let handle = Projector::new(AvailableSeats, store.clone(), read_model.clone()).runner().spawn();
/// ```
#[derive(Debug)]
pub struct Projector<P, S, R> {
    projection: P,
    events: S,
    store: R,
}

impl<P, S, R> Projector<P, S, R>
where
    P: Projection,
    S: EventStore,
    R: ProjectionStore<Model = P::ReadModel>,
{
    /// The processor of `projection`, reading `events` and keeping its model in `store`.
    pub fn new(projection: P, events: S, store: R) -> Self {
        Projector {
            projection,
            events,
            store,
        }
    }

    /// The projection.
    pub fn projection(&self) -> &P {
        &self.projection
    }

    /// The store of its model.
    pub fn model_store(&self) -> &R {
        &self.store
    }
}

#[async_trait::async_trait]
impl<P, S, R> Processor for Projector<P, S, R>
where
    P: Projection,
    S: EventStore,
    R: ProjectionStore<Model = P::ReadModel>,
{
    type Events = S;

    fn name(&self) -> &'static str {
        P::NAME
    }

    fn aggregates(&self) -> &'static [&'static str] {
        P::AGGREGATES
    }

    fn events(&self) -> &S {
        &self.events
    }

    fn store(&self) -> &dyn ProcessorStore {
        &self.store
    }

    async fn commit(&self, batch: Batch<'_>) -> Result<Committed, CommitError> {
        let mut failed = None;
        let commit = ProjectionCommit {
            expected: batch.expected,
            dead_letters: batch.dead_letters.clone(),
            retried: batch.retried.map(str::to_owned),
        };
        let reached = self
            .store
            .commit(P::NAME, commit, &mut |model| {
                // Runs under the store's commit; may run again if the store retries, so it
                // starts from scratch each time.
                failed = None;
                for (index, event) in batch.events.iter().enumerate() {
                    if let Err(failure) = apply_recorded(&self.projection, model, event) {
                        failed = Some((index, failure));
                        return Applied {
                            reached: batch.before(index),
                            complete: false,
                        };
                    }
                }
                Applied {
                    reached: batch.end,
                    complete: true,
                }
            })
            .await?;
        Ok(Committed { reached, failed })
    }

    async fn reset(&self) -> Result<(), ResetError> {
        Ok(self.store.reset(P::NAME).await?)
    }
}

/// Routes `event` for `projection` and applies it to `model`: a decode error (an unknown type
/// included), an error from `apply` and a panic in it all come back as the event's failure.
pub(crate) fn apply_recorded<P: Projection>(
    projection: &P,
    model: &mut P::ReadModel,
    event: &RecordedEvent,
) -> Result<(), EventFailure> {
    // A panic in user code is caught here, before it could unwind through the store's lock,
    // and goes through the failure policy like an error.
    let outcome = catch_unwind(AssertUnwindSafe(|| {
        let routed = match decode_read::<P::Event>(event) {
            Ok(routed) => routed,
            Err(error) => return Err(EventFailure::new(FailureKind::Decode, error)),
        };
        projection
            .apply(model, routed, &EventContext::new(event))
            .map_err(|error| EventFailure::new(FailureKind::Handler, error))
    }));
    outcome.unwrap_or_else(|payload| Err(EventFailure::panicked(&*payload)))
}
