//! The store: durability across reopen, pending versions, policy, size limits, and the audit
//! chain — including tampering done directly on the sled trees while the store is closed.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test helpers outside #[test] functions fail loudly"
)]

use hyok_store::{AuditBreak, AuditEvent, Error, Family, Keys, SealKey, Store, Usages, VersionInfo};
use sha2::{Digest, Sha256};
use std::path::Path;
use std::sync::Arc;

/// `f` until it stops failing because a store just dropped in this process still holds the
/// directory lock (sled's IO threads let go of it a moment after the handle is dropped).
fn retry_locked<T, E: std::fmt::Debug>(mut f: impl FnMut() -> Result<T, E>) -> T {
    let started = std::time::Instant::now();
    loop {
        match f() {
            Ok(v) => return v,
            Err(e) if format!("{e:?}").contains("could not acquire lock") && started.elapsed().as_secs() < 10 => {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            Err(e) => panic!("{e:?}"),
        }
    }
}

fn open(dir: &Path) -> Store {
    let key_path = dir.join("seal.key");
    if !key_path.exists() {
        SealKey::create(&key_path).unwrap();
    }
    retry_locked(|| Store::open(dir.join("db"), SealKey::load(&key_path).unwrap()))
}

/// Opens the closed store's sled database directly, as an attacker with disk access would.
fn with_raw_db(dir: &Path, edit: impl FnOnce(&sled::Db)) {
    let db = retry_locked(|| sled::Config::new().path(dir.join("db")).flush_every_ms(None).open());
    edit(&db);
    db.flush().unwrap();
}

fn event(i: u32) -> AuditEvent {
    AuditEvent {
        time_ms: 1_700_000_000_000 + u64::from(i),
        key_id: "k".into(),
        version: 1,
        operation: "evaluate:encrypt".into(),
        request_id: format!("req-{i}"),
        caller: "coordinator".into(),
        digest: if i.is_multiple_of(2) { vec![i as u8; 16] } else { Vec::new() },
    }
}

fn version_key(key_id: &str, version: u32) -> Vec<u8> {
    [key_id.as_bytes(), &[0], &version.to_be_bytes()].concat()
}

#[test]
fn pending_versions_are_invisible_until_activated_and_everything_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = open(dir.path());
        assert!(store.identity().unwrap().is_none());
        store.put_identity(&[9; 32]).unwrap();
        store.ec().put_pending("k", 1, Usages::ALL, b"share-1", b"package-1", 5).unwrap();
        assert!(matches!(store.ec().active_share("k", 1), Err(Error::Pending(_))));
        assert!(matches!(store.ec().active_share("k", 2), Err(Error::NotFound(_))));
        assert!(matches!(store.ec().activate("k", 2), Err(Error::NotFound(_))));
        store.ec().activate("k", 1).unwrap();
        store.ec().activate("k", 1).unwrap(); // idempotent
        let (share, package) = store.ec().active_share("k", 1).unwrap();
        assert_eq!((&share[..], &package[..]), (&b"share-1"[..], &b"package-1"[..]));
        assert!(matches!(store.ec().put_pending("k", 1, Usages::ALL, b"x", b"y", 6), Err(Error::Exists(_))));
        store.ec().put_pending("k", 2, Usages::ALL, b"share-2", b"package-2", 7).unwrap();
        assert!(matches!(store.ec().put_pending("k", 2, Usages::ALL, b"x", b"y", 8), Err(Error::Exists(_))));
        assert!(!store.ec().set_enabled("k", false).unwrap().enabled);
    }
    let store = open(dir.path());
    assert_eq!(*store.identity().unwrap().unwrap(), [9; 32]);
    assert_eq!(&store.ec().active_share("k", 1).unwrap().0[..], b"share-1");
    assert!(matches!(store.ec().active_share("k", 2), Err(Error::Pending(_))));
    let meta = store.ec().key("k").unwrap().unwrap();
    assert_eq!((meta.enabled, meta.usages, meta.created_at_ms), (false, Usages::ALL, 5));
    assert_eq!(
        store.ec().version("k", 2).unwrap(),
        Some(VersionInfo { version: 2, package: b"package-2".to_vec(), active: false, created_at_ms: 7 })
    );
    assert_eq!(store.ec().version("k", 3).unwrap(), None);
    let versions = store.ec().versions("k").unwrap();
    assert_eq!(versions.iter().map(|v| (v.version, v.active)).collect::<Vec<_>>(), vec![(1, true), (2, false)]);
    // Aborting removes only the pending version; an active one is never removed.
    store.ec().remove_pending("k", 2).unwrap();
    store.ec().remove_pending("k", 2).unwrap(); // already gone: Ok
    assert!(matches!(store.ec().remove_pending("k", 1), Err(Error::Exists(_))));
    assert_eq!(store.ec().versions("k").unwrap().len(), 1);
    assert_eq!(store.ec().list().unwrap(), vec!["k".to_string()]);
    // Re-enabling persists too.
    store.ec().set_enabled("k", true).unwrap();
    drop(store);
    assert!(open(dir.path()).ec().key("k").unwrap().unwrap().enabled);
}

