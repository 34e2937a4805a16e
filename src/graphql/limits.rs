//! Query cost limits, checked before anything executes (in the spirit of graphql-armor):
//! aliases, field selections and directives per field right after parsing (counted with
//! fragments expanded, so a fragment spread many times counts each time), then depth and
//! complexity from async-graphql's own validation. Every refusal is QUERY_TOO_COMPLEX.

use std::collections::HashMap;

use async_graphql::parser::types::{ExecutableDocument, Selection, SelectionSet};
use async_graphql::{ServerError, ServerResult, ValidationResult, Variables};

#[derive(Debug, Clone, Copy)]
pub struct QueryLimits {
    pub max_depth: usize,
    pub max_complexity: usize,
    pub max_aliases: usize,
    pub max_fields: usize,
    pub max_directives: usize,
}

/// How deep a variable's value may nest (lists and objects).
pub const MAX_VARIABLE_DEPTH: usize = 64;

/// Variables nesting deeper than [`MAX_VARIABLE_DEPTH`] are refused before parsing, named;
/// walked without recursion.
pub fn check_variables(variables: &Variables) -> ServerResult<()> {
    use async_graphql::Value;
    for (name, value) in variables.iter() {
        let mut stack = vec![(value, 0usize)];
        while let Some((value, depth)) = stack.pop() {
            let children: Vec<&Value> = match value {
                Value::List(items) => items.iter().collect(),
                Value::Object(map) => map.values().collect(),
                _ => continue,
            };
            if depth + 1 > MAX_VARIABLE_DEPTH {
                let mut error = ServerError::new(
                    format!("the variable `${name}` nests deeper than {MAX_VARIABLE_DEPTH} levels"),
                    None,
                );
                let mut extensions = async_graphql::ErrorExtensionValues::default();
                extensions.set("code", "VALIDATION_FAILED");
                error.extensions = Some(extensions);
                return Err(error);
            }
            stack.extend(children.into_iter().map(|c| (c, depth + 1)));
        }
    }
    Ok(())
}

pub fn too_complex(message: String) -> ServerError {
    let mut error = ServerError::new(message, None);
    let mut extensions = async_graphql::ErrorExtensionValues::default();
    extensions.set("code", "QUERY_TOO_COMPLEX");
    error.extensions = Some(extensions);
    error
}

#[derive(Default, Clone, Copy)]
struct Counts {
    aliases: usize,
    fields: usize,
}

impl Counts {
    fn add(self, other: Counts) -> Counts {
        Counts {
            aliases: self.aliases.saturating_add(other.aliases),
            fields: self.fields.saturating_add(other.fields),
        }
    }
}

struct Walker<'a> {
    doc: &'a ExecutableDocument,
    limits: QueryLimits,
    fragments: HashMap<&'a str, Option<Counts>>,
}

impl<'a> Walker<'a> {
    /// Counts a selection set with fragments expanded; introspection (`__schema`, `__type`) is
    /// left to the depth limit.
    fn selection_set(&mut self, set: &'a SelectionSet) -> ServerResult<Counts> {
        let mut counts = Counts::default();
        for selection in &set.items {
            match &selection.node {
                Selection::Field(field) => {
                    let field = &field.node;
                    if field.directives.len() > self.limits.max_directives {
                        return Err(too_complex(format!(
                            "a field carries {} directives; the limit is {}",
                            field.directives.len(),
                            self.limits.max_directives
                        )));
                    }
                    let name = field.name.node.as_str();
                    if name == "__schema" || name == "__type" {
                        continue;
                    }
                    counts.fields = counts.fields.saturating_add(1);
                    if field.alias.is_some() {
                        counts.aliases = counts.aliases.saturating_add(1);
                    }
                    counts = counts.add(self.selection_set(&field.selection_set.node)?);
                }
                Selection::FragmentSpread(spread) => {
                    counts = counts.add(self.fragment(spread.node.fragment_name.node.as_str())?);
                }
                Selection::InlineFragment(inline) => {
                    counts = counts.add(self.selection_set(&inline.node.selection_set.node)?);
                }
            }
            if counts.aliases > self.limits.max_aliases || counts.fields > self.limits.max_fields {
                return Ok(counts);
            }
        }
        Ok(counts)
    }

    fn fragment(&mut self, name: &'a str) -> ServerResult<Counts> {
        match self.fragments.get(name) {
            Some(Some(counts)) => return Ok(*counts),
            Some(None) => return Err(too_complex(format!("fragment `{name}` spreads itself"))),
            None => {}
        }
        let Some(fragment) = self.doc.fragments.get(name) else {
            return Ok(Counts::default()); // validation reports the unknown fragment
        };
        self.fragments.insert(name, None);
        let counts = self.selection_set(&fragment.node.selection_set.node)?;
        self.fragments.insert(name, Some(counts));
        Ok(counts)
    }
}

impl QueryLimits {
    /// async-graphql's own depth and complexity refusals (`graphql::FastSchema` sets its
    /// limits instead of reading the validation result) in our words, QUERY_TOO_COMPLEX.
    pub fn explain(&self, error: &mut ServerError) {
        let message = match error.message.as_str() {
            "Query is nested too deep." => format!(
                "the query is nested more than {} levels deep (the limit)",
                self.max_depth
            ),
            "Query is too complex." => format!(
                "the query's complexity is above {} (the limit)",
                self.max_complexity
            ),
            _ => return,
        };
        *error = too_complex(message);
    }

    /// Depth and complexity from async-graphql's validation, against the limits.
    pub fn check_result(&self, result: &ValidationResult) -> Result<(), Vec<ServerError>> {
        if result.depth > self.max_depth {
            return Err(vec![too_complex(format!(
                "the query is nested {} levels deep; the limit is {}",
                result.depth, self.max_depth
            ))]);
        }
        if result.complexity > self.max_complexity {
            return Err(vec![too_complex(format!(
                "the query's complexity is {}; the limit is {}",
                result.complexity, self.max_complexity
            ))]);
        }
        Ok(())
    }

    pub fn check_document(&self, doc: &ExecutableDocument) -> ServerResult<()> {
        let mut walker = Walker {
            doc,
            limits: *self,
            fragments: HashMap::new(),
        };
        for (_, operation) in doc.operations.iter() {
            let counts = walker.selection_set(&operation.node.selection_set.node)?;
            if counts.aliases > self.max_aliases {
                return Err(too_complex(format!(
                    "the query uses more than {} aliases (the limit)",
                    self.max_aliases
                )));
            }
            if counts.fields > self.max_fields {
                return Err(too_complex(format!(
                    "the query selects more than {} fields (the limit)",
                    self.max_fields
                )));
            }
        }
        Ok(())
    }
}
