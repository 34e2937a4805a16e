//! The journal's statements on SQLite: many rows per `INSERT`, built by hand.
//!
//! Every call writes a request log and an audit row, so this is the hottest write the hub
//! makes. Diesel's generic `insert_into(..).values(row)` walks its query tree three times per
//! row (to ask whether the statement can be cached, to find it in the cache, to bind) and
//! formats each timestamp with a `strftime` pattern; that was two fifths of the journal's
//! cost. Here one statement carries a chunk of rows (64, 16, 4 or 1 at a time, each size a
//! statement of its own that diesel caches by type), its values bound in one pass, and a
//! timestamp is written as diesel writes it (`%F %T%.f`) without parsing a pattern.
//!
//! The columns are listed by hand; the test below (`every_column_is_written_and_read_back`)
//! fails if a migrated table has a column these statements leave out, or if a value does not
//! come back through diesel's reads as it was written.

use std::marker::PhantomData;

use chrono::{Datelike, NaiveDateTime, Timelike};
use diesel::query_builder::{AstPass, QueryFragment, QueryId};
use diesel::sql_types::{BigInt, Integer, Nullable, Text};
use diesel::sqlite::Sqlite;
use diesel::{QueryResult, RunQueryDsl, SqliteConnection};

use super::rows::{AuditEventRow, RequestLogRow};

/// A journal row SQLite takes through [`insert`].
pub trait Record: Sized + 'static {
    /// `INSERT INTO <table> (<columns>) VALUES `
    const INTO: &'static str;
    /// How many columns [`Record::INTO`] names (checked against the table by a test).
    const COLUMNS: usize;
    fn created_at(&self) -> &NaiveDateTime;
    /// Pushes `(?, ?, ...)` with this row's values, `created_at` as `stamp`.
    fn push_values<'b>(&'b self, stamp: &'b str, out: AstPass<'_, 'b, Sqlite>) -> QueryResult<()>;
}

/// Inserts `rows` in as few statements as the chunk sizes allow.
pub fn insert<R: Record>(conn: &mut SqliteConnection, rows: &[R]) -> QueryResult<()> {
    let mut rest = rows;
    while !rest.is_empty() {
        rest = match rest.len() {
            64.. => chunk::<R, 64>(conn, rest)?,
            16.. => chunk::<R, 16>(conn, rest)?,
            4.. => chunk::<R, 4>(conn, rest)?,
            _ => chunk::<R, 1>(conn, rest)?,
        };
    }
    Ok(())
}

/// Inserts the first `N` of `rows`; returns the others.
fn chunk<'r, R: Record, const N: usize>(
    conn: &mut SqliteConnection,
    rows: &'r [R],
) -> QueryResult<&'r [R]> {
    let Some((head, rest)) = rows.split_first_chunk::<N>() else {
        return Err(diesel::result::Error::QueryBuilderError(
            format!("a chunk of {N} rows asked of {}", rows.len()).into(),
        ));
    };
    Insert {
        rows: head,
        stamps: std::array::from_fn(|i| stamp(head[i].created_at())),
    }
    .execute(conn)?;
    Ok(rest)
}

/// One `INSERT` of `N` rows.
struct Insert<'a, R, const N: usize> {
    rows: &'a [R; N],
    stamps: [String; N],
}

impl<R: Record, const N: usize> QueryFragment<Sqlite> for Insert<'_, R, N> {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Sqlite>) -> QueryResult<()> {
        out.push_sql(R::INTO);
        for (i, (row, stamp)) in self.rows.iter().zip(&self.stamps).enumerate() {
            if i > 0 {
                out.push_sql(", ");
            }
            row.push_values(stamp, out.reborrow())?;
        }
        Ok(())
    }
}

/// The statement's identity in diesel's cache: its row type and size.
pub struct InsertId<R, const N: usize>(PhantomData<R>);

impl<R: Record, const N: usize> QueryId for Insert<'_, R, N> {
    type QueryId = InsertId<R, N>;
    const HAS_STATIC_QUERY_ID: bool = true;
}

impl<R, const N: usize> RunQueryDsl<SqliteConnection> for Insert<'_, R, N> {}

/// Pushes `?` bound to each value, separated by commas, inside parentheses.
macro_rules! values {
    ($out:ident, $($ty:ty => $value:expr),+ $(,)?) => {{
        $out.push_sql("(");
        let mut first = true;
        $(
            if !first {
                $out.push_sql(", ");
            }
            first = false;
            $out.push_bind_param::<$ty, _>($value)?;
        )+
        let _ = first;
        $out.push_sql(")");
        Ok(())
    }};
}

