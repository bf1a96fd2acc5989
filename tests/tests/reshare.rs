//! Keys outlive their nodes: every node of a `hyokctl dev` cluster wiped and replaced in turn
//! (`hyokctl node replace N`) while traffic runs, and a proactive refresh; afterwards no
//! original share exists anywhere, yet everything encrypted before still decrypts.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test helpers outside #[test] functions fail loudly"
)]

use hyok_e2e::demo::{self, KEY, RSA_KEY, rsa_decrypt, traffic};
use hyok_e2e::{Cluster, Signed, eventually, hyokctl};
use hyok_proto::v1 as pb;
use hyok_threshold::rsa::{RsaPublicKey, oaep};
use hyok_threshold::{GroupPublicKey, PublicKeyPackage, Wire, kem};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

async fn unwrap(client: &mut Signed, version: u32, wrapped: &[u8]) -> Result<Vec<u8>, tonic::Status> {
    let evidence = Some(client.signer.unwrap(KEY, version, wrapped, b"label"));
    let request = pb::UnwrapRequest {
        key_id: KEY.into(),
        version,
        wrapped: wrapped.to_vec(),
        label: b"label".to_vec(),
        request_id: "reshare".into(),
        evidence,
    };
    Ok(client.unwrap(request).await?.into_inner().data_key)
}

/// A content key wrapped to the DKE key's primary version, as Office wraps one, and the version.
async fn dke_wrapped(client: &mut Signed, content_key: &[u8]) -> (u32, Vec<u8>) {
    let info = client.get_rsa_key(pb::GetRsaKeyRequest { name: RSA_KEY.into() }).await.unwrap().into_inner();
    let v = info.versions.iter().find(|v| v.version == info.primary_version).unwrap();
    let public = RsaPublicKey::from_components(&v.modulus, &v.exponent).unwrap();
    (v.version, oaep::encrypt(&public, content_key, &mut rand::rng()).unwrap())
}

/// Every node's identity key.
async fn identities(cluster: &Cluster) -> BTreeMap<u16, Vec<u8>> {
    let mut out = BTreeMap::new();
    for n in &cluster.dev.nodes {
        let mut node = cluster.node_client(n.id).await.unwrap();
        let id = node.get_identity(pb::GetIdentityRequest {}).await.unwrap().into_inner();
        out.insert(n.id, id.identity_public_key);
    }
    out
}

/// Node `id`'s generation of every key version it holds ACTIVE, EC keys by name and RSA keys
/// as `rsa:NAME`, and whether it still holds any replaced generation.
async fn held(cluster: &Cluster, id: u16) -> anyhow::Result<(BTreeMap<(String, u32), u32>, bool)> {
    let mut node = cluster.node_client(id).await?;
    let mut out = BTreeMap::new();
    let mut replaced = false;
    for k in node.list_key_states(pb::ListKeyStatesRequest {}).await?.into_inner().keys {
        for v in k.versions.iter().filter(|v| v.active) {
            replaced |= v.previous.is_some();
            out.insert((k.key_id.clone(), v.version), v.generation);
        }
    }
    for k in node.list_rsa_key_states(pb::ListRsaKeyStatesRequest {}).await?.into_inner().keys {
        for v in k.versions.iter().filter(|v| v.active) {
            replaced |= v.previous.is_some();
            out.insert((format!("rsa:{}", k.name), v.version), v.generation);
        }
    }
    Ok((out, replaced))
}

