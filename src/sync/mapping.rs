//! Field mappings, compiled once (paths parsed, regexes built, formats checked) and applied to
//! records: each mapping reads a source path, runs its transformers in order and writes the
//! target path. A missing required field skips the record with a reason; a transformer that
//! cannot do its job (an unparseable date, a non-number) fails the record with the field named.

use std::fmt::Write as _;

use chrono::{DateTime, FixedOffset, NaiveDate, NaiveDateTime, TimeZone};
use serde_json::{Map, Value};

use super::spec::{FieldMapping, Transformer, TransformerKind};
use crate::error::FieldProblem;

/// Limits of the mapping language, checked when mappings are compiled (on save, preview, run
/// and push alike) or while a record is mapped: no caller decides a recursion depth, an
/// allocation or a loop beyond these.
pub mod limits {
    /// Mappings in one list.
    pub const MAPPINGS: usize = 200;
    /// Transformers in one mapping.
    pub const TRANSFORMERS: usize = 20;
    /// Characters in one path (`a.b[0].c`).
    pub const PATH_CHARS: usize = 256;
    /// Segments (names and indexes) in one path.
    pub const PATH_SEGMENTS: usize = 32;
    /// The largest array index a path may name.
    pub const INDEX: usize = 999;
    /// Characters in a template, a date format, a separator, a replacement or a pattern.
    pub const TEXT_CHARS: usize = 4096;
    /// Fields named by one template or concat.
    pub const FIELDS: usize = 64;
    /// Entries in one value map.
    pub const TABLE_ENTRIES: usize = 1000;
    /// Compiled size of one regex (the `regex` crate's program and lazy-DFA limits).
    pub const REGEX_BYTES: usize = 1 << 20;
    /// Nesting depth of a record or of a JSON value in a mapping.
    pub const JSON_DEPTH: usize = 32;
    /// Size of one value a transformer makes (template, concat, regex output).
    pub const VALUE_BYTES: usize = 1 << 20;
    /// Size of one mapped record.
    pub const RECORD_BYTES: usize = 1 << 20;
    /// Mapped output of one request (preview, push) or one page of a run, in all.
    pub const OUTPUT_BYTES: usize = 64 << 20;
}

/// Whether a JSON value nests deeper than `limit` levels (a scalar or an empty list or
/// object adds none), walked without recursion; stops at the first level past `limit`.
pub fn json_depth_exceeds(value: &Value, limit: usize) -> bool {
    let mut stack = vec![(value, 0usize)];
    while let Some((value, depth)) = stack.pop() {
        match value {
            Value::Array(items) if !items.is_empty() => {
                if depth + 1 > limit {
                    return true;
                }
                stack.extend(items.iter().map(|c| (c, depth + 1)));
            }
            Value::Object(map) if !map.is_empty() => {
                if depth + 1 > limit {
                    return true;
                }
                stack.extend(map.values().map(|c| (c, depth + 1)));
            }
            _ => {}
        }
    }
    false
}

/// About how many bytes a value takes as JSON, walked without recursion.
pub fn json_size(value: &Value) -> usize {
    let mut size = 0;
    let mut stack = vec![value];
    while let Some(value) = stack.pop() {
        size += match value {
            Value::Null | Value::Bool(_) => 5,
            Value::Number(_) => 8,
            Value::String(s) => s.len() + 2,
            Value::Array(items) => {
                stack.extend(items.iter());
                2 + items.len()
            }
            Value::Object(map) => {
                stack.extend(map.values());
                2 + map.keys().map(|k| k.len() + 4).sum::<usize>()
            }
        };
    }
    size
}

/// How much mapped output one request (or one page of a run) may make in all; records mapped
/// after it is spent fail with the reason.
pub struct OutputBudget(std::sync::atomic::AtomicUsize);

impl OutputBudget {
    pub fn new(bytes: usize) -> Self {
        Self(std::sync::atomic::AtomicUsize::new(bytes))
    }

    fn take(&self, bytes: usize) -> bool {
        use std::sync::atomic::Ordering;
        self.0
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |left| {
                left.checked_sub(bytes)
            })
            .is_ok()
    }

    pub fn spent(&self) -> bool {
        self.0.load(std::sync::atomic::Ordering::Relaxed) == 0
    }
}

