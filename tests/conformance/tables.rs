//! The Tables port's contract (DynamoDB semantics).

use super::unique;
use im_shared::schema::{
    CONVERSATIONS, CONVERSATIONS_BY_ACTIVITY, GROUP_RELATIONS, GROUP_RELATIONS_BY_USER, JOIN_REQUESTS, META, STORE,
    USER_RELATIONS,
};
use im_shared::tables::{Cond, Item, Key, KeyVal, Query, StoreError, Stored, Tables, TxOp, Update, WriteOp};
use serde_json::json;
use std::collections::HashSet;
use std::ops::Bound;
use std::sync::Arc;

pub type Adapter = Arc<dyn Tables>;

fn item(v: serde_json::Value) -> Item {
    v.as_object().expect("object").clone()
}

fn msg(conv: &str, seq: i64) -> Item {
    item(json!({"timeline_id": conv, "seq": seq, "text": format!("m{seq}"), "nested": {"a": [1, 2, {"b": null}]}}))
}

fn seqs(items: &[Item]) -> Vec<i64> {
    items.iter().map(|i| i["seq"].as_i64().unwrap()).collect()
}

/// Read items as items.
fn items(stored: Vec<Stored>) -> Vec<Item> {
    stored.into_iter().map(|s| s.into_item().expect("an item")).collect()
}

fn opt_items(stored: Vec<Option<Stored>>) -> Vec<Option<Item>> {
    stored.into_iter().map(|s| s.map(|s| s.into_item().expect("an item"))).collect()
}

/// `get`, as an item.
async fn get(t: &Adapter, table: &'static im_shared::schema::TableDef, key: &Key) -> Option<Item> {
    t.get(table, key).await.expect("get").map(|s| s.into_item().expect("an item"))
}

/// One page of a query, as items.
async fn query(t: &Adapter, q: Query) -> im_shared::tables::Page {
    let page = t.query(q).await.expect("query");
    im_shared::tables::Page { items: items(page.items), cursor: page.cursor }
}

/// Every item of a query, following cursors, with pages of `page` items.
async fn query_all(t: &Adapter, q: Query, page: usize) -> Vec<Item> {
    let mut out = Vec::new();
    let mut cursor = None;
    loop {
        let p = query(t, q.clone().limit(page).cursor(cursor)).await;
        assert!(p.items.len() <= page, "a page never exceeds its limit");
        out.extend(p.items);
        match p.cursor {
            Some(c) => cursor = Some(c),
            None => return out,
        }
    }
}

pub async fn put_then_get_returns_the_item_and_missing_is_none(t: Adapter) {
    let conv = unique("g_put");
    let it = msg(&conv, 1);
    t.put(&STORE, it.clone(), Cond::Always).await.unwrap();
    assert_eq!(get(&t, &STORE, &Key::pk_sk(conv.as_str(), 1)).await, Some(it.clone()));
    assert_eq!(get(&t, &STORE, &Key::pk_sk(conv.as_str(), 2)).await, None);
    let mut replaced = it.clone();
    replaced.insert("text".into(), json!("replaced"));
    t.put(&STORE, replaced.clone(), Cond::Always).await.unwrap();
    assert_eq!(get(&t, &STORE, &Key::pk_sk(conv.as_str(), 1)).await, Some(replaced));
    let many = t
        .get_many(&STORE, &[Key::pk_sk(conv.as_str(), 2), Key::pk_sk(conv.as_str(), 1), Key::pk_sk(conv.as_str(), 3)])
        .await
        .unwrap();
    assert_eq!(
        many.iter().map(Option::is_some).collect::<Vec<_>>(),
        vec![false, true, false],
        "get_many keeps the order of keys"
    );
}

