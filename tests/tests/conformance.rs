//! The contract of `CheckpointStore`, written once and run against every store: creating,
//! appending (atomic, checked against the journal's length and the writer's fencing epoch),
//! loading, listing with filters and pages, claiming with leases, renewing, releasing, and
//! what a store says about bad input. A store that passes this suite can carry the runtime.

use std::future::Future;
use std::sync::Arc;

#[path = "common/pg.rs"]
mod pg;

use saga_runtime::prelude::*;
use saga_runtime::store::{
    Checkpoint, Claim, ClaimRequest, Created, Fence, NewRequest, NewSaga, Order, PostgresStore, PruneCursor,
    PruneQuery, RecordRow, RequestAction, RequestState, SagaKind, SagaQuery, SqliteStore, StoreError, StoredDefinition,
    Tombstone,
};
use serde::{Deserialize, Serialize};

/// Runs the suite on fresh stores made by `make`.
async fn conformance<S, F, Fut>(make: F)
where
    S: CheckpointStore,
    F: Fn() -> Fut,
    Fut: Future<Output = (S, Box<dyn std::any::Any>)>,
{
    type Case = fn(Arc<dyn CheckpointStore>) -> saga_runtime::BoxFuture<'static, ()>;
    let cases: Vec<(&str, Case)> = vec![
        ("create_and_load", |s| Box::pin(create_and_load(s))),
        ("create_is_idempotent", |s| Box::pin(create_is_idempotent(s))),
        ("append_checks_sequence_and_epoch", |s| Box::pin(append_checks_sequence_and_epoch(s))),
        ("append_is_atomic", |s| Box::pin(append_is_atomic(s))),
        ("list_filters_orders_and_pages", |s| Box::pin(list_filters_orders_and_pages(s))),
        ("claim_takes_due_free_sagas_of_the_kinds", |s| Box::pin(claim_takes_due_free_sagas_of_the_kinds(s))),
        ("claim_saga_respects_live_leases", |s| Box::pin(claim_saga_respects_live_leases(s))),
        ("renew_and_release", |s| Box::pin(renew_and_release(s))),
        ("a_settled_checkpoint_ends_the_claim", |s| Box::pin(a_settled_checkpoint_ends_the_claim(s))),
        ("racing_appends_one_wins", |s| Box::pin(racing_appends_one_wins(s))),
        ("a_sweep_item_is_locked_by_one_at_a_time", |s| Box::pin(a_sweep_item_is_locked_by_one_at_a_time(s))),
        ("pruning_takes_finished_sagas_only_and_leaves_tombstones", |s| {
            Box::pin(pruning_takes_finished_sagas_only_and_leaves_tombstones(s))
        }),
        ("definitions_are_kept_once_per_fingerprint", |s| Box::pin(definitions_are_kept_once_per_fingerprint(s))),
        ("requests_are_taken_by_one_owner_of_their_kind", |s| {
            Box::pin(requests_are_taken_by_one_owner_of_their_kind(s))
        }),
    ];
    for (name, case) in cases {
        let (store, _guard) = make().await;
        let store: Arc<dyn CheckpointStore> = Arc::new(store);
        eprintln!("conformance: {name}");
        case(store).await;
    }
}

const NOW: u64 = 1_700_000_000_000;

fn row(seq: u64, epoch: u64, kind: &str) -> RecordRow {
    RecordRow::new(
        seq,
        NOW + seq,
        epoch,
        kind.to_owned(),
        Some("step"),
        vec![0, b'{', b'}', seq as u8],
        [seq as u8; 32],
    )
}

fn checkpoint(status: Status, stage: &str, head: u8, due_at_ms: Option<u64>) -> Checkpoint {
    let mut checkpoint = Checkpoint::new(status, stage, [head; 32], due_at_ms, NOW + 100);
    checkpoint.at_ms = NOW + u64::from(head);
    checkpoint
}

