//! The port conformance suites against the embedded adapters (redb files in temporary
//! directories), plus what only the embedded adapters promise: persistence across a reopen (the
//! change feed's too), TTL sweeping, and releasing a dead process's in-flight jobs.

mod conformance;

use im_shared::queue::Queue;
use im_shared::queue::embedded::EmbeddedQueue;
use im_shared::tables::Tables;
use im_shared::tables::embedded::RedbTables;
use std::sync::Arc;

/// Keeps each adapter's directory alive as long as the process (tests are short-lived).
fn temp_dir() -> std::path::PathBuf {
    tempfile::tempdir().expect("tempdir").keep()
}

async fn redb_tables() -> Arc<dyn Tables> {
    Arc::new(RedbTables::open(&temp_dir().join("tables.redb")).expect("open"))
}

async fn embedded_queue() -> Arc<dyn Queue> {
    Arc::new(EmbeddedQueue::open(&temp_dir().join("queue.redb"), conformance::queue::defs()).expect("open"))
}

async fn tantivy_search() -> Arc<dyn im_shared::search::Search> {
    Arc::new(im_shared::search::embedded::TantivySearch::open(&temp_dir().join("search")).expect("open"))
}

/// The tables' change feed, with the tables it records.
async fn change_feed() -> conformance::changes::Adapter {
    let tables = RedbTables::open(&temp_dir().join("tables.redb"))
        .expect("open")
        .with_change_feed(conformance::changes::keep_store_puts);
    (Arc::new(tables.clone()), Arc::new(tables))
}

mod tables {
    use super::*;
    tables_conformance!(redb_tables);
}

mod changes {
    use super::*;
    changes_conformance!(change_feed);
}

mod search {
    use super::*;
    search_conformance!(tantivy_search);
}

mod queue {
    use super::*;
    queue_conformance!(embedded_queue);
}

mod embedded_only {
    use super::*;
    use im_shared::schema::{STORE, SYNC, USER_RELATIONS};
    use im_shared::tables::{Cond, Key, Query};
    use serde_json::json;
    use std::time::Duration;

    #[tokio::test]
    async fn tables_and_queue_keep_their_data_across_a_reopen() {
        let dir = temp_dir();
        {
            let t = RedbTables::open(&dir.join("t.redb")).unwrap();
            let item = json!({"timeline_id": "g_x", "seq": 1, "text": "kept"}).as_object().unwrap().clone();
            t.put(&STORE, item, Cond::NotExists).await.unwrap();
            let q = EmbeddedQueue::open(&dir.join("q.redb"), conformance::queue::defs()).unwrap();
            q.send_batch("work", vec!["a".into(), "b".into()]).await.unwrap();
            let d = q.receive("work", 1, Duration::from_secs(600), Duration::ZERO).await.unwrap();
            assert_eq!(d.len(), 1, "one job in flight when the process 'dies'");
        }
        let t = RedbTables::open(&dir.join("t.redb")).unwrap();
        assert_eq!(
            t.get(&STORE, &Key::pk_sk("g_x", 1)).await.unwrap().unwrap().into_item().unwrap()["text"],
            json!("kept")
        );
        let q = EmbeddedQueue::open(&dir.join("q.redb"), conformance::queue::defs()).unwrap();
        assert_eq!(q.depth("work").await.unwrap().waiting, 1, "the in-flight job is still hidden");
        assert_eq!(q.release_in_flight().await.unwrap(), 1);
        let got = q.receive("work", 10, Duration::from_secs(30), Duration::ZERO).await.unwrap();
        assert_eq!(got.len(), 2, "both jobs are delivered after a restart");
        assert!(got.iter().all(|d| d.receive_count == 1), "the crash is not held against the job");
    }

