//! GraphQL over WebSocket on `/graphql`: `graphql-transport-ws` (the graphql-ws library's
//! protocol) and the legacy `graphql-ws` (subscriptions-transport-ws). One task per connection
//! reads the client's frames; frames to the client go through one bounded queue that the
//! response body drains. Subscriptions run in shared groups (`fanout`); queries and mutations
//! sent over the socket run once each.
//!
//! Close codes follow graphql-transport-ws: 4400 bad message, 4401 subscribe before
//! `connection_ack`, 4403 credential refused or expired, 4408 no `connection_init` in time,
//! 4409 duplicate subscription id, 4429 a second `connection_init`; 3008 when the client stops
//! answering keep-alive pings.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use actix_codec::{Decoder, Framed};
use actix_http::ws::{CloseCode, CloseReason, Codec, Frame, Item, OpCode, Parser, hash_key};
use actix_http::{Request, h1};
use actix_web::HttpMessage;
use actix_web::http::header;
use async_graphql::http::ClientMessage;
use async_graphql::parser::types::OperationType;
use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::fanout::{Fanout, Member, Membership, Operation};
use crate::auth::Principal;
use crate::context::AppState;
use crate::error::AppError;
use crate::graphql::HubSchema;

/// How much is read from a socket at a time.
const READ_CHUNK: usize = 4096;

/// How long a new connection has to send `connection_init`.
const INIT_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// `graphql-transport-ws`.
    TransportWs,
    /// `graphql-ws` (subscriptions-transport-ws, legacy).
    LegacyWs,
}

impl Protocol {
    /// The first subprotocol the client offers that we speak.
    fn choose(offered: &str) -> Option<Self> {
        offered.split(',').find_map(|p| {
            let p = p.trim();
            if p.eq_ignore_ascii_case("graphql-transport-ws") {
                Some(Self::TransportWs)
            } else if p.eq_ignore_ascii_case("graphql-ws") {
                Some(Self::LegacyWs)
            } else {
                None
            }
        })
    }

    fn name(self) -> &'static str {
        match self {
            Self::TransportWs => "graphql-transport-ws",
            Self::LegacyWs => "graphql-ws",
        }
    }
}

/// The errors of a response that is a request error (the document did not parse, validate
/// or pass the limits: nothing ran), as a JSON array; None for any other response.
pub fn request_errors(response: &async_graphql::Response) -> Option<serde_json::Value> {
    let refused = response.data == async_graphql::Value::Null
        && !response.errors.is_empty()
        && response.errors.iter().all(|e| e.path.is_empty());
    refused.then(|| serde_json::to_value(&response.errors).unwrap_or_default())
}

/// The protocol's `error` message for operation `id`: it ends the operation (no `complete`
/// follows). graphql-transport-ws carries the list of errors, the legacy protocol the first.
pub fn error_message(protocol: Protocol, id: &str, errors: serde_json::Value) -> String {
    let payload = match protocol {
        Protocol::TransportWs => errors,
        Protocol::LegacyWs => errors
            .as_array()
            .and_then(|list| list.first().cloned())
            .unwrap_or_default(),
    };
    serde_json::json!({ "type": "error", "id": id, "payload": payload }).to_string()
}

/// The legacy protocol's message type, if a graphql-transport-ws client sent one (it has no
/// `start`, `stop` or `connection_terminate`). The legacy protocol stays lenient.
fn foreign_message_type(protocol: Protocol, bytes: &[u8]) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Kind {
        #[serde(rename = "type")]
        kind: String,
    }
    let kind = serde_json::from_slice::<Kind>(bytes).ok()?.kind;
    let foreign: &[&str] = match protocol {
        Protocol::TransportWs => &["start", "stop", "connection_terminate"],
        Protocol::LegacyWs => &[],
    };
    foreign.contains(&kind.as_str()).then_some(kind)
}

/// `text` as a JSON string literal.
pub fn json_string(text: &str) -> String {
    serde_json::Value::from(text).to_string()
}