#[test]
fn versions_of_keys_sharing_a_prefix_stay_apart() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    store.ec().put_pending("k", 1, Usages::ALL, b"a", b"pa", 1).unwrap();
    store.ec().put_pending("k.a", 1, Usages::ALL, b"b", b"pb", 1).unwrap();
    store.ec().put_pending("k", 300, Usages::ALL, b"c", b"pc", 1).unwrap();
    assert_eq!(store.ec().versions("k").unwrap().iter().map(|v| v.version).collect::<Vec<_>>(), vec![1, 300]);
    assert_eq!(store.ec().versions("k.a").unwrap().len(), 1);
    assert_eq!(store.ec().list().unwrap(), vec!["k".to_string(), "k.a".to_string()]);
    assert!(store.ec().versions("none").unwrap().is_empty());
    assert!(matches!(store.ec().set_enabled("none", false), Err(Error::NotFound(_))));
}

/// A key whose only version was aborted has no policy record left, in either family.
fn assert_an_aborted_new_key_leaves_no_trace<F: Family>(keys: Keys<'_, F>, usages: Usages) {
    keys.put_pending("fresh", 1, usages, b"s", b"p", 1).unwrap();
    keys.remove_pending("fresh", 1).unwrap();
    assert!(keys.key("fresh").unwrap().is_none(), "{keys:?}");
    assert!(keys.list().unwrap().is_empty(), "{keys:?}");
}

#[test]
fn an_aborted_new_key_leaves_no_trace() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    assert_an_aborted_new_key_leaves_no_trace(store.ec(), Usages(Usages::ENCRYPT));
    assert_an_aborted_new_key_leaves_no_trace(store.rsa(), Usages(Usages::DECRYPT));
}

#[test]
fn a_new_version_must_keep_the_keys_usages() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    store.ec().put_pending("k", 1, Usages(Usages::WRAP | Usages::UNWRAP), b"s", b"p", 1).unwrap();
    let r = store.ec().put_pending("k", 2, Usages::ALL, b"s", b"p", 2);
    assert!(matches!(r, Err(Error::Invalid(_))));
    assert!(store.ec().version("k", 2).unwrap().is_none());
    store.ec().put_pending("k", 2, Usages(Usages::WRAP | Usages::UNWRAP), b"s", b"p", 2).unwrap();
}

#[test]
fn shares_are_sealed_at_rest_under_the_seal_key() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = open(dir.path());
        store.put_identity(&[0x5a; 32]).unwrap();
        store.ec().put_pending("k", 1, Usages::ALL, b"very-secret-share-bytes", b"pkg", 1).unwrap();
        store.ec().activate("k", 1).unwrap();
    }
    // Neither the plaintext share nor the identity secret is anywhere in the database files.
    for entry in walk(&dir.path().join("db")) {
        let bytes = std::fs::read(&entry).unwrap();
        assert!(!bytes.windows(23).any(|w| w == b"very-secret-share-bytes"), "{}", entry.display());
        assert!(!bytes.windows(32).any(|w| w == [0x5a; 32]), "{}", entry.display());
    }
    // With another seal key, nothing opens.
    std::fs::remove_file(dir.path().join("seal.key")).unwrap();
    let store = open(dir.path());
    assert!(matches!(store.ec().active_share("k", 1), Err(Error::Unseal(_))));
    assert!(matches!(store.identity(), Err(Error::Unseal(_))));
}

