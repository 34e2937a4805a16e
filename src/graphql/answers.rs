//! Whole answers to repeated queries, kept while the data they show is unchanged.
//!
//! Dashboards ask the same few queries over and over (a project and its integrations, every
//! few seconds, from every open browser). Executing such an answer again costs far more than
//! reading the rows: async-graphql resolves and assembles every field of every node. So an
//! answer made only of *stored* fields — values read from the team's `projects` and
//! `integrations` rows and the built-in catalogue, nothing from the clock, the logs or any
//! other table ([`STORED`]) — is kept, and served again while the team's data version is the
//! one it was computed under.
//!
//! The version (`data_versions`) is bumped by database triggers in the same transaction as
//! every insert, update and delete of those rows, whoever makes it: a mutation, the health
//! monitor, the OAuth refresher, the CLI or an operator's SQL. It is read before the query
//! executes, so an answer is never kept under a version newer than the data it shows. An
//! answer is kept for exactly one caller: its team, its credential, its scopes and its
//! limits, the document, the operation name and the variables are all in the key. Answers with
//! errors or extensions are not kept. A kept answer costs one indexed read of the version
//! (on the calling thread's SQLite reader) instead of the execution.
//!
//! On SQLite the version is read on the calling thread's reader. On PostgreSQL a round trip
//! per read would cost as much as the read it saves, so version reads are shared ([`Rounds`]):
//! one statement answers every read that was waiting when it was sent, for all their teams.
//! A read never uses a version read before it arrived, so sharing never makes it stale; the
//! triggers there are deferred to commit, so a team's writers wait on its counter row only
//! while a commit completes.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, RwLock};

use actix_web::web::Bytes;
use async_graphql::Request;
use async_graphql::parser::types::{
    Directive, DocumentOperations, ExecutableDocument, OperationType, Selection, SelectionSet,
};
use async_graphql::parser::{Positioned, types::TypeKind};
use diesel::prelude::*;
use diesel_async::RunQueryDsl;

use crate::auth::Principal;
use crate::db::DbPool;
use crate::db::schema::data_versions;
use crate::error::AppResult;
use crate::with_conn;

/// Fields whose values come only from the team's `projects` and `integrations` rows (and the
/// built-in catalogue, which never changes while the hub runs). Nothing here may read the
/// clock, the logs, the templates or any other table: an answer made of these fields is
/// current exactly while the team's data version is unchanged.
pub const STORED: &[&str] = &[
    "Query.projects",
    "Query.project",
    "Query.integrations",
    "Query.integration",
    "Project.id",
    "Project.name",
    "Project.description",
    "Project.createdAt",
    "Project.updatedAt",
    "IntegrationConnection.edges",
    "IntegrationConnection.nodes",
    "IntegrationConnection.pageInfo",
    "IntegrationConnection.totalCount",
    "IntegrationEdge.cursor",
    "IntegrationEdge.node",
    "PageInfo.hasNextPage",
    "PageInfo.endCursor",
    "Integration.id",
    "Integration.projectId",
    "Integration.name",
    "Integration.providerKey",
    "Integration.templateVersion",
    "Integration.config",
    "Integration.credentials",
    "Integration.enabled",
    "Integration.oauth",
    "Integration.status",
    "Integration.lastError",
    "Integration.createdAt",
    "Integration.updatedAt",
    "CredentialsInfo.isSet",
    "CredentialsInfo.fields",
    "CredentialsInfo.keyId",
    "CredentialsInfo.updatedAt",
    "IntegrationOAuth.appId",
    "IntegrationOAuth.status",
    "IntegrationOAuth.scopes",
    "IntegrationOAuth.expiresAt",
    "IntegrationOAuth.lastRefreshedAt",
    "IntegrationOAuth.lastError",
    "IntegrationOAuth.refreshable",
];

/// Answers larger than this are not kept (a page of 100 integrations is well under it).
const MAX_ANSWER_BYTES: usize = 256 * 1024;
/// Selections nested deeper than this are not looked at (the query limits refuse far less).
const MAX_NESTING: usize = 16;

/// What to do with a query.
pub enum Lookup {
    /// Its kept answer, current.
    Hit(Bytes),
    /// Execute it, then [`Answers::keep`] the answer under this ticket.
    Miss(Ticket),
    /// Execute it; its answer is not kept (other fields, no caller, or no version to check).
    Pass,
}

