//! The state store on a real SQLite file: migrations, transitions, the audit trail, every query.

use jumio_batchd::batch::{RejectReason, State};
use jumio_batchd::batchfs::BatchFile;
use jumio_batchd::store::{Change, Contents, Origin, Store, StoreError};
use std::collections::BTreeMap;

fn files() -> Vec<BatchFile> {
    vec![
        BatchFile { path: "input.csv".into(), size: 10, label: "input.csv".into() },
        BatchFile { path: "img/a.png".into(), size: 20, label: "the image of row 1, frontImage".into() },
    ]
}

/// A new store in its own temp dir (kept alive by the returned guard).
async fn fresh_store() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("state.db")).await.unwrap();
    (dir, store)
}

async fn insert(store: &Store, name: &str, key: &str) -> i64 {
    insert_for(store, name, key, None).await
}

async fn insert_for(store: &Store, name: &str, key: &str, tenant: Option<&str>) -> i64 {
    let files = files();
    let contents = Contents { content_key: key, rows: 1, files: 1, bytes: 30, file_list: &files, sha256: &BTreeMap::new() };
    let origin = Origin { tenant: tenant.map(str::to_owned), ..Origin::default() };
    store.insert(name, &format!("/srv/work/{name}"), &origin, &contents).await.unwrap().id
}

#[tokio::test]
async fn a_batch_walks_the_lifecycle_and_every_step_is_in_the_audit_trail() {
    let (_dir, store) = fresh_store().await;
    let id = insert(&store, "b1", "k1").await;
    let r = store.transition(id, State::Discovered, State::Validated, Change::default()).await.unwrap().unwrap();
    assert_eq!(r.state, State::Validated);
    let change = Change { remote_uuid: Some("u-1".into()), count_attempt: true, ..Change::default() };
    let r = store.transition(id, State::Validated, State::Uploading, change).await.unwrap().unwrap();
    assert_eq!((r.remote_uuid.as_deref(), r.attempts), (Some("u-1"), 1));
    assert!(r.upload_started_at.is_some());
    let later = chrono::Utc::now() + chrono::Duration::seconds(30);
    let change = Change { last_error: Some("timed out".into()), next_attempt_at: Some(later), ..Change::default() };
    let r = store.transition(id, State::Uploading, State::RetryWait, change).await.unwrap().unwrap();
    assert_eq!((r.last_error.as_deref(), r.next_attempt_at.is_some()), (Some("timed out"), true));
    // The UUID is never replaced once committed.
    let change = Change { remote_uuid: Some("u-2".into()), count_attempt: true, ..Change::default() };
    let r = store.transition(id, State::RetryWait, State::Uploading, change).await.unwrap().unwrap();
    assert_eq!((r.remote_uuid.as_deref(), r.attempts, r.last_error.as_deref()), (Some("u-1"), 2, None));
    let change = Change { remote_dir: Some("u-1".into()), fingerprint: Some("fp".into()), ..Change::default() };
    let r = store.transition(id, State::Uploading, State::Submitted, change).await.unwrap().unwrap();
    assert!(r.submitted_at.is_some());
    assert_eq!(r.fingerprint.as_deref(), Some("fp"));

    let trail: Vec<(Option<State>, State)> = store.events(id).await.unwrap().into_iter().map(|e| (e.from_state, e.to_state)).collect();
    assert_eq!(
        trail,
        [
            (None, State::Discovered),
            (Some(State::Discovered), State::Validated),
            (Some(State::Validated), State::Uploading),
            (Some(State::Uploading), State::RetryWait),
            (Some(State::RetryWait), State::Uploading),
            (Some(State::Uploading), State::Submitted)
        ]
    );
}

#[tokio::test]
async fn a_transition_from_the_wrong_state_does_nothing_and_an_illegal_one_is_an_error() {
    let (_dir, store) = fresh_store().await;
    let id = insert(&store, "b1", "k1").await;
    assert!(store.transition(id, State::Validated, State::Uploading, Change::default()).await.unwrap().is_none());
    let err = store.transition(id, State::Discovered, State::Submitted, Change::default()).await.unwrap_err();
    assert!(matches!(err, StoreError::IllegalTransition { .. }));
    assert_eq!(store.get(id).await.unwrap().unwrap().state, State::Discovered);
    assert_eq!(store.events(id).await.unwrap().len(), 1);
}