#[test]
fn a_sealed_share_moved_to_another_record_does_not_open() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = open(dir.path());
        store.ec().put_pending("k", 1, Usages::ALL, b"share-1", b"p", 1).unwrap();
        store.ec().put_pending("k", 2, Usages::ALL, b"share-2", b"p", 1).unwrap();
        store.ec().put_pending("j", 1, Usages::ALL, b"share-j", b"p", 1).unwrap();
        for (k, v) in [("k", 1), ("k", 2), ("j", 1)] {
            store.ec().activate(k, v).unwrap();
        }
    }
    with_raw_db(dir.path(), |db| {
        let versions = db.open_tree("versions").unwrap();
        let k1 = versions.get(version_key("k", 1)).unwrap().unwrap();
        versions.insert(version_key("k", 2), k1.clone()).unwrap();
        versions.insert(version_key("j", 1), k1).unwrap();
    });
    let store = open(dir.path());
    assert_eq!(&store.ec().active_share("k", 1).unwrap().0[..], b"share-1");
    assert!(matches!(store.ec().active_share("k", 2), Err(Error::Unseal(_))), "moved to another version");
    assert!(matches!(store.ec().active_share("j", 1), Err(Error::Unseal(_))), "moved to another key");
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() { out.extend(walk(&p)) } else { out.push(p) }
    }
    out
}

#[test]
fn invalid_key_ids_and_oversized_inputs_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let long = "x".repeat(129);
    for bad in ["", "a/b", "a b", "a\0b", "ключ", long.as_str()] {
        assert!(matches!(store.ec().put_pending(bad, 1, Usages::ALL, b"s", b"p", 1), Err(Error::Invalid(_))));
        assert!(matches!(store.ec().active_share(bad, 1), Err(Error::Invalid(_))));
        assert!(matches!(store.ec().key(bad), Err(Error::Invalid(_))));
        assert!(matches!(store.ec().versions(bad), Err(Error::Invalid(_))));
    }
    store.ec().put_pending(&"x".repeat(128), 1, Usages::ALL, b"s", b"p", 1).unwrap();
    for usages in [Usages(0), Usages(0x10)] {
        assert!(matches!(store.ec().put_pending("k", 1, usages, b"s", b"p", 1), Err(Error::Invalid(_))));
    }
    let huge = vec![0u8; 64 * 1024 + 1];
    assert!(matches!(store.ec().put_pending("k", 1, Usages::ALL, &huge, b"p", 1), Err(Error::Invalid(_))));
    assert!(store.ec().key("k").unwrap().is_none(), "a refused version leaves no record");

    type Edit = fn(&mut AuditEvent);
    let too_long: [Edit; 5] = [
        |e| e.request_id = "r".repeat(257),
        |e| e.caller = "c".repeat(513),
        |e| e.operation = "o".repeat(65),
        |e| e.operation.clear(),
        |e| e.key_id = "a/b".into(),
    ];
    for edit in too_long {
        let mut e = event(1);
        edit(&mut e);
        // One bad event refuses the whole batch.
        assert!(matches!(store.append_audit(&[event(0), e]), Err(Error::Invalid(_))));
    }
    assert_eq!(store.verify_audit().unwrap(), Ok(0));
    let mut at_limit = event(1);
    (at_limit.request_id, at_limit.caller, at_limit.key_id) = ("r".repeat(256), "c".repeat(512), String::new());
    store.append_audit(&[at_limit.clone()]).unwrap();
    assert_eq!(store.read_audit(0, 10).unwrap()[0].event, at_limit);
}

