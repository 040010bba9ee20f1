//! Given / then for a [`PostgresProjection`]: given these events, recorded in a real database,
//! then its tables hold this.

use cqrs_core::processor::Processor as _;
use cqrs_core::processor::{CatchUp, CatchUpError, DeadLetter, Failure, FailurePolicy};
use cqrs_core::{
    DomainEvent, EncodeError, EventStore as _, ExpectedVersion, InvalidStreamId, Metadata,
    NewEvent, Position, StoreError, StreamId,
};
use tokio_postgres::Row;
use tokio_postgres::types::ToSql;

use crate::{
    DatabaseError, PostgresProjection, PostgresProjectionRunner, PostgresProjector, PostgresStore,
};

/// A given / then test of a [`PostgresProjection`] against a real [`PostgresStore`] (a database
/// of a [`TestCluster`](super::TestCluster), say): each [`given`](Self::given) appends events to
/// the store and runs the projection over them through the same [`PostgresProjector`] commits as
/// in production (the read model's SQL, the dead letters and the checkpoint in one transaction
/// per batch); then the test queries the read model's tables.
///
/// ```no_run
/// # use cqrs_core::prelude::*;
/// # use cqrs_core::projection::EventContext;
/// # use cqrs_postgres::{PostgresProjection, PostgresStore, Transaction};
/// use cqrs_postgres::testing::{PostgresProjectionTest, TestCluster};
/// # #[derive(Debug, Clone, PartialEq, Serialize, Deserialize, DomainEvent)]
/// # pub enum ShowEvent { Scheduled { capacity: u32 }, SeatsReserved { seats: u32 } }
/// # struct ReservedSeats;
/// # #[cqrs_postgres::async_trait]
/// # impl PostgresProjection for ReservedSeats {
/// #     const NAME: &'static str = "reserved_seats";
/// #     const AGGREGATES: &'static [&'static str] = &["show"];
/// #     type Event = ShowEvent;
/// #     type Error = cqrs_postgres::tokio_postgres::Error;
/// #     async fn apply(&self, _: &Transaction<'_>, _: ShowEvent, _: &EventContext<'_>)
/// #         -> Result<(), Self::Error> { Ok(()) }
/// #     async fn reset(&self, _: &Transaction<'_>) -> Result<(), Self::Error> { Ok(()) }
/// # }
///
/// # #[tokio::main]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let store = PostgresStore::new(&TestCluster::shared()?.create_database().await?)?;
/// store.migrate().await?;
/// store.pool().get().await?
///     .batch_execute("CREATE TABLE reserved_seats (show text PRIMARY KEY, seats bigint NOT NULL)")
///     .await?;
///
/// let mut test = PostgresProjectionTest::new(ReservedSeats, store);
/// test.given("show-1", [ShowEvent::Scheduled { capacity: 10 }]).await?;
/// test.given("show-1", [ShowEvent::SeatsReserved { seats: 3 }]).await?;
/// let row = test
///     .query_one("SELECT seats FROM reserved_seats WHERE show = $1", &[&"1"])
///     .await?;
/// assert_eq!(row.get::<_, i64>(0), 3);
/// # Ok(())
/// # }
/// ```
///
/// By default the projection stops at an event that fails, and `given` returns the failure
/// ([`ProjectionTestError::Failed`]); with [`FailurePolicy::Skip`] it parks it instead, and
/// [`dead_letters`](Self::dead_letters) lists it.
#[derive(Debug)]
pub struct PostgresProjectionTest<P> {
    runner: PostgresProjectionRunner<P>,
    store: PostgresStore,
}

