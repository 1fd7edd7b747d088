//! An HTTP/1.1 client for tests (hyper, keep-alive), and a blocking GET for
//! the nats-server monitoring port.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::{connect::HttpConnector, Client as HyperClient};
use serde_json::Value;
use std::io::{Read, Write};

#[derive(Clone)]
pub struct Client {
    inner: HyperClient<HttpConnector, Full<Bytes>>,
    base: String,
}

/// What the node answered.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub headers: hyper::HeaderMap,
    pub body: Value,
}

impl Client {
    pub fn new(addr: std::net::SocketAddr) -> Self {
        let inner = HyperClient::builder(hyper_util::rt::TokioExecutor::new())
            .pool_max_idle_per_host(64)
            .build_http();
        Self {
            inner,
            base: format!("http://{addr}"),
        }
    }

    pub async fn post(&self, path: &str, headers: &[(String, String)], body: Vec<u8>) -> Reply {
        self.try_post(path, headers, body)
            .await
            .expect("request to the node failed")
    }

    /// As [`Client::post`], but a connection failure is returned rather than a panic
    /// (for tests where the node goes away).
    pub async fn try_post(
        &self,
        path: &str,
        headers: &[(String, String)],
        body: Vec<u8>,
    ) -> Result<Reply, String> {
        let mut req = hyper::Request::post(format!("{}{path}", self.base));
        for (k, v) in headers {
            req = req.header(k, v);
        }
        self.try_send(req.body(Full::new(Bytes::from(body))).unwrap())
            .await
    }

    pub async fn get(&self, path: &str) -> Reply {
        let req = hyper::Request::get(format!("{}{path}", self.base))
            .body(Full::new(Bytes::new()))
            .unwrap();
        self.try_send(req)
            .await
            .expect("request to the node failed")
    }

    async fn try_send(&self, req: hyper::Request<Full<Bytes>>) -> Result<Reply, String> {
        let resp = self.inner.request(req).await.map_err(|e| e.to_string())?;
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let bytes = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Ok(Reply {
            status,
            headers,
            body,
        })
    }
}

/// Posts a signed order webhook `n` of `source`; returns the reply.
pub async fn post_order(client: &Client, source: &str, n: usize) -> Reply {
    let body = super::order_body(source, n);
    let id = format!("{source}-{n}");
    let headers = super::sign(&id, &body, super::now());
    client
        .post(&format!("/v1/webhooks/{source}"), &headers, body)
        .await
}

/// Posts order `n` of `source` until the node answers that it holds it.
pub async fn post_until_stored(
    client: &Client,
    source: &str,
    n: usize,
    retries: &std::sync::atomic::AtomicUsize,
) {
    let body = super::order_body(source, n);
    let id = format!("{source}-{n}");
    loop {
        match client
            .try_post(
                &format!("/v1/webhooks/{source}"),
                &super::sign(&id, &body, super::now()),
                body.clone(),
            )
            .await
        {
            Ok(r) if r.status == 202 || r.status == 200 => return,
            Ok(r) if r.status == 503 => {} // stopping, or full: retry later
            Ok(r) => panic!("{id}: unexpected answer {r:?}"),
            Err(_) => {} // the node is down or was killed mid-request
        }
        retries.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// A GET over a plain socket, for health checks from sync code.
pub fn blocking_get(port: u16, path: &str) -> Option<(u16, String)> {
    blocking_get_auth(port, path, None)
}

/// As [`blocking_get`], with a bearer token (the admin API's).
pub fn blocking_get_auth(port: u16, path: &str, token: Option<&str>) -> Option<(u16, String)> {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(std::time::Duration::from_secs(2)))
        .ok()?;
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{auth}Connection: close\r\n\r\n"
    )
    .ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    let status = text.split_whitespace().nth(1)?.parse().ok()?;
    let body = text.split("\r\n\r\n").nth(1).unwrap_or("").to_string();
    Some((status, body))
}

/// One request of any method with extra headers and no body (the admin
/// API's calls); the answer's status and JSON body (`Null` if not JSON).
pub async fn call(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> (u16, Value) {
    let mut req = hyper::Request::builder()
        .method(method)
        .uri(format!("http://{addr}{path}"));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let client = HyperClient::builder(hyper_util::rt::TokioExecutor::new()).build_http();
    let resp = client
        .request(req.body(Full::new(Bytes::new())).unwrap())
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
}
