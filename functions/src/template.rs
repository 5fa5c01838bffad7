//! The SAM template (`template.yaml`), generated from the code so that it cannot drift from it:
//! the tables from `schema::ALL_TABLES`, one function per entry of [`crate::function::all`]
//! (one per route of the route table with its HTTP API route, the workers with their event
//! sources, the WebSocket API's routes), each function's IAM policy from its declared
//! [`Access`], and the queues from the queue names. Every function runs one of the two Lambda
//! binaries ([`crate::function::Binary`]), with `IM_FUNCTION` naming it. `cargo run -- template > template.yaml` writes
//! it (and a test, which fails when the checked-in copy differs from what the code generates,
//! writes it anew); CI lints it with cfn-lint.

use crate::access::{Access, SearchUse};
use crate::function::{self, Function, Role};
use crate::lambda::FUNCTION_VAR;
use im_shared::queue::names::{FANOUT, FANOUT_DLQ, INDEX_DLQ};
use im_shared::schema::{ALL_TABLES, CONNECTIONS, KeyAttr, KeyType, TableDef};
use serde_norway::{Mapping, Value};

/// Seconds an API function may run.
pub const HTTP_TIMEOUT_SECS: u64 = 10;
/// Seconds a worker may run (a fan-out job of up to 500 members, an index batch).
pub const WORKER_TIMEOUT_SECS: u64 = 60;
/// SQS hides a received job for six times the worker's timeout, as AWS advises for Lambda event
/// sources, so a job is never handed out again while a slow run still works on it.
pub const FANOUT_VISIBILITY_SECS: u64 = 6 * WORKER_TIMEOUT_SECS;
const _: () = assert!(FANOUT_VISIBILITY_SECS >= 6 * WORKER_TIMEOUT_SECS);
/// Receives before a fan-out job is dead-lettered.
pub const FANOUT_MAX_RECEIVES: u64 = 5;
/// The WebSocket API's one stage.
pub const WS_STAGE: &str = "live";
/// Dead letters are kept for the longest time SQS allows, 14 days.
const DLQ_RETENTION_SECS: u64 = 14 * 24 * 3600;

// ---- building YAML values, in order ------------------------------------------------------------

fn map<const N: usize>(pairs: [(&str, Value); N]) -> Value {
    let mut m = Mapping::new();
    for (k, v) in pairs {
        m.insert(Value::from(k), v);
    }
    Value::Mapping(m)
}

fn s(v: &str) -> Value {
    Value::from(v)
}

fn n(v: u64) -> Value {
    Value::from(v)
}

fn list(items: impl IntoIterator<Item = Value>) -> Value {
    Value::Sequence(items.into_iter().collect())
}

fn reference(name: &str) -> Value {
    map([("Ref", s(name))])
}

fn sub(text: &str) -> Value {
    map([("Fn::Sub", s(text))])
}

fn get_att(resource: &str, attribute: &str) -> Value {
    map([("Fn::GetAtt", list([s(resource), s(attribute)]))])
}

fn if_(condition: &str, then: Value, otherwise: Value) -> Value {
    map([("Fn::If", list([s(condition), then, otherwise]))])
}

/// `send-message` → `SendMessage`.
fn pascal(name: &str) -> String {
    name.split(['-', '_'])
        .map(|w| {
            let mut c = w.chars();
            c.next().map(|f| f.to_ascii_uppercase().to_string() + c.as_str()).unwrap_or_default()
        })
        .collect()
}

/// The logical id of a table's resource: `users` → `UsersTable`.
pub fn table_id(t: &TableDef) -> String {
    format!("{}Table", pascal(t.name))
}

/// The logical id of a function's resource: `send-message` → `SendMessageFunction`.
pub fn function_id(name: &str) -> String {
    format!("{}Function", pascal(name))
}

/// The logical id of a queue's resource: `fanout-dlq` → `FanoutDlqQueue`.
pub fn queue_id(name: &str) -> String {
    format!("{}Queue", pascal(name))
}

// ---- the parts -----------------------------------------------------------------------------------