#[tokio::test]
async fn two_batches_with_the_same_content_cannot_both_start_uploading() {
    let (_dir, store) = fresh_store().await;
    let a = insert(&store, "a", "same").await;
    let b = insert(&store, "b", "same").await;
    for id in [a, b] {
        store.transition(id, State::Discovered, State::Validated, Change::default()).await.unwrap().unwrap();
    }
    let guarded =
        |uuid: &str| Change { remote_uuid: Some(uuid.into()), count_attempt: true, only_if_content_idle: true, ..Change::default() };
    assert!(store.transition(a, State::Validated, State::Uploading, guarded("ua")).await.unwrap().is_some());
    assert!(store.transition(b, State::Validated, State::Uploading, guarded("ub")).await.unwrap().is_none());
    let same: Vec<i64> = store.same_content("same", b, None).await.unwrap().iter().map(|r| r.id).collect();
    assert_eq!(same, [a]);
}

#[tokio::test]
async fn the_duplicate_guard_is_per_tenant_and_a_batch_recorded_before_tenants_counts_for_every_one() {
    let (_dir, store) = fresh_store().await;
    let amer = insert_for(&store, "a", "same", Some("t@amer:22")).await;
    let emea = insert_for(&store, "b", "same", Some("t@emea:22")).await;
    let amer_again = insert_for(&store, "c", "same", Some("t@amer:22")).await;
    for id in [amer, emea, amer_again] {
        store.transition(id, State::Discovered, State::Validated, Change::default()).await.unwrap().unwrap();
    }
    let guarded =
        |uuid: &str| Change { remote_uuid: Some(uuid.into()), count_attempt: true, only_if_content_idle: true, ..Change::default() };
    assert!(store.transition(amer, State::Validated, State::Uploading, guarded("u1")).await.unwrap().is_some());
    assert!(store.transition(emea, State::Validated, State::Uploading, guarded("u2")).await.unwrap().is_some(), "another tenant");
    assert!(store.transition(amer_again, State::Validated, State::Uploading, guarded("u3")).await.unwrap().is_none(), "same tenant");
    let ids = |v: Vec<jumio_batchd::store::BatchRecord>| v.iter().map(|r| r.id).collect::<Vec<i64>>();
    assert_eq!(ids(store.same_content("same", amer_again, Some("t@amer:22")).await.unwrap()), [amer]);
    let legacy = insert_for(&store, "old", "legacy", None).await;
    store.transition(legacy, State::Discovered, State::Validated, Change::default()).await.unwrap().unwrap();
    store.transition(legacy, State::Validated, State::Uploading, guarded("u4")).await.unwrap().unwrap();
    assert_eq!(ids(store.same_content("legacy", -1, Some("t@emea:22")).await.unwrap()), [legacy]);
}

#[tokio::test]
async fn lookups_progress_and_file_hashes() {
    let (_dir, store) = fresh_store().await;
    let a = insert(&store, "a", "k1").await;
    let b = insert(&store, "b", "k2").await;
    assert_eq!(store.find("a").await.unwrap().unwrap().id, a);
    assert_eq!(store.find(&b.to_string()).await.unwrap().unwrap().name, "b");
    assert!(store.find("nope").await.unwrap().is_none());
    assert_eq!(store.find_unfinished("/srv/work/a", "k1", None).await.unwrap().unwrap().id, a);
    assert!(store.find_unfinished("/srv/work/a", "k2", None).await.unwrap().is_none());
    assert_eq!(store.in_state(State::Discovered).await.unwrap().len(), 2);
    assert_eq!(store.counts().await.unwrap(), BTreeMap::from([(State::Discovered, 2)]));
    assert_eq!(store.recent(1).await.unwrap().len(), 1);
    store.set_bytes_sent(a, 12345).await.unwrap();
    assert_eq!(store.get(a).await.unwrap().unwrap().bytes_sent, 12345);
    store.record_shipped(a, &BTreeMap::from([("img/a.png".to_owned(), "ab".repeat(32))])).await.unwrap();
    let files = store.files(a).await.unwrap();
    assert_eq!(files, [("img/a.png".to_owned(), 20, Some("ab".repeat(32)), true), ("input.csv".to_owned(), 10, None, false)]);
}

