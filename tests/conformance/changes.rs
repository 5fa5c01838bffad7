//! The ChangeFeed port's contract: a record for each change its filter keeps, in commit order,
//! none for a write that failed; read oldest first, or on past a position; forgotten only when
//! named. An adapter is a pair: the tables whose changes the feed records, opened with
//! [`keep_store_puts`] as the filter, and the feed.

use super::unique;
use im_shared::changes::ChangeFeed;
use im_shared::schema::{STORE, TableDef, USERS};
use im_shared::tables::{Cond, Item, Key, Tables, TxOp};
use serde_json::json;
use std::sync::Arc;

pub type Adapter = (Arc<dyn Tables>, Arc<dyn ChangeFeed>);

/// The filter the cases' feed is opened with: a record of `<timeline_id>/<seq>` for each store
/// item written, none for the other tables or for deletions.
pub fn keep_store_puts(t: &TableDef, _old: Option<&Item>, new: Option<&Item>) -> Option<String> {
    let new = new.filter(|_| t.name == STORE.name)?;
    Some(format!("{}/{}", new["timeline_id"].as_str()?, new["seq"].as_i64()?))
}

fn msg(conv: &str, seq: i64) -> Item {
    json!({"timeline_id": conv, "seq": seq, "text": "hi"}).as_object().unwrap().clone()
}

/// The bodies of the records after `after`, with their positions checked to increase.
async fn bodies(feed: &dyn ChangeFeed, after: Option<u64>) -> Vec<String> {
    let records = feed.changes(after, 1000).await.expect("changes");
    assert!(records.windows(2).all(|w| w[0].0 < w[1].0), "positions increase: {records:?}");
    records.into_iter().map(|(_, body)| body).collect()
}

pub async fn kept_changes_are_recorded_in_commit_order_and_failed_writes_not_at_all((t, feed): Adapter) {
    let c = unique("g_feed");
    let before = feed.last_change().await.unwrap();
    t.transact(vec![TxOp::put(&STORE, msg(&c, 1), Cond::NotExists), TxOp::put(&STORE, msg(&c, 2), Cond::NotExists)])
        .await
        .unwrap();
    // Failed: its store put is undone, and so is its record.
    let failed = t
        .transact(vec![TxOp::put(&STORE, msg(&c, 3), Cond::NotExists), TxOp::put(&STORE, msg(&c, 1), Cond::NotExists)])
        .await;
    assert!(failed.unwrap_err().is_conflict());
    t.put(&USERS, json!({"user_id": unique("u")}).as_object().unwrap().clone(), Cond::Always).await.unwrap();
    t.delete(&STORE, &Key::pk_sk(c.as_str(), 2), Cond::Always).await.unwrap();
    t.put(&STORE, msg(&c, 4), Cond::NotExists).await.unwrap();
    let want: Vec<String> = [1, 2, 4].iter().map(|s| format!("{c}/{s}")).collect();
    assert_eq!(bodies(feed.as_ref(), before).await, want, "the kept changes, in order, nothing else");
    let last = feed.last_change().await.unwrap();
    assert!(last > before, "the newest record's position moves on: {before:?} to {last:?}");
    assert!(feed.changes(last, 10).await.unwrap().is_empty(), "nothing after the newest");
}

pub async fn records_are_read_oldest_first_and_stay_until_named((t, feed): Adapter) {
    let c = unique("g_feed");
    let before = feed.last_change().await.unwrap();
    for seq in 1..=4 {
        t.put(&STORE, msg(&c, seq), Cond::NotExists).await.unwrap();
    }
    let records = feed.changes(before, 1000).await.unwrap();
    let p: Vec<u64> = records.iter().map(|(p, _)| *p).collect();
    assert_eq!(p.len(), 4);
    assert_eq!(feed.changes(before, 1).await.unwrap(), records[..1].to_vec(), "oldest first, at most the limit");
    assert_eq!(feed.changes(Some(p[1]), 10).await.unwrap(), records[2..].to_vec(), "on past a position");
    // Only the positions named go, even one inside the range they span stays.
    feed.forget_changes(vec![p[2], p[0]]).await.unwrap();
    assert_eq!(feed.changes(before, 10).await.unwrap(), vec![records[1].clone(), records[3].clone()]);
    feed.forget_changes(vec![]).await.unwrap();
    assert_eq!(feed.changes(before, 10).await.unwrap().len(), 2, "forgetting nothing changes nothing");
    feed.forget_changes(vec![p[1], p[3]]).await.unwrap();
    assert!(feed.changes(before, 10).await.unwrap().is_empty(), "all forgotten");
}

#[macro_export]
macro_rules! changes_conformance {
    ($factory:path) => {
        $crate::conformance_tests!(
            conformance::changes,
            $factory,
            [
                kept_changes_are_recorded_in_commit_order_and_failed_writes_not_at_all,
                records_are_read_oldest_first_and_stay_until_named,
            ]
        );
    };
}
