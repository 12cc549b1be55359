use super::*;
use std::sync::Arc;

fn temp_journal(options: JournalOptions) -> (tempfile::TempDir, Journal) {
    let dir = tempfile::tempdir().expect("tempdir");
    let journal = Journal::open(&dir.path().join("journal.db"), options).expect("open");
    (dir, journal)
}

fn payment(n: u8, network: &str, valid_before: u64) -> NewPayment {
    let nonce = format!("0x{}", format!("{n:02x}").repeat(32));
    NewPayment {
        receipt_id: format!("receipt-{network}-{n}"),
        route: "weather".into(),
        amount: "1000".into(),
        payer: "0x00000000000000000000000000000000000000A1".into(),
        nonce: nonce.clone(),
        usd_micros: 1000,
        item: SettlementItem {
            network: network.into(),
            chain_id: 84532,
            asset: "0x036CbD53842c5426634e7929541eC2318f3dCF7e".into(),
            payload: ExactEvmPayload {
                signature: "0xsig".into(),
                authorization: ExactEvmAuthorization {
                    from: "0x00000000000000000000000000000000000000a1".into(),
                    to: "0x00000000000000000000000000000000000000b2".into(),
                    value: "1000".into(),
                    valid_after: "0".into(),
                    valid_before: valid_before.to_string(),
                    nonce,
                },
            },
            valid_before,
        },
    }
}

fn block_on<F: Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread().build().expect("runtime").block_on(future)
}

#[test]
fn accepted_is_earliest_deadline_first_per_network() {
    let (_dir, journal) = temp_journal(JournalOptions::default());
    block_on(async {
        let late = journal.record(payment(1, "eip155:1", 300)).await.unwrap();
        let early = journal.record(payment(2, "eip155:1", 100)).await.unwrap();
        journal.record(payment(3, "eip155:2", 50)).await.unwrap();
        let ids: Vec<u64> = journal.accepted("eip155:1", 10).unwrap().iter().map(|r| r.id).collect();
        assert_eq!(ids, vec![early, late]);
        assert_eq!(journal.accepted("eip155:1", 1).unwrap().len(), 1);
        journal.set_state(early, PaymentState::Settled { transaction: "0xabc".into() }).await.unwrap();
        assert_eq!(journal.accepted("eip155:1", 10).unwrap().len(), 1);
        assert_eq!(journal.unsettled_count().unwrap(), 2);
        assert_eq!(journal.unsettled_deadlines("eip155:1").unwrap(), vec![300], "settled payments are not backlog");
        assert_eq!(journal.unsettled_deadlines("eip155:2").unwrap(), vec![50]);
        assert_eq!(journal.counts().unwrap().get("settled"), Some(&1));
    });
}

#[test]
fn a_record_round_trips_every_field() {
    let (_dir, journal) = temp_journal(JournalOptions::default());
    let new = payment(7, "eip155:84532", 4_000_000_000);
    let id = block_on(journal.record(new.clone())).unwrap();
    let record = journal.by_receipt(&new.receipt_id).unwrap().expect("found");
    assert_eq!(record.id, id);
    assert_eq!(record.item, new.item);
    assert_eq!((record.route.as_str(), record.amount.as_str(), record.payer.as_str()), ("weather", "1000", new.payer.as_str()));
    assert_eq!(record.state, PaymentState::Accepted);
    assert!(journal.by_receipt("nope").unwrap().is_none());
}

#[test]
fn the_same_authorization_is_refused_twice() {
    let (_dir, journal) = temp_journal(JournalOptions::default());
    block_on(async {
        journal.record(payment(1, "eip155:84532", 300)).await.unwrap();
        let mut again = payment(1, "eip155:84532", 300);
        again.receipt_id = "another".into();
        assert!(matches!(journal.record(again).await, Err(JournalError::Duplicate(_))));
        assert_eq!(journal.counts().unwrap().get("accepted"), Some(&1));
    });
}