fn check_text(value: &str, name: &str) -> Result<(), String> {
    if value.chars().count() > limits::TEXT_CHARS {
        return Err(format!(
            "`{name}` is longer than {} characters",
            limits::TEXT_CHARS
        ));
    }
    Ok(())
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Key(String),
    Index(usize),
}

/// A parsed path: `a.b[0].c`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Path {
    text: String,
    segments: Vec<Segment>,
}

impl Path {
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut segments = Vec::new();
        if text.trim().is_empty() {
            return Err("a path may not be empty".into());
        }
        if text.chars().count() > limits::PATH_CHARS {
            return Err(format!(
                "a path may be at most {} characters",
                limits::PATH_CHARS
            ));
        }
        for part in text.split('.') {
            let (name, mut rest) = match part.find('[') {
                Some(i) => (&part[..i], &part[i..]),
                None => (part, ""),
            };
            if name.is_empty() && rest.is_empty() {
                return Err(format!("`{text}` has an empty segment"));
            }
            if !name.is_empty() {
                segments.push(Segment::Key(name.to_string()));
            }
            if segments.len() > limits::PATH_SEGMENTS {
                return Err(format!(
                    "a path may have at most {} segments",
                    limits::PATH_SEGMENTS
                ));
            }
            while !rest.is_empty() {
                let close = rest
                    .find(']')
                    .ok_or_else(|| format!("`{text}`: unclosed ["))?;
                let index: usize = rest[1..close]
                    .parse()
                    .map_err(|_| format!("`{text}`: `{}` is not an index", &rest[1..close]))?;
                if index > limits::INDEX {
                    return Err(format!(
                        "`{text}`: index {index} is larger than {}",
                        limits::INDEX
                    ));
                }
                segments.push(Segment::Index(index));
                rest = &rest[close + 1..];
                if !rest.is_empty() && !rest.starts_with('[') {
                    return Err(format!("`{text}`: unexpected `{rest}`"));
                }
            }
        }
        if segments.len() > limits::PATH_SEGMENTS {
            return Err(format!(
                "a path may have at most {} segments",
                limits::PATH_SEGMENTS
            ));
        }
        Ok(Self {
            text: text.to_string(),
            segments,
        })
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// An upper bound of what writing this path adds besides the value: its names and the
    /// nulls that pad arrays up to its indexes.
    fn cost(&self) -> usize {
        self.segments
            .iter()
            .map(|s| match s {
                Segment::Key(key) => key.len() + 4,
                Segment::Index(index) => (index + 1) * 5,
            })
            .sum()
    }

    pub fn get<'v>(&self, value: &'v Value) -> Option<&'v Value> {
        let mut current = value;
        for segment in &self.segments {
            current = match segment {
                Segment::Key(key) => current.get(key)?,
                Segment::Index(index) => current.get(index)?,
            };
        }
        Some(current)
    }

    pub fn set(&self, root: &mut Value, value: Value) {
        let mut current = root;
        for (i, segment) in self.segments.iter().enumerate() {
            let last = i + 1 == self.segments.len();
            match segment {
                Segment::Key(key) => {
                    if !current.is_object() {
                        *current = Value::Object(Map::new());
                    }
                    let map = current.as_object_mut().expect("made an object");
                    if last {
                        map.insert(key.clone(), value);
                        return;
                    }
                    current = map.entry(key.clone()).or_insert(Value::Null);
                }
                Segment::Index(index) => {
                    if !current.is_array() {
                        *current = Value::Array(Vec::new());
                    }
                    let items = current.as_array_mut().expect("made an array");
                    while items.len() <= *index {
                        items.push(Value::Null);
                    }
                    if last {
                        items[*index] = value;
                        return;
                    }
                    current = &mut items[*index];
                }
            }
        }
    }
}

