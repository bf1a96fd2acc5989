//! The audit journal: what makes an audit append durable without a sled flush.
//!
//! Every partial a node computes is audited, and a node acknowledges nothing it has not made
//! durable, so the audit append is on every request's path. sled's flush is only a `pwrite` and
//! a `sync_file_range`: it survives the process dying, not the machine losing power (the disk's
//! write cache is not flushed, nor the new size of sled's growing log file). An append instead
//! goes into sled unflushed and into this file, written in place over zeroes laid down when the
//! file was made, then `fdatasync`ed: the file's size and blocks never change, so by ext4's rules
//! the sync writes this file's new bytes and flushes the disk's cache, without a
//! filesystem-journal commit. It costs latency that sled's flush did not pay, most of all when
//! another writer fills the disk's queue (see the README's stop-24 figures).
//!
//! ```text
//! ( u32be(len) ‖ value )*   value: an audit entry as the `audit` tree stores it (its hash last)
//! ```
//!
//! The records since the last reset continue one another (each `seq` one more, each
//! `prev_hash` the one before's hash); the first record that does not — a zero length, a torn
//! write, a leftover from before the reset — ends the journal. A reset (writing from the start
//! again) happens only when sled has just been flushed, so sled then holds everything the
//! journal did; [`Journal::open`] gives the records back, and the store puts those that extend
//! its chain into sled again.

use crate::audit;
use crate::error::{Error, Result};
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, PoisonError};

/// The journal file's size. At a few hundred bytes per entry it holds some thousands of
/// entries; then sled is flushed once and the journal starts over.
pub const CAPACITY: u64 = 1024 * 1024;

/// The file, in the store's directory.
pub const FILE: &str = "audit.journal";

/// Where the next record goes, and how much was ever written (a count that never goes back,
/// so that a sync knows what it covers across resets).
#[derive(Debug, Default)]
struct Tail {
    offset: u64,
    written: u64,
}

/// An open journal. Appends are serialized by the store's audit lock; syncs may overlap.
#[derive(Debug)]
pub(crate) struct Journal {
    file: File,
    path: PathBuf,
    tail: Mutex<Tail>,
    /// Of [`Tail::written`], how much is known durable.
    synced: Mutex<u64>,
    /// A write or a sync failed since the last reset. After a failed `fdatasync` the kernel may
    /// have dropped the unwritten pages and a later sync report success without them, and after
    /// a failed write the records no longer continue one another: until the store has flushed
    /// and reset, nothing more is appended and no sync vouches for anything.
    failed: AtomicBool,
    /// Test-only faults: the next write is torn and fails, the next sync fails.
    #[cfg(test)]
    pub(crate) fail_write: AtomicBool,
    #[cfg(test)]
    pub(crate) fail_sync: AtomicBool,
}

fn io(path: &Path, source: std::io::Error) -> Error {
    Error::File { path: path.display().to_string(), source }
}

/// Whether `value` is an audit entry whose stored hash is the hash of the rest.
fn intact(value: &[u8]) -> bool {
    value.len() > 32 && audit::hash(&value[..value.len() - 32])[..] == value[value.len() - 32..]
}

/// The records of `bytes` since the last reset: each an intact entry continuing the one
/// before; the first that does not ends them.
fn records(bytes: &[u8]) -> Vec<audit::AuditEntry> {
    let mut out: Vec<audit::AuditEntry> = Vec::new();
    let mut rest = bytes;
    while let Some((len, tail)) = rest.split_first_chunk::<4>() {
        let len = u32::from_be_bytes(*len) as usize;
        let Some((value, tail)) = tail.split_at_checked(len).filter(|_| len > 0) else { break };
        let Some(entry) = intact(value).then(|| audit::decode(value).ok()).flatten() else { break };
        if out.last().is_some_and(|last| !audit::Head::of(last).continued_by(&entry)) {
            break;
        }
        out.push(entry);
        rest = tail;
    }
    out
}