/// Why a [`PostgresProjectionTest`] step did not get through.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProjectionTestError {
    /// A given stream id was refused.
    #[error(transparent)]
    InvalidStream(#[from] InvalidStreamId),
    /// A given event did not encode.
    #[error("a given event of stream `{stream}` does not encode: {source}")]
    Encode {
        /// The stream it was given for.
        stream: StreamId,
        /// Why.
        #[source]
        source: EncodeError,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The projection failed at an event, and the failure policy says stop.
    #[error("the projection stopped: {0}")]
    Failed(Box<Failure>),
    /// A query of the test failed.
    #[error("query `{sql}` failed: {source}")]
    Query {
        /// The query.
        sql: String,
        /// What the server said.
        #[source]
        source: DatabaseError,
    },
}

impl<P: PostgresProjection> PostgresProjectionTest<P> {
    /// A test of `projection` on `store` (migrated, its read model's tables created), stopping at
    /// an event that fails.
    pub fn new(projection: P, store: PostgresStore) -> Self {
        let runner = PostgresProjector::new(projection, store.clone())
            .runner()
            .failure_policy(FailurePolicy::Stop);
        PostgresProjectionTest { runner, store }
    }

    /// What to do with an event that fails ([`FailurePolicy::Stop`] by default).
    #[must_use]
    pub fn failure_policy(mut self, policy: FailurePolicy) -> Self {
        self.runner = self.runner.failure_policy(policy);
        self
    }

    /// Appends `events` to `stream` (e.g. `"show-1"`), then runs the projection until it has
    /// caught up with the log, and says what it committed.
    pub async fn given<E: DomainEvent>(
        &mut self,
        stream: &str,
        events: impl IntoIterator<Item = E>,
    ) -> Result<CatchUp, ProjectionTestError> {
        let stream = StreamId::new(stream)?;
        let events = events
            .into_iter()
            .map(|event| NewEvent::encode(&event, Metadata::default()))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|source| ProjectionTestError::Encode {
                stream: stream.clone(),
                source,
            })?;
        if !events.is_empty() {
            self.store
                .append(&stream, ExpectedVersion::Any, events)
                .await?;
        }
        self.project().await
    }

    /// Runs the projection until it has caught up with the log (events appended by other means,
    /// say), and says what it committed.
    pub async fn project(&self) -> Result<CatchUp, ProjectionTestError> {
        self.runner.catch_up().await.map_err(|error| match error {
            CatchUpError::Failed(failure) => ProjectionTestError::Failed(failure),
            CatchUpError::Store(error) => ProjectionTestError::Store(error),
            other => ProjectionTestError::Store(StoreError::backend(other.to_string())),
        })
    }

    /// Runs `sql` with `params` on the store's pool: the read model, as a query sees it.
    pub async fn query(
        &self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<Row>, ProjectionTestError> {
        let client = self.store.client().await?;
        client
            .query(sql, params)
            .await
            .map_err(|error| ProjectionTestError::Query {
                sql: sql.to_owned(),
                source: DatabaseError::from(error),
            })
    }

    /// Runs `sql`, which must return exactly one row, with `params`.
    pub async fn query_one(
        &self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Row, ProjectionTestError> {
        let client = self.store.client().await?;
        client
            .query_one(sql, params)
            .await
            .map_err(|error| ProjectionTestError::Query {
                sql: sql.to_owned(),
                source: DatabaseError::from(error),
            })
    }

    /// The projection's stored checkpoint.
    pub async fn checkpoint(&self) -> Result<Position, ProjectionTestError> {
        use cqrs_core::processor::ProcessorStore as _;
        Ok(self.store.checkpoint(P::NAME).await?)
    }

    /// The projection's dead letters (under [`FailurePolicy::Skip`]), oldest first.
    pub async fn dead_letters(&self) -> Result<Vec<DeadLetter>, ProjectionTestError> {
        use cqrs_core::processor::ProcessorStore as _;
        Ok(self.store.dead_letters(P::NAME).await?)
    }

    /// The runner the test drives, for what this type does not wrap.
    pub fn runner(&self) -> &PostgresProjectionRunner<P> {
        &self.runner
    }

    /// The store.
    pub fn store(&self) -> &PostgresStore {
        &self.store
    }
}