#[test]
fn batches_are_journaled_before_broadcast_and_survive_reopening() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("journal.db");
    let batch = BatchRecord { transaction: "0xfeed".into(), network: "eip155:84532".into(), raw: vec![1, 2, 3], sent_at_ms: 5 };
    {
        let journal = Journal::open(&path, JournalOptions::default()).unwrap();
        block_on(async {
            let a = journal.record(payment(1, "eip155:84532", 300)).await.unwrap();
            let b = journal.record(payment(2, "eip155:84532", 300)).await.unwrap();
            assert_eq!(journal.record_batch(batch.clone(), vec![a, b]).await.unwrap(), vec![1, 1]);
        });
    }
    let journal = Journal::open(&path, JournalOptions::default()).unwrap();
    assert_eq!(journal.open_batches("eip155:84532").unwrap(), vec![batch]);
    let submitted = journal.submitted_in("0xfeed").unwrap();
    assert_eq!(submitted.len(), 2);
    assert!(submitted.iter().all(|r| r.state == PaymentState::Submitted { transaction: "0xfeed".into() } && r.attempts == 1));
    block_on(journal.finish_batch("0xfeed".into())).unwrap();
    assert!(journal.open_batches("eip155:84532").unwrap().is_empty());
    assert_eq!(journal.live(0).unwrap().len(), 2);
    assert_eq!(journal.live(300).unwrap().len(), 0, "expired authorizations need no replay protection");
}

#[test]
fn every_transaction_a_payment_was_sent_in_is_remembered_latest_first() {
    let (_dir, journal) = temp_journal(JournalOptions::default());
    block_on(async {
        let id = journal.record(payment(1, "eip155:84532", 300)).await.unwrap();
        for transaction in ["0xaa", "0xbb"] {
            let batch = BatchRecord { transaction: transaction.into(), network: "eip155:84532".into(), raw: vec![], sent_at_ms: 1 };
            journal.record_batch(batch, vec![id]).await.unwrap();
            // Back to the queue, as after a receipt that did not come in time.
            journal.set_state(id, PaymentState::Accepted).await.unwrap();
        }
        assert_eq!(journal.transactions_of(id).unwrap(), vec!["0xbb".to_owned(), "0xaa".to_owned()]);
    });
}

#[test]
fn concurrent_writers_share_commits_and_all_land() {
    for group_commit in [true, false] {
        let (_dir, journal) = temp_journal(JournalOptions { group_commit, ..JournalOptions::default() });
        let journal = Arc::new(journal);
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).build().unwrap();
        runtime.block_on(async {
            let tasks: Vec<_> = (0..64u8)
                .map(|n| {
                    let journal = journal.clone();
                    tokio::spawn(async move { journal.record(payment(n, "eip155:84532", 300)).await })
                })
                .collect();
            for task in tasks {
                task.await.unwrap().unwrap();
            }
        });
        assert_eq!(journal.unsettled_count().unwrap(), 64, "group_commit={group_commit}");
    }
}

#[test]
fn a_read_only_reader_sees_the_live_file() {
    let (dir, journal) = temp_journal(JournalOptions::default());
    block_on(async {
        let id = journal.record(payment(1, "eip155:84532", 300)).await.unwrap();
        journal.record(payment(2, "eip155:84532", 300)).await.unwrap();
        journal.set_state(id, PaymentState::Failed { reason: "expired".into() }).await.unwrap();
    });
    let reader = Journal::open_read_only(&dir.path().join("journal.db")).unwrap();
    let failed = reader.list(&PaymentFilter { state: Some("failed".into()), ..Default::default() }).unwrap();
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0].state, PaymentState::Failed { reason: "expired".into() });
    let by_payer = reader.list(&PaymentFilter { payer: Some("0x00000000000000000000000000000000000000a1".into()), limit: 1, ..Default::default() }).unwrap();
    assert_eq!(by_payer.len(), 1, "payer matches case-insensitively; limit applies");
    assert_eq!(reader.counts().unwrap().get("accepted"), Some(&1));
}

#[test]
fn writes_after_close_are_refused() {
    let (_dir, journal) = temp_journal(JournalOptions::default());
    journal.close();
    assert!(matches!(block_on(journal.record(payment(1, "eip155:84532", 300))), Err(JournalError::Closed)));
}