/// The message carrying one result of subscription `id_json` (already a JSON string).
pub fn next_message(protocol: Protocol, id_json: &str, payload: &str) -> String {
    let kind = match protocol {
        Protocol::TransportWs => "next",
        Protocol::LegacyWs => "data",
    };
    let mut text = String::with_capacity(payload.len() + id_json.len() + 32);
    text.push_str(r#"{"type":""#);
    text.push_str(kind);
    text.push_str(r#"","id":"#);
    text.push_str(id_json);
    text.push_str(r#","payload":"#);
    text.push_str(payload);
    text.push('}');
    text
}

/// A server-to-client text frame.
pub fn text_frame(text: &str) -> Bytes {
    let mut buf = BytesMut::with_capacity(text.len() + 10);
    Parser::write_message(&mut buf, text, OpCode::Text, true, false);
    buf.freeze()
}

fn control_frame(payload: &[u8], op: OpCode) -> Bytes {
    let mut buf = BytesMut::with_capacity(payload.len() + 2);
    Parser::write_message(&mut buf, payload, op, true, false);
    buf.freeze()
}

fn close_frame(code: u16, reason: &str) -> Bytes {
    // A close frame's reason has at most 123 bytes.
    let mut end = reason.len().min(123);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    let mut buf = BytesMut::new();
    Parser::write_close(
        &mut buf,
        Some(CloseReason {
            code: CloseCode::from(code),
            description: Some(reason[..end].to_string()),
        }),
        false,
    );
    buf.freeze()
}

/// From subscriptions and their groups to the connection's task.
pub enum Control {
    /// The subscription's member fell behind: send it a notice of what it missed.
    Lagging { id: String, token: u64 },
    /// The subscription's stream ended: send `complete`.
    Ended { id: String, token: u64 },
    /// The operation was refused before it ran (its `error` message is sent): forget it.
    Failed { id: String, token: u64 },
}

/// What the WebSocket upgrades of one server need: they are taken over from the HTTP
/// dispatcher (see [`upgrade`]), so they do not pass the App's routes or middleware.
#[derive(Clone)]
pub struct Upgrades {
    pub state: AppState,
    pub schema: HubSchema,
    pub fanout: Arc<Fanout>,
    /// `HUB_CORS_ORIGINS`, parsed once.
    pub origins: Arc<Vec<String>>,
}

/// A WebSocket upgrade (any request with `Connection: upgrade`), taken over from actix's
/// HTTP/1 dispatcher with its socket. The dispatcher keeps two 8 KiB buffers for as long as a
/// connection lives; a subscriber's socket taken over holds no buffer while it is idle
/// (16 KB → under 10 KB per subscriber, `cargo bench --bench live`).
///
/// The handshake answers what the App route did: 404 off `/graphql`, 403 for an origin not
/// allowed, 400 without a subprotocol we speak or with a bad handshake, 503 with
/// `Retry-After` beyond the WebSocket cap, and 101 with the request's `X-Request-Id`. Any
/// answer but 101 closes the connection.
pub fn upgrade(
    upgrades: &Upgrades,
    req: Request,
    framed: Framed<TcpStream, h1::Codec>,
) -> futures_util::future::LocalBoxFuture<'static, Result<(), std::convert::Infallible>> {
    let started = std::time::Instant::now();
    let parts = framed.into_parts();
    // Bytes the client sent after the handshake (its first frames) are already read; the
    // dispatcher's buffers go now.
    let early = BytesMut::from(&parts.read_buf[..]);
    let (read, mut write) = parts.io.into_split();
    drop((parts.read_buf, parts.write_buf));
    let request_id = crate::web::request_id_of(req.headers());
    let handshake = handshake(upgrades, &req);
    let status = handshake.as_ref().map_or_else(|refusal| refusal.0, |_| 101);
    let head = match &handshake {
        Ok(Accepted {
            accept, protocol, ..
        }) => format!(
            "HTTP/1.1 101 Switching Protocols\r\nconnection: upgrade\r\nupgrade: websocket\r\nsec-websocket-accept: {accept}\r\nsec-websocket-protocol: {}\r\nx-request-id: {}\r\n\r\n",
            protocol.name(),
            request_id.as_str()
        ),
        Err((status, reason, body)) => format!(
            "HTTP/1.1 {status} {reason}\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: {}\r\nconnection: close\r\n{}x-request-id: {}\r\n\r\n{body}",
            body.len(),
            if *status == 503 {
                "retry-after: 5\r\n"
            } else {
                ""
            },
            request_id.as_str()
        ),
    };
    crate::web::count_request("/graphql", status, started);
    tracing::info_span!("request", request_id = %request_id.as_str()).in_scope(|| {
        tracing::info!(
            method = %req.method(),
            path = req.path(),
            status,
            duration_ms = started.elapsed().as_secs_f64() * 1000.0,
            "request"
        )
    });
    let Ok(Accepted { protocol, slot, .. }) = handshake else {
        return Box::pin(async move {
            if answer(&mut write, &head).await {
                let _ = tokio::time::timeout(HANDSHAKE_TIMEOUT, write.shutdown()).await;
            }
            Ok(())
        });
    };
    let state = &upgrades.state;
    let (frames, outgoing) = mpsc::channel::<Bytes>(state.config.ws_send_buffer.max(1));
    let patience = Duration::from_secs(state.config.ws_keepalive_secs.max(1) * 2);
    // Control messages are rare: a channel that allocates per message, not a block up front.
    let (control, control_rx) = futures_channel::mpsc::unbounded();
    let connection = Connection {
        client_ip: req.peer_addr().map_or([127, 0, 0, 1].into(), |a| a.ip()),
        state: state.clone(),
        schema: upgrades.schema.clone(),
        fanout: upgrades.fanout.clone(),
        protocol,
        frames,
        control,
        credential: None,
        request_id: Some(request_id),
        principal: None,
        subscriptions: HashMap::new(),
        tokens: 0,
        heard_at: Instant::now(),
        _slot: slot,
    };
    // One allocation for the connection's life: the dispatcher holds only this box.
    Box::pin(async move {
        if !answer(&mut write, &head).await {
            return Ok(());
        }
        drop(head);
        actix_web::rt::spawn(write_frames(write, outgoing, patience));
        connection.run(read, early, control_rx).await;
        Ok(())
    })
}

/// How long a client has to take the handshake's answer.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Writes the handshake's answer; false if the client did not take it.
async fn answer(write: &mut OwnedWriteHalf, head: &str) -> bool {
    matches!(
        tokio::time::timeout(HANDSHAKE_TIMEOUT, write.write_all(head.as_bytes())).await,
        Ok(Ok(()))
    )
}

/// A refused upgrade: status, reason phrase and body.
type Refusal = (u16, &'static str, &'static str);

/// An upgrade that may go ahead.
struct Accepted {
    /// The `Sec-WebSocket-Accept` value.
    accept: String,
    protocol: Protocol,
    /// The connection's place under the cap.
    slot: Slot,
}

fn handshake(upgrades: &Upgrades, req: &Request) -> Result<Accepted, Refusal> {
    let state = &upgrades.state;
    if req.path() != "/graphql" {
        return Err((404, "Not Found", "WebSockets are served on /graphql"));
    }
    let is_websocket = req
        .headers()
        .get(header::UPGRADE)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"websocket"));
    if !is_websocket {
        return Err((
            400,
            "Bad Request",
            "only WebSocket upgrades are served here",
        ));
    }
    if !crate::web::websocket_origin_allowed(&upgrades.origins, req.head()) {
        return Err((
            403,
            "Forbidden",
            "this origin may not open a WebSocket here",
        ));
    }
    let offered = req
        .headers()
        .get(header::SEC_WEBSOCKET_PROTOCOL)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let Some(protocol) = Protocol::choose(offered) else {
        return Err((
            400,
            "Bad Request",
            "offer the subprotocol graphql-transport-ws or graphql-ws",
        ));
    };
    if let Err(err) = actix_http::ws::verify_handshake(req.head()) {
        tracing::debug!(error = %err, "WebSocket handshake refused");
        return Err((400, "Bad Request", "not a valid WebSocket handshake"));
    }
    let accept = req
        .headers()
        .get(header::SEC_WEBSOCKET_KEY)
        .map(|key| hash_key(key.as_bytes()))
        .ok_or((400, "Bad Request", "Sec-WebSocket-Key is missing"))?;
    // Beyond the cap a client is told to come back, rather than left waiting for a socket
    // the process cannot open.
    let open = state
        .websockets
        .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    let slot = Slot(state.websockets.clone());
    if open
        >= state
            .max_websockets
            .load(std::sync::atomic::Ordering::SeqCst)
    {
        drop(slot);
        return Err((
            503,
            "Service Unavailable",
            "too many connections; try again later",
        ));
    }
    let accept = String::from_utf8_lossy(&accept[..]).into_owned();
    Ok(Accepted {
        accept,
        protocol,
        slot,
    })
}

