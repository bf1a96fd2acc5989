//! A whole store as one byte string, and back: what a node's sealed backup carries.
//!
//! Every tree, every record as stored — shares stay sealed under the node's seal key, which
//! the backup carries beside this (sealed, with the rest, under the operator's backup key; see
//! `hyok-node backup`):
//!
//! ```text
//! "hyok-store/1" ‖ u32be(trees) ‖ ( u32be(len) ‖ name ‖ u64be(records) ‖ ( u32be(len) ‖ key ‖ u32be(len) ‖ value )* )*
//! ```
//!
//! An import goes only into an empty store, and every malformed input is an error, never a
//! panic or a partial store: nothing is written until the whole input has been read.

use crate::error::{Error, Result};
use crate::seal::SealKey;
use crate::store::Store;
use std::path::Path;
use zeroize::Zeroizing;

const MAGIC: &[u8] = b"hyok-store/1";

fn corrupt() -> Error {
    Error::Invalid("not a store export")
}

struct Cursor<'a>(&'a [u8]);

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        let (head, rest) = self.0.split_at_checked(n).ok_or_else(corrupt)?;
        self.0 = rest;
        Ok(head)
    }
    fn u32(&mut self) -> Result<usize> {
        let b: [u8; 4] = self.take(4)?.try_into().map_err(|_| corrupt())?;
        Ok(u32::from_be_bytes(b) as usize)
    }
    fn u64(&mut self) -> Result<u64> {
        let b: [u8; 8] = self.take(8)?.try_into().map_err(|_| corrupt())?;
        Ok(u64::from_be_bytes(b))
    }
    fn field(&mut self) -> Result<&'a [u8]> {
        let n = self.u32()?;
        self.take(n)
    }
}

fn put_field(out: &mut Vec<u8>, bytes: &[u8]) -> Result<()> {
    let n = u32::try_from(bytes.len()).map_err(|_| Error::Invalid("record too large to export"))?;
    out.extend_from_slice(&n.to_be_bytes());
    out.extend_from_slice(bytes);
    Ok(())
}

impl Store {
    /// Every tree and record of this store (see the module docs). The buffer is zeroized when
    /// dropped.
    pub fn export(&self) -> Result<Zeroizing<Vec<u8>>> {
        let mut out = Zeroizing::new(MAGIC.to_vec());
        let names = self.tree_names();
        out.extend_from_slice(&(names.len() as u32).to_be_bytes());
        for name in names {
            let tree = self.tree(&name)?;
            put_field(&mut out, &name)?;
            out.extend_from_slice(&(tree.len() as u64).to_be_bytes());
            for record in tree.iter() {
                let (k, v) = record?;
                put_field(&mut out, &k)?;
                put_field(&mut out, &v)?;
            }
        }
        Ok(out)
    }

    /// Opens a new store in `dir` (which must hold none yet) sealed with `seal`, fills it with
    /// `export` ([`Store::export`]'s output) and flushes it.
    pub fn import(dir: impl AsRef<Path>, seal: SealKey, export: &[u8]) -> Result<Store> {
        let mut c = Cursor(export);
        if c.take(MAGIC.len())? != MAGIC {
            return Err(corrupt());
        }
        let trees = c.u32()?;
        let mut parsed = Vec::new();
        for _ in 0..trees {
            let name = c.field()?;
            let count = c.u64()?;
            let mut records = Vec::new();
            for _ in 0..count {
                records.push((c.field()?, c.field()?));
            }
            parsed.push((name, records));
        }
        if !c.0.is_empty() {
            return Err(corrupt());
        }
        let store = Store::open(dir, seal)?;
        if store.tree_names().iter().any(|name| store.tree(name).is_ok_and(|t| !t.is_empty())) {
            return Err(Error::Invalid("a store is imported only into an empty directory"));
        }
        for (name, records) in parsed {
            let tree = store.tree(name)?;
            for (k, v) in records {
                tree.insert(k, v)?;
            }
        }
        store.flush()?;
        Ok(store)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Usages;

    fn seal(dir: &Path) -> SealKey {
        SealKey::create(dir.join("seal.key")).unwrap()
    }

    #[test]
    fn a_store_exported_and_imported_holds_the_same_records_and_opens_its_shares() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path().join("db"), seal(dir.path())).unwrap();
        store.ec().put_pending("k", 1, Usages::ALL, b"share", b"package", 1).unwrap();
        store.ec().activate("k", 1).unwrap();
        store.put_manifest(b"manifest").unwrap();
        let export = store.export().unwrap();
        let key = store_seal_bytes(dir.path());
        drop(store);

        let other = tempfile::tempdir().unwrap();
        let restored_seal = SealKey::restore(other.path().join("seal.key"), &key).unwrap();
        let restored = Store::import(other.path().join("db"), restored_seal, &export).unwrap();
        assert_eq!(&restored.ec().active_share("k", 1).unwrap().0[..], b"share");
        assert_eq!(restored.manifest().unwrap().as_deref(), Some(&b"manifest"[..]));
        assert_eq!(restored.export().unwrap(), export, "the same records, tree by tree");

        // Never over existing data, never from a damaged export.
        let again = SealKey::load(other.path().join("seal.key")).unwrap();
        drop(restored);
        assert!(Store::import(other.path().join("db"), again, &export).is_err());
        for cut in [0, 5, MAGIC.len() + 2, export.len() - 1] {
            let fresh = tempfile::tempdir().unwrap();
            assert!(Store::import(fresh.path().join("db"), seal(fresh.path()), &export[..cut]).is_err(), "cut {cut}");
        }
        let mut trailing = export.to_vec();
        trailing.push(0);
        let fresh = tempfile::tempdir().unwrap();
        assert!(Store::import(fresh.path().join("db"), seal(fresh.path()), &trailing).is_err());
    }

    fn store_seal_bytes(dir: &Path) -> Zeroizing<Vec<u8>> {
        SealKey::load(dir.join("seal.key")).unwrap().to_backup_bytes()
    }
}
