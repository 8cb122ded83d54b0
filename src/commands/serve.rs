//! `amfmn serve`: runs the retrieval service on a data folder; `amfmn serve token add|revoke`
//! manages its users' tokens.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};

use super::RuntimeArgs;
use crate::serve::auth::{self, Role};
use crate::serve::folder::DataFolder;
use crate::serve::import::{Import, Imported};
use crate::serve::{api, store, ServeConfig, Service};

/// Arguments of `amfmn serve`.
#[derive(Debug, Clone, clap::Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct ServeArgs {
    #[command(subcommand)]
    pub action: Option<ServeAction>,
    /// The data folder: database, uploaded originals, thumbnails (created if missing).
    #[arg(long, value_name = "DIR", required = true)]
    pub data: Option<PathBuf>,
    /// A trained checkpoint: a fold folder (its best), a .json sidecar or its .safetensors.
    #[arg(long, value_name = "CKPT", required = true)]
    pub checkpoint: Option<PathBuf>,
    /// Address to listen on; port 0 picks a free one.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// Listen on an address other than loopback (needs at least one token; put TLS in front).
    #[arg(long)]
    pub allow_remote: bool,
    /// The largest upload (e.g. 256MiB, 10MB, 5000000).
    #[arg(long, default_value = "256MiB", value_parser = parse_bytes)]
    pub max_upload: u64,
    /// The most pixels an uploaded image may have (e.g. 200M), read from its header.
    #[arg(long, default_value = "200M", value_parser = parse_count)]
    pub max_pixels: u64,
    /// Search requests that may wait for the model; more are answered 503.
    #[arg(long, default_value_t = 256)]
    pub queue: usize,
    /// Anyone may search the public images without a token.
    #[arg(long)]
    pub public_read: bool,
    /// The images were encoded with another checkpoint: encode them all again with this one.
    #[arg(long)]
    pub reencode: bool,
    /// Add the images of an index (`amfmn index`) at start-up, with their codes when it was
    /// made with this checkpoint; needs --owner.
    #[arg(long, value_name = "INDEX", requires = "owner")]
    pub import_index: Option<PathBuf>,
    /// The user the imported images belong to.
    #[arg(long, value_name = "NAME", requires = "import_index")]
    pub owner: Option<String>,
    /// Visibility of the imported images.
    #[arg(long, value_enum, default_value = "private", requires = "import_index")]
    pub visibility: ImportVisibility,
    /// Request log on stderr, one line a request (id, method, path, status, latency): off,
    /// error, warn, info or debug.
    #[arg(long, value_name = "LEVEL", default_value = "info")]
    pub log: tracing_subscriber::filter::LevelFilter,
    #[command(flatten)]
    pub runtime: RuntimeArgs,
}

/// Who may see imported images.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ImportVisibility {
    Public,
    Private,
}

/// `amfmn serve token ...`.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum ServeAction {
    /// Manage the users' bearer tokens.
    #[command(subcommand)]
    Token(TokenAction),
}

/// `amfmn serve token add|revoke`.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum TokenAction {
    /// Give a user a new token (creating the user); the token is printed once.
    Add {
        #[arg(long, value_name = "DIR")]
        data: PathBuf,
        #[arg(long)]
        user: String,
        /// The user's role (a new user is a plain user unless given).
        #[arg(long, value_enum)]
        role: Option<Role>,
        /// A note on what the token is for.
        #[arg(long, default_value = "")]
        label: String,
    },
    /// Revoke every token of a user.
    Revoke {
        #[arg(long, value_name = "DIR")]
        data: PathBuf,
        #[arg(long)]
        user: String,
    },
}

/// A size in bytes: a number with an optional unit (k, M, G: powers of 1000; KiB, MiB, GiB:
/// powers of 1024; B).
pub fn parse_bytes(text: &str) -> Result<u64, String> {
    let units = [
        ("KiB", 1 << 10),
        ("MiB", 1 << 20),
        ("GiB", 1 << 30),
        ("kB", 1000),
        ("MB", 1_000_000),
        ("GB", 1_000_000_000),
        ("B", 1),
    ];
    parse_with_units(text, &units)
}

/// A count: a number with an optional k, M or G (powers of 1000).
pub fn parse_count(text: &str) -> Result<u64, String> {
    parse_with_units(text, &[("k", 1000), ("M", 1_000_000), ("G", 1_000_000_000)])
}

fn parse_with_units(text: &str, units: &[(&str, u64)]) -> Result<u64, String> {
    let (number, scale) =
        units.iter().find_map(|&(unit, scale)| text.strip_suffix(unit).map(|n| (n, scale))).unwrap_or((text, 1));
    let units: Vec<&str> = units.iter().map(|u| u.0).collect();
    number
        .trim()
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(scale))
        .filter(|&n| n > 0)
        .ok_or_else(|| format!("{text:?}: give a positive whole number, optionally followed by {}", units.join(", ")))
}

