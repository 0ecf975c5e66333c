//! A throwaway PostgreSQL server in a directory of its own: what the benchmark's single-node
//! anchor runs on, and each participant with `--store postgres` ([`crate::participant::xa`]). Debian's `postgresql`
//! package provides the binaries; `.ci/run` installs it where it is missing.
//!
//! The server is `initdb`'d on first use into `DIR/pgdata`, listens on a loopback port (chosen
//! once, kept in `DIR/port`) and on a Unix socket in `DIR`, trusts local connections (it is
//! reachable from this machine only), and keeps `fsync` and synchronous commit on, so it
//! makes the same durability promise as our sled stores. PostgreSQL refuses to run as root:
//! under root it runs as the `postgres` system user (which Debian's package creates), and the
//! directory is handed to that user. Its postmaster gets SIGKILL when the process that
//! started it dies (PR_SET_PDEATHSIG), so a throwaway server never outlives its owner.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context;

/// The database user the servers are made with.
pub const USER: &str = "distlab";

pub struct Postgres {
    dir: PathBuf,
    child: Option<tokio::process::Child>,
    pub port: u16,
}

/// Where the PostgreSQL programs are: `pg_config --bindir`, else the newest
/// `/usr/lib/postgresql/N/bin` (Debian puts them there, off the PATH).
fn bin_dir() -> anyhow::Result<PathBuf> {
    if let Ok(out) = std::process::Command::new("pg_config")
        .arg("--bindir")
        .output()
        && out.status.success()
    {
        let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        if dir.join("postgres").exists() {
            return Ok(dir);
        }
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let version = e.file_name().to_string_lossy().parse().ok()?;
            Some((version, e.path().join("bin")))
        })
        .filter(|(_, bin)| bin.join("postgres").exists() && bin.join("initdb").exists())
        .collect();
    versions.sort();
    versions.pop().map(|(_, bin)| bin).ok_or_else(|| {
        anyhow::anyhow!(
            "PostgreSQL is not installed (no postgres and initdb under /usr/lib/postgresql/N/bin \
             or pg_config --bindir): apt-get install postgresql"
        )
    })
}

/// Whether PostgreSQL's programs are on this machine.
pub fn installed() -> bool {
    bin_dir().is_ok()
}

/// The user to run the server as: this one, or `postgres` under root.
fn server_user() -> anyhow::Result<Option<nix::unistd::User>> {
    if !nix::unistd::geteuid().is_root() {
        return Ok(None);
    }
    nix::unistd::User::from_name("postgres")
        .context("looking up the postgres user")?
        .map(Some)
        .ok_or_else(|| {
            anyhow::anyhow!(
                "running as root, and PostgreSQL refuses to: it runs as the postgres user, which \
                 does not exist here (Debian's postgresql package creates it)"
            )
        })
}

/// Hands `path` (and, for a directory, everything under it) to `user`.
fn hand_over(path: &Path, user: &nix::unistd::User) -> anyhow::Result<()> {
    nix::unistd::chown(path, Some(user.uid), Some(user.gid))
        .with_context(|| format!("giving {} to {}", path.display(), user.name))?;
    if path.is_dir() {
        for entry in std::fs::read_dir(path)? {
            hand_over(&entry?.path(), user)?;
        }
    }
    Ok(())
}

/// A command for a PostgreSQL program, run as `user` when given.
fn command(program: PathBuf, user: Option<&nix::unistd::User>) -> tokio::process::Command {
    let mut command = tokio::process::Command::new(program);
    if let Some(user) = user {
        command.uid(user.uid.as_raw()).gid(user.gid.as_raw());
    }
    command.env("LC_ALL", "C");
    command
}

