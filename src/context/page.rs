//! Lists as Relay connections: one page of rows in id order (ids are time-ordered UUIDv7)
//! after an opaque cursor, with `nodes` beside `edges` and `totalCount`. A connection's GraphQL
//! name comes from its node's (`Integration` → `IntegrationConnection`, `IntegrationEdge`).

use std::borrow::Cow;

use async_graphql::{Context, OutputType, SimpleObject, TypeName};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use crate::error::{AppError, AppResult};

#[derive(SimpleObject)]
pub struct PageInfo {
    pub has_next_page: bool,
    /// Pass as `after` to get the next page.
    pub end_cursor: Option<String>,
}

#[derive(SimpleObject)]
#[graphql(name_type)]
pub struct Edge<T: OutputType> {
    pub cursor: String,
    pub node: T,
}

impl<T: OutputType> TypeName for Edge<T> {
    fn type_name() -> Cow<'static, str> {
        format!("{}Edge", T::type_name()).into()
    }
}

/// A page of a list in id order (ids are time-ordered UUIDv7), with Relay's conveniences:
/// `nodes` beside `edges`, and `totalCount`.
#[derive(SimpleObject)]
#[graphql(complex, name_type)]
pub struct Connection<T: OutputType>
where
    Edge<T>: OutputType,
{
    pub edges: Vec<Edge<T>>,
    pub page_info: PageInfo,
    /// Counted only when the query asks for `totalCount`.
    #[graphql(skip)]
    pub total: Option<i64>,
}

impl<T: OutputType> TypeName for Connection<T>
where
    Edge<T>: OutputType,
{
    fn type_name() -> Cow<'static, str> {
        format!("{}Connection", T::type_name()).into()
    }
}

#[async_graphql::ComplexObject]
impl<T: OutputType> Connection<T>
where
    Edge<T>: OutputType,
{
    /// The edges' nodes, for clients that need no cursors.
    async fn nodes(&self) -> Vec<&T> {
        self.edges.iter().map(|edge| &edge.node).collect()
    }

    /// How many items the list's filters match (all pages).
    async fn total_count(&self) -> i64 {
        self.total.unwrap_or_default()
    }
}

/// Whether the query asks for the list's `totalCount` (worth a count query only then).
pub fn asks_total(ctx: &Context<'_>) -> bool {
    ctx.look_ahead().field("totalCount").exists()
}

impl<T: OutputType> Connection<T>
where
    Edge<T>: OutputType,
{
    /// Builds a page from up to `limit + 1` rows (the extra row only says there is more).
    fn from_rows<R>(
        mut rows: Vec<R>,
        limit: i64,
        kind: &str,
        id_of: impl Fn(&R) -> &str,
        node: impl Fn(R) -> T,
    ) -> Self {
        let has_next_page = rows.len() as i64 > limit;
        rows.truncate(limit as usize);
        let edges: Vec<Edge<T>> = rows
            .into_iter()
            .map(|row| Edge {
                cursor: encode_cursor(kind, id_of(&row)),
                node: node(row),
            })
            .collect();
        Self {
            page_info: PageInfo {
                has_next_page,
                end_cursor: edges.last().map(|e| e.cursor.clone()),
            },
            edges,
            total: None,
        }
    }
}

const MAX_PAGE: i32 = 100;

/// One page request of a list: `first` (20 by default, at most 100) after an opaque cursor.
pub struct Page {
    kind: &'static str,
    pub limit: i64,
    /// The id the page starts after (decoded from the cursor).
    pub after: Option<String>,
}

impl Page {
    /// Checks `first` and decodes `after` (a cursor of this `kind` of list).
    pub fn new(kind: &'static str, first: Option<i32>, after: Option<String>) -> AppResult<Self> {
        Ok(Self {
            kind,
            limit: page_size(first)?,
            after: after
                .as_deref()
                .map(|c| decode_cursor(kind, c))
                .transpose()?,
        })
    }

    /// Rows to fetch: one more than the page, to tell whether there is a next one.
    pub fn fetch(&self) -> i64 {
        self.limit + 1
    }

    /// The page of `rows` (fetched with `fetch()`), with cursors, page info and the total
    /// (when it was counted).
    pub fn connection<R, T: OutputType>(
        &self,
        rows: Vec<R>,
        total: Option<i64>,
        id_of: impl Fn(&R) -> &str,
        node: impl Fn(R) -> T,
    ) -> Connection<T>
    where
        Edge<T>: OutputType,
    {
        Connection {
            total,
            ..Connection::from_rows(rows, self.limit, self.kind, id_of, node)
        }
    }
}

/// `first` checked and defaulted (20; at most 100).
fn page_size(first: Option<i32>) -> AppResult<i64> {
    match first {
        None => Ok(20),
        Some(n) if (1..=MAX_PAGE).contains(&n) => Ok(n as i64),
        Some(_) => Err(AppError::validation(format!(
            "`first` must be between 1 and {MAX_PAGE}"
        ))),
    }
}

fn encode_cursor(kind: &str, id: &str) -> String {
    URL_SAFE_NO_PAD.encode(format!("{kind}:{id}"))
}

fn decode_cursor(kind: &str, cursor: &str) -> AppResult<String> {
    let invalid = || AppError::validation("invalid cursor");
    let bytes = URL_SAFE_NO_PAD.decode(cursor).map_err(|_| invalid())?;
    let text = String::from_utf8(bytes).map_err(|_| invalid())?;
    text.strip_prefix(kind)
        .and_then(|rest| rest.strip_prefix(':'))
        .map(str::to_string)
        .ok_or_else(invalid)
}
