//! `template.yaml` against the code: it is what the generator makes now, and, read back as YAML
//! on its own terms, its tables match the schema and its API routes match the route table.

use super::*;
use std::collections::BTreeSet;

fn checked_in() -> String {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../template.yaml");
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// A stale `template.yaml` is written anew, and the test fails so that the change is seen (and
/// committed): after a change to the route table, `cargo test` brings it up to date.
#[test]
fn the_checked_in_template_is_what_the_code_generates() {
    let generated = render();
    if checked_in() != generated {
        std::fs::write(concat!(env!("CARGO_MANIFEST_DIR"), "/../template.yaml"), &generated).expect("write template");
        panic!("template.yaml was stale and has been written anew from the code: review and commit it");
    }
}

/// The function a resource of the template runs: its `IM_FUNCTION` names it, and it builds the
/// binary that runs that function.
fn function_of(f: &Value) -> &str {
    assert_eq!(text(f, &["Metadata", "BuildMethod"]), "rust-cargolambda");
    let name = text(f, &["Properties", "Environment", "Variables", FUNCTION_VAR]);
    let binary = function::find(name).unwrap_or_else(|| panic!("no function {name}")).role.binary();
    assert_eq!(text(f, &["Metadata", "BuildProperties", "Binary"]), binary.name(), "{name}'s binary");
    name
}

fn get<'a>(v: &'a Value, path: &[&str]) -> &'a Value {
    path.iter().fold(v, |v, k| v.get(*k).unwrap_or_else(|| panic!("missing {k} in {path:?}")))
}

fn text<'a>(v: &'a Value, path: &[&str]) -> &'a str {
    get(v, path).as_str().unwrap_or_else(|| panic!("{path:?} is not a string"))
}

fn keys(schema: &Value) -> Vec<(String, String)> {
    schema
        .as_sequence()
        .unwrap()
        .iter()
        .map(|k| (text(k, &["AttributeName"]).to_string(), text(k, &["KeyType"]).to_string()))
        .collect()
}

fn expected_keys(pk: KeyAttr, sk: Option<KeyAttr>) -> Vec<(String, String)> {
    std::iter::once((pk.name.to_string(), "HASH".to_string()))
        .chain(sk.map(|a| (a.name.to_string(), "RANGE".to_string())))
        .collect()
}

