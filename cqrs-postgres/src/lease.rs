//! The leader lock of a processor: a session-level advisory lock on a connection of its own,
//! held by the [`Lease`] it is handed out as. See [`crate::processor`].

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use cqrs_core::StoreError;
use cqrs_core::processor::{HeldLock, Lease};
use tokio::sync::watch;
use tokio_postgres::NoTls;

use crate::PostgresStore;
use crate::processor::{LEADER_LOCK_CLASS, register};

/// How long the server waits before it probes a silent lock connection, and between probes, and
/// how many unanswered probes end it: a node that vanished without closing its connection (its
/// machine lost) frees the lock within about half a minute instead of the two hours of the usual
/// TCP default. Unix-socket connections ignore them (the kernel reports a dead peer at once).
const KEEPALIVE_IDLE: Duration = Duration::from_secs(10);
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(5);
const KEEPALIVE_PROBES: u32 = 3;

/// The connection a leader lock is taken on, outside the pool. Dropping it closes the
/// connection, which releases every lock its session holds.
pub(crate) struct LockConnection {
    client: tokio_postgres::Client,
    closed: watch::Receiver<bool>,
}

impl LockConnection {
    async fn open(store: &PostgresStore, processor: &str) -> Result<Self, StoreError> {
        let mut config = store.config().clone();
        config
            .keepalives(true)
            .keepalives_idle(KEEPALIVE_IDLE)
            .keepalives_interval(KEEPALIVE_INTERVAL)
            .keepalives_retries(KEEPALIVE_PROBES);
        let connect = config.connect(NoTls);
        let connected = match store.pool_options().connect_timeout {
            Some(limit) => {
                tokio::time::timeout(limit, connect)
                    .await
                    .map_err(|_| StoreError::Timeout {
                        what: format!("a new connection for the leader lock of `{processor}`"),
                        waited: limit,
                    })?
            }
            None => connect.await,
        };
        let (client, connection) = connected.map_err(crate::error::backend)?;
        let (sender, closed) = watch::channel(false);
        tokio::spawn(async move {
            // Ends when the server closes the connection (terminated, restarted, the network
            // lost) or when the client is dropped.
            let _ = connection.await;
            sender.send_replace(true);
        });
        // The server's side of the same keepalives, for a client that vanished.
        client
            .batch_execute(&format!(
                "SET tcp_keepalives_idle = {}; SET tcp_keepalives_interval = {}; \
                 SET tcp_keepalives_count = {KEEPALIVE_PROBES}",
                KEEPALIVE_IDLE.as_secs(),
                KEEPALIVE_INTERVAL.as_secs(),
            ))
            .await
            .map_err(crate::error::backend)?;
        Ok(LockConnection { client, closed })
    }

    fn is_closed(&self) -> bool {
        *self.closed.borrow() || self.client.is_closed()
    }
}

/// The connections on which this store tried to take a processor's lock and found it taken,
/// kept for its next attempt (a standby node tries every second): one per processor name, so
/// that standing by costs one idle connection instead of a new one per attempt. One is closed
/// when the lock is taken on it (it then belongs to the lease), when found closed, or with the
/// store.
#[derive(Default)]
pub(crate) struct Standby {
    connections: Mutex<HashMap<String, LockConnection>>,
}

impl Standby {
    fn take(&self, processor: &str) -> Option<LockConnection> {
        self.connections
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(processor)
            .filter(|connection| !connection.is_closed())
    }

    fn keep(&self, processor: &str, connection: LockConnection) {
        self.connections
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(processor.to_owned(), connection);
    }
}

/// A held leader lock: lost once its connection closes.
struct HeldConnection(LockConnection);

impl HeldLock for HeldConnection {
    fn lost(&mut self) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        Box::pin(async move {
            // The sender goes away only after it said `true`: either way the connection is gone.
            let _ = self.0.closed.wait_for(|closed| *closed).await;
        })
    }
}

/// Tries to take the leader lock of `processor`: `Some` lease holding it, `None` while another
/// session holds it.
pub(crate) async fn lead(
    store: &PostgresStore,
    processor: &str,
) -> Result<Option<Lease>, StoreError> {
    let standby = &store.inner.standby;
    let connection = match standby.take(processor) {
        Some(connection) => connection,
        None => LockConnection::open(store, processor).await?,
    };
    let lock_id = register(&connection.client, processor).await?;
    let row = connection
        .client
        .query_one(
            "SELECT pg_try_advisory_lock($1::int4, $2::int4)",
            &[&LEADER_LOCK_CLASS, &lock_id],
        )
        .await
        .map_err(crate::error::backend)?;
    let locked: bool = row.try_get(0).map_err(crate::error::backend)?;
    if locked {
        Ok(Some(Lease::new(HeldConnection(connection))))
    } else {
        standby.keep(processor, connection);
        Ok(None)
    }
}
