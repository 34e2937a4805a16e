//! The event stream a subscription reads: the caller's team's events from the bus, a notice
//! of how many it missed when it falls behind, and its end when the caller's key is revoked
//! or its credential expires.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_graphql::{Context, SimpleObject};
use futures_util::StreamExt;
use futures_util::stream::BoxStream;
use tokio::sync::broadcast::error::RecvError;

use super::AppState;
use crate::auth::{Actor, Principal};
use crate::db::now;
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

/// In a request's data: instead of watching, the subscription yields one notice of how many
/// events were missed (how a subscriber that fell behind its socket is told, in the shape its
/// own selection asks for).
pub struct MissedNotice(pub u64);

/// In a request's data: counts the events the subscription missed on the bus, so that whoever
/// runs it knows which of its results are notices, and of how many events.
#[derive(Default)]
pub struct LagMeter(AtomicU64);

impl LagMeter {
    /// Events reported missed since the last call.
    pub fn take(&self) -> u64 {
        self.0.swap(0, Ordering::SeqCst)
    }
}

/// The caller's team's events, until its key is revoked or its credential expires.
pub fn watch(ctx: &Context<'_>, principal: &Principal) -> BoxStream<'static, Live> {
    if let Some(MissedNotice(count)) = ctx.data_opt::<MissedNotice>() {
        return futures_util::stream::iter([Live::Missed(*count)]).boxed();
    }
    let state = ctx.data_unchecked::<AppState>();
    let receiver = state.events.subscribe();
    let team = principal.team_id.clone();
    let key_id = match &principal.actor {
        Actor::ApiKey { id } => Some(id.clone()),
        Actor::User { .. } => None,
    };
    let until_expiry = principal
        .expires_at
        .map(|at| Duration::from_millis((at - now()).num_milliseconds().max(0) as u64));
    let meter = ctx.data_opt::<Arc<LagMeter>>().cloned();
    let events = futures_util::stream::unfold(receiver, move |mut receiver| {
        let meter = meter.clone();
        async move {
            match receiver.recv().await {
                Ok(event) => Some((Live::Event(event), receiver)),
                Err(RecvError::Lagged(missed)) => {
                    if let Some(meter) = meter {
                        meter.0.fetch_add(missed, Ordering::SeqCst);
                    }
                    Some((Live::Missed(missed), receiver))
                }
                Err(RecvError::Closed) => None,
            }
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
    events.take_until(Box::pin(expiry)).boxed()
}
