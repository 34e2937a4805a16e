//! The sync engine: reads records page by page through the source integration, maps them,
//! and writes them to the target with a bounded number of writes in flight, all through the
//! same outbound client, logs and metrics as `executeRequest`. Fingerprints of what each side
//! last held keep unchanged records from being written again (and bidirectional syncs from
//! ping-ponging). Runs are cancellable, publish their progress, and one config never runs
//! twice at once.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde_json::{Value, json};

use super::mapping::{Mapped, Mapper, OutputBudget, Path, derive_reverse, limits, projection};
use super::pager::Pager;
use super::spec::{ConflictPolicy, ReadSpec, SyncDirection, SyncSpec, WriteSpec};
use super::store::{self, SyncConfigRow, SyncRunRow};
use super::writes::{Flow, Tally, fingerprint, key_text, plan_one_way, run_writes};
use crate::context::AppState;
use crate::db::{new_id, now};
use crate::error::{AppError, AppResult};
use crate::events::{Event, EventKind};
use crate::integrations::model::IntegrationRow;

/// Everything compiled from a config, ready to run.
pub struct Plan {
    pub spec: SyncSpec,
    pub direction: SyncDirection,
    pub forward: Mapper,
    pub reverse: Mapper,
    pub source_key: Path,
    pub target_key: Path,
}

impl Plan {
    pub fn new(config: &SyncConfigRow) -> AppResult<Self> {
        let spec: SyncSpec = serde_json::from_str(&config.spec)?;
        let invalid = |problems: Vec<crate::error::FieldProblem>| AppError::Validation {
            message: problems
                .iter()
                .map(|p| format!("{}: {}", p.path, p.message))
                .collect::<Vec<_>>()
                .join("; "),
            problems,
        };
        let forward = Mapper::compile(&spec.mappings, "mappings").map_err(invalid)?;
        let reverse_spec = if spec.reverse_mappings.is_empty() {
            derive_reverse(&spec.mappings)
        } else {
            spec.reverse_mappings.clone()
        };
        let reverse = Mapper::compile(&reverse_spec, "reverseMappings").map_err(invalid)?;
        let key = |p: &str, what: &str| {
            Path::parse(p).map_err(|e| AppError::validation(format!("{what}: {e}")))
        };
        Ok(Self {
            source_key: key(&spec.source_key, "sourceKey")?,
            target_key: key(&spec.target_key, "targetKey")?,
            direction: SyncDirection::parse(&config.direction),
            forward,
            reverse,
            spec,
        })
    }
}

/// One side's integration and how to read and write it.
struct Side<'a> {
    integration: IntegrationRow,
    read: Option<&'a ReadSpec>,
    write: Option<&'a WriteSpec>,
}
/// Every record of a side, by key.
async fn read_all(
    state: &AppState,
    side: &Side<'_>,
    key: &Path,
    actor: &str,
    cancel: &AtomicBool,
) -> AppResult<HashMap<String, Value>> {
    let mut out = HashMap::new();
    let Some(read) = side.read else {
        return Ok(out);
    };
    let mut pager = Pager::new(state, &side.integration, read, actor);
    while let Some(records) = pager.next().await? {
        if cancel.load(Ordering::SeqCst) {
            break;
        }
        for record in records {
            if let Some(k) = key_text(key.get(&record)) {
                out.insert(k, record);
            }
        }
    }
    Ok(out)
}

fn timestamp(record: &Value, field: Option<&str>) -> Option<chrono::DateTime<chrono::FixedOffset>> {
    let path = Path::parse(field?).ok()?;
    chrono::DateTime::parse_from_rfc3339(path.get(record)?.as_str()?).ok()
}

/// Applies `reverse`'s output onto `record` (what the source holds after a reverse write).
fn merged(record: Option<&Value>, written: &Value, paths: &[Path]) -> Value {
    let mut out = record.cloned().unwrap_or_else(|| json!({}));
    for path in paths {
        if let Some(value) = path.get(written) {
            path.set(&mut out, value.clone());
        }
    }
    out
}

