//! The stores' contract, run on [`MemoryStore`] and [`FileStore`]; the file store's reopening,
//! versioning, locking, corruption and kill -9 behaviour.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::*;

fn put(key: &str, value: &str) -> StoreOp {
    StoreOp::Put {
        key: Bytes::copy_from_slice(key.as_bytes()),
        value: Bytes::copy_from_slice(value.as_bytes()),
    }
}

fn delete(key: &str) -> StoreOp {
    StoreOp::Delete {
        key: Bytes::copy_from_slice(key.as_bytes()),
    }
}

/// Everything stored, as `(key, value)` strings in the order `load` visited them.
fn load_all(store: &mut dyn Store) -> Result<Vec<(String, String)>, StoreError> {
    let mut all = Vec::new();
    store.load(&mut |key, value| {
        all.push((
            String::from_utf8_lossy(key).into_owned(),
            String::from_utf8_lossy(value).into_owned(),
        ));
    })?;
    Ok(all)
}

fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(key, value)| (key.to_string(), value.to_string()))
        .collect()
}

/// Runs `check` on a memory store and on a file store in a fresh directory.
fn each_store(check: impl Fn(&mut dyn Store)) {
    check(&mut MemoryStore::new());
    let dir = tempfile::tempdir().unwrap();
    check(&mut FileStore::open(dir.path()).unwrap());
}

#[test]
fn later_ops_in_a_batch_win_and_deletes_remove() {
    each_store(|store| {
        store
            .commit(&[put("a", "1"), put("b", "2"), put("c", "3")], true)
            .unwrap();
        store
            .commit(
                &[
                    delete("b"),
                    delete("absent"),
                    put("c", "x"),
                    delete("c"),
                    put("c", "4"),
                ],
                false,
            )
            .unwrap();
        assert_eq!(load_all(store).unwrap(), pairs(&[("a", "1"), ("c", "4")]));
    });
}

#[test]
fn load_visits_keys_in_bytewise_order() {
    each_store(|store| {
        let keys = ["s/b", "r/", "s/a", "q/\u{7f}", "s/", "q/a", "m/zz"];
        let ops: Vec<_> = keys.iter().map(|key| put(key, "v")).collect();
        store.commit(&ops, true).unwrap();
        let loaded: Vec<_> = load_all(store).unwrap().into_iter().map(|p| p.0).collect();
        assert_eq!(
            loaded,
            ["m/zz", "q/a", "q/\u{7f}", "r/", "s/", "s/a", "s/b"]
        );
    });
}

#[test]
fn out_of_bounds_ops_are_refused_and_nothing_of_their_batch_is_applied() {
    each_store(|store| {
        let long = StoreOp::Put {
            key: Bytes::from(vec![b'k'; MAX_KEY_LEN + 1]),
            value: Bytes::new(),
        };
        let error = store.commit(&[put("a", "1"), long], true).unwrap_err();
        assert!(matches!(error, StoreError::InvalidOp(_)), "{error}");
        let error = store
            .commit(&[put("a", "1"), delete("")], true)
            .unwrap_err();
        assert!(matches!(error, StoreError::InvalidOp(_)), "{error}");
        assert!(!error.is_transient());
        assert_eq!(load_all(store).unwrap(), []);
        // The longest key and an empty value are fine.
        let longest = StoreOp::Put {
            key: Bytes::from(vec![b'k'; MAX_KEY_LEN]),
            value: Bytes::new(),
        };
        store.commit(&[longest], true).unwrap();
    });
}

#[test]
fn file_store_batches_survive_reopening() {
    let dir = tempfile::tempdir().unwrap();
    let big = "x".repeat(3 << 20);
    {
        let mut store = FileStore::open(dir.path()).unwrap();
        assert_eq!(load_all(&mut store).unwrap(), []);
        store
            .commit(&[put("s/1", "one"), put("q/1", "m")], true)
            .unwrap();
        store.commit(&[put("r/big", &big)], false).unwrap();
        store
            .commit(&[delete("q/1"), put("s/2", "two")], false)
            .unwrap();
        store.sync().unwrap();
        store.commit(&[], true).unwrap();
    }
    let mut store = FileStore::open(dir.path()).unwrap();
    assert_eq!(
        load_all(&mut store).unwrap(),
        pairs(&[("r/big", &big), ("s/1", "one"), ("s/2", "two")])
    );
    assert_eq!(store.dir(), dir.path());
}

