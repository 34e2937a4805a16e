use std::process::ExitCode;

use clap::{Parser, Subcommand};
use integration_hub::app;
use integration_hub::auth::ScopeSet;
use integration_hub::config::Config;
use integration_hub::db::DbPool;

/// mimalloc: the service allocates per request from several threads (actix workers, the
/// runtime, the database writer), where glibc's allocator spent ~15 % of the hub's CPU on the
/// execute benchmark. Built without transparent huge pages (`no_thp`): with them, 10,000 idle
/// WebSocket connections held a third more memory.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "integration-hub",
    version,
    about = "Self-hosted integration hub behind a GraphQL gateway"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server (the default).
    Serve,
    /// Apply pending database migrations and exit.
    Migrate,
    /// Print the GraphQL schema (SDL), or write it to a file.
    ExportSchema {
        /// Write to this file instead of standard output.
        #[arg(long)]
        output: Option<std::path::PathBuf>,
        /// Fail if this file (default schema.graphql) differs from the code's schema.
        #[arg(long)]
        check: bool,
    },
    /// Manage teams.
    Team {
        #[command(subcommand)]
        command: TeamCommand,
    },
    /// Manage API keys.
    ApiKey {
        #[command(subcommand)]
        command: ApiKeyCommand,
    },
    /// Re-seal every integration's credentials under the active encryption key.
    ResealCredentials,
}

#[derive(Subcommand)]
enum TeamCommand {
    /// Create a team and print its first admin API key (shown once).
    Create { name: String },
}

#[derive(Subcommand)]
enum ApiKeyCommand {
    /// Create an API key and print it (shown once).
    Create {
        /// Team id or name.
        #[arg(long)]
        team: String,
        /// Comma-separated scopes, e.g. integrations:read,logs:read
        #[arg(long, value_delimiter = ',')]
        scopes: Vec<String>,
        #[arg(long, default_value = "cli")]
        name: String,
        /// Days until the key expires.
        #[arg(long)]
        expires_in_days: Option<u32>,
    },
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(Command::ExportSchema { output, check }) = &cli.command {
        return export_schema(output.as_deref(), *check);
    }
    let config = match Config::load() {
        Ok(config) => config,
        Err(err) => {
            integration_hub::logging::say_err(&format!("integration-hub: {err}"));
            return ExitCode::from(2);
        }
    };
    let _logs = init_tracing(&config);
    match run(cli.command.unwrap_or(Command::Serve), config).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            integration_hub::logging::say_err(&format!("integration-hub: {err:#}"));
            ExitCode::FAILURE
        }
    }
}