/// The key of an answer and the data version read before it was executed.
pub struct Ticket {
    key: String,
    version: i64,
}

struct Kept {
    version: i64,
    body: Bytes,
}

pub struct Answers {
    /// Stored fields by parent type, with the type each returns.
    fields: HashMap<String, HashMap<String, String>>,
    max_bytes: usize,
    kept: RwLock<(HashMap<String, Kept>, usize)>,
    /// Shared version reads (PostgreSQL).
    rounds: Rounds,
}

/// Teams one shared version read asks for at most; more readers start another round.
const MAX_ROUND_TEAMS: usize = 512;

/// Version reads on PostgreSQL, shared between concurrent requests like a group commit: a
/// read joins the round not yet sent, and one statement answers all of the round's teams.
/// One round is in flight at a time, so under load a round gathers every read that arrived
/// during the previous one. A read joins only a round that has not been sent, so the version
/// it gets was read after it arrived: as current as a read of its own.
#[derive(Default)]
struct Rounds {
    /// The round that is gathering reads.
    gathering: Mutex<Option<Arc<Round>>>,
    /// Held while a round is in flight.
    in_flight: tokio::sync::Mutex<()>,
}

#[derive(Default)]
struct Round {
    teams: Mutex<HashSet<String>>,
    /// The versions read, or `None` when the read failed (the readers execute instead).
    versions: tokio::sync::OnceCell<Option<Arc<HashMap<String, i64>>>>,
}

impl Rounds {
    async fn version(&self, pool: &DbPool, team_id: &str) -> Option<i64> {
        let round = {
            let mut gathering = self.gathering.lock().unwrap_or_else(|e| e.into_inner());
            let round = match gathering.as_ref() {
                Some(round)
                    if round.teams.lock().unwrap_or_else(|e| e.into_inner()).len()
                        < MAX_ROUND_TEAMS =>
                {
                    round.clone()
                }
                _ => gathering.insert(Arc::default()).clone(),
            };
            let mut teams = round.teams.lock().unwrap_or_else(|e| e.into_inner());
            if !teams.contains(team_id) {
                teams.insert(team_id.to_string());
            }
            drop(teams);
            round
        };
        let versions = round
            .versions
            .get_or_init(|| self.send(pool, round.clone()))
            .await;
        versions.as_ref()?.get(team_id).copied()
    }

    /// Waits for the round in flight, stops `round` gathering, and reads its teams' versions.
    /// The read runs in a task of its own: a reader that goes away does not cut it off.
    async fn send(&self, pool: &DbPool, round: Arc<Round>) -> Option<Arc<HashMap<String, i64>>> {
        let _in_flight = self.in_flight.lock().await;
        let teams = {
            let mut gathering = self.gathering.lock().unwrap_or_else(|e| e.into_inner());
            if gathering.as_ref().is_some_and(|g| Arc::ptr_eq(g, &round)) {
                *gathering = None;
            }
            let teams = round.teams.lock().unwrap_or_else(|e| e.into_inner());
            teams.iter().cloned().collect::<Vec<_>>()
        };
        let pool = pool.clone();
        let read = tokio::spawn(async move { versions(&pool, teams).await });
        match read.await {
            Ok(Ok(versions)) => Some(Arc::new(versions)),
            Ok(Err(err)) => {
                tracing::debug!(error = %err.message(), "data versions not read");
                None
            }
            Err(_) => None,
        }
    }
}

impl Answers {
    /// The answer store for a schema whose SDL is `sdl`, holding at most `max_bytes` of
    /// answers. Panics at start if a [`STORED`] field is not in the schema (a test builds it).
    pub fn new(sdl: &str, max_bytes: usize) -> Self {
        let document = async_graphql::parser::parse_schema(sdl).expect("the schema's own SDL");
        let mut returns: HashMap<String, HashMap<String, String>> = HashMap::new();
        for definition in &document.definitions {
            let async_graphql::parser::types::TypeSystemDefinition::Type(ty) = definition else {
                continue;
            };
            let TypeKind::Object(object) = &ty.node.kind else {
                continue;
            };
            for field in &object.fields {
                let mut base = &field.node.ty.node.base;
                while let async_graphql::parser::types::BaseType::List(inner) = base {
                    base = &inner.base;
                }
                let async_graphql::parser::types::BaseType::Named(named) = base else {
                    continue;
                };
                returns
                    .entry(ty.node.name.node.to_string())
                    .or_default()
                    .insert(field.node.name.node.to_string(), named.to_string());
            }
        }
        let mut fields: HashMap<String, HashMap<String, String>> = HashMap::new();
        for stored in STORED {
            let (parent, name) = stored.split_once('.').expect("Type.field");
            let returned = returns
                .get(parent)
                .and_then(|f| f.get(name))
                .unwrap_or_else(|| panic!("{stored} is not in the schema"));
            fields
                .entry(parent.to_string())
                .or_default()
                .insert(name.to_string(), returned.clone());
        }
        Self {
            fields,
            max_bytes,
            kept: RwLock::new((HashMap::new(), 0)),
            rounds: Rounds::default(),
        }
    }

