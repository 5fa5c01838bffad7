//! The DynamoDB adapter of the Tables port (aws-sdk-dynamodb).
//!
//! - Conditions become condition expressions, `Update::add` becomes `ADD` (atomic counters),
//!   transactions become TransactWriteItems: a cancellation whose reason is
//!   `ConditionalCheckFailed` is a conflict naming the op; `TransactionConflict` (another
//!   transaction on the same items) is a conflict the caller retries as well.
//! - Reads of base tables are strongly consistent (`ConsistentRead`), which the service's
//!   numbering relies on: it reads a counter and then queries up to it, and the counter and
//!   the item numbered by it commit in one transaction, so a strongly consistent query never
//!   misses an item below a counter value it has read. Index queries (GSIs) are eventually
//!   consistent, as DynamoDB allows nothing else; the service uses them only for listings.
//! - Batch writes go 25 items per call, and batch reads 100, retrying unprocessed items with
//!   backoff (moto accepts 26 where AWS refuses them: the chunking is ours).
//! - Queries fetch one item more than the page, so the cursor (the page's last key, base64 JSON,
//!   base and index key attributes) is absent exactly when the range is exhausted.

use super::*;
use crate::schema::{ALL_TABLES, KeyAttr};
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, ConditionCheck, Delete, GlobalSecondaryIndex, KeySchemaElement,
    KeyType as DynKeyType, KeysAndAttributes, Projection, ProjectionType, Put, ScalarAttributeType,
    StreamSpecification, StreamViewType, TimeToLiveSpecification, TransactWriteItem, Update as DynUpdate, WriteRequest,
};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use std::collections::HashMap;
use std::time::Duration;

type Attrs = HashMap<String, AttributeValue>;

#[derive(Clone)]
pub struct DynamoTables {
    client: Client,
    prefix: String,
}

fn internal(e: impl std::fmt::Display) -> StoreError {
    StoreError::Internal(format!("dynamodb: {e}"))
}

/// Maps an SDK error: a failed condition is a conflict, throttling and transport trouble are
/// retryable, the rest is a bug to log.
fn map_err<E: ProvideErrorMetadata + std::fmt::Debug, R: std::fmt::Debug>(e: SdkError<E, R>) -> StoreError {
    match &e {
        SdkError::ServiceError(s) => {
            let code = s.err().code().unwrap_or_default();
            match code {
                "ConditionalCheckFailedException" => StoreError::Conflict { index: Some(0) },
                "ProvisionedThroughputExceededException"
                | "ThrottlingException"
                | "RequestLimitExceeded"
                | "InternalServerError" => {
                    StoreError::Unavailable(format!("dynamodb {code}: {}", s.err().message().unwrap_or_default()))
                }
                _ => StoreError::Internal(format!("dynamodb {code}: {}", s.err().message().unwrap_or_default())),
            }
        }
        SdkError::DispatchFailure(_) | SdkError::TimeoutError(_) | SdkError::ResponseError(_) => {
            StoreError::Unavailable(format!("dynamodb unreachable: {e:?}"))
        }
        _ => StoreError::Internal(format!("dynamodb: {e:?}")),
    }
}

fn key_av(v: &KeyVal) -> AttributeValue {
    match v {
        KeyVal::S(s) => AttributeValue::S(s.clone()),
        KeyVal::N(n) => AttributeValue::N(n.to_string()),
    }
}

fn to_attrs(item: &Item) -> Result<Attrs, StoreError> {
    serde_dynamo::to_item(item).map_err(internal)
}

fn from_attrs(attrs: Attrs) -> Result<Item, StoreError> {
    serde_dynamo::from_item(attrs).map_err(internal)
}

fn json_to_av(v: &serde_json::Value) -> Result<AttributeValue, StoreError> {
    serde_dynamo::to_attribute_value(v).map_err(internal)
}

fn key_attrs(table: &TableDef, key: &Key) -> Attrs {
    let mut m = HashMap::new();
    m.insert(table.pk.name.to_string(), key_av(&key.pk));
    if let (Some(attr), Some(sk)) = (table.sk, &key.sk) {
        m.insert(attr.name.to_string(), key_av(sk));
    }
    m
}