    /// A receive that a crash interrupted is given back, ten times at most: a job that kills
    /// its process still reaches the DLQ. A job that failed (retry_after) is not refunded.
    #[tokio::test]
    async fn a_crash_is_not_held_against_a_job_up_to_ten_times() {
        let path = temp_dir().join("q.redb");
        EmbeddedQueue::open(&path, conformance::queue::defs())
            .unwrap()
            .send_batch("work", vec!["a".into()])
            .await
            .unwrap();
        let mut counts = Vec::new();
        for _ in 0..12 {
            let q = EmbeddedQueue::open(&path, conformance::queue::defs()).unwrap();
            q.release_in_flight().await.unwrap();
            let d = q.receive("work", 1, Duration::from_secs(600), Duration::ZERO).await.unwrap();
            counts.push(d[0].receive_count);
        } // each pass drops the queue with the job in flight: a crash
        assert_eq!(counts, [1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 2]);
        let q = EmbeddedQueue::open(&path, conformance::queue::defs()).unwrap();
        q.release_in_flight().await.unwrap();
        let d = q.receive("work", 1, Duration::from_secs(600), Duration::ZERO).await.unwrap();
        assert_eq!(d[0].receive_count, 3, "refunds are used up");
        q.retry_after("work", &d[0].receipt, Duration::from_secs(600)).await.unwrap();
        drop(q);
        let q = EmbeddedQueue::open(&path, conformance::queue::defs()).unwrap();
        q.release_in_flight().await.unwrap();
        let d = q.receive("work", 1, Duration::from_secs(600), Duration::ZERO).await.unwrap();
        assert!(d.is_empty(), "the failed third attempt counted: the job was dead-lettered");
        assert_eq!(q.depth("work-dlq").await.unwrap().waiting, 1);
    }

    /// The embedded queue never hands a message to two receivers while it is in flight.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_receivers_never_share_a_message_in_flight() {
        let all = conformance::queue::receive_concurrently(&embedded_queue().await, 60).await;
        assert_eq!(all.len(), 60, "each message received exactly once: {all:?}");
        assert_eq!(all.iter().collect::<std::collections::HashSet<_>>().len(), 60);
    }

    #[tokio::test]
    async fn the_sweeper_deletes_expired_items_only() {
        let t = RedbTables::open(&temp_dir().join("t.redb")).unwrap();
        for (seq, exp) in [(1, 100), (2, 200), (3, 300)] {
            let item = json!({"user_id": "u", "sync_seq": seq, "expires_at": exp}).as_object().unwrap().clone();
            t.put(&SYNC, item, Cond::Always).await.unwrap();
        }
        assert_eq!(t.sweep_expired(200).await.unwrap(), 2);
        let left = t.query(Query::new(&SYNC, "u")).await.unwrap().items;
        assert_eq!(left.len(), 1);
        assert_eq!(left[0].clone().into_item().unwrap()["sync_seq"], json!(3));
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(24))]

        /// Any set of sort keys, paged in any page size, comes back complete, once each, in
        /// key order forward and in reverse backward: numbers numerically, strings by bytes.
        #[test]
        fn paging_returns_every_key_once_in_order(
            nums in proptest::collection::btree_set(proptest::num::i64::ANY, 0..40),
            strs in proptest::collection::btree_set("[a-c\\x00@.é-]{0,6}", 0..30),
            page in 1usize..12,
        ) {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(async {
                let t = RedbTables::open(&temp_dir().join("p.redb")).unwrap();
                for n in &nums {
                    let item = json!({"timeline_id": "g_p", "seq": n}).as_object().unwrap().clone();
                    t.put(&STORE, item, Cond::Always).await.unwrap();
                }
                for sub in &strs {
                    let item = json!({"main_user": "u", "sub_user": sub}).as_object().unwrap().clone();
                    t.put(&USER_RELATIONS, item, Cond::Always).await.unwrap();
                }
                for forward in [true, false] {
                    let q = Query::new(&STORE, "g_p");
                    let got: Vec<i64> = all(&t, if forward { q } else { q.backward() }, page).await.iter().map(|i| i["seq"].as_i64().unwrap()).collect();
                    let mut want: Vec<i64> = nums.iter().copied().collect();
                    if !forward { want.reverse(); }
                    assert_eq!(got, want);
                    let q = Query::new(&USER_RELATIONS, "u");
                    let got: Vec<String> = all(&t, if forward { q } else { q.backward() }, page).await.iter().map(|i| i["sub_user"].as_str().unwrap().to_string()).collect();
                    let mut want: Vec<String> = strs.iter().cloned().collect();
                    if !forward { want.reverse(); }
                    assert_eq!(got, want);
                }
            });
        }
    }

    async fn all(t: &RedbTables, q: Query, page: usize) -> Vec<im_shared::tables::Item> {
        let mut out = Vec::new();
        let mut cursor = None;
        loop {
            let p = t.query(q.clone().limit(page).cursor(cursor)).await.unwrap();
            out.extend(p.items.into_iter().map(|s| s.into_item().unwrap()));
            match p.cursor {
                Some(c) => cursor = Some(c),
                None => return out,
            }
        }
    }
}
