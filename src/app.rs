//! Application state, the HTTP routes, and starting/stopping the server.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_service::ServiceFactoryExt;
use actix_web::dev::ServerHandle;
use actix_web::middleware::{Compress, Condition, from_fn};
use actix_web::{App, HttpResponse, guard, web};

use crate::auth::cache::CredentialCache;
use crate::auth::jwt::JwtVerifier;
use crate::config::Config;
pub use crate::context::AppState;
use crate::context::documents::DocumentCache;
use crate::context::persisted::PersistedQueries;
use crate::context::targets::CallTargets;
use crate::crypto::Keyring;
use crate::db::DbPool;
use crate::db::journal::Journal;
use crate::events::EventBus;
use crate::graphql::http::{graphql_get, graphql_post};
use crate::graphql::{HubSchema, build_schema};
use crate::http::Outbound;
use crate::live::Fanout;
use crate::ratelimit::{RateLimits, RateSpec};

/// What the first start of an empty database created: its team and admin key (shown once).
pub struct FirstStart {
    pub team_id: String,
    pub team_name: String,
    pub admin_key: String,
}

/// Everything the server needs, made ready: pool connected and migrated, keys loaded, and on
/// an empty database the first team and admin key created.
pub struct Prepared {
    pub state: AppState,
    pub first_start: Option<FirstStart>,
    pub key_file_created: Option<std::path::PathBuf>,
}

pub async fn prepare(config: Config) -> anyhow::Result<Prepared> {
    config.validate().map_err(anyhow::Error::msg)?;
    let pool = DbPool::connect(&config.database(), config.db_pool_size, config.db_timeout())
        .map_err(describe)?;
    let applied = pool.migrate().await.map_err(describe)?;
    if applied > 0 {
        tracing::info!(applied, backend = pool.backend_name(), "database migrated");
    }
    let sealed = {
        let mut conn = pool.get().await.map_err(describe)?;
        let mut samples = crate::integrations::store::sealed_samples(&mut conn)
            .await
            .map_err(describe)?;
        samples.extend(
            crate::webhooks::store::sealed_samples(&mut conn)
                .await
                .map_err(describe)?,
        );
        for (app_id, stored) in crate::oauth::store::sealed_secrets(&mut conn, None)
            .await
            .map_err(describe)?
        {
            if let Some((key_id, sealed)) = stored.split_once(':')
                && !samples.iter().any(|s| s.0 == key_id)
            {
                samples.push((
                    key_id.to_string(),
                    crate::oauth::flow::secret_context(&app_id),
                    sealed.to_string(),
                ));
            }
        }
        samples
    };
    let (keyring, key_file_created) = load_keyring(&config, &sealed)?;
    let first_start = {
        let mut conn = pool.get().await.map_err(describe)?;
        if crate::teams::count(&mut conn).await.map_err(describe)? == 0 {
            let (team, admin_key) = crate::teams::create_with_admin_key(&mut conn, "default")
                .await
                .map_err(describe)?;
            tracing::info!(team_id = %team.id, "first start: created team `default` and its admin key");
            Some(FirstStart {
                team_id: team.id,
                team_name: team.name,
                admin_key,
            })
        } else {
            None
        }
    };
    let http = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(10))
        .timeout(Duration::from_secs(30))
        .user_agent(concat!("integration-hub/", env!("CARGO_PKG_VERSION")))
        .build()?;
    let jwt = JwtVerifier::from_config(&config, http.clone()).map_err(anyhow::Error::msg)?;
    let spec = |s: &str| RateSpec::parse(s).map_err(anyhow::Error::msg);
    let global_quotas = match config.redis_url.as_deref().filter(|url| !url.is_empty()) {
        Some(url) => Some(Arc::new(
            crate::ratelimit::global::GlobalQuotas::connect(
                url,
                Duration::from_millis(config.redis_timeout_ms),
            )
            .map_err(anyhow::Error::msg)?,
        )),
        None => None,
    };
    let rate_limits = RateLimits::new(
        spec(&config.rate_limit_api_key)?,
        spec(&config.rate_limit_user)?,
        spec(&config.rate_limit_anonymous)?,
    )
    .with_global(global_quotas.clone());
    Ok(Prepared {
        state: AppState {
            credentials: Arc::new(CredentialCache::new(Duration::from_secs(
                config.credential_cache_secs,
            ))),
            call_targets: Arc::new(CallTargets::new(Duration::from_secs(
                config.integration_cache_secs,
            ))),
            documents: Arc::new(DocumentCache::new(1_000)),
            persisted: Arc::new(PersistedQueries::new(1_000)),
            usage: Arc::default(),
            rate_limits: Arc::new(rate_limits),
            jwt: jwt.map(Arc::new),
            http,
            outbound: Arc::new(Outbound::from_config(&config)?.with_global(global_quotas)),
            events: EventBus::new(config.event_buffer),
            jobs: Arc::default(),
            flights: Arc::default(),
            going_away: tokio::sync::watch::Sender::new(false),
            calls_in_flight: Arc::default(),
            wake_deliveries: Arc::default(),
            public_base: Arc::default(),
            websockets: Arc::default(),
            max_websockets: Arc::new(std::sync::atomic::AtomicUsize::new(usize::MAX)),
            journal: Journal::spawn(&pool, &config).map_err(describe)?,
            peers: crate::context::peers::Peers::new(&pool),
            config: Arc::new(config),
            pool,
            keyring: Arc::new(keyring),
        },
        first_start,
        key_file_created,
    })
}

