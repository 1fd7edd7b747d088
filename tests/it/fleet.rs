//! A fleet on one machine: a 3-node R3 hub and N edge nodes, each a
//! separate `jetedge` process with its own site nats-server, its own
//! senders (signed webhooks, and kiosk scans requested over site NATS) and
//! its own subscriptions delivering hub subjects back to its site. While
//! they run, random edge nodes are killed with SIGKILL and restarted,
//! some sites' upstream links are cut for a while, and the hub's stream
//! leader is stopped and restarted. Afterwards every acknowledged event of
//! every site is in the hub stream exactly once, and every site received
//! exactly the events it subscribes to: its own, and the hub's news.
//!
//! `JETEDGE_FLEET_SITES` (6), `JETEDGE_FLEET_ORDERS` (per site, 200),
//! `JETEDGE_FLEET_SCANS` (per site, 60) and `JETEDGE_FLEET_PACE_MS` (40,
//! between two events of one sender) size it; `scripts/fleet.sh` runs it
//! with 20 sites and a release build. It prints the fleet's figures.

use crate::support;

use futures::StreamExt;
use serde_json::{json, Value};
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::http::{post_until_stored, Client};
use support::nats::{jetstream, read_stream, Cluster, Msg, NatsServer};
use support::node::Binary;
use support::proxy::{LinkMode, SlowLink};
use support::{node_config, TempDir};

const STREAM: &str = "FLEET";
/// How long a cut link stays cut at least.
const CUT_FOR: Duration = Duration::from_secs(6);
/// News the hub publishes for every site, in two rounds.
const NEWS: usize = 20;

/// One edge site: its NATS server, its node, and its links to each hub server.
struct Site {
    name: String,
    server: NatsServer,
    node: Binary,
    links: Vec<SlowLink>,
    _dir: TempDir,
}

impl Site {
    async fn start(i: usize, hub: &Cluster) -> Site {
        let name = format!("site-{i}");
        let server = NatsServer::start();
        let mut links = Vec::new();
        for s in &hub.servers {
            links.push(SlowLink::plain(format!("127.0.0.1:{}", s.port)).await);
        }
        let urls: Vec<String> = links.iter().map(SlowLink::url).collect();
        let dir = TempDir::new(&format!("fleet-{name}"));
        let text = node_config(&dir.path().join("data"), &urls)
            .replace("id = \"test-node\"", &format!("id = \"{name}\""))
            .replace(
                "[upstream]\n",
                &format!(
                    "[upstream]\nstream = \"{STREAM}\"\nsubject_prefix = \"sites.{name}\"\ncreate_stream = false\n"
                ),
            )
            + &format!(
                "\n[local]\nservers = [{:?}]\n\
                 [[subscription]]\nname = \"own\"\nsubjects = [\"sites.{name}.>\"]\ndeliver = \"all\"\nto_subject = \"site.own\"\n\
                 [[subscription]]\nname = \"news\"\nsubjects = [\"hub.news.>\"]\ndeliver = \"all\"\nto_subject = \"site.news\"\n",
                server.url()
            );
        let mut node = Binary::configured(dir.path(), &text);
        tokio::task::block_in_place(|| node.start());
        Site {
            name,
            server,
            node,
            links,
            _dir: dir,
        }
    }

    fn client(&self) -> Client {
        Client::new(([127, 0, 0, 1], self.node.port).into())
    }

    fn cut(&self, mode: LinkMode) {
        for l in &self.links {
            l.set_mode(mode);
        }
    }

    fn backlog(&self) -> Option<u64> {
        let token = self.node.admin_token();
        let (status, body) =
            support::http::blocking_get_auth(self.node.admin_port, "/admin/status", Some(&token))?;
        let v: Value = serde_json::from_str(&body).ok()?;
        (status == 200).then(|| v["backlog"]["events"].as_u64())?
    }
}

/// Event ids a site's microapps received on one subject.
async fn listen(site: &NatsServer, subject: &str) -> Arc<std::sync::Mutex<HashSet<String>>> {
    let client = async_nats::connect(site.url()).await.unwrap();
    let mut sub = client.subscribe(subject.to_string()).await.unwrap();
    client.flush().await.unwrap();
    let seen = Arc::new(std::sync::Mutex::new(HashSet::new()));
    let out = seen.clone();
    tokio::spawn(async move {
        let _client = client;
        while let Some(m) = sub.next().await {
            let v: Value = serde_json::from_slice(&m.payload).unwrap_or_default();
            if let Some(id) = v["id"].as_str() {
                out.lock().unwrap().insert(id.to_string());
            }
        }
    });
    seen
}