#[test]
fn frequent_queries_use_the_partial_indexes() {
    let (dir, journal) = temp_journal(JournalOptions::default());
    block_on(async {
        for n in 0..50 {
            let id = journal.record(payment(n, "eip155:84532", 300)).await.unwrap();
            journal.set_state(id, PaymentState::Settled { transaction: "0xabc".into() }).await.unwrap();
        }
    });
    let connection = Connection::open(dir.path().join("journal.db")).unwrap();
    // Every query the settler, the stall guard, the probes, the receipt endpoint and the
    // upkeep pass run again and again, with the index it must be planned with.
    let queries: [(&str, &str); 14] = [
        (&ACCEPTED, "payments_unsettled"),
        (&UNSETTLED_ROWS, "payments_unsettled"),
        (&UNSETTLED_COUNT, "payments_unsettled"),
        (&OLDEST_UNSETTLED, "payments_unsettled"),
        (&EARLIEST_DEADLINE, "payments_unsettled"),
        (&UNSETTLED_DEADLINES, "payments_unsettled"),
        (&SUBMITTED_IN, "payments_in_flight"),
        (&GIVEN_UP, "payments_given_up"),
        (OPEN_BATCHES, "batches_open"),
        (&BY_RECEIPT, "sqlite_autoindex_payments_1"),
        (HOLDS_AUTHORIZATION, "sqlite_autoindex_payments_2"),
        (TRANSACTIONS_OF, "sqlite_autoindex_payment_transactions_1"),
        (PRUNABLE_PAYMENTS, "payments_finished"),
        (PRUNE_BATCHES, "batches_done"),
    ];
    for (query, index) in queries {
        let mut explain = connection.prepare(&format!("EXPLAIN QUERY PLAN {query}")).unwrap();
        let values = ["eip155:84532", "10", "10", "10"].into_iter().take(explain.parameter_count());
        let plan: Vec<String> =
            explain.query_map(rusqlite::params_from_iter(values), |row| row.get::<_, String>(3)).unwrap().collect::<Result<_, _>>().unwrap();
        assert!(plan.iter().any(|step| step.contains(index)), "{query}\n  is planned as {plan:?}, not with {index}");
        // Walking a partial index is fine (it holds only the rows asked for); walking a table is not.
        let table_scan = |step: &String| ["SCAN payments", "SCAN batches"].iter().any(|scan| step.starts_with(scan) && !step.contains(" INDEX "));
        assert!(!plan.iter().any(table_scan), "{query}\n  scans a table: {plan:?}");
    }
}

/// A settled or failed payment with `valid_before`, sent in (done) batch `transaction`.
async fn finished(journal: &Journal, n: u8, valid_before: u64, state: PaymentState) -> u64 {
    let id = journal.record(payment(n, "eip155:84532", valid_before)).await.unwrap();
    let transaction = format!("0x{n:02x}");
    let batch = BatchRecord { transaction: transaction.clone(), network: "eip155:84532".into(), raw: vec![n; 100], sent_at_ms: 5 };
    journal.record_batch(batch, vec![id]).await.unwrap();
    journal.set_state(id, state).await.unwrap();
    journal.finish_batch(transaction).await.unwrap();
    id
}

const DAY_MS: u64 = 86_400_000;

fn policy(retention_ms: u64, now_ms: u64, max_rows: usize) -> PrunePolicy {
    PrunePolicy { retention: std::time::Duration::from_millis(retention_ms), now_ms, max_rows }
}

