//! The control socket: how an administrative command tells the running server
//! that it changed sessions in the database, so that the server's session
//! cache forgets them before the command exits.
//!
//! The socket is `control.sock` in the data directory, readable and writable
//! by its owner only. One request per connection, one line each way:
//! `forget` (drop every cached session), `flush` (write out the deadline
//! moves the cache holds back, so a listing read from the database shows
//! activity as the server knows it) or `ping`; the server answers `ok` once
//! done. It also stops a second server from starting on the same data
//! directory, whose cache would never hear of the first one's writes.

use std::io::ErrorKind;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixListener as StdListener, UnixStream as StdStream};

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rocket::fairing::{Fairing, Info, Kind};
use rocket::{async_trait, Orbit, Rocket};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
use tokio::task::JoinHandle;

use crate::session::{Peers, SessionManager};

/// File name of the socket inside the data directory.
pub const SOCKET_NAME: &str = "control.sock";

/// How long either side waits for the other.
const TIMEOUT: Duration = Duration::from_secs(5);

/// Something to run when a command announces a change.
pub type Hook = Arc<dyn Fn() + Send + Sync>;

/// How a server stands on its data directory, decided at start-up.
pub enum Claim {
    /// The first server: it may cache sessions, and owns the control socket.
    Owner(Control),
    /// Another server owns the directory: this one must cache nothing and
    /// tell the owner of every session change ([`crate::session::NotifyingStore`]).
    Peer(PathBuf),
}

/// The server's end of the socket: bound at start-up, served from liftoff,
/// removed at shutdown (or when the app is dropped).
pub struct Control {
    path: PathBuf,
    inode: u64,
    manager: Option<Arc<SessionManager>>,
    /// Also run on `forget`: other caches of what commands change (accounts).
    forget_hooks: Vec<Hook>,
    listener: Mutex<Option<StdListener>>,
    task: Mutex<Option<JoinHandle<()>>>,
}

/// Binds `control.sock` in `data_dir`, unless a running server answers on it.
/// A socket left by a server that died is replaced.
pub fn claim(data_dir: &Path) -> Result<Claim, String> {
    let path = data_dir.join(SOCKET_NAME);
    if std::fs::symlink_metadata(&path).is_ok() {
        if StdStream::connect(&path).is_ok() {
            return Ok(Claim::Peer(path));
        }
        std::fs::remove_file(&path)
            .map_err(|e| format!("cannot remove stale control socket {}: {e}", path.display()))?;
    }
    let listener = StdListener::bind(&path)
        .map_err(|e| format!("cannot create control socket {}: {e}", path.display()))?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
        .and_then(|_| listener.set_nonblocking(true))
        .map_err(|e| format!("cannot set up control socket {}: {e}", path.display()))?;
    let inode = std::fs::metadata(&path).map_or(0, |m| m.ino());
    Ok(Claim::Owner(Control {
        path,
        inode,
        manager: None,
        forget_hooks: Vec::new(),
        listener: Mutex::new(Some(listener)),
        task: Mutex::new(None),
    }))
}

impl Control {
    /// The sessions whose cache a `forget` request clears.
    pub fn serving(mut self, manager: Arc<SessionManager>) -> Control {
        self.manager = Some(manager);
        self
    }

    /// Also runs `hook` on every `forget` request.
    pub fn forgetting(mut self, hook: Hook) -> Control {
        self.forget_hooks.push(hook);
        self
    }