fn parameters() -> Value {
    map([
        (
            "Architecture",
            map([
                ("Type", s("String")),
                ("Default", s("arm64")),
                ("AllowedValues", list([s("arm64"), s("x86_64")])),
                ("Description", s("CPU architecture of every function (arm64: Graviton, cheaper per ms)")),
            ]),
        ),
        (
            "JwtIssuer",
            map([
                ("Type", s("String")),
                ("Description", s("Issuer URL of the identity provider whose JWTs the HTTP API accepts (iss)")),
            ]),
        ),
        (
            "JwtAudience",
            map([
                ("Type", s("CommaDelimitedList")),
                ("Description", s("Accepted audiences (aud), comma-separated: your app's client ids")),
            ]),
        ),
        (
            "OpenSearchEndpoint",
            map([
                ("Type", s("String")),
                ("Default", s("")),
                ("Description", s("https URL of an existing OpenSearch domain; empty creates a small one")),
            ]),
        ),
        (
            "OpenSearchDomainName",
            map([
                ("Type", s("String")),
                ("Default", s("none")),
                ("Description", s("Name of that existing domain, in this account and region (for IAM policies)")),
            ]),
        ),
        (
            "AlarmTopicArn",
            map([
                ("Type", s("String")),
                ("Default", s("")),
                ("Description", s("SNS topic told when a dead-letter queue holds messages; empty for none")),
            ]),
        ),
        (
            "LogLevel",
            map([
                ("Type", s("String")),
                ("Default", s("info")),
                ("Description", s("IM_LOG filter of every function (error, warn, info, debug)")),
            ]),
        ),
    ])
}

fn conditions() -> Value {
    map([
        ("CreateSearchDomain", map([("Fn::Equals", list([reference("OpenSearchEndpoint"), s("")]))])),
        ("HasAlarmTopic", map([("Fn::Not", list([map([("Fn::Equals", list([reference("AlarmTopicArn"), s("")]))])]))])),
    ])
}

fn globals() -> Value {
    let search_url =
        if_("CreateSearchDomain", sub("https://${SearchDomain.DomainEndpoint}"), reference("OpenSearchEndpoint"));
    map([(
        "Function",
        map([
            ("Runtime", s("provided.al2023")),
            ("Handler", s("bootstrap")),
            ("Architectures", list([reference("Architecture")])),
            ("MemorySize", n(256)),
            ("Timeout", n(HTTP_TIMEOUT_SECS)),
            ("CodeUri", s(".")),
            (
                "Environment",
                map([(
                    "Variables",
                    map([
                        ("IM_TABLE_PREFIX", sub("${AWS::StackName}-")),
                        ("IM_QUEUE_PREFIX", sub("${AWS::StackName}-")),
                        ("IM_OPENSEARCH_URL", search_url),
                        ("IM_OPENSEARCH_SIGV4_REGION", reference("AWS::Region")),
                        // The Management API of the WebSocket API: where notices are posted.
                        (
                            "IM_WS_ENDPOINT",
                            sub(&format!(
                                "https://${{WebSocketApi}}.execute-api.${{AWS::Region}}.${{AWS::URLSuffix}}/{WS_STAGE}"
                            )),
                        ),
                        ("IM_LOG", reference("LogLevel")),
                    ]),
                )]),
            ),
        ]),
    )])
}

fn key_schema(pk: KeyAttr, sk: Option<KeyAttr>) -> Value {
    let entry = |a: KeyAttr, role: &str| map([("AttributeName", s(a.name)), ("KeyType", s(role))]);
    list(std::iter::once(entry(pk, "HASH")).chain(sk.map(|a| entry(a, "RANGE"))))
}

