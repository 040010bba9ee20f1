//! The listener connection: `LISTEN cqrs_events`, fed into a watch channel that waiting readers
//! subscribe to.

use std::time::Duration;

use cqrs_core::{Position, StoreError};
use futures_util::StreamExt;
use futures_util::stream::poll_fn;
use tokio::sync::{Mutex, mpsc, watch};
use tokio_postgres::{AsyncMessage, Client, Config, NoTls};

/// The channel every numbering transaction notifies, with the new head as payload.
pub(crate) const CHANNEL: &str = "cqrs_events";

type Messages = mpsc::UnboundedReceiver<Result<AsyncMessage, tokio_postgres::Error>>;

/// One listener connection per store, opened on the first subscription.
pub(crate) struct Listener {
    config: Config,
    /// The receiver of the running listener task. A tokio mutex, held while connecting, so that
    /// concurrent first waiters open one connection, not several.
    receiver: Mutex<Option<watch::Receiver<Position>>>,
}

impl Listener {
    pub(crate) fn new(config: Config) -> Self {
        Listener {
            config,
            receiver: Mutex::new(None),
        }
    }

    /// A receiver of the head positions notified from now on. Returns once the connection
    /// listens, so that no notification sent after this returns is missed.
    pub(crate) async fn subscribe(&self) -> Result<watch::Receiver<Position>, StoreError> {
        let mut slot = self.receiver.lock().await;
        if let Some(receiver) = slot.as_ref() {
            // `has_changed` fails once the task is gone (its runtime shut down).
            if receiver.has_changed().is_ok() {
                return Ok(receiver.clone());
            }
        }
        let (client, messages) = open(&self.config).await.map_err(crate::error::backend)?;
        let (sender, receiver) = watch::channel(Position::START);
        tokio::spawn(run(self.config.clone(), client, messages, sender));
        *slot = Some(receiver.clone());
        Ok(receiver)
    }
}

/// Connects and listens. The connection's messages go to the returned channel, which closes when
/// the connection ends.
async fn open(config: &Config) -> Result<(Client, Messages), tokio_postgres::Error> {
    let (client, mut connection) = config.connect(NoTls).await?;
    let (sender, receiver) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut messages = poll_fn(move |context| connection.poll_message(context));
        while let Some(message) = messages.next().await {
            let failed = message.is_err();
            if sender.send(message).is_err() || failed {
                break;
            }
        }
    });
    client.batch_execute(&format!("LISTEN {CHANNEL}")).await?;
    Ok((client, receiver))
}

fn publish(head: &watch::Sender<Position>, position: Position) {
    head.send_if_modified(|published| {
        if position > *published {
            *published = position;
            true
        } else {
            false
        }
    });
}

async fn read_head(client: &Client) -> Result<Position, tokio_postgres::Error> {
    let row = client
        .query_one(
            "SELECT coalesce(max(position), 0) FROM cqrs_events WHERE position IS NOT NULL",
            &[],
        )
        .await?;
    let head: i64 = row.try_get(0)?;
    Ok(Position(u64::try_from(head).unwrap_or(0)))
}

/// Publishes every notified head until the store (every receiver) is gone; reconnects, with a
/// growing pause, when the connection fails, and then publishes the head it reads, which covers
/// the notifications sent while it was down.
async fn run(
    config: Config,
    mut client: Client,
    mut messages: Messages,
    head: watch::Sender<Position>,
) {
    loop {
        let message = if client.is_closed() {
            None
        } else {
            tokio::select! {
                () = head.closed() => return,
                message = messages.recv() => message,
            }
        };
        match message {
            Some(Ok(AsyncMessage::Notification(notification))) => {
                if let Ok(position) = notification.payload().parse::<u64>() {
                    publish(&head, Position(position));
                }
            }
            Some(Ok(_)) => {}
            Some(Err(_)) | None => {
                let mut pause = Duration::from_millis(50);
                loop {
                    tokio::select! {
                        () = head.closed() => return,
                        () = tokio::time::sleep(pause) => {}
                    }
                    if let Ok((new_client, new_messages)) = open(&config).await {
                        client = new_client;
                        messages = new_messages;
                        if let Ok(position) = read_head(&client).await {
                            publish(&head, position);
                        }
                        break;
                    }
                    pause = (pause * 2).min(Duration::from_secs(5));
                }
            }
        }
    }
}
