//! `cargo run -p otp-sms-example-host [-- --postgres [URL]] [--listen ADDR]`: the host on the
//! memory store, or on PostgreSQL (the URL, else `DATABASE_URL`) with budgets and idempotency
//! records shared through it. Codes go through Twilio when `TWILIO_ACCOUNT_SID`,
//! `TWILIO_AUTH_TOKEN` and `TWILIO_FROM` are set, else they are printed.

use std::sync::Arc;

use otp_sms_core::{spawn_notifier, Event, EventStore, NotifierSettings};
use otp_sms_example_host::{app, sender, service, CountingStore, Directory, TwilioSettings};
use otp_sms_postgres::{PgBudgets, PgIdempotency, PgStore};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1).peekable();
    let (mut listen, mut postgres) = ("127.0.0.1:3000".to_owned(), None);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--listen" => listen = args.next().ok_or("--listen needs an address")?,
            "--postgres" => {
                let url = match args.next_if(|a| !a.starts_with("--")) {
                    Some(url) => url,
                    None => std::env::var("DATABASE_URL")
                        .map_err(|_| "--postgres needs a URL or DATABASE_URL")?,
                };
                postgres = Some(url);
            }
            other => return Err(format!("unknown argument {other}").into()),
        }
    }
    let directory = Arc::new(Directory::demo());
    let (store, service): (Arc<dyn EventStore<Event>>, _) = match postgres {
        None => {
            let store: Arc<dyn EventStore<Event>> =
                Arc::new(CountingStore::new(otp_sms_memory::MemoryStore::new()));
            (store.clone(), service(store, directory.clone()))
        }
        Some(url) => {
            let pool = otp_sms_postgres::pool_options().connect(&url).await?;
            let pg = PgStore::<Event>::new(pool.clone(), "acme_otp_sms")?;
            pg.migrate().await?;
            let store: Arc<dyn EventStore<Event>> = Arc::new(CountingStore::new(pg));
            // Shared by every replica of the host: budgets and idempotency records, each
            // migrating its own tables.
            let budgets = PgBudgets::new(pool.clone(), "acme_otp_sms")?;
            budgets.migrate().await?;
            let records = PgIdempotency::new(pool, "acme_otp_sms")?;
            records.migrate().await?;
            let service = service(store.clone(), directory.clone())
                .with_budget_store(Arc::new(budgets))
                .with_idempotency_store(Arc::new(records));
            (store, service)
        }
    };
    let notifier = spawn_notifier(
        service.clone(),
        sender(TwilioSettings::from_env()?)?,
        NotifierSettings::default(),
    );
    let listener = tokio::net::TcpListener::bind(&listen).await?;
    println!("Acme identity on http://{}", listener.local_addr()?);
    axum::serve(listener, app(service, store, directory))
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    notifier.shutdown().await;
    Ok(())
}