/// Names and values of one expression.
#[derive(Default)]
struct Expr {
    names: HashMap<String, String>,
    values: Attrs,
}

impl Expr {
    fn name(&mut self, attr: &str) -> String {
        let n = format!("#n{}", self.names.len());
        self.names.insert(n.clone(), attr.to_string());
        n
    }
    fn value(&mut self, v: AttributeValue) -> String {
        let n = format!(":v{}", self.values.len());
        self.values.insert(n.clone(), v);
        n
    }
    fn names(&self) -> Option<HashMap<String, String>> {
        (!self.names.is_empty()).then(|| self.names.clone())
    }
    fn values(&self) -> Option<Attrs> {
        (!self.values.is_empty()).then(|| self.values.clone())
    }
    fn condition(&mut self, table: &TableDef, cond: &Cond) -> Result<Option<String>, StoreError> {
        Ok(match cond {
            Cond::Always => None,
            Cond::Exists => Some(format!("attribute_exists({})", self.name(table.pk.name))),
            Cond::NotExists => Some(format!("attribute_not_exists({})", self.name(table.pk.name))),
            Cond::Equals(a, v) => {
                let (n, v) = (self.name(a), self.value(json_to_av(v)?));
                Some(format!("{n} = {v}"))
            }
            Cond::LessThan(a, x) => {
                let (n, v) = (self.name(a), self.value(AttributeValue::N(x.to_string())));
                Some(format!("{n} < {v}"))
            }
            Cond::CountBelow(a, x) => {
                let pk = self.name(table.pk.name);
                let (n, v) = (self.name(a), self.value(AttributeValue::N(x.to_string())));
                // A missing counter is 0, which is below the limit only if the limit is positive.
                Some(if *x > 0 {
                    format!("attribute_exists({pk}) AND (attribute_not_exists({n}) OR {n} < {v})")
                } else {
                    format!("attribute_exists({pk}) AND {n} < {v}")
                })
            }
        })
    }
    fn update(&mut self, u: &Update) -> Result<String, StoreError> {
        let mut parts = Vec::new();
        let sets = u
            .set
            .iter()
            .map(|(k, v)| Ok(format!("{} = {}", self.name(k), self.value(json_to_av(v)?))))
            .collect::<Result<Vec<_>, StoreError>>()?;
        if !sets.is_empty() {
            parts.push(format!("SET {}", sets.join(", ")));
        }
        let removes: Vec<String> = u.remove.iter().map(|k| self.name(k)).collect();
        if !removes.is_empty() {
            parts.push(format!("REMOVE {}", removes.join(", ")));
        }
        let adds: Vec<String> = u
            .add
            .iter()
            .map(|(k, d)| format!("{} {}", self.name(k), self.value(AttributeValue::N(d.to_string()))))
            .collect();
        if !adds.is_empty() {
            parts.push(format!("ADD {}", adds.join(", ")));
        }
        if parts.is_empty() {
            return Err(StoreError::Internal("an update must change something".into()));
        }
        Ok(parts.join(" "))
    }
}

/// The key attributes that identify an item's position in a query (base and index keys), as
/// JSON: the cursor's content.
fn position(table: &TableDef, index: Option<&IndexDef>, item: &Item) -> serde_json::Map<String, serde_json::Value> {
    let mut attrs = vec![Some(table.pk), table.sk];
    if let Some(i) = index {
        attrs.push(Some(i.pk));
        attrs.push(i.sk);
    }
    attrs.into_iter().flatten().filter_map(|a| item.get(a.name).map(|v| (a.name.to_string(), v.clone()))).collect()
}