fn describe(err: crate::error::AppError) -> anyhow::Error {
    match err {
        crate::error::AppError::Internal { error, .. } => error,
        crate::error::AppError::Unavailable(detail) => anyhow::anyhow!(detail),
        other => anyhow::anyhow!(other.message()),
    }
}

/// Keys from `HUB_ENCRYPTION_KEYS`, else the key file (created with a fresh key if missing).
/// The encryption keys: from `HUB_ENCRYPTION_KEYS`, else the key file. Every key that
/// credentials in the store are sealed under must be there and open them (one sealed value
/// per key, `sealed` as (key id, integration id, sealed text), is opened to check), or the
/// start stops naming the key: a missing or replaced key is never silently accepted. A new
/// key file is made only for a store that holds no sealed values.
pub fn load_keyring(
    config: &Config,
    sealed: &[(String, String, String)],
) -> anyhow::Result<(Keyring, Option<std::path::PathBuf>)> {
    let (keyring, source) = match &config.encryption_keys {
        Some(spec) => (
            Keyring::parse(spec).map_err(anyhow::Error::msg)?,
            "HUB_ENCRYPTION_KEYS".to_string(),
        ),
        None => {
            let path = config.key_file_path();
            match Keyring::load_file(&path).map_err(anyhow::Error::msg)? {
                Some(keyring) => (keyring, format!("the key file {}", path.display())),
                None if sealed.is_empty() => {
                    let keyring = Keyring::create_file(&path).map_err(anyhow::Error::msg)?;
                    return Ok((keyring, Some(path)));
                }
                None => {
                    let ids: Vec<String> = sealed.iter().map(|s| format!("`{}`", s.0)).collect();
                    anyhow::bail!(
                        "the key file {} is missing, but credentials in the database are sealed \
                         under key {}; a new key would not open them. Restore the key file from \
                         a backup (or set HUB_ENCRYPTION_KEYS=<id>:<base64 key>) and start again",
                        path.display(),
                        ids.join(", ")
                    )
                }
            }
        }
    };
    for (key_id, integration_id, text) in sealed {
        if !keyring.has(key_id) {
            anyhow::bail!(
                "credentials in the database are sealed under key `{key_id}`, which {source} \
                 does not hold; restore that key (from a backup of the key file, or as \
                 `{key_id}:<base64 key>` in HUB_ENCRYPTION_KEYS) and start again"
            );
        }
        if keyring.open(key_id, text, integration_id).is_err() {
            anyhow::bail!(
                "key `{key_id}` in {source} does not open the credentials sealed under it (was \
                 the key replaced?); restore the original key and start again"
            );
        }
    }
    Ok((keyring, None))
}

