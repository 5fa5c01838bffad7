//! The Tables port: items keyed by a partition key and an optional sort key, with DynamoDB's
//! semantics. Get, conditional put/delete/update, atomic counters (`Update::add`), range queries
//! either way with a limit and an opaque cursor, unconditional batch writes, and transactions of
//! conditional writes that apply all or nothing.
//!
//! Items are JSON objects; the key attributes are ordinary attributes named by the table's
//! [`TableDef`](crate::schema::TableDef). The service never knows which adapter it has.

pub mod dynamo;
#[cfg(feature = "embedded")]
pub mod embedded;

use crate::schema::{IndexDef, KeyType, TableDef};
use async_trait::async_trait;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};
use std::ops::Bound;

pub type Item = Map<String, Value>;

/// A key attribute's value.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum KeyVal {
    S(String),
    N(i64),
}

impl KeyVal {
    pub fn to_json(&self) -> Value {
        match self {
            KeyVal::S(s) => Value::String(s.clone()),
            KeyVal::N(n) => Value::from(*n),
        }
    }

    /// Reads a key attribute of the given type from an item attribute.
    pub fn from_json(v: &Value, ty: KeyType) -> Option<KeyVal> {
        match ty {
            KeyType::S => v.as_str().map(|s| KeyVal::S(s.to_string())),
            KeyType::N => v.as_i64().map(KeyVal::N),
        }
    }
}

impl From<&str> for KeyVal {
    fn from(s: &str) -> Self {
        KeyVal::S(s.to_string())
    }
}
impl From<String> for KeyVal {
    fn from(s: String) -> Self {
        KeyVal::S(s)
    }
}
impl From<i64> for KeyVal {
    fn from(n: i64) -> Self {
        KeyVal::N(n)
    }
}

/// The primary key of one item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Key {
    pub pk: KeyVal,
    pub sk: Option<KeyVal>,
}

impl Key {
    pub fn pk(pk: impl Into<KeyVal>) -> Self {
        Key { pk: pk.into(), sk: None }
    }
    pub fn pk_sk(pk: impl Into<KeyVal>, sk: impl Into<KeyVal>) -> Self {
        Key { pk: pk.into(), sk: Some(sk.into()) }
    }

    /// The key attributes as item attributes.
    pub fn to_item(&self, table: &TableDef) -> Item {
        let mut item = Item::new();
        item.insert(table.pk.name.to_string(), self.pk.to_json());
        if let (Some(attr), Some(sk)) = (table.sk, &self.sk) {
            item.insert(attr.name.to_string(), sk.to_json());
        }
        item
    }

    /// The key of an item of `table`, or an error naming the missing attribute.
    pub fn of_item(table: &TableDef, item: &Item) -> Result<Key, StoreError> {
        let read = |attr: crate::schema::KeyAttr| {
            item.get(attr.name).and_then(|v| KeyVal::from_json(v, attr.ty)).ok_or_else(|| {
                StoreError::Internal(format!("{}: key attribute {} missing or mistyped", table.name, attr.name))
            })
        };
        Ok(Key { pk: read(table.pk)?, sk: table.sk.map(read).transpose()? })
    }
}

/// A condition on the item a write targets, evaluated atomically with the write.
#[derive(Debug, Clone, PartialEq)]
pub enum Cond {
    Always,
    Exists,
    NotExists,
    /// The item exists and `attr == value`.
    Equals(String, Value),
    /// The item exists and the numeric `attr < n`.
    LessThan(String, i64),
    /// The item exists and the counter `attr` is below `n`, a missing counter counting as 0:
    /// a per-user limit on a counter that rows written before it existed do not carry.
    CountBelow(String, i64),
}

impl Cond {
    pub fn equals(attr: &str, v: impl Into<Value>) -> Self {
        Cond::Equals(attr.to_string(), v.into())
    }

    /// Whether `current` satisfies the condition. Shared by the embedded adapter and by tests.
    pub fn holds(&self, current: Option<&Item>) -> bool {
        match (self, current) {
            (Cond::Always, _) => true,
            (Cond::Exists, c) => c.is_some(),
            (Cond::NotExists, c) => c.is_none(),
            (Cond::Equals(a, v), Some(c)) => c.get(a) == Some(v),
            (Cond::LessThan(a, n), Some(c)) => c.get(a).and_then(Value::as_i64).is_some_and(|x| x < *n),
            (Cond::CountBelow(a, n), Some(c)) => c.get(a).and_then(Value::as_i64).unwrap_or(0) < *n,
            (_, None) => false,
        }
    }
}