/// Both sides read whole; each key written where it changed, conflicts settled by policy.
async fn two_way(state: &AppState, ctx: &RunContext<'_>, tally: &mut Tally) -> AppResult<()> {
    let plan = ctx.plan;
    let (Some(source_write), Some(target_write)) = (ctx.source.write, ctx.target.write) else {
        return Err(AppError::validation(
            "a bidirectional sync needs a write spec on both sides",
        ));
    };
    let sources = read_all(state, &ctx.source, &plan.source_key, ctx.actor, ctx.cancel).await?;
    let targets = read_all(state, &ctx.target, &plan.target_key, ctx.actor, ctx.cancel).await?;
    // Both sides are held whole (bounded by their pages' limits); each mapped record is
    // bounded by `limits::RECORD_BYTES`, and the run's output by what it read.
    let whole_run = OutputBudget::new(usize::MAX);
    let config_id = ctx.config_id;
    let known = db_step(state, |mut c| async move {
        store::fingerprints(&mut c, config_id).await
    })
    .await?;
    let target_paths = plan.forward.target_paths();
    let source_paths = plan.reverse.target_paths();
    let mut keys: Vec<&String> = sources
        .keys()
        .chain(targets.keys())
        .collect::<HashSet<_>>()
        .into_iter()
        .collect();
    keys.sort();
    let mut to_target: Vec<Value> = Vec::new();
    let mut to_source: Vec<Value> = Vec::new();
    let mut pending: HashMap<String, (Option<String>, Option<String>)> = HashMap::new();
    let mut in_sync = Vec::new();
    for key in keys {
        let (a, b) = (sources.get(key), targets.get(key));
        tally.read += a.is_some() as i64 + b.is_some() as i64;
        let forward = a.map(|a| plan.forward.map(a, &whole_run));
        let fa = match &forward {
            Some(Mapped::Record(m)) => Some(fingerprint(&projection(m, &target_paths))),
            _ => None,
        };
        let fb = b.map(|b| fingerprint(&projection(b, &target_paths)));
        let stored = known.get(key);
        let choose_target = |a: &Value, b: &Value| match plan.spec.conflict_policy {
            ConflictPolicy::SourceWins => true,
            ConflictPolicy::TargetWins => false,
            ConflictPolicy::NewestWins => {
                timestamp(a, plan.spec.source_timestamp_field.as_deref())
                    >= timestamp(b, plan.spec.target_timestamp_field.as_deref())
            }
        };
        let direction = match (a, b, stored) {
            (Some(_), None, None) => Some(true),
            (None, Some(_), None) => Some(false),
            (Some(_), None, Some(_)) | (None, Some(_), Some(_)) | (None, None, _) => None,
            (Some(a), Some(b), None) => {
                if fa.is_some() && fa == fb {
                    in_sync.push((key.clone(), fa.clone(), fb.clone()));
                    None
                } else {
                    Some(choose_target(a, b))
                }
            }
            (Some(a), Some(b), Some((s, t))) => {
                let a_changed = s.as_ref() != fa.as_ref();
                let b_changed = t.as_ref() != fb.as_ref();
                match (a_changed, b_changed) {
                    (false, false) => None,
                    (true, false) => Some(true),
                    (false, true) => Some(false),
                    (true, true) => Some(choose_target(a, b)),
                }
            }
        };
        match direction {
            None => tally.skipped += 1,
            Some(true) => {
                if let Some(a) = a {
                    to_target.push(a.clone());
                }
            }
            Some(false) => {
                if let Some(b) = b {
                    to_source.push(b.clone());
                    pending.insert(key.clone(), (None, fb.clone()));
                }
            }
        }
    }
    // Records already equal on both sides: remember that, so the next run knows them.
    let in_sync = &in_sync;
    db_step(state, |mut c| async move {
        store::save_fingerprints(&mut c, config_id, in_sync, now()).await
    })
    .await?;
    let existing_targets: HashSet<String> = targets.keys().cloned().collect();
    let existing_sources: HashSet<String> = sources.keys().cloned().collect();
    // Forward writes store (source fp, target fp) = (what the source maps to, what was written).
    let forward_known: HashMap<String, (Option<String>, Option<String>)> = HashMap::new();
    let mut writes = plan_one_way(
        plan,
        Flow::Forward,
        &to_target,
        &forward_known,
        &existing_targets,
        target_write,
        tally,
        &whole_run,
    );
    tally.read -= to_target.len() as i64;
    for write in &mut writes {
        for (_, source_fp, target_fp) in &mut write.fingerprints {
            *source_fp = target_fp.clone();
        }
    }
    run_writes(
        state,
        ctx.config_id,
        &ctx.target.integration,
        ctx.actor,
        writes,
        tally,
        ctx.cancel,
    )
    .await?;
    // Backward writes store (source fp after the write, target fp as read).
    let mut writes = plan_one_way(
        plan,
        Flow::Backward,
        &to_source,
        &HashMap::new(),
        &existing_sources,
        source_write,
        tally,
        &whole_run,
    );
    tally.read -= to_source.len() as i64;
    for write in &mut writes {
        let Some(key) = write.key.clone() else {
            continue;
        };
        let after = merged(sources.get(&key), &write.body, &source_paths);
        let source_fp = match plan.forward.map(&after, &whole_run) {
            Mapped::Record(m) => Some(fingerprint(&projection(&m, &target_paths))),
            _ => None,
        };
        let target_fp = pending.get(&key).and_then(|p| p.1.clone());
        write.fingerprints = vec![(key, source_fp, target_fp)];
    }
    run_writes(
        state,
        ctx.config_id,
        &ctx.source.integration,
        ctx.actor,
        writes,
        tally,
        ctx.cancel,
    )
    .await
}