/// [`held`], where no node may still hold a replaced generation.
async fn generations(cluster: &Cluster, id: u16) -> BTreeMap<(String, u32), u32> {
    let (held, replaced) = held(cluster, id).await.unwrap();
    assert!(!replaced, "node {id} still holds a replaced generation: {held:?}");
    held
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_node_wiped_and_replaced_in_turn_while_traffic_runs_keeps_every_ciphertext() {
    let mut cluster = Cluster::start(5, 3).expect("start the dev cluster");
    let mut client = cluster.client().await.unwrap();
    let before_ids = identities(&cluster).await;

    // What the cloud stored before the drill.
    let mut sealed = Vec::new();
    for i in 0..8u8 {
        let plaintext = vec![i; 64];
        sealed.push((demo::encrypt(&mut client, KEY, &plaintext).await.unwrap(), plaintext));
    }
    let pk =
        client.get_public_key(pb::GetPublicKeyRequest { key_id: KEY.into(), version: 0 }).await.unwrap().into_inner();
    let group_key = GroupPublicKey::from_slice(&pk.public_key).unwrap();
    let data_key = [0x5au8; 32];
    let wrapped = kem::wrap(&group_key, &data_key, b"label", &mut rand::rng()).unwrap().to_bytes();
    let keys_before = client.list_keys(pb::ListKeysRequest {}).await.unwrap().into_inner().keys;
    let content_key = [0x33u8; 32];
    let (rsa_version, dke_ciphertext) = dke_wrapped(&mut client, &content_key).await;

    let stop = Arc::new(AtomicBool::new(false));
    let load = traffic(client.clone(), stop.clone());
    let mut replaced = 0;
    for id in cluster.dev.nodes.iter().map(|n| n.id).collect::<Vec<_>>() {
        // The disk is lost: kill, wipe, start again with the recorded argv (a new, empty node).
        cluster.kill_node(id).unwrap();
        std::fs::remove_dir_all(cluster.data_dir(id).unwrap()).unwrap();
        cluster.restart_node(id).unwrap();
        let out = tokio::process::Command::new(hyokctl())
            .arg("--dev-dir")
            .arg(cluster.dir.path())
            .args(["node", "replace", &id.to_string()])
            .output()
            .await
            .unwrap();
        assert!(
            out.status.success(),
            "node replace {id}: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let held = generations(&cluster, id).await;
        for k in &keys_before {
            for v in &k.versions {
                assert!(
                    held.contains_key(&(k.key_id.clone(), v.version)),
                    "node {id} lacks {}/{}",
                    k.key_id,
                    v.version
                );
            }
        }
        assert!(held.contains_key(&(format!("rsa:{RSA_KEY}"), rsa_version)), "node {id} lacks its RSA share");
        replaced += 1;
    }
    stop.store(true, Ordering::Relaxed);
    let (ok, failed, wrong) = load.await.unwrap();

    // Every identity is new, and no node holds generation 0 (an original share) of anything.
    let after_ids = identities(&cluster).await;
    for (id, key) in &before_ids {
        assert_ne!(after_ids.get(id), Some(key), "node {id} kept its identity");
    }
    for id in after_ids.keys() {
        let held = generations(&cluster, *id).await;
        assert!(held.values().all(|g| *g >= 1), "node {id} still holds an original share: {held:?}");
    }
    let keys_after = client.list_keys(pb::ListKeysRequest {}).await.unwrap().into_inner().keys;
    for (b, a) in keys_before.iter().zip(&keys_after) {
        assert_eq!(b.key_id, a.key_id);
        for (vb, va) in b.versions.iter().zip(&a.versions) {
            assert_eq!(vb.public_key, va.public_key, "{}/{}: the group key never changes", b.key_id, vb.version);
            assert!(va.generation > vb.generation);
        }
    }

    // Everything from before the drill opens, through any t nodes.
    for (down_a, down_b) in [(1, 2), (4, 5), (2, 4)] {
        cluster.kill_node(down_a).unwrap();
        cluster.kill_node(down_b).unwrap();
        // Until the coordinator has noticed the two dead nodes, a request may still wait on them.
        let c = client.clone();
        let first = sealed[0].0.clone();
        eventually(Duration::from_secs(30), || {
            let mut c = c.clone();
            let blob = first.clone();
            async move { Ok(demo::decrypt(&mut c, KEY, &blob).await?) }
        })
        .await
        .unwrap();
        for (blob, plaintext) in &sealed {
            assert_eq!(
                &demo::decrypt(&mut client, KEY, blob).await.unwrap(),
                plaintext,
                "with nodes {down_a} and {down_b} down"
            );
        }
        assert_eq!(unwrap(&mut client, pk.version, &wrapped).await.unwrap(), data_key);
        assert_eq!(rsa_decrypt(&mut client, rsa_version, &dke_ciphertext).await.unwrap(), content_key);
        cluster.restart_node(down_a).unwrap();
        cluster.restart_node(down_b).unwrap();
    }
    println!(
        "replace drill (processes): {} nodes wiped and replaced, traffic {ok} round trips, {failed} failed, {wrong} wrong; {} old ciphertexts, 1 wrapped key and 1 DKE-wrapped content key open through three t-subsets",
        replaced,
        sealed.len()
    );
    assert_eq!((failed, wrong), (0, 0), "requests failed or returned a wrong plaintext during the drill");
    assert!(ok > 0, "traffic ran");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refresh_deals_new_shares_and_keeps_the_group_keys() {
    let cluster = Cluster::start(5, 3).expect("start the dev cluster");
    let mut client = cluster.client().await.unwrap();
    let blob = demo::encrypt(&mut client, KEY, b"before the refresh").await.unwrap();
    let before = client.list_keys(pb::ListKeysRequest {}).await.unwrap().into_inner().keys;
    let mut nodes_before = Vec::new();
    for id in 1..=5 {
        nodes_before.push(generations(&cluster, id).await);
    }
    refresh(&cluster, KEY).await;
    let after = client.list_keys(pb::ListKeysRequest {}).await.unwrap().into_inner().keys;
    let demo = |keys: &[pb::KeyInfo]| keys.iter().find(|k| k.key_id == KEY).unwrap().versions.clone();
    for (b, a) in demo(&before).iter().zip(demo(&after).iter()) {
        assert_eq!(b.public_key, a.public_key);
        assert_eq!(a.generation, b.generation + 1);
    }
    for id in 1..=5u16 {
        let held = generations(&cluster, id).await;
        for ((key, version), g) in &held {
            let old = nodes_before[usize::from(id) - 1][&(key.clone(), *version)];
            assert_eq!(*g, if key == KEY { old + 1 } else { old }, "node {id}: {key}/{version}");
        }
    }
    assert_eq!(demo::decrypt(&mut client, KEY, &blob).await.unwrap(), b"before the refresh");
    // `hyokctl key show` names the generation in use.
    let show = tokio::process::Command::new(hyokctl())
        .arg("--dev-dir")
        .arg(cluster.dir.path())
        .args(["key", "show", KEY])
        .output()
        .await
        .unwrap();
    let shown = String::from_utf8_lossy(&show.stdout);
    let expected = format!("generation {}", demo(&after)[0].generation);
    assert!(show.status.success() && shown.contains(&expected), "{shown}");
    // `hyokctl cluster status`: every node at that generation, nothing old kept.
    let status = tokio::process::Command::new(hyokctl())
        .arg("--dev-dir")
        .arg(cluster.dir.path())
        .args(["cluster", "status"])
        .output()
        .await
        .unwrap();
    let shown = String::from_utf8_lossy(&status.stdout);
    let row = shown.lines().find(|l| l.starts_with("demo/1 ")).unwrap_or_default();
    assert!(row.contains("generation 1") && row.contains("1:g1  2:g1  3:g1  4:g1  5:g1"), "{shown}");
    assert!(shown.contains("and nothing else"), "{shown}");
    let blob = demo::encrypt(&mut client, KEY, b"after").await.unwrap();
    assert_eq!(demo::decrypt(&mut client, KEY, &blob).await.unwrap(), b"after");

    // The DKE key's integer shares are refreshed the same way, and what was wrapped to it before
    // still opens.
    let (version, wrapped) = dke_wrapped(&mut client, b"content key").await;
    refresh(&cluster, RSA_KEY).await;
    let rsa = (format!("rsa:{RSA_KEY}"), version);
    for id in 1..=5u16 {
        let before = nodes_before[usize::from(id) - 1][&rsa];
        assert_eq!(generations(&cluster, id).await[&rsa], before + 1, "node {id}: the RSA share was reshared");
    }
    assert_eq!(rsa_decrypt(&mut client, version, &wrapped).await.unwrap(), b"content key");
}

async fn refresh(cluster: &Cluster, key: &str) {
    let out = tokio::process::Command::new(hyokctl())
        .arg("--dev-dir")
        .arg(cluster.dir.path())
        .args(["cluster", "refresh", "--key", key])
        .output()
        .await
        .unwrap();
    assert!(out.status.success(), "{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
}

/// A second coordinator whose cached views name the generations that refreshes through the
/// first one have since finalized away (its views are never read again in the background
/// here: an hour's TTL). Every node refuses those generations; it reads the view again and
/// serves at the new one (an encrypt, decrypts of what was sealed before and after, a DKE
/// decrypt) instead of failing until its cache expires.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_coordinator_whose_cached_generation_was_finalized_elsewhere_reads_again_and_serves() {
    let cluster = Cluster::start(5, 3).expect("start the dev cluster");
    let mut client = cluster.client().await.unwrap();
    let sealed = demo::encrypt(&mut client, KEY, b"before the refresh").await.unwrap();
    let (version, wrapped) = dke_wrapped(&mut client, b"content key").await;
    let second = cluster.second_coordinator("coordinator-2", "metadata_ttl_ms = 3600000").unwrap();
    let mut other = cluster.client_at(&format!("https://{}", second.addr)).await.unwrap();
    let warm = demo::encrypt(&mut other, KEY, b"through the second").await.unwrap();
    assert_eq!(demo::decrypt(&mut other, KEY, &sealed).await.unwrap(), b"before the refresh");
    assert_eq!(rsa_decrypt(&mut other, version, &wrapped).await.unwrap(), b"content key");

    refresh(&cluster, KEY).await;
    refresh(&cluster, RSA_KEY).await;
    assert!(!cluster.log("coordinator-2").unwrap().contains("asking again"));

    assert_eq!(demo::decrypt(&mut other, KEY, &sealed).await.unwrap(), b"before the refresh");
    assert_eq!(demo::decrypt(&mut other, KEY, &warm).await.unwrap(), b"through the second");
    let after = demo::encrypt(&mut other, KEY, b"after the refresh").await.unwrap();
    assert_eq!(demo::decrypt(&mut client, KEY, &after).await.unwrap(), b"after the refresh");
    assert_eq!(rsa_decrypt(&mut other, version, &wrapped).await.unwrap(), b"content key");
    let log = cluster.log("coordinator-2").unwrap();
    assert!(log.contains("asking again at the one they now hold"), "{log}");
}

/// Refreshes of the demo key with a node killed at a random point of each run, while traffic
/// runs: a run either commits or leaves the old generation serving; requests never fail, and
/// once the node is back the repair loop brings every node to the trusted generation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reshare_with_a_node_killed_midway_keeps_serving_and_is_repaired() {
    let mut cluster = Cluster::start(5, 3).expect("start the dev cluster");
    let mut client = cluster.client().await.unwrap();
    let mut sealed = Vec::new();
    for i in 0..4u8 {
        sealed.push((demo::encrypt(&mut client, KEY, &[i; 32]).await.unwrap(), vec![i; 32]));
    }
    let stop = Arc::new(AtomicBool::new(false));
    let load = traffic(client.clone(), stop.clone());
    let (mut committed, mut aborted) = (0, 0);
    for round in 0..4u16 {
        let refresh = tokio::process::Command::new(hyokctl())
            .arg("--dev-dir")
            .arg(cluster.dir.path())
            .args(["cluster", "refresh", "--key", KEY])
            .output();
        let refresh = tokio::spawn(refresh);
        tokio::time::sleep(Duration::from_millis(rand::random_range(0..300))).await;
        let victim = 1 + round % 5;
        cluster.kill_node(victim).unwrap();
        let out = refresh.await.unwrap().unwrap();
        if out.status.success() {
            committed += 1
        } else {
            aborted += 1
        }
        cluster.restart_node(victim).unwrap();
        // Every node, the one killed included, ends at the generation the cluster trusts.
        let (cluster_ref, c) = (&cluster, client.clone());
        eventually(Duration::from_secs(60), || {
            let mut c = c.clone();
            async move {
                let keys = c.list_keys(pb::ListKeysRequest {}).await?.into_inner().keys;
                let demo = keys.iter().find(|k| k.key_id == KEY).ok_or_else(|| anyhow::anyhow!("no demo key"))?;
                for id in 1..=5u16 {
                    let mut node = cluster_ref.node_client(id).await?;
                    let states = node.list_key_states(pb::ListKeyStatesRequest {}).await?.into_inner().keys;
                    let held = states.iter().find(|k| k.key_id == KEY).map(|k| k.versions.clone()).unwrap_or_default();
                    for v in &demo.versions {
                        let at = held.iter().find(|h| h.version == v.version && h.active && h.next.is_none());
                        anyhow::ensure!(
                            at.is_some_and(|h| h.generation == v.generation),
                            "node {id} not yet at generation {} of {KEY}/{}",
                            v.generation,
                            v.version
                        );
                    }
                }
                Ok(())
            }
        })
        .await
        .unwrap();
        for (blob, plaintext) in &sealed {
            assert_eq!(&demo::decrypt(&mut client, KEY, blob).await.unwrap(), plaintext, "round {round}");
        }
    }
    stop.store(true, Ordering::Relaxed);
    let (ok, failed, wrong) = load.await.unwrap();
    println!(
        "aborted reshares (processes): 4 refreshes with a node killed mid-run, {committed} committed, {aborted} refused; traffic {ok} round trips, {failed} failed, {wrong} wrong; every node repaired to the trusted generation"
    );
    assert_eq!((failed, wrong), (0, 0));
    assert!(ok > 0);
}

/// Must 6: a node's sealed backup, and a tested restore. Node 3 is backed up while stopped, the
/// demo key is refreshed (so the backup's share of it is stale), then node 3's disk is lost and
/// it is restored from the backup: same identity, so its peers still pin it; the repair loop
/// brings the stale version to the trusted generation; and with two other nodes down, nodes
/// 3–5 open what was sealed before. A wrong backup key or a damaged backup restores nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_restored_from_its_sealed_backup_serves_again() {
    let mut cluster = Cluster::start(5, 3).expect("start the dev cluster");
    let mut client = cluster.client().await.unwrap();
    let blob = demo::encrypt(&mut client, KEY, b"sealed before the backup").await.unwrap();
    let identity_before = identities(&cluster).await[&3].clone();
    let data = cluster.data_dir(3).unwrap();
    let scratch = tempfile::tempdir().unwrap();
    let (backup, key) = (scratch.path().join("node-3.backup"), scratch.path().join("backup.key"));
    let hyok = |args: Vec<std::ffi::OsString>| {
        let out = std::process::Command::new(hyokctl()).arg("node").args(args).output().unwrap();
        (
            out.status.success(),
            format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)),
        )
    };
    let args = |verb: &str, data: &std::path::Path, file: &std::path::Path, key: &std::path::Path| {
        let file_flag = if verb == "backup" { "--out" } else { "--from" };
        vec![
            verb.into(),
            "--data-dir".into(),
            data.into(),
            file_flag.into(),
            file.into(),
            "--backup-key".into(),
            key.into(),
        ]
    };

    cluster.stop_node(3).unwrap();
    let (ok, said) = hyok(args("backup", &data, &backup, &key));
    assert!(ok, "{said}");
    cluster.restart_node(3).unwrap();
    refresh(&cluster, KEY).await;

    // A wrong key, or a damaged backup, restores nothing.
    let elsewhere = scratch.path().join("elsewhere");
    let wrong_key = scratch.path().join("wrong.key");
    hyok_store::SealKey::create(&wrong_key).unwrap();
    let (ok, said) = hyok(args("restore", &elsewhere, &backup, &wrong_key));
    assert!(!ok && said.contains("does not open"), "{said}");
    let mut damaged = std::fs::read(&backup).unwrap();
    let last = damaged.len() - 1;
    damaged[last] ^= 1;
    let damaged_file = scratch.path().join("damaged.backup");
    std::fs::write(&damaged_file, damaged).unwrap();
    let (ok, said) = hyok(args("restore", &elsewhere, &damaged_file, &key));
    assert!(!ok, "{said}");
    assert!(!elsewhere.join("seal.key").exists(), "a refused restore leaves nothing behind");

    // The disk is lost; the node comes back from its backup.
    cluster.kill_node(3).unwrap();
    std::fs::remove_dir_all(&data).unwrap();
    let (ok, said) = hyok(args("restore", &data, &backup, &key));
    assert!(ok, "{said}");
    let (ok, said) = hyok(args("restore", &data, &backup, &key));
    assert!(!ok && said.contains("already holds a node"), "{said}");
    cluster.restart_node(3).unwrap();
    assert_eq!(identities(&cluster).await[&3], identity_before, "the restored node is the same node");
    let (cluster_ref, c) = (&cluster, client.clone());
    eventually(Duration::from_secs(60), || {
        let mut c = c.clone();
        async move {
            let keys = c.list_keys(pb::ListKeysRequest {}).await?.into_inner().keys;
            let demo = keys.iter().find(|k| k.key_id == KEY).ok_or_else(|| anyhow::anyhow!("no demo"))?;
            let (held, _) = held(cluster_ref, 3).await?;
            for v in &demo.versions {
                anyhow::ensure!(
                    held.get(&(KEY.to_owned(), v.version)) == Some(&v.generation),
                    "node 3 not yet repaired to generation {}",
                    v.generation
                );
            }
            Ok(())
        }
    })
    .await
    .unwrap();
    cluster.kill_node(1).unwrap();
    cluster.kill_node(2).unwrap();
    let plain = eventually(Duration::from_secs(30), || {
        let mut c = client.clone();
        let blob = blob.clone();
        async move { Ok(demo::decrypt(&mut c, KEY, &blob).await?) }
    })
    .await
    .unwrap();
    assert_eq!(plain, b"sealed before the backup", "nodes 3–5, 3 restored from its backup, serve");
}

