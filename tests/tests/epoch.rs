//! Membership changes as epochs, over processes: a `hyokctl dev` cluster grows from 5 nodes at
//! t = 3 to 7 at t = 4 and shrinks back, while traffic runs (`hyokctl cluster
//! propose|accept|reject|execute`); one operator's refusal stops the change; a change cut short
//! by a killed node is abandoned (`abort`) and leaves the old epoch whole.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test helpers outside #[test] functions fail loudly"
)]

use hyok_cli::devfile::DevFile;
use hyok_e2e::demo::{self, KEY, RSA_KEY, rsa_decrypt, traffic};
use hyok_e2e::{Cluster, Signed, eventually, hyokctl};
use hyok_proto::v1 as pb;
use hyok_threshold::rsa::{RsaPublicKey, oaep};
use hyok_threshold::{Manifest, Wire};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// `hyokctl --dev-dir DIR cluster ARGS…`: (success, stdout + stderr).
async fn cluster_cmd(cluster: &Cluster, args: &[&str]) -> (bool, String) {
    let out = tokio::process::Command::new(hyokctl())
        .arg("--dev-dir")
        .arg(cluster.dir.path())
        .arg("cluster")
        .args(args)
        .output()
        .await
        .unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

async fn must(cluster: &Cluster, args: &[&str]) -> String {
    let (ok, text) = cluster_cmd(cluster, args).await;
    assert!(ok, "hyokctl cluster {}: {text}", args.join(" "));
    text
}

/// Node `id`'s manifest in force and whether it reports a change accepted and not in force.
async fn epoch_of(cluster: &Cluster, id: u16) -> (Manifest, bool) {
    let mut node = cluster.node_client(id).await.unwrap();
    let i = node.get_identity(pb::GetIdentityRequest {}).await.unwrap().into_inner();
    let m = Manifest::from_bytes(&i.manifest).unwrap();
    let pending = !i.proposal.is_empty()
        && hyok_threshold::epoch::Proposal::from_bytes(&i.proposal).unwrap().to().to_bytes() != i.manifest;
    (m, pending)
}

/// Every version node `id` holds: ACTIVE ones with their generation, and whether any reshare
/// output is pending.
async fn holdings(cluster: &Cluster, id: u16) -> (Vec<(String, u32, u32)>, bool) {
    let mut node = cluster.node_client(id).await.unwrap();
    let mut out = Vec::new();
    let mut pending = false;
    for k in node.list_key_states(pb::ListKeyStatesRequest {}).await.unwrap().into_inner().keys {
        for v in &k.versions {
            pending |= v.next.is_some();
            if v.active {
                out.push((k.key_id.clone(), v.version, v.generation));
            }
        }
    }
    for k in node.list_rsa_key_states(pb::ListRsaKeyStatesRequest {}).await.unwrap().into_inner().keys {
        for v in &k.versions {
            pending |= v.next.is_some();
            if v.active {
                out.push((format!("rsa:{}", k.name), v.version, v.generation));
            }
        }
    }
    out.sort();
    (out, pending)
}

/// Everything that must hold once epoch `epoch` of `n` nodes at `t` is in force: every node's
/// manifest, and every node holding every version the cluster trusts at its generation.
async fn settled(cluster: &Cluster, client: &mut Signed, epoch: u64, n: u16, t: u16) {
    let keys = client.list_keys(pb::ListKeysRequest {}).await.unwrap().into_inner().keys;
    let rsa = client.list_rsa_keys(pb::ListRsaKeysRequest {}).await.unwrap().into_inner().keys;
    let mut trusted: Vec<(String, u32, u32)> = keys
        .iter()
        .flat_map(|k| k.versions.iter().map(|v| (k.key_id.clone(), v.version, v.generation)))
        .chain(rsa.iter().flat_map(|k| k.versions.iter().map(|v| (format!("rsa:{}", k.name), v.version, v.generation))))
        .collect();
    trusted.sort();
    assert!(!trusted.is_empty());
    for id in 1..=n {
        let (m, pending) = epoch_of(cluster, id).await;
        assert_eq!((m.epoch(), m.n(), m.threshold(), pending), (epoch, n, t, false), "node {id}'s manifest");
        let (held, pending) = holdings(cluster, id).await;
        assert_eq!(held, trusted, "node {id} holds every version at the trusted generation");
        assert!(!pending, "node {id} holds no reshare output pending");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn growing_from_five_nodes_at_three_to_seven_at_four_and_back_keeps_every_ciphertext() {
    let mut cluster = Cluster::start(5, 3).expect("start the dev cluster");
    let mut client = cluster.client().await.unwrap();
    let mut sealed = Vec::new();
    for i in 0..4u8 {
        sealed.push((demo::encrypt(&mut client, KEY, &[i; 40]).await.unwrap(), vec![i; 40]));
    }
    let info = client.get_rsa_key(pb::GetRsaKeyRequest { name: RSA_KEY.into() }).await.unwrap().into_inner();
    let v = info.versions.iter().find(|v| v.version == info.primary_version).unwrap();
    let public = RsaPublicKey::from_components(&v.modulus, &v.exponent).unwrap();
    let content_key = [0x42u8; 32];
    let dke = (v.version, oaep::encrypt(&public, &content_key, &mut rand::rng()).unwrap());

    // Grow, with traffic: propose, and one operator refuses.
    let stop = Arc::new(AtomicBool::new(false));
    let load = traffic(client.clone(), stop.clone());
    let proposed = must(&cluster, &["propose", "--nodes", "7", "--threshold", "4"]).await;
    assert!(proposed.contains("5 nodes at t = 3 → 7 nodes at t = 4"), "{proposed}");
    cluster.dev = DevFile::load(cluster.dir.path()).unwrap();
    assert_eq!(cluster.dev.nodes.len(), 7);
    must(&cluster, &["accept"]).await;
    must(&cluster, &["reject", "--node", "6"]).await;
    let (ok, refused) = cluster_cmd(&cluster, &["execute"]).await;
    assert!(!ok && refused.contains("node 6's operator has not accepted it"), "{refused}");
    for id in 1..=5 {
        assert_eq!(epoch_of(&cluster, id).await.0.epoch(), 0, "a refused change changes nothing");
    }
    // Node 6's operator accepts after all: the change goes through.
    must(&cluster, &["accept", "--node", "6"]).await;
    let executed = must(&cluster, &["execute"]).await;
    assert!(executed.contains("epoch 1 in force: 7 nodes, t = 4"), "{executed}");
    cluster.dev = DevFile::load(cluster.dir.path()).unwrap();
    stop.store(true, Ordering::Relaxed);
    let grown = load.await.unwrap();
    // A key made right after the change is dealt at the new t, to all seven nodes.
    let made = pb::CreateKeyRequest { key_id: "after-growth".into(), usages: Vec::new(), request_id: "epoch".into() };
    let made = client.create_key(made).await.unwrap().into_inner();
    assert_eq!((made.threshold, made.nodes), (4, 7), "{made:?}");
    settled(&cluster, &mut client, 1, 7, 4).await;

    // t is 4 now: three nodes down still serve, four do not.
    for id in [1, 4, 7] {
        cluster.kill_node(id).unwrap();
    }
    let (c, first) = (client.clone(), sealed[0].0.clone());
    eventually(Duration::from_secs(30), || {
        let (mut c, blob) = (c.clone(), first.clone());
        async move { Ok(demo::decrypt(&mut c, KEY, &blob).await?) }
    })
    .await
    .unwrap();
    for (blob, plaintext) in &sealed {
        assert_eq!(&demo::decrypt(&mut client, KEY, blob).await.unwrap(), plaintext, "with three of seven down");
    }
    assert_eq!(rsa_decrypt(&mut client, dke.0, &dke.1).await.unwrap(), content_key);
    cluster.kill_node(2).unwrap();
    let status = demo::decrypt(&mut client, KEY, &sealed[1].0).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unavailable, "three of seven nodes are fewer than t = 4: {status}");
    for id in [1, 2, 4, 7] {
        cluster.restart_node(id).unwrap();
    }
    hyok_e2e::all_nodes_reachable(&client).await.unwrap();

    // Shrink back, with traffic.
    let stop = Arc::new(AtomicBool::new(false));
    let load = traffic(client.clone(), stop.clone());
    must(&cluster, &["propose", "--nodes", "5", "--threshold", "3"]).await;
    must(&cluster, &["accept"]).await;
    let executed = must(&cluster, &["execute"]).await;
    assert!(executed.contains("epoch 2 in force: 5 nodes, t = 3"), "{executed}");
    assert!(executed.contains("node 6: left the cluster (shares deleted: true)"), "{executed}");
    cluster.dev = DevFile::load(cluster.dir.path()).unwrap();
    assert_eq!(cluster.dev.nodes.len(), 5);
    stop.store(true, Ordering::Relaxed);
    let shrunk = load.await.unwrap();
    settled(&cluster, &mut client, 2, 5, 3).await;
    for (blob, plaintext) in &sealed {
        assert_eq!(&demo::decrypt(&mut client, KEY, blob).await.unwrap(), plaintext, "after shrinking back");
    }
    assert_eq!(rsa_decrypt(&mut client, dke.0, &dke.1).await.unwrap(), content_key);
    let status = must(&cluster, &["status"]).await;
    assert!(status.contains("node 5: epoch 2 (5 nodes, t = 3)"), "{status}");
    println!(
        "epochs (processes): 5@3 → 7@4 → 5@3 with traffic: growing {} round trips, {} failed, {} wrong; shrinking {} round trips, {} failed, {} wrong; one refusal stopped the first execution",
        grown.0, grown.1, grown.2, shrunk.0, shrunk.1, shrunk.2
    );
    assert_eq!((grown.1, grown.2, shrunk.1, shrunk.2), (0, 0, 0, 0), "requests failed or were wrong during a change");
    assert!(grown.0 > 0 && shrunk.0 > 0, "traffic ran");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_cut_short_by_a_killed_node_is_abandoned_and_the_old_epoch_serves_whole() {
    let mut cluster = Cluster::start(5, 3).expect("start the dev cluster");
    let mut client = cluster.client().await.unwrap();
    let sealed = (demo::encrypt(&mut client, KEY, b"before the change").await.unwrap(), b"before the change".to_vec());
    // Enough versions that the change's reshares take a while: it is cut short among them.
    for i in 0..24 {
        let request =
            pb::CreateKeyRequest { key_id: format!("extra-{i}"), usages: Vec::new(), request_id: "epoch".into() };
        client.create_key(request).await.unwrap();
    }
    let before: Vec<_> = {
        let mut all = Vec::new();
        for id in 1..=5 {
            all.push(holdings(&cluster, id).await.0);
        }
        all
    };
    let stop = Arc::new(AtomicBool::new(false));
    let load = traffic(client.clone(), stop.clone());
    must(&cluster, &["propose", "--nodes", "6", "--threshold", "4"]).await;
    cluster.dev = DevFile::load(cluster.dir.path()).unwrap();
    must(&cluster, &["accept"]).await;
    // The new node dies while the change's reshares run.
    let execute = {
        let (path, exe) = (cluster.dir.path().to_owned(), hyokctl());
        tokio::spawn(async move {
            tokio::process::Command::new(exe).arg("--dev-dir").arg(path).args(["cluster", "execute"]).output().await
        })
    };
    // Once the change's first reshares are done (more versions follow), node 6 dies.
    // (A node that held no version reports no pending one: watch node 1, which deals and receives.)
    let mut node1 = cluster.node_client(1).await.unwrap();
    let started = std::time::Instant::now();
    loop {
        let states = node1.list_key_states(pb::ListKeyStatesRequest {}).await.unwrap().into_inner().keys;
        if states.iter().any(|k| k.versions.iter().any(|v| v.next.is_some())) {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(60), "the change's reshares never began");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    cluster.kill_node(6).unwrap();
    let out = execute.await.unwrap().unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(!out.status.success(), "the execution cannot complete without node 6: {text}");
    assert!(text.contains("abandoned"), "{text}");
    let aborted = must(&cluster, &["abort"]).await;
    assert!(aborted.contains("epoch 0 serves on: 5 nodes, t = 3"), "{aborted}");
    cluster.dev = DevFile::load(cluster.dir.path()).unwrap();
    assert_eq!(cluster.dev.nodes.len(), 5);
    for id in 1..=5u16 {
        let (m, pending) = epoch_of(&cluster, id).await;
        assert_eq!((m.epoch(), m.n(), m.threshold(), pending), (0, 5, 3, false), "node {id}");
        let (held, pending) = holdings(&cluster, id).await;
        assert_eq!(held, before[usize::from(id) - 1], "node {id}: the old epoch's shares, untouched");
        assert!(!pending, "node {id}: the change's reshared shares are forgotten");
    }
    // Nothing is left blocked: a refresh runs.
    must(&cluster, &["refresh", "--key", KEY]).await;
    stop.store(true, Ordering::Relaxed);
    let (ok, failed, wrong) = load.await.unwrap();
    assert_eq!(demo::decrypt(&mut client, KEY, &sealed.0).await.unwrap(), sealed.1);
    println!("aborted change (processes): traffic {ok} round trips, {failed} failed, {wrong} wrong");
    assert_eq!((failed, wrong), (0, 0));
    assert!(ok > 0);
}
