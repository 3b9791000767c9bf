//! The schema's migrations, one set per component: the event store's (events, outbox, append
//! functions), the budget store's and the idempotency store's. Each component migrates its own
//! tables ([`crate::PgStore::migrate`], [`crate::PgBudgets::migrate`],
//! [`crate::PgIdempotency::migrate`]), so a host that keeps its events elsewhere creates only
//! the tables it uses.
//!
//! The sets share one history table (`_sqlx_migrations` in the schema) and one numbering; each
//! applies its own versions and leaves the others' alone, so a schema migrated whole by an
//! earlier release is already up to date for all three.

use std::borrow::Cow;

use otp_sms_core::StoreError;
use sqlx::migrate::{Migration, Migrator};
use sqlx::PgPool;

use crate::map_error;

/// Every migration, as embedded (`crates/postgres/migrations`).
pub static MIGRATOR: Migrator = sqlx::migrate!("./migrations");

/// Which component a schema object belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Component {
    /// Events, the outbox and the append functions.
    EventStore,
    /// Send budgets, slots and locks.
    Budgets,
    /// Idempotency records.
    Idempotency,
    /// Subscription checkpoints.
    Checkpoints,
}

impl Component {
    /// The component whose tables migration `version` creates or changes.
    pub fn of(version: i64) -> Self {
        match version {
            5 | 6 | 9 | 11 => Self::Budgets,
            8 => Self::Idempotency,
            12 => Self::Checkpoints,
            _ => Self::EventStore,
        }
    }

    /// This component's migrations, in order.
    pub fn migrations(self) -> Vec<Migration> {
        MIGRATOR
            .iter()
            .filter(|m| Self::of(m.version) == self)
            .cloned()
            .collect()
    }
}

/// Creates `schema` if needed and applies `component`'s migrations not yet applied to it.
/// Safe on every start and from several servers at once (a lock is held while migrating).
pub(crate) async fn migrate(
    pool: &PgPool,
    schema: &str,
    component: Component,
) -> Result<(), StoreError> {
    let migrator = Migrator {
        migrations: Cow::Owned(component.migrations()),
        // The other components' versions are in the same history.
        ignore_missing: true,
        ..Migrator::DEFAULT
    };
    let mut conn = pool.acquire().await.map_err(map_error)?;
    let schema = format!("\"{schema}\"");
    sqlx::query(&format!("CREATE SCHEMA IF NOT EXISTS {schema}"))
        .execute(&mut *conn)
        .await
        .map_err(map_error)?;
    sqlx::query(&format!("SET search_path TO {schema}"))
        .execute(&mut *conn)
        .await
        .map_err(map_error)?;
    let result = migrator.run_direct(&mut *conn).await;
    // The connection goes back to the pool: leave no session state behind.
    sqlx::query("RESET search_path")
        .execute(&mut *conn)
        .await
        .map_err(map_error)?;
    result.map_err(|e| match e {
        sqlx::migrate::MigrateError::Execute(e) => map_error(e),
        other => StoreError::Internal(other.to_string()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_migration_belongs_to_one_component_and_each_has_some() {
        let all: Vec<i64> = MIGRATOR.iter().map(|m| m.version).collect();
        let mut split: Vec<i64> = [
            Component::EventStore,
            Component::Budgets,
            Component::Idempotency,
            Component::Checkpoints,
        ]
        .into_iter()
        .flat_map(|c| {
            let versions: Vec<i64> = c.migrations().iter().map(|m| m.version).collect();
            assert!(!versions.is_empty(), "{c:?} has migrations");
            versions
        })
        .collect();
        split.sort();
        assert_eq!(split, all);
    }

    #[test]
    fn a_migration_touches_only_its_components_tables() {
        let owned = [
            (
                Component::EventStore,
                ["events", "outbox", "append_"].as_slice(),
            ),
            (
                Component::Budgets,
                ["budget_entries", "take_budget", "release_budget"].as_slice(),
            ),
            (Component::Idempotency, ["idempotency_keys"].as_slice()),
            (Component::Checkpoints, ["checkpoints"].as_slice()),
        ];
        for m in MIGRATOR.iter() {
            let sql: String = m
                .sql
                .lines()
                .filter(|l| !l.trim_start().starts_with("--"))
                .collect::<Vec<_>>()
                .join("\n");
            for (component, names) in owned {
                if component == Component::of(m.version) {
                    continue;
                }
                for name in names {
                    assert!(
                        !sql.contains(name),
                        "migration {} ({:?}) names `{name}` of {component:?}",
                        m.version,
                        Component::of(m.version)
                    );
                }
            }
        }
    }
}