#[test]
fn the_audit_chain_verifies_and_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = open(dir.path());
        assert_eq!(store.verify_audit().unwrap(), Ok(0));
        assert_eq!(store.audit_len().unwrap(), 0);
        let entries = store.append_audit(&(1..=5).map(event).collect::<Vec<_>>()).unwrap();
        assert_eq!(entries.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![1, 2, 3, 4, 5]);
        assert_eq!(entries[0].prev_hash, [0; 32]);
        for pair in entries.windows(2) {
            assert_eq!(pair[1].prev_hash, pair[0].hash);
        }
        assert!(store.append_audit(&[]).unwrap().is_empty());
        assert_eq!(store.verify_audit().unwrap(), Ok(5));
    }
    let store = open(dir.path());
    let sixth = store.append_audit(&[event(6)]).unwrap();
    assert_eq!(sixth[0].seq, 6);
    assert_eq!(store.verify_audit().unwrap(), Ok(6));
    assert_eq!(store.audit_len().unwrap(), 6);
    let read = store.read_audit(5, 10).unwrap();
    assert_eq!(read.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![5, 6]);
    assert_eq!(read[1], sixth[0]);
    assert_eq!(store.read_audit(1, 2).unwrap().len(), 2);
    assert!(store.read_audit(7, 10).unwrap().is_empty());
}

#[test]
fn concurrent_appends_form_one_chain_and_verify_never_misreports_them() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(open(dir.path()));
    let writers: Vec<_> = (0..4)
        .map(|t| {
            let store = Arc::clone(&store);
            std::thread::spawn(move || {
                for i in 0..25 {
                    store.append_audit(&[event(t * 100 + i)]).unwrap();
                }
            })
        })
        .collect();
    while !writers.iter().all(|w| w.is_finished()) {
        assert!(store.verify_audit().unwrap().is_ok());
    }
    for w in writers {
        w.join().unwrap();
    }
    assert_eq!(store.verify_audit().unwrap(), Ok(100));
}

#[test]
fn concurrent_puts_of_one_version_store_it_once() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(open(dir.path()));
    let results: Vec<_> = (0..4u8)
        .map(|t| {
            let store = Arc::clone(&store);
            std::thread::spawn(move || store.ec().put_pending("k", 1, Usages::ALL, &[t], b"p", 1).is_ok())
        })
        .collect::<Vec<_>>()
        .into_iter()
        .map(|h| h.join().unwrap())
        .collect();
    assert_eq!(results.iter().filter(|ok| **ok).count(), 1);
}

/// Appends six entries, closes the store, lets `edit` change the raw trees, reopens, verifies.
fn tampered(edit: impl FnOnce(&sled::Tree, &sled::Tree)) -> Result<u64, AuditBreak> {
    let dir = tempfile::tempdir().unwrap();
    open(dir.path()).append_audit(&(1..=6).map(event).collect::<Vec<_>>()).unwrap();
    with_raw_db(dir.path(), |db| edit(&db.open_tree("audit").unwrap(), &db.open_tree("meta").unwrap()));
    open(dir.path()).verify_audit().unwrap()
}

fn get(tree: &sled::Tree, seq: u64) -> Vec<u8> {
    tree.get(seq.to_be_bytes()).unwrap().unwrap().to_vec()
}

/// Replaces entry `seq`'s hash with the SHA-256 of its (edited) encoding.
fn rehash(mut v: Vec<u8>) -> Vec<u8> {
    let body = v.len() - 32;
    let hash = Sha256::digest(&v[..body]);
    v[body..].copy_from_slice(&hash);
    v
}

fn change_request_id(v: &mut [u8], seq: u8) {
    let needle = [b"req-".as_slice(), &[b'0' + seq]].concat();
    let at = v.windows(5).position(|w| w == needle).unwrap();
    v[at + 4] = b'9';
}

#[test]
fn an_untouched_chain_verifies_after_reopen() {
    assert_eq!(tampered(|_, _| {}), Ok(6));
}

#[test]
fn a_tampered_audit_field_is_reported_at_its_entry() {
    let r = tampered(|audit, _| {
        let mut v = get(audit, 3);
        change_request_id(&mut v, 3);
        audit.insert(3u64.to_be_bytes(), v).unwrap();
    });
    assert_eq!(r, Err(AuditBreak { seq: 3, reason: "entry altered (hash mismatch)" }));
}

