//! A real browser for the tests: Debian's headless Chromium, driven over the Chrome DevTools
//! Protocol on its WebSocket (no driver program in between). Every host but 127.0.0.1 is made
//! unresolvable, so a page that needed the network would fail. `bash .ci/run` installs
//! Chromium; without it these tests fail and say so.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio_tungstenite::tungstenite::Message;

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

pub struct Browser {
    _child: tokio::process::Child,
    socket: Socket,
    next_id: u64,
    _profile: tempfile::TempDir,
}

/// A tab, by its DevTools session.
pub struct Tab(String);

fn chromium() -> String {
    std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into())
}

impl Browser {
    pub async fn launch() -> Self {
        let profile = tempfile::tempdir().unwrap();
        let mut child = tokio::process::Command::new(chromium())
            .args([
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--no-first-run",
                "--remote-debugging-port=0",
                "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg("about:blank")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|err| {
                panic!(
                    "the browser tests need Chromium at {} ({err}); `bash .ci/run` installs it",
                    chromium()
                )
            });
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let endpoint = tokio::time::timeout(Duration::from_secs(30), async {
            while let Some(line) = lines.next_line().await.unwrap() {
                if let Some(url) = line.strip_prefix("DevTools listening on ") {
                    return url.trim().to_string();
                }
            }
            panic!("Chromium exited before it listened");
        })
        .await
        .expect("Chromium starts");
        // Keep draining its output so it never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        let (socket, _) = tokio_tungstenite::connect_async(endpoint).await.unwrap();
        Self {
            _child: child,
            socket,
            next_id: 0,
            _profile: profile,
        }
    }

    /// Sends a DevTools command (on a tab's session, or the browser's) and returns its result.
    async fn command(&mut self, session: Option<&str>, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let mut message = json!({ "id": id, "method": method, "params": params });
        if let Some(session) = session {
            message["sessionId"] = json!(session);
        }
        self.socket
            .send(Message::text(message.to_string()))
            .await
            .unwrap();
        loop {
            let frame = tokio::time::timeout(Duration::from_secs(30), self.socket.next())
                .await
                .unwrap_or_else(|_| panic!("no answer to {method}"))
                .unwrap()
                .unwrap();
            let Message::Text(text) = frame else { continue };
            let value: Value = serde_json::from_str(&text).unwrap();
            if value["id"] == json!(id) {
                if let Some(error) = value.get("error") {
                    panic!("{method} failed: {error}");
                }
                return value["result"].clone();
            }
        }
    }

    /// Opens `url` in a new tab and waits until it has loaded.
    pub async fn open(&mut self, url: &str) -> Tab {
        let target = self
            .command(None, "Target.createTarget", json!({ "url": url }))
            .await;
        let attached = self
            .command(
                None,
                "Target.attachToTarget",
                json!({ "targetId": target["targetId"], "flatten": true }),
            )
            .await;
        let tab = Tab(attached["sessionId"].as_str().unwrap().to_string());
        for _ in 0..100 {
            if self.eval(&tab, "document.readyState").await == json!("complete") {
                return tab;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("{url} did not load");
    }

    /// Evaluates `expression` in the tab (awaiting a promise) and returns its value; a thrown
    /// error comes back as `{"thrown": message}`.
    pub async fn eval(&mut self, tab: &Tab, expression: &str) -> Value {
        let result = self
            .command(
                Some(&tab.0),
                "Runtime.evaluate",
                json!({ "expression": expression, "awaitPromise": true, "returnByValue": true }),
            )
            .await;
        if let Some(details) = result.get("exceptionDetails") {
            let message = details["exception"]["description"]
                .as_str()
                .or(details["text"].as_str())
                .unwrap_or("exception");
            return json!({ "thrown": message });
        }
        result["result"]["value"].clone()
    }

    /// Evaluates `expression` until it is truthy (up to `wait`); its last value.
    pub async fn wait_for(&mut self, tab: &Tab, expression: &str, wait: Duration) -> Value {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let value = self.eval(tab, expression).await;
            let truthy = !matches!(&value, Value::Null | Value::Bool(false))
                && value != json!(0)
                && value != json!("");
            if truthy || tokio::time::Instant::now() > deadline {
                return value;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}