pub async fn conditional_put_and_delete_follow_their_conditions(t: Adapter) {
    let conv = unique("g_cond");
    let key = Key::pk_sk(conv.as_str(), 1);
    assert!(matches!(t.put(&STORE, msg(&conv, 1), Cond::Exists).await, Err(StoreError::Conflict { .. })));
    t.put(&STORE, msg(&conv, 1), Cond::NotExists).await.unwrap();
    assert!(matches!(t.put(&STORE, msg(&conv, 1), Cond::NotExists).await, Err(StoreError::Conflict { .. })));
    assert!(t.put(&STORE, msg(&conv, 1), Cond::equals("text", "m1")).await.is_ok());
    assert!(t.put(&STORE, msg(&conv, 1), Cond::equals("text", "other")).await.unwrap_err().is_conflict());
    assert!(t.put(&STORE, msg(&conv, 1), Cond::LessThan("seq".into(), 1)).await.unwrap_err().is_conflict());
    assert!(t.put(&STORE, msg(&conv, 1), Cond::LessThan("seq".into(), 2)).await.is_ok());
    // Delete: a failed condition changes nothing; a delete returns what was there.
    assert!(t.delete(&STORE, &key, Cond::equals("text", "nope")).await.unwrap_err().is_conflict());
    assert_eq!(t.delete(&STORE, &key, Cond::Exists).await.unwrap(), Some(msg(&conv, 1)));
    assert!(t.delete(&STORE, &key, Cond::Exists).await.unwrap_err().is_conflict());
    assert_eq!(t.delete(&STORE, &key, Cond::Always).await.unwrap(), None);
}