#[test]
fn a_tampered_and_rehashed_entry_is_reported_at_the_next_link() {
    let r = tampered(|audit, _| {
        let mut v = get(audit, 3);
        change_request_id(&mut v, 3);
        audit.insert(3u64.to_be_bytes(), rehash(v)).unwrap();
    });
    assert_eq!(r, Err(AuditBreak { seq: 4, reason: "previous-hash link broken" }));
}

#[test]
fn a_deleted_audit_entry_is_reported() {
    let r = tampered(|audit, _| {
        audit.remove(4u64.to_be_bytes()).unwrap();
    });
    assert_eq!(r, Err(AuditBreak { seq: 4, reason: "entry missing" }));
}

#[test]
fn an_altered_prev_hash_is_reported_with_or_without_rehashing() {
    for with_rehash in [false, true] {
        let r = tampered(|audit, _| {
            let mut v = get(audit, 2);
            let at = v.len() - 64;
            v[at] ^= 1;
            audit.insert(2u64.to_be_bytes(), if with_rehash { rehash(v) } else { v }).unwrap();
        });
        assert_eq!(r, Err(AuditBreak { seq: 2, reason: "previous-hash link broken" }), "rehash: {with_rehash}");
    }
}

#[test]
fn entries_removed_from_the_end_are_reported_against_the_recorded_head() {
    let r = tampered(|audit, _| {
        audit.remove(6u64.to_be_bytes()).unwrap();
        audit.remove(5u64.to_be_bytes()).unwrap();
    });
    assert_eq!(r, Err(AuditBreak { seq: 5, reason: "entries missing at the end" }));
    // The last entry rewritten consistently (its own hash recomputed) no longer matches the head.
    let r = tampered(|audit, _| {
        let mut v = get(audit, 6);
        change_request_id(&mut v, 6);
        audit.insert(6u64.to_be_bytes(), rehash(v)).unwrap();
    });
    assert_eq!(r, Err(AuditBreak { seq: 6, reason: "entry differs from the recorded head" }));
    // Removing the recorded head itself is reported too.
    assert_eq!(
        tampered(|_, meta| {
            meta.remove("audit_head").unwrap();
        }),
        Err(AuditBreak { seq: 7, reason: "recorded head missing" })
    );
}

#[test]
fn appending_after_a_truncation_leaves_a_visible_gap() {
    let dir = tempfile::tempdir().unwrap();
    open(dir.path()).append_audit(&(1..=3).map(event).collect::<Vec<_>>()).unwrap();
    with_raw_db(dir.path(), |db| {
        db.open_tree("audit").unwrap().remove(3u64.to_be_bytes()).unwrap();
    });
    let store = open(dir.path());
    assert_eq!(store.append_audit(&[event(4)]).unwrap()[0].seq, 4, "numbering continues from the recorded head");
    assert_eq!(store.verify_audit().unwrap(), Err(AuditBreak { seq: 3, reason: "entry missing" }));
}

#[test]
fn a_forged_entry_past_the_head_is_reported() {
    let r = tampered(|audit, _| {
        // A well-formed, correctly linked 7th entry that the store never wrote.
        let mut v = get(audit, 6);
        let prev: [u8; 32] = v[v.len() - 32..].try_into().unwrap();
        v[..8].copy_from_slice(&7u64.to_be_bytes());
        let link = v.len() - 64;
        v[link..link + 32].copy_from_slice(&prev);
        audit.insert(7u64.to_be_bytes(), rehash(v)).unwrap();
    });
    assert_eq!(r, Err(AuditBreak { seq: 7, reason: "entry beyond the recorded head" }));
}

