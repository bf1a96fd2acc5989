//! The store: durability across reopen, pending versions, policy, audit chain.

use hyok_store::{AuditBreak, AuditEvent, Error, SealKey, Store, Usages};
use std::path::Path;

fn open(dir: &Path) -> Store {
    let key_path = dir.join("seal.key");
    let seal = if key_path.exists() { SealKey::load(&key_path).unwrap() } else { SealKey::create(&key_path).unwrap() };
    Store::open(&dir.join("db"), seal).unwrap()
}

fn event(i: u32) -> AuditEvent {
    AuditEvent {
        time_ms: 1_700_000_000_000 + u64::from(i),
        key_id: "k".into(),
        version: 1,
        operation: "evaluate:encrypt".into(),
        request_id: format!("req-{i}"),
        caller: "coordinator".into(),
    }
}

#[test]
fn pending_versions_are_invisible_until_activated_and_everything_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = open(dir.path());
        store.put_identity(&[9; 32]).unwrap();
        store.put_pending_version("k", 1, Usages::ALL, b"share-1", b"package-1", 5).unwrap();
        assert!(matches!(store.active_share("k", 1), Err(Error::Pending(_))));
        assert!(matches!(store.active_share("k", 2), Err(Error::NotFound(_))));
        store.activate_version("k", 1).unwrap();
        let (share, package) = store.active_share("k", 1).unwrap();
        assert_eq!((&share[..], &package[..]), (&b"share-1"[..], &b"package-1"[..]));
        assert!(matches!(store.put_pending_version("k", 1, Usages::ALL, b"x", b"y", 6), Err(Error::Exists(_))));
        store.put_pending_version("k", 2, Usages::ALL, b"share-2", b"package-2", 7).unwrap();
        store.set_enabled("k", false).unwrap();
    }
    let store = open(dir.path());
    assert_eq!(*store.identity().unwrap().unwrap(), [9; 32]);
    assert_eq!(&store.active_share("k", 1).unwrap().0[..], b"share-1");
    assert!(matches!(store.active_share("k", 2), Err(Error::Pending(_))));
    let meta = store.key("k").unwrap().unwrap();
    assert!(!meta.enabled);
    assert_eq!(meta.usages, Usages::ALL);
    let versions = store.versions("k").unwrap();
    assert_eq!(versions.iter().map(|v| (v.version, v.active)).collect::<Vec<_>>(), vec![(1, true), (2, false)]);
    // Aborting removes only the pending version; an active one is never removed.
    store.remove_pending_version("k", 2).unwrap();
    assert!(store.remove_pending_version("k", 1).is_err());
    assert_eq!(store.versions("k").unwrap().len(), 1);
    assert_eq!(store.list_keys().unwrap(), vec!["k".to_string()]);
}

#[test]
fn an_aborted_new_key_leaves_no_trace() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    store.put_pending_version("fresh", 1, Usages(Usages::ENCRYPT), b"s", b"p", 1).unwrap();
    store.remove_pending_version("fresh", 1).unwrap();
    assert!(store.key("fresh").unwrap().is_none());
    assert!(store.list_keys().unwrap().is_empty());
}

#[test]
fn shares_are_sealed_at_rest_under_the_seal_key() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = open(dir.path());
        store.put_pending_version("k", 1, Usages::ALL, b"very-secret-share-bytes", b"pkg", 1).unwrap();
        store.activate_version("k", 1).unwrap();
    }
    // The plaintext share is nowhere in the database files.
    for entry in walk(&dir.path().join("db")) {
        let bytes = std::fs::read(&entry).unwrap();
        assert!(!bytes.windows(23).any(|w| w == b"very-secret-share-bytes"), "{}", entry.display());
    }
    // With another seal key, the share does not open.
    std::fs::remove_file(dir.path().join("seal.key")).unwrap();
    let store = open(dir.path());
    assert!(matches!(store.active_share("k", 1), Err(Error::Unseal(_))));
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
fn invalid_key_ids_and_oversized_audit_fields_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    for bad in ["", "a/b", "a b", &"x".repeat(129)] {
        assert!(matches!(store.put_pending_version(bad, 1, Usages::ALL, b"s", b"p", 1), Err(Error::Invalid(_))));
    }
    let mut e = event(1);
    e.request_id = "r".repeat(257);
    assert!(store.append_audit(&[e]).is_err());
    assert_eq!(store.verify_audit().unwrap(), Ok(0));
}

#[test]
fn the_audit_chain_verifies_and_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = open(dir.path());
        let entries = store.append_audit(&(1..=5).map(event).collect::<Vec<_>>()).unwrap();
        assert_eq!(entries.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![1, 2, 3, 4, 5]);
        assert_eq!(entries[0].prev_hash, [0; 32]);
        assert_eq!(entries[1].prev_hash, entries[0].hash);
    }
    let store = open(dir.path());
    store.append_audit(&[event(6)]).unwrap();
    assert_eq!(store.verify_audit().unwrap(), Ok(6));
    let read = store.read_audit(5, 10).unwrap();
    assert_eq!(read.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![5, 6]);
    assert_eq!(read[1].prev_hash, read[0].hash);
    assert_eq!(read[1].event, event(6));
}

fn tampered(edit: impl FnOnce(&sled::Tree)) -> Result<u64, AuditBreak> {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    store.append_audit(&(1..=6).map(event).collect::<Vec<_>>()).unwrap();
    edit(store.dangerous_audit_tree());
    store.verify_audit().unwrap()
}

#[test]
fn a_tampered_audit_entry_is_reported_at_the_first_break() {
    // A changed field (the request id of entry 3).
    let r = tampered(|tree| {
        let mut v = tree.get(3u64.to_be_bytes()).unwrap().unwrap().to_vec();
        let at = v.windows(5).position(|w| w == b"req-3").unwrap();
        v[at + 4] = b'9';
        tree.insert(3u64.to_be_bytes(), v).unwrap();
    });
    assert_eq!(r, Err(AuditBreak { seq: 3, reason: "entry altered (hash mismatch)" }));
    // A deleted entry.
    let r = tampered(|tree| {
        tree.remove(4u64.to_be_bytes()).unwrap();
    });
    assert_eq!(r, Err(AuditBreak { seq: 4, reason: "entry missing" }));
    // An entry rewritten with a consistent hash but a forged link.
    let r = tampered(|tree| {
        let v = tree.get(2u64.to_be_bytes()).unwrap().unwrap().to_vec();
        let mut body = v[..v.len() - 64].to_vec();
        body.extend_from_slice(&[7; 32]);
        let hash: [u8; 32] = <sha2::Sha256 as sha2::Digest>::digest(&body).into();
        body.extend_from_slice(&hash);
        tree.insert(2u64.to_be_bytes(), body).unwrap();
    });
    assert_eq!(r, Err(AuditBreak { seq: 2, reason: "previous-hash link broken" }));
    // The last entry removed is not detectable from the chain alone; a truncated chain still
    // verifies up to its end.
    assert_eq!(
        tampered(|tree| {
            tree.remove(6u64.to_be_bytes()).unwrap();
        }),
        Ok(5)
    );
}