fn table(t: &TableDef) -> Value {
    // Every key attribute of the table and its indexes, once.
    let mut attrs: Vec<KeyAttr> = Vec::new();
    let keys = [Some(t.pk), t.sk].into_iter().chain(t.indexes.iter().flat_map(|i| [Some(i.pk), i.sk])).flatten();
    for a in keys {
        if !attrs.iter().any(|x| x.name == a.name) {
            attrs.push(a);
        }
    }
    let attr_defs = list(attrs.iter().map(|a| {
        let ty = match a.ty {
            KeyType::S => "S",
            KeyType::N => "N",
        };
        map([("AttributeName", s(a.name)), ("AttributeType", s(ty))])
    }));
    let mut props = Mapping::new();
    props.insert(s("TableName"), sub(&format!("${{AWS::StackName}}-{}", t.name)));
    props.insert(s("BillingMode"), s("PAY_PER_REQUEST"));
    props.insert(s("AttributeDefinitions"), attr_defs);
    props.insert(s("KeySchema"), key_schema(t.pk, t.sk));
    if !t.indexes.is_empty() {
        let gsis = t.indexes.iter().map(|i| {
            map([
                ("IndexName", s(i.name)),
                ("KeySchema", key_schema(i.pk, i.sk)),
                ("Projection", map([("ProjectionType", s("ALL"))])),
            ])
        });
        props.insert(s("GlobalSecondaryIndexes"), list(gsis));
    }
    if let Some(attr) = t.ttl {
        props.insert(s("TimeToLiveSpecification"), map([("AttributeName", s(attr)), ("Enabled", Value::from(true))]));
    }
    if t.stream {
        props.insert(s("StreamSpecification"), map([("StreamViewType", s("NEW_AND_OLD_IMAGES"))]));
    }
    props.insert(s("PointInTimeRecoverySpecification"), map([("PointInTimeRecoveryEnabled", Value::from(true))]));
    map([
        ("Type", s("AWS::DynamoDB::Table")),
        // Chat history outlives a deleted stack unless someone deletes it on purpose.
        ("DeletionPolicy", s("Retain")),
        ("UpdateReplacePolicy", s("Retain")),
        ("Metadata", map([("Purpose", s(t.purpose))])),
        ("Properties", Value::Mapping(props)),
    ])
}

/// The IAM statements of a function, from its declared access.
fn policy(f: &Function) -> Value {
    let access: &Access = &f.access;
    let mut statements = Vec::new();
    let arns = |tables: &[&TableDef], with_indexes: bool| {
        let mut out = Vec::new();
        for t in tables {
            let id = table_id(t);
            out.push(get_att(&id, "Arn"));
            if with_indexes && !t.indexes.is_empty() {
                out.push(sub(&format!("${{{id}.Arn}}/index/*")));
            }
        }
        list(out)
    };
    let statement = |actions: &[&str], resources: Value| {
        map([("Effect", s("Allow")), ("Action", list(actions.iter().map(|a| s(a)))), ("Resource", resources)])
    };
    if !access.reads.is_empty() {
        let actions = ["dynamodb:GetItem", "dynamodb:BatchGetItem", "dynamodb:Query", "dynamodb:ConditionCheckItem"];
        statements.push(statement(&actions, arns(access.reads, true)));
    }
    if !access.writes.is_empty() {
        let actions = [
            "dynamodb:PutItem",
            "dynamodb:UpdateItem",
            "dynamodb:DeleteItem",
            "dynamodb:BatchWriteItem",
            "dynamodb:ConditionCheckItem",
        ];
        statements.push(statement(&actions, arns(access.writes, false)));
    }
    let mut sends: Vec<&str> = access.sends.to_vec();
    if matches!(f.role, Role::Indexer) {
        // The streams' on-failure destination.
        sends.push(INDEX_DLQ);
    }
    if !sends.is_empty() {
        let queues = list(sends.iter().map(|q| get_att(&queue_id(q), "Arn")));
        statements.push(statement(&["sqs:SendMessage", "sqs:GetQueueUrl"], queues));
    }
    let domain = if_(
        "CreateSearchDomain",
        sub("${SearchDomain.Arn}/*"),
        sub("arn:${AWS::Partition}:es:${AWS::Region}:${AWS::AccountId}:domain/${OpenSearchDomainName}/*"),
    );
    match access.search {
        SearchUse::None => {}
        SearchUse::Query => statements.push(statement(&["es:ESHttpGet", "es:ESHttpPost"], list([domain]))),
        SearchUse::Index => statements
            .push(statement(&["es:ESHttpGet", "es:ESHttpHead", "es:ESHttpPost", "es:ESHttpPut"], list([domain]))),
    }
    if access.notifies() {
        // Its recipients' connections: read them, forget a gone one, post to the rest.
        let id = table_id(&CONNECTIONS);
        statements.push(statement(&["dynamodb:Query"], list([get_att(&id, "Arn")])));
        statements.push(statement(&["dynamodb:DeleteItem"], list([get_att(&id, "Arn")])));
        let connections = sub(&format!(
            "arn:${{AWS::Partition}}:execute-api:${{AWS::Region}}:${{AWS::AccountId}}:${{WebSocketApi}}/{WS_STAGE}/POST/@connections/*"
        ));
        statements.push(statement(&["execute-api:ManageConnections"], list([connections])));
    }
    if statements.is_empty() {
        // A function that touches nothing (the health check) gets no policy beyond logging.
        return list([]);
    }
    list([map([("Version", s("2012-10-17")), ("Statement", list(statements))])])
}

