//! The production store: any number of Sigil nodes share one PostgreSQL.

use std::time::Duration;

use sqlx::postgres::PgPoolOptions;
use sqlx::{Pool, Postgres};

use super::StoreError;

pub struct PgStore {
    pub(crate) pool: Pool<Postgres>,
}

impl PgStore {
    pub async fn connect(url: &str) -> Result<PgStore, StoreError> {
        let pool = PgPoolOptions::new()
            .max_connections(16)
            .acquire_timeout(Duration::from_secs(10))
            .connect(url)
            .await?;
        Ok(PgStore { pool })
    }
}

super::backend::impl_store!(PgStore, Postgres, "./migrations/postgres");
super::login_backend::impl_login_store!(PgStore, Postgres);