/// A server bound and running in the background.
pub struct RunningServer {
    pub addr: SocketAddr,
    pub handle: ServerHandle,
    pub task: tokio::task::JoinHandle<std::io::Result<()>>,
    /// The subscriptions this replica runs (shared by subscribers who ask the same).
    pub fanout: Arc<Fanout>,
    state: AppState,
    maintenance: tokio::task::JoinHandle<()>,
    monitor: tokio::task::JoinHandle<()>,
    /// Refreshes OAuth tokens before they expire (none when `HUB_OAUTH_REFRESH_SCAN_SECS` is 0).
    oauth_refresher: Option<tokio::task::JoinHandle<()>>,
    scheduler: tokio::task::JoinHandle<()>,
    webhooks: Webhooks,
    /// Sending this replica's changes to the others, and listening to theirs.
    peers: Vec<tokio::task::JoinHandle<()>>,
}

/// The webhook outbox (events to deliveries) and delivery worker of this replica.
struct Webhooks {
    outbox: Option<tokio::task::JoinHandle<()>>,
    backlog: Arc<crate::webhooks::outbox::Backlog>,
    worker: Arc<crate::webhooks::worker::Worker>,
    delivering: tokio::task::JoinHandle<()>,
}

impl Webhooks {
    fn start(state: &AppState) -> Self {
        let backlog = Arc::new(crate::webhooks::outbox::Backlog::default());
        let outbox = state
            .events
            .tap(crate::webhooks::wants, OUTBOX_QUEUE)
            .map(|queue| crate::webhooks::outbox::spawn(state.clone(), queue, backlog.clone()));
        let worker = crate::webhooks::worker::Worker::new(state.clone());
        let delivering = worker.spawn();
        Self {
            outbox,
            backlog,
            worker,
            delivering,
        }
    }