#[test]
fn entries_read_off_a_node_verify_and_any_edit_is_located() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    store.append_audit(&(0..6).map(event).collect::<Vec<_>>()).unwrap();
    let entries = store.read_audit(1, 100).unwrap();
    assert_eq!(hyok_store::audit::verify_entries(entries.clone()), Ok(6));

    let mut edited = entries.clone();
    edited[3].event.operation = "disable".into();
    assert_eq!(hyok_store::audit::verify_entries(edited).unwrap_err().seq, 4);

    let mut gap = entries.clone();
    gap.remove(2);
    assert_eq!(hyok_store::audit::verify_entries(gap).unwrap_err().seq, 3);

    // Rewriting an entry and its hash consistently breaks the next entry's link.
    let mut rehashed = entries.clone();
    rehashed[1].event.caller = "someone else".into();
    rehashed[1].hash = rehashed[1].computed_hash();
    let b = hyok_store::audit::verify_entries(rehashed).unwrap_err();
    assert_eq!((b.seq, b.reason), (3, "does not link to the previous entry"));
}

// ---- threshold RSA keys -------------------------------------------------------------------

#[test]
fn rsa_versions_are_pending_until_activated_survive_reopen_and_live_apart_from_ec_keys() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = open(dir.path());
        // The same name as an EC key: the two families do not see each other.
        store.ec().put_pending("dke", 1, Usages::ALL, b"ec-share", b"ec-pkg", 1).unwrap();
        store.rsa().put_pending("dke", 1, Usages(Usages::DECRYPT), b"rsa-share-1", b"rsa-pkg-1", 5).unwrap();
        assert!(matches!(store.rsa().active_share("dke", 1), Err(Error::Pending(_))));
        assert!(matches!(store.rsa().active_share("dke", 2), Err(Error::NotFound(_))));
        assert!(matches!(
            store.rsa().put_pending("dke", 1, Usages(Usages::DECRYPT), b"again", b"rsa-pkg-1", 6),
            Err(Error::Exists(_))
        ));
        store.rsa().activate("dke", 1).unwrap();
        store.rsa().activate("dke", 1).unwrap(); // idempotent
        store.rsa().put_pending("dke", 2, Usages(Usages::DECRYPT), b"rsa-share-2", b"rsa-pkg-2", 7).unwrap();
        assert!(matches!(store.rsa().activate("dke", 3), Err(Error::NotFound(_))));
        // The EC version is still pending: RSA activation did not touch it.
        assert!(matches!(store.ec().active_share("dke", 1), Err(Error::Pending(_))));
    }
    let store = open(dir.path());
    let (share, package) = store.rsa().active_share("dke", 1).unwrap();
    assert_eq!((&share[..], &package[..]), (&b"rsa-share-1"[..], &b"rsa-pkg-1"[..]));
    assert_eq!(
        store.rsa().versions("dke").unwrap(),
        vec![
            VersionInfo { version: 1, package: b"rsa-pkg-1".to_vec(), active: true, created_at_ms: 5 },
            VersionInfo { version: 2, package: b"rsa-pkg-2".to_vec(), active: false, created_at_ms: 7 },
        ]
    );
    assert_eq!(store.rsa().list().unwrap(), vec!["dke".to_owned()]);
    assert_eq!(store.ec().list().unwrap(), vec!["dke".to_owned()]);
    assert_eq!(store.rsa().key("dke").unwrap().unwrap().usages, Usages(Usages::DECRYPT));
    assert!(!store.rsa().version("dke", 2).unwrap().unwrap().active);
    // Dropping the pending version 2 keeps version 1; an active one is never dropped.
    store.rsa().remove_pending("dke", 2).unwrap();
    assert!(store.rsa().version("dke", 2).unwrap().is_none());
    assert!(matches!(store.rsa().remove_pending("dke", 1), Err(Error::Exists(_))));
    assert_eq!(store.rsa().active_share("dke", 1).unwrap().1, b"rsa-pkg-1");
}

#[test]
fn rsa_disable_is_per_family() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    store.ec().put_pending("k", 1, Usages::ALL, b"ec", b"p", 1).unwrap();
    store.rsa().put_pending("k", 1, Usages(Usages::DECRYPT), b"rsa", b"p", 1).unwrap();
    assert!(!store.rsa().set_enabled("k", false).unwrap().enabled);
    assert!(!store.rsa().key("k").unwrap().unwrap().enabled);
    assert!(store.ec().key("k").unwrap().unwrap().enabled, "disabling the RSA key leaves the EC key alone");
    assert!(matches!(store.rsa().set_enabled("nope", false), Err(Error::NotFound(_))));
    assert!(matches!(
        store.rsa().put_pending("a/b", 1, Usages(Usages::DECRYPT), b"s", b"p", 1),
        Err(Error::Invalid(_))
    ));
}