impl Journal {
    /// Opens the journal in `dir` (made, zero-filled and synced if missing or short), with the
    /// entries it holds since its last reset, oldest first. The next append starts a new run
    /// (so call [`Journal::reset`] only once the store has taken those entries in and flushed).
    pub(crate) fn open(dir: &Path) -> Result<(Journal, Vec<audit::AuditEntry>)> {
        let path = dir.join(FILE);
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| io(&path, e))?;
        let len = file.metadata().map_err(|e| io(&path, e))?.len();
        let mut bytes = vec![0u8; usize::try_from(len.min(CAPACITY)).unwrap_or(0)];
        file.read_exact_at(&mut bytes, 0).map_err(|e| io(&path, e))?;
        let entries = records(&bytes);
        if len < CAPACITY {
            // Real zeroes, not a hole or an fallocated range: overwriting them later changes no
            // block mapping, so a data sync needs no filesystem journal commit.
            let zeroes = vec![0u8; usize::try_from(CAPACITY - len).unwrap_or(0)];
            file.write_all_at(&zeroes, len).map_err(|e| io(&path, e))?;
            file.sync_all().map_err(|e| io(&path, e))?;
            File::open(dir).and_then(|d| d.sync_all()).map_err(|e| io(dir, e))?;
        }
        let journal = Journal {
            file,
            path,
            tail: Mutex::new(Tail::default()),
            synced: Mutex::new(0),
            failed: AtomicBool::new(false),
            #[cfg(test)]
            fail_write: AtomicBool::new(false),
            #[cfg(test)]
            fail_sync: AtomicBool::new(false),
        };
        Ok((journal, entries))
    }

    /// Writes `values` (audit entries as stored) after the last record; `Some(end)` to pass to
    /// [`Journal::sync`], or `None` when they do not fit: the caller then flushes the store and
    /// resets. Callers hold the store's audit lock, so records go in `seq` order. An error (this
    /// write failed, or an earlier write or sync did) also leaves it to the caller to flush the
    /// store and reset.
    pub(crate) fn append(&self, values: &[Vec<u8>]) -> Result<Option<u64>> {
        if self.failed.load(Ordering::Acquire) {
            return Err(self.failed_error());
        }
        let mut buf = Vec::with_capacity(values.iter().map(|v| v.len() + 4).sum());
        for value in values {
            let len = u32::try_from(value.len()).map_err(|_| Error::Invalid("audit entry too large"))?;
            buf.extend_from_slice(&len.to_be_bytes());
            buf.extend_from_slice(value);
        }
        let mut tail = self.tail.lock().unwrap_or_else(PoisonError::into_inner);
        // Four bytes stay free at the end, so the record after the last is a zero length or
        // whatever a previous run left there, never the file's end mid-length.
        if tail.offset + buf.len() as u64 + 4 > CAPACITY {
            return Ok(None);
        }
        if let Err(e) = self.write_at(&buf, tail.offset) {
            self.failed.store(true, Ordering::Release);
            return Err(io(&self.path, e));
        }
        tail.offset += buf.len() as u64;
        tail.written += buf.len() as u64;
        Ok(Some(tail.written))
    }

    /// Returns once everything appended up to `end` is on disk. One data sync covers every
    /// append made before it started, so concurrent appenders share it (group commit).
    pub(crate) fn sync(&self, end: u64) -> Result<()> {
        let mut synced = self.synced.lock().unwrap_or_else(PoisonError::into_inner);
        if *synced >= end {
            return Ok(());
        }
        if self.failed.load(Ordering::Acquire) {
            return Err(self.failed_error());
        }
        let covers = self.tail.lock().unwrap_or_else(PoisonError::into_inner).written;
        if let Err(e) = self.sync_data() {
            self.failed.store(true, Ordering::Release);
            return Err(io(&self.path, e));
        }
        *synced = (*synced).max(covers);
        Ok(())
    }

    fn failed_error(&self) -> Error {
        io(&self.path, std::io::Error::other("an earlier write or sync of the audit journal failed"))
    }

    fn write_at(&self, buf: &[u8], offset: u64) -> std::io::Result<()> {
        #[cfg(test)]
        if self.fail_write.swap(false, Ordering::AcqRel) {
            // Torn: half the bytes land, then the write fails.
            self.file.write_all_at(&buf[..buf.len() / 2], offset)?;
            return Err(std::io::Error::other("injected write failure"));
        }
        self.file.write_all_at(buf, offset)
    }

    fn sync_data(&self) -> std::io::Result<()> {
        #[cfg(test)]
        if self.fail_sync.swap(false, Ordering::AcqRel) {
            return Err(std::io::Error::other("injected sync failure"));
        }
        self.file.sync_data()
    }

    /// Starts over at the beginning of the file. Only once the store is flushed (sled then holds
    /// every entry the journal did), with the audit lock held; what was written counts as
    /// durable, and an earlier failure is behind it.
    pub(crate) fn reset(&self) {
        let mut tail = self.tail.lock().unwrap_or_else(PoisonError::into_inner);
        tail.offset = 0;
        let written = tail.written;
        drop(tail);
        let mut synced = self.synced.lock().unwrap_or_else(PoisonError::into_inner);
        *synced = (*synced).max(written);
        self.failed.store(false, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::AuditEvent;

    /// `n` chained entries from `(seq, hash)`, as stored.
    fn chain(from: (u64, [u8; 32]), n: u64, tag: &str) -> Vec<Vec<u8>> {
        let (mut seq, mut prev) = from;
        (0..n)
            .map(|_| {
                seq += 1;
                let event = AuditEvent { operation: tag.into(), ..event(seq) };
                let mut value = audit::encode(seq, &event, &prev);
                let hash = audit::hash(&value);
                value.extend_from_slice(&hash);
                prev = hash;
                value
            })
            .collect()
    }

    fn head(values: &[Vec<u8>]) -> (u64, [u8; 32]) {
        let e = audit::decode(values.last().unwrap()).unwrap();
        (e.seq, e.hash)
    }

    fn seqs(entries: &[audit::AuditEntry]) -> Vec<u64> {
        entries.iter().map(|e| e.seq).collect()
    }

    #[test]
    fn appended_entries_come_back_in_order_and_a_new_file_is_zero_filled() {
        let dir = tempfile::tempdir().unwrap();
        let (journal, entries) = Journal::open(dir.path()).unwrap();
        assert!(entries.is_empty());
        assert_eq!(std::fs::metadata(dir.path().join(FILE)).unwrap().len(), CAPACITY);
        let first = chain((0, [0; 32]), 3, "a");
        let second = chain(head(&first), 2, "b");
        let end = journal.append(&first).unwrap().unwrap();
        journal.sync(end).unwrap();
        let end = journal.append(&second).unwrap().unwrap();
        journal.sync(end).unwrap();
        drop(journal);
        let (_, entries) = Journal::open(dir.path()).unwrap();
        assert_eq!(seqs(&entries), vec![1, 2, 3, 4, 5]);
        assert_eq!(entries[4].event.operation, "b");
        assert_eq!(std::fs::metadata(dir.path().join(FILE)).unwrap().len(), CAPACITY, "never grows");
    }

    #[test]
    fn a_torn_or_altered_record_ends_the_journal_there() {
        let dir = tempfile::tempdir().unwrap();
        let (journal, _) = Journal::open(dir.path()).unwrap();
        let values = chain((0, [0; 32]), 4, "a");
        journal.append(&values).unwrap().unwrap();
        drop(journal);
        let path = dir.path().join(FILE);
        let mut bytes = std::fs::read(&path).unwrap();
        // Entry 3's caller altered on disk: its hash no longer matches, so 3 and 4 are gone.
        let offset = 4 + values[0].len() + 4 + values[1].len() + 4 + 20;
        bytes[offset] ^= 1;
        std::fs::write(&path, &bytes).unwrap();
        assert_eq!(seqs(&Journal::open(dir.path()).unwrap().1), vec![1, 2]);
        // A record cut short (a torn write) ends it the same way.
        let mut bytes = vec![0u8; CAPACITY as usize];
        let mut at = 0;
        for v in &values[..2] {
            bytes[at..at + 4].copy_from_slice(&(v.len() as u32).to_be_bytes());
            bytes[at + 4..at + 4 + v.len()].copy_from_slice(v);
            at += 4 + v.len();
        }
        bytes[at..at + 4].copy_from_slice(&(values[2].len() as u32).to_be_bytes());
        bytes[at + 4..at + 14].copy_from_slice(&values[2][..10]);
        std::fs::write(&path, &bytes).unwrap();
        assert_eq!(seqs(&Journal::open(dir.path()).unwrap().1), vec![1, 2]);
    }

    #[test]
    fn after_a_reset_only_the_new_run_counts_and_old_records_behind_it_are_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let (journal, _) = Journal::open(dir.path()).unwrap();
        let old = chain((0, [0; 32]), 6, "old");
        journal.append(&old).unwrap().unwrap();
        journal.reset();
        let new = chain(head(&old), 2, "new");
        let end = journal.append(&new).unwrap().unwrap();
        journal.sync(end).unwrap();
        drop(journal);
        let (_, entries) = Journal::open(dir.path()).unwrap();
        // Entries 7 and 8 overwrote 1 and part of 2; what is left of the old run does not
        // continue 8, so it is not read.
        assert_eq!(seqs(&entries), vec![7, 8]);
        assert!(entries.iter().all(|e| e.event.operation == "new"));
    }

    #[test]
    fn a_batch_that_does_not_fit_is_refused_so_the_store_flushes_and_resets() {
        let dir = tempfile::tempdir().unwrap();
        let (journal, _) = Journal::open(dir.path()).unwrap();
        let mut from = (0, [0; 32]);
        let mut appended = 0;
        loop {
            let batch = chain(from, 100, "a");
            match journal.append(&batch).unwrap() {
                Some(_) => {
                    from = head(&batch);
                    appended += 100;
                }
                None => break,
            }
        }
        // Thousands of small entries fit; then the journal refuses rather than wrap.
        assert!(appended > 3_000, "{appended} entries");
        journal.reset();
        assert!(journal.append(&chain(from, 100, "a")).unwrap().is_some());
    }

    fn event(n: u64) -> AuditEvent {
        AuditEvent {
            time_ms: n,
            key_id: "k".into(),
            version: 1,
            operation: "evaluate:encrypt".into(),
            request_id: format!("r{n}"),
            caller: "coordinator".into(),
            digest: Vec::new(),
        }
    }

    /// Copies the files of the (closed) store in `from` into `to`, the journal only if `journal`.
    fn copy_store(from: &Path, to: &Path, journal: bool) {
        std::fs::create_dir_all(to).unwrap();
        for entry in std::fs::read_dir(from).unwrap() {
            let entry = entry.unwrap();
            let name = entry.file_name();
            if name == FILE && !journal {
                continue;
            }
            if entry.file_type().unwrap().is_dir() {
                copy_store(&entry.path(), &to.join(&name), true);
            } else {
                std::fs::copy(entry.path(), to.join(&name)).unwrap();
            }
        }
    }

    /// Opens the store in `dir`, waiting briefly for a store of it dropped a moment ago in this
    /// process: sled's IO threads, finishing its flush on drop, hold the directory lock a little
    /// longer (as `hyok-node`'s `open_store` waits too).
    fn reopen(dir: &Path, seal: impl Fn() -> crate::SealKey) -> crate::Store {
        let started = std::time::Instant::now();
        loop {
            match crate::Store::open(dir, seal()) {
                Ok(store) => return store,
                Err(e) if format!("{e:?}").contains("could not acquire lock") && started.elapsed().as_secs() < 5 => {
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                Err(e) => panic!("{e}"),
            }
        }
    }

    /// A store whose sled lost its latest audit entries (as after a crash: they were never
    /// flushed) gets them back from the journal, chain intact; a journal that does not continue
    /// the chain sled holds is refused, not papered over.
    #[test]
    fn entries_sled_lost_come_back_from_the_journal_and_a_gap_is_refused() {
        let scratch = tempfile::tempdir().unwrap();
        let seal = || crate::SealKey::load(scratch.path().join("seal.key")).unwrap();
        crate::SealKey::create(scratch.path().join("seal.key")).unwrap();
        let live = scratch.path().join("live");
        let store = crate::Store::open(&live, seal()).unwrap();
        store.append_audit(&[event(1), event(2)]).unwrap();
        // Any key or manifest change flushes sled: entries 1 and 2 are in sled's own files.
        store.put_manifest(b"manifest").unwrap();
        drop(store);
        let older = scratch.path().join("older");
        copy_store(&live, &older, false);

        let store = reopen(&live, seal);
        let appended = store.append_audit(&[event(3), event(4)]).unwrap();
        drop(store);
        // sled as it was after entry 2, with the journal written since.
        let crashed = scratch.path().join("crashed");
        copy_store(&older, &crashed, true);
        std::fs::copy(live.join(FILE), crashed.join(FILE)).unwrap();
        let recovered = crate::Store::open(&crashed, seal()).unwrap();
        assert_eq!(recovered.audit_len().unwrap(), 4);
        assert_eq!(recovered.verify_audit().unwrap(), Ok(4));
        assert_eq!(recovered.read_audit(3, 10).unwrap(), appended);
        assert_eq!(recovered.audit_head().unwrap(), (4, appended[1].hash));
        // Reopened, it holds them without the journal's help (they were flushed), and appends go on.
        drop(recovered);
        let reopened = reopen(&crashed, seal);
        assert_eq!(reopened.append_audit(&[event(5)]).unwrap()[0].seq, 5);
        assert_eq!(reopened.verify_audit().unwrap(), Ok(5));
        drop(reopened);

        // The live store, reopened, starts its journal over; entries 5 and 6 are all it holds.
        let store = reopen(&live, seal);
        store.append_audit(&[event(5), event(6)]).unwrap();
        drop(store);
        let gap = scratch.path().join("gap");
        copy_store(&older, &gap, true);
        std::fs::copy(live.join(FILE), gap.join(FILE)).unwrap();
        assert!(matches!(crate::Store::open(&gap, seal()), Err(Error::Corrupt(m)) if m.contains("does not continue")));
    }

    /// An append inserts its entries, then the recorded head, without a transaction: a crash
    /// between them leaves sled holding the entries without the head. Opened with the journal
    /// (the append was acknowledged), the store moves its head over them; opened without it,
    /// nothing vouches for them, and the chain's verification reports them.
    #[test]
    fn an_append_whose_head_sled_lost_is_taken_in_from_the_journal_and_reported_without_it() {
        let scratch = tempfile::tempdir().unwrap();
        let seal = || crate::SealKey::load(scratch.path().join("seal.key")).unwrap();
        crate::SealKey::create(scratch.path().join("seal.key")).unwrap();
        let live = scratch.path().join("live");
        let store = crate::Store::open(&live, seal()).unwrap();
        let first = store.append_audit(&[event(1), event(2)]).unwrap();
        let second = store.append_audit(&[event(3), event(4)]).unwrap();
        // sled as a crash between the second append's inserts would leave it.
        let lagging = audit::Head { seq: 2, hash: first[1].hash };
        store.meta.insert(crate::store::AUDIT_HEAD, &lagging.encode()[..]).unwrap();
        store.flush().unwrap();
        assert_eq!(store.audit_head().unwrap(), (2, first[1].hash));
        drop(store);
        let without = scratch.path().join("without");
        copy_store(&live, &without, false);

        let store = reopen(&live, seal);
        assert_eq!(store.audit_head().unwrap(), (4, second[1].hash));
        assert_eq!(store.verify_audit().unwrap(), Ok(4));
        assert_eq!(store.append_audit(&[event(5)]).unwrap()[0].seq, 5);
        drop(store);

        let store = reopen(&without, seal);
        assert_eq!(store.audit_head().unwrap(), (2, first[1].hash));
        assert_eq!(
            store.verify_audit().unwrap(),
            Err(audit::AuditBreak { seq: 3, reason: "entry beyond the recorded head" })
        );
    }

    /// A failed sync leaves the journal vouching for nothing: a later sync does not report the
    /// records durable (the kernel may have dropped them and would report success), nor is
    /// anything appended, until the store has flushed and reset.
    #[test]
    fn after_a_failed_sync_no_sync_vouches_and_no_append_goes_in_until_a_reset() {
        let dir = tempfile::tempdir().unwrap();
        let (journal, _) = Journal::open(dir.path()).unwrap();
        let first = chain((0, [0; 32]), 2, "a");
        let end = journal.append(&first).unwrap().unwrap();
        journal.fail_sync.store(true, Ordering::SeqCst);
        assert!(journal.sync(end).is_err());
        assert!(journal.sync(end).is_err(), "a failed journal vouches for nothing");
        assert!(journal.append(&chain(head(&first), 1, "b")).is_err());
        journal.reset();
        assert!(journal.sync(end).is_ok(), "after the store's flush and the reset, it is durable");
        let end = journal.append(&chain(head(&first), 1, "b")).unwrap().unwrap();
        journal.sync(end).unwrap();
    }

    /// A torn journal write, or a failed sync, does not fail the append nor lose it: the store
    /// flushes sled instead, and entries appended after it, journaled again, survive a crash in
    /// which sled loses everything it had not flushed. (Left as it was, the journal would end
    /// at the torn write, and the acknowledged entries after it would be lost.)
    #[test]
    fn appends_after_a_failed_journal_write_or_sync_survive_a_crash() {
        for fault in ["write", "sync"] {
            let scratch = tempfile::tempdir().unwrap();
            let seal = || crate::SealKey::load(scratch.path().join("seal.key")).unwrap();
            crate::SealKey::create(scratch.path().join("seal.key")).unwrap();
            let live = scratch.path().join("live");
            let store = crate::Store::open(&live, seal()).unwrap();
            store.append_audit(&[event(1), event(2)]).unwrap();
            let flag = if fault == "write" { &store.journal.fail_write } else { &store.journal.fail_sync };
            flag.store(true, Ordering::SeqCst);
            let third = store.append_audit(&[event(3)]);
            assert!(third.is_ok(), "{fault}: the append is made durable another way, not refused");
            assert!(!flag.load(Ordering::SeqCst), "{fault}: the fault was hit");
            let fourth = store.append_audit(&[event(4), event(5)]).unwrap();
            // A crash now: sled's files as they are on disk (the store is not dropped, which
            // would flush), the journal as written.
            let crashed = scratch.path().join("crashed");
            copy_store(&live, &crashed, true);
            let recovered = crate::Store::open(&crashed, seal()).unwrap();
            assert_eq!(recovered.audit_len().unwrap(), 5, "{fault}");
            assert_eq!(recovered.verify_audit().unwrap(), Ok(5), "{fault}");
            assert_eq!(recovered.audit_head().unwrap(), (5, fourth[1].hash), "{fault}");
            drop(recovered);
            drop(store);
        }
    }
}
