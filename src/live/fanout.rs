//! One execution per distinct subscription. Subscribers that ask the same thing with the same
//! credential (equal principal, document, operation name and variables) share one
//! async-graphql execution: each event is resolved and serialised once, and only the frame
//! around it (the subscription's id) is written per subscriber. What a subscription may see
//! depends only on those inputs, so sharing never shows anyone more than their own execution
//! would. A group lives while it has members; it ends for all of them when its stream ends
//! (revoked key, expired credential, an error answer).
//!
//! A member whose socket cannot take more falls behind alone: from then on its events are
//! counted, not queued, until its connection has sent it a notice of how many it missed
//! (rendered through its own selection); then it receives events again. Memory per member is
//! bounded by its connection's frame buffer.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use async_graphql::{Request, Variables};
use bytes::Bytes;
use futures_util::StreamExt;
use tokio::sync::mpsc;
use tokio::sync::mpsc::error::TrySendError;
use tokio::task::AbortHandle;

use super::socket::{Control, Protocol, json_string, next_message, text_frame};
use crate::auth::Principal;
use crate::context::AppState;
use crate::context::live::{LagMeter, MissedNotice};
use crate::graphql::HubSchema;

/// Locks, carrying on if another thread panicked while holding the lock (the data is plain
/// bookkeeping that stays consistent between statements).
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// What makes two subscriptions the same.
#[derive(PartialEq, Eq, Hash)]
struct Key {
    principal: Principal,
    query: String,
    operation_name: Option<String>,
    variables: String,
}

/// The subscriptions running on this replica, by what they ask.
#[derive(Default)]
pub struct Fanout {
    groups: Mutex<HashMap<Arc<Key>, Arc<Group>>>,
}

/// A subscription operation and who runs it.
pub struct Operation {
    pub principal: Arc<Principal>,
    pub query: String,
    pub operation_name: Option<String>,
    pub variables: Variables,
}

impl Operation {
    fn request(&self, state: &AppState) -> Request {
        let mut request = Request::new(self.query.clone())
            .variables(self.variables.clone())
            .data(self.principal.clone());
        if let Some(name) = &self.operation_name {
            request = request.operation_name(name.clone());
        }
        state.documents.prepare(&mut request);
        request
    }
}

/// One subscriber: where its frames go and how far behind it is.
pub struct Member {
    frames: mpsc::Sender<Bytes>,
    control: futures_channel::mpsc::UnboundedSender<Control>,
    protocol: Protocol,
    /// The subscription id as the client sent it, and as a JSON string.
    id: String,
    id_json: String,
    /// Tells this subscription apart from an earlier one with the same id.
    token: u64,
    lag: Mutex<Lag>,
}

#[derive(Default)]
struct Lag {
    lagging: bool,
    missed: u64,
}

impl Member {
    pub fn new(
        frames: mpsc::Sender<Bytes>,
        control: futures_channel::mpsc::UnboundedSender<Control>,
        protocol: Protocol,
        id: &str,
        token: u64,
    ) -> Self {
        Self {
            frames,
            control,
            protocol,
            id: id.to_string(),
            id_json: json_string(id),
            token,
            lag: Mutex::default(),
        }
    }

    /// Queues the result's frame, or counts it as missed when the member is behind. A result
    /// stands for `events` events (more than one when it is itself a notice of missed ones).
    fn offer(&self, payload: &str, events: u64) {
        static DELIVERED: std::sync::LazyLock<metrics::Counter> = std::sync::LazyLock::new(|| {
            metrics::counter!("hub_subscription_results_delivered_total")
        });
        static MISSED: std::sync::LazyLock<metrics::Counter> =
            std::sync::LazyLock::new(|| metrics::counter!("hub_subscription_events_missed_total"));
        let mut lag = lock(&self.lag);
        if lag.lagging {
            lag.missed += events;
            MISSED.increment(events);
            return;
        }
        let frame = text_frame(&next_message(self.protocol, &self.id_json, payload));
        match self.frames.try_send(frame) {
            Ok(()) => DELIVERED.increment(1),
            Err(TrySendError::Closed(_)) => {}
            Err(TrySendError::Full(_)) => {
                MISSED.increment(events);
                *lag = Lag {
                    lagging: true,
                    missed: events,
                };
                let _ = self.control.unbounded_send(Control::Lagging {
                    id: self.id.clone(),
                    token: self.token,
                });
            }
        }
    }

    /// For the connection: how many events to report missed now; None once caught up, and
    /// from then on events flow to the member again.
    pub fn take_missed(&self) -> Option<u64> {
        let mut lag = lock(&self.lag);
        if lag.missed == 0 {
            lag.lagging = false;
            return None;
        }
        Some(std::mem::take(&mut lag.missed))
    }
}

#[derive(Default)]
struct Members {
    list: HashMap<u64, Arc<Member>>,
    next: u64,
    ended: bool,
    task: Option<AbortHandle>,
}

impl Members {
    fn add(&mut self, member: Arc<Member>) -> u64 {
        self.next += 1;
        self.list.insert(self.next, member);
        self.next
    }
}

pub struct Group {
    key: Arc<Key>,
    operation: Operation,
    members: Mutex<Members>,
    fanout: Arc<Fanout>,
}