fn parse_offset(tz: Option<&str>) -> Result<FixedOffset, String> {
    match tz.map(str::trim) {
        None | Some("") | Some("UTC") | Some("Z") => {
            Ok(FixedOffset::east_opt(0).expect("zero offset"))
        }
        Some(text) => {
            let (sign, rest) = match text.as_bytes()[0] {
                b'+' => (1, &text[1..]),
                b'-' => (-1, &text[1..]),
                _ => {
                    return Err(format!(
                        "time zone `{text}` must be UTC or an offset like +02:00"
                    ));
                }
            };
            let (h, m) = rest.split_once(':').unwrap_or((rest, "0"));
            let (h, m): (i32, i32) = (
                h.parse().map_err(|_| format!("bad offset `{text}`"))?,
                m.parse().map_err(|_| format!("bad offset `{text}`"))?,
            );
            FixedOffset::east_opt(sign * (h * 3600 + m * 60))
                .ok_or_else(|| format!("bad offset `{text}`"))
        }
    }
}

enum Step {
    Trim,
    Upper,
    Lower,
    ToString,
    ToNumber,
    ToBool,
    Date {
        from: String,
        to: String,
        from_tz: FixedOffset,
        to_tz: FixedOffset,
    },
    ValueMap {
        table: Map<String, Value>,
        default: Option<Value>,
    },
    Default(Value),
    Concat {
        fields: Vec<Path>,
        separator: String,
    },
    Template {
        parts: Vec<TemplatePart>,
    },
    Split(String),
    Regex {
        regex: regex::Regex,
        replacement: String,
    },
}

enum TemplatePart {
    Text(String),
    Field(Path),
}

fn parse_template(text: &str) -> Result<Vec<TemplatePart>, String> {
    let mut parts = Vec::new();
    let mut rest = text;
    while let Some(open) = rest.find('{') {
        if open > 0 {
            parts.push(TemplatePart::Text(rest[..open].to_string()));
        }
        let close = rest[open..]
            .find('}')
            .ok_or_else(|| format!("template `{text}` has an unclosed {{"))?
            + open;
        parts.push(TemplatePart::Field(Path::parse(&rest[open + 1..close])?));
        if parts.len() > 2 * limits::FIELDS {
            return Err(format!(
                "template `{text}` names more than {} fields",
                limits::FIELDS
            ));
        }
        rest = &rest[close + 1..];
    }
    if !rest.is_empty() {
        parts.push(TemplatePart::Text(rest.to_string()));
    }
    Ok(parts)
}

fn need<'a>(value: &'a Option<String>, name: &str) -> Result<&'a str, String> {
    value
        .as_deref()
        .filter(|v| !v.is_empty())
        .ok_or_else(|| format!("needs `{name}`"))
}

/// Bounds every part of a transformer before anything is built from it.
fn check_transformer(t: &Transformer) -> Result<(), String> {
    for (value, name) in [
        (&t.from, "from"),
        (&t.to, "to"),
        (&t.from_tz, "fromTz"),
        (&t.to_tz, "toTz"),
        (&t.separator, "separator"),
        (&t.template, "template"),
        (&t.pattern, "pattern"),
        (&t.replacement, "replacement"),
    ] {
        if let Some(value) = value {
            check_text(value, name)?;
        }
    }
    if t.fields.as_ref().is_some_and(|f| f.len() > limits::FIELDS) {
        return Err(format!("`fields` may name at most {}", limits::FIELDS));
    }
    if let Some(table) = &t.table {
        if table.0.len() > limits::TABLE_ENTRIES {
            return Err(format!(
                "`table` may have at most {} entries",
                limits::TABLE_ENTRIES
            ));
        }
        if table
            .0
            .values()
            .any(|v| json_depth_exceeds(v, limits::JSON_DEPTH))
        {
            return Err(format!(
                "`table` values may nest at most {} levels",
                limits::JSON_DEPTH
            ));
        }
    }
    if t.value
        .as_ref()
        .is_some_and(|v| json_depth_exceeds(&v.0, limits::JSON_DEPTH))
    {
        return Err(format!(
            "`value` may nest at most {} levels",
            limits::JSON_DEPTH
        ));
    }
    Ok(())
}

