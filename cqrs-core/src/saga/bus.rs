//! The command bus: sends a command to the repository of its aggregate type.

use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use crate::aggregate::CommandHandler;
use crate::repository::{CommandMetadata, ExecuteError, ExecuteOutcome, Repository};
use crate::store::EventStore;

/// A boxed, sendable future, as the bus hands them around.
pub(crate) type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Why [`CommandBus::execute`] did not succeed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DispatchError<E> {
    /// No repository for this aggregate type was registered with the bus.
    #[error("no repository for aggregate `{aggregate}` is registered with the command bus")]
    NotRegistered {
        /// The aggregate's name.
        aggregate: &'static str,
    },
    /// The repository refused or failed the command.
    #[error(transparent)]
    Execute(#[from] ExecuteError<E>),
}

impl<E> DispatchError<E> {
    /// The domain error, when the aggregate refused the command.
    pub fn domain(&self) -> Option<&E> {
        match self {
            DispatchError::Execute(error) => error.domain(),
            DispatchError::NotRegistered { .. } => None,
        }
    }
}

/// What executing a command of `A` gives.
type ExecuteResult<A> = Result<
    ExecuteOutcome<<A as crate::aggregate::Aggregate>::Event>,
    ExecuteError<<A as crate::aggregate::Aggregate>::Error>,
>;

/// What the bus needs from a repository, without naming its store type.
trait Executor<A: CommandHandler>: Send + Sync {
    fn execute(
        &self,
        id: String,
        command: A::Command,
        metadata: CommandMetadata,
    ) -> BoxFuture<'_, ExecuteResult<A>>;
}

impl<A, S> Executor<A> for Repository<A, S>
where
    A: CommandHandler,
    A::Event: Clone,
    S: EventStore,
{
    fn execute(
        &self,
        id: String,
        command: A::Command,
        metadata: CommandMetadata,
    ) -> BoxFuture<'_, ExecuteResult<A>> {
        Box::pin(self.execute_with(id, command, metadata))
    }
}

/// One registered repository: an `Arc<dyn Executor<A>>` behind `Any`, keyed by `A`'s type id.
#[derive(Clone)]
struct Registration {
    aggregate: &'static str,
    executor: Arc<dyn Any + Send + Sync>,
}

/// Routes a command to the repository of its aggregate type.
///
/// Register one [`Repository`] per aggregate type, whatever store each one uses; then
/// [`execute`](CommandBus::execute) picks the repository by the aggregate type parameter, so a
/// command can only be sent to the aggregate that understands it. Sagas send their commands
/// through it; applications can use it directly. Cloning is cheap.
///
/// ```
/// use cqrs_core::prelude::*;
/// use cqrs_core::saga::CommandBus;
/// use cqrs_memstore::MemStore;
///
/// #[derive(Debug, Clone, PartialEq, Serialize, Deserialize, DomainEvent)]
/// pub enum LampEvent {
///     SwitchedOn,
/// }
///
/// #[derive(Debug, Default, Aggregate)]
/// #[aggregate(name = "lamp", event = LampEvent, error = std::convert::Infallible)]
/// pub struct Lamp;
///
/// impl Lamp {
///     fn apply(&mut self, _: LampEvent) {}
/// }
///
/// #[command_handler]
/// impl Lamp {
///     /// Switches the lamp on.
///     pub fn switch_on(&self) -> LampEvent {
///         LampEvent::SwitchedOn
///     }
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let bus = CommandBus::new().register(Repository::<Lamp, _>::new(MemStore::new()));
/// let outcome = bus
///     .execute::<Lamp>("hall", LampCommand::SwitchOn, CommandMetadata::default())
///     .await?;
/// assert_eq!(outcome.events, [LampEvent::SwitchedOn]);
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Default)]
pub struct CommandBus {
    routes: HashMap<TypeId, Registration>,
}

impl CommandBus {
    /// A bus with no repositories.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds the repository of `A`, replacing an earlier one of the same aggregate type.
    #[must_use]
    pub fn register<A, S>(mut self, repository: Repository<A, S>) -> Self
    where
        A: CommandHandler,
        A::Event: Clone,
        S: EventStore,
    {
        let executor: Arc<dyn Executor<A>> = Arc::new(repository);
        self.routes.insert(
            TypeId::of::<A>(),
            Registration {
                aggregate: A::NAME,
                executor: Arc::new(executor),
            },
        );
        self
    }

    /// Whether a repository of `A` is registered.
    pub fn handles<A: CommandHandler>(&self) -> bool {
        self.routes.contains_key(&TypeId::of::<A>())
    }

    /// Executes `command` on the aggregate `id` of type `A`, with `metadata` (see
    /// [`Repository::execute_with`]).
    pub async fn execute<A: CommandHandler>(
        &self,
        id: impl fmt::Display,
        command: A::Command,
        metadata: CommandMetadata,
    ) -> Result<ExecuteOutcome<A::Event>, DispatchError<A::Error>> {
        let executor = self
            .routes
            .get(&TypeId::of::<A>())
            .and_then(|registration| registration.executor.downcast_ref::<Arc<dyn Executor<A>>>())
            .ok_or(DispatchError::NotRegistered { aggregate: A::NAME })?;
        Ok(executor.execute(id.to_string(), command, metadata).await?)
    }
}

impl fmt::Debug for CommandBus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut aggregates: Vec<&str> = self.routes.values().map(|r| r.aggregate).collect();
        aggregates.sort_unstable();
        f.debug_struct("CommandBus")
            .field("aggregates", &aggregates)
            .finish()
    }
}