/// A copy of `from` (a stopped node's data directory) in `to`, as a thief or a careless
/// operator would keep it.
fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// A refresh makes old shares useless: node 1's data directory is copied aside before a refresh
/// of a key, and afterwards the old share it holds, combined with two new partials, does not
/// open a ciphertext that three new partials open.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_refresh_an_old_share_kept_aside_no_longer_combines_with_the_new_ones() {
    let mut cluster = Cluster::start(5, 3).expect("start the dev cluster");
    let mut client = cluster.client().await.unwrap();
    let key = "kept-aside";
    client
        .create_key(pb::CreateKeyRequest { key_id: key.into(), usages: vec![], request_id: "setup".into() })
        .await
        .unwrap();
    let secret = b"old shares must not open this".to_vec();
    let evidence = client.signer.encrypt(key, &secret, b"");
    let sealed = client
        .encrypt_detached(pb::EncryptDetachedRequest {
            key_id: key.into(),
            plaintext: secret.clone(),
            aad: Vec::new(),
            request_id: "setup".into(),
            evidence: Some(evidence),
        })
        .await
        .unwrap()
        .into_inner();

    let aside = tempfile::tempdir().unwrap();
    cluster.stop_node(1).unwrap();
    copy_dir(&cluster.data_dir(1).unwrap(), aside.path());
    cluster.restart_node(1).unwrap();
    refresh(&cluster, key).await;

    // The old share, read from the copy as whoever holds it (disk and seal key) can.
    let seal = hyok_store::SealKey::load(aside.path().join("seal.key")).unwrap();
    let store = hyok_store::Store::open(aside.path().join("db"), seal).unwrap();
    let (old_share, old_package) = store.ec().active_share(key, sealed.version).unwrap();
    let old_share = hyok_threshold::KeyShare::from_secret_bytes(&old_share).unwrap();
    let seed: [u8; 16] = sealed.seed.clone().try_into().unwrap();
    let input = hyok_threshold::dprf::DprfInput::new(key, sealed.version, seed).unwrap();
    let old_partial = hyok_threshold::dprf::evaluate(&old_share, &input, &mut rand::rng());

    // New partials, asked the way the coordinator asks, with the requester's evidence.
    let coordinator = cluster.tls_for(hyok_proto::Role::Coordinator);
    let mut new_partials = BTreeMap::new();
    let mut generation = 0;
    for id in 1..=3u16 {
        let mut node = cluster.node_client_as(id, &coordinator).await.unwrap();
        let state = node.get_key_state(pb::GetKeyStateRequest { key_id: key.into() }).await.unwrap().into_inner();
        generation = state.versions[0].generation;
        let item = pb::EvaluateItem {
            key_id: key.into(),
            version: sealed.version,
            seed: sealed.seed.clone(),
            operation: pb::Operation::Decrypt as i32,
            request_id: "kept-aside".into(),
            evidence: Some(client.signer.decrypt(key, sealed.version, &sealed.seed)),
            generation: Some(generation),
            coefficient: Vec::new(),
        };
        let request = pb::EvaluateBatchRequest { items: vec![item.clone()] };
        let answer = node.evaluate_batch(request).await.unwrap().into_inner();
        let package = PublicKeyPackage::from_bytes(&state.versions[0].public_key_package).unwrap();
        new_partials.insert(id, hyok_e2e::proven_partial(&package, &item, answer).unwrap());
    }
    assert_eq!(generation, 1, "the refresh made generation 1");
    let mut node = cluster.node_client(2).await.unwrap();
    let state = node.get_key_state(pb::GetKeyStateRequest { key_id: key.into() }).await.unwrap().into_inner();
    let new_package = PublicKeyPackage::from_bytes(&state.versions[0].public_key_package).unwrap();
    let old_package = PublicKeyPackage::from_bytes(&old_package).unwrap();
    assert_eq!(new_package.group_key(), old_package.group_key(), "the public key never changes");
    let tag: [u8; 16] = sealed.tag.clone().try_into().unwrap();
    let open = |package: &PublicKeyPackage, partials: &[hyok_threshold::PartialEvaluation]| {
        hyok_threshold::aead::decrypt(package, &input, partials, b"", &sealed.ciphertext, &tag)
            .map(|o| o.value.to_vec())
    };
    let all_new: Vec<_> = new_partials.values().cloned().collect();
    assert_eq!(open(&new_package, &all_new).unwrap(), secret, "three new partials open it");
    let mixed = vec![old_partial, new_partials[&2].clone(), new_partials[&3].clone()];
    assert!(open(&new_package, &mixed).is_err(), "the old share with two new ones opens nothing");
    assert!(open(&old_package, &mixed).is_err(), "… whichever package the holder believes in");
}