fn compile_step(t: &Transformer) -> Result<Step, String> {
    check_transformer(t)?;
    Ok(match t.kind {
        TransformerKind::Trim => Step::Trim,
        TransformerKind::Uppercase => Step::Upper,
        TransformerKind::Lowercase => Step::Lower,
        TransformerKind::ToString => Step::ToString,
        TransformerKind::ToNumber => Step::ToNumber,
        TransformerKind::ToBool => Step::ToBool,
        TransformerKind::DateFormat => Step::Date {
            from: need(&t.from, "from")?.to_string(),
            to: need(&t.to, "to")?.to_string(),
            from_tz: parse_offset(t.from_tz.as_deref())?,
            to_tz: parse_offset(t.to_tz.as_deref())?,
        },
        TransformerKind::ValueMap => Step::ValueMap {
            table: t
                .table
                .as_ref()
                .map(|j| j.0.clone())
                .ok_or("needs `table`")?,
            default: t.value.as_ref().map(|j| j.0.clone()),
        },
        TransformerKind::Default => Step::Default(
            t.value
                .as_ref()
                .map(|j| j.0.clone())
                .ok_or("needs `value`")?,
        ),
        TransformerKind::Concat => Step::Concat {
            fields: t
                .fields
                .as_ref()
                .filter(|f| !f.is_empty())
                .ok_or("needs `fields`")?
                .iter()
                .map(|f| Path::parse(f))
                .collect::<Result<_, _>>()?,
            separator: t.separator.clone().unwrap_or_else(|| " ".into()),
        },
        TransformerKind::Template => Step::Template {
            parts: parse_template(need(&t.template, "template")?)?,
        },
        TransformerKind::Split => Step::Split(t.separator.clone().unwrap_or_else(|| ",".into())),
        TransformerKind::RegexReplace => Step::Regex {
            regex: regex::RegexBuilder::new(need(&t.pattern, "pattern")?)
                .size_limit(limits::REGEX_BYTES)
                .dfa_size_limit(limits::REGEX_BYTES)
                .nest_limit(limits::JSON_DEPTH as u32)
                .build()
                .map_err(|e| format!("invalid pattern: {e}"))?,
            replacement: t.replacement.clone().unwrap_or_default(),
        },
    })
}