fn new_saga(id: &str, name: &str, created_at: u64, owner: &str) -> NewSaga {
    let mut records = vec![row(0, 1, "started"), row(1, 1, "attempt_started")];
    for r in &mut records {
        r.at_ms = created_at + r.seq;
    }
    NewSaga::new(
        SagaId::new(id),
        name,
        1,
        "fp-1",
        vec![0, b'{', b'}'],
        records,
        checkpoint(Status::Running, "first", 1, Some(0)),
        Some(owner.to_owned()),
        NOW + 30_000,
    )
}

async fn create(store: &Arc<dyn CheckpointStore>, id: &str) -> Fence {
    match store.create(new_saga(id, "order", NOW, "worker-a")).await.unwrap() {
        Created::New(fence) => fence,
        other => panic!("expected a new saga, got {other:?}"),
    }
}

async fn create_and_load(store: Arc<dyn CheckpointStore>) {
    let fence = create(&store, "s1").await;
    assert_eq!(fence, Fence::new("worker-a", 1), "the creator holds the first claim");
    let stored = store.load(&SagaId::new("s1")).await.unwrap().expect("stored");
    let summary = &stored.summary;
    assert_eq!(
        (summary.id.as_str(), summary.name.as_str(), summary.version, summary.fingerprint.as_str()),
        ("s1", "order", 1, "fp-1")
    );
    assert_eq!((summary.status, summary.stage.as_str(), summary.records), (Status::Running, "first", 2));
    assert_eq!((summary.head, summary.due_at_ms, summary.epoch), ([1; 32], Some(0), 1));
    assert_eq!((summary.owner.as_deref(), summary.lease_until_ms), (Some("worker-a"), Some(NOW + 30_000)));
    assert_eq!(summary.created_at_ms, NOW);
    assert_eq!(stored.input, vec![0, b'{', b'}']);
    assert_eq!(stored.records, vec![row(0, 1, "started"), row(1, 1, "attempt_started")]);
    assert!(store.load(&SagaId::new("nope")).await.unwrap().is_none(), "an unknown id is None");
}

async fn create_is_idempotent(store: Arc<dyn CheckpointStore>) {
    create(&store, "s1").await;
    let mut again = new_saga("s1", "other-name", NOW + 5, "worker-b");
    again.input = vec![0, b'[', b']'];
    let Created::Existing(existing) = store.create(again).await.unwrap() else { panic!("the id exists") };
    assert_eq!(existing.summary.name, "order", "the stored saga, not the new one");
    assert_eq!(existing.summary.owner.as_deref(), Some("worker-a"), "nothing was claimed");
    assert_eq!(existing.summary.epoch, 1);
    assert_eq!(existing.records.len(), 2, "nothing was written");
}

async fn append_checks_sequence_and_epoch(store: Arc<dyn CheckpointStore>) {
    let fence = create(&store, "s1").await;
    let id = SagaId::new("s1");
    store
        .append(
            &id,
            &fence,
            vec![row(2, 1, "step_completed"), row(3, 1, "attempt_started")],
            checkpoint(Status::Running, "second", 3, Some(0)),
        )
        .await
        .unwrap();
    let error = store
        .append(&id, &fence, vec![row(2, 1, "step_completed")], checkpoint(Status::Running, "x", 9, Some(0)))
        .await
        .unwrap_err();
    assert!(matches!(error, StoreError::Conflict { expected: 2, found: 4, .. }), "{error}");
    assert!(error.is_lost_claim());
    let stale = Fence::new("worker-a", 0);
    let error = store
        .append(&id, &stale, vec![row(4, 0, "step_completed")], checkpoint(Status::Running, "x", 9, Some(0)))
        .await
        .unwrap_err();
    assert!(matches!(error, StoreError::Fenced { epoch: 0, current: 1, .. }), "{error}");
    assert!(error.to_string().contains("was taken over"), "{error}");
    let error = store
        .append(&SagaId::new("nope"), &fence, vec![row(0, 1, "started")], checkpoint(Status::Running, "x", 9, Some(0)))
        .await
        .unwrap_err();
    assert!(matches!(error, StoreError::Missing { .. }), "{error}");
    let stored = store.load(&id).await.unwrap().unwrap();
    assert_eq!(stored.records.len(), 4, "only the accepted batch was written");
    assert_eq!((stored.summary.stage.as_str(), stored.summary.head, stored.summary.records), ("second", [3; 32], 4));
    assert_eq!(stored.summary.updated_at_ms, NOW + 3);
}