#[test]
fn tables_keys_indexes_and_routes_match_the_code() {
    let doc: Value = serde_norway::from_str(&checked_in()).expect("template.yaml is YAML");
    let resources = get(&doc, &["Resources"]).as_mapping().unwrap();
    let of_type = |ty: &'static str| resources.iter().filter(move |(_, r)| text(r, &["Type"]) == ty).map(|(_, r)| r);

    // Tables: one per schema table, named <stack>-<name>, with its keys, types, indexes, TTL
    // and stream.
    let tables: Vec<&Value> = of_type("AWS::DynamoDB::Table").collect();
    assert_eq!(tables.len(), ALL_TABLES.len(), "a table too many or too few");
    for t in ALL_TABLES {
        let name = format!("${{AWS::StackName}}-{}", t.name);
        let r = tables
            .iter()
            .find(|r| text(r, &["Properties", "TableName", "Fn::Sub"]) == name)
            .unwrap_or_else(|| panic!("no table {}", t.name));
        let p = get(r, &["Properties"]);
        assert_eq!(keys(get(p, &["KeySchema"])), expected_keys(t.pk, t.sk), "{} keys", t.name);
        let types: BTreeSet<(String, String)> = get(p, &["AttributeDefinitions"])
            .as_sequence()
            .unwrap()
            .iter()
            .map(|a| (text(a, &["AttributeName"]).into(), text(a, &["AttributeType"]).into()))
            .collect();
        let key_attrs = [Some(t.pk), t.sk].into_iter().chain(t.indexes.iter().flat_map(|i| [Some(i.pk), i.sk]));
        let expected: BTreeSet<(String, String)> = key_attrs
            .flatten()
            .map(|a| (a.name.to_string(), if a.ty == KeyType::S { "S" } else { "N" }.to_string()))
            .collect();
        assert_eq!(types, expected, "{} attribute definitions", t.name);
        let gsis = p.get("GlobalSecondaryIndexes").and_then(Value::as_sequence).cloned().unwrap_or_default();
        assert_eq!(gsis.len(), t.indexes.len(), "{} indexes", t.name);
        for i in t.indexes {
            let g = gsis.iter().find(|g| text(g, &["IndexName"]) == i.name).expect("the index is declared");
            assert_eq!(keys(get(g, &["KeySchema"])), expected_keys(i.pk, i.sk), "{}.{}", t.name, i.name);
        }
        let ttl = p.get("TimeToLiveSpecification").map(|s| text(s, &["AttributeName"]).to_string());
        assert_eq!(ttl.as_deref(), t.ttl, "{} TTL", t.name);
        let stream = p.get("StreamSpecification").map(|s| text(s, &["StreamViewType"]).to_string());
        assert_eq!(stream.as_deref(), t.stream.then_some("NEW_AND_OLD_IMAGES"), "{} stream", t.name);
    }

    // Routes: every route the functions serve is one HttpApi event of the function built from
    // its binary, open exactly when the route needs no token; nothing else is routed.
    let mut routed = BTreeSet::new();
    let mut functions = BTreeSet::new();
    for f in of_type("AWS::Serverless::Function") {
        let binary = function_of(f);
        functions.insert(binary.to_string());
        let events = f["Properties"].get("Events").and_then(Value::as_mapping).into_iter().flatten();
        for (_, event) in events {
            if text(event, &["Type"]) != "HttpApi" {
                continue;
            }
            let p = get(event, &["Properties"]);
            let open = p.get("Auth").is_some_and(|a| text(a, &["Authorizer"]) == "NONE");
            routed.insert((text(p, &["Method"]).to_string(), text(p, &["Path"]).to_string(), binary.to_string(), open));
        }
    }
    let expected: BTreeSet<_> = crate::routes::ROUTES
        .iter()
        .filter(|r| !r.local_only())
        .map(|r| (r.method.to_string(), r.path.to_string(), r.lambda.to_string(), !r.auth()))
        .collect();
    assert_eq!(routed, expected);
    assert_eq!(functions, function::all().map(|f| f.name.to_string()).collect(), "one resource per function");

    // The WebSocket API: each route key to the function the code serves it with, through an
    // integration of that function, which API Gateway may invoke.
    let all = get(&doc, &["Resources"]);
    let mut ws_routes = BTreeSet::new();
    for route in of_type("AWS::ApiGatewayV2::Route") {
        let p = get(route, &["Properties"]);
        let target = text(p, &["Target", "Fn::Sub"]);
        let integration = target.strip_prefix("integrations/${").and_then(|t| t.strip_suffix('}')).unwrap();
        let uri = text(get(all, &[integration]), &["Properties", "IntegrationUri", "Fn::Sub"]);
        let function = all
            .as_mapping()
            .unwrap()
            .iter()
            .find(|(id, _)| uri.contains(&format!("${{{}.Arn}}", id.as_str().unwrap())))
            .map(|(_, f)| function_of(f).to_string())
            .expect("the integration invokes a function of the template");
        ws_routes.insert((text(p, &["RouteKey"]).to_string(), function));
    }
    let expected: BTreeSet<_> = function::all()
        .filter_map(|f| match f.role {
            Role::Ws(route) => Some((route.to_string(), f.name.to_string())),
            _ => None,
        })
        .collect();
    assert_eq!(of_type("AWS::Lambda::Permission").count(), expected.len());
    assert_eq!(ws_routes, expected);
}

#[test]
fn queues_outlast_the_functions_that_consume_them() {
    // A job must stay hidden while a worker may still run on it.
    let doc = document();
    let fanout = get(&doc, &["Resources", &queue_id(FANOUT), "Properties"]);
    assert_eq!(get(fanout, &["VisibilityTimeout"]).as_u64(), Some(FANOUT_VISIBILITY_SECS));
    let worker = get(&doc, &["Resources", &function_id("fanout-worker"), "Properties"]);
    assert!(get(worker, &["Timeout"]).as_u64().unwrap() * 6 <= FANOUT_VISIBILITY_SECS);
}