fn text_of(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

fn describe(value: &Value) -> String {
    let text = value.to_string();
    if text.chars().count() > 40 {
        format!("{}…", text.chars().take(40).collect::<String>())
    } else {
        text
    }
}

fn parse_date(text: &str, from: &str, tz: FixedOffset) -> Result<DateTime<FixedOffset>, String> {
    let bad = || format!("`{text}` does not match {from}");
    if from.eq_ignore_ascii_case("rfc3339") {
        return DateTime::parse_from_rfc3339(text).map_err(|_| bad());
    }
    if from.contains("%z") || from.contains("%:z") {
        return DateTime::parse_from_str(text, from).map_err(|_| bad());
    }
    let naive = NaiveDateTime::parse_from_str(text, from)
        .or_else(|_| {
            NaiveDate::parse_from_str(text, from).map(|d| d.and_hms_opt(0, 0, 0).expect("midnight"))
        })
        .map_err(|_| bad())?;
    tz.from_local_datetime(&naive).single().ok_or_else(bad)
}

fn check_value_size(len: usize) -> Result<(), String> {
    if len > limits::VALUE_BYTES {
        return Err(format!(
            "the value would be larger than {} bytes",
            limits::VALUE_BYTES
        ));
    }
    Ok(())
}

impl Step {
    fn apply(&self, input: Option<Value>, record: &Value) -> Result<Option<Value>, String> {
        let text_only = |input: Option<Value>, f: &dyn Fn(&str) -> String| match input {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(Value::String(f(&s)))),
            Some(other) => Err(format!("expected text, got {}", describe(&other))),
        };
        match self {
            Step::Trim => text_only(input, &|s| s.trim().to_string()),
            Step::Upper => text_only(input, &|s| s.to_uppercase()),
            Step::Lower => text_only(input, &|s| s.to_lowercase()),
            Step::ToString => Ok(input
                .filter(|v| !v.is_null())
                .map(|v| Value::String(text_of(&v).unwrap_or_else(|| v.to_string())))),
            Step::ToNumber => match input {
                None | Some(Value::Null) => Ok(None),
                Some(Value::Number(n)) => Ok(Some(Value::Number(n))),
                Some(Value::String(s)) => {
                    let n: f64 = s
                        .trim()
                        .parse()
                        .map_err(|_| format!("`{s}` is not a number"))?;
                    let number = if n.fract() == 0.0 && n.abs() < 9e15 {
                        serde_json::Number::from(n as i64)
                    } else {
                        serde_json::Number::from_f64(n)
                            .ok_or_else(|| format!("`{s}` is not a finite number"))?
                    };
                    Ok(Some(Value::Number(number)))
                }
                Some(other) => Err(format!("{} is not a number", describe(&other))),
            },
            Step::ToBool => match input {
                None | Some(Value::Null) => Ok(None),
                Some(Value::Bool(b)) => Ok(Some(Value::Bool(b))),
                Some(other) => match text_of(&other)
                    .map(|t| t.trim().to_ascii_lowercase())
                    .as_deref()
                {
                    Some("true" | "yes" | "y" | "1" | "on") => Ok(Some(Value::Bool(true))),
                    Some("false" | "no" | "n" | "0" | "off" | "") => Ok(Some(Value::Bool(false))),
                    _ => Err(format!("{} is not a boolean", describe(&other))),
                },
            },
            Step::Date {
                from,
                to,
                from_tz,
                to_tz,
            } => match input {
                None | Some(Value::Null) => Ok(None),
                Some(Value::String(s)) => {
                    let parsed = parse_date(s.trim(), from, *from_tz)?.with_timezone(to_tz);
                    let mut out = String::new();
                    if to.eq_ignore_ascii_case("rfc3339") {
                        out = parsed.to_rfc3339();
                    } else {
                        write!(out, "{}", parsed.format(to))
                            .map_err(|_| format!("invalid output format `{to}`"))?;
                    }
                    Ok(Some(Value::String(out)))
                }
                Some(other) => Err(format!("expected a date as text, got {}", describe(&other))),
            },
            Step::ValueMap { table, default } => match input.as_ref().and_then(text_of) {
                Some(key) => match table.get(&key) {
                    Some(mapped) => Ok(Some(mapped.clone())),
                    None => default
                        .clone()
                        .map(Some)
                        .ok_or_else(|| format!("no mapping for `{key}`")),
                },
                None => Ok(default.clone()),
            },
            Step::Default(value) => Ok(match input {
                None | Some(Value::Null) => Some(value.clone()),
                Some(Value::String(s)) if s.is_empty() => Some(value.clone()),
                other => other,
            }),
            Step::Concat { fields, separator } => {
                let mut joined: Option<String> = None;
                for text in fields
                    .iter()
                    .filter_map(|p| p.get(record))
                    .filter_map(text_of)
                {
                    match &mut joined {
                        None => joined = Some(text),
                        Some(out) => {
                            out.push_str(separator);
                            out.push_str(&text);
                        }
                    }
                    check_value_size(joined.as_ref().map_or(0, String::len))?;
                }
                Ok(joined.map(Value::String))
            }
            Step::Template { parts } => {
                let mut out = String::new();
                for part in parts {
                    match part {
                        TemplatePart::Text(text) => out.push_str(text),
                        TemplatePart::Field(path) => {
                            if let Some(text) = path.get(record).and_then(text_of) {
                                out.push_str(&text);
                            }
                        }
                    }
                    check_value_size(out.len())?;
                }
                Ok(Some(Value::String(out)))
            }
            Step::Split(separator) => match input {
                None | Some(Value::Null) => Ok(None),
                Some(Value::String(s)) => Ok(Some(Value::Array(
                    s.split(separator.as_str())
                        .map(str::trim)
                        .filter(|p| !p.is_empty())
                        .map(|p| Value::String(p.to_string()))
                        .collect(),
                ))),
                Some(other) => Err(format!("expected text, got {}", describe(&other))),
            },
            Step::Regex { regex, replacement } => match input {
                None | Some(Value::Null) => Ok(None),
                Some(Value::String(s)) => {
                    // By hand rather than `replace_all`, so the output is bounded as it grows
                    // (`$0$0$0…` multiplies the input).
                    let mut out = String::new();
                    let mut last = 0;
                    for caps in regex.captures_iter(&s) {
                        let whole = caps.get(0).expect("group 0 always matches");
                        out.push_str(&s[last..whole.start()]);
                        caps.expand(replacement, &mut out);
                        last = whole.end();
                        check_value_size(out.len())?;
                    }
                    out.push_str(&s[last..]);
                    check_value_size(out.len())?;
                    Ok(Some(Value::String(out)))
                }
                Some(other) => Err(format!("expected text, got {}", describe(&other))),
            },
        }
    }
}