#[test]
fn pruning_deletes_finished_payments_past_retention_with_their_transactions_and_batches() {
    let (_dir, journal) = temp_journal(JournalOptions::default());
    let now_ms = crate::unix_now_ms() + 3 * DAY_MS;
    let recent = now_ms / 1000 - 3600;
    block_on(async {
        let old_settled = finished(&journal, 1, 1_000, PaymentState::Settled { transaction: "0x01".into() }).await;
        let old_failed = finished(&journal, 2, 1_000, PaymentState::Failed { reason: "no funds".into() }).await;
        let kept = finished(&journal, 3, recent, PaymentState::Settled { transaction: "0x03".into() }).await;
        let open = BatchRecord { transaction: "0xopen".into(), network: "eip155:84532".into(), raw: vec![9], sent_at_ms: 5 };
        let submitted = journal.record(payment(4, "eip155:84532", 1_000)).await.unwrap();
        journal.record_batch(open.clone(), vec![submitted]).await.unwrap();

        let report = journal.prune(policy(DAY_MS, now_ms, 100)).await.unwrap();
        assert_eq!((report.payments, report.payment_transactions, report.batches), (2, 2, 3), "{report:?}");
        assert!(!report.more);
        assert!(journal.get(old_settled).unwrap().is_none() && journal.get(old_failed).unwrap().is_none());
        assert!(journal.transactions_of(old_settled).unwrap().is_empty());
        assert!(journal.get(kept).unwrap().is_some(), "inside retention");
        assert_eq!(journal.transactions_of(kept).unwrap(), vec!["0x03".to_owned()], "its transaction stays with it");
        assert_eq!(journal.open_batches("eip155:84532").unwrap(), vec![open], "an open batch is never pruned");
        assert_eq!(journal.get(submitted).unwrap().map(|r| r.state.name()), Some("submitted"));
        assert_eq!(journal.prune(policy(DAY_MS, now_ms, 100)).await.unwrap(), PruneReport::default(), "nothing left to prune");
    });
}

#[test]
fn an_unsettled_payment_is_never_pruned_whatever_its_age() {
    let (_dir, journal) = temp_journal(JournalOptions::default());
    block_on(async {
        let accepted = journal.record(payment(1, "eip155:84532", 1)).await.unwrap();
        let submitted = journal.record(payment(2, "eip155:84532", 1)).await.unwrap();
        let batch = BatchRecord { transaction: "0xfeed".into(), network: "eip155:84532".into(), raw: vec![1], sent_at_ms: 1 };
        journal.record_batch(batch, vec![submitted]).await.unwrap();
        let report = journal.prune(policy(1, u64::MAX / 2, 100)).await.unwrap();
        assert_eq!((report.payments, report.payment_transactions, report.batches), (0, 0, 0));
        assert_eq!(journal.unsettled().unwrap().iter().map(|r| r.id).collect::<Vec<_>>(), vec![accepted, submitted]);
        assert_eq!(journal.transactions_of(submitted).unwrap(), vec!["0xfeed".to_owned()]);
    });
}

#[test]
fn a_failure_the_loss_budget_still_counts_is_kept_whatever_the_retention() {
    let (_dir, journal) = temp_journal(JournalOptions::default());
    let now_ms = crate::unix_now_ms();
    block_on(async {
        let settled = finished(&journal, 1, 1_000, PaymentState::Settled { transaction: "0x01".into() }).await;
        let failed = finished(&journal, 2, 1_000, PaymentState::Failed { reason: "no funds".into() }).await;
        let report = journal.prune(policy(1_000, now_ms, 100)).await.unwrap();
        assert_eq!(report.payments, 1);
        assert!(journal.get(settled).unwrap().is_none());
        assert!(journal.get(failed).unwrap().is_some(), "failed within the day the loss budget counts");
        assert_eq!(journal.failures_since(now_ms - DAY_MS).unwrap().len(), 1);
        // A day later the budget no longer counts it: it goes.
        assert_eq!(journal.prune(policy(1_000, now_ms + DAY_MS + 60_000, 100)).await.unwrap().payments, 1);
        assert!(journal.get(failed).unwrap().is_none());
    });
}

#[test]
fn a_pass_prunes_at_most_its_bound_and_says_when_more_is_left() {
    let (_dir, journal) = temp_journal(JournalOptions::default());
    let now_ms = crate::unix_now_ms() + 3 * DAY_MS;
    block_on(async {
        for n in 0..5 {
            finished(&journal, n, 1_000, PaymentState::Settled { transaction: format!("0x{n:02x}") }).await;
        }
        let mut passes = Vec::new();
        for _ in 0..3 {
            let report = journal.prune(policy(DAY_MS, now_ms, 2)).await.unwrap();
            passes.push((report.payments, report.more));
        }
        assert_eq!(passes, vec![(2, true), (2, true), (1, false)]);
    });
}

