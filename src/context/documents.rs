//! Parsed operations, kept by their text: clients send the same few documents over and over
//! (a frontend's queries, an API client's `executeRequest`), and parsing is the costliest step
//! before execution. Text that does not parse is never kept, so its errors come from the
//! normal path.
//!
//! Next to a document the cache keeps what validating it gave once it passed (per operation
//! name): everything async-graphql's validation checks depends on the document alone, except
//! the variables' values (`graphql::limits` checks those on every request and validates in
//! full when one does not fit). So a document is validated once, not on every request.

use std::collections::HashMap;
use std::sync::RwLock;

use async_graphql::parser::types::{DocumentOperations, ExecutableDocument, OperationType};
use async_graphql::{Request, ValidationResult};

/// Documents longer than this are parsed every time (they are rare and would crowd out the rest).
const MAX_DOCUMENT_BYTES: usize = 16 * 1024;

pub struct DocumentCache {
    max_entries: usize,
    entries: RwLock<HashMap<String, Entry>>,
}

struct Entry {
    document: ExecutableDocument,
    /// The operation name a validation passed with, and what it gave.
    validated: Option<(Option<String>, ValidationResult)>,
}

impl DocumentCache {
    pub fn new(max_entries: usize) -> Self {
        Self {
            max_entries,
            entries: RwLock::new(HashMap::new()),
        }
    }

    /// Gives `request` its parsed document, from the cache or parsed now (and kept).
    pub fn prepare(&self, request: &mut Request) {
        if self.max_entries == 0 || request.query.len() > MAX_DOCUMENT_BYTES {
            return;
        }
        let cached = {
            let entries = self.entries.read().unwrap_or_else(|e| e.into_inner());
            entries
                .get(&request.query)
                .map(|entry| entry.document.clone())
        };
        if let Some(document) = cached {
            request.set_parsed_query(document);
            return;
        }
        let Ok(document) = async_graphql::parser::parse_query(&request.query) else {
            return;
        };
        let mut entries = self.entries.write().unwrap_or_else(|e| e.into_inner());
        if entries.len() >= self.max_entries {
            // Crude but bounded: a working set larger than the cache is re-learnt.
            entries.clear();
        }
        let entry = Entry {
            document: document.clone(),
            validated: None,
        };
        entries.insert(request.query.clone(), entry);
        drop(entries);
        request.set_parsed_query(document);
    }

    /// What validating the kept document `query` gave when it passed for `operation`.
    pub fn validated(&self, query: &str, operation: Option<&str>) -> Option<ValidationResult> {
        let entries = self.entries.read().unwrap_or_else(|e| e.into_inner());
        match &entries.get(query)?.validated {
            Some((name, result)) if name.as_deref() == operation => Some(*result),
            _ => None,
        }
    }

    /// Keeps what validating `query` for `operation` gave (a document not kept is ignored).
    pub fn passed(&self, query: &str, operation: Option<&str>, result: ValidationResult) {
        let mut entries = self.entries.write().unwrap_or_else(|e| e.into_inner());
        if let Some(entry) = entries.get_mut(query) {
            entry.validated = Some((operation.map(str::to_string), result));
        }
    }
}

/// The type of the operation a request selects; None when it does not parse or selects none.
pub fn operation_type(request: &Request) -> Option<OperationType> {
    let document = async_graphql::parser::parse_query(&request.query).ok()?;
    match &document.operations {
        DocumentOperations::Single(op) => Some(op.node.ty),
        DocumentOperations::Multiple(ops) => match &request.operation_name {
            Some(name) => ops.get(name.as_str()).map(|op| op.node.ty),
            None if ops.len() == 1 => ops.values().next().map(|op| op.node.ty),
            None => None,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_parsed_documents_and_never_bad_ones() {
        let cache = DocumentCache::new(2);
        let mut request = Request::new("{ viewer { teamId } }");
        cache.prepare(&mut request);
        assert_eq!(cache.entries.read().unwrap().len(), 1);
        let mut again = Request::new("{ viewer { teamId } }");
        cache.prepare(&mut again);
        assert!(again.parsed_query().is_ok());
        assert_eq!(cache.entries.read().unwrap().len(), 1);

        let mut broken = Request::new("{ viewer { ");
        cache.prepare(&mut broken);
        assert_eq!(cache.entries.read().unwrap().len(), 1);

        for query in ["{ a }", "{ b }", "{ c }"] {
            cache.prepare(&mut Request::new(query));
        }
        assert!(cache.entries.read().unwrap().len() <= 2);
    }
}