/// A function's resource: its binary, told which function it is by `IM_FUNCTION`, with the
/// variables only it needs (`env`), its policy and its event sources.
fn function(f: &Function, description: &str, timeout: Option<u64>, events: Value, env: Vec<(&str, Value)>) -> Value {
    let mut props = Mapping::new();
    props.insert(s("Description"), s(description));
    if let Some(t) = timeout {
        props.insert(s("Timeout"), n(t));
    }
    let mut variables = Mapping::new();
    variables.insert(s(FUNCTION_VAR), s(f.name));
    for (k, v) in env {
        variables.insert(s(k), v);
    }
    props.insert(s("Environment"), map([("Variables", Value::Mapping(variables))]));
    props.insert(s("Policies"), policy(f));
    if !matches!(&events, Value::Mapping(m) if m.is_empty()) {
        props.insert(s("Events"), events);
    }
    map([
        ("Type", s("AWS::Serverless::Function")),
        (
            "Metadata",
            map([
                ("BuildMethod", s("rust-cargolambda")),
                ("BuildProperties", map([("Binary", s(f.role.binary().name()))])),
            ]),
        ),
        ("Properties", Value::Mapping(props)),
    ])
}

fn http_api() -> Value {
    map([
        ("Type", s("AWS::Serverless::HttpApi")),
        (
            "Properties",
            map([(
                "Auth",
                map([
                    ("DefaultAuthorizer", s("JwtAuthorizer")),
                    (
                        "Authorizers",
                        map([(
                            "JwtAuthorizer",
                            map([
                                ("IdentitySource", s("$request.header.Authorization")),
                                (
                                    "JwtConfiguration",
                                    map([("issuer", reference("JwtIssuer")), ("audience", reference("JwtAudience"))]),
                                ),
                            ]),
                        )]),
                    ),
                ]),
            )]),
        ),
    ])
}

/// The WebSocket API: clients connect with `?token=<JWT>` (checked by `ws-connect`); every
/// frame goes to `$default`. Its routes and stage are separate resources.
fn websocket_api() -> Value {
    map([
        ("Type", s("AWS::ApiGatewayV2::Api")),
        (
            "Properties",
            map([
                ("Name", sub("${AWS::StackName}-ws")),
                ("ProtocolType", s("WEBSOCKET")),
                ("RouteSelectionExpression", s("$request.body.type")),
                ("Description", s("Live notices: a connected device hears when its user's inbox has news")),
            ]),
        ),
    ])
}

fn websocket_stage() -> Value {
    map([
        ("Type", s("AWS::ApiGatewayV2::Stage")),
        (
            "Properties",
            map([("ApiId", reference("WebSocketApi")), ("StageName", s(WS_STAGE)), ("AutoDeploy", Value::from(true))]),
        ),
    ])
}