#[test]
fn expired_payer_blocks_and_superseded_loss_resets_are_pruned() {
    let (dir, journal) = temp_journal(JournalOptions::default());
    let now_ms = crate::unix_now_ms();
    let now = now_ms / 1000;
    block_on(async {
        journal.block_payer(PayerBlock { payer: "0xA1".into(), until: now - 1, reason: "expired".into() }).await.unwrap();
        journal.block_payer(PayerBlock { payer: "0xA2".into(), until: now + 3600, reason: "still".into() }).await.unwrap();
    });
    for at_ms in [10, 30, 20] {
        record_loss_reset(&dir.path().join("journal.db"), at_ms).unwrap();
    }
    let report = block_on(journal.prune(policy(DAY_MS, now_ms, 100))).unwrap();
    assert_eq!((report.payer_blocks, report.loss_resets), (1, 2));
    assert_eq!(journal.payer_blocks(0).unwrap().iter().map(|b| b.payer.as_str()).collect::<Vec<_>>(), vec!["0xA2"]);
    assert_eq!(journal.last_loss_reset_ms().unwrap(), Some(30), "the latest reset stays");
}

#[test]
fn a_finished_batch_keeps_no_signed_bytes() {
    let (dir, journal) = temp_journal(JournalOptions::default());
    block_on(finished(&journal, 1, 300, PaymentState::Settled { transaction: "0x01".into() }));
    let raw: Vec<u8> =
        Connection::open(dir.path().join("journal.db")).unwrap().query_row("SELECT raw FROM batches WHERE transaction_hash = '0x01'", [], |row| row.get(0)).unwrap();
    assert!(raw.is_empty(), "{} bytes left", raw.len());
}

#[test]
fn receipts_are_read_on_connections_of_their_own_and_never_waited_for() {
    let (_dir, journal) = temp_journal(JournalOptions { receipt_readers: 1, ..JournalOptions::default() });
    let entry = payment(1, "eip155:84532", 300);
    let receipt_id = entry.receipt_id.clone();
    block_on(journal.record(entry)).unwrap();
    // The settler's reader is busy: a receipt look-up does not wait for it.
    let settler_reads = lock(&journal.reader);
    assert_eq!(journal.receipt(&receipt_id).unwrap().map(|r| r.receipt_id), Some(receipt_id.clone()));
    assert!(journal.by_receipt(&receipt_id).unwrap().is_some());
    drop(settler_reads);
    // Its only connection is busy: the answer is "busy", at once.
    let held = journal.receipts.try_take().expect("free");
    assert!(matches!(journal.receipt(&receipt_id), Err(JournalError::Busy)));
    drop(held);
    assert!(journal.receipt("nope").unwrap().is_none());
}

#[test]
fn an_export_streams_the_chosen_states_oldest_first() {
    let (dir, journal) = temp_journal(JournalOptions::default());
    let ids = block_on(async {
        let a = finished(&journal, 1, 300, PaymentState::Settled { transaction: "0x01".into() }).await;
        finished(&journal, 2, 300, PaymentState::Failed { reason: "no funds".into() }).await;
        journal.record(payment(3, "eip155:84532", 300)).await.unwrap();
        let b = finished(&journal, 4, 300, PaymentState::Settled { transaction: "0x04".into() }).await;
        vec![a, b]
    });
    let reader = Journal::open_read_only(&dir.path().join("journal.db")).unwrap();
    let export = |filter: ExportFilter| {
        let mut ids = Vec::new();
        reader
            .export(&filter, |record| -> Result<(), JournalError> {
                ids.push(record.id);
                Ok(())
            })
            .unwrap();
        ids
    };
    assert_eq!(export(ExportFilter { state: Some("settled".into()), since_ms: 0 }), ids);
    assert_eq!(export(ExportFilter::default()).len(), 4);
    assert!(export(ExportFilter { state: Some("settled".into()), since_ms: u64::MAX / 2 }).is_empty());
    let stopped = reader.export(&ExportFilter::default(), |_| Err(JournalError::Closed));
    assert!(matches!(stopped, Err(JournalError::Closed)), "the visitor's error stops the export");
}

