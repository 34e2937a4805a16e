//! What one replica tells the others sharing its PostgreSQL database: a committed change that
//! makes their cached copies wrong (a key revoked, rolled or changed; an integration updated,
//! disabled, rotated or deleted; a project deleted). Each change is applied to this
//! replica's caches and sent with PostgreSQL's `NOTIFY` on [`CHANNEL`]; every replica
//! `LISTEN`s on a connection of its own and drops the same entries. Nothing is added to run:
//! the database every replica already shares carries it. The cache periods stay as the
//! fallback: a notice lost (the listening connection was down) is covered by clearing the
//! caches when it reconnects, and at worst by the period. With SQLite (one process) nothing
//! is sent.
//!
//! Events travel the same way, on [`EVENTS`]: every event this replica publishes is relayed
//! and the others deliver it to their subscribers (never to their webhook outbox: the
//! publishing replica queued those deliveries). A notice carries as many events as fit in
//! PostgreSQL's 8,000-byte payload, one JSON line each; an event too large for one notice
//! is sent in parts, which the listener joins. Notices are numbered per replica, so a gap
//! (a notice lost while the listening connection was down) is counted and logged.
//! PostgreSQL delivers one session's notices in the order they were sent, and one task
//! sends them: events reach the other replicas in the order they were published here.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use diesel::sql_types::Text;
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use futures_util::StreamExt;
use tokio::sync::mpsc;

use super::AppState;
use crate::db::{DbConn, DbPool};
use crate::error::AppResult;

/// The `LISTEN`/`NOTIFY` channel of cache changes.
pub const CHANNEL: &str = "hub_invalidate";

/// The `LISTEN`/`NOTIFY` channel of events.
pub const EVENTS: &str = "hub_events";

/// A notice's payload must be shorter than 8,000 bytes.
const NOTICE_BYTES: usize = 7_900;

/// How many events may wait to be relayed; beyond it they are dropped (logged, counted).
const EVENT_OUTBOX: usize = 65_536;

/// The largest event the listener joins from parts; a larger one is dropped (logged).
const EVENT_BYTES: usize = 16 << 20;

/// How many notices one round trip sends at most.
const NOTICES_PER_ROUND: usize = 64;

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
    /// Whether this replica does periodic job `name` now: true if it claimed (or renewed)
    /// the job's lease for `hold` (`db::lease`). Logged and false if the database cannot say.
    pub async fn claim_job(&self, name: &str, hold: Duration) -> bool {
        let at = crate::db::now();
        let until = at + chrono::Duration::from_std(hold).unwrap_or(chrono::Duration::MAX);
        let claimed = match self.pool.get().await {
            Ok(mut conn) => {
                crate::db::lease::claim(&mut conn, name, &self.peers.replica, at, until).await
            }
            Err(err) => Err(err),
        };
        claimed.unwrap_or_else(|err| {
            tracing::warn!(
                job = name,
                code = err.code(),
                "job lease not claimed; will retry"
            );
            false
        })
    }

    /// Gives back job `name` if this replica holds it (one-off work done); logged if the
    /// database cannot say (the lease then runs out by itself).
    pub async fn release_job(&self, name: &str) {
        let released = match self.pool.get().await {
            Ok(mut conn) => crate::db::lease::release(&mut conn, name, &self.peers.replica).await,
            Err(err) => Err(err),
        };
        if let Err(err) = released {
            tracing::warn!(job = name, code = err.code(), "job lease not released");
        }
    }

    /// Gives back the job leases this replica holds (at a graceful stop).
    pub async fn release_jobs(&self) -> AppResult<usize> {
        let mut conn = self.pool.get().await?;
        crate::db::lease::release_all(&mut conn, &self.peers.replica).await
    }

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
    let mut tasks = vec![
        tokio::spawn(send(state.clone(), outbox)),
        tokio::spawn(listen(state.clone(), url)),
    ];
    if let Some(events) = state.events.relay(EVENT_OUTBOX) {
        tasks.push(tokio::spawn(relay(state.clone(), events)));
    }
    tasks
}