#[test]
fn an_rsa_share_is_sealed_at_rest_and_does_not_open_as_an_ec_share() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = open(dir.path());
        store.rsa().put_pending("k", 1, Usages(Usages::DECRYPT), b"very-secret-rsa-share!!", b"p", 1).unwrap();
        store.rsa().activate("k", 1).unwrap();
        store.ec().put_pending("k", 1, Usages::ALL, b"ec-share", b"p", 1).unwrap();
        store.ec().activate("k", 1).unwrap();
    }
    for entry in walk(&dir.path().join("db")) {
        let bytes = std::fs::read(&entry).unwrap();
        assert!(!bytes.windows(23).any(|w| w == b"very-secret-rsa-share!!"), "{}", entry.display());
    }
    // Move the RSA record over the EC one: it does not open there.
    with_raw_db(dir.path(), |db| {
        let rsa = db.open_tree("rsa_versions").unwrap().get(version_key("k", 1)).unwrap().unwrap();
        db.open_tree("versions").unwrap().insert(version_key("k", 1), rsa).unwrap();
    });
    let store = open(dir.path());
    assert!(matches!(store.ec().active_share("k", 1), Err(Error::Unseal(_))));
    assert_eq!(&store.rsa().active_share("k", 1).unwrap().0[..], b"very-secret-rsa-share!!");
}

#[test]
fn an_rsa_key_has_decrypt_usage_only() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    for usages in [Usages::ALL, Usages(Usages::ENCRYPT), Usages(Usages::DECRYPT | Usages::UNWRAP)] {
        assert!(matches!(store.rsa().put_pending("k", 1, usages, b"s", b"p", 1), Err(Error::Invalid(_))));
    }
    assert!(store.rsa().key("k").unwrap().is_none(), "a refused version leaves no record");
    // EC keys choose their own usages.
    store.ec().put_pending("k", 1, Usages(Usages::ENCRYPT), b"s", b"p", 1).unwrap();
}

/// The bytes on disk, per family: tree names, record layout and the associated data each share
/// is sealed under. Data directories written before the family handles must keep opening.
#[test]
fn the_on_disk_format_of_both_families_is_fixed() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = open(dir.path());
        store.ec().put_pending("k", 7, Usages(Usages::WRAP | Usages::UNWRAP), b"ec-share", b"ec-pkg", 0x0102).unwrap();
        store.ec().activate("k", 7).unwrap();
        store.rsa().put_pending("k", 9, Usages(Usages::DECRYPT), b"rsa-share", b"rsa-pkg", 0x0304).unwrap();
    }
    let seal = SealKey::load(dir.path().join("seal.key")).unwrap();
    with_raw_db(dir.path(), |db| {
        let cases = [
            ("keys", "versions", 7u32, 12u8, 0x0102u64, 1u8, &b"ec-pkg"[..], "hyok/v1/share/k/7", &b"ec-share"[..]),
            ("rsa_keys", "rsa_versions", 9, 2, 0x0304, 0, b"rsa-pkg", "hyok/v1/rsa-share/k/9", b"rsa-share"),
        ];
        for (keys, versions, version, usages, created, state, package, aad, share) in cases {
            let meta = db.open_tree(keys).unwrap().get("k").unwrap().unwrap();
            assert_eq!(&meta[..], [&[1, usages, 1][..], &created.to_be_bytes()].concat(), "{keys}");
            let record = db.open_tree(versions).unwrap().get(version_key("k", version)).unwrap().unwrap();
            let header =
                [&[1, state][..], &created.to_be_bytes(), &(package.len() as u32).to_be_bytes(), package].concat();
            assert_eq!(&record[..header.len()], header, "{versions}");
            assert_eq!(&seal.open(aad.as_bytes(), &record[header.len()..]).unwrap()[..], share, "{aad}");
        }
    });
}