struct RunContext<'a> {
    plan: &'a Plan,
    config_id: &'a str,
    source: Side<'a>,
    target: Side<'a>,
    actor: &'a str,
    cancel: &'a AtomicBool,
}

/// One-way pass, streaming page by page.
async fn one_way(
    state: &AppState,
    ctx: &RunContext<'_>,
    flow: Flow,
    tally: &mut Tally,
    run: &mut SyncRunRow,
) -> AppResult<()> {
    let (from, to) = match flow {
        Flow::Forward => (&ctx.source, &ctx.target),
        Flow::Backward => (&ctx.target, &ctx.source),
    };
    let read = from
        .read
        .ok_or_else(|| AppError::validation("the sync has nothing to read from"))?;
    let write = to
        .write
        .ok_or_else(|| AppError::validation("the sync has nothing to write to"))?;
    let to_key = match flow {
        Flow::Forward => &ctx.plan.target_key,
        Flow::Backward => &ctx.plan.source_key,
    };
    let existing: HashSet<String> = read_all(state, to, to_key, ctx.actor, ctx.cancel)
        .await?
        .into_keys()
        .collect();
    let config_id = ctx.config_id;
    let mut known = db_step(state, |mut c| async move {
        store::fingerprints(&mut c, config_id).await
    })
    .await?;
    let mut pager = Pager::new(state, &from.integration, read, ctx.actor);
    while let Some(records) = pager.next().await? {
        if ctx.cancel.load(Ordering::SeqCst) {
            break;
        }
        let page_budget = OutputBudget::new(limits::OUTPUT_BYTES);
        let writes = plan_one_way(
            ctx.plan,
            flow,
            &records,
            &known,
            &existing,
            write,
            tally,
            &page_budget,
        );
        for w in &writes {
            for (key, s, t) in &w.fingerprints {
                known.insert(key.clone(), (s.clone(), t.clone()));
            }
        }
        run_writes(
            state,
            ctx.config_id,
            &to.integration,
            ctx.actor,
            writes,
            tally,
            ctx.cancel,
        )
        .await?;
        progress(state, run, tally).await;
    }
    Ok(())
}