/// Sends this replica's events to the others: whatever is queued, packed into notices, in
/// one round trip.
async fn relay(state: AppState, mut events: mpsc::Receiver<Arc<crate::events::Event>>) {
    let mut packer = Packer::new(&state.peers.replica);
    let mut batch = Vec::new();
    while events.recv_many(&mut batch, 4_096).await > 0 {
        for event in batch.drain(..) {
            packer.push(&event.to_wire());
        }
        while let Some(notices) = packer.take(NOTICES_PER_ROUND) {
            let count = notices.len();
            let sent = tokio::time::timeout(Duration::from_secs(5), async {
                let mut conn = state.pool.get().await?;
                let DbConn::Postgres(conn) = &mut conn else {
                    return Ok(());
                };
                diesel::sql_query("SELECT pg_notify($1, n) FROM unnest($2) AS n")
                    .bind::<Text, _>(EVENTS)
                    .bind::<diesel::sql_types::Array<Text>, _>(&notices)
                    .execute(&mut **conn)
                    .await
                    .map(|_| ())
                    .map_err(crate::error::AppError::from)
            })
            .await;
            if matches!(sent, Ok(Ok(()))) {
                metrics::counter!("hub_peer_notices_sent_total").increment(count as u64);
            } else {
                metrics::counter!("hub_peer_event_notices_dropped_total").increment(count as u64);
                tracing::warn!(
                    count,
                    "events were not relayed to the other replicas (database)"
                );
            }
        }
    }
}

/// Packs events (one JSON line each) into numbered notices of at most [`NOTICE_BYTES`]:
/// `replica|seq|B|line\nline...` for whole events, `replica|seq|P|part` for the parts of a
/// larger one and `replica|seq|E|part` for its last part.
struct Packer {
    replica: Arc<str>,
    seq: u64,
    open: String,
    /// Lines in `open`.
    lines: usize,
    ready: std::collections::VecDeque<String>,
}

impl Packer {
    fn new(replica: &Arc<str>) -> Self {
        Self {
            replica: replica.clone(),
            seq: 0,
            open: String::new(),
            lines: 0,
            ready: Default::default(),
        }
    }

    fn header(&mut self, kind: char) -> String {
        self.seq += 1;
        format!("{}|{}|{kind}|", self.replica, self.seq)
    }

    fn push(&mut self, line: &str) {
        if line.is_empty() {
            return;
        }
        // Room left once a fresh notice's header is written (a generous 64 bytes).
        let room = NOTICE_BYTES - 64;
        if line.len() > room {
            self.close();
            let mut rest = line;
            while !rest.is_empty() {
                let mut end = rest.len().min(room);
                while !rest.is_char_boundary(end) {
                    end -= 1;
                }
                let (part, tail) = rest.split_at(end);
                let mut notice = self.header(if tail.is_empty() { 'E' } else { 'P' });
                notice.push_str(part);
                self.ready.push_back(notice);
                rest = tail;
            }
            return;
        }
        if self.lines > 0 && self.open.len() + 1 + line.len() > NOTICE_BYTES {
            self.close();
        }
        if self.lines == 0 {
            self.open = self.header('B');
        } else {
            self.open.push('\n');
        }
        self.open.push_str(line);
        self.lines += 1;
    }

    fn close(&mut self) {
        if self.lines > 0 {
            self.ready.push_back(std::mem::take(&mut self.open));
            self.lines = 0;
        }
    }

    /// Up to `most` notices, the open one included; None when nothing waits.
    fn take(&mut self, most: usize) -> Option<Vec<String>> {
        if self.ready.len() < most {
            self.close();
        }
        if self.ready.is_empty() {
            return None;
        }
        let count = self.ready.len().min(most);
        Some(self.ready.drain(..count).collect())
    }
}

/// Joins the notices of the other replicas back into events.
#[derive(Default)]
struct Unpacker {
    /// Per replica: the last notice's number, the parts of an event being joined, and when
    /// it was last heard. Replicas come and go (each start is a new name), so at most
    /// `PEERS` are kept: the one heard from least recently makes room for a new one.
    from: std::collections::HashMap<String, (u64, String, std::time::Instant)>,
}

/// How many other replicas' numbering the listener keeps.
const PEERS: usize = 256;