#[test]
fn the_highest_version_number_is_stored_and_listed_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    store.ec().put_pending("k", u32::MAX, Usages::ALL, b"s-max", b"p", 1).unwrap();
    store.ec().put_pending("k", 1, Usages::ALL, b"s-1", b"p", 1).unwrap();
    store.ec().activate("k", u32::MAX).unwrap();
    assert_eq!(&store.ec().active_share("k", u32::MAX).unwrap().0[..], b"s-max");
    let listed: Vec<_> = store.ec().versions("k").unwrap().iter().map(|v| (v.version, v.active)).collect();
    assert_eq!(listed, vec![(1, false), (u32::MAX, true)]);
}

#[test]
fn a_veto_is_kept_apart_from_the_enabled_flag_survives_reopen_and_only_a_lift_removes_it() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = open(dir.path());
        store.ec().put_pending("k", 1, Usages::ALL, b"share", b"package", 1).unwrap();
        store.ec().activate("k", 1).unwrap();
        assert_eq!(store.vetoed("k").unwrap(), None);
        let veto = store.veto("k", "legal hold", 5).unwrap();
        assert_eq!((veto.time_ms, veto.reason.as_str()), (5, "legal hold"));
        // A second veto keeps the first one's record.
        assert_eq!(store.veto("k", "again", 9).unwrap(), veto);
        // The admin flag moves independently and never touches the veto.
        assert!(!store.ec().set_enabled("k", false).unwrap().enabled);
        assert!(store.ec().set_enabled("k", true).unwrap().enabled);
        assert_eq!(store.vetoed("k").unwrap(), Some(veto.clone()));
    }
    let store = open(dir.path());
    let veto = store.vetoed("k").unwrap().expect("the veto survives a reopen");
    assert_eq!(veto.reason, "legal hold");
    assert_eq!(store.vetoes().unwrap(), vec![("k".to_owned(), veto.clone())]);
    assert_eq!(store.lift("k").unwrap(), Some(veto));
    assert_eq!(store.lift("k").unwrap(), None, "lifting twice finds nothing");
    assert!(store.vetoes().unwrap().is_empty());
    assert!(matches!(store.veto("a/b", "", 1), Err(Error::Invalid(_))));
    assert!(matches!(store.veto("k", &"x".repeat(hyok_store::MAX_VETO_REASON + 1), 1), Err(Error::Invalid(_))));
    assert!(matches!(store.veto("k", "two\nlines", 1), Err(Error::Invalid(_))));
}

#[test]
fn a_manifest_is_stored_replaced_and_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = open(dir.path());
        assert_eq!(store.manifest().unwrap(), None);
        store.put_manifest(b"first").unwrap();
        store.put_manifest(b"second").unwrap();
        assert!(matches!(store.put_manifest(b""), Err(Error::Invalid(_))));
        assert!(matches!(
            store.put_manifest(&vec![0; hyok_store::store::MAX_MANIFEST_LEN + 1]),
            Err(Error::Invalid(_))
        ));
    }
    let store = open(dir.path());
    assert_eq!(store.manifest().unwrap().as_deref(), Some(&b"second"[..]));
}

#[test]
fn a_policy_is_stored_sealed_replaced_and_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = open(dir.path());
        assert!(store.policy().unwrap().is_none());
        store.put_policy(b"first secret-access-key-XYZ").unwrap();
        store.put_policy(b"second secret-access-key-XYZ").unwrap();
        assert!(matches!(store.put_policy(b""), Err(Error::Invalid(_))));
    }
    let store = open(dir.path());
    assert_eq!(store.policy().unwrap().as_deref().map(Vec::as_slice), Some(&b"second secret-access-key-XYZ"[..]));
    drop(store);
    // Sealed at rest: the secret is nowhere in the store's files.
    for entry in walk(dir.path()) {
        let bytes = std::fs::read(&entry).unwrap();
        assert!(
            !bytes.windows(20).any(|w| w == b"secret-access-key-XY"),
            "{} holds the policy in clear",
            entry.display()
        );
    }
}
