//! The cross-instance change feed: a task per store tails the `changes`
//! outbox and publishes every change, in `seq` order, to the store's
//! broadcast.
//!
//! Writers append to the outbox under one advisory lock held until commit,
//! so `seq` order is commit order and a reader of `seq > last` never skips a
//! change that commits later. The tailer LISTENs on a dedicated connection
//! (a NOTIFY wakes it at once) and also polls every [`POLL_INTERVAL`] as a
//! fallback; it reconnects with backoff when the connection is lost and
//! goes on from the last change it published, so nothing is lost while the
//! outbox keeps the rows ([`super::CHANGE_RETENTION`]).

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use tokio::sync::{Notify, broadcast};
use tokio_postgres::{AsyncMessage, NoTls};

use crate::grading::store::StoreError;
use crate::grading::store::postgres::{CHANNEL, CONNECT_TIMEOUT, OPERATION_TIMEOUT, pg};
use crate::mesh::Shutdown;
use crate::mesh::backoff::Backoff;
use crate::model::grading::Change;

/// How often the outbox is read when no notification came.
pub const POLL_INTERVAL: Duration = Duration::from_millis(500);
/// The most changes read at once.
pub const FEED_BATCH: i64 = 500;

/// Tails the outbox from after `last` until `stop`.
pub async fn tail(
    config: tokio_postgres::Config,
    mut last: i64,
    changes: broadcast::Sender<Arc<Change>>,
    stop: Shutdown,
) {
    let backoff = Backoff::default();
    let mut attempt = 0;
    loop {
        let before = last;
        match tail_connected(&config, &mut last, &changes, &stop).await {
            Ok(()) => return,
            Err(error) => {
                if last > before {
                    attempt = 0;
                }
                let delay = backoff.delay(attempt);
                attempt = attempt.saturating_add(1);
                tracing::warn!(%error, ?delay, last, "change feed lost its connection; reconnecting");
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = stop.cancelled() => return,
                }
            }
        }
    }
}

/// One connection's worth of tailing; `Ok` once `stop` is cancelled.
async fn tail_connected(
    config: &tokio_postgres::Config,
    last: &mut i64,
    changes: &broadcast::Sender<Arc<Change>>,
    stop: &Shutdown,
) -> Result<(), StoreError> {
    let (client, mut connection) = tokio::time::timeout(CONNECT_TIMEOUT, config.connect(NoTls))
        .await
        .map_err(|_| StoreError::Unavailable("connecting the change feed timed out".into()))?
        .map_err(pg("connecting the change feed"))?;
    let wake = Arc::new(Notify::new());
    let woken = wake.clone();
    // Drives the connection and turns notifications into wake-ups.
    let mut driver = tokio::spawn(async move {
        let mut messages = futures::stream::poll_fn(move |cx| connection.poll_message(cx));
        while let Some(message) = messages.next().await {
            match message {
                Ok(AsyncMessage::Notification(_)) => woken.notify_one(),
                Ok(_) => {}
                Err(e) => return pg("the change feed's connection")(e),
            }
        }
        StoreError::Unavailable("the change feed's connection closed".into())
    });
    let result = async {
        let timed = |what: &'static str| {
            move |_| {
                StoreError::Unavailable(format!("{what}: no answer within {OPERATION_TIMEOUT:?}"))
            }
        };
        tokio::time::timeout(
            OPERATION_TIMEOUT,
            client.batch_execute(&format!("LISTEN {CHANNEL}")),
        )
        .await
        .map_err(timed("listening"))?
        .map_err(pg("listening for changes"))?;
        let read = tokio::time::timeout(
            OPERATION_TIMEOUT,
            client.prepare("SELECT seq, payload FROM changes WHERE seq > $1 ORDER BY seq LIMIT $2"),
        )
        .await
        .map_err(timed("preparing the feed"))?
        .map_err(pg("preparing the feed"))?;
        loop {
            // Everything after `last`, a batch at a time.
            loop {
                let rows = tokio::time::timeout(
                    OPERATION_TIMEOUT,
                    client.query(&read, &[&*last, &FEED_BATCH]),
                )
                .await
                .map_err(timed("reading changes"))?
                .map_err(pg("reading changes"))?;
                let count = rows.len();
                for row in rows {
                    let seq: i64 = row.try_get(0).map_err(pg("reading a change"))?;
                    let payload: Vec<u8> = row.try_get(1).map_err(pg("reading a change"))?;
                    match Change::decode(&payload) {
                        Ok(change) => {
                            let _ = changes.send(Arc::new(change));
                        }
                        Err(e) => tracing::error!(seq, error = %e, "skipping a corrupt change"),
                    }
                    *last = seq;
                }
                if i64::try_from(count).unwrap_or(i64::MAX) < FEED_BATCH {
                    break;
                }
            }
            tokio::select! {
                _ = wake.notified() => {}
                _ = tokio::time::sleep(POLL_INTERVAL) => {}
                _ = stop.cancelled() => return Ok(()),
                ended = &mut driver => {
                    return Err(ended.unwrap_or_else(|e| {
                        StoreError::Unavailable(format!("the change feed's connection failed: {e}"))
                    }));
                }
            }
        }
    }
    .await;
    driver.abort();
    result
}
