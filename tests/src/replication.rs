//! Throwaway PostgreSQL clusters for failover tests: a primary and a streaming standby on
//! this machine, started with the local server binaries (as the `postgres` user when the
//! tests run as root, since `initdb` refuses root). Dropping a cluster stops it and removes
//! its directory.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::pg::{find_bin, free_port, uid};

const HOW_TO_FIX: &str = "failover tests need the PostgreSQL server binaries (initdb, pg_ctl, \
    pg_basebackup) on PATH or in /usr/lib/postgresql/*/bin, and, when run as root, a \
    `postgres` system user and `runuser`; install the postgresql server package";

/// One running cluster.
pub struct Cluster {
    /// Its data directory.
    pub data: PathBuf,
    /// Its port on 127.0.0.1.
    pub port: u16,
    root: PathBuf,
    stopped: bool,
}

/// Runs a server binary, as `postgres` when we are root.
fn server_command(name: &str) -> Command {
    let bin = find_bin(name).unwrap_or_else(|| panic!("{name} not found: {HOW_TO_FIX}"));
    if uid() == 0 {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(bin);
        c
    } else {
        Command::new(bin)
    }
}

fn run(mut c: Command, what: &str) {
    let out = c
        .output()
        .unwrap_or_else(|e| panic!("{what}: {e}: {HOW_TO_FIX}"));
    assert!(
        out.status.success(),
        "{what} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A directory the server user owns.
fn owned_dir(name: &str) -> PathBuf {
    let dir =
        std::env::temp_dir().join(format!("otp-sms-{name}-{}", uuid::Uuid::now_v7().simple()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    if uid() == 0 {
        run(
            {
                let mut c = Command::new("chown");
                c.arg("postgres:postgres").arg(&dir);
                c
            },
            "chown",
        );
    }
    dir
}

impl Cluster {
    /// A new primary (trust authentication, replication allowed from 127.0.0.1).
    pub fn primary() -> Self {
        let root = owned_dir("primary");
        let data = root.join("data");
        let mut init = server_command("initdb");
        init.args(["-A", "trust", "-U", "postgres", "-E", "UTF8", "-D"])
            .arg(&data);
        run(init, "initdb");
        let mut cluster = Self {
            data,
            port: free_port().expect("a free port"),
            root,
            stopped: true,
        };
        cluster.start();
        cluster
    }

    /// A streaming standby of `primary` (`pg_basebackup -R`), started.
    pub fn standby_of(primary: &Cluster) -> Self {
        let root = owned_dir("standby");
        let data = root.join("data");
        let mut backup = server_command("pg_basebackup");
        backup
            .args([
                "-h",
                "127.0.0.1",
                "-U",
                "postgres",
                "-X",
                "stream",
                "-R",
                "-p",
            ])
            .arg(primary.port.to_string())
            .arg("-D")
            .arg(&data);
        run(backup, "pg_basebackup");
        let mut cluster = Self {
            data,
            port: free_port().expect("a free port"),
            root,
            stopped: true,
        };
        cluster.start();
        cluster
    }

    fn start(&mut self) {
        let mut start = server_command("pg_ctl");
        start
            .args(["start", "-w", "-t", "60", "-D"])
            .arg(&self.data)
            .arg("-l")
            .arg(self.root.join("log"))
            .arg("-o")
            .arg(format!(
                "-p {} -c listen_addresses=127.0.0.1 -k {} -c max_connections=100 \
                 -c fsync=off -c wal_keep_size=64MB",
                self.port,
                self.root.display()
            ));
        run(start, "pg_ctl start");
        self.stopped = false;
    }

    /// `postgres://postgres@127.0.0.1:PORT/postgres`.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// Makes every commit wait for a standby (`synchronous_standby_names = '*'`).
    pub fn require_synchronous_standby(&self) {
        let mut c = server_command("psql");
        c.args(["-h", "127.0.0.1", "-U", "postgres", "-d", "postgres", "-p"])
            .arg(self.port.to_string())
            .args([
                "-c",
                "ALTER SYSTEM SET synchronous_standby_names = '*'",
                "-c",
                "SELECT pg_reload_conf()",
            ]);
        run(c, "psql");
    }

    /// Stops at once, as a crash would (`pg_ctl stop -m immediate`).
    pub fn crash(&mut self) {
        let mut stop = server_command("pg_ctl");
        stop.args(["stop", "-m", "immediate", "-D"]).arg(&self.data);
        run(stop, "pg_ctl stop");
        self.stopped = true;
    }

    /// Restarts at once, as after a crash (`pg_ctl restart -m immediate`): crash recovery
    /// runs, connections are cut.
    pub fn restart_immediately(&mut self) {
        self.crash();
        self.start();
    }

    /// Promotes a standby and waits until it takes writes.
    pub fn promote(&self) {
        let mut promote = server_command("pg_ctl");
        promote
            .args(["promote", "-w", "-t", "60", "-D"])
            .arg(&self.data);
        run(promote, "pg_ctl promote");
    }

    /// The directory holding the cluster (its log is `log` in it).
    pub fn root(&self) -> &Path {
        &self.root
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if !self.stopped {
            let mut stop = server_command("pg_ctl");
            stop.args(["stop", "-m", "immediate", "-D"]).arg(&self.data);
            let _ = stop.output();
        }
        let _ = std::fs::remove_dir_all(&self.root);
    }
}