#[test]
fn a_journal_from_an_earlier_version_loses_its_old_indexes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("journal.db");
    {
        let connection = Connection::open(&path).unwrap();
        connection.execute_batch(SCHEMA).unwrap();
        connection.execute_batch("CREATE INDEX payments_by_payer ON payments (payer, state)").unwrap();
    }
    drop(Journal::open(&path, JournalOptions::default()).unwrap());
    let connection = Connection::open(&path).unwrap();
    let old: u32 = connection
        .query_row("SELECT count(*) FROM sqlite_master WHERE type = 'index' AND name = 'payments_by_payer'", [], |row| row.get(0))
        .unwrap();
    assert_eq!(old, 0);
}

#[test]
fn the_checkpointer_copies_the_log_into_the_database_off_the_writer() {
    let (dir, journal) = temp_journal(JournalOptions::default());
    let database = dir.path().join("journal.db");
    let size = || std::fs::metadata(&database).map(|m| m.len()).unwrap_or(0);
    let before = size();
    block_on(async {
        for n in 0..50 {
            journal.record(payment(n, "eip155:84532", 300)).await.unwrap();
        }
    });
    // Far below the writer's own checkpoint threshold: only the checkpointer moves pages.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while size() <= before && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert!(size() > before, "the database file is still {before} bytes: nothing was checkpointed");
    journal.close();
}

#[test]
fn an_authorization_is_found_by_its_key_only_once_journaled() {
    let (dir, journal) = temp_journal(JournalOptions::default());
    let entry = payment(7, "eip155:84532", 300);
    let (asset, payer, nonce) = (entry.item.asset.clone(), entry.payer.clone(), entry.nonce.clone());
    assert!(!journal.holds_authorization(84532, &asset, &payer, &nonce).unwrap());
    block_on(journal.record(entry)).unwrap();
    assert!(journal.holds_authorization(84532, &asset, &payer, &nonce).unwrap());
    // Another process's journal handle sees it too: what an upgrade's two processes share.
    let other = Journal::open(&dir.path().join("journal.db"), JournalOptions::default()).unwrap();
    assert!(other.holds_authorization(84532, &asset, &payer, &nonce).unwrap());
    let plan: Vec<String> = Connection::open(dir.path().join("journal.db"))
        .unwrap()
        .prepare(&format!("EXPLAIN QUERY PLAN {HOLDS_AUTHORIZATION}"))
        .unwrap()
        .query_map(params![84532, asset, payer, nonce], |row| row.get::<_, String>(3))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert!(plan.iter().any(|step| step.starts_with("SEARCH payments USING COVERING INDEX sqlite_autoindex_payments")), "one index seek, not a scan: {plan:?}");
    for (chain, asset, payer, nonce) in [
        (1, asset.as_str(), payer.as_str(), nonce.as_str()),
        (84532, "0x0000000000000000000000000000000000000001", payer.as_str(), nonce.as_str()),
        (84532, asset.as_str(), "0x00000000000000000000000000000000000000A2", nonce.as_str()),
        (84532, asset.as_str(), payer.as_str(), "0x01"),
    ] {
        assert!(!journal.holds_authorization(chain, asset, payer, nonce).unwrap(), "{chain} {asset} {payer} {nonce}");
    }
}

/// Holds the writer inside a group of its own until the returned sender is dropped or
/// sent to, so that the writes queued meanwhile are committed together in the next group.
fn hold_the_writer(journal: &Journal) -> (std::sync::mpsc::Sender<()>, impl Future<Output = Result<(), JournalError>>) {
    let (release, released) = std::sync::mpsc::channel::<()>();
    let (entered_tx, entered) = std::sync::mpsc::channel::<()>();
    let held = journal.write(move |_| {
        let _ = entered_tx.send(());
        let _ = released.recv();
        Ok(())
    });
    entered.recv().expect("the writer runs the holding write");
    (release, held)
}

/// Queues the insert of `payment` at once (`Journal::record` queues it when first polled), so
/// writes made one after another share the writer's next group.
fn queue_record(journal: &Journal, payment: NewPayment) -> impl Future<Output = Result<u64, JournalError>> {
    journal.write(move |connection| insert_payment(connection, &payment))
}

