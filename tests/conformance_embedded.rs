//! The port conformance suites against the embedded adapters (redb files in temporary
//! directories), plus what only the embedded adapters promise: persistence across a reopen,
//! TTL sweeping, and releasing a dead process's in-flight jobs.

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

mod tables {
    use super::*;
    tables_conformance!(redb_tables);
}

mod queue {
    use super::*;
    queue_conformance!(embedded_queue);
}

mod embedded_only {
    use super::*;
    use im_shared::schema::{STORE, SYNC};
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
        assert_eq!(t.get(&STORE, &Key::pk_sk("g_x", 1)).await.unwrap().unwrap()["text"], json!("kept"));
        let q = EmbeddedQueue::open(&dir.join("q.redb"), conformance::queue::defs()).unwrap();
        assert_eq!(q.depth("work").await.unwrap().waiting, 1, "the in-flight job is still hidden");
        assert_eq!(q.release_in_flight().await.unwrap(), 1);
        let got = q.receive("work", 10, Duration::from_secs(30), Duration::ZERO).await.unwrap();
        assert_eq!(got.len(), 2, "both jobs are delivered after a restart");
        assert!(got.iter().any(|d| d.receive_count == 2), "the released job keeps its receive count");
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
        assert_eq!(left[0]["sync_seq"], json!(3));
    }
}