/// Runs the service, or the token action.
pub fn run(args: &ServeArgs) -> Result<()> {
    match &args.action {
        Some(ServeAction::Token(action)) => token(action),
        None => serve(args),
    }
}

fn token(action: &TokenAction) -> Result<()> {
    match action {
        TokenAction::Add { data, user, role, label } => {
            let folder = DataFolder::open(data)?;
            let mut db = store::open(&folder.database(), true)?;
            let token = auth::add_token(&mut db, user, *role, label)?;
            eprintln!("a token for {user} (shown once; keep it secret):");
            println!("{token}");
        }
        TokenAction::Revoke { data, user } => {
            let db = store::open(&DataFolder { root: data.clone() }.database(), false)?;
            let revoked = auth::revoke_tokens(&db, user)?;
            println!("revoked {revoked} token(s) of {user}");
        }
    }
    Ok(())
}

/// What an import added, and each file it skipped (the first ten).
fn report_import(index: &std::path::Path, imported: &Imported) {
    eprintln!("{}: {imported}", index.display());
    for (name, why) in imported.skipped.iter().take(10) {
        crate::report::warn(format!("{}: skipped {name}: {why}", index.display()));
    }
    if imported.skipped.len() > 10 {
        crate::report::warn(format!("{}: {} more skipped", index.display(), imported.skipped.len() - 10));
    }
}

/// Refuses an address other than loopback unless `--allow-remote` is given and a token exists.
fn check_listen(args: &ServeArgs, data: &std::path::Path) -> Result<()> {
    if args.listen.ip().is_loopback() {
        return Ok(());
    }
    if !args.allow_remote {
        bail!(
            "--listen {}: not a loopback address; add --allow-remote to serve other machines (with tokens, behind a \
             TLS proxy)",
            args.listen
        );
    }
    let database = DataFolder { root: data.to_owned() }.database();
    let has_token = database.is_file() && auth::any_token(&store::open(&database, false)?)?;
    if !has_token {
        bail!(
            "--allow-remote: {} has no active token; add one first: amfmn serve token add --data {} --user NAME",
            data.display(),
            data.display()
        );
    }
    Ok(())
}

fn serve(args: &ServeArgs) -> Result<()> {
    let (Some(data), Some(checkpoint)) = (&args.data, &args.checkpoint) else {
        bail!("give --data and --checkpoint");
    };
    check_listen(args, data)?;
    let config = ServeConfig {
        data: data.clone(),
        checkpoint: checkpoint.clone(),
        device: args.runtime.device()?,
        max_upload: args.max_upload,
        max_pixels: args.max_pixels,
        queue: args.queue,
        public_read: args.public_read,
        reencode: args.reencode,
        import: args.import_index.clone().map(|index| Import {
            index,
            owner: args.owner.clone().unwrap_or_default(),
            public: args.visibility == ImportVisibility::Public,
        }),
    };
    api::init_request_log(args.log);
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind(args.listen))
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let service = Service::start(&config)?;
    eprintln!("{}: {}", data.display(), service.repairs);
    if let (Some(imported), Some(index)) = (&service.imported, &args.import_index) {
        report_import(index, imported);
    }
    // Caught before the address is announced: a signal from then on stops the service gracefully.
    let shutdown = {
        let _context = runtime.enter();
        shutdown_signal()?
    };
    println!("listening on {}", listener.local_addr()?);
    std::io::Write::flush(&mut std::io::stdout())?;
    let router = service.router();
    let state = service.state.clone();
    runtime.block_on(async move {
        axum::serve(listener, router)
            .with_graceful_shutdown(async move {
                shutdown.await;
                state.draining.store(true, std::sync::atomic::Ordering::SeqCst);
            })
            .await
    })?;
    eprintln!("stopping: finishing the current batch");
    service.shutdown()
}

/// Resolves at the first Ctrl-C (SIGINT) or SIGTERM; both are caught from the moment this
/// returns (it must run inside the runtime's context).
fn shutdown_signal() -> Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut interrupt = signal(SignalKind::interrupt()).context("cannot catch SIGINT")?;
    let mut terminate = signal(SignalKind::terminate()).context("cannot catch SIGTERM")?;
    Ok(async move {
        tokio::select! {
            _ = interrupt.recv() => {}
            _ = terminate.recv() => {}
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_counts() {
        assert_eq!(parse_bytes("256MiB"), Ok(256 << 20));
        assert_eq!(parse_bytes("10MB"), Ok(10_000_000));
        assert_eq!(parse_bytes("5000"), Ok(5000));
        assert_eq!(parse_count("200M"), Ok(200_000_000));
        assert!(parse_bytes("0").is_err() && parse_bytes("-1").is_err() && parse_bytes("1.5MiB").is_err());
        assert!(parse_count("99999999999G").is_err(), "overflow");
    }
}