    /// Stops claiming; writes the deliveries of events already published (up to 2 s) and
    /// lets deliveries in flight end (up to the attempt timeout, at most 10 s). A delivery
    /// cut after that is sent again once its claim runs out.
    async fn stop(self, state: &AppState) {
        self.delivering.abort();
        let deadline = Instant::now() + Duration::from_secs(2);
        while (state.events.tap_queued() > 0 || self.backlog.get() > 0) && Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        if let Some(outbox) = self.outbox {
            outbox.abort();
        }
        let wait =
            Duration::from_millis(state.config.webhook_timeout_ms).min(Duration::from_secs(10));
        let deadline = Instant::now() + wait;
        while self.worker.in_flight() > 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// Events waiting to become webhook deliveries, at most (then they are counted and logged).
const OUTBOX_QUEUE: usize = 100_000;

/// SIGTERM or SIGINT: `/readyz` turns false and WebSockets close at once (1012, service
/// restart: clients reconnect, to another replica behind a load balancer), then the graceful stop
/// (no new connections; in-flight requests finish within the shutdown timeout).
fn spawn_signal_handler(state: AppState, handle: ServerHandle) {
    // Registered here, before the server is announced: a SIGTERM that comes right after the
    // "listening" line must find the handler in place (the default would kill the process).
    #[cfg(unix)]
    let signals = {
        use tokio::signal::unix::{SignalKind, signal};
        (
            signal(SignalKind::terminate()).ok(),
            signal(SignalKind::interrupt()).ok(),
        )
    };
    tokio::spawn(async move {
        #[cfg(unix)]
        {
            let wait = |signal: Option<tokio::signal::unix::Signal>| async move {
                match signal {
                    Some(mut signal) => {
                        signal.recv().await;
                    }
                    None => std::future::pending::<()>().await,
                }
            };
            let (terminate, interrupt) = signals;
            tokio::select! {
                _ = wait(terminate) => {}
                _ = wait(interrupt) => {}
            }
        }
        #[cfg(not(unix))]
        let _ = tokio::signal::ctrl_c().await;
        tracing::info!("stopping: closing WebSockets, finishing in-flight requests");
        state.going_away.send_replace(true);
        handle.stop(true).await;
    });
}

impl RunningServer {
    /// Graceful stop: `/readyz` turns false, WebSockets are closed (1012), in-flight requests
    /// finish (up to the
    /// shutdown timeout), then pending usage counts are written.
    pub async fn stop(mut self) {
        self.state.going_away.send_replace(true);
        self.handle.stop(true).await;
        let _ = (&mut self.task).await;
        self.finish().await;
    }

    /// Waits until the server stops by itself (a signal), then writes pending usage counts.
    pub async fn wait(mut self) -> std::io::Result<()> {
        let result = (&mut self.task)
            .await
            .unwrap_or_else(|e| Err(std::io::Error::other(e)));
        self.finish().await;
        result
    }

    async fn finish(self) {
        self.maintenance.abort();
        self.monitor.abort();
        if let Some(refresher) = &self.oauth_refresher {
            refresher.abort();
        }
        self.scheduler.abort();
        for task in &self.peers {
            task.abort();
        }
        // This replica's runs stop here: their leases are given back at once, so another
        // replica (or this one's next start) takes them over at its next check instead of
        // waiting for them to run out. A database busy at this moment is tried again for a
        // few seconds; one that cannot be reached lets the leases run out as after a crash.
        let mine = self.state.jobs.ids();
        self.state.jobs.abort_all();
        if !mine.is_empty() {
            let released = tokio::time::timeout(Duration::from_secs(5), async {
                loop {
                    let attempt = tokio::time::timeout(Duration::from_secs(2), async {
                        let mut conn = self.state.pool.get().await?;
                        crate::sync::store::release_runs(&mut conn, &mine).await
                    });
                    if let Ok(Ok(released)) = attempt.await {
                        return released;
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            })
            .await;
            if released.is_err() {
                tracing::warn!(
                    runs = mine.len(),
                    "sync runs not released at shutdown; their leases will run out"
                );
            }
        }
        // Periodic jobs (pruning) held here are given back too.
        if !matches!(
            tokio::time::timeout(Duration::from_secs(2), self.state.release_jobs()).await,
            Ok(Ok(_))
        ) {
            tracing::warn!("job leases not released at shutdown; they will run out");
        }
        self.webhooks.stop(&self.state).await;
        if let Err(err) = self.state.usage.flush(&self.state.pool).await {
            tracing::warn!(code = err.code(), "usage counts not written at shutdown");
        }
        // Calls cut at the end of the grace period log themselves as their workers drop them:
        // wait (briefly) until every one has, then store what is queued.
        let deadline = Instant::now() + Duration::from_secs(2);
        while self
            .state
            .calls_in_flight
            .load(std::sync::atomic::Ordering::SeqCst)
            > 0
            && Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        if let Err(err) = self.state.journal.flush().await {
            tracing::warn!(code = err.code(), "request logs not written at shutdown");
        }
    }
}

/// Background upkeep: usage counts to the database, sync runs whose lease ran out taken
/// over (whichever replica, or process after a restart, ran them), idle rate-limit state
/// dropped.
fn spawn_maintenance(state: AppState) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick =
            tokio::time::interval(Duration::from_millis(state.config.usage_flush_ms.max(10)));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_shrink = Instant::now();
        let mut last_lease_check = Instant::now();
        loop {
            tick.tick().await;
            if let Err(err) = state.usage.flush(&state.pool).await {
                tracing::warn!(code = err.code(), "usage counts not written; will retry");
            }
            if last_lease_check.elapsed() >= Duration::from_secs(1) {
                last_lease_check = Instant::now();
                if let Err(err) = crate::sync::engine::take_over_stale_runs(&state).await {
                    tracing::warn!(code = err.code(), "stale sync runs not checked; will retry");
                }
            }
            if last_shrink.elapsed() > Duration::from_secs(60) {
                prune_webhooks(&state).await;
                state.rate_limits.shrink();
                last_shrink = Instant::now();
            }
        }
    })
}

/// Inbound events, and deliveries that ended, are kept as long as request logs.
async fn prune_webhooks(state: &AppState) {
    if !state
        .claim_job("prune-webhooks", crate::health::monitor::PRUNE_HOLD)
        .await
    {
        return;
    }
    let cutoff = crate::db::now() - chrono::Duration::days(state.config.log_retention_days as i64);
    let pruned = match state.pool.get().await {
        Ok(mut conn) => {
            let inbound = crate::webhooks::inbound::prune(&mut conn, cutoff).await;
            let deliveries = crate::webhooks::store::prune(&mut conn, cutoff).await;
            inbound.and(deliveries)
        }
        Err(err) => Err(err),
    };
    if let Err(err) = pruned {
        tracing::warn!(
            code = err.code(),
            "old webhook events not pruned; will retry"
        );
    }
}

/// Starts scheduled syncs when they are due.
fn spawn_scheduler(state: AppState) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let every = state.config.sync_scheduler_secs;
        if every == 0 {
            return;
        }
        loop {
            tokio::time::sleep(Duration::from_secs(every)).await;
            if let Err(err) = crate::sync::engine::run_scheduled(&state).await {
                tracing::warn!(code = err.code(), "sync scheduler could not run");
            }
        }
    })
}