impl Postgres {
    /// Starts the server in `dir` (making it the first time) and waits until it answers.
    pub async fn start(dir: &Path) -> anyhow::Result<Postgres> {
        let bin = bin_dir()?;
        let user = server_user()?;
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let dir = dir
            .canonicalize()
            .with_context(|| format!("resolving {}", dir.display()))?;
        let data = dir.join("pgdata");
        if let Some(user) = &user {
            hand_over(&dir, user)?;
        }
        if !data.join("PG_VERSION").exists() {
            let out = command(bin.join("initdb"), user.as_ref())
                .arg("-D")
                .arg(&data)
                .args(["-U", USER, "--auth=trust", "-E", "UTF8", "--no-sync"])
                .output()
                .await
                .context("running initdb")?;
            anyhow::ensure!(
                out.status.success(),
                "initdb {} failed: {}",
                data.display(),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        let port_file = dir.join("port");
        let port = match std::fs::read_to_string(&port_file) {
            Ok(text) => text
                .trim()
                .parse()
                .with_context(|| format!("{}: {text:?} is not a port", port_file.display()))?,
            Err(_) => {
                let port = std::net::TcpListener::bind("127.0.0.1:0")?
                    .local_addr()?
                    .port();
                std::fs::write(&port_file, port.to_string())?;
                port
            }
        };
        let log = dir.join("postgres.log");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let mut server = command(bin.join("postgres"), user.as_ref());
            server
                .arg("-D")
                .arg(&data)
                .args(["-c", "listen_addresses=127.0.0.1", "-p", &port.to_string()])
                .arg("-c")
                .arg(format!("unix_socket_directories={}", dir.display()))
                .args([
                    "-c",
                    "max_connections=200",
                    "-c",
                    "max_prepared_transactions=200",
                    "-c",
                    "shared_buffers=64MB",
                    "-c",
                    "log_lock_waits=on",
                    "-c",
                    "log_min_duration_statement=200",
                    "-c",
                    "fsync=on",
                    "-c",
                    "synchronous_commit=on",
                ]);
            // Its own process group, SIGKILLed when the thread that started it dies or the
            // handle drops (the user change comes before, so it does not clear that).
            let child = distlab_runtime::launch::spawn_program(server, &log)?;
            let mut server = Postgres {
                dir: dir.clone(),
                child: Some(child),
                port,
            };
            match server.answers(deadline).await? {
                true => return Ok(server),
                // Exited at once: after a kill -9 of the server's owner the old server's
                // processes may still be going (its shared memory "still in use"): again.
                false => tokio::time::sleep(Duration::from_millis(300)).await,
            }
        }
    }

    /// Waits until the server answers (true) or exits (false, before the deadline).
    async fn answers(&mut self, deadline: Instant) -> anyhow::Result<bool> {
        let log = self.dir.join("postgres.log");
        loop {
            if self.connect().await.is_ok() {
                return Ok(true);
            }
            if let Some(child) = self.child.as_mut()
                && let Some(status) = child.try_wait()?
            {
                anyhow::ensure!(
                    Instant::now() < deadline,
                    "postgres exited ({status}) before answering; see {}",
                    log.display()
                );
                tracing::warn!(%status, log = %log.display(), "postgres exited before answering: starting it again");
                return Ok(false);
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "postgres did not answer on 127.0.0.1:{} within 30 s; see {}",
                self.port,
                log.display()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// A connection to its `postgres` database (its task runs on the current runtime).
    pub async fn connect(&self) -> anyhow::Result<tokio_postgres::Client> {
        let config = format!(
            "host=127.0.0.1 port={} user={USER} dbname=postgres",
            self.port
        );
        let (client, connection) = tokio_postgres::connect(&config, tokio_postgres::NoTls)
            .await
            .with_context(|| format!("connecting to PostgreSQL on 127.0.0.1:{}", self.port))?;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "a PostgreSQL connection ended");
            }
        });
        Ok(client)
    }

    /// Stops the server: SIGINT (a fast shutdown: open transactions roll back, prepared ones
    /// stay), SIGKILL after 10 s. Dropping it without stopping SIGKILLs it.
    pub async fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        if let Some(pid) = child.id() {
            let pid = nix::unistd::Pid::from_raw(pid as i32);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT);
        }
        if tokio::time::timeout(Duration::from_secs(10), child.wait())
            .await
            .is_err()
        {
            let _ = child.kill().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Skipped (with a note) where PostgreSQL is not installed; `.ci/run` installs it.
    #[tokio::test]
    async fn a_throwaway_server_starts_answers_and_restarts_on_its_data() {
        if bin_dir().is_err() {
            eprintln!("PostgreSQL is not installed: skipped");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let mut server = Postgres::start(dir.path()).await.unwrap();
        let client = server.connect().await.unwrap();
        client
            .batch_execute(
                "CREATE TABLE t (k text PRIMARY KEY, v bigint); INSERT INTO t VALUES ('a', 1)",
            )
            .await
            .unwrap();
        let port = server.port;
        drop(client);
        server.stop().await;
        let server = Postgres::start(dir.path()).await.unwrap();
        assert_eq!(server.port, port, "the same port after a restart");
        let row = server
            .connect()
            .await
            .unwrap()
            .query_one("SELECT v FROM t WHERE k = 'a'", &[])
            .await
            .unwrap();
        assert_eq!(row.get::<_, i64>(0), 1);
    }
}
