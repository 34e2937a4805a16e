use async_graphql::{Context, Enum, ID, Json, Object, SimpleObject, Subscription, Union};
use chrono::{DateTime, Utc};
use futures_util::{Stream, StreamExt};
use serde_json::Value;

use super::engine::{self, Plan};
use super::mapping::{Mapped, Mapper, OutputBudget, json_depth_exceeds, limits};
use super::spec::{FieldMapping, SyncConfigInput, SyncDirection, SyncSpec};
use super::store::{self, RunFilter, SyncConfigRow, SyncRunRow};
use crate::audit;
use crate::auth::{Principal, Scope, ScopeGuard, principal};
use crate::context::live::{EventsMissed, Live, watch};
use crate::context::{Connection, Page, asks_total, conn, state};
use crate::db::now;
use crate::error::{AppError, AppResult, FieldProblem};
use crate::events::EventKind;

pub struct SyncConfigNode {
    row: SyncConfigRow,
    spec: SyncSpec,
}

impl SyncConfigNode {
    fn new(row: SyncConfigRow) -> AppResult<Self> {
        let spec = serde_json::from_str(&row.spec)?;
        Ok(Self { row, spec })
    }
}

#[Object(name = "SyncConfig")]
impl SyncConfigNode {
    async fn id(&self) -> ID {
        ID(self.row.id.clone())
    }
    async fn name(&self) -> &str {
        &self.row.name
    }
    async fn project_id(&self) -> ID {
        ID(self.row.project_id.clone())
    }
    async fn source_integration_id(&self) -> ID {
        ID(self.row.source_integration_id.clone())
    }
    async fn target_integration_id(&self) -> ID {
        ID(self.row.target_integration_id.clone())
    }
    async fn direction(&self) -> SyncDirection {
        SyncDirection::parse(&self.row.direction)
    }
    /// Reading, writing, keys, mappings and conflict policy.
    async fn spec(&self) -> &SyncSpec {
        &self.spec
    }
    async fn schedule_seconds(&self) -> Option<i64> {
        self.row.schedule_secs
    }
    /// Inbound webhook event types of the source integration that start a run.
    async fn run_on_webhook(&self) -> Vec<String> {
        serde_json::from_str(&self.row.run_on_webhook).unwrap_or_default()
    }
    async fn enabled(&self) -> bool {
        self.row.enabled
    }
    async fn last_run_at(&self) -> Option<DateTime<Utc>> {
        self.row.last_run_at.map(|t| t.and_utc())
    }
    async fn created_at(&self) -> DateTime<Utc> {
        self.row.created_at.and_utc()
    }
    async fn updated_at(&self) -> DateTime<Utc> {
        self.row.updated_at.and_utc()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
pub enum SyncRunStatus {
    Queued,
    Running,
    Succeeded,
    PartiallyFailed,
    Failed,
    Cancelled,
    Interrupted,
}

impl SyncRunStatus {
    fn parse(text: &str) -> Self {
        match text {
            "running" => Self::Running,
            "succeeded" => Self::Succeeded,
            "partially_failed" => Self::PartiallyFailed,
            "failed" => Self::Failed,
            "cancelled" => Self::Cancelled,
            "interrupted" => Self::Interrupted,
            _ => Self::Queued,
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Running => "running",
            Self::Succeeded => "succeeded",
            Self::PartiallyFailed => "partially_failed",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
            Self::Interrupted => "interrupted",
        }
    }
}

#[derive(SimpleObject, Clone)]
pub struct SyncErrorSample {
    /// The record's key, when it has one.
    pub key: Option<String>,
    pub message: String,
}

fn samples(json: &Value) -> Vec<SyncErrorSample> {
    json.as_array()
        .map(|items| {
            items
                .iter()
                .map(|s| SyncErrorSample {
                    key: s["key"].as_str().map(str::to_string),
                    message: s["message"].as_str().unwrap_or_default().to_string(),
                })
                .collect()
        })
        .unwrap_or_default()
}

pub struct SyncRunNode(pub SyncRunRow);

#[Object(name = "SyncRun")]
impl SyncRunNode {
    async fn id(&self) -> ID {
        ID(self.0.id.clone())
    }
    async fn config_id(&self) -> ID {
        ID(self.0.config_id.clone())
    }
    async fn status(&self) -> SyncRunStatus {
        SyncRunStatus::parse(&self.0.status)
    }
    /// `manual`, `schedule`.
    async fn trigger(&self) -> &str {
        &self.0.trigger
    }
    async fn records_read(&self) -> i64 {
        self.0.records_read
    }
    async fn records_written(&self) -> i64 {
        self.0.records_written
    }
    async fn records_skipped(&self) -> i64 {
        self.0.records_skipped
    }
    async fn records_failed(&self) -> i64 {
        self.0.records_failed
    }
    /// Up to 20 failures and skips, with the record keys.
    async fn error_samples(&self) -> Vec<SyncErrorSample> {
        samples(&serde_json::from_str(&self.0.error_samples).unwrap_or_default())
    }
    /// Why the run failed as a whole.
    async fn error(&self) -> Option<&str> {
        self.0.error.as_deref()
    }
    async fn started_at(&self) -> Option<DateTime<Utc>> {
        self.0.started_at.map(|t| t.and_utc())
    }
    async fn finished_at(&self) -> Option<DateTime<Utc>> {
        self.0.finished_at.map(|t| t.and_utc())
    }
    async fn created_at(&self) -> DateTime<Utc> {
        self.0.created_at.and_utc()
    }
    /// How many replicas (or starts of the hub) have run it: a run whose replica stopped is
    /// taken over once its lease runs out and goes on, skipping what was already written.
    async fn attempts(&self) -> i32 {
        self.0.attempts
    }
}

/// The config if the caller may reach it.
async fn reachable(ctx: &Context<'_>, caller: &Principal, id: &str) -> AppResult<SyncConfigRow> {
    let row = store::get_config(&mut *conn(ctx).await?, &caller.team_id, id).await?;
    caller
        .check_project(&row.project_id)
        .map_err(|_| AppError::not_found("sync config"))?;
    Ok(row)
}

#[derive(SimpleObject)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

#[derive(SimpleObject)]
pub struct MappedRecordPreview {
    pub index: i32,
    /// The record as the target would receive it.
    pub output: Option<Json<Value>>,
    /// Why the record would be skipped.
    pub skipped: Option<String>,
    pub errors: Vec<FieldError>,
}

#[derive(SimpleObject)]
pub struct PushOutcomeNode {
    pub config_id: ID,
    pub written: i64,
    pub skipped: i64,
    pub failed: i64,
    pub errors: Vec<SyncErrorSample>,
    /// Set when the push could not start (config or target unusable).
    pub error: Option<crate::calls::graphql::CallError>,
}

#[derive(Union)]
pub enum SyncRunItem {
    Run(Box<SyncRunNode>),
    Missed(EventsMissed),
}

/// At most this many records in one preview.
const MAX_SAMPLE_RECORDS: usize = 100;

/// Records given to a preview or a push may nest at most `limits::JSON_DEPTH` levels.
fn check_records(records: &[Json<Value>], field: &str) -> AppResult<()> {
    let problems: Vec<FieldProblem> = records
        .iter()
        .enumerate()
        .filter(|(_, r)| json_depth_exceeds(&r.0, limits::JSON_DEPTH))
        .map(|(i, _)| FieldProblem {
            path: format!("{field}[{i}]"),
            message: format!("nests deeper than {} levels", limits::JSON_DEPTH),
        })
        .collect();
    if problems.is_empty() {
        return Ok(());
    }
    Err(AppError::Validation {
        message: format!(
            "{}: records may nest at most {} levels",
            problems[0].path,
            limits::JSON_DEPTH
        ),
        problems,
    })
}

#[derive(Default)]
pub struct SyncQuery;

#[Object]
impl SyncQuery {
    #[graphql(guard = "ScopeGuard(Scope::SyncRead)")]
    async fn sync_configs(
        &self,
        ctx: &Context<'_>,
        project_id: Option<ID>,
    ) -> async_graphql::Result<Vec<SyncConfigNode>> {
        let caller = principal(ctx)?;
        let rows = store::list_configs(
            &mut *conn(ctx).await?,
            &caller.team_id,
            project_id.as_ref().map(|p| p.as_str()),
        )
        .await?;
        Ok(rows
            .into_iter()
            .filter(|r| caller.limits.allows_project(&r.project_id))
            .map(SyncConfigNode::new)
            .collect::<AppResult<_>>()?)
    }

    #[graphql(guard = "ScopeGuard(Scope::SyncRead)")]
    async fn sync_config(
        &self,
        ctx: &Context<'_>,
        id: ID,
    ) -> async_graphql::Result<SyncConfigNode> {
        let caller = principal(ctx)?;
        Ok(SyncConfigNode::new(reachable(ctx, caller, &id).await?)?)
    }

    /// Runs, newest first.
    #[graphql(guard = "ScopeGuard(Scope::SyncRead)")]
    async fn sync_runs(
        &self,
        ctx: &Context<'_>,
        config_id: Option<ID>,
        project_id: Option<ID>,
        status: Option<SyncRunStatus>,
        first: Option<i32>,
        after: Option<String>,
    ) -> async_graphql::Result<Connection<SyncRunNode>> {
        let caller = principal(ctx)?;
        let page = Page::new("run", first, after)?;
        if let Some(id) = &config_id {
            reachable(ctx, caller, id).await?;
        }
        if let Some(id) = &project_id {
            caller.check_project(id)?;
        }
        if config_id.is_none() && project_id.is_none() {
            caller.require_unrestricted()?;
        }
        let filter = RunFilter {
            config_id: config_id.map(|i| i.0),
            project_id: project_id.map(|i| i.0),
            status: status.map(|s| s.as_str().to_string()),
        };
        let rows = store::list_runs(
            &mut *conn(ctx).await?,
            &caller.team_id,
            &filter,
            page.after.as_deref(),
            page.fetch(),
        )
        .await?;
        let total = if asks_total(ctx) {
            Some(store::count_runs(&mut *conn(ctx).await?, &caller.team_id, &filter).await?)
        } else {
            None
        };
        Ok(page.connection(rows, total, |r| &r.id, SyncRunNode))
    }

    /// Dry run: what each sample record becomes through the mappings (a config's, or the
    /// ones given), with per-field errors. Nothing is sent anywhere.
    #[graphql(guard = "ScopeGuard(Scope::SyncRead)")]
    async fn preview_sync_mapping(
        &self,
        ctx: &Context<'_>,
        config_id: Option<ID>,
        mappings: Option<Vec<FieldMapping>>,
        sample_records: Vec<Json<Value>>,
    ) -> async_graphql::Result<Vec<MappedRecordPreview>> {
        let caller = principal(ctx)?;
        let mapper = match (config_id, mappings) {
            (_, Some(mappings)) => {
                Mapper::compile(&mappings, "mappings").map_err(|problems| AppError::Validation {
                    message: problems
                        .iter()
                        .map(|p| format!("{}: {}", p.path, p.message))
                        .collect::<Vec<_>>()
                        .join("; "),
                    problems,
                })?
            }
            (Some(id), None) => Plan::new(&reachable(ctx, caller, &id).await?)?.forward,
            (None, None) => return Err(AppError::validation("give configId or mappings").into()),
        };
        if sample_records.len() > MAX_SAMPLE_RECORDS {
            return Err(AppError::Validation {
                message: format!("at most {MAX_SAMPLE_RECORDS} sample records"),
                problems: vec![FieldProblem {
                    path: "sampleRecords".into(),
                    message: format!("at most {MAX_SAMPLE_RECORDS}"),
                }],
            }
            .into());
        }
        check_records(&sample_records, "sampleRecords")?;
        let budget = OutputBudget::new(limits::OUTPUT_BYTES);
        Ok(sample_records
            .iter()
            .enumerate()
            .map(|(index, record)| {
                let (output, skipped, errors) = match mapper.map(&record.0, &budget) {
                    Mapped::Record(out) => (Some(Json(out)), None, Vec::new()),
                    Mapped::Skipped(reason) => (None, Some(reason), Vec::new()),
                    Mapped::Failed(problems) => (
                        None,
                        None,
                        problems
                            .into_iter()
                            .map(|p| FieldError {
                                field: p.path,
                                message: p.message,
                            })
                            .collect(),
                    ),
                };
                MappedRecordPreview {
                    index: index as i32,
                    output,
                    skipped,
                    errors,
                }
            })
            .collect())
    }
}

#[derive(Default)]
pub struct SyncMutation;

#[Object]
impl SyncMutation {
    #[graphql(guard = "ScopeGuard(Scope::SyncWrite)")]
    async fn create_sync_config(
        &self,
        ctx: &Context<'_>,
        input: SyncConfigInput,
    ) -> async_graphql::Result<SyncConfigNode> {
        let caller = principal(ctx)?;
        let row = super::service::build_row(&mut *conn(ctx).await?, caller, input, None).await?;
        store::insert_config(&mut *conn(ctx).await?, &row).await?;
        audit::target(ctx, "sync_config", &row.id);
        Ok(SyncConfigNode::new(row)?)
    }

    /// Replaces the whole configuration (its project stays).
    #[graphql(guard = "ScopeGuard(Scope::SyncWrite)")]
    async fn update_sync_config(
        &self,
        ctx: &Context<'_>,
        id: ID,
        input: SyncConfigInput,
    ) -> async_graphql::Result<SyncConfigNode> {
        let caller = principal(ctx)?;
        audit::target(ctx, "sync_config", &id);
        let existing = reachable(ctx, caller, &id).await?;
        if input.project_id.0 != existing.project_id {
            return Err(
                AppError::validation("a sync config cannot move to another project").into(),
            );
        }
        let row = super::service::build_row(&mut *conn(ctx).await?, caller, input, Some(&existing))
            .await?;
        store::replace_config(&mut *conn(ctx).await?, &row).await?;
        Ok(SyncConfigNode::new(row)?)
    }

    #[graphql(guard = "ScopeGuard(Scope::SyncWrite)")]
    async fn delete_sync_config(&self, ctx: &Context<'_>, id: ID) -> async_graphql::Result<ID> {
        let caller = principal(ctx)?;
        audit::target(ctx, "sync_config", &id);
        reachable(ctx, caller, &id).await?;
        store::delete_config(&mut *conn(ctx).await?, &caller.team_id, &id).await?;
        Ok(id)
    }

    /// Queues a run now; CONFLICT if one is already queued or running.
    #[graphql(guard = "ScopeGuard(Scope::SyncRun)")]
    async fn run_sync(
        &self,
        ctx: &Context<'_>,
        config_id: ID,
    ) -> async_graphql::Result<SyncRunNode> {
        let caller = principal(ctx)?;
        audit::target(ctx, "sync_config", &config_id);
        let config = reachable(ctx, caller, &config_id).await?;
        if !config.enabled {
            return Err(AppError::Conflict("the sync is disabled".into()).into());
        }
        Ok(SyncRunNode(
            engine::start_run(state(ctx), config, "manual").await?,
        ))
    }

    /// Asks a running sync to stop; it ends as CANCELLED.
    #[graphql(guard = "ScopeGuard(Scope::SyncRun)")]
    async fn cancel_sync_run(
        &self,
        ctx: &Context<'_>,
        run_id: ID,
    ) -> async_graphql::Result<SyncRunNode> {
        let caller = principal(ctx)?;
        audit::target(ctx, "sync_run", &run_id);
        let mut db = conn(ctx).await?;
        let mut run = store::get_run(&mut db, &caller.team_id, &run_id).await?;
        caller
            .check_project(&run.project_id)
            .map_err(|_| AppError::not_found("sync run"))?;
        if !state(ctx).jobs.cancel(&run_id) && matches!(run.status.as_str(), "queued" | "running") {
            // Not running here (another replica, or lost): record the cancellation.
            run.status = "cancelled".into();
            run.finished_at = Some(now());
            // Its replica sees it at its next renewal and stops there.
            if !store::save_run(&mut db, &run).await? {
                run = store::get_run(&mut db, &caller.team_id, &run_id).await?;
            }
        }
        Ok(SyncRunNode(run))
    }

    /// Sends records (say, a CI job's test results) through each config's mappings to its
    /// target at once; each config has its own outcome.
    #[graphql(guard = "ScopeGuard(Scope::SyncRun)")]
    async fn push_records(
        &self,
        ctx: &Context<'_>,
        records: Vec<Json<Value>>,
        sync_config_ids: Vec<ID>,
    ) -> async_graphql::Result<Vec<PushOutcomeNode>> {
        let caller = principal(ctx)?;
        if records.is_empty()
            || records.len() > 10_000
            || sync_config_ids.is_empty()
            || sync_config_ids.len() > 20
        {
            return Err(
                AppError::validation("push 1 to 10000 records to 1 to 20 sync configs").into(),
            );
        }
        check_records(&records, "records")?;
        let mut configs = Vec::new();
        for id in &sync_config_ids {
            configs.push(reachable(ctx, caller, id).await?);
        }
        let records: Vec<Value> = records.into_iter().map(|r| r.0).collect();
        let actor = caller.actor.label();
        let state = state(ctx);
        let budget = OutputBudget::new(limits::OUTPUT_BYTES);
        let outcomes = futures_util::future::join_all(
            configs
                .iter()
                .map(|config| engine::push(state, config, &records, &actor, &budget)),
        )
        .await;
        Ok(outcomes
            .into_iter()
            .map(|o| PushOutcomeNode {
                config_id: ID(o.config_id),
                written: o.written,
                skipped: o.skipped,
                failed: o.failed,
                errors: samples(&Value::Array(o.errors)),
                error: o.error.map(|e| crate::calls::graphql::CallError {
                    code: e.code().into(),
                    message: e.message(),
                }),
            })
            .collect())
    }
}

#[derive(Default)]
pub struct SyncSubscription;

#[Subscription]
impl SyncSubscription {
    /// A run's counts as they change (or every run of a project), until it ends.
    #[graphql(guard = "ScopeGuard(Scope::SyncRead)")]
    async fn sync_run_progress(
        &self,
        ctx: &Context<'_>,
        run_id: Option<ID>,
        project_id: Option<ID>,
    ) -> async_graphql::Result<impl Stream<Item = SyncRunItem> + use<>> {
        let caller = principal(ctx)?;
        // Listening starts before the run is read, so nothing falls between the two.
        let events = watch(ctx, caller);
        let mut db = conn(ctx).await?;
        let current = match (&run_id, &project_id) {
            (Some(id), None) => {
                let run = store::get_run(&mut db, &caller.team_id, id).await?;
                caller
                    .check_project(&run.project_id)
                    .map_err(|_| AppError::not_found("sync run"))?;
                Some(run)
            }
            (None, Some(id)) => {
                caller.check_project(id)?;
                crate::projects::store::get(&mut db, &caller.team_id, id).await?;
                None
            }
            _ => return Err(AppError::validation("give either runId or projectId").into()),
        };
        drop(db);
        // One run: its state now first (not in a missed-events notice), and the stream ends
        // with the event that ends the run.
        let current = current
            .filter(|_| {
                ctx.data_opt::<crate::context::live::MissedNotice>()
                    .is_none()
            })
            .map(|run| SyncRunItem::Run(Box::new(SyncRunNode(run))));
        let one_run = run_id.is_some();
        let (run_id, project_id) = (run_id.map(|i| i.0), project_id.map(|i| i.0));
        let events = events.filter_map(move |item| {
            let out = match item {
                Live::Missed(count) => Some(SyncRunItem::Missed(EventsMissed {
                    count: count.min(i32::MAX as u64) as i32,
                })),
                Live::Event(event)
                    if matches!(
                        event.kind,
                        EventKind::SyncStarted
                            | EventKind::SyncProgress
                            | EventKind::SyncCompleted
                            | EventKind::SyncFailed
                    ) && run_id.as_ref().is_none_or(|id| *id == event.subject_id)
                        && project_id
                            .as_ref()
                            .is_none_or(|id| event.project_id.as_ref() == Some(id)) =>
                {
                    serde_json::from_value::<SyncRunRow>(event.payload.clone())
                        .ok()
                        .map(|row| SyncRunItem::Run(Box::new(SyncRunNode(row))))
                }
                Live::Event(_) => None,
            };
            std::future::ready(out)
        });
        let items = futures_util::stream::iter(current).chain(events).boxed();
        // Each state once (the state read, then the event of it, are sent once); after the
        // state that ends the run, the stream ends at once.
        Ok(futures_util::stream::unfold(
            (items, None::<SyncRunRow>, false),
            move |(mut items, mut last, done)| async move {
                if done {
                    return None;
                }
                loop {
                    let item = items.next().await?;
                    let SyncRunItem::Run(node) = &item else {
                        return Some((item, (items, last, false)));
                    };
                    if last.as_ref().is_some_and(|l| same_state(l, &node.0)) {
                        continue;
                    }
                    let done = one_run && is_finished(&node.0.status);
                    last = Some(node.0.clone());
                    return Some((item, (items, last, done)));
                }
            },
        ))
    }
}

/// Whether two states of a run say the same (status and counts).
fn same_state(a: &SyncRunRow, b: &SyncRunRow) -> bool {
    a.id == b.id
        && a.status == b.status
        && a.records_read == b.records_read
        && a.records_written == b.records_written
        && a.records_skipped == b.records_skipped
        && a.records_failed == b.records_failed
}

/// A run in one of these states will not change again.
fn is_finished(status: &str) -> bool {
    matches!(
        status,
        "succeeded" | "partially_failed" | "failed" | "cancelled" | "interrupted"
    )
}