/// The tally's counts onto the run.
fn count(run: &mut SyncRunRow, tally: &Tally) {
    run.records_read = tally.read;
    // A resumed run's pass skips what the stopped replica wrote: those count as written.
    let carried = tally.written_before.min(tally.skipped);
    run.records_written = tally.written_before + tally.written;
    run.records_skipped = tally.skipped - carried;
    run.records_failed = tally.failed;
    run.error_samples = serde_json::to_string(&tally.samples).unwrap_or_else(|_| "[]".into());
}

async fn progress(state: &AppState, run: &mut SyncRunRow, tally: &Tally) {
    count(run, tally);
    if let Ok(mut conn) = state.pool.get().await {
        let _ = store::save_run(&mut conn, run).await;
    }
    publish(state, EventKind::SyncProgress, run);
}

fn publish(state: &AppState, kind: EventKind, run: &SyncRunRow) {
    state.events.publish(Event {
        kind,
        team_id: run.team_id.clone(),
        project_id: Some(run.project_id.clone()),
        subject_id: run.id.clone(),
        payload: serde_json::to_value(run).unwrap_or_default(),
        request_log: None,
        at: now(),
    });
}

async fn integration(state: &AppState, team_id: &str, id: &str) -> AppResult<IntegrationRow> {
    db_step(state, |mut c| async move {
        crate::integrations::store::get(&mut c, team_id, id).await
    })
    .await
}

/// A database step of a run: retried through an outage of up to half a lease (the run's
/// lease outlives the retries), then the run fails saying the database stayed unavailable.
pub(super) async fn db_step<T, F>(
    state: &AppState,
    step: impl FnMut(crate::db::DbConn) -> F,
) -> AppResult<T>
where
    F: std::future::Future<Output = AppResult<T>>,
{
    let window = Duration::from_secs(state.config.job_lease_secs) / 2;
    crate::db::retry_outages(&state.pool, window, step)
        .await
        .map_err(|err| match err {
            AppError::Unavailable(detail) => AppError::Unavailable(format!(
                "the database stayed unavailable through {} s of retries ({detail})",
                window.as_secs_f32()
            )),
            other => other,
        })
}

/// Queues a run of `config` and starts it; CONFLICT if one is already queued or running.
/// The database decides (its status, and the unique index on active runs), not this
/// replica's list of jobs: a run's task stays listed for a moment after its final state is
/// stored, and a client that saw the run end and started the next was refused.
pub async fn start_run(
    state: &AppState,
    config: SyncConfigRow,
    trigger: &str,
) -> AppResult<SyncRunRow> {
    let plan = Plan::new(&config)?;
    let mut conn = state.pool.get().await?;
    if store::has_active_run(&mut conn, &config.id).await? {
        return Err(AppError::Conflict(
            "a run of this sync is already in progress".into(),
        ));
    }
    let at = now();
    let run = SyncRunRow {
        id: new_id(),
        team_id: config.team_id.clone(),
        project_id: config.project_id.clone(),
        config_id: config.id.clone(),
        status: "queued".into(),
        trigger: trigger.into(),
        records_read: 0,
        records_written: 0,
        records_skipped: 0,
        records_failed: 0,
        error_samples: "[]".into(),
        error: None,
        started_at: None,
        finished_at: None,
        created_at: at,
        heartbeat_at: Some(at),
        attempts: 1,
    };
    store::insert_run(&mut conn, &run).await?;
    store::set_last_run(&mut conn, &config.id, at).await?;
    drop(conn);
    launch(state, config, plan, run.clone());
    Ok(run)
}

