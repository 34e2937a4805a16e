/// schema.graphql at the repository root is what the code serves; regenerate it with
/// `cargo run -- export-schema --output schema.graphql`.
#[test]
fn committed_schema_matches_the_code() {
    let committed =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/schema.graphql")).unwrap();
    assert!(
        committed == integration_hub::graphql::sdl(),
        "schema.graphql is out of date: run `cargo run -- export-schema --output schema.graphql`"
    );
}
