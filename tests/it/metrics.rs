//! `/metrics` as Prometheus reads it: the text parses with an independent
//! parser, the histograms move with traffic, and the backlog's oldest
//! event ages while forwarding is held.

use crate::support;

use jetedge::Node;
use std::time::Duration;
use support::http::{blocking_get, post_order, Client};
use support::nats::NatsServer;
use support::webhook::{Mode, Receiver};
use support::{node_config, parse_config, TempDir, SECRET, SECRET_ENV};

fn scrape(port: u16) -> prometheus_parse::Scrape {
    let (status, text) = blocking_get(port, "/metrics").expect("admin listener");
    assert_eq!(status, 200);
    let lines = text.lines().map(|l| Ok(l.to_string()));
    prometheus_parse::Scrape::parse(lines).expect("Prometheus text format")
}

/// The value of a series (a counter, gauge, or a histogram's `_count`).
fn value(s: &prometheus_parse::Scrape, name: &str, label: Option<(&str, &str)>) -> f64 {
    use prometheus_parse::Value;
    let sample = s
        .samples
        .iter()
        .find(|x| x.metric == name && label.is_none_or(|(k, v)| x.labels.get(k) == Some(v)));
    match sample
        .unwrap_or_else(|| panic!("no series {name} {label:?}"))
        .value
    {
        Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => v,
        ref other => panic!("{name}: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_parse_and_the_histograms_move() {
    let nats = NatsServer::start();
    let hook = Receiver::start(SECRET, Mode::Ok).await;
    let dir = TempDir::new("metrics");
    // A rate limit far above the load, so its series is there to read.
    let text = node_config(dir.path(), &[nats.url()]).replacen(
        "[ingress]\n",
        "[ingress]\nrate_limit = { per_second = 100000, burst = 100000 }\n",
        1,
    ) + &format!(
        "\n[[subscription]]\nname = \"apps\"\nsubjects = [\"events.shop.>\"]\ndeliver = \"all\"\n\
             to_webhook = {{ url = \"{}\", secret = \"env:{SECRET_ENV}\" }}\n",
        hook.url
    );
    let node = Node::start(parse_config(&text)).await.unwrap();
    let port = node.admin_addr.unwrap().port();
    let client = Client::new(node.ingress_addr);
    for n in 0..20 {
        assert_eq!(post_order(&client, "shop", n).await.status, 202);
    }
    let delivered = support::eventually(Duration::from_secs(30), async || hook.count() >= 20);
    assert!(delivered.await, "the webhook got {}", hook.count());

    let s = scrape(port);
    assert_eq!(value(&s, "jetedge_events_accepted_total", None), 20.0);
    assert!(value(&s, "jetedge_ingest_duration_seconds_count", None) >= 20.0);
    assert_eq!(value(&s, "jetedge_commit_events_sum", None), 20.0);
    assert!(value(&s, "jetedge_commit_duration_seconds_count", None) >= 1.0);
    assert_eq!(
        value(&s, "jetedge_forward_duration_seconds_count", None),
        20.0
    );
    let apps = Some(("subscription", "apps"));
    assert!(value(&s, "jetedge_egress_delivery_duration_seconds_count", apps) >= 20.0);
    assert_eq!(value(&s, "jetedge_egress_delivered_total", apps), 20.0);
    assert!(value(&s, "jetedge_egress_consumer_pending", apps) >= 0.0);
    assert_eq!(
        value(
            &s,
            "jetedge_build_info",
            Some(("version", env!("CARGO_PKG_VERSION")))
        ),
        1.0
    );
    assert_eq!(value(&s, "jetedge_upstream_connected", None), 1.0);
    assert_eq!(
        value(&s, "jetedge_backlog_oldest_event_age_seconds", None),
        0.0
    );
    assert!(
        s.docs.contains_key("jetedge_ingest_duration_seconds"),
        "HELP lines are read"
    );
    dashboard_names_exist(&s);

    // Forwarding held: the backlog's oldest event ages, and ingest moves.
    node.pause_forwarding(true);
    for n in 20..25 {
        assert_eq!(post_order(&client, "shop", n).await.status, 202);
    }
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let s = scrape(port);
    assert_eq!(value(&s, "jetedge_backlog_events", None), 5.0);
    assert!(value(&s, "jetedge_backlog_bytes", None) > 0.0);
    let age = value(&s, "jetedge_backlog_oldest_event_age_seconds", None);
    assert!((1.0..60.0).contains(&age), "oldest event age {age}");
    assert!(value(&s, "jetedge_ingest_duration_seconds_count", None) >= 25.0);
    node.shutdown().await;
}

/// Every metric the shipped Grafana dashboard queries is one the node
/// exposes (`jetedge_local_connected` only with `[local]`, absent here;
/// `jetedge_rate_limited_total` only with a rate limit, set here).
fn dashboard_names_exist(s: &prometheus_parse::Scrape) {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(root.join("conf/grafana-dashboard.json")).unwrap();
    let dashboard: serde_json::Value = serde_json::from_str(&text).expect("the dashboard is JSON");
    let names = regex::Regex::new(r"jetedge_[a-z_]+").unwrap();
    let mut checked = 0;
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().unwrap() {
            let expr = target["expr"].as_str().unwrap();
            for m in names.find_iter(expr) {
                let name = m.as_str();
                let base = ["_bucket", "_sum", "_count"]
                    .iter()
                    .find_map(|suffix| name.strip_suffix(suffix))
                    .unwrap_or(name);
                if base == "jetedge_local_connected" {
                    continue;
                }
                assert!(
                    s.docs.contains_key(base),
                    "the dashboard queries {name}, which /metrics lacks"
                );
                checked += 1;
            }
        }
    }
    assert!(checked > 20, "{checked} names checked");
}
