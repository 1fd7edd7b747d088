//! Debian's Chromium driven through its WebDriver (chromedriver), over
//! plain HTTP and JSON: load a page, read the rendered DOM, click, and
//! take a screenshot. `scripts/install-chromium.sh` installs both; the
//! paths can be given with `CHROMIUM_BIN` and `CHROMEDRIVER_BIN`.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use serde_json::{json, Value};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The W3C WebDriver key of an element reference.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

pub struct Browser {
    driver: Child,
    base: String,
    session: String,
    _profile: super::TempDir,
}

fn bin(var: &str, default: &str) -> String {
    std::env::var(var).unwrap_or_else(|_| default.to_string())
}

impl Browser {
    /// A headless Chromium with a fresh profile, and no network of its own
    /// (background services off: this machine has none to offer).
    pub async fn start() -> Browser {
        let port = super::free_port();
        let driver = Command::new(bin("CHROMEDRIVER_BIN", "/usr/bin/chromedriver"))
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver (scripts/install-chromium.sh installs it)");
        let base = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(20);
        while request("GET", &format!("{base}/status"), None)
            .await
            .is_none()
        {
            assert!(Instant::now() < deadline, "chromedriver did not start");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let profile = super::TempDir::new("chromium");
        let args = [
            "--headless=new".to_string(),
            "--no-sandbox".into(),
            "--disable-gpu".into(),
            "--disable-quic".into(),
            "--no-first-run".into(),
            "--disable-background-networking".into(),
            "--disable-component-update".into(),
            "--disable-sync".into(),
            "--window-size=1280,1600".into(),
            format!("--user-data-dir={}", profile.path().display()),
        ];
        let caps = json!({"capabilities": {"alwaysMatch": {"browserName": "chrome",
            "goog:chromeOptions": {"binary": bin("CHROMIUM_BIN", "/usr/bin/chromium"), "args": args}}}});
        let mut b = Browser {
            driver,
            base,
            session: String::new(),
            _profile: profile,
        };
        let v = b.call("POST", "/session", Some(caps)).await;
        b.session = v["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session: {v}"))
            .to_string();
        b
    }

    async fn call(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let url = format!("{}{path}", self.base);
        let v = request(method, &url, body)
            .await
            .expect("chromedriver answers");
        if v["value"]["error"].is_string() {
            panic!("WebDriver {method} {path}: {}", v["value"]);
        }
        v
    }

    async fn session(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let path = format!("/session/{}{path}", self.session);
        self.call(method, &path, body).await["value"].clone()
    }

    pub async fn open(&self, url: &str) {
        self.session("POST", "/url", Some(json!({"url": url})))
            .await;
    }

    /// The elements matching a CSS selector, now.
    async fn find_all(&self, css: &str) -> Vec<String> {
        let body = json!({"using": "css selector", "value": css});
        let found = self.session("POST", "/elements", Some(body)).await;
        let items = found.as_array().cloned().unwrap_or_default();
        items
            .iter()
            .filter_map(|e| e[ELEMENT].as_str().map(str::to_string))
            .collect()
    }

    /// The rendered text of the first element matching `css`, if any.
    pub async fn text(&self, css: &str) -> Option<String> {
        let id = self.find_all(css).await.into_iter().next()?;
        let v = self
            .session("GET", &format!("/element/{id}/text"), None)
            .await;
        v.as_str().map(str::to_string)
    }

    /// Waits up to `timeout` for the text of `css` to satisfy `ok`.
    pub async fn wait_text(
        &self,
        css: &str,
        timeout: Duration,
        ok: impl Fn(&str) -> bool,
    ) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let text = self.text(css).await.unwrap_or_default();
            if ok(&text) {
                return text;
            }
            if Instant::now() >= deadline {
                let page = self.session("GET", "/source", None).await;
                let page = page
                    .as_str()
                    .unwrap_or_default()
                    .chars()
                    .take(3000)
                    .collect::<String>();
                panic!("{css} still shows {text:?}; the page:\n{page}");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Clicks the first element matching `css`, as a user would.
    pub async fn click(&self, css: &str) {
        let id = self.find_all(css).await.into_iter().next();
        let id = id.unwrap_or_else(|| panic!("nothing matches {css}"));
        self.session("POST", &format!("/element/{id}/click"), Some(json!({})))
            .await;
    }

    /// A PNG of the window, written to `path`.
    pub async fn screenshot(&self, path: &std::path::Path) {
        use base64::Engine;
        let png = self.session("GET", "/screenshot", None).await;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(png.as_str().expect("base64 PNG"))
            .unwrap();
        std::fs::write(path, bytes).unwrap();
    }

    pub async fn stop(mut self) {
        let path = format!("/session/{}", self.session);
        let _ = request("DELETE", &format!("{}{path}", self.base), None).await;
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.driver.kill();
    }
}

async fn request(method: &str, url: &str, body: Option<Value>) -> Option<Value> {
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<Full<Bytes>>();
    let bytes = body.map_or_else(Bytes::new, |b| Bytes::from(b.to_string()));
    let req = hyper::Request::builder()
        .method(method)
        .uri(url)
        .header("content-type", "application/json")
        .body(Full::new(bytes))
        .ok()?;
    let resp = tokio::time::timeout(Duration::from_secs(60), client.request(req))
        .await
        .ok()?
        .ok()?;
    let body = resp.into_body().collect().await.ok()?.to_bytes();
    serde_json::from_slice(&body).ok()
}