#[test]
fn file_store_writes_a_version_and_refuses_unknown_ones() {
    let dir = tempfile::tempdir().unwrap();
    drop(FileStore::open(dir.path()).unwrap());
    let version = dir.path().join("VERSION");
    assert_eq!(std::fs::read_to_string(&version).unwrap(), "1\n");

    for text in ["2\n", "", "garbage"] {
        std::fs::write(&version, text).unwrap();
        let error = FileStore::open(dir.path()).unwrap_err();
        match &error {
            StoreError::UnknownVersion { path, .. } => assert_eq!(path, &version),
            other => panic!("{other:?}"),
        }
        assert!(error.to_string().contains("VERSION"), "{error}");
    }
    std::fs::write(&version, "1").unwrap();
    FileStore::open(dir.path()).unwrap();
}

#[test]
fn file_store_refuses_a_directory_that_holds_something_else() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("mosquitto.db"), "not ours").unwrap();
    let error = FileStore::open(dir.path()).unwrap_err();
    assert!(
        matches!(&error, StoreError::UnknownVersion { path, .. } if path == dir.path()),
        "{error:?}"
    );
    assert!(error.to_string().contains("mosquitto.db"), "{error}");
    // A version file that never got its name (a crash while creating the store) is no obstacle.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("VERSION.tmp"), "").unwrap();
    FileStore::open(dir.path()).unwrap();
}

#[test]
fn file_store_is_locked_while_open() {
    let dir = tempfile::tempdir().unwrap();
    let first = FileStore::open(dir.path()).unwrap();
    let error = FileStore::open(dir.path()).unwrap_err();
    assert!(matches!(error, StoreError::Locked { .. }), "{error:?}");
    drop(first);
    FileStore::open(dir.path()).unwrap();
}

/// A value that depends on its key, so that a changed byte cannot go unnoticed.
fn value_of(key: &str) -> String {
    format!("{key}:").repeat(8)
}

fn fill(store: &mut FileStore, batches: usize) {
    for batch in 0..batches {
        let ops: Vec<_> = (0..20)
            .map(|i| {
                let key = format!("q/{batch:06}/{i:02}");
                let value = value_of(&key);
                put(&key, &value)
            })
            .collect();
        store.commit(&ops, false).unwrap();
    }
    store.sync().unwrap();
}

/// Flips four bytes in the middle of the written part of `file` (past its zero-filled tail).
fn flip_middle(file: &Path) {
    let mut bytes = std::fs::read(file).unwrap();
    let written = bytes.iter().rposition(|&b| b != 0).unwrap() + 1;
    for byte in &mut bytes[written / 2..written / 2 + 4] {
        *byte ^= 0x5a;
    }
    std::fs::write(file, bytes).unwrap();
}

/// The files below `dir` whose path contains `part`, largest first.
fn files_named(dir: &Path, part: &str) -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<(u64, PathBuf)>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let entry = entry.unwrap();
            let meta = entry.metadata().unwrap();
            if meta.is_dir() {
                walk(&entry.path(), out);
            } else {
                out.push((meta.len(), entry.path()));
            }
        }
    }
    let mut all = Vec::new();
    walk(dir, &mut all);
    all.sort_by(|a, b| b.cmp(a));
    all.into_iter()
        .map(|(_, path)| path)
        .filter(|path| path.to_string_lossy().contains(part))
        .collect()
}

/// Opens and loads a damaged store: it must say `Corrupt`, naming its directory, and neither
/// panic nor hand out damaged data.
fn assert_reported_corrupt(dir: &Path) {
    let result = FileStore::open(dir).and_then(|mut store| load_all(&mut store));
    match result {
        Err(StoreError::Corrupt { path, detail }) => {
            assert!(path.starts_with(dir), "{}", path.display());
            assert!(!detail.is_empty());
        }
        Err(other) => panic!("expected Corrupt, got {other:?}"),
        Ok(all) => {
            let damaged = all.iter().filter(|(k, v)| *v != value_of(k)).count();
            panic!(
                "loaded {} records ({damaged} damaged) without an error",
                all.len()
            );
        }
    }
}

#[test]
fn file_store_reports_a_corrupt_journal() {
    let dir = tempfile::tempdir().unwrap();
    fill(&mut FileStore::open(dir.path()).unwrap(), 500);
    let journals = files_named(dir.path(), ".jnl");
    flip_middle(&journals[0]);
    assert_reported_corrupt(dir.path());
}