/// Runs `run` in a task of this replica, which renews its lease while it runs.
fn launch(state: &AppState, config: SyncConfigRow, plan: Plan, run: SyncRunRow) {
    let cancel = Arc::new(AtomicBool::new(false));
    let task_state = state.clone();
    let task_run = run.clone();
    let task_cancel = cancel.clone();
    // The run starts once it is listed, so its end always finds it there to remove.
    let (listed, is_listed) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        let _ = is_listed.await;
        let run_id = task_run.id.clone();
        // The lease is renewed while the run runs; the run's end stops the renewing (between
        // two renewals: a database call is never cancelled half-way, which SQLite's blocking
        // wrapper cannot survive on an actix worker).
        let (stop, stopped) = tokio::sync::oneshot::channel();
        let lost = Arc::new(AtomicBool::new(false));
        let renewing = tokio::spawn(renew_lease(
            task_state.clone(),
            task_run.clone(),
            task_cancel.clone(),
            lost.clone(),
            stopped,
        ));
        execute_run(&task_state, config, plan, task_run, &task_cancel, &lost).await;
        // Free the config at once (its final state is stored); the renewal ends after.
        task_state.jobs.finished(&run_id);
        let _ = stop.send(());
        let _ = renewing.await;
    });
    state
        .jobs
        .started(run.id.clone(), run.config_id.clone(), cancel, task);
    let _ = listed.send(());
}

/// Renews the run's heartbeat three times per `HUB_JOB_LEASE_SECS` until told to stop. If
/// the run is no longer this replica's (its lease ran out and another replica took it over,
/// or it was cancelled from another replica), the run here is stopped and marked `lost`: it
/// writes nothing more about the run.
async fn renew_lease(
    state: AppState,
    run: SyncRunRow,
    cancel: Arc<AtomicBool>,
    lost: Arc<AtomicBool>,
    mut stop: tokio::sync::oneshot::Receiver<()>,
) {
    let every = Duration::from_millis((state.config.job_lease_secs * 1000 / 3).max(100));
    let mut tick = tokio::time::interval(every);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = &mut stop => return,
        }
        if let Ok(mut conn) = state.pool.get().await
            && let Ok(false) = store::heartbeat(&mut conn, &run.id, run.attempts, now()).await
        {
            tracing::warn!(run = %run.id, "sync run no longer held here (taken over or cancelled elsewhere); stopping it here");
            lost.store(true, Ordering::SeqCst);
            cancel.store(true, Ordering::SeqCst);
            return;
        }
    }
}

/// How many replicas may run one run: a run that keeps stopping its replica is not passed
/// on for ever.
const MAX_ATTEMPTS: i32 = 3;

/// Runs queued or running whose lease ran out (their replica stopped, or lost the database
/// for longer than the lease) are taken over: claimed with a conditional update, so one
/// replica gets each, and resumed here. Records the stopped replica wrote have their
/// fingerprints stored, so the resumed run skips them. A run whose config is gone or
/// disabled, or that has stopped `MAX_ATTEMPTS` replicas, is marked interrupted with the
/// reason instead. Runs of this replica are never touched; a stopping replica takes none.
pub async fn take_over_stale_runs(state: &AppState) -> AppResult<usize> {
    if *state.going_away.borrow() {
        return Ok(0);
    }
    let lease = chrono::Duration::seconds(state.config.job_lease_secs as i64);
    let running_here = state.jobs.ids();
    let at = now();
    let cutoff = at - lease;
    let mut conn = state.pool.get().await?;
    let stale = store::stale_runs(&mut conn, cutoff, &running_here, 8).await?;
    let mut taken = 0;
    for mut run in stale {
        if !store::take_over(&mut conn, &run.id, cutoff, at).await? {
            continue;
        }
        run.attempts += 1;
        run.heartbeat_at = Some(at);
        let ready = match store::get_config(&mut conn, &run.team_id, &run.config_id).await {
            Ok(config) if !config.enabled => Err("its sync config was disabled".to_string()),
            Ok(_) if run.attempts > MAX_ATTEMPTS => Err(format!(
                "its replica stopped {} times while running it (no heartbeat for {} s each time)",
                run.attempts - 1,
                state.config.job_lease_secs
            )),
            Ok(config) => Plan::new(&config)
                .map(|plan| (config, plan))
                .map_err(|err| err.message()),
            Err(err) => Err(format!("its sync config cannot be read: {}", err.message())),
        };
        match ready {
            Ok((config, plan)) => {
                tracing::warn!(run = %run.id, attempts = run.attempts, "taking over a sync run whose replica stopped");
                metrics::counter!("hub_sync_runs_taken_over_total").increment(1);
                launch(state, config, plan, run);
                taken += 1;
            }
            Err(reason) => {
                tracing::warn!(run = %run.id, %reason, "sync run whose replica stopped marked interrupted");
                store::interrupt_runs(&mut conn, std::slice::from_ref(&run.id), &reason, at)
                    .await?;
            }
        }
    }
    Ok(taken)
}