fn decode_cursor(table: &TableDef, index: Option<&IndexDef>, pk: &KeyVal, cursor: &str) -> Result<Attrs, StoreError> {
    let bytes = B64.decode(cursor).map_err(|_| StoreError::BadCursor)?;
    let map: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(&bytes).map_err(|_| StoreError::BadCursor)?;
    let pk_attr = index.map_or(table.pk, |i| i.pk);
    // A cursor only ever continues the partition it came from.
    if map.get(pk_attr.name).and_then(|v| KeyVal::from_json(v, pk_attr.ty)).as_ref() != Some(pk) {
        return Err(StoreError::BadCursor);
    }
    let mut attrs = vec![Some(table.pk), table.sk];
    if let Some(i) = index {
        attrs.push(Some(i.pk));
        attrs.push(i.sk);
    }
    let mut out = HashMap::new();
    for a in attrs.into_iter().flatten() {
        let v = map.get(a.name).and_then(|v| KeyVal::from_json(v, a.ty)).ok_or(StoreError::BadCursor)?;
        out.insert(a.name.to_string(), key_av(&v));
    }
    Ok(out)
}

fn scalar(ty: KeyType) -> ScalarAttributeType {
    match ty {
        KeyType::S => ScalarAttributeType::S,
        KeyType::N => ScalarAttributeType::N,
    }
}

async fn pause(attempt: u32) {
    tokio::time::sleep(Duration::from_millis(25u64 << attempt.min(6))).await;
}

const RETRIES: u32 = 8;

impl DynamoTables {
    /// Tables are named `<prefix><logical name>`.
    pub fn new(client: Client, prefix: impl Into<String>) -> Self {
        DynamoTables { client, prefix: prefix.into() }
    }

    pub fn table_name(&self, t: &TableDef) -> String {
        format!("{}{}", self.prefix, t.name)
    }

    /// Creates every table of the schema that does not exist yet: keys, indexes (projection
    /// all), on-demand billing, streams and TTL as the schema says.
    pub async fn create_tables(&self) -> Result<(), StoreError> {
        for t in ALL_TABLES {
            let mut attrs: Vec<KeyAttr> = vec![t.pk];
            attrs.extend(t.sk);
            for i in t.indexes {
                attrs.push(i.pk);
                attrs.extend(i.sk);
            }
            let mut defs: Vec<AttributeDefinition> = Vec::new();
            for a in attrs {
                if !defs.iter().any(|d| d.attribute_name() == a.name) {
                    defs.push(
                        AttributeDefinition::builder()
                            .attribute_name(a.name)
                            .attribute_type(scalar(a.ty))
                            .build()
                            .map_err(internal)?,
                    );
                }
            }
            let schema = |pk: KeyAttr, sk: Option<KeyAttr>| -> Result<Vec<KeySchemaElement>, StoreError> {
                let mut v = vec![
                    KeySchemaElement::builder()
                        .attribute_name(pk.name)
                        .key_type(DynKeyType::Hash)
                        .build()
                        .map_err(internal)?,
                ];
                if let Some(sk) = sk {
                    v.push(
                        KeySchemaElement::builder()
                            .attribute_name(sk.name)
                            .key_type(DynKeyType::Range)
                            .build()
                            .map_err(internal)?,
                    );
                }
                Ok(v)
            };
            let mut req = self
                .client
                .create_table()
                .table_name(self.table_name(t))
                .set_attribute_definitions(Some(defs))
                .set_key_schema(Some(schema(t.pk, t.sk)?))
                .billing_mode(BillingMode::PayPerRequest);
            for i in t.indexes {
                req = req.global_secondary_indexes(
                    GlobalSecondaryIndex::builder()
                        .index_name(i.name)
                        .set_key_schema(Some(schema(i.pk, i.sk)?))
                        .projection(Projection::builder().projection_type(ProjectionType::All).build())
                        .build()
                        .map_err(internal)?,
                );
            }
            if t.stream {
                req = req.stream_specification(
                    StreamSpecification::builder()
                        .stream_enabled(true)
                        .stream_view_type(StreamViewType::NewAndOldImages)
                        .build()
                        .map_err(internal)?,
                );
            }
            match req.send().await {
                Ok(_) => {}
                Err(e) if e.as_service_error().and_then(|s| s.code()) == Some("ResourceInUseException") => continue,
                Err(e) => return Err(map_err(e)),
            }
            if let Some(ttl) = t.ttl {
                self.client
                    .update_time_to_live()
                    .table_name(self.table_name(t))
                    .time_to_live_specification(
                        TimeToLiveSpecification::builder()
                            .enabled(true)
                            .attribute_name(ttl)
                            .build()
                            .map_err(internal)?,
                    )
                    .send()
                    .await
                    .map_err(map_err)?;
            }
        }
        Ok(())
    }