/// A WebSocket route's resources, by logical id suffix: the Lambda integration, the route, the
/// permission for API Gateway to invoke the function, and for `$default` a route response
/// (so that the function's answer, the pong, goes back to the client).
fn websocket_route(function: &str, route: &str) -> Vec<(&'static str, Value)> {
    let id = pascal(function);
    let fn_id = function_id(function);
    let mut out = vec![
        (
            "Integration",
            map([
                ("Type", s("AWS::ApiGatewayV2::Integration")),
                (
                    "Properties",
                    map([
                        ("ApiId", reference("WebSocketApi")),
                        ("IntegrationType", s("AWS_PROXY")),
                        (
                            "IntegrationUri",
                            sub(&format!(
                                "arn:${{AWS::Partition}}:apigateway:${{AWS::Region}}:lambda:path/2015-03-31/functions/${{{fn_id}.Arn}}/invocations"
                            )),
                        ),
                    ]),
                ),
            ]),
        ),
        (
            "Permission",
            map([
                ("Type", s("AWS::Lambda::Permission")),
                (
                    "Properties",
                    map([
                        ("Action", s("lambda:InvokeFunction")),
                        ("FunctionName", reference(&fn_id)),
                        ("Principal", s("apigateway.amazonaws.com")),
                        (
                            "SourceArn",
                            sub("arn:${AWS::Partition}:execute-api:${AWS::Region}:${AWS::AccountId}:${WebSocketApi}/*"),
                        ),
                    ]),
                ),
            ]),
        ),
    ];
    let mut props = Mapping::new();
    props.insert(s("ApiId"), reference("WebSocketApi"));
    props.insert(s("RouteKey"), s(route));
    props.insert(s("AuthorizationType"), s("NONE"));
    props.insert(s("Target"), sub(&format!("integrations/${{{id}Integration}}")));
    if route == "$default" {
        props.insert(s("RouteResponseSelectionExpression"), s("$default"));
        out.push((
            "RouteResponse",
            map([
                ("Type", s("AWS::ApiGatewayV2::RouteResponse")),
                (
                    "Properties",
                    map([
                        ("ApiId", reference("WebSocketApi")),
                        ("RouteId", reference(&format!("{id}Route"))),
                        ("RouteResponseKey", s("$default")),
                    ]),
                ),
            ]),
        ));
    }
    out.push(("Route", map([("Type", s("AWS::ApiGatewayV2::Route")), ("Properties", Value::Mapping(props))])));
    out
}

fn queue(name: &str, extra: Value) -> Value {
    let mut props = Mapping::new();
    props.insert(s("QueueName"), sub(&format!("${{AWS::StackName}}-{name}")));
    props.insert(s("SqsManagedSseEnabled"), Value::from(true));
    if let Value::Mapping(m) = extra {
        props.extend(m);
    }
    map([("Type", s("AWS::SQS::Queue")), ("Properties", Value::Mapping(props))])
}

/// An alarm on a dead-letter queue holding anything: `what` failed there, and `cure` says what
/// to do once its cause is fixed.
fn dlq_alarm(dlq: &str, what: &str, cure: &str) -> Value {
    map([
        ("Type", s("AWS::CloudWatch::Alarm")),
        (
            "Properties",
            map([
                (
                    "AlarmDescription",
                    s(&format!("{what} failed repeatedly and wait in {dlq}: fix the cause, then {cure}")),
                ),
                ("Namespace", s("AWS/SQS")),
                ("MetricName", s("ApproximateNumberOfMessagesVisible")),
                (
                    "Dimensions",
                    list([map([("Name", s("QueueName")), ("Value", get_att(&queue_id(dlq), "QueueName"))])]),
                ),
                ("Statistic", s("Maximum")),
                ("Period", n(60)),
                ("EvaluationPeriods", n(1)),
                ("Threshold", n(0)),
                ("ComparisonOperator", s("GreaterThanThreshold")),
                ("TreatMissingData", s("notBreaching")),
                ("AlarmActions", if_("HasAlarmTopic", list([reference("AlarmTopicArn")]), reference("AWS::NoValue"))),
            ]),
        ),
    ])
}

fn search_domain() -> Value {
    map([
        ("Type", s("AWS::OpenSearchService::Domain")),
        ("Condition", s("CreateSearchDomain")),
        ("DeletionPolicy", s("Retain")),
        ("UpdateReplacePolicy", s("Retain")),
        (
            "Properties",
            map([
                ("EngineVersion", s("OpenSearch_2.19")),
                ("ClusterConfig", map([("InstanceType", s("t3.small.search")), ("InstanceCount", n(1))])),
                (
                    "EBSOptions",
                    map([("EBSEnabled", Value::from(true)), ("VolumeType", s("gp3")), ("VolumeSize", n(10))]),
                ),
                ("EncryptionAtRestOptions", map([("Enabled", Value::from(true))])),
                ("NodeToNodeEncryptionOptions", map([("Enabled", Value::from(true))])),
                (
                    "DomainEndpointOptions",
                    map([("EnforceHTTPS", Value::from(true)), ("TLSSecurityPolicy", s("Policy-Min-TLS-1-2-2019-07"))]),
                ),
                // Only this account's principals, and of those only roles whose IAM policy
                // allows es:ESHttp* on the domain: the functions' roles.
                (
                    "AccessPolicies",
                    map([
                        ("Version", s("2012-10-17")),
                        (
                            "Statement",
                            list([map([
                                ("Effect", s("Allow")),
                                ("Principal", map([("AWS", sub("arn:${AWS::Partition}:iam::${AWS::AccountId}:root"))])),
                                ("Action", s("es:ESHttp*")),
                                ("Resource", sub("arn:${AWS::Partition}:es:${AWS::Region}:${AWS::AccountId}:domain/*")),
                            ])]),
                        ),
                    ]),
                ),
            ]),
        ),
    ])
}