impl Record for RequestLogRow {
    const INTO: &'static str = "INSERT INTO request_logs (id, team_id, project_id, \
        integration_id, level, method, path, status, duration_ms, bytes_in, bytes_out, error, \
        actor, correlation_id, created_at) VALUES ";
    const COLUMNS: usize = 15;
    fn created_at(&self) -> &NaiveDateTime {
        &self.created_at
    }
    fn push_values<'b>(
        &'b self,
        stamp: &'b str,
        mut out: AstPass<'_, 'b, Sqlite>,
    ) -> QueryResult<()> {
        values!(out,
            Text => &self.id,
            Text => &self.team_id,
            Text => &self.project_id,
            Text => &self.integration_id,
            Text => &self.level,
            Text => &self.method,
            Text => &self.path,
            Nullable<Integer> => &self.status,
            BigInt => &self.duration_ms,
            BigInt => &self.bytes_in,
            BigInt => &self.bytes_out,
            Nullable<Text> => &self.error,
            Text => &self.actor,
            Text => &self.correlation_id,
            Text => stamp,
        )
    }
}

impl Record for AuditEventRow {
    const INTO: &'static str = "INSERT INTO audit_events (id, team_id, actor, action, \
        target_type, target_id, outcome, error_code, created_at, request_id) VALUES ";
    const COLUMNS: usize = 10;
    fn created_at(&self) -> &NaiveDateTime {
        &self.created_at
    }
    fn push_values<'b>(
        &'b self,
        stamp: &'b str,
        mut out: AstPass<'_, 'b, Sqlite>,
    ) -> QueryResult<()> {
        values!(out,
            Text => &self.id,
            Text => &self.team_id,
            Text => &self.actor,
            Text => &self.action,
            Nullable<Text> => &self.target_type,
            Nullable<Text> => &self.target_id,
            Text => &self.outcome,
            Nullable<Text> => &self.error_code,
            Text => stamp,
            Nullable<Text> => &self.request_id,
        )
    }
}

/// A timestamp as diesel writes one to SQLite (`%F %T%.f`: the fraction as 3, 6 or 9 digits,
/// whichever holds it exactly, or none), without `strftime`'s pattern parsing. Years outside
/// 0–9999 and leap seconds go through chrono.
pub fn stamp(at: &NaiveDateTime) -> String {
    const PATTERN: &str = "%F %T%.f";
    let (year, nanos) = (at.year(), at.nanosecond());
    if !(0..=9999).contains(&year) || nanos >= 1_000_000_000 {
        return at.format(PATTERN).to_string();
    }
    let mut out = String::with_capacity(29);
    push_digits(&mut out, year as u32, 4);
    out.push('-');
    push_digits(&mut out, at.month(), 2);
    out.push('-');
    push_digits(&mut out, at.day(), 2);
    out.push(' ');
    push_digits(&mut out, at.hour(), 2);
    out.push(':');
    push_digits(&mut out, at.minute(), 2);
    out.push(':');
    push_digits(&mut out, at.second(), 2);
    if nanos != 0 {
        out.push('.');
        let (value, width) = if nanos % 1_000_000 == 0 {
            (nanos / 1_000_000, 3)
        } else if nanos % 1_000 == 0 {
            (nanos / 1_000, 6)
        } else {
            (nanos, 9)
        };
        push_digits(&mut out, value, width);
    }
    out
}