/// Writes the connection's frames to the client until the connection drops its sender (after
/// queueing its close frame) or the client stops reading for `patience`.
async fn write_frames(
    mut write: OwnedWriteHalf,
    mut outgoing: mpsc::Receiver<Bytes>,
    patience: Duration,
) {
    while let Some(frame) = outgoing.recv().await {
        match tokio::time::timeout(patience, write.write_all(&frame)).await {
            Ok(Ok(())) => {}
            _ => return,
        }
    }
    let _ = tokio::time::timeout(patience, write.shutdown()).await;
}

/// An open WebSocket's place under `HUB_MAX_CONNECTIONS`, given back when it closes.
struct Slot(Arc<std::sync::atomic::AtomicUsize>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
    }
}

/// The client's frames, decoded; fragmented messages are put back together.
struct Incoming {
    read: OwnedReadHalf,
    /// Holds bytes only while a frame is partly read: an idle connection keeps no buffer.
    buf: BytesMut,
    codec: Codec,
    max_size: usize,
    fragments: Option<BytesMut>,
}

enum ClientFrame {
    Message(Bytes),
    Ping(Bytes),
    Pong,
    Close(Option<CloseReason>),
}

impl Incoming {
    /// The next frame; None when the client is gone, Err on a protocol violation.
    async fn next(&mut self) -> Option<Result<ClientFrame, String>> {
        loop {
            match self.codec.decode(&mut self.buf) {
                Ok(Some(frame)) => match self.assemble(frame) {
                    Ok(Some(frame)) => return Some(Ok(frame)),
                    Ok(None) => continue,
                    Err(err) => return Some(Err(err)),
                },
                Ok(None) => {}
                Err(err) => return Some(Err(err.to_string())),
            }
            if self.buf.is_empty() {
                self.buf = BytesMut::new();
            }
            // Wait until the socket has bytes, then read them into a buffer sized to them.
            if self.read.readable().await.is_err() {
                return None;
            }
            self.buf.reserve(READ_CHUNK);
            match self.read.try_read_buf(&mut self.buf) {
                Ok(0) => return None,
                Ok(_) => {}
                Err(err) if err.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(_) => return None,
            }
        }
    }