/// The indexer's event source on a table's stream: batches retried from the record that
/// failed, bisected when they keep failing, and dead-lettered at last.
fn stream_source(t: &TableDef) -> Value {
    map([
        ("Type", s("DynamoDB")),
        (
            "Properties",
            map([
                ("Stream", get_att(&table_id(t), "StreamArn")),
                ("StartingPosition", s("TRIM_HORIZON")),
                ("BatchSize", n(100)),
                ("MaximumBatchingWindowInSeconds", n(1)),
                ("MaximumRetryAttempts", n(10)),
                ("BisectBatchOnFunctionError", Value::from(true)),
                ("FunctionResponseTypes", list([s("ReportBatchItemFailures")])),
                (
                    "DestinationConfig",
                    map([(
                        "OnFailure",
                        map([("Type", s("SQS")), ("Destination", get_att(&queue_id(INDEX_DLQ), "Arn"))]),
                    )]),
                ),
            ]),
        ),
    ])
}

fn resources() -> Mapping {
    let mut r = Mapping::new();
    let mut add = |id: String, v: Value| {
        r.insert(Value::from(id), v);
    };
    add("HttpApi".into(), http_api());
    add("WebSocketApi".into(), websocket_api());
    add("WebSocketStage".into(), websocket_stage());
    for f in function::all() {
        match f.role {
            Role::Api(route) => {
                let mut api = Mapping::new();
                api.insert(s("ApiId"), reference("HttpApi"));
                api.insert(s("Method"), s(route.method.as_str()));
                api.insert(s("Path"), s(route.path));
                if !route.auth() {
                    api.insert(s("Auth"), map([("Authorizer", s("NONE"))]));
                }
                let events = map([("Api", map([("Type", s("HttpApi")), ("Properties", Value::Mapping(api))]))]);
                let description = format!("{} {}", route.method, route.path);
                add(function_id(f.name), function(&f, &description, None, events, vec![]));
            }
            Role::FanoutWorker => {
                let events = map([(
                    "FanoutJobs",
                    map([
                        ("Type", s("SQS")),
                        (
                            "Properties",
                            map([
                                ("Queue", get_att(&queue_id(FANOUT), "Arn")),
                                ("BatchSize", n(10)),
                                ("FunctionResponseTypes", list([s("ReportBatchItemFailures")])),
                            ]),
                        ),
                    ]),
                )]);
                let description = "Group fan-out: delivers a message into every member's inbox";
                add(function_id(f.name), function(&f, description, Some(WORKER_TIMEOUT_SECS), events, vec![]));
            }
            Role::Indexer => {
                let mut events = Mapping::new();
                for t in ALL_TABLES.iter().filter(|t| t.stream) {
                    events.insert(Value::from(format!("{}Stream", pascal(t.name))), stream_source(t));
                }
                let description = "Search indexer, fed by the store and meta tables' streams";
                let events = Value::Mapping(events);
                add(function_id(f.name), function(&f, description, Some(WORKER_TIMEOUT_SECS), events, vec![]));
            }
            Role::OutboxSweeper => {
                let events = map([(
                    "EveryMinute",
                    map([("Type", s("Schedule")), ("Properties", map([("Schedule", s("rate(1 minute)"))]))]),
                )]);
                let description = "Re-enqueues fan-outs whose job was lost after the send committed";
                add(function_id(f.name), function(&f, description, Some(WORKER_TIMEOUT_SECS), events, vec![]));
            }
            Role::Ws(route) => {
                let (description, env) = match route {
                    "$connect" => (
                        "WebSocket $connect: checks the token, records the connection",
                        vec![
                            ("IM_JWT_ISSUER", reference("JwtIssuer")),
                            ("IM_JWT_AUDIENCE", map([("Fn::Join", list([s(","), reference("JwtAudience")]))])),
                        ],
                    ),
                    "$disconnect" => ("WebSocket $disconnect: forgets the connection", vec![]),
                    _ => ("WebSocket messages: answers pings", vec![]),
                };
                add(function_id(f.name), function(&f, description, None, map([]), env));
                for (suffix, resource) in websocket_route(f.name, route) {
                    add(format!("{}{suffix}", pascal(f.name)), resource);
                }
            }
        }
    }
    for t in ALL_TABLES {
        add(table_id(t), table(t));
    }
    add(queue_id(FANOUT_DLQ), queue(FANOUT_DLQ, map([("MessageRetentionPeriod", n(DLQ_RETENTION_SECS))])));
    add(
        queue_id(FANOUT),
        queue(
            FANOUT,
            map([
                ("VisibilityTimeout", n(FANOUT_VISIBILITY_SECS)),
                (
                    "RedrivePolicy",
                    map([
                        ("deadLetterTargetArn", get_att(&queue_id(FANOUT_DLQ), "Arn")),
                        ("maxReceiveCount", n(FANOUT_MAX_RECEIVES)),
                    ]),
                ),
            ]),
        ),
    );
    add(queue_id(INDEX_DLQ), queue(INDEX_DLQ, map([("MessageRetentionPeriod", n(DLQ_RETENTION_SECS))])));
    add("FanoutDlqAlarm".into(), dlq_alarm(FANOUT_DLQ, "Group fan-out jobs", "redrive"));
    let reindex = "reindex (im-server reindex with IM_OPENSEARCH_URL)";
    add("IndexDlqAlarm".into(), dlq_alarm(INDEX_DLQ, "Search index updates (stream batches)", reindex));
    add("SearchDomain".into(), search_domain());
    r
}

