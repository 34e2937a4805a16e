//! Parsed operations, kept by their text: clients send the same few documents over and over
//! (a frontend's queries, an API client's `executeRequest`), and parsing is the costliest step
//! before execution. A document is still validated, checked against the query limits and
//! executed on every request; only the parse is reused. Text that does not parse is never
//! kept, so its errors come from the normal path.

use std::collections::HashMap;
use std::sync::RwLock;

use async_graphql::Request;
use async_graphql::parser::types::{DocumentOperations, ExecutableDocument, OperationType};

/// Documents longer than this are parsed every time (they are rare and would crowd out the rest).
const MAX_DOCUMENT_BYTES: usize = 16 * 1024;

pub struct DocumentCache {
    max_entries: usize,
    entries: RwLock<HashMap<String, ExecutableDocument>>,
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
            entries.get(&request.query).cloned()
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
        entries.insert(request.query.clone(), document.clone());
        drop(entries);
        request.set_parsed_query(document);
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