    fn assemble(&mut self, frame: Frame) -> Result<Option<ClientFrame>, String> {
        Ok(Some(match frame {
            Frame::Text(bytes) | Frame::Binary(bytes) => ClientFrame::Message(bytes),
            Frame::Ping(bytes) => ClientFrame::Ping(bytes),
            Frame::Pong(_) => ClientFrame::Pong,
            Frame::Close(reason) => ClientFrame::Close(reason),
            Frame::Continuation(item) => {
                let (first, part) = match item {
                    Item::FirstText(part) | Item::FirstBinary(part) => (true, part),
                    Item::Continue(part) => (false, part),
                    Item::Last(part) => {
                        let mut whole = self.fragments.take().unwrap_or_default();
                        whole.extend_from_slice(&part);
                        return Ok(Some(ClientFrame::Message(whole.freeze())));
                    }
                };
                let whole = if first {
                    self.fragments.insert(BytesMut::new())
                } else {
                    self.fragments.get_or_insert_with(BytesMut::new)
                };
                if whole.len() + part.len() > self.max_size {
                    return Err(format!("a message is larger than {} bytes", self.max_size));
                }
                whole.extend_from_slice(&part);
                return Ok(None);
            }
        }))
    }
}

enum Running {
    /// A subscription, shared with whoever asks the same.
    Shared(Membership),
    /// A query or mutation, run once.
    Single(tokio::task::JoinHandle<()>),
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Running::Single(task) = self {
            task.abort();
        }
    }
}

struct Subscription {
    token: u64,
    running: Running,
}

/// Whether the connection goes on after a message.
enum Flow {
    Continue,
    Close,
}

struct Connection {
    /// Failed `connection_init` credentials count against this address's anonymous quota.
    client_ip: std::net::IpAddr,
    state: AppState,
    schema: HubSchema,
    /// Subscriptions running on this replica, shared by subscribers who ask the same.
    fanout: Arc<Fanout>,
    /// Counts the socket among the open ones while it lives.
    _slot: Slot,
    protocol: Protocol,
    frames: mpsc::Sender<Bytes>,
    control: futures_channel::mpsc::UnboundedSender<Control>,
    /// Set by a successful `connection_init` (the credential is kept in memory only, to be
    /// checked again at each `subscribe`).
    credential: Option<String>,
    principal: Option<Arc<Principal>>,
    subscriptions: HashMap<String, Subscription>,
    tokens: u64,
    /// The upgrade request's id: the audit events of mutations sent over the socket carry it.
    request_id: Option<crate::trace::RequestId>,
    /// When the client last sent anything.
    heard_at: Instant,
}