/// Stores the run's final state, retrying while the database is out (up to one lease); if it
/// still cannot, the run stays `running` in the database until its lease runs out and it is
/// taken over. False if the run is no longer this replica's (see `renew_lease`).
async fn save_final(state: &AppState, run: &SyncRunRow) -> bool {
    let lease = Duration::from_secs(state.config.job_lease_secs);
    let saved = crate::db::retry_outages(&state.pool, lease, |mut c| async move {
        store::save_run(&mut c, run).await
    })
    .await;
    match saved {
        Ok(held) => held,
        Err(err) => {
            tracing::error!(code = err.code(), run = %run.id, "sync run result not stored; it will be taken over once its lease runs out");
            true
        }
    }
}

async fn execute_run(
    state: &AppState,
    config: SyncConfigRow,
    plan: Plan,
    mut run: SyncRunRow,
    cancel: &AtomicBool,
    lost: &AtomicBool,
) {
    run.status = "running".into();
    run.started_at.get_or_insert_with(now);
    if let Ok(mut conn) = state.pool.get().await {
        let _ = store::save_run(&mut conn, &run).await;
    }
    // A run taken over goes on: what the stopped replica wrote is counted as written, and
    // skipped by this pass (its fingerprints are stored).
    let resumed = run.attempts > 1;
    let kind = if resumed {
        EventKind::SyncProgress
    } else {
        EventKind::SyncStarted
    };
    publish(state, kind, &run);
    let actor = format!("sync:{}", run.id);
    let mut tally = Tally {
        written_before: if resumed { run.records_written } else { 0 },
        ..Tally::default()
    };
    let outcome = async {
        let source = integration(state, &config.team_id, &config.source_integration_id).await?;
        let target = integration(state, &config.team_id, &config.target_integration_id).await?;
        let ctx = RunContext {
            plan: &plan,
            config_id: &config.id,
            source: Side {
                integration: source,
                read: plan.spec.source_read.as_ref(),
                write: plan.spec.source_write.as_ref(),
            },
            target: Side {
                integration: target,
                read: plan.spec.target_read.as_ref(),
                write: plan.spec.target_write.as_ref(),
            },
            actor: &actor,
            cancel,
        };
        match plan.direction {
            SyncDirection::SourceToTarget => {
                one_way(state, &ctx, Flow::Forward, &mut tally, &mut run).await
            }
            SyncDirection::TargetToSource => {
                one_way(state, &ctx, Flow::Backward, &mut tally, &mut run).await
            }
            SyncDirection::Bidirectional => two_way(state, &ctx, &mut tally).await,
        }
    }
    .await;
    run.status = match &outcome {
        _ if cancel.load(Ordering::SeqCst) => "cancelled",
        Err(_) => "failed",
        Ok(()) if tally.failed > 0 && tally.written + tally.skipped > 0 => "partially_failed",
        Ok(()) if tally.failed > 0 => "failed",
        Ok(()) => "succeeded",
    }
    .into();
    if let Err(err) = &outcome {
        run.error = Some(match err {
            // The run's reason names the outage (the API answers only "unavailable").
            AppError::Unavailable(detail) => detail.clone(),
            other => other.message(),
        });
    }
    run.finished_at = Some(now());
    // The final state is announced once, by the event that ends the run.
    count(&mut run, &tally);
    if lost.load(Ordering::SeqCst) || !save_final(state, &run).await {
        // Another replica holds the run now: what it does is the run's story.
        return;
    }
    let status: &'static str = match run.status.as_str() {
        "cancelled" => "cancelled",
        "failed" => "failed",
        "partially_failed" => "partially_failed",
        _ => "succeeded",
    };
    metrics::counter!("hub_sync_runs_total", "status" => status).increment(1);
    for (kind, records) in [
        ("read", run.records_read),
        ("written", run.records_written),
        ("skipped", run.records_skipped),
        ("failed", run.records_failed),
    ] {
        metrics::counter!("hub_sync_records_total", "kind" => kind)
            .increment(records.max(0) as u64);
    }
    let kind = if run.status == "failed" {
        EventKind::SyncFailed
    } else {
        EventKind::SyncCompleted
    };
    publish(state, kind, &run);
}