async fn append_is_atomic(store: Arc<dyn CheckpointStore>) {
    let fence = create(&store, "s1").await;
    let id = SagaId::new("s1");
    // A batch whose first record is out of place writes none of its records nor its checkpoint.
    let error = store
        .append(
            &id,
            &fence,
            vec![row(3, 1, "a"), row(4, 1, "b"), row(5, 1, "c")],
            checkpoint(Status::Completed, "done", 5, None),
        )
        .await
        .unwrap_err();
    assert!(matches!(error, StoreError::Conflict { .. }));
    let stored = store.load(&id).await.unwrap().unwrap();
    assert_eq!(
        (stored.records.len(), stored.summary.status, stored.summary.stage.as_str()),
        (2, Status::Running, "first")
    );
}

async fn list_filters_orders_and_pages(store: Arc<dyn CheckpointStore>) {
    for (i, (id, name)) in
        [("a", "order"), ("b", "refund"), ("c", "order"), ("d", "order"), ("e", "refund")].iter().enumerate()
    {
        let mut saga = new_saga(id, name, NOW + i as u64 * 1_000, "worker-a");
        saga.checkpoint = checkpoint(Status::Running, "first", 1, Some(0));
        let Created::New(fence) = store.create(saga).await.unwrap() else { panic!() };
        if *id == "c" || *id == "e" {
            store
                .append(
                    &SagaId::new(*id),
                    &fence,
                    vec![row(2, 1, "finished")],
                    checkpoint(Status::Completed, "completed", 2, None),
                )
                .await
                .unwrap();
        }
    }
    let ids = |page: &saga_runtime::store::SagaPage| page.sagas.iter().map(|s| s.id.to_string()).collect::<Vec<_>>();
    let all = store.list(&SagaQuery::new()).await.unwrap();
    assert_eq!(ids(&all), ["a", "b", "c", "d", "e"]);
    assert_eq!(all.next, None, "one page holds them all");
    let newest = store.list(&SagaQuery::new().order(Order::NewestFirst)).await.unwrap();
    assert_eq!(ids(&newest), ["e", "d", "c", "b", "a"]);
    let orders = store.list(&SagaQuery::new().name("order")).await.unwrap();
    assert_eq!(ids(&orders), ["a", "c", "d"]);
    let completed = store.list(&SagaQuery::new().status(Status::Completed)).await.unwrap();
    assert_eq!(ids(&completed), ["c", "e"]);
    assert_eq!(completed.sagas[0].stage, "completed");
    let since = store.list(&SagaQuery::new().since_ms(NOW + 2_000)).await.unwrap();
    assert_eq!(ids(&since), ["c", "d", "e"]);
    let both = store.list(&SagaQuery::new().name("refund").status(Status::Running)).await.unwrap();
    assert_eq!(ids(&both), ["b"]);

    // Pages of two, both ways, each starting after the previous page's cursor.
    for (order, expected) in
        [(Order::OldestFirst, ["a", "b", "c", "d", "e"]), (Order::NewestFirst, ["e", "d", "c", "b", "a"])]
    {
        let mut seen = Vec::new();
        let mut query = SagaQuery::new().order(order).limit(2);
        let mut pages = 0;
        loop {
            let page = store.list(&query).await.unwrap();
            pages += 1;
            assert!(page.sagas.len() <= 2);
            seen.extend(ids(&page));
            match page.next {
                Some(cursor) => query = query.after(cursor),
                None => break,
            }
        }
        assert_eq!(seen, expected, "{order:?}");
        assert!(pages >= 3, "{order:?}: {pages} pages");
    }
    let filtered_pages = store.list(&SagaQuery::new().name("order").limit(2)).await.unwrap();
    assert_eq!(ids(&filtered_pages), ["a", "c"]);
    let rest = store.list(&SagaQuery::new().name("order").limit(2).after(filtered_pages.next.unwrap())).await.unwrap();
    assert_eq!(ids(&rest), ["d"]);
}

