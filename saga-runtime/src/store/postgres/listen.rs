//! LISTEN/NOTIFY: the store's wake-ups, from whichever worker caused them, to the runtimes of
//! this process. A notification lost to a dropped connection is made up for by a `Due`
//! wake-up when the listener reconnects, and by the listeners' own bounded polls.

use sqlx::PgPool;
use sqlx::postgres::PgListener;
use tokio::sync::broadcast;

use crate::id::SagaId;
use crate::store::Wakeup;

/// The channel of a store's notifications: `due`, or `settled:<saga id>`.
pub(super) fn channel(schema: &str) -> String {
    format!("saga_runtime_{schema}")
}

/// Starts listening; returns the sender runtimes subscribe to and the listening task.
pub(super) fn start(pool: PgPool, schema: &str) -> (broadcast::Sender<Wakeup>, tokio::task::JoinHandle<()>) {
    let (sender, _) = broadcast::channel(4096);
    let channel = channel(schema);
    let forward = sender.clone();
    let task = tokio::spawn(async move {
        loop {
            let mut listener = match PgListener::connect_with(&pool).await {
                Ok(listener) => listener,
                Err(error) => {
                    tracing::warn!(%error, "cannot listen for saga notifications yet; polling meanwhile");
                    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                    continue;
                }
            };
            if let Err(error) = listener.listen(&channel).await {
                tracing::warn!(%error, "cannot listen for saga notifications yet; polling meanwhile");
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                continue;
            }
            // Whatever was sent while nobody listened: look now.
            let _ = forward.send(Wakeup::Due);
            loop {
                match listener.try_recv().await {
                    Ok(Some(notification)) => {
                        let wakeup = match notification.payload().strip_prefix("settled:") {
                            Some(id) => Wakeup::Settled(SagaId::new(id)),
                            None => Wakeup::Due,
                        };
                        let _ = forward.send(wakeup);
                    }
                    // The connection was lost (and is reconnected by the next call): what was
                    // sent meanwhile is gone, so look now.
                    Ok(None) => {
                        let _ = forward.send(Wakeup::Due);
                    }
                    Err(error) => {
                        tracing::warn!(%error, "lost the notification listener; reconnecting");
                        break;
                    }
                }
            }
        }
    });
    (sender, task)
}