/// What a push did for one config.
pub struct PushOutcome {
    pub config_id: String,
    pub written: i64,
    pub skipped: i64,
    pub failed: i64,
    pub errors: Vec<Value>,
    pub error: Option<AppError>,
}

/// Sends `records` through one config's mappings to its target, now; the mapped output of
/// the whole push (every config) comes out of `budget`.
pub async fn push(
    state: &AppState,
    config: &SyncConfigRow,
    records: &[Value],
    actor: &str,
    budget: &OutputBudget,
) -> PushOutcome {
    let mut tally = Tally::default();
    let outcome: AppResult<()> = async {
        let plan = Plan::new(config)?;
        let write = plan
            .spec
            .target_write
            .as_ref()
            .ok_or_else(|| AppError::validation("the sync has no target write spec"))?;
        let target = integration(state, &config.team_id, &config.target_integration_id).await?;
        let known = store::fingerprints(&mut state.pool.get().await?, &config.id).await?;
        let never = AtomicBool::new(false);
        let writes = plan_one_way(
            &plan,
            Flow::Forward,
            records,
            &known,
            &HashSet::new(),
            write,
            &mut tally,
            budget,
        );
        run_writes(
            state, &config.id, &target, actor, writes, &mut tally, &never,
        )
        .await
    }
    .await;
    PushOutcome {
        config_id: config.id.clone(),
        written: tally.written,
        skipped: tally.skipped,
        failed: tally.failed,
        errors: tally.samples,
        error: outcome.err(),
    }
}

/// Starts every enabled, scheduled config whose interval has passed (and that is not
/// running); called by the scheduler loop.
pub async fn run_scheduled(state: &AppState) -> AppResult<()> {
    let configs = store::scheduled_configs(&mut state.pool.get().await?).await?;
    let at = now();
    for config in configs {
        let Some(every) = config.schedule_secs else {
            continue;
        };
        let every = chrono::Duration::seconds(every);
        let due = config.last_run_at.is_none_or(|last| at - last >= every);
        if due && !state.jobs.runs_group(&config.id) {
            // With several replicas each sees the period due: the one whose conditional
            // update moves `last_run_at` runs it, the others skip it.
            match store::claim_period(&mut state.pool.get().await?, &config.id, at, every).await {
                Ok(true) => {}
                Ok(false) => continue,
                Err(err) => {
                    tracing::warn!(code = err.code(), "scheduled sync not claimed");
                    continue;
                }
            }
            match start_run(state, config, "schedule").await {
                Ok(_) | Err(AppError::Conflict(_)) => {}
                Err(err) => tracing::warn!(code = err.code(), "scheduled sync not started"),
            }
        }
    }
    Ok(())
}