fn kinds() -> Vec<SagaKind> {
    vec![SagaKind { name: "order".into(), fingerprint: "fp-1".into() }]
}

async fn claim_takes_due_free_sagas_of_the_kinds(store: Arc<dyn CheckpointStore>) {
    // Five sagas: two due now, one due later, one of another kind, one finished.
    let setups: [(&str, &str, Option<u64>, Status); 5] = [
        ("due-1", "order", Some(0), Status::Running),
        ("due-2", "order", Some(NOW - 10), Status::Running),
        ("later", "order", Some(NOW + 60_000), Status::Running),
        ("foreign", "refund", Some(0), Status::Running),
        ("done", "order", None, Status::Completed),
    ];
    for (id, name, due, status) in setups {
        let Created::New(fence) = store.create(new_saga(id, name, NOW, "creator")).await.unwrap() else { panic!() };
        store.append(&SagaId::new(id), &fence, vec![row(2, 1, "x")], checkpoint(status, "s", 2, due)).await.unwrap();
        store.release(&SagaId::new(id), &fence).await.unwrap();
    }
    let mut request = ClaimRequest::new("worker-b", kinds(), NOW, NOW + 30_000);
    let claimed = store.claim(&request).await.unwrap();
    let ids: Vec<&str> = claimed.iter().map(|c| c.id.as_str()).collect();
    assert_eq!(ids, ["due-1", "due-2"], "due now, of the kinds requested, earliest due first");
    assert!(claimed.iter().all(|c| c.fence == Fence::new("worker-b", 2) && c.kind == kinds()[0]), "{claimed:?}");
    let stored = store.load(&SagaId::new("due-1")).await.unwrap().unwrap().summary;
    assert_eq!(
        (stored.owner.as_deref(), stored.lease_until_ms, stored.epoch),
        (Some("worker-b"), Some(NOW + 30_000), 2)
    );

    request.owner = "worker-c".into();
    assert!(store.claim(&request).await.unwrap().is_empty(), "held sagas are not claimed again");
    request.due_by_ms = None;
    let claimed = store.claim(&request).await.unwrap();
    assert_eq!(
        claimed.iter().map(|c| c.id.as_str()).collect::<Vec<_>>(),
        ["later"],
        "with no due bound, any saga with work"
    );
    // When the leases end, another worker takes over (a dead worker's sagas).
    let mut after_expiry = ClaimRequest::new("worker-d", kinds(), NOW + 31_000, NOW + 61_000);
    after_expiry.limit = 1;
    after_expiry.skip = vec![SagaId::new("due-1")];
    let claimed = store.claim(&after_expiry).await.unwrap();
    assert_eq!(
        claimed.iter().map(|c| (c.id.as_str(), c.fence.epoch)).collect::<Vec<_>>(),
        [("due-2", 3)],
        "skip and limit"
    );
    let empty = ClaimRequest::new("worker-e", Vec::new(), NOW, NOW + 1);
    assert!(store.claim(&empty).await.unwrap().is_empty(), "no kinds, no claims");
}

async fn claim_saga_respects_live_leases(store: Arc<dyn CheckpointStore>) {
    create(&store, "s1").await;
    let id = SagaId::new("s1");
    let held = store.claim_saga(&id, "worker-b", NOW, NOW + 30_000).await.unwrap();
    assert_eq!(held, Claim::Held { owner: "worker-a".into(), lease_until_ms: NOW + 30_000 });
    let again = store.claim_saga(&id, "worker-a", NOW, NOW + 40_000).await.unwrap();
    assert_eq!(again, Claim::Acquired(Fence::new("worker-a", 2)), "an owner's own claim is renewed with a new epoch");
    let taken = store.claim_saga(&id, "worker-b", NOW + 40_001, NOW + 70_000).await.unwrap();
    assert_eq!(taken, Claim::Acquired(Fence::new("worker-b", 3)), "an expired lease is taken over");
    let error = store
        .append(&id, &Fence::new("worker-a", 2), vec![row(2, 2, "x")], checkpoint(Status::Running, "x", 2, Some(0)))
        .await
        .unwrap_err();
    assert!(matches!(error, StoreError::Fenced { epoch: 2, current: 3, .. }), "the old owner is fenced: {error}");
    assert_eq!(store.claim_saga(&SagaId::new("nope"), "worker-b", NOW, NOW).await.unwrap(), Claim::Missing);
}