pub fn routes(
    cfg: &mut web::ServiceConfig,
    state: &AppState,
    schema: &HubSchema,
    fanout: &web::Data<Fanout>,
) {
    cfg.app_data(web::Data::new(state.clone()))
        .app_data(web::Data::new(schema.clone()))
        .app_data(fanout.clone())
        .service(
            web::resource("/graphql")
                .route(web::post().to(graphql_post))
                .route(web::get().to(graphql_get))
                .route(
                    web::route()
                        .guard(
                            guard::Any(guard::Put())
                                .or(guard::Delete())
                                .or(guard::Patch()),
                        )
                        .to(|| async {
                            HttpResponse::MethodNotAllowed()
                                .insert_header(("Allow", "GET, POST"))
                                .finish()
                        }),
                ),
        )
        .route(
            "/healthz",
            web::get().to(|| async { HttpResponse::Ok().body("ok") }),
        )
        .route("/readyz", web::get().to(readyz))
        .service(
            web::resource("/hooks/{token}")
                // Larger bodies are refused with 413 before they are read.
                .app_data(web::PayloadConfig::new(crate::webhooks::inbound::MAX_BODY))
                .route(web::post().to(crate::webhooks::inbound::receive)),
        )
        .route(
            "/oauth/callback",
            web::get().to(crate::oauth::callback::callback),
        )
        .route("/metrics", web::get().to(crate::metrics::serve))
        .route(
            "/graphiql/{version}/{file}",
            web::get().to(crate::graphiql::asset),
        );
}

/// Ready when the database answers within a second (a down, frozen or locked one is not),
/// and not once the server has begun to stop: a load balancer sends new clients elsewhere
/// while this replica finishes what it has.
async fn readyz(state: web::Data<AppState>) -> HttpResponse {
    if *state.going_away.borrow() {
        return HttpResponse::ServiceUnavailable()
            .insert_header(("retry-after", "1"))
            .body("stopping");
    }
    let ping = tokio::time::timeout(Duration::from_secs(1), state.pool.ping()).await;
    match ping {
        Ok(Ok(())) => HttpResponse::Ok().body("ready"),
        _ => HttpResponse::ServiceUnavailable()
            .insert_header(("retry-after", "1"))
            .body("database unavailable"),
    }
}

/// Raises the soft open-file limit to the hard one and says what it got. Returns how many
/// connections the server may hold open (that limit less headroom for database files and
/// sockets, upstream calls and logs): beyond it the server stops accepting until one closes,
/// instead of failing accepts on EMFILE. The WebSocket cap is `HUB_MAX_CONNECTIONS`, or 95 %
/// of the connection cap, so plain requests (and the 503 that refuses a WebSocket beyond its
/// cap) always have room.
fn open_file_budget(state: &AppState) -> usize {
    let limit = match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => {
            tracing::info!(open_files = limit, "open-file limit");
            limit as usize
        }
        Err(err) => {
            tracing::warn!(error = %err, "open-file limit not raised");
            rlimit::getrlimit(rlimit::Resource::NOFILE).map_or(1024, |(soft, _)| soft as usize)
        }
    };
    let connections = limit.saturating_sub((limit / 20).max(256)).max(32);
    let websockets = match state.config.max_connections {
        0 => connections - connections / 20,
        set if set > connections - 16 => {
            tracing::warn!(
                asked = set,
                allowed = connections - 16,
                "HUB_MAX_CONNECTIONS is beyond what the open-file limit allows; lowered"
            );
            connections - 16
        }
        set => set,
    };
    tracing::info!(connections, websockets, "connection caps");
    state
        .max_websockets
        .store(websockets, std::sync::atomic::Ordering::SeqCst);
    connections
}

/// A listening socket as `HttpServer` makes one: the address reusable at once after a
/// restart, and a backlog of 2,048 (the standard library's 128 refuses bursts of clients).
fn listen(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(2048)?.into_std()
}