    fn tx_item(&self, op: &TxOp) -> Result<TransactWriteItem, StoreError> {
        let mut e = Expr::default();
        Ok(match op {
            TxOp::Put { table, item, cond } => {
                let c = e.condition(table, cond)?;
                let put = Put::builder()
                    .table_name(self.table_name(table))
                    .set_item(Some(to_attrs(item)?))
                    .set_condition_expression(c)
                    .set_expression_attribute_names(e.names())
                    .set_expression_attribute_values(e.values())
                    .build()
                    .map_err(internal)?;
                TransactWriteItem::builder().put(put).build()
            }
            TxOp::Delete { table, key, cond } => {
                let c = e.condition(table, cond)?;
                let del = Delete::builder()
                    .table_name(self.table_name(table))
                    .set_key(Some(key_attrs(table, key)))
                    .set_condition_expression(c)
                    .set_expression_attribute_names(e.names())
                    .set_expression_attribute_values(e.values())
                    .build()
                    .map_err(internal)?;
                TransactWriteItem::builder().delete(del).build()
            }
            TxOp::Update { table, key, update, cond } => {
                let c = e.condition(table, cond)?;
                let u = e.update(update)?;
                let upd = DynUpdate::builder()
                    .table_name(self.table_name(table))
                    .set_key(Some(key_attrs(table, key)))
                    .update_expression(u)
                    .set_condition_expression(c)
                    .set_expression_attribute_names(e.names())
                    .set_expression_attribute_values(e.values())
                    .build()
                    .map_err(internal)?;
                TransactWriteItem::builder().update(upd).build()
            }
            TxOp::Check { table, key, cond } => {
                let c = e.condition(table, cond)?.unwrap_or_else(|| {
                    format!(
                        "attribute_exists({}) OR attribute_not_exists({})",
                        e.name(table.pk.name),
                        e.name(table.pk.name)
                    )
                });
                let check = ConditionCheck::builder()
                    .table_name(self.table_name(table))
                    .set_key(Some(key_attrs(table, key)))
                    .condition_expression(c)
                    .set_expression_attribute_names(e.names())
                    .set_expression_attribute_values(e.values())
                    .build()
                    .map_err(internal)?;
                TransactWriteItem::builder().condition_check(check).build()
            }
        })
    }
}

/// A sort key bound as DynamoDB can say it (inclusive), and whether an exclusive string upper
/// bound must drop its equal item afterwards.
fn inclusive(b: &Bound<KeyVal>, lower: bool) -> (Option<KeyVal>, Option<KeyVal>) {
    match b {
        Bound::Unbounded => (None, None),
        Bound::Included(v) => (Some(v.clone()), None),
        Bound::Excluded(KeyVal::N(n)) => {
            (Some(KeyVal::N(if lower { n.saturating_add(1) } else { n.saturating_sub(1) })), None)
        }
        // The smallest string above s is s followed by U+0000.
        Bound::Excluded(KeyVal::S(s)) if lower => (Some(KeyVal::S(format!("{s}\u{0}"))), None),
        Bound::Excluded(KeyVal::S(s)) => (Some(KeyVal::S(s.clone())), Some(KeyVal::S(s.clone()))),
    }
}

#[async_trait]
impl Tables for DynamoTables {
    async fn get(&self, table: &'static TableDef, key: &Key) -> Result<Option<Stored>, StoreError> {
        let out = self
            .client
            .get_item()
            .table_name(self.table_name(table))
            .set_key(Some(key_attrs(table, key)))
            .consistent_read(true)
            .send()
            .await
            .map_err(map_err)?;
        Ok(out.item.map(from_attrs).transpose()?.map(Stored::Item))
    }