/// Requests a kiosk scan over site NATS until the node says it holds it.
async fn scan_until_stored(
    site: &async_nats::Client,
    kiosk: &str,
    n: usize,
    retries: &AtomicUsize,
) {
    let ev = json!({"specversion": "1.0", "id": format!("{kiosk}-{n}"), "source": format!("/kiosk/{kiosk}"),
                    "type": "kiosk.scan", "data": {"data": {"source": kiosk, "n": n}}});
    let body: bytes::Bytes = ev.to_string().into();
    loop {
        let reply = tokio::time::timeout(
            Duration::from_secs(5),
            site.request("ingest.events.scan", body.clone()),
        )
        .await;
        if let Ok(Ok(m)) = reply {
            let v: Value = serde_json::from_slice(&m.payload).unwrap_or_default();
            if matches!(v["status"].as_str(), Some("accepted" | "duplicate")) {
                return;
            }
        }
        retries.fetch_add(1, Ordering::Relaxed);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The hub's news for every site: CloudEvents published into the stream.
async fn publish_news(js: &async_nats::jetstream::Context, round: usize) -> Vec<String> {
    let mut ids = Vec::new();
    for k in 0..NEWS / 2 {
        let id = format!("news-{round}-{k}");
        let ev = json!({"specversion": "1.0", "id": id, "source": "/hub", "type": "news"});
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("Nats-Msg-Id", id.as_str());
        // Retried until acknowledged: the stream may be between leaders.
        let subject = format!("hub.news.{round}");
        let payload: bytes::Bytes = ev.to_string().into();
        let stored = support::eventually(Duration::from_secs(60), async || {
            match js
                .publish_with_headers(subject.clone(), headers.clone(), payload.clone())
                .await
            {
                Ok(ack) => ack.await.is_ok(),
                Err(_) => false,
            }
        });
        assert!(stored.await, "the hub did not take {id}");
        ids.push(id);
    }
    ids
}

/// CPU time a process used so far (user and system), in seconds.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces) in parentheses.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    // From field 3 (state) on: utime and stime are fields 14 and 15.
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / 100.0
}

/// Peak resident memory of a process, in MiB (VmHWM).
fn peak_rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .unwrap_or(0.0)
        / 1024.0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fleet_of_sites_through_kills_cuts_and_a_leader_change_loses_and_doubles_nothing() {
    let sites_n = support::setting("JETEDGE_FLEET_SITES", 6);
    let orders = support::setting("JETEDGE_FLEET_ORDERS", 200);
    let scans = support::setting("JETEDGE_FLEET_SCANS", 60);
    // Between two events of one sender: long enough a run for every step
    // of the chaos to meet traffic.
    let pace = Duration::from_millis(support::setting("JETEDGE_FLEET_PACE_MS", 40) as u64);
    let mut hub = Cluster::start();
    let js = jetstream(&hub.urls()).await;
    let created = support::eventually(Duration::from_secs(60), async || {
        js.create_stream(async_nats::jetstream::stream::Config {
            name: STREAM.into(),
            subjects: vec!["sites.>".into(), "hub.>".into()],
            num_replicas: 3,
            duplicate_window: Duration::from_secs(7200),
            ..Default::default()
        })
        .await
        .is_ok()
    });
    assert!(created.await, "the hub did not create the R3 stream");

    let mut sites = Vec::new();
    for i in 0..sites_n {
        sites.push(Site::start(i, &hub).await);
    }
    let mut own = Vec::new();
    let mut news = Vec::new();
    for s in &sites {
        own.push(listen(&s.server, "site.own").await);
        news.push(listen(&s.server, "site.news").await);
    }
    let mut news_ids = publish_news(&js, 0).await;

    // Senders: one webhook poster and one kiosk per site, each retrying
    // until its event is acknowledged, as real senders do.
    let started = Instant::now();
    let done = Arc::new(AtomicUsize::new(0));
    let retries = Arc::new(AtomicUsize::new(0));
    let mut senders = Vec::new();
    for s in &sites {
        let (client, posted, post_retries) = (s.client(), done.clone(), retries.clone());
        senders.push(tokio::spawn(async move {
            for n in 0..orders {
                post_until_stored(&client, "shop", n, &post_retries).await;
                posted.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(pace).await;
            }
        }));
        let site = async_nats::connect(s.server.url()).await.unwrap();
        let kiosk = format!("k{}", s.name);
        let (done, retries) = (done.clone(), retries.clone());
        senders.push(tokio::spawn(async move {
            for n in 0..scans {
                scan_until_stored(&site, &kiosk, n, &retries).await;
                done.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(pace * 3).await;
            }
        }));
    }
    let total = sites_n * (orders + scans);
    let reach = async |share: f64| {
        while (done.load(Ordering::Relaxed) as f64) < share * total as f64 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };

    // Chaos, in steps through the run, on sites picked at random (the
    // seed is printed; JETEDGE_FLEET_SEED repeats a run).
    let seed = std::env::var("JETEDGE_FLEET_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| std::process::id() as u64 ^ started.elapsed().as_nanos() as u64);
    let mut rng = seed;
    let mut pick = |k: usize| -> Vec<usize> {
        let mut all: Vec<usize> = (0..sites_n).collect();
        for i in (1..all.len()).rev() {
            rng = rng
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            all.swap(i, (rng >> 33) as usize % (i + 1));
        }
        all.truncate(k.max(1));
        all
    };
    eprintln!("fleet: seed {seed}");
    reach(0.15).await;
    let killed = pick(sites_n / 3);
    for &i in &killed {
        sites[i].node.kill9();
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    for &i in &killed {
        tokio::task::block_in_place(|| sites[i].node.start());
    }
    eprintln!("fleet: killed and restarted {killed:?}");

    reach(0.3).await;
    let cut = pick(sites_n / 4);
    let cut_at = Instant::now();
    for &i in &cut {
        sites[i].cut(LinkMode::Cut);
    }
    eprintln!("fleet: cut the upstream links of {cut:?}");

    reach(0.45).await;
    let leader = support::nats::stream_info(&js, STREAM)
        .await
        .cluster
        .and_then(|c| c.leader);
    let leader = leader.expect("the stream has a leader");
    tokio::task::block_in_place(|| hub.by_name(&leader).unwrap().stop());
    eprintln!("fleet: stopped the stream leader {leader}");
    tokio::time::sleep(Duration::from_secs(3)).await;
    tokio::task::block_in_place(|| hub.by_name(&leader).unwrap().restart());
    news_ids.extend(publish_news(&js, 1).await);

    reach(0.6).await;
    tokio::time::sleep(CUT_FOR.saturating_sub(cut_at.elapsed())).await;
    let waiting: Vec<u64> = cut
        .iter()
        .map(|&i| sites[i].backlog().unwrap_or(0))
        .collect();
    let restored = Instant::now();
    for &i in &cut {
        sites[i].cut(LinkMode::Pass);
    }
    let killed_late = pick(sites_n / 3);
    for &i in &killed_late {
        sites[i].node.kill9();
        tokio::task::block_in_place(|| sites[i].node.start());
    }
    eprintln!("fleet: restored {cut:?}; killed and restarted {killed_late:?}");

    for s in senders {
        s.await.unwrap();
    }
    let posting = started.elapsed();

    // Every node drains; the cut sites' drain times count from the restore.
    let mut drains = HashMap::new();
    let deadline = Instant::now() + Duration::from_secs(180);
    while drains.len() < sites_n && Instant::now() < deadline {
        for (i, s) in sites.iter().enumerate() {
            if !drains.contains_key(&i) && s.backlog() == Some(0) {
                drains.insert(i, restored.elapsed());
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(drains.len(), sites_n, "sites still holding a backlog");

    let expected = total + news_ids.len();
    let msgs = read_stream(&js, STREAM, expected + 1, Duration::from_secs(30)).await;
    assert_eq!(msgs.len(), expected, "events in the hub stream");
    let mut by_site: HashMap<String, Vec<Msg>> = HashMap::new();
    for m in &msgs {
        let site = m.subject.split('.').nth(1).unwrap_or("hub").to_string();
        by_site.entry(site).or_default().push(m.clone());
    }
    let mut inversions = 0;
    for s in &sites {
        let mine = by_site.remove(&s.name).unwrap_or_default();
        let kiosk = format!("k{}", s.name);
        assert_once(&s.name, &mine, &[("shop", orders), (kiosk.as_str(), scans)]);
        inversions += count_inversions(&mine);
    }
    let hub_only: Vec<&String> = by_site.keys().filter(|k| *k != "news").collect();
    assert!(
        hub_only.is_empty(),
        "events under unknown sites: {hub_only:?}"
    );

    // Egress: each site got exactly its own events and the news.
    let all_news: HashSet<String> = news_ids.iter().cloned().collect();
    for (i, s) in sites.iter().enumerate() {
        let mine: HashSet<String> = msgs
            .iter()
            .filter(|m| m.subject.starts_with(&format!("sites.{}.", s.name)))
            .map(|m| m.header("Nats-Msg-Id").unwrap())
            .collect();
        let complete = support::eventually(Duration::from_secs(60), async || {
            *own[i].lock().unwrap() == mine && *news[i].lock().unwrap() == all_news
        });
        if !complete.await {
            let got = own[i].lock().unwrap().clone();
            let foreign = got.difference(&mine).count();
            let missing = mine.difference(&got).count();
            panic!(
                "{}: {missing} own events missing, {foreign} not its own; news {}/{}",
                s.name,
                news[i].lock().unwrap().len(),
                all_news.len()
            );
        }
    }

    let info = support::nats::stream_info(&js, STREAM).await;
    let stream = js.get_stream(STREAM).await.unwrap();
    let rss: Vec<f64> = sites.iter().map(|s| peak_rss_mib(s.node.pid())).collect();
    let hub_cpu: f64 = hub
        .servers
        .iter()
        .map(|s| s.pid().map_or(0.0, cpu_seconds))
        .sum();
    let hub_rss: Vec<f64> = hub
        .servers
        .iter()
        .map(|s| s.pid().map_or(0.0, peak_rss_mib))
        .collect();
    eprintln!(
        "fleet: {sites_n} sites, {total} events acknowledged in {posting:.1?} ({:.0} ev/s across the fleet), \
         {} sender retries, {inversions} order inversions",
        total as f64 / posting.as_secs_f64(),
        retries.load(Ordering::Relaxed)
    );
    for (&i, waiting) in cut.iter().zip(&waiting) {
        eprintln!(
            "fleet: {} (cut for {:.1?}, {waiting} events waiting) drained {:.1?} after its link came back",
            sites[i].name,
            restored - cut_at,
            drains[&i]
        );
    }
    eprintln!(
        "fleet: hub stream {} messages, {:.1} MiB, {} consumers; edge node peak RSS max {:.1} MiB, \
         hub servers peak RSS {hub_rss:.0?} MiB, CPU {hub_cpu:.1} s in all ({:.2} s per 1,000 events)",
        info.state.messages,
        info.state.bytes as f64 / (1 << 20) as f64,
        info.state.consumer_count,
        rss.iter().cloned().fold(0.0, f64::max),
        hub_cpu * 1000.0 / total as f64,
    );
    // The sites' durable consumers: one per site and subscription, named
    // by both (the test's own readers are ephemeral).
    let names: HashSet<String> = stream.consumer_names().map(|n| n.unwrap()).collect().await;
    let durable: HashSet<String> = names
        .into_iter()
        .filter(|n| n.starts_with("site-"))
        .collect();
    let expected: HashSet<String> = sites
        .iter()
        .flat_map(|s| [format!("{}-own", s.name), format!("{}-news", s.name)])
        .collect();
    assert_eq!(durable, expected, "one consumer per site and subscription");
    for s in &mut sites {
        tokio::task::block_in_place(|| s.node.stop());
    }
}

/// Each of a site's sources' events `0..count` exactly once, no id twice.
fn assert_once(site: &str, msgs: &[Msg], sources: &[(&str, usize)]) {
    let ids: HashSet<String> = msgs
        .iter()
        .map(|m| m.header("Nats-Msg-Id").unwrap())
        .collect();
    assert_eq!(ids.len(), msgs.len(), "{site}: an event id appears twice");
    let mut seen: HashMap<String, Vec<u64>> = HashMap::new();
    for m in msgs {
        let ev = m.json();
        let source = ev["data"]["data"]["source"]
            .as_str()
            .unwrap_or("?")
            .to_string();
        seen.entry(source)
            .or_default()
            .push(ev["data"]["data"]["n"].as_u64().unwrap());
    }
    for (source, count) in sources {
        let mut ns = seen.remove(*source).unwrap_or_default();
        ns.sort_unstable();
        let expected: Vec<u64> = (0..*count as u64).collect();
        assert!(
            ns == expected,
            "{site}/{source}: {} stored of {count}, or some twice",
            ns.len()
        );
    }
    assert!(
        seen.is_empty(),
        "{site}: events of other sources {:?}",
        seen.keys()
    );
}

/// Pairs of one source's events stored against their posting order.
fn count_inversions(msgs: &[Msg]) -> usize {
    let mut last: HashMap<String, u64> = HashMap::new();
    let mut inversions = 0;
    for m in msgs {
        let ev = m.json();
        let source = ev["data"]["data"]["source"]
            .as_str()
            .unwrap_or("")
            .to_string();
        let n = ev["data"]["data"]["n"].as_u64().unwrap_or(0);
        if let Some(prev) = last.insert(source, n) {
            if n < prev {
                inversions += 1;
            }
        }
    }
    inversions
}
