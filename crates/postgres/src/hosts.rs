//! Several database hosts in one URL, as libpq reads them, and the one to write to.
//!
//! sqlx connects to one host. A highly available PostgreSQL (a primary and streaming standbys
//! under a failover manager) is named by all its hosts, `postgres://u@db1:5432,db2:5432/app?
//! target_session_attrs=read-write`: each new connection tries them in order and keeps the
//! first that takes writes, so the store follows a promotion by reconnecting.

use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgConnection};
use sqlx::Connection;

use crate::map_error;
use otp_sms_core::StoreError;

/// Which host a connection must reach (libpq's `target_session_attrs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TargetSession {
    /// Any host that answers (the default with one host).
    Any,
    /// A host that takes writes: not in recovery, `transaction_read_only` off.
    ReadWrite,
    /// A host not in recovery.
    Primary,
}

/// The hosts of a connection URL, tried in order for each new connection.
///
/// ```
/// use otp_sms_postgres::{DatabaseHosts, TargetSession};
/// let hosts = DatabaseHosts::parse(
///     "postgres://app@db1:5432,db2:5433/otp?target_session_attrs=read-write",
/// )
/// .unwrap();
/// assert_eq!(hosts.len(), 2);
/// assert_eq!(hosts.target(), TargetSession::ReadWrite);
/// // One host, or a socket directory: the URL as sqlx reads it.
/// assert_eq!(DatabaseHosts::parse("postgres://app@db1/otp").unwrap().len(), 1);
/// assert_eq!(DatabaseHosts::parse("postgres:///otp?host=/run/postgresql").unwrap().len(), 1);
/// // A bad list is an error, not a guess.
/// assert!(DatabaseHosts::parse("postgres://db1,,db2/otp").is_err());
/// assert!(DatabaseHosts::parse("postgres://db1/otp?target_session_attrs=standby").is_err());
/// ```
#[derive(Debug, Clone)]
pub struct DatabaseHosts {
    candidates: Vec<PgConnectOptions>,
    target: TargetSession,
}

/// libpq's `target_session_attrs` values that the store supports.
fn target_session(value: &str) -> Result<TargetSession, StoreError> {
    match value {
        "any" => Ok(TargetSession::Any),
        "read-write" => Ok(TargetSession::ReadWrite),
        "primary" => Ok(TargetSession::Primary),
        other => Err(StoreError::Internal(format!(
            "database URL: target_session_attrs={other} is not supported \
             (any, read-write, primary)"
        ))),
    }
}

impl DatabaseHosts {
    /// Reads a `postgres://` URL whose host part may list several `host[:port]`, separated by
    /// commas, with an optional `target_session_attrs` of `any`, `read-write` or `primary`.
    pub fn parse(url: &str) -> Result<Self, StoreError> {
        let bad = |why: String| StoreError::Internal(format!("database URL: {why}"));
        let (scheme, rest) = url
            .split_once("://")
            .ok_or_else(|| bad("expected postgres://…".into()))?;
        let (before_query, query) = match rest.split_once('?') {
            Some((b, q)) => (b, Some(q)),
            None => (rest, None),
        };
        let (authority, path) =
            before_query.split_at(before_query.find('/').unwrap_or(before_query.len()));
        let (userinfo, hostlist) = match authority.rsplit_once('@') {
            Some((u, h)) => (Some(u), h),
            None => (None, authority),
        };
        let mut target = TargetSession::Any;
        let mut kept = Vec::new();
        for pair in query
            .into_iter()
            .flat_map(|q| q.split('&'))
            .filter(|p| !p.is_empty())
        {
            match pair.split_once('=') {
                Some(("target_session_attrs", value)) => target = target_session(value)?,
                _ => kept.push(pair),
            }
        }
        let query = if kept.is_empty() {
            String::new()
        } else {
            format!("?{}", kept.join("&"))
        };
        let userinfo = userinfo.map(|u| format!("{u}@")).unwrap_or_default();
        if !hostlist.contains(',') {
            // One host, or none in the authority (a socket directory in `?host=`): the URL
            // as sqlx reads it.
            let one = format!("{scheme}://{userinfo}{hostlist}{path}{query}");
            let options = PgConnectOptions::from_str(&one).map_err(|e| bad(e.to_string()))?;
            return Ok(Self {
                candidates: vec![options],
                target,
            });
        }
        let mut candidates = Vec::new();
        for host in hostlist.split(',') {
            if host.is_empty() {
                return Err(bad("an empty host in the host list".into()));
            }
            let one = format!("{scheme}://{userinfo}{host}{path}{query}");
            let options =
                PgConnectOptions::from_str(&one).map_err(|e| bad(format!("host `{host}`: {e}")))?;
            candidates.push(options);
        }
        Ok(Self { candidates, target })
    }

