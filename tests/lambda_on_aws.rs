//! The Lambda functions' AWS configuration (`im_functions::lambda::sdk_config`), built from the
//! variables Lambda sets, on a moto server: its clients reach DynamoDB and SQS and sign their
//! requests; a missing key or region stops the function's cold start, named.

mod common;

use im_shared::queue::service_queues;
use im_shared::queue::sqs::SqsQueue;
use im_shared::tables::dynamo::DynamoTables;
use std::collections::HashMap;

/// A function's environment on the moto server, as `common::aws_env` gives a server's.
fn lambda_env(prefix: &str) -> HashMap<String, String> {
    let mut env: HashMap<String, String> = common::aws_env(prefix).into_iter().collect();
    env.insert("AWS_SESSION_TOKEN".into(), "token".into());
    env
}

#[tokio::test]
async fn the_functions_reach_dynamodb_and_sqs_with_the_variables_lambda_sets() {
    let prefix = format!("lc{}-", std::process::id());
    let env = lambda_env(&prefix);
    let sdk = im_functions::lambda::sdk_config(|name| env.get(name).cloned()).expect("a whole environment");
    assert_eq!(sdk.region().map(|r| r.as_ref()), Some("us-east-1"));
    assert_eq!(sdk.endpoint_url(), Some(common::moto_url().as_str()));

    let dynamo = aws_sdk_dynamodb::Client::new(&sdk);
    DynamoTables::new(dynamo.clone(), prefix.clone()).create_tables().await.expect("create the tables on moto");
    // By name, not by ListTables: the suites share one moto server, and ListTables gives 100 names a page.
    let store = dynamo.describe_table().table_name(format!("{prefix}store")).send().await;
    assert!(store.is_ok(), "no table named {prefix}store: {store:?}");

    let queue = SqsQueue::new(aws_sdk_sqs::Client::new(&sdk), prefix.clone(), service_queues(5));
    queue.create_queues().await.expect("create the queues on moto");
    let urls = aws_sdk_sqs::Client::new(&sdk)
        .list_queues()
        .queue_name_prefix(&prefix)
        .send()
        .await
        .expect("list the queues")
        .queue_urls
        .unwrap_or_default();
    assert!(!urls.is_empty(), "no queue named {prefix}*");
}

#[test]
fn a_missing_key_or_region_is_named_and_aws_default_region_stands_for_aws_region() {
    let config = |env: &HashMap<String, String>| im_functions::lambda::sdk_config(|name| env.get(name).cloned());
    let whole = lambda_env("lc-none-");
    for missing in ["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"] {
        let mut env = whole.clone();
        env.insert(missing.into(), String::new());
        let err = config(&env).expect_err("a function without credentials");
        assert!(err.contains(missing), "{err}");
    }
    let mut env = whole.clone();
    let region = env.remove("AWS_REGION").expect("aws_env sets a region");
    assert!(config(&env).expect_err("no region").contains("AWS_REGION"));
    env.insert("AWS_DEFAULT_REGION".into(), region);
    let sdk = config(&env).expect("a region from AWS_DEFAULT_REGION");
    assert_eq!(sdk.region().map(|r| r.as_ref()), Some("us-east-1"));
    // The session token is optional (long-lived keys, e.g. on LocalStack), the endpoint too.
    env.remove("AWS_SESSION_TOKEN");
    env.remove("AWS_ENDPOINT_URL");
    assert_eq!(config(&env).expect("no token, no endpoint").endpoint_url(), None);
}
