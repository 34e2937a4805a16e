//! Property tests over the mapping language and the sync spec's path templates: for
//! arbitrary (often hostile) mappings and records nothing panics, compiling refuses what is
//! over the limits, and what mapping makes stays within the documented bounds.

use async_graphql::Json;
use integration_hub::sync::mapping::{
    Mapped, Mapper, OutputBudget, Path, json_depth_exceeds, json_size, limits,
};
use integration_hub::sync::spec::{FieldMapping, Transformer, TransformerKind};
use integration_hub::sync::writes::render_path;
use proptest::collection::{btree_map, vec};
use proptest::prelude::*;
use serde_json::{Value, json};

/// JSON up to 40 levels deep (past the 32-level limit), small at each level.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<f64>().prop_map(|n| json!(n)),
        "[a-c0-9 .,{}$%-]{0,24}".prop_map(Value::String),
    ];
    leaf.prop_recursive(40, 160, 5, |inner| {
        prop_oneof![
            vec(inner.clone(), 0..5).prop_map(Value::Array),
            btree_map("[a-c]{1,2}", inner, 0..5)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Paths, well-formed or not, some with huge indexes or many segments.
fn path_text() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-c]{1,2}(\\.[a-c]{1,2}){0,3}",
        "([a-c]{1,2}(\\[[0-9]{1,12}\\])?\\.){0,40}[a-c]",
        "[a-c\\[\\]0-9.]{0,60}",
        ".{0,40}",
    ]
}

fn kind() -> impl Strategy<Value = TransformerKind> {
    prop_oneof![
        Just(TransformerKind::Trim),
        Just(TransformerKind::Uppercase),
        Just(TransformerKind::Lowercase),
        Just(TransformerKind::ToString),
        Just(TransformerKind::ToNumber),
        Just(TransformerKind::ToBool),
        Just(TransformerKind::DateFormat),
        Just(TransformerKind::ValueMap),
        Just(TransformerKind::Default),
        Just(TransformerKind::Concat),
        Just(TransformerKind::Template),
        Just(TransformerKind::Split),
        Just(TransformerKind::RegexReplace),
    ]
}

fn transformer() -> impl Strategy<Value = Transformer> {
    (
        kind(),
        proptest::option::of(prop_oneof![
            "%[YmdHMSz:%-]{0,3}",
            Just("rfc3339".to_string()),
            ".{0,8}"
        ]),
        proptest::option::of(prop_oneof![
            "[+-][0-9]{1,2}(:[0-9]{2})?",
            Just("UTC".to_string()),
            ".{0,6}"
        ]),
        proptest::option::of(btree_map(".{0,4}", json_value(), 0..4)),
        proptest::option::of(json_value()),
        proptest::option::of(vec(path_text(), 0..5)),
        proptest::option::of(".{0,4}"),
        proptest::option::of("([a-c .]{0,4}\\{[a-c.\\[\\]0-9]{0,8}\\}?){0,6}"),
        proptest::option::of("[a-c\\\\.*+?(){}\\[\\]|^$0-9,]{0,24}"),
        proptest::option::of("(\\$[0-9]|[a-c]){0,12}"),
    )
        .prop_map(
            |(
                kind,
                format,
                tz,
                table,
                value,
                fields,
                separator,
                template,
                pattern,
                replacement,
            )| {
                Transformer {
                    kind,
                    from: format.clone(),
                    to: format,
                    from_tz: tz.clone(),
                    to_tz: tz,
                    table: table.map(|t| Json(t.into_iter().collect())),
                    value: value.map(Json),
                    fields,
                    separator,
                    template,
                    pattern,
                    replacement,
                }
            },
        )
}

fn mapping() -> impl Strategy<Value = FieldMapping> {
    (
        path_text(),
        proptest::option::of(path_text()),
        vec(transformer(), 0..4),
        any::<bool>(),
    )
        .prop_map(|(target, source, transformers, required)| FieldMapping {
            target,
            source,
            transformers,
            required,
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    #[test]
    fn mapping_never_panics_and_stays_bounded(
        mappings in vec(mapping(), 0..6),
        records in vec(json_value(), 0..4),
    ) {
        if let Ok(mapper) = Mapper::compile(&mappings, "mappings") {
            let budget = OutputBudget::new(limits::OUTPUT_BYTES);
            for record in &records {
                if let Mapped::Record(out) = mapper.map(record, &budget) {
                    prop_assert!(json_size(&out) <= limits::RECORD_BYTES);
                    prop_assert!(!json_depth_exceeds(
                        &out,
                        limits::PATH_SEGMENTS + limits::JSON_DEPTH
                    ));
                }
            }
        }
    }

    #[test]
    fn paths_are_bounded_or_refused(text in path_text(), value in json_value()) {
        if let Ok(path) = Path::parse(&text) {
            prop_assert!(text.chars().count() <= limits::PATH_CHARS);
            let mut out = json!({});
            path.set(&mut out, value.clone());
            prop_assert_eq!(path.get(&out), Some(&value));
        }
    }

    #[test]
    fn path_templates_never_panic(
        template in "(/[a-c]{0,3}|\\{[a-c.\\[\\]0-9]{0,14}\\}?|%){0,8}",
        record in json_value(),
        key in ".{0,8}",
    ) {
        if let Ok(path) = render_path(&template, &record, &key) {
            prop_assert!(!path.contains('{'), "{}", path);
        }
    }
}

#[test]
fn hostile_paths_are_refused() {
    for text in [
        vec!["a"; 5000].join("."),
        "x[10000000]".into(),
        "x[1000000000]".into(),
        "x[99999999999999999999999]".into(),
        format!("x{}", "[0]".repeat(100)),
        "a".repeat(300),
    ] {
        assert!(
            Path::parse(&text).is_err(),
            "{}",
            &text[..text.len().min(40)]
        );
    }
}