/// An update of some attributes of an item, creating it (with its key) when it is missing.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Update {
    /// Attributes to set.
    pub set: Item,
    /// Attributes to remove.
    pub remove: Vec<String>,
    /// Numeric attributes to add to (a missing one counts as 0): atomic counters.
    pub add: Vec<(String, i64)>,
}

impl Update {
    pub fn new() -> Self {
        Self::default()
    }
    pub fn set(mut self, attr: &str, v: impl Into<Value>) -> Self {
        self.set.insert(attr.to_string(), v.into());
        self
    }
    pub fn remove(mut self, attr: &str) -> Self {
        self.remove.push(attr.to_string());
        self
    }
    pub fn add(mut self, attr: &str, delta: i64) -> Self {
        self.add.push((attr.to_string(), delta));
        self
    }

    /// Applies the update to the current item (or a new one made of the key).
    pub fn apply(&self, table: &TableDef, key: &Key, current: Option<Item>) -> Item {
        let mut item = current.unwrap_or_else(|| key.to_item(table));
        for (k, v) in &self.set {
            item.insert(k.clone(), v.clone());
        }
        for k in &self.remove {
            item.remove(k);
        }
        for (k, d) in &self.add {
            let cur = item.get(k).and_then(Value::as_i64).unwrap_or(0);
            item.insert(k.clone(), Value::from(cur + d));
        }
        item
    }
}

/// One write of a transaction.
#[derive(Debug, Clone)]
pub enum TxOp {
    Put {
        table: &'static TableDef,
        item: Item,
        cond: Cond,
    },
    Delete {
        table: &'static TableDef,
        key: Key,
        cond: Cond,
    },
    Update {
        table: &'static TableDef,
        key: Key,
        update: Update,
        cond: Cond,
    },
    /// Checks a condition without writing.
    Check {
        table: &'static TableDef,
        key: Key,
        cond: Cond,
    },
}

impl TxOp {
    pub fn put(table: &'static TableDef, item: Item, cond: Cond) -> Self {
        TxOp::Put { table, item, cond }
    }
    pub fn delete(table: &'static TableDef, key: Key, cond: Cond) -> Self {
        TxOp::Delete { table, key, cond }
    }
    pub fn update(table: &'static TableDef, key: Key, update: Update, cond: Cond) -> Self {
        TxOp::Update { table, key, update, cond }
    }
    pub fn check(table: &'static TableDef, key: Key, cond: Cond) -> Self {
        TxOp::Check { table, key, cond }
    }
}

/// An unconditional write of a batch (not atomic as a whole).
#[derive(Debug, Clone)]
pub enum WriteOp {
    Put { table: &'static TableDef, item: Item },
    Delete { table: &'static TableDef, key: Key },
}

/// A range query over one partition of a table or of one of its indexes.
#[derive(Debug, Clone)]
pub struct Query {
    pub table: &'static TableDef,
    pub index: Option<&'static str>,
    pub pk: KeyVal,
    pub lower: Bound<KeyVal>,
    pub upper: Bound<KeyVal>,
    /// Ascending sort key order when true.
    pub forward: bool,
    pub limit: usize,
    /// A cursor returned by an earlier page of the same query.
    pub cursor: Option<String>,
}

impl Query {
    pub fn new(table: &'static TableDef, pk: impl Into<KeyVal>) -> Self {
        Query {
            table,
            index: None,
            pk: pk.into(),
            lower: Bound::Unbounded,
            upper: Bound::Unbounded,
            forward: true,
            limit: 100,
            cursor: None,
        }
    }
    pub fn index(mut self, name: &'static str) -> Self {
        self.index = Some(name);
        self
    }
    pub fn range(mut self, lower: Bound<KeyVal>, upper: Bound<KeyVal>) -> Self {
        self.lower = lower;
        self.upper = upper;
        self
    }
    pub fn backward(mut self) -> Self {
        self.forward = false;
        self
    }
    pub fn limit(mut self, limit: usize) -> Self {
        self.limit = limit;
        self
    }
    pub fn cursor(mut self, cursor: Option<String>) -> Self {
        self.cursor = cursor;
        self
    }

    pub fn index_def(&self) -> Result<Option<&'static IndexDef>, StoreError> {
        match self.index {
            None => Ok(None),
            Some(name) => self
                .table
                .indexes
                .iter()
                .find(|i| i.name == name)
                .map(Some)
                .ok_or_else(|| StoreError::Internal(format!("{} has no index {name}", self.table.name))),
        }
    }
}

/// One page of a query: `cursor` is `None` when the range is exhausted.
#[derive(Debug, Clone)]
pub struct Page<T = Item> {
    pub items: Vec<T>,
    pub cursor: Option<String>,
}

impl<T> Default for Page<T> {
    fn default() -> Self {
        Page { items: Vec::new(), cursor: None }
    }
}

/// An item as a read returns it: the caller decodes it into a row type ([`Stored::decode`]) or
/// takes it as an item ([`Stored::into_item`]). An adapter hands over what it has, the item as
/// JSON text or the item itself; decoding the text straight into a row type skips building a
/// map only to take it apart again, which was most of a sync page's CPU.
#[derive(Debug, Clone, PartialEq)]
pub enum Stored {
    /// The item, encoded as a JSON object.
    Encoded(Vec<u8>),
    Item(Item),
}

impl From<Item> for Stored {
    fn from(item: Item) -> Self {
        Stored::Item(item)
    }
}

impl Stored {
    /// The item as a row type (attributes it does not name are ignored, as with an item).
    pub fn decode<T: DeserializeOwned>(self) -> Result<T, StoreError> {
        let decoded = match self {
            Stored::Encoded(bytes) => serde_json::from_slice(&bytes),
            Stored::Item(item) => serde_json::from_value(Value::Object(item)),
        };
        decoded.map_err(|e| StoreError::Internal(format!("malformed row: {e}")))
    }