struct CompiledMapping {
    target: Path,
    source: Option<Path>,
    steps: Vec<Step>,
    required: bool,
}

/// Mappings ready to run.
pub struct Mapper {
    mappings: Vec<CompiledMapping>,
}

/// What mapping one record gave.
#[derive(Debug, Clone, PartialEq)]
pub enum Mapped {
    Record(Value),
    /// A required field was missing.
    Skipped(String),
    /// A transformer failed: (target field, message).
    Failed(Vec<FieldProblem>),
}

impl Mapper {
    /// Compiles mappings; problems name the mapping and transformer (`mappings[2].transformers[0]`).
    pub fn compile(mappings: &[FieldMapping], label: &str) -> Result<Self, Vec<FieldProblem>> {
        if mappings.len() > limits::MAPPINGS {
            return Err(vec![FieldProblem {
                path: label.to_string(),
                message: format!("at most {} mappings", limits::MAPPINGS),
            }]);
        }
        let mut problems = Vec::new();
        let mut compiled = Vec::new();
        for (i, mapping) in mappings.iter().enumerate() {
            let at = format!("{label}[{i}]");
            if mapping.transformers.len() > limits::TRANSFORMERS {
                problems.push(FieldProblem {
                    path: format!("{at}.transformers"),
                    message: format!("at most {} transformers", limits::TRANSFORMERS),
                });
                continue;
            }
            let target = Path::parse(&mapping.target).map_err(|e| {
                problems.push(FieldProblem {
                    path: format!("{at}.target"),
                    message: e,
                })
            });
            let source = mapping
                .source
                .as_deref()
                .map(Path::parse)
                .transpose()
                .map_err(|e| {
                    problems.push(FieldProblem {
                        path: format!("{at}.source"),
                        message: e,
                    })
                });
            let mut steps = Vec::new();
            for (j, transformer) in mapping.transformers.iter().enumerate() {
                match compile_step(transformer) {
                    Ok(step) => steps.push(step),
                    Err(message) => problems.push(FieldProblem {
                        path: format!("{at}.transformers[{j}]"),
                        message,
                    }),
                }
            }
            let generates = mapping.transformers.iter().any(|t| {
                matches!(
                    t.kind,
                    TransformerKind::Concat | TransformerKind::Template | TransformerKind::Default
                )
            });
            if mapping.source.is_none() && !generates {
                problems.push(FieldProblem {
                    path: format!("{at}.source"),
                    message: "needs a source (or a concat, template or default transformer)".into(),
                });
            }
            if let (Ok(target), Ok(source)) = (target, source) {
                compiled.push(CompiledMapping {
                    target,
                    source,
                    steps,
                    required: mapping.required,
                });
            }
        }
        if problems.is_empty() {
            Ok(Self { mappings: compiled })
        } else {
            Err(problems)
        }
    }

    /// Maps one record. Records nested deeper than [`limits::JSON_DEPTH`], mapped records
    /// over [`limits::RECORD_BYTES`] and records mapped once `budget` is spent fail with the
    /// reason.
    pub fn map(&self, record: &Value, budget: &OutputBudget) -> Mapped {
        let fail = |message: String| {
            Mapped::Failed(vec![FieldProblem {
                path: String::new(),
                message,
            }])
        };
        if json_depth_exceeds(record, limits::JSON_DEPTH) {
            return fail(format!(
                "the record nests deeper than {} levels",
                limits::JSON_DEPTH
            ));
        }
        let mut out = Value::Object(Map::new());
        let mut size = 0;
        let mut problems = Vec::new();
        for mapping in &self.mappings {
            let mut value = mapping.source.as_ref().and_then(|p| p.get(record)).cloned();
            let mut failed = false;
            for step in &mapping.steps {
                match step.apply(value.take(), record) {
                    Ok(next) => value = next,
                    Err(message) => {
                        problems.push(FieldProblem {
                            path: mapping.target.as_str().to_string(),
                            message,
                        });
                        failed = true;
                        break;
                    }
                }
            }
            if failed {
                continue;
            }
            match value {
                Some(Value::Null) | None if mapping.required => {
                    return Mapped::Skipped(format!(
                        "required field `{}` is missing",
                        mapping.target.as_str()
                    ));
                }
                Some(Value::Null) | None => {}
                Some(value) => {
                    size += json_size(&value) + mapping.target.cost();
                    if size > limits::RECORD_BYTES {
                        return fail(format!(
                            "the mapped record would be larger than {} bytes",
                            limits::RECORD_BYTES
                        ));
                    }
                    mapping.target.set(&mut out, value)
                }
            }
        }
        if !budget.take(size) {
            return fail("the records mapped by this request (or page) exceed their output budget; send fewer".into());
        }
        if problems.is_empty() {
            Mapped::Record(out)
        } else {
            Mapped::Failed(problems)
        }
    }

