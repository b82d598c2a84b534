//! The command line: `sesija [serve]` runs the server; the other commands
//! administer the same data directory, read from the same configuration.
//! Errors come back as one line for `main` to print.

use std::ffi::OsString;
use std::io::BufRead;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::app;
use crate::auth::accounts::{AccountError, Accounts, Announce, NewAccount};
use crate::auth::factors;
use crate::auth::password::check_new_password;
use crate::auth::users::{self, UserError};
use crate::auth::Hasher;
use crate::config;
use crate::control;
use crate::session::{purge_expired, Ending, Owner};
use crate::storage::{Db, Storage};

#[derive(Parser)]
#[command(name = "sesija", version, about = "Persistent server-side login sessions on SQLite")]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server (the default).
    Serve,
    /// Manage accounts.
    User {
        #[command(subcommand)]
        command: UserCommand,
    },
    /// Manage sessions.
    Sessions {
        #[command(subcommand)]
        command: SessionsCommand,
    },
    /// Manage the key that encrypts cookies (the key file in the data dir).
    Key {
        #[command(subcommand)]
        command: KeyCommand,
    },
    /// Write a consistent copy of the database while the server runs.
    Backup {
        /// Where to write the copy.
        path: std::path::PathBuf,
        /// Overwrite an existing file.
        #[arg(long)]
        force: bool,
    },
    /// Print the effective configuration (secrets masked); non-zero exit on a bad value.
    CheckConfig,
    /// Copy this SQLite installation (accounts, sessions) into an empty PostgreSQL database.
    ///
    /// The URL may hold a password: give it with --url-stdin or in the
    /// SESIJA_MIGRATE_TO_URL environment variable rather than on the
    /// command line, where every local user can read it while it runs.
    MigrateTo {
        /// postgres://USER@HOST:PORT/DB (or --url-stdin, or SESIJA_MIGRATE_TO_URL)
        database_url: Option<String>,
        /// Read the URL from the first line of standard input.
        #[arg(long, conflicts_with = "database_url")]
        url_stdin: bool,
    },
}

#[derive(Subcommand)]
enum KeyCommand {
    /// Make a new key; the old one is kept so nobody is logged out.
    Rotate,
    /// Retire the previous keys: cookies still under them stop working.
    DropOld,
}

#[derive(Subcommand)]
enum UserCommand {
    /// Create an account.
    Add {
        name: String,
        /// Read the password from the first line of standard input.
        #[arg(long)]
        password_stdin: bool,
        /// A group the account is in (repeat for several).
        #[arg(long = "group", value_name = "G")]
        groups: Vec<String>,
        /// E-mail address handed to apps as Remote-Email.
        #[arg(long)]
        email: Option<String>,
        /// Name handed to apps as Remote-Name.
        #[arg(long)]
        display_name: Option<String>,
    },
    /// Set the account's groups (none clears them); prints the result.
    Groups { name: String, groups: Vec<String> },
    /// Set a new password; ends every session of the account.
    Passwd {
        name: String,
        /// Read the password from the first line of standard input.
        #[arg(long)]
        password_stdin: bool,
    },
    /// Say whether the account has two-factor authentication on.
    #[command(name = "2fa")]
    TwoFactor { name: String },
    /// Turn two-factor authentication off (a lost device); ends every session of the account.
    #[command(name = "2fa-reset")]
    TwoFactorReset { name: String },
    /// List accounts.
    List,
    /// Remove an account and end its sessions.
    Remove { name: String },
}

#[derive(Subcommand)]
enum SessionsCommand {
    /// Delete expired sessions now and print how many.
    Purge,
    /// List live sessions (never their tokens).
    List {
        /// Only this user's sessions.
        #[arg(long)]
        user: Option<String>,
        /// One JSON array instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// End sessions; the running server honours it on the next request.
    #[command(group(clap::ArgGroup::new("which").required(true).multiple(false)))]
    Revoke {
        /// The session with this handle (from `sessions list`).
        #[arg(long, group = "which")]
        id: Option<String>,
        /// Every session of this user.
        #[arg(long, group = "which")]
        user: Option<String>,
        /// Every session of every user.
        #[arg(long, group = "which")]
        all: bool,
    },
}

/// Runs the command line; `Err` is one line for the operator.
pub fn run(args: impl IntoIterator<Item = OsString>) -> Result<ExitCode, String> {
    let cli = match Cli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return Ok(if e.use_stderr() { ExitCode::from(2) } else { ExitCode::SUCCESS });
        }
    };
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => serve(),
        Command::User { command } => admin(user(command)),
        Command::Sessions { command } => admin(sessions(command)),
        Command::Key { command } => key(command),
        Command::Backup { path, force } => admin(backup(path, force)),
        Command::CheckConfig => check_config(),
        Command::MigrateTo { database_url, url_stdin } => {
            admin(async move { migrate_to(target_url(database_url, url_stdin)?).await })
        }
    }
}