/// fjall drops a journal's tail from the first batch it cannot parse, as for the torn write of
/// a crash; the store notices that commits known durable are missing.
#[test]
fn file_store_reports_a_journal_cut_at_damage_until_the_loss_is_accepted() {
    let dir = tempfile::tempdir().unwrap();
    fill(&mut FileStore::open(dir.path()).unwrap(), 500);
    let committed = dir.path().join("COMMITTED");
    assert_eq!(std::fs::read_to_string(&committed).unwrap(), "500\n");
    let journal = files_named(dir.path(), ".jnl").remove(0);
    let mut bytes = std::fs::read(&journal).unwrap();
    let written = bytes.iter().rposition(|&b| b != 0).unwrap() + 1;
    bytes[written / 2..written].fill(0xee);
    std::fs::write(&journal, bytes).unwrap();

    // The first open sees which journal was cut; the next ones still refuse.
    for expected in [journal, dir.path().join("fjall")] {
        match FileStore::open(dir.path()) {
            Err(StoreError::Corrupt { path, detail }) => {
                assert_eq!(path, expected, "{detail}");
                assert!(detail.contains("COMMITTED"), "{detail}");
            }
            other => panic!("expected Corrupt, got {other:?}"),
        }
    }

    std::fs::remove_file(&committed).unwrap();
    let mut store = FileStore::open(dir.path()).unwrap();
    let all = load_all(&mut store).unwrap();
    assert!(!all.is_empty() && all.len() < 500 * 20, "{}", all.len());
    assert_eq!(all.len() % 20, 0, "whole batches only");
    assert!(all.iter().all(|(key, value)| *value == value_of(key)));
    // Commits go on from what is left, and are checked again.
    store.commit(&[put("after", "loss")], true).unwrap();
    drop(store);
    let mut store = FileStore::open(dir.path()).unwrap();
    assert_eq!(load_all(&mut store).unwrap().len(), all.len() + 1);
}

#[test]
fn file_store_reports_a_corrupt_table() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut store = FileStore::open(dir.path()).unwrap();
        fill(&mut store, 500);
        store.flush().unwrap();
    }
    let tables = files_named(dir.path(), "tables");
    flip_middle(&tables[0]);
    assert_reported_corrupt(dir.path());
}

#[test]
fn failing_store_fails_commits_and_syncs_until_healed() {
    let (mut store, faults) = FailingStore::new(MemoryStore::new());
    store.commit(&[put("a", "1")], true).unwrap();

    faults.fail_next(2);
    assert!(faults.is_failing());
    let error = store.commit(&[put("b", "2")], true).unwrap_err();
    assert!(error.is_transient(), "{error:?}");
    assert!(matches!(error, StoreError::Write { .. }));
    assert!(store.sync().is_err());
    assert!(!faults.is_failing());
    assert_eq!(load_all(&mut store).unwrap(), pairs(&[("a", "1")]));

    faults.fail_next_after_applying(1);
    assert!(store.commit(&[put("c", "3")], true).is_err());
    assert_eq!(
        load_all(&mut store).unwrap(),
        pairs(&[("a", "1"), ("c", "3")])
    );

    faults.fail_until_healed();
    for _ in 0..3 {
        assert!(store.commit(&[put("d", "4")], false).is_err());
    }
    faults.heal();
    store.commit(&[put("d", "4")], true).unwrap();
    assert_eq!(load_all(&mut store).unwrap().len(), 3);
    assert_eq!(store.into_inner().contents().len(), 3);
}

#[test]
fn memory_store_power_cut_loses_only_what_was_not_synced() {
    let mut store = MemoryStore::new();
    let restarted = store.clone();
    store.commit(&[put("a", "1"), put("b", "2")], true).unwrap();
    store.commit(&[delete("a"), put("c", "3")], false).unwrap();
    assert_eq!(restarted.contents().len(), 2);
    store.power_cut();
    assert_eq!(
        load_all(&mut restarted.clone()).unwrap(),
        pairs(&[("a", "1"), ("b", "2")])
    );
    store.commit(&[put("c", "3")], false).unwrap();
    store.sync().unwrap();
    store.power_cut();
    assert_eq!(store.contents().len(), 3);
}

#[test]
fn sync_policy_defaults_to_syncing_each_commit() {
    assert!(SyncPolicy::default().syncs_each_commit());
    assert!(!SyncPolicy::Periodic(Duration::from_secs(1)).syncs_each_commit());
}