    /// Whether `request` (a query) may be answered from what is kept, and if so, whether it is.
    pub async fn lookup(
        &self,
        pool: &DbPool,
        principal: Option<&Principal>,
        request: &mut Request,
    ) -> Lookup {
        let Some(principal) = principal else {
            return Lookup::Pass;
        };
        let operation_name = request.operation_name.clone();
        let stored = match request.parsed_query() {
            Ok(document) => self.only_stored(document, operation_name.as_deref()),
            Err(_) => false,
        };
        if !stored {
            return Lookup::Pass;
        }
        let Ok(variables) = serde_json::to_string(&request.variables) else {
            return Lookup::Pass;
        };
        // Everything the answer depends on besides the rows: who asks, with what reach.
        let key = format!(
            "{}\u{0}{:?}\u{0}{:?}\u{0}{:?}\u{0}{}\u{0}{}\u{0}{}",
            principal.team_id,
            principal.actor,
            principal.scopes,
            principal.limits,
            operation_name.as_deref().unwrap_or_default(),
            request.query,
            variables
        );
        // No version yet (a team without projects) is nothing to keep an answer under. An
        // error is met again by the execution, which reports it.
        let version = match pool.backend_name() {
            "sqlite" => version(pool, &principal.team_id).await.ok().flatten(),
            _ => self.rounds.version(pool, &principal.team_id).await,
        };
        let Some(version) = version else {
            return Lookup::Pass;
        };
        {
            let kept = self.kept.read().unwrap_or_else(|e| e.into_inner());
            if let Some(answer) = kept.0.get(&key).filter(|a| a.version == version) {
                metrics::counter!("hub_graphql_answers_total", "result" => "hit").increment(1);
                return Lookup::Hit(answer.body.clone());
            }
        }
        metrics::counter!("hub_graphql_answers_total", "result" => "miss").increment(1);
        Lookup::Miss(Ticket { key, version })
    }

    /// Keeps `body`, the answer `ticket` was executed for (the caller checked that it has no
    /// errors). When the store is full it starts over: dashboards' working sets are small.
    pub fn keep(&self, ticket: Ticket, body: Bytes) {
        let size = ticket.key.len() + body.len();
        if body.len() > MAX_ANSWER_BYTES || size > self.max_bytes {
            return;
        }
        let mut kept = self.kept.write().unwrap_or_else(|e| e.into_inner());
        let (answers, used) = &mut *kept;
        if *used + size > self.max_bytes {
            answers.clear();
            *used = 0;
        }
        let key_len = ticket.key.len();
        let answer = Kept {
            version: ticket.version,
            body,
        };
        if let Some(old) = answers.insert(ticket.key, answer) {
            *used = used.saturating_sub(key_len + old.body.len());
        }
        *used += size;
    }

    /// True when the operation `request` selects is a query of stored fields only.
    fn only_stored(&self, document: &ExecutableDocument, operation_name: Option<&str>) -> bool {
        let operation = match (&document.operations, operation_name) {
            (DocumentOperations::Single(op), _) => op,
            (DocumentOperations::Multiple(ops), Some(name)) => match ops.get(name) {
                Some(op) => op,
                None => return false,
            },
            (DocumentOperations::Multiple(ops), None) if ops.len() == 1 => {
                match ops.values().next() {
                    Some(op) => op,
                    None => return false,
                }
            }
            _ => return false,
        };
        // `{ __typename }` alone reads no data: executing it costs less than the version.
        let reads_data = operation.node.selection_set.node.items.iter().any(|item| {
            !matches!(&item.node, Selection::Field(field) if field.node.name.node == "__typename")
        });
        operation.node.ty == OperationType::Query
            && operation.node.directives.is_empty()
            && reads_data
            && self.selects_stored(document, "Query", &operation.node.selection_set.node, 0)
    }