    /// How many hosts.
    pub fn len(&self) -> usize {
        self.candidates.len()
    }

    /// Whether there is no host (never, once parsed).
    pub fn is_empty(&self) -> bool {
        self.candidates.is_empty()
    }

    /// What a host must be.
    pub fn target(&self) -> TargetSession {
        self.target
    }

    /// The first host's options (what a pool starts with before [`Self::connect`] found one).
    pub fn first(&self) -> &PgConnectOptions {
        &self.candidates[0]
    }

    /// A connection to the first host, in order, that answers within `timeout` and is what
    /// [`Self::target`] asks for, with `adjust` applied to its options (server-side settings,
    /// say); and those options, so a pool can follow.
    pub async fn connect(
        &self,
        timeout: Duration,
        adjust: impl Fn(PgConnectOptions) -> PgConnectOptions,
    ) -> Result<(PgConnection, PgConnectOptions), StoreError> {
        let mut why = Vec::new();
        for candidate in &self.candidates {
            let options = adjust(candidate.clone());
            let host = format!("{}:{}", candidate.get_host(), candidate.get_port());
            match tokio::time::timeout(timeout, PgConnection::connect_with(&options)).await {
                Err(_) => why.push(format!("{host}: no answer within {timeout:?}")),
                Ok(Err(e)) => why.push(format!("{host}: {}", map_error(e))),
                Ok(Ok(mut conn)) => match self.accepts(&mut conn, timeout).await {
                    Ok(true) => return Ok((conn, candidate.clone())),
                    Ok(false) => why.push(format!("{host}: not a {:?} host", self.target)),
                    Err(e) => why.push(format!("{host}: {e}")),
                },
            }
        }
        Err(StoreError::Unavailable(format!(
            "no database host to write to: {}",
            why.join("; ")
        )))
    }

    /// Whether the host behind `pool` is still what [`Self::target`] asks for (a promoted
    /// standby took over, or the host stopped answering: then not).
    pub async fn pool_accepts(&self, pool: &sqlx::PgPool, timeout: Duration) -> bool {
        if self.target == TargetSession::Any {
            return true;
        }
        let check = sqlx::query_as::<_, (bool, String)>(CHECK).fetch_one(pool);
        match tokio::time::timeout(timeout, check).await {
            Ok(Ok((recovering, read_only))) => self.wanted(recovering, &read_only),
            _ => false,
        }
    }

    fn wanted(&self, recovering: bool, read_only: &str) -> bool {
        match self.target {
            TargetSession::Any => true,
            TargetSession::Primary => !recovering,
            TargetSession::ReadWrite => !recovering && read_only == "off",
        }
    }

    async fn accepts(
        &self,
        conn: &mut PgConnection,
        timeout: Duration,
    ) -> Result<bool, StoreError> {
        if self.target == TargetSession::Any {
            return Ok(true);
        }
        let check = sqlx::query_as::<_, (bool, String)>(CHECK).fetch_one(&mut *conn);
        let (recovering, read_only) = tokio::time::timeout(timeout, check)
            .await
            .map_err(|_| StoreError::Unavailable("no answer to the host check".into()))?
            .map_err(map_error)?;
        Ok(self.wanted(recovering, &read_only))
    }
}

/// What a host is: in recovery (a standby), and read-only by default.
const CHECK: &str = "SELECT pg_is_in_recovery(), current_setting('transaction_read_only')";