    async fn get_batch(&self, keys: &[(&'static TableDef, Key)]) -> Result<Vec<Option<Stored>>, StoreError> {
        // An item's identity in this batch: its table and its key attributes.
        let ident = |table: &TableDef, attrs: &Attrs| -> String {
            let mut v = vec![table.name.to_string(), format!("{:?}", attrs.get(table.pk.name))];
            if let Some(sk) = table.sk {
                v.push(format!("{:?}", attrs.get(sk.name)));
            }
            v.join("\u{1}")
        };
        let mut found: HashMap<String, Item> = HashMap::new();
        let mut seen = std::collections::HashSet::new();
        let mut unique: Vec<(&'static TableDef, Attrs)> = Vec::new();
        for (table, k) in keys {
            let a = key_attrs(table, k);
            if seen.insert(ident(table, &a)) {
                unique.push((*table, a));
            }
        }
        // At most 100 keys a request, whatever their tables.
        for chunk in unique.chunks(100) {
            let mut tables: HashMap<String, &'static TableDef> = HashMap::new();
            let mut pending: HashMap<String, Vec<Attrs>> = HashMap::new();
            for (t, a) in chunk {
                let name = self.table_name(t);
                pending.entry(name.clone()).or_default().push(a.clone());
                tables.insert(name, *t);
            }
            for attempt in 0.. {
                let mut req = self.client.batch_get_item();
                for (name, keys) in &pending {
                    let keys = KeysAndAttributes::builder()
                        .set_keys(Some(keys.clone()))
                        .consistent_read(true)
                        .build()
                        .map_err(internal)?;
                    req = req.request_items(name, keys);
                }
                let out = req.send().await.map_err(map_err)?;
                for (name, items) in out.responses.unwrap_or_default() {
                    let table = tables.get(&name).ok_or_else(|| internal(format!("an answer from table {name}")))?;
                    for item in items {
                        found.insert(ident(table, &item), from_attrs(item)?);
                    }
                }
                pending = out.unprocessed_keys.unwrap_or_default().into_iter().map(|(n, k)| (n, k.keys)).collect();
                pending.retain(|_, keys| !keys.is_empty());
                if pending.is_empty() {
                    break;
                }
                if attempt >= RETRIES {
                    return Err(StoreError::Unavailable("dynamodb: batch read kept returning unprocessed keys".into()));
                }
                pause(attempt).await;
            }
        }
        Ok(keys.iter().map(|(t, k)| found.get(&ident(t, &key_attrs(t, k))).cloned().map(Stored::Item)).collect())
    }

    async fn put(&self, table: &'static TableDef, item: Item, cond: Cond) -> Result<(), StoreError> {
        let mut e = Expr::default();
        let c = e.condition(table, &cond)?;
        self.client
            .put_item()
            .table_name(self.table_name(table))
            .set_item(Some(to_attrs(&item)?))
            .set_condition_expression(c)
            .set_expression_attribute_names(e.names())
            .set_expression_attribute_values(e.values())
            .send()
            .await
            .map_err(map_err)?;
        Ok(())
    }

    async fn delete(&self, table: &'static TableDef, key: &Key, cond: Cond) -> Result<Option<Item>, StoreError> {
        let mut e = Expr::default();
        let c = e.condition(table, &cond)?;
        let out = self
            .client
            .delete_item()
            .table_name(self.table_name(table))
            .set_key(Some(key_attrs(table, key)))
            .set_condition_expression(c)
            .set_expression_attribute_names(e.names())
            .set_expression_attribute_values(e.values())
            .return_values(aws_sdk_dynamodb::types::ReturnValue::AllOld)
            .send()
            .await
            .map_err(map_err)?;
        out.attributes.filter(|a| !a.is_empty()).map(from_attrs).transpose()
    }

    async fn update(
        &self,
        table: &'static TableDef,
        key: &Key,
        update: Update,
        cond: Cond,
    ) -> Result<Item, StoreError> {
        let mut e = Expr::default();
        let c = e.condition(table, &cond)?;
        let u = e.update(&update)?;
        let out = self
            .client
            .update_item()
            .table_name(self.table_name(table))
            .set_key(Some(key_attrs(table, key)))
            .update_expression(u)
            .set_condition_expression(c)
            .set_expression_attribute_names(e.names())
            .set_expression_attribute_values(e.values())
            .return_values(aws_sdk_dynamodb::types::ReturnValue::AllNew)
            .send()
            .await
            .map_err(map_err)?;
        from_attrs(out.attributes.unwrap_or_default())
    }

    async fn query(&self, q: Query) -> Result<Page<Stored>, StoreError> {
        let index = q.index_def()?;
        let table = q.table;
        let pk_attr = index.map_or(table.pk, |i| i.pk);
        let sk_attr = match index {
            Some(i) => i.sk,
            None => table.sk,
        };
        let (lo, _) = inclusive(&q.lower, true);
        let (hi, drop_equal) = inclusive(&q.upper, false);
        if let (Some(l), Some(h)) = (&lo, &hi)
            && l > h
        {
            return Ok(Page::default());
        }
        let mut e = Expr::default();
        let mut kc = format!("{} = {}", e.name(pk_attr.name), e.value(key_av(&q.pk)));
        if let Some(sk) = sk_attr {
            match (&lo, &hi) {
                (Some(l), Some(h)) => {
                    kc += &format!(" AND {} BETWEEN {} AND {}", e.name(sk.name), e.value(key_av(l)), e.value(key_av(h)))
                }
                (Some(l), None) => kc += &format!(" AND {} >= {}", e.name(sk.name), e.value(key_av(l))),
                (None, Some(h)) => kc += &format!(" AND {} <= {}", e.name(sk.name), e.value(key_av(h))),
                (None, None) => {}
            }
        }
        let limit = q.limit.max(1);
        let mut start = q.cursor.as_deref().map(|c| decode_cursor(table, index, &q.pk, c)).transpose()?;
        let mut items: Vec<Item> = Vec::new();
        loop {
            let out = self
                .client
                .query()
                .table_name(self.table_name(table))
                .set_index_name(index.map(|i| i.name.to_string()))
                .key_condition_expression(&kc)
                .set_expression_attribute_names(e.names())
                .set_expression_attribute_values(e.values())
                .scan_index_forward(q.forward)
                .consistent_read(index.is_none())
                .limit((limit + 1 - items.len()) as i32)
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(map_err)?;
            for attrs in out.items.unwrap_or_default() {
                let item = from_attrs(attrs)?;
                let equal_to_excluded = match (&drop_equal, sk_attr) {
                    (Some(x), Some(sk)) => {
                        item.get(sk.name).and_then(|v| KeyVal::from_json(v, sk.ty)).as_ref() == Some(x)
                    }
                    _ => false,
                };
                if !equal_to_excluded {
                    items.push(item);
                }
            }
            match out.last_evaluated_key {
                Some(k) if items.len() <= limit => start = Some(k),
                _ => break,
            }
        }
        let cursor = if items.len() > limit {
            items.truncate(limit);
            let pos = position(table, index, items.last().expect("a full page"));
            Some(B64.encode(serde_json::to_vec(&pos).map_err(internal)?))
        } else {
            None
        };
        Ok(Page { items: items.into_iter().map(Stored::Item).collect(), cursor })
    }

    async fn batch_write(&self, ops: Vec<WriteOp>) -> Result<(), StoreError> {
        for chunk in ops.chunks(MAX_BATCH_OPS) {
            let mut requests: HashMap<String, Vec<WriteRequest>> = HashMap::new();
            for op in chunk {
                let (table, req) = match op {
                    WriteOp::Put { table, item } => (
                        table,
                        WriteRequest::builder()
                            .put_request(
                                aws_sdk_dynamodb::types::PutRequest::builder()
                                    .set_item(Some(to_attrs(item)?))
                                    .build()
                                    .map_err(internal)?,
                            )
                            .build(),
                    ),
                    WriteOp::Delete { table, key } => (
                        table,
                        WriteRequest::builder()
                            .delete_request(
                                aws_sdk_dynamodb::types::DeleteRequest::builder()
                                    .set_key(Some(key_attrs(table, key)))
                                    .build()
                                    .map_err(internal)?,
                            )
                            .build(),
                    ),
                };
                requests.entry(self.table_name(table)).or_default().push(req);
            }
            for attempt in 0.. {
                let out =
                    self.client.batch_write_item().set_request_items(Some(requests)).send().await.map_err(map_err)?;
                requests =
                    out.unprocessed_items.unwrap_or_default().into_iter().filter(|(_, v)| !v.is_empty()).collect();
                if requests.is_empty() {
                    break;
                }
                if attempt >= RETRIES {
                    return Err(StoreError::Unavailable(
                        "dynamodb: batch write kept returning unprocessed items".into(),
                    ));
                }
                pause(attempt).await;
            }
        }
        Ok(())
    }

    async fn scan(&self, table: &'static TableDef, limit: usize, cursor: Option<String>) -> Result<Page, StoreError> {
        let start = match cursor {
            Some(c) => {
                let bytes = B64.decode(c).map_err(|_| StoreError::BadCursor)?;
                let map: serde_json::Map<String, serde_json::Value> =
                    serde_json::from_slice(&bytes).map_err(|_| StoreError::BadCursor)?;
                let mut out = HashMap::new();
                for a in [Some(table.pk), table.sk].into_iter().flatten() {
                    let v = map.get(a.name).and_then(|v| KeyVal::from_json(v, a.ty)).ok_or(StoreError::BadCursor)?;
                    out.insert(a.name.to_string(), key_av(&v));
                }
                Some(out)
            }
            None => None,
        };
        let out = self
            .client
            .scan()
            .table_name(self.table_name(table))
            .consistent_read(true)
            .limit(limit.max(1) as i32)
            .set_exclusive_start_key(start)
            .send()
            .await
            .map_err(map_err)?;
        let items = out.items.unwrap_or_default().into_iter().map(from_attrs).collect::<Result<Vec<_>, _>>()?;
        let cursor = match out.last_evaluated_key {
            Some(k) => Some(B64.encode(serde_json::to_vec(&from_attrs(k)?).map_err(internal)?)),
            None => None,
        };
        Ok(Page { items, cursor })
    }

    async fn transact(&self, ops: Vec<TxOp>) -> Result<(), StoreError> {
        if ops.len() > MAX_TX_OPS {
            return Err(StoreError::Internal(format!("transaction of {} ops exceeds {MAX_TX_OPS}", ops.len())));
        }
        let items = ops.iter().map(|op| self.tx_item(op)).collect::<Result<Vec<_>, _>>()?;
        // The SDK retries a transaction whose answer was lost (a timeout, a 500). Without a
        // ClientRequestToken that retry would run the transaction again, and one that had
        // committed would fail its own conditions and look like a conflict. The SDK fills the
        // token (an idempotency token in DynamoDB's model) once per call and sends it on every
        // attempt, so DynamoDB answers a retry with the first outcome; a test pins this.
        match self.client.transact_write_items().set_transact_items(Some(items)).send().await {
            Ok(_) => Ok(()),
            Err(e) => {
                if let Some(aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError::TransactionCanceledException(ex)) = e.as_service_error() {
                    let reasons = ex.cancellation_reasons();
                    if let Some(i) = reasons.iter().position(|r| r.code() == Some("ConditionalCheckFailed")) {
                        return Err(StoreError::Conflict { index: Some(i) });
                    }
                    if reasons.iter().any(|r| r.code() == Some("TransactionConflict")) {
                        return Err(StoreError::Conflict { index: None });
                    }
                    let codes: Vec<&str> = reasons.iter().filter_map(|r| r.code()).filter(|c| *c != "None").collect();
                    if codes.iter().any(|c| c.contains("Throughput") || c.contains("Throttl")) {
                        return Err(StoreError::Unavailable(format!("dynamodb transaction throttled: {codes:?}")));
                    }
                    return Err(StoreError::Internal(format!("dynamodb transaction cancelled: {codes:?}")));
                }
                Err(map_err(e))
            }
        }
    }
}
