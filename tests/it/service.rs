//! Running as a service: the readiness protocol a systemd `Type=notify`
//! unit waits for, the shipped unit as systemd reads it, and `--version`.

use crate::support;

use std::os::unix::net::UnixDatagram;
use std::process::{Command, Stdio};
use std::time::Duration;
use support::{node_config, TempDir};

fn next(socket: &UnixDatagram) -> String {
    let mut buf = [0u8; 256];
    let n = socket.recv(&mut buf).expect("a notification in time");
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

#[test]
fn the_node_tells_its_service_manager_when_it_is_ready_reloading_and_stopping() {
    let dir = TempDir::new("notify");
    let socket_path = dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let offline = format!("nats://127.0.0.1:{}", support::free_port());
    let port = support::free_port();
    let text = node_config(&dir.path().join("data"), &[offline]).replacen(
        "listen = \"127.0.0.1:0\"",
        &format!("listen = \"127.0.0.1:{port}\""),
        1,
    );
    let config = dir.path().join("jetedge.toml");
    std::fs::write(&config, text).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_jetedge"))
        .args(["run", "-c"])
        .arg(&config)
        .env("NOTIFY_SOCKET", &socket_path)
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let signal = |sig: &str| {
        let ok = Command::new("kill")
            .args([sig, &child.id().to_string()])
            .status()
            .unwrap();
        assert!(ok.success());
    };
    assert_eq!(next(&socket), "READY=1");
    // Ready means ready: the listener answers at once.
    let ready = support::http::blocking_get(port, "/readyz").expect("listening");
    assert_eq!(ready.0, 200, "{ready:?}");
    signal("-HUP");
    assert_eq!(next(&socket), "RELOADING=1");
    assert_eq!(next(&socket), "READY=1");
    signal("-TERM");
    assert_eq!(next(&socket), "STOPPING=1");
    assert!(child.wait().unwrap().success());
}

#[test]
fn the_shipped_unit_is_valid_for_systemd() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let unit = std::fs::read_to_string(root.join("conf/jetedge.service")).unwrap();
    for line in [
        "Type=notify",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "DynamicUser=yes",
        "ProtectSystem=strict",
        "StateDirectory=jetedge",
        "NoNewPrivileges=yes",
        "MemoryMax=",
        "RestartPreventExitStatus=2 3",
    ] {
        assert!(unit.contains(line), "{line} missing from the unit");
    }
    // systemd-analyze checks every directive, with the binary of this build.
    let dir = TempDir::new("unit");
    let path = dir.path().join("jetedge.service");
    std::fs::write(
        &path,
        unit.replace("/usr/local/bin/jetedge", env!("CARGO_BIN_EXE_jetedge")),
    )
    .unwrap();
    let out = Command::new("systemd-analyze")
        .args(["verify"])
        .arg(&path)
        .output()
        .expect("systemd-analyze (package systemd) runs");
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && said.trim().is_empty(), "{said}");
}

#[test]
fn version_names_the_build() {
    let out = Command::new(env!("CARGO_BIN_EXE_jetedge"))
        .arg("--version")
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("jetedge {}", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn json_logs_are_one_object_per_line_with_the_source_of_the_request() {
    let dir = TempDir::new("json-logs");
    let offline = format!("nats://127.0.0.1:{}", support::free_port());
    let port = support::free_port();
    let text = node_config(&dir.path().join("data"), &[offline])
        .replacen("[node]\n", "[node]\nlog_format = \"json\"\n", 1)
        .replacen(
            "listen = \"127.0.0.1:0\"",
            &format!("listen = \"127.0.0.1:{port}\""),
            1,
        );
    let config = dir.path().join("jetedge.toml");
    std::fs::write(&config, text).unwrap();
    let log = dir.path().join("jetedge.log");
    let mut child = Command::new(env!("CARGO_BIN_EXE_jetedge"))
        .args(["run", "-c"])
        .arg(&config)
        .env("JETEDGE_LOG", "info,jetedge::ingress=debug")
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let ready = || support::http::blocking_get(port, "/readyz").is_some_and(|(s, _)| s == 200);
    for _ in 0..200 {
        if ready() {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    // A request to a source that does not exist is refused and logged (debug).
    let refused = support::http::blocking_get(port, "/v1/webhooks/no-such-source");
    assert!(refused.is_some());
    let ok = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(ok.success());
    assert!(child.wait().unwrap().success());

    let text = std::fs::read_to_string(&log).unwrap();
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    assert!(lines
        .iter()
        .all(|l| l["timestamp"].is_string() && l["level"].is_string()));
    let started = lines
        .iter()
        .find(|l| l["fields"]["message"] == "jetedge started");
    assert_eq!(
        started.expect("the start line")["fields"]["node"],
        "test-node"
    );
    let refusal = lines
        .iter()
        .find(|l| l["fields"]["message"] == "request refused");
    let refusal = refusal.unwrap_or_else(|| panic!("no refusal logged:\n{text}"));
    assert_eq!(refusal["span"]["source"], "no-such-source", "{refusal}");
    assert_eq!(refusal["fields"]["code"], "method_not_allowed", "{refusal}");
}

#[test]
fn the_demo_runs_the_whole_mesh_and_says_where_each_event_went() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = Command::new(root.join("scripts/demo.sh"))
        .env("JETEDGE_BIN", env!("CARGO_BIN_EXE_jetedge"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for want in [
        "\"status\":\"filtered\"",
        "upstream disconnected",
        "backlog 0 events",
        "hub stream EDGE holds 4 events",
        "data={\"code\": 42}",
        "data={\"code\": 43}",
        "\"card\": \"**** **** **** 1111\"",
        "jetedge_events_filtered_total 1",
    ] {
        assert!(
            text.contains(want),
            "{want:?} missing from the demo's output:\n{text}"
        );
    }
    assert!(!text.contains("4111 1111"), "{text}");
}

#[test]
fn the_harness_moves_a_node_whose_port_another_process_took() {
    let dir = TempDir::new("port-taken");
    let offline = format!("nats://127.0.0.1:{}", support::free_port());
    let mut node = support::node::Binary::configured(
        dir.path(),
        &node_config(&dir.path().join("data"), &[offline]),
    );
    // Someone else binds the port between the pick and the start.
    let squatter = std::net::TcpListener::bind(("127.0.0.1", node.port)).unwrap();
    let taken = node.port;
    node.start();
    assert_ne!(node.port, taken);
    let ready = support::http::blocking_get(node.port, "/readyz").unwrap();
    assert_eq!(ready.0, 200);
    drop(squatter);
    node.stop();
}