/// A member's place in its group; leaving (dropping this) ends a group left empty.
pub struct Membership {
    group: Arc<Group>,
    index: u64,
    pub member: Arc<Member>,
}

impl Drop for Membership {
    fn drop(&mut self) {
        let emptied = {
            let mut members = lock(&self.group.members);
            members.list.remove(&self.index);
            if members.list.is_empty() && !members.ended {
                members.ended = true;
                if let Some(task) = members.task.take() {
                    task.abort();
                }
                true
            } else {
                false
            }
        };
        if emptied {
            self.group.fanout.forget(&self.group);
        }
    }
}

impl Membership {
    /// The notice that `missed` events were missed, as this subscription's selection renders
    /// it (a GraphQL response, serialised).
    pub async fn notice(&self, state: &AppState, schema: &HubSchema, missed: u64) -> String {
        let request = self
            .group
            .operation
            .request(state)
            .data(MissedNotice(missed));
        let response = schema.execute_stream(request).next().await;
        response
            .and_then(|r| serde_json::to_string(&r).ok())
            .unwrap_or_else(|| {
                format!(r#"{{"errors":[{{"message":"{missed} events were missed","extensions":{{"code":"INTERNAL"}}}}]}}"#)
            })
    }
}

impl Fanout {
    /// Adds `member` to the group running `operation`, starting the group if there is none.
    /// Runs on an actix worker: the group's task is spawned there.
    pub fn join(
        self: &Arc<Self>,
        state: &AppState,
        schema: &HubSchema,
        operation: Operation,
        member: Member,
    ) -> Membership {
        let key = Arc::new(Key {
            principal: Principal::clone(&operation.principal),
            query: operation.query.clone(),
            operation_name: operation.operation_name.clone(),
            variables: serde_json::to_string(&operation.variables).unwrap_or_default(),
        });
        let member = Arc::new(member);
        let mut groups = lock(&self.groups);
        if let Some(group) = groups.get(&key) {
            let mut members = lock(&group.members);
            if !members.ended {
                let index = members.add(member.clone());
                return Membership {
                    group: group.clone(),
                    index,
                    member,
                };
            }
        }
        let group = Arc::new(Group {
            key: key.clone(),
            operation,
            members: Mutex::default(),
            fanout: self.clone(),
        });
        let index = lock(&group.members).add(member.clone());
        let task = actix_web::rt::spawn(group.clone().run(state.clone(), schema.clone()));
        lock(&group.members).task = Some(task.abort_handle());
        groups.insert(key, group.clone());
        Membership {
            group,
            index,
            member,
        }
    }

    /// Subscriptions running now (distinct executions) and their subscribers.
    pub fn counts(&self) -> (usize, usize) {
        let groups = lock(&self.groups);
        let members = groups.values().map(|g| lock(&g.members).list.len()).sum();
        (groups.len(), members)
    }

    fn forget(&self, group: &Arc<Group>) {
        let mut groups = lock(&self.groups);
        if groups
            .get(&group.key)
            .is_some_and(|current| Arc::ptr_eq(current, group))
        {
            groups.remove(&group.key);
        }
    }
}

impl Group {
    async fn run(self: Arc<Self>, state: AppState, schema: HubSchema) {
        let meter = Arc::new(LagMeter::default());
        let request = self.operation.request(&state).data(meter.clone());
        let mut stream = schema.execute_stream(request);
        let mut first = true;
        while let Some(response) = stream.next().await {
            if std::mem::take(&mut first)
                && let Some(errors) = super::socket::request_errors(&response)
            {
                // The document was refused (validation, limits): each member is told with its
                // protocol's `error` message, and nothing runs.
                return self.fail(errors);
            }
            let events = meter.take().max(1);
            match serde_json::to_string(&response) {
                Ok(payload) => {
                    // Members join and leave (on other workers) while the event is written.
                    let members: Vec<Arc<Member>> =
                        lock(&self.members).list.values().cloned().collect();
                    for member in members {
                        member.offer(&payload, events);
                    }
                }
                Err(err) => tracing::error!(%err, "a subscription event could not be serialised"),
            }
        }
        self.end();
    }

    /// The operation was refused before it ran: every member gets the `error` message.
    fn fail(self: &Arc<Self>, errors: serde_json::Value) {
        let list = self.close_members();
        for member in list.values() {
            let text = super::socket::error_message(member.protocol, &member.id, errors.clone());
            let _ = member.frames.try_send(text_frame(&text));
            let _ = member.control.unbounded_send(Control::Failed {
                id: member.id.clone(),
                token: member.token,
            });
        }
    }

    fn close_members(self: &Arc<Self>) -> HashMap<u64, Arc<Member>> {
        let list = {
            let mut members = lock(&self.members);
            members.ended = true;
            members.task = None;
            std::mem::take(&mut members.list)
        };
        self.fanout.forget(self);
        list
    }

    /// The stream ended: every member is told (its connection sends `complete`).
    fn end(self: &Arc<Self>) {
        let list = self.close_members();
        for member in list.values() {
            let _ = member.control.unbounded_send(Control::Ended {
                id: member.id.clone(),
                token: member.token,
            });
        }
    }
}