impl Unpacker {
    /// The events `payload` completes (None for a notice from this replica or unreadable).
    fn take(&mut self, own: &str, payload: &str) -> Vec<crate::events::Event> {
        let mut fields = payload.splitn(4, '|');
        let (Some(replica), Some(seq), Some(kind), Some(body)) =
            (fields.next(), fields.next(), fields.next(), fields.next())
        else {
            return Vec::new();
        };
        let Ok(seq) = seq.parse::<u64>() else {
            return Vec::new();
        };
        if replica == own {
            return Vec::new();
        }
        if !self.from.contains_key(replica) && self.from.len() >= PEERS {
            let quietest = self
                .from
                .iter()
                .min_by_key(|(_, (_, _, heard))| *heard)
                .map(|(name, _)| name.clone());
            if let Some(name) = quietest {
                self.from.remove(&name);
            }
        }
        let (last, parts, heard) = self
            .from
            .entry(replica.to_string())
            .or_insert_with(|| (0, String::new(), std::time::Instant::now()));
        *heard = std::time::Instant::now();
        if *last != 0 && seq != *last + 1 {
            let missed = seq.saturating_sub(*last + 1);
            metrics::counter!("hub_peer_event_notices_missed_total").increment(missed);
            tracing::warn!(
                replica,
                missed,
                "notices of events from another replica were missed"
            );
            parts.clear();
        }
        *last = seq;
        match kind {
            "B" => body
                .split('\n')
                .filter_map(crate::events::Event::from_wire)
                .collect(),
            "P" | "E" => {
                if parts.len() + body.len() > EVENT_BYTES {
                    tracing::warn!(
                        replica,
                        "an event from another replica is too large; dropped"
                    );
                    parts.clear();
                    return Vec::new();
                }
                parts.push_str(body);
                if kind == "P" {
                    return Vec::new();
                }
                let whole = std::mem::take(parts);
                crate::events::Event::from_wire(&whole)
                    .into_iter()
                    .collect()
            }
            _ => Vec::new(),
        }
    }
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
                tracing::debug!("listening to the other replicas' changes and events");
                let mut unpacker = Unpacker::default();
                let mut notices = std::pin::pin!(conn.notifications_stream());
                while let Some(Ok(notice)) = notices.next().await {
                    if notice.channel == EVENTS {
                        for event in unpacker.take(&state.peers.replica, &notice.payload) {
                            metrics::counter!("hub_peer_events_received_total").increment(1);
                            state.events.deliver(event);
                        }
                        continue;
                    }
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
        diesel_async::SimpleAsyncConnection::batch_execute(
            &mut conn,
            &format!("LISTEN {CHANNEL}; LISTEN {EVENTS}"),
        )
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

    fn event(path: &str, payload: serde_json::Value) -> crate::events::Event {
        crate::events::Event {
            kind: crate::events::EventKind::WebhookReceived,
            team_id: "t1".into(),
            project_id: Some("p1".into()),
            subject_id: path.into(),
            payload,
            request_log: None,
            at: chrono::DateTime::from_timestamp(1_700_000_000, 0)
                .unwrap()
                .naive_utc(),
        }
    }

    #[test]
    fn events_are_packed_into_notices_and_joined_again() {
        let replica: Arc<str> = "ra".into();
        let mut packer = Packer::new(&replica);
        // Small events share notices; a large one (multi-byte text) goes in parts.
        let mut sent = Vec::new();
        for i in 0..300 {
            sent.push(event(&format!("i{i}"), serde_json::json!({ "n": i })));
        }
        sent.insert(
            150,
            event("big", serde_json::json!({ "text": "é€".repeat(9_000) })),
        );
        for e in &sent {
            packer.push(&e.to_wire());
        }
        let mut notices = Vec::new();
        while let Some(some) = packer.take(4) {
            assert!(some.len() <= 4);
            notices.extend(some);
        }
        assert!(notices.iter().all(|n| n.len() < 8_000));
        assert!(notices.len() < 40, "{} notices", notices.len());

        let mut unpacker = Unpacker::default();
        let mut got = Vec::new();
        for notice in &notices {
            assert!(
                unpacker.take("ra", notice).is_empty(),
                "own notices are skipped"
            );
            got.extend(unpacker.take("rb", notice));
        }
        assert_eq!(got.len(), sent.len());
        for (a, b) in got.iter().zip(&sent) {
            assert_eq!(a.subject_id, b.subject_id);
            assert_eq!(a.payload, b.payload);
            assert_eq!(a.kind, b.kind);
            assert_eq!(a.at, b.at);
        }

        // A lost notice is noticed, and the event it was part of is not half-joined.
        let mut unpacker = Unpacker::default();
        let big = notices.iter().position(|n| n.contains("|P|")).unwrap();
        let mut got = Vec::new();
        for (i, notice) in notices.iter().enumerate() {
            if i != big + 1 {
                got.extend(unpacker.take("rb", notice));
            }
        }
        assert_eq!(got.len(), sent.len() - 1);
        assert!(got.iter().all(|e| e.subject_id != "big"));
    }

    #[test]
    fn the_listener_keeps_a_bounded_number_of_replicas() {
        let mut unpacker = Unpacker::default();
        let line = event("x", serde_json::json!({})).to_wire();
        for i in 0..PEERS * 4 {
            let got = unpacker.take("own", &format!("r{i}|1|B|{line}"));
            assert_eq!(got.len(), 1);
        }
        assert_eq!(unpacker.from.len(), PEERS);
        // The latest replicas are the ones kept: the next notice of the last one is in order.
        let last = format!("r{}", PEERS * 4 - 1);
        assert!(unpacker.from.contains_key(&last));
        assert!(!unpacker.from.contains_key("r0"));
        assert_eq!(unpacker.take("own", &format!("{last}|2|B|{line}")).len(), 1);
        assert_eq!(unpacker.from[&last].0, 2);
    }

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