    /// The paths this mapper writes (what a synced record is compared on).
    pub fn target_paths(&self) -> Vec<Path> {
        self.mappings.iter().map(|m| m.target.clone()).collect()
    }
}

/// `mappings` reversed where each is a plain field-to-field copy (no transformers).
pub fn derive_reverse(mappings: &[FieldMapping]) -> Vec<FieldMapping> {
    mappings
        .iter()
        .filter(|m| m.transformers.is_empty())
        .filter_map(|m| {
            Some(FieldMapping {
                target: m.source.clone()?,
                source: Some(m.target.clone()),
                transformers: Vec::new(),
                required: m.required,
            })
        })
        .collect()
}

/// The values a record holds at `paths`: what "changed" is judged on.
pub fn projection(record: &Value, paths: &[Path]) -> Value {
    let mut out = Map::new();
    for path in paths {
        out.insert(
            path.as_str().to_string(),
            path.get(record).cloned().unwrap_or(Value::Null),
        );
    }
    Value::Object(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn unlimited() -> OutputBudget {
        OutputBudget::new(usize::MAX)
    }

    fn t(kind: TransformerKind) -> Transformer {
        Transformer {
            kind,
            from: None,
            to: None,
            from_tz: None,
            to_tz: None,
            table: None,
            value: None,
            fields: None,
            separator: None,
            template: None,
            pattern: None,
            replacement: None,
        }
    }

    fn mapping(target: &str, source: Option<&str>, transformers: Vec<Transformer>) -> FieldMapping {
        FieldMapping {
            target: target.into(),
            source: source.map(str::to_string),
            transformers,
            required: false,
        }
    }

    #[test]
    fn paths_read_and_write_nested_values() {
        let path = Path::parse("a.b[1].c").unwrap();
        let mut value = json!({});
        path.set(&mut value, json!(5));
        assert_eq!(value, json!({ "a": { "b": [null, { "c": 5 }] } }));
        assert_eq!(path.get(&value), Some(&json!(5)));
        assert!(
            Path::parse("a..b").is_err()
                && Path::parse("a[x]").is_err()
                && Path::parse("").is_err()
        );
    }

    #[test]
    fn every_transformer() {
        let record = json!({ "key": "QA-1", "summary": "  Login fails ", "n": "42", "b": "yes",
            "date": "2026-03-01 14:30", "status": "In Progress", "tags": "a, b,c", "x": "v1.2.3" });
        let mut date = t(TransformerKind::DateFormat);
        date.from = Some("%Y-%m-%d %H:%M".into());
        date.from_tz = Some("+02:00".into());
        date.to = Some("rfc3339".into());
        let mut map = t(TransformerKind::ValueMap);
        map.table = Some(async_graphql::Json(
            json!({ "In Progress": "Active" })
                .as_object()
                .unwrap()
                .clone(),
        ));
        let mut default = t(TransformerKind::Default);
        default.value = Some(async_graphql::Json(json!("none")));
        let mut concat = t(TransformerKind::Concat);
        concat.fields = Some(vec!["key".into(), "status".into()]);
        concat.separator = Some("/".into());
        let mut template = t(TransformerKind::Template);
        template.template = Some("{summary} [{key}]".into());
        let mut regex = t(TransformerKind::RegexReplace);
        regex.pattern = Some(r"\.".into());
        regex.replacement = Some("-".into());
        let mappings = vec![
            mapping(
                "title",
                Some("summary"),
                vec![t(TransformerKind::Trim), t(TransformerKind::Uppercase)],
            ),
            mapping("lower", Some("key"), vec![t(TransformerKind::Lowercase)]),
            mapping("count", Some("n"), vec![t(TransformerKind::ToNumber)]),
            mapping("text", Some("count_missing"), vec![default.clone()]),
            mapping("flag", Some("b"), vec![t(TransformerKind::ToBool)]),
            mapping("when", Some("date"), vec![date]),
            mapping("state", Some("status"), vec![map]),
            mapping("both", None, vec![concat]),
            mapping("label", None, vec![template]),
            mapping("tags", Some("tags"), vec![t(TransformerKind::Split)]),
            mapping("version", Some("x"), vec![regex]),
            mapping(
                "as_text",
                Some("n"),
                vec![t(TransformerKind::ToNumber), t(TransformerKind::ToString)],
            ),
        ];
        let mapper = Mapper::compile(&mappings, "mappings").unwrap();
        let Mapped::Record(out) = mapper.map(&record, &unlimited()) else {
            panic!()
        };
        assert_eq!(
            out,
            json!({ "title": "LOGIN FAILS", "lower": "qa-1", "count": 42, "text": "none", "flag": true,
                "when": "2026-03-01T12:30:00+00:00", "state": "Active", "both": "QA-1/In Progress",
                "label": "  Login fails  [QA-1]", "tags": ["a", "b", "c"], "version": "v1-2-3", "as_text": "42" })
        );
    }

    #[test]
    fn bad_input_fails_the_record_with_the_field_named() {
        let mut date = t(TransformerKind::DateFormat);
        date.from = Some("%Y-%m-%d".into());
        date.to = Some("%d/%m/%Y".into());
        let mapper = Mapper::compile(
            &[
                mapping("when", Some("d"), vec![date]),
                mapping("n", Some("n"), vec![t(TransformerKind::ToNumber)]),
            ],
            "mappings",
        )
        .unwrap();
        let Mapped::Failed(problems) =
            mapper.map(&json!({ "d": "yesterday", "n": "abc" }), &unlimited())
        else {
            panic!()
        };
        assert_eq!(
            problems.iter().map(|p| p.path.as_str()).collect::<Vec<_>>(),
            ["when", "n"]
        );
        assert!(problems[0].message.contains("`yesterday` does not match"));
        assert!(problems[1].message.contains("`abc` is not a number"));
        assert_eq!(
            mapper.map(&json!({ "d": "2026-01-31", "n": 1 }), &unlimited()),
            Mapped::Record(json!({ "when": "31/01/2026", "n": 1 }))
        );
    }

    #[test]
    fn long_multibyte_values_are_described_without_panicking() {
        let mapper = Mapper::compile(
            &[mapping("n", Some("v"), vec![t(TransformerKind::ToBool)])],
            "mappings",
        )
        .unwrap();
        let value = json!(["xééééééééééééééééééééééééééééééééééééééééééééé"]);
        let Mapped::Failed(problems) = mapper.map(&json!({ "v": value }), &unlimited()) else {
            panic!()
        };
        assert!(
            problems[0].message.ends_with("… is not a boolean"),
            "{}",
            problems[0].message
        );
    }

    #[test]
    fn required_fields_skip_and_bad_mappings_are_named() {
        let mut required = mapping("id", Some("key"), vec![]);
        required.required = true;
        let mapper = Mapper::compile(&[required], "mappings").unwrap();
        assert_eq!(
            mapper.map(&json!({}), &unlimited()),
            Mapped::Skipped("required field `id` is missing".into())
        );
        let mut bad = t(TransformerKind::RegexReplace);
        bad.pattern = Some("(".into());
        let err = Mapper::compile(
            &[
                mapping("a", Some("b"), vec![t(TransformerKind::Trim), bad]),
                mapping("c", None, vec![]),
            ],
            "mappings",
        )
        .err()
        .unwrap();
        assert_eq!(
            err.iter().map(|p| p.path.as_str()).collect::<Vec<_>>(),
            ["mappings[0].transformers[1]", "mappings[1].source"]
        );
    }
}