fn outputs() -> Value {
    map([
        (
            "ApiUrl",
            map([
                ("Description", s("Base URL of the HTTP API")),
                ("Value", sub("https://${HttpApi}.execute-api.${AWS::Region}.${AWS::URLSuffix}")),
            ]),
        ),
        (
            "WebSocketUrl",
            map([
                ("Description", s("Where devices connect for live notices: <url>?token=<JWT>")),
                (
                    "Value",
                    sub(&format!(
                        "wss://${{WebSocketApi}}.execute-api.${{AWS::Region}}.${{AWS::URLSuffix}}/{WS_STAGE}"
                    )),
                ),
            ]),
        ),
        (
            "TablePrefix",
            map([("Description", s("IM_TABLE_PREFIX and IM_QUEUE_PREFIX")), ("Value", sub("${AWS::StackName}-"))]),
        ),
        ("FanoutQueueUrl", map([("Value", reference(&queue_id(FANOUT)))])),
        ("FanoutDeadLetterQueueUrl", map([("Value", reference(&queue_id(FANOUT_DLQ)))])),
        ("IndexDeadLetterQueueUrl", map([("Value", reference(&queue_id(INDEX_DLQ)))])),
        (
            "SearchEndpoint",
            map([(
                "Value",
                if_(
                    "CreateSearchDomain",
                    sub("https://${SearchDomain.DomainEndpoint}"),
                    reference("OpenSearchEndpoint"),
                ),
            )]),
        ),
    ])
}

/// The template as a YAML value.
pub fn document() -> Value {
    map([
        ("AWSTemplateFormatVersion", s("2010-09-09")),
        ("Transform", s("AWS::Serverless-2016-10-31")),
        (
            "Description",
            s("Instant-messaging backend: one function per API operation, DynamoDB, SQS fan-out, OpenSearch"),
        ),
        ("Parameters", parameters()),
        ("Conditions", conditions()),
        ("Globals", globals()),
        ("Resources", Value::Mapping(resources())),
        ("Outputs", outputs()),
    ])
}

/// `template.yaml`'s text.
pub fn render() -> String {
    let yaml = serde_norway::to_string(&document()).expect("a YAML value serializes");
    format!(
        "# Generated by `cargo run -- template > template.yaml` from the route table, the table schema and\n\
         # functions/src/access.rs: edit those, not this file (a test fails when they differ).\n{yaml}"
    )
}

#[cfg(test)]
#[path = "template_tests.rs"]
mod tests;