fn serve() -> Result<ExitCode, String> {
    rocket::execute(async {
        let rocket = app::app(config::figment()).await.map_err(|e| e.to_string())?;
        match rocket.launch().await {
            Ok(rocket) => {
                app::close(&rocket).await;
                Ok(ExitCode::SUCCESS)
            }
            Err(e) => Err(match e.kind() {
                rocket::error::ErrorKind::Config(e) => format!("configuration: {e}"),
                kind => kind.to_string(),
            }),
        }
    })
}

fn admin(job: impl std::future::Future<Output = Result<(), String>>) -> Result<ExitCode, String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start: {e}"))?;
    runtime.block_on(job)?;
    Ok(ExitCode::SUCCESS)
}

async fn open() -> Result<Storage, String> {
    let (_, storage) = app::open(&config::figment()).await.map_err(|e| e.to_string())?;
    Ok(storage)
}

fn key(command: KeyCommand) -> Result<ExitCode, String> {
    let figment = config::figment();
    let settings = config::Settings::from_figment(&figment).map_err(|e| e.to_string())?;
    let path = settings.key_path();
    if settings.database_url.is_some() {
        return Err(
            "with `database_url` every instance must use the same key, so there is no key file to manage: \
             put a new key in `secret_key` and the old one in `secret_key_fallbacks` on every instance, \
             then restart them"
                .into(),
        );
    }
    if crate::keys::check_configured(&figment)? {
        return Err(
            "`secret_key` is set in the configuration, so there is no key file to manage: put a new \
                    key in `secret_key` and the old one in `secret_key_fallbacks`, then restart"
                .into(),
        );
    }
    match command {
        KeyCommand::Rotate => {
            std::fs::create_dir_all(&settings.data_dir)
                .map_err(|e| format!("cannot create data directory {}: {e}", settings.data_dir.display()))?;
            let kept = crate::keys::rotate(&path)?;
            println!("wrote a new secret key to {}", path.display());
            if kept > 0 {
                println!("kept {kept} previous key(s) in {}", crate::keys::previous_path(&path).display());
            }
            println!("Restart sesija to use it: cookies sealed under a previous key keep working and are");
            println!("re-issued under the new one. Once every user has been back (at the latest after");
            println!(
                "session_absolute_timeout, {} s), retire the old key: sesija key drop-old",
                settings.session_absolute_timeout
            );
        }
        KeyCommand::DropOld => {
            // Second-factor secrets still sealed under a previous key would
            // open under none once it is gone: seal them under the current
            // one first (a server does so at start-up too).
            if settings.database_path().exists() {
                admin(reseal_second_factors(figment, path.clone()))?;
            }
            let dropped = crate::keys::drop_old(&path)?;
            println!("dropped {dropped} previous key(s); restart sesija to stop accepting them");
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn reseal_second_factors(
    figment: rocket::figment::Figment,
    path: std::path::PathBuf,
) -> Result<(), String> {
    let previous = crate::keys::fallbacks(&figment, &path)?;
    let (figment, _) = crate::keys::provide(figment, &path)?;
    let sealer = factors::Sealer::new(&crate::keys::current(&figment)?, &previous);
    let db = open().await?;
    let (resealed, lost) = factors::reseal_all(&db, &sealer).await.map_err(|e| e.to_string())?;
    db.close().await;
    if resealed > 0 {
        println!("sealed {resealed} second-factor secret(s) under the current key");
    }
    if lost > 0 {
        println!("{lost} account(s) have a second-factor secret no configured key opens: `sesija user 2fa-reset NAME`");
    }
    Ok(())
}

/// The variable `migrate-to` reads its URL from when none is given.
const MIGRATE_TO_URL_VARIABLE: &str = "SESIJA_MIGRATE_TO_URL";

/// `migrate-to`'s URL: from the command line, standard input or the environment.
fn target_url(given: Option<String>, from_stdin: bool) -> Result<String, String> {
    let url = match (given, from_stdin) {
        (Some(url), _) => url,
        (None, true) => {
            let mut line = String::new();
            std::io::stdin().read_line(&mut line).map_err(|e| format!("cannot read the URL: {e}"))?;
            line.trim().to_owned()
        }
        (None, false) => std::env::var(MIGRATE_TO_URL_VARIABLE).unwrap_or_default(),
    };
    if url.is_empty() {
        return Err(format!(
            "no database URL: give it with --url-stdin, in {MIGRATE_TO_URL_VARIABLE}, or as an argument"
        ));
    }
    Ok(url)
}

async fn migrate_to(url: String) -> Result<(), String> {
    let figment = config::figment();
    let settings = config::Settings::from_figment(&figment).map_err(|e| e.to_string())?;
    let path = settings.database_path();
    if !path.exists() {
        return Err(format!("there is no SQLite database at {} to migrate", path.display()));
    }
    // A server still writing would change what is copied after the copy.
    let socket = settings.data_dir.join(control::SOCKET_NAME);
    if control::flush(&socket).await? == control::Notified::Server {
        return Err(format!(
            "a sesija server runs on {}: stop it first, so that nothing changes after the copy",
            settings.data_dir.display()
        ));
    }
    let db = Db::open(&settings.data_dir).await.map_err(|e| e.to_string())?;
    let pool = crate::storage::open_postgres(&url).await.map_err(|e| e.to_string())?;
    let moved =
        crate::transfer::to_postgres(&db, &pool, crate::session::now()).await.map_err(|e| e.to_string());
    db.close().await;
    pool.close().await;
    let moved = moved?;
    println!(
        "copied {} accounts, {} group memberships, {} recovery codes and {} live sessions from {} to {}",
        moved.users,
        moved.groups,
        moved.recovery_codes,
        moved.sessions,
        path.display(),
        crate::storage::redacted(&url)
    );
    let key = match crate::keys::check_configured(&figment)? {
        true => "the `secret_key` configured here".to_owned(),
        false => format!("the key in {}", settings.key_path().display()),
    };
    println!(
        "Now give every instance database_url and, as secret_key, {key} (sessions stay valid under it); \
         keep {} as a fallback copy",
        path.display()
    );
    Ok(())
}

async fn backup(path: std::path::PathBuf, force: bool) -> Result<(), String> {
    let storage = open().await?;
    let Some(db) = storage.sqlite() else {
        storage.close().await;
        return Err("the database is PostgreSQL (database_url): back it up with pg_dump".into());
    };
    let report = db.backup(&path, force).await.map_err(|e| e.to_string())?;
    println!(
        "backed up {} to {}: {} bytes, {} users, {} sessions",
        db.path.display(),
        path.display(),
        report.bytes,
        report.users,
        report.sessions
    );
    db.close().await;
    Ok(())
}

fn check_config() -> Result<ExitCode, String> {
    let figment = config::figment();
    let settings = config::Settings::from_figment(&figment).map_err(|e| e.to_string())?;
    let configured = crate::keys::check_configured(&figment)?;
    let rocket: rocket::Config =
        figment.extract().map_err(|e: rocket::figment::Error| format!("configuration: {e}"))?;
    let fallbacks = crate::keys::fallbacks(&figment, &settings.key_path())?;
    let key = if configured {
        "[configured]".to_owned()
    } else if settings.key_path().exists() {
        format!("[file {}]", settings.key_path().display())
    } else {
        format!("[generated at first start in {}]", settings.key_path().display())
    };
    println!("profile = {}", figment.profile());
    println!("address = {}", rocket.address);
    println!("port = {}", rocket.port);
    println!("ip_header = {}", rocket.ip_header.as_ref().map_or("false", |h| h.as_str()));
    println!("log_level = {}", rocket.log_level);
    println!("data_dir = {}", settings.data_dir.display());
    match &settings.database_url {
        Some(url) => println!("database_url = {}", crate::storage::redacted(url)),
        None => println!("database_url = [unset: SQLite in data_dir]"),
    }
    println!("session_idle_timeout = {}", settings.session_idle_timeout);
    println!("session_absolute_timeout = {}", settings.session_absolute_timeout);
    println!("session_touch_interval = {}", settings.session_touch_interval);
    println!("session_purge_interval = {}", settings.session_purge_interval);
    println!("session_cache_capacity = {}", settings.session_cache_capacity);
    println!("cookie_secure = {}", settings.cookie_secure);
    println!("login_max_failures = {}", settings.login_max_failures);
    println!("login_lockout = {}", settings.login_lockout);
    println!("login_max_failures_per_ip = {}", settings.login_max_failures_per_ip);
    println!("metrics = {}", settings.metrics);
    println!("public_url = {}", settings.public_url.as_deref().unwrap_or_default());
    println!("cookie_domain = {}", settings.cookie_domain.as_deref().unwrap_or("[none]"));
    println!("access = [{} rule(s)]", settings.access.len());
    println!(
        "access_default = {}",
        serde_json::to_value(settings.access_default).unwrap_or_default().as_str().unwrap_or("allow")
    );
    println!("secret_key = {key}");
    println!("secret_key_fallbacks = [{} key(s)]", fallbacks.len());
    Ok(ExitCode::SUCCESS)
}

fn read_password(name: &str, from_stdin: bool) -> Result<String, String> {
    let password = if from_stdin {
        let mut line = String::new();
        std::io::stdin()
            .lock()
            .read_line(&mut line)
            .map_err(|e| format!("cannot read standard input: {e}"))?;
        line.trim_end_matches(['\r', '\n']).to_owned()
    } else {
        use std::io::IsTerminal;
        if !std::io::stdin().is_terminal() {
            return Err("standard input is not a terminal; pipe the password with --password-stdin".into());
        }
        let prompt = |p: &str| {
            rpassword::prompt_password(p)
                .map_err(|e| format!("cannot read the password ({e}); use --password-stdin"))
        };
        let first = prompt(&format!("New password for {name}: "))?;
        if prompt("Repeat it: ")? != first {
            return Err("the passwords do not match".into());
        }
        first
    };
    check_new_password(name, &password).map_err(|e| e.trim_end_matches('.').to_lowercase())?;
    Ok(password)
}

/// An e-mail or display name travels in a response header: printable, one
/// line, bounded.
fn check_profile(email: Option<&str>, display_name: Option<&str>) -> Result<(), String> {
    for (key, value) in [("--email", email), ("--display-name", display_name)] {
        let Some(value) = value else { continue };
        if value.is_empty()
            || value.len() > 256
            || value.chars().any(char::is_control)
            || printable(value) != value
        {
            return Err(format!("{key} must be 1 to 256 bytes of printable text"));
        }
        if !value.is_ascii() {
            return Err(format!("{key} must be ASCII (it is sent in an HTTP header)"));
        }
    }
    if email.is_some_and(|e| !e.contains('@') || e.contains(' ')) {
        return Err("--email must look like name@example.com".into());
    }
    Ok(())
}

fn user_error(e: UserError) -> String {
    match e {
        UserError::Invalid(why) => why.trim_end_matches('.').to_lowercase(),
        e => e.to_string(),
    }
}

/// An account change as the command line says it went wrong.
fn account_error(e: AccountError) -> String {
    match e {
        AccountError::User(e) => user_error(e),
        AccountError::Invalid(why) => why.trim_end_matches('.').to_lowercase(),
        e => e.to_string(),
    }
}

/// The command line's announcement of an account change: the running
/// server (or every instance on PostgreSQL) honours it before the command
/// returns.
struct ToServer<'a>(&'a Storage);

impl Announce for ToServer<'_> {
    async fn changed(&self, what: &str) -> Result<(), AccountError> {
        tell_server(self.0, what).await.map_err(AccountError::NotAnnounced)
    }
}

async fn user(command: UserCommand) -> Result<(), String> {
    let db = open().await?;
    let (hasher, store) = (Hasher::default(), db.session_store());
    let accounts = Accounts::new(&db, &hasher, &*store, ToServer(&db));
    let done = user_command(command, &db, &accounts).await;
    db.close().await;
    done
}

async fn user_command(
    command: UserCommand,
    db: &Storage,
    accounts: &Accounts<'_, ToServer<'_>>,
) -> Result<(), String> {
    match command {
        UserCommand::Add { name, password_stdin, groups, email, display_name } => {
            check_profile(email.as_deref(), display_name.as_deref())?;
            accounts.check_new(&name, &groups).await.map_err(account_error)?;
            let password = read_password(&name, password_stdin)?;
            let new = NewAccount {
                name: &name,
                password,
                groups: &groups,
                email: email.as_deref(),
                display_name: display_name.as_deref(),
            };
            accounts.add(new).await.map_err(account_error)?;
            println!("created user {name}");
        }
        UserCommand::Passwd { name, password_stdin } => {
            if users::by_name(db, &name).await.map_err(|e| e.to_string())?.is_none() {
                return Err(user_error(UserError::NotFound(name)));
            }
            let password = read_password(&name, password_stdin)?;
            let ended = accounts.set_password(&name, password, None).await.map_err(account_error)?;
            println!("changed the password of {name}; ended {ended} sessions");
        }
        UserCommand::Groups { name, groups } => {
            let stored = accounts.set_groups(&name, &groups).await.map_err(account_error)?;
            match stored.is_empty() {
                true => println!("{name}: no groups"),
                false => println!("{name}: {}", stored.join(",")),
            }
        }
        UserCommand::TwoFactor { name } => {
            let user = users::by_name(db, &name)
                .await
                .map_err(|e| e.to_string())?
                .ok_or_else(|| user_error(UserError::NotFound(name.clone())))?;
            match factors::status(db, user.id).await.map_err(|e| e.to_string())? {
                Some(on) => println!(
                    "{}: two-factor authentication on since {}, {} recovery codes left",
                    printable(&name),
                    date(on.enabled_at),
                    on.codes_left
                ),
                None => println!("{}: two-factor authentication off", printable(&name)),
            }
        }
        UserCommand::TwoFactorReset { name } => match accounts.reset_second_factor(&name).await {
            Ok(Some(ended)) => {
                println!(
                    "turned off two-factor authentication of {}; ended {ended} sessions",
                    printable(&name)
                );
                log::warn!(
                    "two-factor authentication of {name:?} reset by the operator; ended {ended} sessions"
                );
            }
            Ok(None) => {
                println!("{}: two-factor authentication was already off; nothing changed", printable(&name));
            }
            Err(e) => return Err(account_error(e)),
        },
        UserCommand::List => {
            let list = users::list(db).await.map_err(|e| e.to_string())?;
            let groups = users::all_groups(db).await.map_err(|e| e.to_string())?;
            for user in &list {
                let created = date(user.created_at);
                let groups = groups.get(&user.id).map(|g| g.join(",")).unwrap_or_default();
                let two_factor = if user.two_factor { "on" } else { "off" };
                println!(
                    "{}\tcreated {created}\tgroups {}\t2fa {two_factor}",
                    printable(&user.username),
                    printable(&groups)
                );
            }
            if list.is_empty() {
                eprintln!("no users yet");
            }
        }
        UserCommand::Remove { name } => {
            let ended = accounts.remove(&name).await.map_err(account_error)?;
            println!("removed user {name}; ended {ended} sessions");
        }
    }
    Ok(())
}

async fn sessions(command: SessionsCommand) -> Result<(), String> {
    let db = open().await?;
    let store = db.session_store();
    let failed = |e: crate::session::StoreError| e.to_string();
    let changes = !matches!(command, SessionsCommand::List { .. });
    let user_id = |name: String| {
        let storage = db.clone();
        async move {
            match users::by_name(&storage, &name).await {
                Ok(Some(user)) => Ok(user.id),
                Ok(None) => Err(user_error(UserError::NotFound(name))),
                Err(e) => Err(e.to_string()),
            }
        }
    };
    match command {
        SessionsCommand::Purge => {
            let report = purge_expired(&*store, crate::session::now()).await.map_err(failed)?;
            println!("purged {} expired sessions", report.removed);
        }
        SessionsCommand::List { user, json } => {
            // The running server holds recent activity back for up to a
            // second; have it written first, so the listing shows it.
            if let Some(sqlite) = db.sqlite() {
                let socket = sqlite.path.with_file_name(control::SOCKET_NAME);
                if let Err(e) = control::flush(&socket).await {
                    eprintln!("sesija: last-active times may be a little behind: {e}");
                }
            }
            let now = crate::session::now();
            let records = match user {
                Some(name) => store.list(Owner::User(user_id(name).await?), now).await,
                None => store.list(Owner::Anyone, now).await,
            }
            .map_err(failed)?;
            let names: std::collections::HashMap<i64, String> = users::list(&db)
                .await
                .map_err(|e| e.to_string())?
                .into_iter()
                .map(|u| (u.id, u.username))
                .collect();
            let name = |id: i64| printable(&names.get(&id).cloned().unwrap_or_else(|| format!("#{id}")));
            let text = |value: &Option<String>| value.as_deref().map(printable);
            if json {
                let rows: Vec<_> = records
                    .iter()
                    .map(|r| {
                        serde_json::json!({
                            "handle": r.handle,
                            "user": name(r.user_id),
                            "created_at": r.created_at,
                            "last_seen_at": r.last_seen_at,
                            "expires_at": r.expires_at,
                            "persistent": r.persistent,
                            "ip": text(&r.ip),
                            "user_agent": text(&r.user_agent),
                        })
                    })
                    .collect();
                println!("{}", serde_json::Value::Array(rows));
            } else {
                println!("HANDLE\tUSER\tCREATED\tLAST ACTIVE\tEXPIRES\tIP\tUSER AGENT");
                let time = |t: i64| {
                    chrono::DateTime::from_timestamp(t, 0)
                        .map(|t| t.format("%Y-%m-%dT%H:%M:%SZ").to_string())
                        .unwrap_or_default()
                };
                for r in &records {
                    println!(
                        "{}\t{}\t{}\t{}\t{}\t{}\t{}",
                        r.handle,
                        name(r.user_id),
                        time(r.created_at),
                        time(r.last_seen_at),
                        time(r.expires_at),
                        text(&r.ip).as_deref().unwrap_or("-"),
                        text(&r.user_agent).as_deref().unwrap_or("-"),
                    );
                }
            }
        }
        SessionsCommand::Revoke { id, user, all } => {
            let ended = if let Some(handle) = id {
                match store.end(Ending::Handle { handle: &handle, owner: None }).await.map_err(failed)? {
                    0 => return Err(format!("no session with handle {handle:?}")),
                    ended => ended,
                }
            } else if let Some(name) = user {
                let user_id = user_id(name).await?;
                store.end(Ending::OwnedBy { user_id, keep: None }).await.map_err(failed)?
            } else {
                debug_assert!(all);
                store.end(Ending::All).await.map_err(failed)?
            };
            println!("ended {ended} sessions");
        }
    }
    let told = match changes {
        true => tell_server(&db, "the sessions were changed").await,
        false => Ok(()),
    };
    db.close().await;
    told
}

/// `text` fit for an operator's terminal: every control character (C0, DEL,
/// C1 such as U+009B, the 8-bit CSI) and every bidirectional control (U+202E
/// and its kin, which reorder what follows) becomes U+FFFD. Applied to
/// whatever a client chose (user agents) in tables and JSON alike: JSON
/// escapes C0 only, and a terminal acts on the rest.
pub fn printable(text: &str) -> String {
    let unsafe_char = |c: char| {
        c.is_control()
            || matches!(c, '\u{061C}' | '\u{200E}' | '\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
    };
    text.chars().map(|c| if unsafe_char(c) { '\u{FFFD}' } else { c }).collect()
}

fn date(at: i64) -> String {
    chrono::DateTime::from_timestamp(at, 0)
        .map(|t| t.format("%Y-%m-%d %H:%M UTC").to_string())
        .unwrap_or_default()
}

/// After a command changed sessions in the database: a running server drops
/// what it cached before this returns, so the change counts from the next
/// request it serves.
async fn tell_server(storage: &Storage, done: &str) -> Result<(), String> {
    // On PostgreSQL the database announced the change to every instance;
    // wait until they have applied it.
    let db = match storage {
        Storage::Sqlite(db) => db,
        Storage::Postgres(pool) => {
            crate::session::barrier(pool).await;
            return Ok(());
        }
    };
    // The socket sits beside the database, in the data directory.
    control::notify(&db.path.with_file_name(control::SOCKET_NAME))
        .await
        .map(|_| ())
        .map_err(|e| format!("{done} in the database, but {e}; restart the server to be sure it honours it"))
}

#[cfg(test)]
mod tests {
    use super::printable;

    #[test]
    fn operator_output_has_no_control_or_bidi_characters() {
        let hostile =
            "a\u{1b}[2J\u{7}\t\n\u{85}\u{9b}\u{9c}\u{9d}\u{202a}\u{202e}\u{2066}\u{2069}\u{200f}\u{61c}z";
        let shown = printable(hostile);
        assert!(shown.starts_with('a') && shown.ends_with('z'));
        assert!(shown.chars().all(|c| c == '\u{FFFD}' || c.is_ascii_graphic()), "{shown:?}");
        assert_eq!(
            printable("Mozilla/5.0 (X11; Linux) Ünïcödé 日本"),
            "Mozilla/5.0 (X11; Linux) Ünïcödé 日本"
        );
    }
}
