//! Live updates over GraphQL subscriptions: authentication of a WebSocket connection from its
//! `connection_init` payload, the per-connection subscription limit, and the event stream each
//! subscription reads: confined to the caller's team, told how many events it missed when it
//! falls behind, and ended when the caller's key is revoked or its credential expires.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_graphql::{Context, Data, SimpleObject};
use futures_util::{Stream, StreamExt};
use tokio::sync::broadcast::error::RecvError;

use crate::app::AppState;
use crate::auth::{Actor, Principal, Scope};
use crate::db::now;
use crate::error::AppError;
use crate::events::{Event, EventKind};

/// A notice in place of events a slow subscriber missed.
#[derive(SimpleObject, Clone)]
pub struct EventsMissed {
    /// How many events were dropped for this subscriber.
    pub count: i32,
}

pub enum Live {
    Event(Arc<Event>),
    Missed(u64),
}

/// Open subscriptions of one connection.
pub struct SubscriptionSlots {
    open: AtomicUsize,
    max: usize,
}

/// Held by a running subscription; frees its slot when the subscription ends.
pub struct SlotGuard(Arc<SubscriptionSlots>);

impl Drop for SlotGuard {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Takes a slot of the connection (subscriptions over HTTP have no connection and no limit).
pub fn take_slot(ctx: &Context<'_>) -> Result<Option<SlotGuard>, AppError> {
    let Some(slots) = ctx.data_opt::<Arc<SubscriptionSlots>>() else {
        return Ok(None);
    };
    if slots.open.fetch_add(1, Ordering::SeqCst) >= slots.max {
        slots.open.fetch_sub(1, Ordering::SeqCst);
        return Err(AppError::Forbidden(format!(
            "at most {} subscriptions per connection",
            slots.max
        )));
    }
    Ok(Some(SlotGuard(slots.clone())))
}

/// `connection_init`: `{"Authorization": "Bearer <API key or JWT>"}` (any case of the key).
pub async fn connection_init(
    state: &AppState,
    payload: serde_json::Value,
) -> async_graphql::Result<Data> {
    let credential = payload
        .as_object()
        .and_then(|o| {
            o.iter()
                .find(|(k, _)| {
                    k.eq_ignore_ascii_case("authorization") || k.eq_ignore_ascii_case("x-api-key")
                })
                .and_then(|(_, v)| v.as_str())
        })
        .map(|v| {
            let v = v.trim();
            match v.split_once(' ') {
                Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") => {
                    token.trim().to_string()
                }
                _ => v.to_string(),
            }
        })
        .filter(|v| !v.is_empty())
        .ok_or_else(|| {
            AppError::Unauthenticated(
                "send {\"Authorization\": \"Bearer <key>\"} in connection_init".into(),
            )
        })?;
    let principal = crate::auth::authenticate(state, &credential).await?;
    principal.require(Scope::LogsSubscribe)?;
    let mut data = Data::default();
    data.insert(principal);
    data.insert(Arc::new(SubscriptionSlots {
        open: AtomicUsize::new(0),
        max: state.config.max_subscriptions_per_connection,
    }));
    Ok(data)
}

/// The caller's team's events, until its key is revoked or its credential expires.
pub fn watch(
    state: &AppState,
    principal: &Principal,
    slot: Option<SlotGuard>,
) -> impl Stream<Item = Live> + Send + use<> {
    let receiver = state.events.subscribe();
    let team = principal.team_id.clone();
    let key_id = match &principal.actor {
        Actor::ApiKey { id } => Some(id.clone()),
        Actor::User { .. } => None,
    };
    let until_expiry = principal
        .expires_at
        .map(|at| Duration::from_millis((at - now()).num_milliseconds().max(0) as u64));
    let events = futures_util::stream::unfold(receiver, |mut receiver| async move {
        match receiver.recv().await {
            Ok(event) => Some((Live::Event(event), receiver)),
            Err(RecvError::Lagged(missed)) => Some((Live::Missed(missed), receiver)),
            Err(RecvError::Closed) => None,
        }
    })
    .filter(move |item| {
        let keep = match item {
            Live::Event(event) => event.team_id == team,
            Live::Missed(_) => true,
        };
        std::future::ready(keep)
    })
    .take_while(move |item| {
        let revoked = matches!(item, Live::Event(e) if e.kind == EventKind::ApiKeyRevoked && Some(&e.subject_id) == key_id.as_ref());
        std::future::ready(!revoked)
    });
    let expiry = async move {
        match until_expiry {
            Some(wait) => tokio::time::sleep(wait).await,
            None => std::future::pending::<()>().await,
        }
    };
    events.take_until(Box::pin(expiry)).map(move |item| {
        let _held = &slot;
        item
    })
}