/// Binds and starts serving in the background.
pub fn start(state: AppState) -> anyhow::Result<RunningServer> {
    crate::metrics::install();
    let connections = open_file_budget(&state);
    let addr = state.config.bind_addr().map_err(anyhow::Error::msg)?;
    let workers = state.config.worker_count();
    let per_worker = connections.div_ceil(workers.max(1));
    let shutdown = state.config.shutdown_timeout_secs;
    let schema = build_schema(state.clone());
    let fast = web::Data::new(crate::graphql::build_fast_schema(state.clone()));
    let origins =
        crate::config::cors_origins(&state.config.cors_origins).map_err(anyhow::Error::msg)?;
    let app_state = state.clone();
    // Subscriptions running on this replica, shared by subscribers who ask the same.
    let fanout = web::Data::new(Fanout::default());
    let fanout_handle = fanout.clone().into_inner();
    let listener = listen(addr).map_err(|err| anyhow::anyhow!("cannot listen on {addr}: {err}"))?;
    let addr = listener.local_addr()?;
    let _ = state.public_base.set(format!("http://{addr}"));
    let upgrades = crate::live::Upgrades {
        state: state.clone(),
        schema: schema.clone(),
        fanout: fanout.clone().into_inner(),
        origins: Arc::new(origins.clone()),
    };
    // actix-web's `HttpServer`, built by hand for one thing it does not expose: WebSocket
    // upgrades are taken over from the HTTP/1 dispatcher with their socket
    // (`live::upgrade`), which frees the dispatcher's buffers for the connection's life.
    // Everything else is served by the App as `HttpServer` would serve it.
    let server = actix_server::Server::build()
        .workers(workers)
        .max_concurrent_connections(per_worker)
        .shutdown_timeout(shutdown)
        // Signals are ours (below): WebSockets are told to go away before the graceful stop.
        .disable_signals()
        .listen("integration-hub", listener, move || {
            let (app_state, schema, fast, fanout, origins) = (
                app_state.clone(),
                schema.clone(),
                fast.clone(),
                fanout.clone(),
                origins.clone(),
            );
            let app = App::new()
                .wrap(crate::web::PlainSmallAnswers)
                .wrap(Compress::default())
                .wrap(Condition::new(
                    !origins.is_empty(),
                    crate::web::cors(&origins),
                ))
                .wrap(from_fn(crate::web::request_context))
                .app_data(fast)
                .configure(|cfg| routes(cfg, &app_state, &schema, &fanout));
            let upgrades = upgrades.clone();
            let upgrade = actix_service::fn_service(
                move |(req, framed): (actix_http::Request, actix_codec::Framed<_, _>)| {
                    crate::live::upgrade(&upgrades, req, framed)
                },
            );
            actix_http::HttpService::build()
                .client_disconnect_timeout(Duration::from_secs(1))
                .local_addr(addr)
                .upgrade(upgrade)
                .finish(actix_service::map_config(
                    actix_service::IntoServiceFactory::into_factory(app)
                        .map_err(|err: actix_web::Error| err.error_response()),
                    // What `HttpServer` gives its App: the bound address as the fallback
                    // host (a request without `Host`). actix-web exposes this constructor
                    // only as hidden API; Cargo.lock pins the version it is checked against.
                    move |_| {
                        actix_web::dev::AppConfig::__priv_test_new(false, addr.to_string(), addr)
                    },
                ))
                .tcp()
        })?;
    let server = server.run();
    let handle = server.handle();
    let task = tokio::spawn(server);
    spawn_signal_handler(state.clone(), handle.clone());
    let maintenance = spawn_maintenance(state.clone());
    let monitor = crate::health::monitor::spawn(state.clone());
    let oauth_refresher = crate::oauth::refresh::spawn(state.clone());
    let scheduler = spawn_scheduler(state.clone());
    let webhooks = Webhooks::start(&state);
    let postgres_url = match state.config.database() {
        crate::config::DatabaseUrl::Postgres(url) => Some(url),
        crate::config::DatabaseUrl::Sqlite(_) => None,
    };
    let peers = crate::context::peers::spawn(&state, postgres_url);
    Ok(RunningServer {
        peers,
        addr,
        handle,
        task,
        fanout: fanout_handle,
        state,
        maintenance,
        monitor,
        oauth_refresher,
        scheduler,
        webhooks,
    })
}