/// `value`'s last `width` decimal digits, zero-padded.
fn push_digits(out: &mut String, value: u32, width: u32) {
    for place in (0..width).rev() {
        out.push(char::from(b'0' + (value / 10u32.pow(place) % 10) as u8));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::schema::{audit_events, request_logs};
    use diesel::prelude::*;
    use diesel_migrations::MigrationHarness;

    /// Instants whose fractions need 0, 3 or 6 digits.
    fn at(i: usize) -> NaiveDateTime {
        chrono::NaiveDate::from_ymd_opt(2026, 12, 1)
            .unwrap()
            .and_hms_opt(13, 5, 9)
            .unwrap()
            + chrono::Duration::microseconds(i as i64 * 1_234)
    }

    fn log(i: usize) -> RequestLogRow {
        RequestLogRow {
            id: format!("log-{i:04}"),
            team_id: format!("team-{}", i % 3),
            project_id: format!("project-{i}"),
            integration_id: format!("integration-{i}"),
            level: ["info", "warn", "error"][i % 3].into(),
            method: "POST".into(),
            path: format!("/items/{i}?q=a%20b"),
            status: i.is_multiple_of(2).then_some(200 + i as i32),
            duration_ms: i as i64 * 7,
            bytes_in: i as i64 * 11,
            bytes_out: i64::MAX - i as i64,
            error: (!i.is_multiple_of(2)).then(|| format!("upstream said no, {i} times")),
            actor: format!("key:{i}"),
            correlation_id: format!("corr-{i}"),
            created_at: at(i),
        }
    }

    fn audit(i: usize) -> AuditEventRow {
        AuditEventRow {
            id: format!("audit-{i:04}"),
            team_id: format!("team-{}", i % 3),
            actor: format!("user:{i}"),
            action: "executeRequest".into(),
            target_type: i.is_multiple_of(2).then(|| "integration".into()),
            target_id: i.is_multiple_of(2).then(|| format!("integration-{i}")),
            outcome: ["success", "failure"][i % 2].into(),
            error_code: (!i.is_multiple_of(2)).then(|| "UPSTREAM_ERROR".into()),
            created_at: at(i * 1000),
            request_id: (!i.is_multiple_of(3)).then(|| format!("req-{i}")),
        }
    }

    /// Rows written by [`insert`], in any number (every chunk size and mix of them), come back
    /// from diesel's own reads exactly as they were, and the statements name every column the
    /// migrated tables have.
    #[test]
    fn every_column_is_written_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("journal.db");
        let mut conn = SqliteConnection::establish(path.to_str().unwrap()).unwrap();
        conn.run_pending_migrations(crate::db::SQLITE_MIGRATIONS)
            .unwrap();
        // The rows name teams and integrations this test does not create.
        diesel::connection::SimpleConnection::batch_execute(&mut conn, "PRAGMA foreign_keys = OFF")
            .unwrap();
        for (table, columns, into) in [
            ("request_logs", RequestLogRow::COLUMNS, RequestLogRow::INTO),
            ("audit_events", AuditEventRow::COLUMNS, AuditEventRow::INTO),
        ] {
            #[derive(QueryableByName)]
            struct Count {
                #[diesel(sql_type = BigInt)]
                n: i64,
            }
            let count: Count = diesel::sql_query(format!(
                "SELECT COUNT(*) AS n FROM pragma_table_info('{table}')"
            ))
            .get_result(&mut conn)
            .unwrap();
            assert_eq!(
                count.n as usize, columns,
                "{table} has a column the journal does not write"
            );
            assert_eq!(into.matches(',').count() + 1, columns, "{into}");
        }
        let mut written = 0;
        for n in [1, 3, 4, 5, 16, 17, 64, 85, 150] {
            let logs: Vec<_> = (written..written + n).map(log).collect();
            let audits: Vec<_> = (written..written + n).map(audit).collect();
            conn.immediate_transaction(|c| {
                insert(c, &logs)?;
                insert(c, &audits)
            })
            .unwrap();
            written += n;
        }
        let logs: Vec<RequestLogRow> = request_logs::table
            .select(RequestLogRow::as_select())
            .order(request_logs::id)
            .load(&mut conn)
            .unwrap();
        let audits: Vec<AuditEventRow> = audit_events::table
            .select(AuditEventRow::as_select())
            .order(audit_events::id)
            .load(&mut conn)
            .unwrap();
        assert_eq!(logs.len(), written);
        assert_eq!(audits.len(), written);
        for (i, (log_row, audit_row)) in logs.iter().zip(&audits).enumerate() {
            let (want_log, want_audit) = (log(i), audit(i));
            assert_eq!(format!("{log_row:?}"), format!("{want_log:?}"));
            assert_eq!(format!("{audit_row:?}"), format!("{want_audit:?}"));
        }
        // Timestamps: the text stored is diesel's own, and reads back to the same instant.
        #[derive(QueryableByName)]
        struct Stored {
            #[diesel(sql_type = Text)]
            created_at: String,
        }
        let stored: Vec<Stored> =
            diesel::sql_query("SELECT created_at FROM audit_events ORDER BY id")
                .load(&mut conn)
                .unwrap();
        for (i, row) in stored.iter().enumerate() {
            assert_eq!(row.created_at, at(i * 1000).format("%F %T%.f").to_string());
        }
    }

    #[test]
    fn stamps_are_written_as_diesel_writes_them() {
        let base = chrono::NaiveDate::from_ymd_opt(2026, 12, 1)
            .unwrap()
            .and_hms_opt(13, 5, 9)
            .unwrap();
        let mut checked = 0;
        for nanos in [
            0,
            1,
            999,
            1_000,
            120_000,
            123_456_000,
            100_000_000,
            5_000_000,
            999_999_999,
            123_456_789,
        ] {
            for (year, month, day, h, m, s) in [
                (2026, 12, 1, 13, 5, 9),
                (1, 1, 1, 0, 0, 0),
                (9999, 12, 31, 23, 59, 59),
                (1970, 2, 28, 7, 30, 1),
            ] {
                let at = chrono::NaiveDate::from_ymd_opt(year, month, day)
                    .unwrap()
                    .and_hms_nano_opt(h, m, s, nanos)
                    .unwrap();
                assert_eq!(stamp(&at), at.format("%F %T%.f").to_string(), "{at:?}");
                checked += 1;
            }
        }
        // Outside what the fast path writes: chrono's own text.
        let leap = base
            .date()
            .and_hms_nano_opt(23, 59, 59, 1_500_000_000)
            .unwrap();
        assert_eq!(stamp(&leap), leap.format("%F %T%.f").to_string());
        let far = chrono::NaiveDate::from_ymd_opt(12345, 1, 1)
            .unwrap()
            .and_hms_opt(0, 0, 0)
            .unwrap();
        assert_eq!(stamp(&far), far.format("%F %T%.f").to_string());
        let now = crate::db::now();
        assert_eq!(stamp(&now), now.format("%F %T%.f").to_string());
        assert_eq!(checked, 40);
    }
}
