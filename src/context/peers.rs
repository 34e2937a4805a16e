//! What one replica tells the others sharing its PostgreSQL database: a committed change that
//! makes their cached copies wrong (a key revoked, rolled or changed; an integration updated,
//! disabled, rotated or deleted; a project deleted). Each change is applied to this
//! replica's caches and sent with PostgreSQL's `NOTIFY` on [`CHANNEL`]; every replica
//! `LISTEN`s on a connection of its own and drops the same entries. Nothing is added to run:
//! the database every replica already shares carries it. The cache periods stay as the
//! fallback: a notice lost (the listening connection was down) is covered by clearing the
//! caches when it reconnects, and at worst by the period. With SQLite (one process) nothing
//! is sent.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use diesel::sql_types::Text;
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use futures_util::StreamExt;
use tokio::sync::mpsc;

use super::AppState;
use crate::db::{DbConn, DbPool};

/// The `LISTEN`/`NOTIFY` channel.
pub const CHANNEL: &str = "hub_invalidate";

/// How many changes may wait to be sent; beyond it they are dropped (logged, counted) and
/// the other replicas fall back on their cache periods.
const OUTBOX: usize = 10_000;

/// A committed change other replicas' caches must see.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// An API key revoked, rolled or changed.
    Key(String),
    /// An integration updated, enabled or disabled, its credentials rotated, deleted.
    Integration(String),
    /// A project deleted (with its integrations).
    Project(String),
}

impl Change {
    fn encode(&self, replica: &str) -> String {
        let (kind, id) = match self {
            Change::Key(id) => ("key", id),
            Change::Integration(id) => ("integration", id),
            Change::Project(id) => ("project", id),
        };
        format!("{replica}|{kind}|{id}")
    }

    /// The sending replica and the change; None for a payload this version does not know.
    fn decode(payload: &str) -> Option<(&str, Change)> {
        let mut parts = payload.splitn(3, '|');
        let (replica, kind, id) = (parts.next()?, parts.next()?, parts.next()?);
        let id = id.to_string();
        let change = match kind {
            "key" => Change::Key(id),
            "integration" => Change::Integration(id),
            "project" => Change::Project(id),
            _ => return None,
        };
        Some((replica, change))
    }
}

/// This replica's end of the stream.
#[derive(Clone)]
pub struct Peers {
    /// Tells this replica's notices apart from the others'.
    replica: Arc<str>,
    outbox: Option<mpsc::Sender<Change>>,
    /// The outbox's other end, until the server starts its sender.
    pending: Arc<Mutex<Option<mpsc::Receiver<Change>>>>,
}

impl Peers {
    pub fn new(pool: &DbPool) -> Self {
        let replica: Arc<str> = uuid::Uuid::now_v7().simple().to_string().into();
        match pool {
            DbPool::Sqlite(..) => Self {
                replica,
                outbox: None,
                pending: Arc::default(),
            },
            DbPool::Postgres(..) => {
                let (outbox, pending) = mpsc::channel(OUTBOX);
                Self {
                    replica,
                    outbox: Some(outbox),
                    pending: Arc::new(Mutex::new(Some(pending))),
                }
            }
        }
    }

    fn announce(&self, change: Change) {
        let Some(outbox) = &self.outbox else {
            return;
        };
        if outbox.try_send(change).is_err() {
            metrics::counter!("hub_peer_notices_dropped_total").increment(1);
            tracing::warn!("a change was not announced to the other replicas (queue full)");
        }
    }
}

impl AppState {
    /// A committed change: applied to this replica's caches and announced to the others.
    pub fn changed(&self, change: Change) {
        self.apply(&change);
        self.peers.announce(change);
    }

    fn apply(&self, change: &Change) {
        match change {
            Change::Key(id) => {
                self.credentials.invalidate_key(id);
                self.rate_limits.forget_key(id);
            }
            Change::Integration(id) => self.call_targets.invalidate(id),
            Change::Project(id) => self.call_targets.invalidate_project(id),
        }
    }
}

/// Starts sending this replica's changes and listening to the others' (PostgreSQL only).
pub fn spawn(state: &AppState, database_url: Option<String>) -> Vec<tokio::task::JoinHandle<()>> {
    let pending = state
        .peers
        .pending
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .take();
    let (Some(outbox), Some(url)) = (pending, database_url) else {
        return Vec::new();
    };
    vec![
        tokio::spawn(send(state.clone(), outbox)),
        tokio::spawn(listen(state.clone(), url)),
    ]
}

async fn send(state: AppState, mut outbox: mpsc::Receiver<Change>) {
    while let Some(change) = outbox.recv().await {
        let payload = change.encode(&state.peers.replica);
        let sent = tokio::time::timeout(Duration::from_secs(5), async {
            let mut conn = state.pool.get().await?;
            let DbConn::Postgres(conn) = &mut conn else {
                return Ok(());
            };
            diesel::sql_query("SELECT pg_notify($1, $2)")
                .bind::<Text, _>(CHANNEL)
                .bind::<Text, _>(&payload)
                .execute(&mut **conn)
                .await
                .map(|_| ())
                .map_err(crate::error::AppError::from)
        })
        .await;
        if !matches!(sent, Ok(Ok(()))) {
            metrics::counter!("hub_peer_notices_dropped_total").increment(1);
            tracing::warn!("a change was not announced to the other replicas (database)");
        }
    }
}

async fn listen(state: AppState, url: String) {
    let mut first = true;
    loop {
        match subscribe(&url).await {
            Ok(mut conn) => {
                if !first {
                    // Notices may have been missed while disconnected: start afresh.
                    state.credentials.clear();
                    state.call_targets.clear();
                }
                first = false;
                tracing::debug!("listening to the other replicas' changes");
                let mut notices = std::pin::pin!(conn.notifications_stream());
                while let Some(Ok(notice)) = notices.next().await {
                    match Change::decode(&notice.payload) {
                        Some((replica, change)) if replica != &*state.peers.replica => {
                            state.apply(&change);
                        }
                        _ => {}
                    }
                }
                tracing::warn!("lost the connection that listens to the other replicas");
            }
            Err(err) => {
                tracing::warn!(error = %err, "cannot listen to the other replicas; retrying");
            }
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

async fn subscribe(url: &str) -> Result<AsyncPgConnection, String> {
    let connect = async {
        let mut conn = AsyncPgConnection::establish(url)
            .await
            .map_err(|e| e.to_string())?;
        diesel::sql_query(format!("LISTEN {CHANNEL}"))
            .execute(&mut conn)
            .await
            .map_err(|e| e.to_string())?;
        Ok(conn)
    };
    tokio::time::timeout(Duration::from_secs(10), connect)
        .await
        .map_err(|_| "timed out".to_string())?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notices_round_trip() {
        for change in [
            Change::Key("k|1".into()),
            Change::Integration("i1".into()),
            Change::Project("p1".into()),
        ] {
            let payload = change.encode("r1");
            assert_eq!(Change::decode(&payload), Some(("r1", change)));
        }
        assert_eq!(Change::decode("r1|other|x"), None);
        assert_eq!(Change::decode("garbage"), None);
    }
}
