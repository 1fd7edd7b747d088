//! The real jetedge binary, run as an operator would: a config file, a log
//! file, readiness polled on `/readyz`, and `kill -9` for crash tests.

use super::http::{blocking_get, blocking_get_auth};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The jetedge binary under test, run with `config`, logging to `log`.
pub struct Binary {
    config: PathBuf,
    log: PathBuf,
    pub port: u16,
    pub admin_port: u16,
    child: Option<Child>,
    /// Where the log of the latest start begins.
    log_from: usize,
}

impl Binary {
    /// A node whose config is `text` with its ingress (the first
    /// `listen`) and admin listener (the second) on free loopback ports;
    /// config and log files go in `dir`. Not started yet.
    pub fn configured(dir: &Path, text: &str) -> Self {
        let [port, admin_port] = super::free_ports();
        let any = "listen = \"127.0.0.1:0\"";
        let text = text
            .replacen(any, &format!("listen = \"127.0.0.1:{port}\""), 1)
            .replacen(any, &format!("listen = \"127.0.0.1:{admin_port}\""), 1);
        let config = dir.join("jetedge.toml");
        std::fs::write(&config, text).unwrap();
        Self {
            config,
            log: dir.join("jetedge.log"),
            port,
            admin_port,
            child: None,
            log_from: 0,
        }
    }

    /// Starts the process and waits until `/readyz` answers 200. A port
    /// picked free can be taken by another test before the node binds it:
    /// then the node is started again on new ports.
    pub fn start(&mut self) {
        for _ in 0..3 {
            self.spawn();
            if self.wait_ready() {
                return;
            }
            self.move_ports();
        }
        panic!(
            "jetedge found its ports taken three times:\n{}",
            self.log_tail(5)
        );
    }

    /// New free ports for both listeners, in the config file too.
    fn move_ports(&mut self) {
        let [port, admin_port] = super::free_ports();
        let text = std::fs::read_to_string(&self.config).unwrap();
        // The ingress listener comes first in the file, then the admin one
        // (one at a time: the old ports may be the same).
        let text = text
            .replacen(
                &format!("127.0.0.1:{}\"", self.port),
                &format!("127.0.0.1:{port}\""),
                1,
            )
            .replacen(
                &format!("127.0.0.1:{}\"", self.admin_port),
                &format!("127.0.0.1:{admin_port}\""),
                1,
            );
        std::fs::write(&self.config, text).unwrap();
        (self.port, self.admin_port) = (port, admin_port);
    }

    /// The process id of the running node.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// Starts the process without waiting for it.
    pub fn spawn(&mut self) {
        self.log_from = self.log().len();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_jetedge"))
            .args(["run", "-c"])
            .arg(&self.config)
            .env("JETEDGE_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("starting jetedge");
        self.child = Some(child);
    }

    /// Waits for `/readyz`; `false` when the node exited because one of
    /// its ports was taken.
    fn wait_ready(&mut self) -> bool {
        let deadline = Instant::now() + Duration::from_secs(30);
        while blocking_get(self.port, "/readyz").is_none_or(|(s, _)| s != 200) {
            let exited = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten());
            let tail = self.log_tail(30);
            let this_run = self.log().get(self.log_from..).unwrap_or("").to_string();
            if exited.is_some() && this_run.contains("Address already in use") {
                self.child = None;
                return false;
            }
            if exited.is_some() || Instant::now() >= deadline {
                panic!("jetedge did not become ready (exit: {exited:?}); its log ends:\n{tail}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        true
    }

    pub fn config_path(&self) -> &Path {
        &self.config
    }

    /// SIGTERM, and waits for the graceful stop.
    pub fn stop(&mut self) {
        let mut c = self.child.take().expect("running");
        let status = Command::new("kill")
            .args(["-TERM", &c.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        let code = c.wait().unwrap();
        assert!(code.success(), "jetedge exited with {code} after SIGTERM");
    }

    /// Waits up to `timeout` for the node to exit by itself.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        let c = self.child.as_mut().expect("running");
        loop {
            if let Some(status) = c.try_wait().unwrap() {
                self.child = None;
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The log of the latest start only.
    pub fn log_of_this_run(&self) -> String {
        self.log().get(self.log_from..).unwrap_or("").to_string()
    }

    /// The last `n` lines of the log, for a failing test's message.
    pub fn log_tail(&self, n: usize) -> String {
        let log = self.log();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// The admin API's token, as the CLI finds it (config or token file).
    pub fn admin_token(&self) -> String {
        let cfg = jetedge::config::Config::load(&self.config).expect("config loads");
        jetedge::admin::token(&cfg, false).expect("admin token")
    }

    /// A JSON document from the admin listener (loopback, with its token).
    pub fn admin_json(&self, path: &str) -> serde_json::Value {
        let token = self.admin_token();
        let (status, body) =
            blocking_get_auth(self.admin_port, path, Some(&token)).expect("admin listener");
        assert_eq!(status, 200, "{path}: {body}");
        serde_json::from_str(&body).unwrap()
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| c.try_wait().ok().flatten().is_none())
    }

    pub fn kill9(&mut self) {
        let mut c = self.child.take().expect("running");
        c.kill().unwrap(); // SIGKILL: no shutdown path runs
        c.wait().unwrap();
    }
}

impl Drop for Binary {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