    fn stop(&self) {
        if let Some(task) = self.task.lock().unwrap().take() {
            task.abort();
        }
        // Only our own socket: a later server may have bound the path since.
        if std::fs::metadata(&self.path).is_ok_and(|m| m.ino() == self.inode) {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

impl Drop for Control {
    fn drop(&mut self) {
        self.stop();
    }
}

#[async_trait]
impl Fairing for Control {
    fn info(&self) -> Info {
        Info { name: "control socket", kind: Kind::Liftoff | Kind::Shutdown }
    }

    async fn on_liftoff(&self, _: &Rocket<Orbit>) {
        let Some(listener) = self.listener.lock().unwrap().take() else { return };
        let listener = match tokio::net::UnixListener::from_std(listener) {
            Ok(listener) => listener,
            Err(e) => {
                log::error!("control socket unusable: {e}");
                return;
            }
        };
        let Some(manager) = self.manager.clone() else { return };
        let hooks: Arc<[Hook]> = self.forget_hooks.clone().into();
        *self.task.lock().unwrap() = Some(tokio::spawn(async move {
            loop {
                match listener.accept().await {
                    Ok((stream, _)) => {
                        tokio::spawn(answer(stream, manager.clone(), hooks.clone()));
                    }
                    Err(e) => {
                        log::warn!("control socket: {e}");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            }
        }));
    }

    async fn on_shutdown(&self, _: &Rocket<Orbit>) {
        self.stop();
    }
}

async fn answer(stream: tokio::net::UnixStream, manager: Arc<SessionManager>, hooks: Arc<[Hook]>) {
    let (read, mut write) = stream.into_split();
    let mut line = String::new();
    let mut read = tokio::io::BufReader::new(read.take(64));
    let reply = match tokio::time::timeout(TIMEOUT, read.read_line(&mut line)).await {
        Ok(Ok(_)) => match line.trim() {
            "forget" => {
                manager.store().invalidate().await;
                hooks.iter().for_each(|hook| hook());
                log::info!("control socket: session cache cleared on request");
                "ok\n"
            }
            "flush" => match manager.store().flush().await {
                Ok(_) => "ok\n",
                Err(e) => {
                    log::warn!("control socket: flush failed: {e}");
                    "error: flush failed\n"
                }
            },
            "ping" => "ok\n",
            _ => "error: unknown request\n",
        },
        _ => return,
    };
    let _ = tokio::time::timeout(TIMEOUT, write.write_all(reply.as_bytes())).await;
}

/// What [`notify`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Notified {
    /// A running server forgot its cached sessions.
    Server,
    /// No server runs on this data directory.
    NoServer,
}

/// Tells the server whose control socket is `socket`, if one runs, to forget
/// its cached sessions, and waits until it has.
pub async fn notify(socket: &Path) -> Result<Notified, String> {
    ask(socket, "forget").await
}

/// Asks the server whose control socket is `socket`, if one runs, to write
/// out the deadline moves it holds back, and waits until it has.
pub async fn flush(socket: &Path) -> Result<Notified, String> {
    ask(socket, "flush").await
}

async fn ask(socket: &Path, request: &str) -> Result<Notified, String> {
    let mut stream = match tokio::net::UnixStream::connect(socket).await {
        Ok(stream) => stream,
        Err(e) if matches!(e.kind(), ErrorKind::NotFound | ErrorKind::ConnectionRefused) => {
            return Ok(Notified::NoServer)
        }
        Err(e) => return Err(format!("cannot reach the server at {}: {e}", socket.display())),
    };
    let talk = async {
        stream.write_all(format!("{request}\n").as_bytes()).await?;
        let mut line = String::new();
        tokio::io::BufReader::new((&mut stream).take(64)).read_line(&mut line).await?;
        Ok::<_, std::io::Error>(line)
    };
    match tokio::time::timeout(TIMEOUT, talk).await {
        Ok(Ok(line)) if line.trim() == "ok" => Ok(Notified::Server),
        Ok(Ok(line)) => Err(format!("the server at {} answered {:?}", socket.display(), line.trim())),
        Ok(Err(e)) => Err(format!("the server at {} did not answer: {e}", socket.display())),
        Err(_) => Err(format!("the server at {} did not answer within {TIMEOUT:?}", socket.display())),
    }
}

/// The owner of a data directory, told over its control socket of every
/// session change a second server on that directory writes (the second
/// server caches nothing itself; the owner holds deadline moves back, so
/// it hears of those too).
pub struct OwnerSocket(pub PathBuf);

#[async_trait]
impl Peers for OwnerSocket {
    async fn changed(&self) {
        if let Err(e) = notify(&self.0).await {
            log::error!("a session change may not be seen by the other server yet: {e}");
        }
    }

    fn hold_deadlines(&self) -> bool {
        true
    }
}