pub async fn update_creates_sets_removes_and_counts_atomically(t: Adapter) {
    let id = unique("g_upd");
    let key = Key::pk(id.as_str());
    let created = t.update(&META, &key, Update::new().set("name", "x").add("n", 5), Cond::Always).await.unwrap();
    assert_eq!(created, item(json!({"timeline_id": id, "name": "x", "n": 5})));
    assert!(t.update(&META, &key, Update::new().add("n", 1), Cond::equals("n", 4)).await.unwrap_err().is_conflict());
    let after = t.update(&META, &key, Update::new().remove("name").add("n", -2), Cond::equals("n", 5)).await.unwrap();
    assert_eq!(after, item(json!({"timeline_id": id, "n": 3})));
    // Concurrent counters lose nothing.
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let (t, key) = (t.clone(), key.clone());
            tokio::spawn(async move {
                for _ in 0..25 {
                    t.update(&META, &key, Update::new().add("n", 1), Cond::Always).await.unwrap();
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    assert_eq!(get(&t, &META, &key).await.unwrap()["n"], json!(203));
    let missing = Key::pk(unique("g_none").as_str());
    assert!(t.update(&META, &missing, Update::new().add("n", 1), Cond::Exists).await.unwrap_err().is_conflict());
    assert_eq!(get(&t, &META, &missing).await, None);

    // A counter under a limit: missing counts as 0, the item must exist, the limit is strict.
    let below = |n| Cond::CountBelow("c".into(), n);
    assert!(t.update(&META, &missing, Update::new().add("c", 1), below(5)).await.unwrap_err().is_conflict());
    assert_eq!(get(&t, &META, &missing).await, None);
    assert!(t.update(&META, &key, Update::new().add("c", 1), below(0)).await.unwrap_err().is_conflict());
    t.update(&META, &key, Update::new().add("c", 1), below(1)).await.unwrap();
    assert!(t.update(&META, &key, Update::new().add("c", 1), below(1)).await.unwrap_err().is_conflict());
    let after = t.update(&META, &key, Update::new().add("c", 1), below(2)).await.unwrap();
    assert_eq!(after["c"], json!(2));
}

pub async fn queries_page_both_ways_within_one_partition(t: Adapter) {
    let conv = unique("g_q");
    let other = unique("g_q_other");
    let ops: Vec<WriteOp> = (1..=23)
        .map(|s| WriteOp::Put { table: &STORE, item: msg(&conv, s) })
        .chain((1..=5).map(|s| WriteOp::Put { table: &STORE, item: msg(&other, s) }))
        .collect();
    t.batch_write(ops).await.unwrap();
    let all = Query::new(&STORE, conv.as_str());
    assert_eq!(seqs(&query_all(&t, all.clone(), 100).await), (1..=23).collect::<Vec<_>>());
    assert_eq!(seqs(&query_all(&t, all.clone(), 4).await), (1..=23).collect::<Vec<_>>(), "cursor paging forward");
    assert_eq!(
        seqs(&query_all(&t, all.clone().backward(), 5).await),
        (1..=23).rev().collect::<Vec<_>>(),
        "cursor paging backward"
    );
    let exact = query(&t, all.clone().limit(23)).await;
    assert_eq!((exact.items.len(), exact.cursor), (23, None), "a page that ends the range has no cursor");
    let r = all.clone().range(Bound::Excluded(KeyVal::N(5)), Bound::Included(KeyVal::N(9)));
    assert_eq!(seqs(&query_all(&t, r.clone(), 2).await), vec![6, 7, 8, 9]);
    assert_eq!(seqs(&query_all(&t, r.backward(), 3).await), vec![9, 8, 7, 6]);
    let r = all.clone().range(Bound::Included(KeyVal::N(20)), Bound::Unbounded);
    assert_eq!(seqs(&query_all(&t, r, 2).await), vec![20, 21, 22, 23]);
    let empty = all.clone().range(Bound::Excluded(KeyVal::N(9)), Bound::Excluded(KeyVal::N(10)));
    assert!(query(&t, empty).await.items.is_empty());
    let inverted = all.clone().range(Bound::Included(KeyVal::N(9)), Bound::Included(KeyVal::N(3)));
    assert!(query(&t, inverted).await.items.is_empty());
    // A cursor belongs to its partition; garbage is refused, not a crash.
    let c = query(&t, Query::new(&STORE, other.as_str()).limit(2)).await.cursor.unwrap();
    assert_eq!(t.query(all.clone().cursor(Some(c))).await.unwrap_err(), StoreError::BadCursor);
    assert_eq!(t.query(all.clone().cursor(Some("!!not a cursor".into()))).await.unwrap_err(), StoreError::BadCursor);
}

pub async fn string_sort_keys_order_by_bytes(t: Adapter) {
    let user = unique("u_str");
    let subs = ["b", "a", "ab", "a-b", "a.b", "B", "a@b", "aa"];
    for s in subs {
        t.put(&USER_RELATIONS, item(json!({"main_user": user, "sub_user": s})), Cond::Always).await.unwrap();
    }
    let got: Vec<String> = query_all(&t, Query::new(&USER_RELATIONS, user.as_str()), 3)
        .await
        .iter()
        .map(|i| i["sub_user"].as_str().unwrap().to_string())
        .collect();
    let mut want: Vec<String> = subs.iter().map(|s| s.to_string()).collect();
    want.sort();
    assert_eq!(got, want);
    let between =
        Query::new(&USER_RELATIONS, user.as_str()).range(Bound::Included("a".into()), Bound::Excluded("b".into()));
    assert_eq!(query_all(&t, between, 10).await.len(), 6);
}

pub async fn indexes_follow_every_write(t: Adapter) {
    let user = unique("u_idx");
    let groups: Vec<String> = (0..7).map(|i| format!("g_{i}_{user}")).collect();
    for g in &groups {
        t.put(&GROUP_RELATIONS, item(json!({"group_id": g, "user_id": user, "role": "member"})), Cond::NotExists)
            .await
            .unwrap();
    }
    let by_user = Query::new(&GROUP_RELATIONS, user.as_str()).index(GROUP_RELATIONS_BY_USER);
    let listed: Vec<String> =
        query_all(&t, by_user.clone(), 3).await.iter().map(|i| i["group_id"].as_str().unwrap().to_string()).collect();
    assert_eq!(listed, groups, "the reverse index lists a user's groups in order, with full items");
    t.delete(&GROUP_RELATIONS, &Key::pk_sk(groups[2].as_str(), user.as_str()), Cond::Exists).await.unwrap();
    assert_eq!(query_all(&t, by_user.clone(), 10).await.len(), 6);

    // A numeric index sort key: moving an item moves its index entry; items without the
    // attribute are not in the index.
    let owner = unique("u_act");
    for (c, at) in [("s_a", 30), ("s_b", 10), ("s_c", 20)] {
        t.put(&CONVERSATIONS, item(json!({"user_id": owner, "conversation_id": c, "updated_at": at})), Cond::Always)
            .await
            .unwrap();
    }
    t.put(&CONVERSATIONS, item(json!({"user_id": owner, "conversation_id": "s_d"})), Cond::Always).await.unwrap();
    t.update(&CONVERSATIONS, &Key::pk_sk(owner.as_str(), "s_b"), Update::new().set("updated_at", 40), Cond::Exists)
        .await
        .unwrap();
    let recent = Query::new(&CONVERSATIONS, owner.as_str()).index(CONVERSATIONS_BY_ACTIVITY).backward();
    let order: Vec<String> = query_all(&t, recent.clone(), 2)
        .await
        .iter()
        .map(|i| i["conversation_id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(order, vec!["s_b", "s_a", "s_c"]);
    let upto = recent.range(Bound::Unbounded, Bound::Included(KeyVal::N(30)));
    assert_eq!(query_all(&t, upto, 1).await.len(), 2, "an inclusive bound on an index sort key");
}

pub async fn batch_writes_apply_any_number_of_puts_and_deletes(t: Adapter) {
    let conv = unique("g_batch");
    t.batch_write((1..=60).map(|s| WriteOp::Put { table: &STORE, item: msg(&conv, s) }).collect()).await.unwrap();
    t.batch_write((1..=30).map(|s| WriteOp::Delete { table: &STORE, key: Key::pk_sk(conv.as_str(), s) }).collect())
        .await
        .unwrap();
    assert_eq!(seqs(&query_all(&t, Query::new(&STORE, conv.as_str()), 100).await), (31..=60).collect::<Vec<_>>());
}

pub async fn transactions_apply_all_or_nothing_and_name_the_failed_op(t: Adapter) {
    let conv = unique("g_tx");
    let meta = Key::pk(conv.as_str());
    t.put(&STORE, msg(&conv, 3), Cond::Always).await.unwrap();
    let ops = vec![
        TxOp::update(&META, meta.clone(), Update::new().add("last_seq", 1), Cond::Always),
        TxOp::put(&STORE, msg(&conv, 1), Cond::NotExists),
        TxOp::put(&STORE, msg(&conv, 3), Cond::NotExists), // fails: it exists
    ];
    assert_eq!(t.transact(ops).await.unwrap_err(), StoreError::Conflict { index: Some(2) });
    assert_eq!(get(&t, &META, &meta).await, None, "nothing of a failed transaction is applied");
    assert_eq!(get(&t, &STORE, &Key::pk_sk(conv.as_str(), 1)).await, None);
    let ops = vec![
        TxOp::update(&META, meta.clone(), Update::new().add("last_seq", 1), Cond::NotExists),
        TxOp::put(&STORE, msg(&conv, 1), Cond::NotExists),
        TxOp::delete(&STORE, Key::pk_sk(conv.as_str(), 3), Cond::Exists),
        TxOp::check(&META, Key::pk(unique("g_absent").as_str()), Cond::NotExists),
    ];
    t.transact(ops).await.unwrap();
    assert_eq!(get(&t, &META, &meta).await.unwrap()["last_seq"], json!(1));
    assert_eq!(seqs(&query_all(&t, Query::new(&STORE, conv.as_str()), 10).await), vec![1]);
    // A check that fails stops the transaction like a write would.
    let ops = vec![
        TxOp::put(&STORE, msg(&conv, 2), Cond::NotExists),
        TxOp::check(&META, meta.clone(), Cond::equals("last_seq", 7)),
    ];
    assert_eq!(t.transact(ops).await.unwrap_err(), StoreError::Conflict { index: Some(1) });
    assert_eq!(get(&t, &STORE, &Key::pk_sk(conv.as_str(), 2)).await, None);
}

/// The service's numbering scheme under contention: counter n→n+1 and item n+1 in one
/// transaction. Every number is used once, densely, whatever the interleaving.
pub async fn counter_and_item_in_one_transaction_number_densely_under_contention(t: Adapter) {
    let conv = unique("g_seq");
    let writers: Vec<_> = (0..8)
        .map(|w| {
            let (t, conv) = (t.clone(), conv.clone());
            tokio::spawn(async move {
                for i in 0..15 {
                    loop {
                        let cur = get(&t, &META, &Key::pk(conv.as_str())).await;
                        let n = cur.as_ref().map_or(0, |m| m["last_seq"].as_i64().unwrap());
                        let cond = if cur.is_some() { Cond::equals("last_seq", n) } else { Cond::NotExists };
                        let mut it = msg(&conv, n + 1);
                        it.insert("writer".into(), json!(format!("{w}/{i}")));
                        let ops = vec![
                            TxOp::update(&META, Key::pk(conv.as_str()), Update::new().set("last_seq", n + 1), cond),
                            TxOp::put(&STORE, it, Cond::NotExists),
                        ];
                        match t.transact(ops).await {
                            Ok(()) => break,
                            Err(e) if e.is_conflict() => tokio::task::yield_now().await,
                            Err(e) => panic!("{e}"),
                        }
                    }
                }
            })
        })
        .collect();
    for w in writers {
        w.await.unwrap();
    }
    let items = query_all(&t, Query::new(&STORE, conv.as_str()), 50).await;
    assert_eq!(seqs(&items), (1..=120).collect::<Vec<_>>());
    let mut writers: Vec<&str> = items.iter().map(|i| i["writer"].as_str().unwrap()).collect();
    writers.sort();
    writers.dedup();
    assert_eq!(writers.len(), 120, "no write was lost or doubled");
}

pub async fn transactions_refuse_more_than_100_ops(t: Adapter) {
    let conv = unique("g_big");
    let ops: Vec<TxOp> = (1..=101).map(|s| TxOp::put(&STORE, msg(&conv, s), Cond::Always)).collect();
    assert!(t.transact(ops).await.is_err());
    assert!(query(&t, Query::new(&STORE, conv.as_str())).await.items.is_empty());
    let ops: Vec<TxOp> = (1..=100).map(|s| TxOp::put(&STORE, msg(&conv, s), Cond::Always)).collect();
    t.transact(ops).await.unwrap();
}

pub async fn negative_and_large_numbers_sort_numerically(t: Adapter) {
    let conv = unique("g_num");
    let nums = [i64::MAX / 2, -3, 0, 7, -1_000_000, 1_000_000_000_000];
    for n in nums {
        t.put(&STORE, msg(&conv, n), Cond::Always).await.unwrap();
    }
    let mut want = nums.to_vec();
    want.sort();
    assert_eq!(seqs(&query_all(&t, Query::new(&STORE, conv.as_str()), 4).await), want);
}

pub async fn scan_pages_through_every_item_of_a_table(t: Adapter) {
    // join_requests: a table no other case writes to, so the scan sees a table at rest.
    let groups: Vec<String> = (0..5).map(|i| unique(&format!("g_scan{i}"))).collect();
    let mut want = HashSet::new();
    for g in &groups {
        // Other tables' items under the same partition keys are not the scanned table's.
        t.put(&GROUP_RELATIONS, item(json!({"group_id": g, "user_id": "u0", "role": "member"})), Cond::Always)
            .await
            .unwrap();
        t.put(&META, item(json!({"timeline_id": g, "kind": "group"})), Cond::Always).await.unwrap();
        t.put(&CONVERSATIONS, item(json!({"user_id": g, "conversation_id": "c", "updated_at": 1})), Cond::Always)
            .await
            .unwrap();
        for u in 0..7 {
            let user = format!("u{u}");
            t.put(&JOIN_REQUESTS, item(json!({"group_id": g, "user_id": user})), Cond::Always).await.unwrap();
            want.insert((g.clone(), user));
        }
    }
    let mut seen = HashSet::new();
    let mut cursor = None;
    loop {
        let page = t.scan(&JOIN_REQUESTS, 6, cursor).await.unwrap();
        assert!(page.items.len() <= 6);
        for i in &page.items {
            assert_eq!(i.len(), 2, "only join requests are scanned: {i:?}");
            let key = (i["group_id"].as_str().unwrap().to_string(), i["user_id"].as_str().unwrap().to_string());
            assert!(seen.insert(key.clone()), "{key:?} scanned twice");
        }
        match page.cursor {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    // Earlier runs may have left items; ours must all be there.
    assert!(want.is_subset(&seen), "every item is scanned");
    assert_eq!(t.scan(&JOIN_REQUESTS, 5, Some("%%%".into())).await.unwrap_err(), StoreError::BadCursor);
}

/// Reads hand over items to decode: as the items written, in the order and pages of the query,
/// or straight into a struct that names only some attributes.
pub async fn reads_decode_to_the_items_written_or_to_row_types(t: Adapter) {
    let conv = unique("g_stored");
    for s in 1..=5 {
        t.put(&STORE, msg(&conv, s), Cond::Always).await.unwrap();
    }
    let key = |s: i64| Key::pk_sk(conv.as_str(), s);

    assert_eq!(get(&t, &STORE, &key(2)).await, Some(msg(&conv, 2)));
    assert_eq!(t.get(&STORE, &key(9)).await.unwrap(), None);
    let many = t.get_many(&STORE, &[key(3), key(9), key(1)]).await.unwrap();
    assert_eq!(opt_items(many), vec![Some(msg(&conv, 3)), None, Some(msg(&conv, 1))]);

    let q = Query::new(&STORE, conv.as_str()).backward().limit(2);
    let first = query(&t, q.clone()).await;
    assert_eq!(seqs(&first.items), vec![5, 4]);
    let next = query(&t, q.cursor(first.cursor)).await;
    assert_eq!(seqs(&next.items), vec![3, 2], "a page's cursor continues the query");

    #[derive(serde::Deserialize, Debug, PartialEq)]
    struct Part {
        seq: i64,
        text: String,
    }
    let part: Part = t.get(&STORE, &key(4)).await.unwrap().unwrap().decode().unwrap();
    assert_eq!(part, Part { seq: 4, text: "m4".into() });
    let wrong = t.get(&STORE, &key(4)).await.unwrap().unwrap().decode::<Vec<i64>>();
    assert!(matches!(wrong, Err(StoreError::Internal(_))), "a row of the wrong shape is an error, not a panic");

    // Through an index too: the items are the base table's.
    let user = unique("u_stored");
    let row = item(json!({"group_id": unique("g_s"), "user_id": user, "role": "owner", "joined_at": 7}));
    t.put(&GROUP_RELATIONS, row.clone(), Cond::NotExists).await.unwrap();
    let by_user = Query::new(&GROUP_RELATIONS, user.as_str()).index(GROUP_RELATIONS_BY_USER);
    assert_eq!(query(&t, by_user).await.items, vec![row]);
}

/// A batch read takes keys of several tables at once, in any order and any number (DynamoDB
/// answers at most 100 keys a request, with unprocessed keys to ask again), and answers each key
/// in its place: the item, or `None`.
pub async fn batch_reads_answer_keys_of_several_tables_in_their_order(t: Adapter) {
    let conv = unique("g_batch");
    let user = unique("u_batch");
    for s in 1..=120 {
        t.put(&STORE, msg(&conv, s), Cond::Always).await.unwrap();
    }
    let meta = item(json!({"timeline_id": conv, "last_seq": 120}));
    t.put(&META, meta.clone(), Cond::Always).await.unwrap();
    let friend = item(json!({"main_user": user, "sub_user": "f1", "conversation_id": conv}));
    t.put(&USER_RELATIONS, friend.clone(), Cond::Always).await.unwrap();

    let store = |s: i64| (&STORE, Key::pk_sk(conv.as_str(), s));
    let mut keys = vec![
        (&USER_RELATIONS, Key::pk_sk(user.as_str(), "f1")),
        store(7),
        (&META, Key::pk(conv.as_str())),
        (&USER_RELATIONS, Key::pk_sk(user.as_str(), "nobody")),
        store(500),
        store(7), // asked twice: answered twice
    ];
    // Past 100 keys: the rest of the store's items, newest first.
    keys.extend((1..=120).rev().map(store));
    let got = opt_items(t.get_batch(&keys).await.unwrap());
    assert_eq!(got.len(), keys.len());
    assert_eq!(got[0], Some(friend));
    assert_eq!(got[1], Some(msg(&conv, 7)));
    assert_eq!(got[2], Some(meta));
    assert_eq!((got[3].clone(), got[4].clone()), (None, None), "missing keys are None, in their place");
    assert_eq!(got[5], Some(msg(&conv, 7)));
    let rest: Vec<Item> = got[6..].iter().map(|i| i.clone().expect("every stored item is found")).collect();
    assert_eq!(seqs(&rest), (1..=120).rev().collect::<Vec<_>>(), "the order of the keys, past 100 of them");
    assert_eq!(t.get_batch(&[]).await.unwrap(), Vec::<Option<Stored>>::new());
}

/// Every case, for [`crate::conformance_tests!`].
#[macro_export]
macro_rules! tables_conformance {
    ($factory:path) => {
        $crate::conformance_tests!(
            conformance::tables,
            $factory,
            [
                put_then_get_returns_the_item_and_missing_is_none,
                conditional_put_and_delete_follow_their_conditions,
                update_creates_sets_removes_and_counts_atomically,
                queries_page_both_ways_within_one_partition,
                string_sort_keys_order_by_bytes,
                indexes_follow_every_write,
                batch_writes_apply_any_number_of_puts_and_deletes,
                transactions_apply_all_or_nothing_and_name_the_failed_op,
                counter_and_item_in_one_transaction_number_densely_under_contention,
                transactions_refuse_more_than_100_ops,
                negative_and_large_numbers_sort_numerically,
                scan_pages_through_every_item_of_a_table,
                reads_decode_to_the_items_written_or_to_row_types,
                batch_reads_answer_keys_of_several_tables_in_their_order,
            ]
        );
    };
}