    pub fn into_item(self) -> Result<Item, StoreError> {
        self.decode()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// A condition failed. For a transaction, `index` names the first failing op when known.
    #[error("condition failed (op {index:?})")]
    Conflict { index: Option<usize> },
    /// A cursor that this query did not produce.
    #[error("bad cursor")]
    BadCursor,
    /// A transient failure (throttling after retries, I/O): the caller may retry.
    #[error("unavailable: {0}")]
    Unavailable(String),
    #[error("internal: {0}")]
    Internal(String),
}

impl StoreError {
    pub fn is_conflict(&self) -> bool {
        matches!(self, StoreError::Conflict { .. })
    }
}

/// The port. Every read is strongly consistent on the base table (index queries may lag on
/// DynamoDB, as global secondary indexes do). Reads return [`Stored`] items, for the caller to
/// decode.
#[async_trait]
pub trait Tables: Send + Sync + 'static {
    async fn get(&self, table: &'static TableDef, key: &Key) -> Result<Option<Stored>, StoreError>;
    /// Gets items of any tables at once (DynamoDB's BatchGetItem: one request per 100 keys, not
    /// one per table); the answer is in the order of `keys`.
    async fn get_batch(&self, keys: &[(&'static TableDef, Key)]) -> Result<Vec<Option<Stored>>, StoreError>;
    /// Gets many items of one table; the answer is in the order of `keys`.
    async fn get_many(&self, table: &'static TableDef, keys: &[Key]) -> Result<Vec<Option<Stored>>, StoreError> {
        self.get_batch(&of_table(table, keys)).await
    }
    async fn put(&self, table: &'static TableDef, item: Item, cond: Cond) -> Result<(), StoreError>;
    /// Deletes an item, returning what it was.
    async fn delete(&self, table: &'static TableDef, key: &Key, cond: Cond) -> Result<Option<Item>, StoreError>;
    /// Updates (or creates) an item, returning it as it is after the update.
    async fn update(&self, table: &'static TableDef, key: &Key, update: Update, cond: Cond)
    -> Result<Item, StoreError>;
    async fn query(&self, query: Query) -> Result<Page<Stored>, StoreError>;
    async fn batch_write(&self, ops: Vec<WriteOp>) -> Result<(), StoreError>;
    /// Every item of a table, a page at a time, in no particular order (DynamoDB's Scan): for
    /// offline jobs such as rebuilding the search indexes, never for requests.
    async fn scan(&self, table: &'static TableDef, limit: usize, cursor: Option<String>) -> Result<Page, StoreError>;
    /// Applies every op or none. At most [`MAX_TX_OPS`] ops, on distinct items.
    async fn transact(&self, ops: Vec<TxOp>) -> Result<(), StoreError>;
}

/// Keys of one table, as [`Tables::get_batch`] takes them.
fn of_table(table: &'static TableDef, keys: &[Key]) -> Vec<(&'static TableDef, Key)> {
    keys.iter().map(|k| (table, k.clone())).collect()
}

/// DynamoDB's limit on one TransactWriteItems call; every adapter enforces it so that code that
/// passes on the embedded backend passes on AWS too.
pub const MAX_TX_OPS: usize = 100;
/// DynamoDB's limit on one BatchWriteItem call (adapters split larger batches themselves).
pub const MAX_BATCH_OPS: usize = 25;