async fn renew_and_release(store: Arc<dyn CheckpointStore>) {
    let fence = create(&store, "s1").await;
    create(&store, "s2").await;
    let Created::New(_) = store.create(new_saga("s3", "order", NOW, "worker-z")).await.unwrap() else { panic!() };
    assert_eq!(store.renew("worker-a", NOW + 90_000).await.unwrap(), 2, "every saga the owner holds");
    for (id, until) in [("s1", NOW + 90_000), ("s2", NOW + 90_000), ("s3", NOW + 30_000)] {
        assert_eq!(store.load(&SagaId::new(id)).await.unwrap().unwrap().summary.lease_until_ms, Some(until), "{id}");
    }
    store.release(&SagaId::new("s1"), &Fence::new("worker-a", 7)).await.unwrap();
    let after_wrong = store.load(&SagaId::new("s1")).await.unwrap().unwrap().summary;
    assert_eq!(after_wrong.owner.as_deref(), Some("worker-a"), "a release with another epoch does nothing");
    store.release(&SagaId::new("s1"), &fence).await.unwrap();
    let released = store.load(&SagaId::new("s1")).await.unwrap().unwrap().summary;
    assert_eq!((released.owner, released.lease_until_ms, released.epoch), (None, None, 1));
    assert_eq!(
        store.claim_saga(&SagaId::new("s1"), "worker-b", NOW, NOW + 1).await.unwrap(),
        Claim::Acquired(Fence::new("worker-b", 2)),
        "a released saga is free at once"
    );
}

async fn a_settled_checkpoint_ends_the_claim(store: Arc<dyn CheckpointStore>) {
    let fence = create(&store, "s1").await;
    let id = SagaId::new("s1");
    store
        .append(&id, &fence, vec![row(2, 1, "finished")], checkpoint(Status::Completed, "completed", 2, None))
        .await
        .unwrap();
    let summary = store.load(&id).await.unwrap().unwrap().summary;
    assert_eq!(
        (summary.status, summary.due_at_ms, summary.owner, summary.lease_until_ms),
        (Status::Completed, None, None, None)
    );
    let mut request = ClaimRequest::new("worker-b", kinds(), NOW, NOW + 1);
    request.due_by_ms = None;
    assert!(store.claim(&request).await.unwrap().is_empty(), "a settled saga has nothing to claim");
}

async fn racing_appends_one_wins(store: Arc<dyn CheckpointStore>) {
    let fence = create(&store, "s1").await;
    let id = SagaId::new("s1");
    let attempts = (0..8).map(|n| {
        let (store, id, fence) = (store.clone(), id.clone(), fence.clone());
        async move {
            store
                .append(
                    &id,
                    &fence,
                    vec![row(2, 1, &format!("writer-{n}"))],
                    checkpoint(Status::Running, "x", 2, Some(0)),
                )
                .await
        }
    });
    let results = futures::future::join_all(attempts).await;
    assert_eq!(results.iter().filter(|r| r.is_ok()).count(), 1, "one writer wins");
    assert!(results.iter().filter_map(|r| r.as_ref().err()).all(|e| matches!(e, StoreError::Conflict { .. })));
    assert_eq!(store.load(&id).await.unwrap().unwrap().records.len(), 3);
}