/// Whether a row with `receipt_id` is on disk, read through a connection of its own.
fn on_disk(dir: &tempfile::TempDir, receipt_id: &str) -> bool {
    let reader = Journal::open_read_only(&dir.path().join("journal.db")).unwrap();
    reader.by_receipt(receipt_id).unwrap().is_some()
}

#[test]
fn a_transaction_sqlite_rolled_back_fails_its_whole_group_and_nothing_commits_behind_it() {
    let (dir, journal) = temp_journal(JournalOptions::default());
    block_on(async {
        let (release, held) = hold_the_writer(&journal);
        let before = queue_record(&journal, payment(1, "eip155:84532", 300));
        // What SQLite does by itself on SQLITE_FULL or SQLITE_IOERR inside a transaction:
        // rolls the whole transaction back and leaves the connection in autocommit mode.
        let fault = journal.write(|connection| {
            connection.execute_batch("ROLLBACK")?;
            Err::<(), _>(JournalError::Commit("injected: SQLite rolled the transaction back".into()))
        });
        let after = queue_record(&journal, payment(2, "eip155:84532", 300));
        release.send(()).unwrap();
        held.await.unwrap();
        let (before, fault, after) = (before.await, fault.await, after.await);
        assert!(fault.is_err());
        assert!(before.is_err(), "the write before the fault was rolled back with it, so its caller hears so");
        assert!(after.is_err(), "the write after the fault is refused, never committed in autocommit mode");
        assert!(!on_disk(&dir, "receipt-eip155:84532-1"), "rolled back");
        assert!(!on_disk(&dir, "receipt-eip155:84532-2"), "a caller told it failed must find nothing committed");
        // The next group starts a clean transaction of its own.
        journal.record(payment(3, "eip155:84532", 300)).await.expect("the writer recovers");
        assert!(on_disk(&dir, "receipt-eip155:84532-3"));
    });
}

#[test]
fn a_write_that_fails_half_way_leaves_nothing_and_its_group_commits() {
    let (dir, journal) = temp_journal(JournalOptions::default());
    block_on(async {
        let (release, held) = hold_the_writer(&journal);
        let first = queue_record(&journal, payment(1, "eip155:84532", 300));
        // Two statements: the first succeeds, the second fails.
        let half = journal.write(|connection| {
            insert_payment(connection, &payment(2, "eip155:84532", 300))?;
            connection.execute_batch("INSERT INTO no_such_table VALUES (1)")?;
            Ok(())
        });
        let last = queue_record(&journal, payment(3, "eip155:84532", 300));
        release.send(()).unwrap();
        held.await.unwrap();
        assert!(half.await.is_err());
        first.await.expect("committed");
        last.await.expect("committed");
        assert!(on_disk(&dir, "receipt-eip155:84532-1"));
        assert!(!on_disk(&dir, "receipt-eip155:84532-2"), "a failed write leaves none of its statements behind");
        assert!(on_disk(&dir, "receipt-eip155:84532-3"));
    });
}

#[test]
fn a_full_disk_never_lies_to_a_caller() {
    let (dir, journal) = temp_journal(JournalOptions::default());
    let journal = Arc::new(journal);
    block_on(async {
        // A database that cannot grow past its current size plus a page or two: SQLITE_FULL.
        let pages: u64 = journal
            .write(|connection| Ok(connection.query_row("PRAGMA page_count", [], |row| row.get(0))?))
            .await
            .unwrap();
        journal.write(move |connection| Ok(connection.pragma_update(None, "max_page_count", pages + 2)?)).await.unwrap();
        let (release, held) = hold_the_writer(&journal);
        let writes: Vec<_> = (0..200u8)
            .map(|n| {
                let mut big = payment(n, "eip155:84532", 300);
                big.route = "r".repeat(2000);
                queue_record(&journal, big)
            })
            .collect();
        release.send(()).unwrap();
        held.await.unwrap();
        let mut told_failed = 0;
        for (n, write) in (0..200u8).zip(writes) {
            let told_ok = write.await.is_ok();
            told_failed += usize::from(!told_ok);
            assert_eq!(on_disk(&dir, &format!("receipt-eip155:84532-{n}")), told_ok, "write {n}: told ok = {told_ok}");
        }
        assert!(told_failed > 0, "the fault happened");
    });
}