    fn selects_stored(
        &self,
        document: &ExecutableDocument,
        ty: &str,
        set: &SelectionSet,
        depth: usize,
    ) -> bool {
        if depth > MAX_NESTING {
            return false;
        }
        set.items.iter().all(|item| match &item.node {
            Selection::Field(field) => {
                let field = &field.node;
                let name = field.name.node.as_str();
                if !plain(&field.directives) {
                    return false;
                }
                if name == "__typename" {
                    return true;
                }
                match self.fields.get(ty).and_then(|fields| fields.get(name)) {
                    None => false,
                    Some(returned) => {
                        field.selection_set.node.items.is_empty()
                            || self.selects_stored(
                                document,
                                returned,
                                &field.selection_set.node,
                                depth + 1,
                            )
                    }
                }
            }
            Selection::FragmentSpread(spread) => {
                plain(&spread.node.directives)
                    && document
                        .fragments
                        .get(&spread.node.fragment_name.node)
                        .is_some_and(|fragment| {
                            fragment.node.type_condition.node.on.node == ty
                                && plain(&fragment.node.directives)
                                && self.selects_stored(
                                    document,
                                    ty,
                                    &fragment.node.selection_set.node,
                                    depth + 1,
                                )
                        })
            }
            Selection::InlineFragment(inline) => {
                plain(&inline.node.directives)
                    && inline
                        .node
                        .type_condition
                        .as_ref()
                        .is_none_or(|condition| condition.node.on.node == ty)
                    && self.selects_stored(document, ty, &inline.node.selection_set.node, depth + 1)
            }
        })
    }
}

/// Only `@include` and `@skip`, whose arguments are in the document or the variables.
fn plain(directives: &[Positioned<Directive>]) -> bool {
    directives
        .iter()
        .all(|d| matches!(d.node.name.node.as_str(), "include" | "skip"))
}

/// The team's data version (none before its first project).
async fn version(pool: &DbPool, team_id: &str) -> AppResult<Option<i64>> {
    let mut conn = pool.read().await?;
    let version = with_conn!(&mut conn, |c| data_versions::table
        .find(team_id)
        .select(data_versions::version)
        .first::<i64>(c)
        .await
        .optional())?;
    Ok(version)
}

/// The data versions of `teams` (those that have one).
async fn versions(pool: &DbPool, teams: Vec<String>) -> AppResult<HashMap<String, i64>> {
    let mut conn = pool.read().await?;
    let versions = with_conn!(&mut conn, |c| data_versions::table
        .filter(data_versions::team_id.eq_any(&teams))
        .select((data_versions::team_id, data_versions::version))
        .load::<(String, i64)>(c)
        .await)?;
    Ok(versions.into_iter().collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stored(query: &str) -> bool {
        let answers = Answers::new(&crate::graphql::sdl(), 1 << 20);
        let document = async_graphql::parser::parse_query(query).unwrap();
        answers.only_stored(&document, None)
    }

    #[test]
    fn only_queries_of_stored_fields_are_kept() {
        assert!(stored("{ projects { id name } }"));
        assert!(stored(
            "query($p: ID!) { integrations(projectId: $p, first: 20) { nodes { ...I } pageInfo { endCursor } } } \
             fragment I on Integration { id config credentials { isSet } oauth { status } }"
        ));
        assert!(stored(
            "{ project(id: \"x\") { ... on Project { name } __typename @skip(if: false) } }"
        ));
        assert!(!stored("{ projects { id } viewer { kind } }"));
        assert!(!stored(
            "query($p: ID!) { integrations(projectId: $p) { nodes { health { status } } } }"
        ));
        assert!(!stored(
            "query($p: ID!) { integrations(projectId: $p) { nodes { provider { key } } } }"
        ));
        assert!(!stored("{ __schema { types { name } } }"));
        assert!(!stored("{ __typename }"));
        assert!(stored("{ __typename projects { id } }"));
        assert!(!stored(
            "mutation { createProject(input: { name: \"x\" }) { id } }"
        ));
        assert!(!stored("{ projects @defer { id } }"));
        assert!(!stored("{ ... on Mutation { createProject { id } } }"));
        assert!(!stored("{ ...F } fragment F on Project { id }"));
        assert!(!stored(
            "query A { projects { id } } query B { projects { id } }"
        ));
    }
}
