//! Writing mapped records: planning creates and updates by key (skipping what the
//! fingerprints say is unchanged), sending them a bounded number at a time, and keeping the
//! counts, samples and fingerprints of what was written.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};

use futures_util::StreamExt;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokio::sync::oneshot;

use super::engine::Plan;
use super::mapping::{Mapped, OutputBudget, Path, projection};
use super::spec::WriteSpec;
use super::store;
use crate::calls::service::{CallBody, CallInput, execute, parse_method};
use crate::context::AppState;
use crate::db::now;
use crate::error::{AppError, AppResult};
use crate::integrations::model::IntegrationRow;

const MAX_SAMPLES: usize = 20;

pub fn fingerprint(value: &Value) -> String {
    let digest = Sha256::digest(value.to_string().as_bytes());
    digest.iter().take(16).map(|b| format!("{b:02x}")).collect()
}

pub fn key_text(value: Option<&Value>) -> Option<String> {
    match value? {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// Counts and samples of a run (or a push) as it goes.
#[derive(Default)]
pub struct Tally {
    pub read: i64,
    pub written: i64,
    pub skipped: i64,
    pub failed: i64,
    pub samples: Vec<Value>,
    /// Records written by the replica that ran this run before it was taken over.
    pub written_before: i64,
}

impl Tally {
    pub fn sample(&mut self, key: Option<&str>, message: String) {
        if self.samples.len() < MAX_SAMPLES {
            self.samples.push(json!({ "key": key, "message": message }));
        }
    }
}

pub fn render_path(template: &str, record: &Value, key: &str) -> AppResult<String> {
    let mut out = String::new();
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let close = rest[open..].find('}').map(|c| c + open).ok_or_else(|| {
            AppError::validation(format!("path template `{template}` has an unclosed {{"))
        })?;
        let name = &rest[open + 1..close];
        let value = if name == "key" {
            key.to_string()
        } else {
            let path = Path::parse(name).map_err(AppError::validation)?;
            key_text(path.get(record)).ok_or_else(|| {
                AppError::validation(format!("the record has no `{name}` for the path"))
            })?
        };
        out.extend(percent_encoding::utf8_percent_encode(
            &value,
            percent_encoding::NON_ALPHANUMERIC,
        ));
        rest = &rest[close + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// An endpoint's parameters for a record: its mapped fields, and `key`.
fn with_key(mapped: Value, key: &str) -> Value {
    match mapped {
        Value::Object(mut fields) => {
            fields
                .entry("key")
                .or_insert_with(|| Value::String(key.to_string()));
            Value::Object(fields)
        }
        other => serde_json::json!({ "key": key, "record": other }),
    }
}

/// A write to send: create or update one record, or create several at once.
pub struct Write {
    pub key: Option<String>,
    pub keys: Vec<String>,
    pub method: String,
    pub path: String,
    pub body: Value,
    /// Sent through this endpoint of a template integration, with `body` (the mapped record
    /// and its `key`) as its parameters, instead of `method` and `path`.
    pub endpoint: Option<String>,
    /// Fingerprints to store for each key on success: (key, source fp, target fp).
    pub fingerprints: Vec<(String, Option<String>, Option<String>)>,
}

async fn send_write(
    state: &AppState,
    integration: &IntegrationRow,
    actor: &str,
    write: &Write,
) -> Result<(), String> {
    let sent = match &write.endpoint {
        Some(endpoint) => {
            crate::calls::service::execute_endpoint(
                state,
                integration,
                actor,
                endpoint,
                &write.body,
            )
            .await
        }
        None => {
            let input = CallInput {
                method: parse_method(&write.method).map_err(|e| e.message())?,
                path: write.path.clone(),
                query: None,
                headers: None,
                body: Some(CallBody::Json(write.body.clone())),
            };
            execute(state, integration, actor, input).await
        }
    };
    match sent {
        Ok(result) if (200..300).contains(&result.status) => Ok(()),
        Ok(result) => {
            let detail = result
                .json
                .map(|j| j.to_string())
                .or(result.text)
                .unwrap_or_default()
                .chars()
                .take(200)
                .collect::<String>();
            Err(format!("status {}: {detail}", result.status))
        }
        Err(err) => Err(format!("{}: {}", err.code(), err.message())),
    }
}

/// Sends writes a bounded number at a time; counts outcomes. Each write's fingerprints are
/// stored as soon as it succeeds, before its slot takes the next write: after a crash a
/// re-run writes again at most the writes that were in flight (`HUB_SYNC_WRITE_CONCURRENCY`),
/// never a whole page. Writes that succeed while a commit is under way wait for the next one
/// and share it (a group commit: one statement and one transaction for all of them). A
/// fingerprint that cannot be stored fails the run with the reason.
pub async fn run_writes(
    state: &AppState,
    config_id: &str,
    integration: &IntegrationRow,
    actor: &str,
    writes: Vec<Write>,
    tally: &mut Tally,
    cancel: &AtomicBool,
) -> AppResult<()> {
    let concurrency = state.config.sync_write_concurrency.max(1);
    let (commits, mut to_commit) =
        tokio::sync::mpsc::channel::<(Fingerprints, oneshot::Sender<()>)>(concurrency);
    let sending = async move {
        let commits = &commits;
        futures_util::stream::iter(writes)
            .map(|write| async move {
                if cancel.load(Ordering::SeqCst) {
                    return (write, Err("cancelled".to_string()));
                }
                let outcome = send_write(state, integration, actor, &write).await;
                if outcome.is_ok() && !write.fingerprints.is_empty() {
                    let (stored, committed) = oneshot::channel();
                    if commits
                        .send((write.fingerprints.clone(), stored))
                        .await
                        .is_ok()
                    {
                        let _ = committed.await;
                    }
                }
                (write, outcome)
            })
            .buffer_unordered(concurrency)
            .collect::<Vec<_>>()
            .await
    };
    let committing = async {
        let mut unrecorded = None;
        while let Some(first) = to_commit.recv().await {
            let mut batch = vec![first];
            while let Ok(next) = to_commit.try_recv() {
                batch.push(next);
            }
            let entries: Fingerprints = batch
                .iter()
                .flat_map(|(fingerprints, _)| fingerprints.iter().cloned())
                .collect();
            if let Err(err) = record_written(state, config_id, &entries).await {
                unrecorded.get_or_insert(err);
            }
            for (_, stored) in batch {
                let _ = stored.send(());
            }
        }
        unrecorded
    };
    let (outcomes, unrecorded) = tokio::join!(sending, committing);
    for (write, outcome) in outcomes {
        let records = write.keys.len().max(1) as i64;
        match outcome {
            Ok(()) => tally.written += records,
            Err(message) if message == "cancelled" => {}
            Err(message) => {
                tally.failed += records;
                tally.sample(write.key.as_deref(), message);
            }
        }
    }
    match unrecorded {
        Some(err) => Err(err),
        None => Ok(()),
    }
}

type Fingerprints = Vec<(String, Option<String>, Option<String>)>;

/// Stores what successful writes wrote.
async fn record_written(
    state: &AppState,
    config_id: &str,
    fingerprints: &[(String, Option<String>, Option<String>)],
) -> AppResult<()> {
    if fingerprints.is_empty() {
        return Ok(());
    }
    super::engine::db_step(state, |mut c| async move {
        store::save_fingerprints(&mut c, config_id, fingerprints, now()).await
    })
    .await
}

/// Which way a one-way pass goes.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    Forward,
    Backward,
}

/// Maps `records` and plans their writes to the other side (one-way).
#[allow(clippy::too_many_arguments)]
pub fn plan_one_way(
    plan: &Plan,
    flow: Flow,
    records: &[Value],
    known: &HashMap<String, (Option<String>, Option<String>)>,
    existing: &HashSet<String>,
    write: &WriteSpec,
    tally: &mut Tally,
    budget: &OutputBudget,
) -> Vec<Write> {
    let (mapper, from_key, to_key) = match flow {
        Flow::Forward => (&plan.forward, &plan.source_key, &plan.target_key),
        Flow::Backward => (&plan.reverse, &plan.target_key, &plan.source_key),
    };
    let to_paths = mapper.target_paths();
    let mut creates: Vec<(String, Value, String)> = Vec::new();
    let mut writes = Vec::new();
    for record in records {
        tally.read += 1;
        let from = key_text(from_key.get(record));
        let mapped = match mapper.map(record, budget) {
            Mapped::Record(mapped) => mapped,
            Mapped::Skipped(reason) => {
                tally.skipped += 1;
                tally.sample(from.as_deref(), format!("skipped: {reason}"));
                continue;
            }
            Mapped::Failed(problems) => {
                tally.failed += 1;
                let message = problems
                    .iter()
                    .map(|p| format!("{}: {}", p.path, p.message))
                    .collect::<Vec<_>>()
                    .join("; ");
                tally.sample(from.as_deref(), message);
                continue;
            }
        };
        let Some(key) = key_text(to_key.get(&mapped)) else {
            tally.failed += 1;
            tally.sample(
                from.as_deref(),
                format!("the mapped record has no key `{}`", to_key.as_str()),
            );
            continue;
        };
        let fp = fingerprint(&projection(&mapped, &to_paths));
        let stored = known.get(&key);
        let written_fp = stored.and_then(|(s, t)| {
            if flow == Flow::Forward {
                t.clone()
            } else {
                s.clone()
            }
        });
        if written_fp.as_deref() == Some(fp.as_str()) {
            tally.skipped += 1;
            continue;
        }
        let fingerprints = vec![match flow {
            Flow::Forward => (
                key.clone(),
                stored.and_then(|s| s.0.clone()),
                Some(fp.clone()),
            ),
            Flow::Backward => (
                key.clone(),
                Some(fp.clone()),
                stored.and_then(|s| s.1.clone()),
            ),
        }];
        let exists = stored.is_some() || existing.contains(&key);
        if let (Some(endpoint), true) = (&write.update_endpoint, exists) {
            writes.push(Write {
                key: Some(key.clone()),
                keys: vec![key.clone()],
                method: String::new(),
                path: String::new(),
                body: with_key(mapped, &key),
                endpoint: Some(endpoint.clone()),
                fingerprints,
            });
            continue;
        }
        match (&write.update_path, exists) {
            (Some(update_path), true) => match render_path(update_path, &mapped, &key) {
                Ok(path) => writes.push(Write {
                    key: Some(key.clone()),
                    keys: vec![key],
                    method: write.update_method.clone(),
                    path,
                    body: mapped,
                    endpoint: None,
                    fingerprints,
                }),
                Err(err) => {
                    tally.failed += 1;
                    tally.sample(Some(&key), err.message());
                }
            },
            _ => creates.push((key, mapped, fp)),
        }
    }
    let batch = write.batch_size.unwrap_or(1).max(1) as usize;
    if batch > 1 {
        for chunk in creates.chunks(batch) {
            writes.push(Write {
                key: chunk.first().map(|c| c.0.clone()),
                keys: chunk.iter().map(|c| c.0.clone()).collect(),
                method: write.create_method.clone(),
                path: write.create_path.clone(),
                body: Value::Array(chunk.iter().map(|c| c.1.clone()).collect()),
                endpoint: None,
                fingerprints: chunk
                    .iter()
                    .map(|(key, _, fp)| match flow {
                        Flow::Forward => (key.clone(), None, Some(fp.clone())),
                        Flow::Backward => (key.clone(), Some(fp.clone()), None),
                    })
                    .collect(),
            });
        }
    } else {
        for (key, mapped, fp) in creates {
            let fingerprints = vec![match flow {
                Flow::Forward => (key.clone(), None, Some(fp.clone())),
                Flow::Backward => (key.clone(), Some(fp.clone()), None),
            }];
            if let Some(endpoint) = &write.create_endpoint {
                writes.push(Write {
                    key: Some(key.clone()),
                    keys: vec![key.clone()],
                    method: String::new(),
                    path: String::new(),
                    body: with_key(mapped, &key),
                    endpoint: Some(endpoint.clone()),
                    fingerprints,
                });
                continue;
            }
            match render_path(&write.create_path, &mapped, &key) {
                Ok(path) => writes.push(Write {
                    key: Some(key.clone()),
                    keys: vec![key.clone()],
                    method: write.create_method.clone(),
                    path,
                    body: mapped,
                    endpoint: None,
                    fingerprints,
                }),
                Err(err) => {
                    tally.failed += 1;
                    tally.sample(Some(&key), err.message());
                }
            }
        }
    }
    writes
}