async fn a_sweep_item_is_locked_by_one_at_a_time(store: Arc<dyn CheckpointStore>) {
    let first = store.lock_item("orphan file x").await.unwrap();
    assert!(first.is_some(), "a free item is locked");
    assert!(store.lock_item("orphan file x").await.unwrap().is_none(), "a held item is not");
    assert!(store.lock_item("orphan file y").await.unwrap().is_some(), "another item is free");
    drop(first);
    // A store may free the item in the background (PostgreSQL unlocks on a task).
    let mut again = None;
    for _ in 0..100 {
        again = store.lock_item("orphan file x").await.unwrap();
        if again.is_some() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert!(again.is_some(), "a dropped lock frees the item");
}

/// Pruning: only finished sagas (completed, compensated) are ever offered, oldest finished
/// first, by age or by rank among the finished; a pruned saga is gone with its journal and its
/// tombstone keeps the id from being created again until it expires; a saga that changed since
/// it was read, or is not finished, is not deleted.
async fn pruning_takes_finished_sagas_only_and_leaves_tombstones(store: Arc<dyn CheckpointStore>) {
    // (id, status, finish time = NOW + head, due)
    let setups: [(&str, Status, u8, Option<u64>); 6] = [
        ("a", Status::Completed, 2, None),
        ("b", Status::Compensated, 3, None),
        ("c", Status::Running, 4, Some(0)),
        ("d", Status::NeedsHuman, 5, None),
        ("e", Status::Completed, 6, None),
        ("f", Status::Completed, 7, None),
    ];
    for (id, status, head, due) in setups {
        let Created::New(fence) = store.create(new_saga(id, "order", NOW, "worker-a")).await.unwrap() else { panic!() };
        store.append(&SagaId::new(id), &fence, vec![row(2, 1, "x")], checkpoint(status, "s", head, due)).await.unwrap();
    }
    let ids =
        |sagas: &[saga_runtime::store::StoredSaga]| sagas.iter().map(|s| s.summary.id.to_string()).collect::<Vec<_>>();
    let by_age = PruneQuery::new(Some(NOW + 7), None);
    let old = store.prunable(&by_age).await.unwrap();
    assert_eq!(ids(&old), ["a", "b", "e"], "finished before NOW+7, oldest first; never running or parked");
    assert!(old.iter().all(|s| s.records.is_empty() && s.input == vec![0, b'{', b'}']), "inputs, not journals");
    let mut with_journals = by_age.clone();
    with_journals.journals = true;
    with_journals.limit = 2;
    let first = store.prunable(&with_journals).await.unwrap();
    assert_eq!(ids(&first), ["a", "b"], "a page of two");
    assert_eq!(first[0].records, vec![row(0, 1, "started"), row(1, 1, "attempt_started"), row(2, 1, "x")]);
    with_journals.after = Some(PruneCursor::of(&first[1].summary));
    assert_eq!(ids(&store.prunable(&with_journals).await.unwrap()), ["e"], "the next page");

    let nth = |n: u64| {
        let store = store.clone();
        async move { store.nth_newest_finished(n).await.unwrap().map(|c| c.id.to_string()) }
    };
    assert_eq!(
        (nth(0).await, nth(1).await, nth(2).await, nth(3).await, nth(4).await),
        (Some("f".into()), Some("e".into()), Some("b".into()), Some("a".into()), None),
        "ranked among the finished only, newest first"
    );
    let beyond_two = store.nth_newest_finished(2).await.unwrap();
    assert_eq!(beyond_two.as_ref().map(|c| c.finished_at_ms), Some(NOW + 3));
    assert_eq!(ids(&store.prunable(&PruneQuery::new(None, beyond_two.clone())).await.unwrap()), ["a", "b"]);
    assert_eq!(
        ids(&store.prunable(&PruneQuery::new(Some(NOW + 7), beyond_two)).await.unwrap()),
        ["a", "b", "e"],
        "either bound prunes"
    );
    assert!(store.prunable(&PruneQuery::new(None, None)).await.unwrap().is_empty(), "no bound, nothing");

    // Tombstones: for a and b as read; one for c (running), one for e with a stale head.
    let summary = |id: &str| {
        let store = store.clone();
        let id = SagaId::new(id);
        async move { store.summary(&id).await.unwrap().unwrap() }
    };
    let mut stones = Vec::new();
    for (id, pruned_at) in [("a", NOW + 100), ("b", NOW + 200), ("c", NOW + 300), ("e", NOW + 400)] {
        let mut stone = Tombstone::of(&summary(id).await, [id.as_bytes()[0]; 32], pruned_at);
        if id == "e" {
            stone.head = [0xee; 32];
        }
        stones.push(stone);
    }
    let kept_stone_a = stones[0].clone();
    let pruned = store.prune(stones).await.unwrap();
    assert_eq!(pruned, [SagaId::new("a"), SagaId::new("b")], "not a running saga, not a saga that changed");
    assert!(store.load(&SagaId::new("a")).await.unwrap().is_none(), "gone with its journal");
    assert_eq!(store.tombstone(&SagaId::new("a")).await.unwrap(), Some(kept_stone_a.clone()));
    assert_eq!(store.tombstone(&SagaId::new("c")).await.unwrap(), None);
    assert_eq!(
        store.list(&SagaQuery::new()).await.unwrap().sagas.iter().map(|s| s.id.to_string()).collect::<Vec<_>>(),
        ["c", "d", "e", "f"]
    );
    let Created::Pruned(stone) = store.create(new_saga("a", "order", NOW + 500, "worker-b")).await.unwrap() else {
        panic!("a pruned id is not created again")
    };
    assert_eq!(*stone, kept_stone_a);
    assert!(store.load(&SagaId::new("a")).await.unwrap().is_none(), "nothing was written");
    let again = Tombstone::of(&summary("d").await, [0; 32], NOW);
    assert!(store.prune(vec![again]).await.unwrap().is_empty(), "a parked saga is never pruned");
    assert!(store.prune(Vec::new()).await.unwrap().is_empty());

    assert_eq!(store.expire_tombstones(NOW + 150, 10).await.unwrap(), 1, "a's only");
    assert_eq!(store.tombstone(&SagaId::new("a")).await.unwrap(), None);
    assert!(store.tombstone(&SagaId::new("b")).await.unwrap().is_some());
    assert!(
        matches!(store.create(new_saga("a", "order", NOW + 600, "worker-b")).await.unwrap(), Created::New(_)),
        "an expired tombstone frees the id"
    );
}

/// A saga type, for its definition.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Parcel;

#[saga]
impl Parcel {
    #[step(compensate = unbook)]
    async fn book(&self, _cx: &StepContext) -> StepResult<u32> {
        Ok(7)
    }
    async fn unbook(&self, _cx: &StepContext, _slot: &u32) -> StepResult<()> {
        Ok(())
    }
    #[step(commit)]
    async fn ship(&self, _cx: &StepContext, book: &u32) -> StepResult<u32> {
        Ok(*book)
    }
}

/// What the runtimes registered, for tools without the code: saved once per name and
/// fingerprint, read back whole.
async fn definitions_are_kept_once_per_fingerprint(store: Arc<dyn CheckpointStore>) {
    assert_eq!(store.definitions().await.unwrap(), []);
    let parcel = StoredDefinition::of(Parcel::definition());
    store.save_definition(parcel.clone()).await.unwrap();
    store.save_definition(parcel.clone()).await.unwrap();
    let kept = store.definitions().await.unwrap();
    assert_eq!(kept, std::slice::from_ref(&parcel));
    let steps: Vec<(&str, &str, Option<&str>)> =
        kept[0].steps.iter().map(|s| (s.name.as_str(), s.kind.as_str(), s.compensation.as_deref())).collect();
    assert_eq!(steps, [("book", "compensable", Some("unbook")), ("ship", "commit", None)]);
    assert_eq!(kept[0].commit_index(), Some(1));
}

/// Operators' requests: taken oldest first by an owner that registers the saga's kind (a sweep
/// by any owner), by one owner at a time, offered again when its taker did not finish it within
/// a minute, and listed newest first with how each ended.
async fn requests_are_taken_by_one_owner_of_their_kind(store: Arc<dyn CheckpointStore>) {
    let order = Some(("order".to_owned(), "fp-1".to_owned()));
    let invoice = Some(("invoice".to_owned(), "fp-9".to_owned()));
    let resolve = store
        .submit(NewRequest::new(RequestAction::Resolve, Some(SagaId::new("o-1")), order, "refunded by hand", NOW))
        .await
        .unwrap();
    let cancel = store
        .submit(NewRequest::new(RequestAction::Cancel, Some(SagaId::new("i-1")), invoice, "wrong customer", NOW + 1))
        .await
        .unwrap();
    let sweep = store.submit(NewRequest::new(RequestAction::Sweep, None, None, "", NOW + 2)).await.unwrap();
    assert!(resolve < cancel && cancel < sweep, "ids grow: {resolve} {cancel} {sweep}");

    // w1 registers `order` only: the resolve and the sweep are its, the cancel is not.
    let taken = store.take_requests("w1", &kinds(), 10, NOW + 10).await.unwrap();
    // (id, action, saga, note, state, taken by)
    type Seen<'a> = (u64, RequestAction, Option<&'a str>, &'a str, RequestState, Option<&'a str>);
    let seen: Vec<Seen<'_>> = taken
        .iter()
        .map(|r| {
            (r.id, r.action, r.saga_id.as_ref().map(SagaId::as_str), r.note.as_str(), r.state, r.taken_by.as_deref())
        })
        .collect();
    assert_eq!(
        seen,
        [
            (resolve, RequestAction::Resolve, Some("o-1"), "refunded by hand", RequestState::Taken, Some("w1")),
            (sweep, RequestAction::Sweep, None, "", RequestState::Taken, Some("w1")),
        ]
    );
    assert_eq!(taken[0].requested_at_ms, NOW);
    // Taken: nobody else gets them while the taker may still be at work.
    assert_eq!(store.take_requests("w2", &kinds(), 10, NOW + 20).await.unwrap(), []);

    // w1 finishes the resolve and dies before the sweep: the sweep is offered again a minute on.
    store
        .finish_request(resolve, RequestState::Done, "resolve: the saga is compensated now".into(), NOW + 30)
        .await
        .unwrap();
    assert_eq!(store.take_requests("w2", &kinds(), 10, NOW + 10 + 59_999).await.unwrap(), []);
    let retaken = store.take_requests("w2", &kinds(), 10, NOW + 10 + 60_000).await.unwrap();
    assert_eq!(retaken.iter().map(|r| (r.id, r.taken_by.as_deref())).collect::<Vec<_>>(), [(sweep, Some("w2"))]);
    store
        .finish_request(sweep, RequestState::Failed, "sweep: the code host is down".into(), NOW + 60_020)
        .await
        .unwrap();

    let listed = store.requests(10).await.unwrap();
    let states: Vec<(u64, RequestState, Option<&str>, Option<u64>)> =
        listed.iter().map(|r| (r.id, r.state, r.result.as_deref(), r.done_at_ms)).collect();
    assert_eq!(
        states,
        [
            (sweep, RequestState::Failed, Some("sweep: the code host is down"), Some(NOW + 60_020)),
            (cancel, RequestState::Pending, None, None),
            (resolve, RequestState::Done, Some("resolve: the saga is compensated now"), Some(NOW + 30)),
        ]
    );
    assert_eq!(store.requests(1).await.unwrap().len(), 1);
    // A finished request is never taken again; the cancel waits for an owner of `invoice`.
    let invoices = vec![SagaKind { name: "invoice".into(), fingerprint: "fp-9".into() }];
    assert_eq!(store.take_requests("w3", &kinds(), 10, NOW + 500_000).await.unwrap(), []);
    let theirs = store.take_requests("w3", &invoices, 10, NOW + 500_000).await.unwrap();
    assert_eq!(theirs.iter().map(|r| r.id).collect::<Vec<_>>(), [cancel]);
}

#[tokio::test]
async fn the_memory_store_conforms() {
    conformance(|| async { (MemoryStore::new(), Box::new(()) as Box<dyn std::any::Any>) }).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sqlite_store_conforms() {
    conformance(|| async {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path().join("conformance.db")).await.unwrap();
        (store, Box::new(dir) as Box<dyn std::any::Any>)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_postgres_store_conforms() {
    conformance(|| async {
        let db = pg::ScratchDb::new().await;
        let store = PostgresStore::connect(db.url.clone()).await.unwrap();
        (store, Box::new(db) as Box<dyn std::any::Any>)
    })
    .await;
}