/// Log lines go to stderr through a lossy, non-blocking writer: a slow, closed or full
/// output never blocks or fails a request, and a line that cannot be written is counted
/// ([`integration_hub::logging::dropped_lines`]) and dropped, never reported with a panic.
fn init_tracing(config: &Config) -> tracing_appender::non_blocking::WorkerGuard {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let (writer, guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .lossy(true)
        .finish(integration_hub::logging::Stderr);
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .log_internal_errors(false)
        // Colours only on a terminal: files, pipes and collectors get plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(writer);
    if config.log_format == "json" {
        builder.json().init();
    } else {
        builder.init();
    }
    guard
}

fn export_schema(output: Option<&std::path::Path>, check: bool) -> ExitCode {
    let sdl = integration_hub::graphql::sdl();
    if check {
        let path = output.unwrap_or(std::path::Path::new("schema.graphql"));
        return match std::fs::read_to_string(path) {
            Ok(existing) if existing == sdl => ExitCode::SUCCESS,
            Ok(_) => {
                integration_hub::logging::say_err(&format!(
                    "{} is out of date: run `integration-hub export-schema --output {}`",
                    path.display(),
                    path.display()
                ));
                ExitCode::FAILURE
            }
            Err(err) => {
                integration_hub::logging::say_err(&format!(
                    "cannot read {}: {err}",
                    path.display()
                ));
                ExitCode::FAILURE
            }
        };
    }
    match output {
        Some(path) => match std::fs::write(path, &sdl) {
            Ok(()) => ExitCode::SUCCESS,
            Err(err) => {
                integration_hub::logging::say_err(&format!(
                    "cannot write {}: {err}",
                    path.display()
                ));
                ExitCode::FAILURE
            }
        },
        None => {
            print!("{sdl}");
            ExitCode::SUCCESS
        }
    }
}

async fn run(command: Command, config: Config) -> anyhow::Result<()> {
    match command {
        Command::Serve => serve(config).await,
        Command::Migrate => {
            let pool = DbPool::connect(&config.database(), 1, config.db_timeout())
                .map_err(|e| anyhow::anyhow!(e.message()))?;
            let applied = pool
                .migrate()
                .await
                .map_err(|e| anyhow::anyhow!(e.message()))?;
            integration_hub::logging::say(&format!("applied {applied} migration(s)\n"));
            Ok(())
        }
        Command::Team {
            command: TeamCommand::Create { name },
        } => {
            let prepared = app::prepare(config).await?;
            show_first_start(&prepared).await?;
            let mut conn = prepared
                .state
                .pool
                .get()
                .await
                .map_err(|e| anyhow::anyhow!(e.message()))?;
            let (team, key) = integration_hub::teams::create_with_admin_key(&mut conn, &name)
                .await
                .map_err(|e| anyhow::anyhow!(e.message()))?;
            let text = format!(
                "team:      {} ({})\nadmin key: {key}\nThis key is shown once; store it now.\n",
                team.name, team.id
            );
            if let Err(err) = show(&text) {
                integration_hub::teams::delete_with_keys(&mut conn, &team.id)
                    .await
                    .map_err(|e| anyhow::anyhow!(e.message()))?;
                anyhow::bail!(
                    "the admin key could not be shown ({err}); the team was removed again"
                );
            }
            Ok(())
        }
        Command::ApiKey {
            command:
                ApiKeyCommand::Create {
                    team,
                    scopes,
                    name,
                    expires_in_days,
                },
        } => {
            let scopes = ScopeSet::parse(&scopes)
                .map_err(|unknown| anyhow::anyhow!("unknown scopes: {}", unknown.join(", ")))?;
            let prepared = app::prepare(config).await?;
            show_first_start(&prepared).await?;
            let mut conn = prepared
                .state
                .pool
                .get()
                .await
                .map_err(|e| anyhow::anyhow!(e.message()))?;
            let team = integration_hub::teams::find_by_id_or_name(&mut conn, &team)
                .await
                .map_err(|e| anyhow::anyhow!(e.message()))?;
            let expires_at = expires_in_days
                .map(|d| integration_hub::db::now() + chrono::Duration::days(d.into()));
            let (row, key) = integration_hub::api_keys::service::create_api_key(
                &mut conn,
                integration_hub::api_keys::service::NewApiKey {
                    expires_at,
                    ..integration_hub::api_keys::service::NewApiKey::new(
                        team.id, &name, scopes, "cli",
                    )
                },
            )
            .await
            .map_err(|e| anyhow::anyhow!(e.message()))?;
            let text = format!(
                "api key id: {}\napi key:    {key}\nThis key is shown once; store it now.\n",
                row.id
            );
            if let Err(err) = show(&text) {
                integration_hub::api_keys::store::revoke(
                    &mut conn,
                    &row.team_id,
                    &row.id,
                    integration_hub::db::now(),
                )
                .await
                .map_err(|e| anyhow::anyhow!(e.message()))?;
                anyhow::bail!("the key could not be shown ({err}); it was revoked again");
            }
            Ok(())
        }
        Command::ResealCredentials => {
            let prepared = app::prepare(config).await?;
            let mut conn = prepared
                .state
                .pool
                .get()
                .await
                .map_err(|e| anyhow::anyhow!(e.message()))?;
            let count = integration_hub::integrations::service::reseal_all(
                &mut conn,
                &prepared.state.keyring,
                None,
            )
            .await
            .map_err(|e| anyhow::anyhow!(e.message()))?;
            let webhooks = integration_hub::webhooks::store::reseal_all(
                &mut conn,
                &prepared.state.keyring,
                None,
            )
            .await
            .map_err(|e| anyhow::anyhow!(e.message()))?;
            let apps =
                integration_hub::oauth::store::reseal_all(&mut conn, &prepared.state.keyring, None)
                    .await
                    .map_err(|e| anyhow::anyhow!(e.message()))?;
            integration_hub::logging::say(&format!(
                "re-sealed {count} credential set(s), {webhooks} webhook secret(s) and {apps} OAuth app secret(s) under key `{}`\n",
                prepared.state.keyring.active_key_id()
            ));
            Ok(())
        }
        Command::ExportSchema { .. } => unreachable!("handled before configuration is loaded"),
    }
}

/// Shows what the first start made. The admin key exists only once it has been shown: when
/// it cannot be written out (stdout closed or on a full disk), the start fails and the team
/// and key just made are removed, so the next start makes and shows a new one.
/// Writes a secret that is shown once to standard output; the caller undoes what it made
/// when this fails.
fn show(text: &str) -> std::io::Result<()> {
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(text.as_bytes())?;
    stdout.flush()
}

async fn show_first_start(prepared: &app::Prepared) -> anyhow::Result<()> {
    let mut text = String::new();
    if let Some(path) = &prepared.key_file_created {
        text.push_str(&format!(
            "Created encryption key file {} (mode 0600). Back it up: without it sealed credentials cannot be read.\n",
            path.display()
        ));
    }
    let Some(first) = &prepared.first_start else {
        if !text.is_empty() {
            integration_hub::logging::say(&text);
        }
        return Ok(());
    };
    text.push_str(&format!(
        "First start: created team `{}` with an admin API key:\n\n    {}\n\nThis key is shown once; store it now.\n",
        first.team_name, first.admin_key
    ));
    if let Err(err) = show(&text) {
        let mut conn = prepared
            .state
            .pool
            .get()
            .await
            .map_err(|e| anyhow::anyhow!(e.message()))?;
        integration_hub::teams::delete_with_keys(&mut conn, &first.team_id)
            .await
            .map_err(|e| anyhow::anyhow!(e.message()))?;
        anyhow::bail!(
            "the first admin key could not be shown ({err}); it was removed again. Start with a \
             working standard output to get one"
        );
    }
    Ok(())
}

async fn serve(config: Config) -> anyhow::Result<()> {
    let prepared = app::prepare(config).await?;
    show_first_start(&prepared).await?;
    let server = app::start(prepared.state)?;
    integration_hub::logging::say(&format!(
        "integration-hub listening on http://{}/graphql\n",
        server.addr
    ));
    tracing::info!(addr = %server.addr, "serving");
    server.wait().await?;
    tracing::info!("stopped");
    Ok(())
}