#[tokio::test]
async fn the_store_survives_a_reopen_and_reads_while_another_connection_writes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nested/state.db");
    let store = Store::open(&path).await.unwrap();
    let id = insert(&store, "a", "k").await;
    store.close().await;
    let store = Store::open(&path).await.unwrap();
    assert_eq!(store.get(id).await.unwrap().unwrap().name, "a");
    let reader = Store::open_read_only(&path).await.unwrap();
    insert(&store, "b", "k2").await;
    assert_eq!(reader.recent(10).await.unwrap().len(), 2);
}

#[tokio::test]
async fn migrations_apply_to_the_previous_schema_keeping_its_rows() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("old.db");
    let options = sqlx::sqlite::SqliteConnectOptions::new().filename(&path).create_if_missing(true);
    let pool = sqlx::SqlitePool::connect_with(options).await.unwrap();
    // The schema as the first release left it: only the first migration, applied by sqlx.
    let v1 = dir.path().join("migrations-v1");
    std::fs::create_dir(&v1).unwrap();
    let first =
        std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/migrations/sqlite")).unwrap().flatten().map(|e| e.path()).min().unwrap();
    std::fs::copy(&first, v1.join(first.file_name().unwrap())).unwrap();
    sqlx::migrate::Migrator::new(v1.as_path()).await.unwrap().run(&pool).await.unwrap();
    sqlx::query("INSERT INTO batches (name, source_path, content_key, state, created_at, updated_at) VALUES ('old', '/x', 'k', 'submitted', '2026-01-01T00:00:00Z', '2026-01-01T00:00:00Z')")
        .execute(&pool)
        .await
        .unwrap();
    pool.close().await;
    let store = Store::open(&path).await.unwrap();
    let old = store.find("old").await.unwrap().unwrap();
    assert_eq!((old.state, old.bytes_sent, old.reject_reason, old.duplicate_of), (State::Submitted, 0, None, None));
}

#[tokio::test]
async fn a_claim_is_recorded_under_a_folder_that_carries_its_id_and_can_be_forgotten_until_it_moves_on() {
    let (_dir, store) = fresh_store().await;
    let (claimed, token) = store.claim("daily", &Origin::default(), |id| format!("/srv/work/{id}.daily")).await.unwrap();
    assert_eq!(token, None, "SQLite: the kernel lock, no lease");
    assert_eq!((claimed.name.as_str(), claimed.state), ("daily", State::Discovered));
    assert_eq!(claimed.source_path, format!("/srv/work/{}.daily", claimed.id));
    let (again, _) = store.claim("daily", &Origin::default(), |id| format!("/srv/work/{id}.daily")).await.unwrap();
    assert_ne!(again.id, claimed.id, "the same name claimed again is another batch");
    let files = files();
    store
        .record_contents(
            again.id,
            &Contents { content_key: "k", rows: 1, files: 1, bytes: 30, file_list: &files, sha256: &BTreeMap::new() },
        )
        .await
        .unwrap();
    store
        .record_contents(
            again.id,
            &Contents { content_key: "k2", rows: 1, files: 1, bytes: 30, file_list: &files, sha256: &BTreeMap::new() },
        )
        .await
        .unwrap();
    let recorded = store.get(again.id).await.unwrap().unwrap();
    assert_eq!((recorded.content_key.as_str(), recorded.bytes, store.files(again.id).await.unwrap().len()), ("k2", 30, 2));
    assert!(store.forget_unclaimed(claimed.id).await.unwrap());
    assert!(store.get(claimed.id).await.unwrap().is_none());
    store.transition(again.id, State::Discovered, State::Validated, Change::default()).await.unwrap().unwrap();
    assert!(!store.forget_unclaimed(again.id).await.unwrap(), "only a claim still discovered is forgotten");
}

#[tokio::test]
async fn why_a_batch_was_rejected_is_a_field_of_its_record() {
    let (_dir, store) = fresh_store().await;
    let original = insert(&store, "a", "same").await;
    let copy = insert(&store, "b", "same").await;
    let change = Change { reject_reason: Some(RejectReason::Duplicate), duplicate_of: Some(original), ..Change::default() };
    let r = store.transition(copy, State::Discovered, State::Rejected, change).await.unwrap().unwrap();
    assert_eq!((r.reject_reason, r.duplicate_of), (Some(RejectReason::Duplicate), Some(original)));
    let change = Change { reject_reason: Some(RejectReason::Invalid), ..Change::default() };
    let r = store.transition(original, State::Discovered, State::Rejected, change).await.unwrap().unwrap();
    assert_eq!((r.reject_reason, r.duplicate_of), (Some(RejectReason::Invalid), None));
}