impl Connection {
    /// The connection's task. It lives as long as the socket, so its state is kept small:
    /// the work done per message runs in boxed futures (inline, their state made this task
    /// 7.9 KB per connection).
    async fn run(
        mut self,
        read: OwnedReadHalf,
        early: BytesMut,
        mut control: futures_channel::mpsc::UnboundedReceiver<Control>,
    ) {
        /// Counts the connection open while it lives.
        struct Open;
        impl Drop for Open {
            fn drop(&mut self) {
                metrics::gauge!("hub_websocket_connections").decrement(1.0);
            }
        }
        metrics::gauge!("hub_websocket_connections").increment(1.0);
        let _open = Open;
        let mut incoming = Incoming {
            read,
            buf: early,
            codec: Codec::new().max_size(self.state.config.max_body_bytes),
            max_size: self.state.config.max_body_bytes,
            fragments: None,
        };
        let every = Duration::from_secs(self.state.config.ws_keepalive_secs.max(1));
        let mut keepalive = tokio::time::interval_at(Instant::now() + every, every);
        let init_deadline = Instant::now() + INIT_TIMEOUT;
        let mut going_away = self.state.going_away.subscribe();
        loop {
            // Before `connection_ack`: the init deadline; after: the credential's expiry.
            let deadline = match &self.principal {
                None => Some(init_deadline),
                Some(principal) => principal.expires_at.map(|at| {
                    let left = (at - crate::db::now()).num_milliseconds().max(0) as u64;
                    Instant::now() + Duration::from_millis(left)
                }),
            };
            let flow = tokio::select! {
                frame = incoming.next() => match frame {
                    None => Flow::Close,
                    Some(Err(err)) => Box::pin(self.close(1002, &err)).await,
                    Some(Ok(frame)) => {
                        self.heard_at = Instant::now();
                        Box::pin(self.on_frame(frame)).await
                    }
                },
                Some(message) = control.next() => Box::pin(self.on_control(message)).await,
                _ = keepalive.tick() => Box::pin(self.keep_alive(every)).await,
                _ = going_away.wait_for(|stopping| *stopping) => {
                    Box::pin(self.close(1012, "the server is restarting; reconnect")).await
                }
                _ = sleep_until(deadline) => match self.principal {
                    None => Box::pin(self.close(4408, "connection initialisation timeout")).await,
                    Some(_) => Box::pin(self.close(4403, "the credential expired")).await,
                },
            };
            if let Flow::Close = flow {
                break;
            }
        }
        // Dropping the subscriptions leaves their groups.
        self.subscriptions.clear();
    }

    /// Queues a frame to the client; false when the client is gone or stopped reading.
    async fn send(&self, frame: Bytes) -> bool {
        let patience = Duration::from_secs(self.state.config.ws_keepalive_secs.max(1) * 2);
        matches!(
            tokio::time::timeout(patience, self.frames.send(frame)).await,
            Ok(Ok(()))
        )
    }

    async fn send_text(&self, text: &str) -> Flow {
        if self.send(text_frame(text)).await {
            Flow::Continue
        } else {
            Flow::Close
        }
    }

    async fn close(&self, code: u16, reason: &str) -> Flow {
        self.send(close_frame(code, reason)).await;
        Flow::Close
    }