// ---------------------------------------------------------------------------------------------
// kill -9

/// Set in the environment of the child that `crash_child_writer` runs as.
const CHILD_DIR: &str = "MQTT_STORE_CRASH_CHILD_DIR";

/// Records per batch of the crash test, and how many batches stay before they are deleted.
const PER_BATCH: u64 = 8;
const KEEP: u64 = 3;

fn crash_key(batch: u64, i: u64) -> String {
    format!("c/{batch:010}/{i}")
}

/// Values of different sizes, up to 8 KiB, so that a batch spans several pages.
fn crash_value(batch: u64, i: u64) -> String {
    let key = crash_key(batch, i);
    key.repeat(1 + ((batch + i) % 5) as usize * 100)
}

/// What the store holds after batches `1..=last`: the last `KEEP` batches and `last`.
fn state_after(last: u64) -> BTreeMap<String, String> {
    let mut state = BTreeMap::new();
    if last > 0 {
        state.insert("last".to_owned(), last.to_string());
    }
    for batch in last.saturating_sub(KEEP - 1).max(1)..=last {
        for i in 0..PER_BATCH {
            state.insert(crash_key(batch, i), crash_value(batch, i));
        }
    }
    state
}

/// The child's side of `file_store_keeps_every_committed_batch_through_kill_9`: commits
/// numbered batches, fsynced, printing each number once `commit` returned. Does nothing when
/// run as an ordinary test, and stops by itself after a minute should nobody kill it.
#[test]
fn crash_child_writer() {
    let Some(dir) = std::env::var_os(CHILD_DIR) else {
        return;
    };
    let mut store = FileStore::open(Path::new(&dir)).unwrap();
    let stored: BTreeMap<String, String> = load_all(&mut store).unwrap().into_iter().collect();
    let mut batch: u64 = stored.get("last").map_or(0, |last| last.parse().unwrap());
    let mut out = std::io::stdout().lock();
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(60) {
        batch += 1;
        let mut ops = Vec::new();
        for i in 0..PER_BATCH {
            ops.push(put(&crash_key(batch, i), &crash_value(batch, i)));
            if batch > KEEP {
                ops.push(delete(&crash_key(batch - KEEP, i)));
            }
        }
        ops.push(put("last", &batch.to_string()));
        store.commit(&ops, true).unwrap();
        writeln!(out, "committed {batch}").unwrap();
        out.flush().unwrap();
    }
}

/// Kills its child when dropped, so that a failing test leaves no writer behind.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn file_store_keeps_every_committed_batch_through_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    let mut reported_total = 0;
    for round in 0..6 {
        let child = Command::new(&exe)
            .args([
                "broker::store::tests::crash_child_writer",
                "--exact",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_DIR, dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut child = KillOnDrop(child);
        let (sender, receiver) = std::sync::mpsc::channel();
        let stdout = child.0.stdout.take().unwrap();
        let reader = std::thread::spawn(move || {
            let mut last = None;
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(number) = line.strip_prefix("committed ") {
                    let number: u64 = number.parse().unwrap();
                    if last.is_none() {
                        let _ = sender.send(());
                    }
                    last = Some(number);
                }
            }
            last
        });
        // Kill at a random moment once the child is writing: most likely within a commit.
        receiver
            .recv_timeout(Duration::from_secs(30))
            .expect("the child commits a batch");
        let pause = getrandom::u64().unwrap() % 150;
        std::thread::sleep(Duration::from_millis(pause));
        child.0.kill().unwrap(); // SIGKILL
        child.0.wait().unwrap();
        let reported = reader.join().unwrap().unwrap();

        let mut store = FileStore::open(dir.path()).unwrap();
        let stored: BTreeMap<String, String> = load_all(&mut store).unwrap().into_iter().collect();
        let last: u64 = stored["last"].parse().unwrap();
        assert!(
            last >= reported,
            "round {round}: batch {reported} was reported committed, the store ends at {last}"
        );
        // At most the one batch whose commit was under way may be there unreported.
        assert!(
            last <= reported + 1,
            "round {round}: {last} > {reported} + 1"
        );
        assert!(
            stored == state_after(last),
            "round {round}: the store holds a partial batch after batch {last}"
        );
        reported_total += reported;
    }
    assert!(reported_total > 0);
}