    async fn keep_alive(&self, every: Duration) -> Flow {
        // Checked with each ping: a client that answered none of the pings of the last two
        // periods (silent for more than one and a half, so two at the next check) is gone.
        if self.heard_at.elapsed() > every * 3 / 2 {
            return self.close(3008, "no answer to keep-alive pings").await;
        }
        if !self.send(control_frame(b"", OpCode::Ping)).await {
            return Flow::Close;
        }
        if self.protocol == Protocol::LegacyWs && self.principal.is_some() {
            return self.send_text(r#"{"type":"ka"}"#).await;
        }
        Flow::Continue
    }

    async fn on_frame(&mut self, frame: ClientFrame) -> Flow {
        match frame {
            ClientFrame::Message(bytes) => {
                // async-graphql reads both protocols' names for a message alike; each
                // protocol takes only its own.
                if let Some(kind) = foreign_message_type(self.protocol, &bytes) {
                    let reason =
                        format!("invalid message type `{kind}` for {}", self.protocol.name());
                    return self.close(4400, &reason).await;
                }
                match ClientMessage::from_bytes(&bytes) {
                    Ok(message) => self.on_message(message).await,
                    Err(err) => self.close(4400, &format!("invalid message: {err}")).await,
                }
            }
            ClientFrame::Ping(bytes) => {
                if self.send(control_frame(&bytes, OpCode::Pong)).await {
                    Flow::Continue
                } else {
                    Flow::Close
                }
            }
            ClientFrame::Pong => Flow::Continue,
            ClientFrame::Close(reason) => {
                let code = reason.map_or(1000, |r| u16::from(r.code));
                self.close(if code == 1005 { 1000 } else { code }, "").await
            }
        }
    }

    async fn on_message(&mut self, message: ClientMessage) -> Flow {
        match message {
            ClientMessage::ConnectionInit { payload } => {
                if self.principal.is_some() {
                    return self
                        .refuse_connection(4429, "too many initialisation requests")
                        .await;
                }
                let payload = payload.unwrap_or_default();
                let presented = super::credential(&payload);
                let credential = presented.as_ref().cloned().unwrap_or_default();
                let authorized = crate::graphql::authenticate::authenticate_from(
                    &self.state,
                    self.client_ip,
                    presented,
                )
                .await
                .map_err(|(err, _)| err)
                .and_then(|principal| {
                    principal.require(crate::auth::Scope::LogsSubscribe)?;
                    Ok((credential, principal))
                });
                match authorized {
                    Ok((credential, principal)) => {
                        self.credential = Some(credential);
                        self.principal = Some(principal);
                        if let Flow::Close = self.send_text(r#"{"type":"connection_ack"}"#).await {
                            return Flow::Close;
                        }
                        if self.protocol == Protocol::LegacyWs {
                            return self.send_text(r#"{"type":"ka"}"#).await;
                        }
                        Flow::Continue
                    }
                    Err(err) => {
                        let message = err.message();
                        err.log();
                        let code = match err {
                            AppError::RateLimited { .. } => 4429,
                            _ => 4403,
                        };
                        self.refuse_connection(code, &message).await
                    }
                }
            }
            ClientMessage::Start { id, payload } => self.start(id, payload).await,
            ClientMessage::Stop { id } => {
                let stopped = self.subscriptions.remove(&id).is_some();
                if stopped && self.protocol == Protocol::LegacyWs {
                    return self.complete(&id).await;
                }
                Flow::Continue
            }
            ClientMessage::ConnectionTerminate => self.close(1000, "").await,
            ClientMessage::Ping { .. } => self.send_text(r#"{"type":"pong"}"#).await,
            ClientMessage::Pong { .. } => Flow::Continue,
        }
    }

    /// Refuses `connection_init`: a close code, or on the legacy protocol `connection_error`.
    async fn refuse_connection(&self, code: u16, message: &str) -> Flow {
        if self.protocol == Protocol::LegacyWs {
            let error = serde_json::json!({ "type": "connection_error", "payload": { "message": message } });
            self.send_text(&error.to_string()).await;
        }
        self.close(code, message).await
    }

    async fn complete(&self, id: &str) -> Flow {
        let message = serde_json::json!({ "type": "complete", "id": id });
        self.send_text(&message.to_string()).await
    }

    /// Refuses operation `id` before it runs: the protocol's `error` message.
    async fn refuse_operation(&self, id: &str, err: AppError) -> Flow {
        let errors = err.into_response_body()["errors"].take();
        self.send_text(&error_message(self.protocol, id, errors))
            .await
    }

    async fn start(&mut self, id: String, mut request: async_graphql::Request) -> Flow {
        let Some(credential) = &self.credential else {
            return self.close(4401, "Unauthorized").await;
        };
        // The credential as it is now: revoked, expired or changed since `connection_init`.
        let principal = match super::authorize(&self.state, credential).await {
            Ok(principal) => principal,
            Err(err) => {
                let message = err.message();
                err.log();
                return self.close(4403, &message).await;
            }
        };
        self.principal = Some(principal.clone());
        if self.subscriptions.contains_key(&id) {
            return self
                .close(4409, &format!("Subscriber for {id} already exists"))
                .await;
        }
        let max = self.state.config.max_subscriptions_per_connection;
        if self.subscriptions.len() >= max {
            let err = AppError::Forbidden(format!("at most {max} subscriptions per connection"));
            return self.refuse_operation(&id, err).await;
        }
        let decision = self
            .state
            .rate_limits
            .admit(&principal.rate_subject())
            .await;
        if let Some(retry_after_secs) = decision.retry_after_secs {
            return self
                .refuse_operation(&id, AppError::RateLimited { retry_after_secs })
                .await;
        }
        self.tokens += 1;
        let token = self.tokens;
        let running = if crate::context::documents::operation_type(&request)
            == Some(OperationType::Subscription)
        {
            let member = Member::new(
                self.frames.clone(),
                self.control.clone(),
                self.protocol,
                &id,
                token,
            );
            let operation = Operation {
                principal,
                query: request.query,
                operation_name: request.operation_name,
                variables: request.variables,
            };
            let fanout = self.fanout.clone();
            Running::Shared(fanout.join(&self.state, &self.schema, operation, member))
        } else {
            let (schema, frames, control) = (
                self.schema.clone(),
                self.frames.clone(),
                self.control.clone(),
            );
            if let Some(id) = &self.request_id {
                request = request.data(id.clone());
            }
            let mut request = request
                .data(principal)
                .data(decision)
                .data(crate::audit::AuditTargets::default())
                .data(crate::context::unit::WriteUnit::default());
            self.state.documents.prepare(&mut request);
            let (protocol, id_json) = (self.protocol, json_string(&id));
            let id = id.clone();
            Running::Single(actix_web::rt::spawn(async move {
                let response = schema.execute(request).await;
                if let Some(errors) = request_errors(&response) {
                    let _ = frames
                        .send(text_frame(&error_message(protocol, &id, errors)))
                        .await;
                    let _ = control.unbounded_send(Control::Failed { id, token });
                    return;
                }
                let payload = serde_json::to_string(&response).unwrap_or_default();
                let _ = frames
                    .send(text_frame(&next_message(protocol, &id_json, &payload)))
                    .await;
                let _ = control.unbounded_send(Control::Ended { id, token });
            }))
        };
        self.subscriptions
            .insert(id, Subscription { token, running });
        Flow::Continue
    }

    async fn on_control(&mut self, message: Control) -> Flow {
        let (id, token, ended) = match message {
            Control::Lagging { id, token } => (id, token, false),
            Control::Ended { id, token } => (id, token, true),
            Control::Failed { id, token } => {
                if self
                    .subscriptions
                    .get(&id)
                    .is_some_and(|s| s.token == token)
                {
                    self.subscriptions.remove(&id);
                }
                return Flow::Continue;
            }
        };
        if self.subscriptions.get(&id).is_none_or(|s| s.token != token) {
            return Flow::Continue;
        }
        if let Flow::Close = self.send_missed(&id).await {
            return Flow::Close;
        }
        if ended {
            self.subscriptions.remove(&id);
            // A subscription also ends when its credential is revoked or expires: then it
            // ends with an error saying so, and the connection closes (4403).
            if let Some(credential) = &self.credential
                && let Err(err) = super::authorize(&self.state, credential).await
            {
                let message = err.message();
                let errors = err.into_response_body()["errors"].take();
                if let Flow::Close = self
                    .send_text(&error_message(self.protocol, &id, errors))
                    .await
                {
                    return Flow::Close;
                }
                return self.close(4403, &message).await;
            }
            return self.complete(&id).await;
        }
        Flow::Continue
    }

    /// Tells subscription `id` how many events it missed while behind, until it has caught up.
    async fn send_missed(&self, id: &str) -> Flow {
        let Some(Subscription {
            running: Running::Shared(membership),
            ..
        }) = self.subscriptions.get(id)
        else {
            return Flow::Continue;
        };
        let id_json = json_string(id);
        while let Some(missed) = membership.member.take_missed() {
            let payload = membership.notice(&self.state, &self.schema, missed).await;
            if let Flow::Close = self
                .send_text(&next_message(self.protocol, &id_json, &payload))
                .await
            {
                return Flow::Close;
            }
        }
        Flow::Continue
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}
