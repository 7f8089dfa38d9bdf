//! API keys: create (the whole key is returned once, only its digest is
//! kept), find by the public prefix a client offers, list, revoke, and note
//! when a key was last used.

use super::{Context, Store, StoreError, named, random_hex, with_pool};
use crate::api_key::{KeyDigest, KeyName, PlainKey, Scope};
use crate::clock::Millis;

/// A key as stored, without its secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKey {
    pub id: i64,
    pub name: String,
    pub scope: Scope,
    /// The key's public part (`hk_<prefix>_…`), to tell keys apart in lists.
    pub prefix: String,
    pub created_at: Millis,
    pub revoked_at: Option<Millis>,
    pub last_used_at: Option<Millis>,
}

/// A stored key and its digest, to check an offered key against.
#[derive(Debug, Clone)]
pub struct StoredKey {
    pub key: ApiKey,
    pub digest: KeyDigest,
}

/// What creating a key did.
#[derive(Debug)]
pub enum Created {
    /// The key's row, and the whole key: shown once, never stored.
    New(ApiKey, PlainKey),
    /// A key that is not revoked has the name already.
    NameTaken,
}

type Row = (i64, String, String, String, i64, Option<i64>, Option<i64>);

/// [`Row`] and the key's digest.
type HashedRow = (
    i64,
    String,
    String,
    String,
    i64,
    Option<i64>,
    Option<i64>,
    String,
);

const COLUMNS: &str = "id, name, scope, prefix, created_at, revoked_at, last_used_at";

fn api_key(r: Row) -> Result<ApiKey, sqlx::Error> {
    Ok(ApiKey {
        id: r.0,
        name: r.1,
        scope: named(&r.2)?,
        prefix: r.3,
        created_at: r.4,
        revoked_at: r.5,
        last_used_at: r.6,
    })
}

impl Store {
    /// Creates a key named `name` with `scope`, unless a key that is not
    /// revoked has that name.
    pub async fn create_api_key(
        &self,
        name: &KeyName,
        scope: Scope,
        now: Millis,
    ) -> Result<Created, StoreError> {
        const CONTEXT: &str = "creating an API key";
        // A prefix drawn twice (48 random bits) only costs another draw.
        for _ in 0..4 {
            let prefix = random_hex::<6>(CONTEXT)?;
            let secret = random_hex::<32>(CONTEXT)?;
            let plain = PlainKey::new(&prefix, &secret).ok_or_else(|| {
                StoreError::internal(CONTEXT, "random hex did not make a key (bug)")
            })?;
            let sql = format!(
                "INSERT INTO api_keys (name, scope, prefix, key_hash, created_at) \
                 VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING RETURNING {COLUMNS}"
            );
            let row: Option<Row> = with_pool!(self, |pool| {
                sqlx::query_as(sqlx::AssertSqlSafe(sql.as_str()))
                    .bind(name.as_str())
                    .bind(scope.as_str())
                    .bind(&prefix)
                    .bind(plain.digest().to_hex())
                    .bind(now)
                    .fetch_optional(pool)
                    .await
            })
            .context(CONTEXT)?;
            match row {
                Some(r) => return Ok(Created::New(api_key(r).context(CONTEXT)?, plain)),
                None if self.active_api_key(name.as_str()).await?.is_some() => {
                    return Ok(Created::NameTaken);
                }
                None => continue,
            }
        }
        Err(StoreError::internal(
            CONTEXT,
            "four random key prefixes were all taken",
        ))
    }

    /// The key whose public prefix is `prefix`, revoked or not.
    pub async fn api_key_by_prefix(&self, prefix: &str) -> Result<Option<StoredKey>, StoreError> {
        const CONTEXT: &str = "looking up an API key";
        let sql = format!("SELECT {COLUMNS}, key_hash FROM api_keys WHERE prefix = $1");
        let row: Option<HashedRow> = with_pool!(self, |pool| {
            sqlx::query_as(sqlx::AssertSqlSafe(sql.as_str()))
                .bind(prefix)
                .fetch_optional(pool)
                .await
        })
        .context(CONTEXT)?;
        let Some((id, name, scope, prefix, created, revoked, used, hash)) = row else {
            return Ok(None);
        };
        let r = (id, name, scope, prefix, created, revoked, used);
        let digest = KeyDigest::from_hex(&hash).ok_or_else(|| {
            StoreError::internal(CONTEXT, format!("key {} has a malformed digest", r.1))
        })?;
        let key = api_key(r).context(CONTEXT)?;
        Ok(Some(StoredKey { key, digest }))
    }

    /// The key named `name` that is not revoked.
    pub async fn active_api_key(&self, name: &str) -> Result<Option<ApiKey>, StoreError> {
        const CONTEXT: &str = "looking up an API key by name";
        let sql = format!("SELECT {COLUMNS} FROM api_keys WHERE name = $1 AND revoked_at IS NULL");
        let row: Option<Row> = with_pool!(self, |pool| {
            sqlx::query_as(sqlx::AssertSqlSafe(sql.as_str()))
                .bind(name)
                .fetch_optional(pool)
                .await
        })
        .context(CONTEXT)?;
        row.map(api_key).transpose().context(CONTEXT)
    }

    /// Every key, revoked ones too, oldest first.
    pub async fn api_keys(&self) -> Result<Vec<ApiKey>, StoreError> {
        const CONTEXT: &str = "listing API keys";
        let sql = format!("SELECT {COLUMNS} FROM api_keys ORDER BY created_at, id");
        let rows: Vec<Row> = with_pool!(self, |pool| {
            sqlx::query_as(sqlx::AssertSqlSafe(sql.as_str()))
                .fetch_all(pool)
                .await
        })
        .context(CONTEXT)?;
        rows.into_iter()
            .map(api_key)
            .collect::<Result<_, _>>()
            .context(CONTEXT)
    }

    /// Revokes the key named `name` that is not revoked yet; `None` when there
    /// is none. From the next request on it is refused.
    pub async fn revoke_api_key(
        &self,
        name: &str,
        now: Millis,
    ) -> Result<Option<ApiKey>, StoreError> {
        const CONTEXT: &str = "revoking an API key";
        let sql = format!(
            "UPDATE api_keys SET revoked_at = $2 WHERE name = $1 AND revoked_at IS NULL \
             RETURNING {COLUMNS}"
        );
        let row: Option<Row> = with_pool!(self, |pool| {
            sqlx::query_as(sqlx::AssertSqlSafe(sql.as_str()))
                .bind(name)
                .bind(now)
                .fetch_optional(pool)
                .await
        })
        .context(CONTEXT)?;
        row.map(api_key).transpose().context(CONTEXT)
    }

    /// Records that key `id` was used at `now` (the caller decides how often).
    pub async fn touch_api_key(&self, id: i64, now: Millis) -> Result<(), StoreError> {
        let _gate = self.write_gate().await;
        with_pool!(self, |pool| {
            sqlx::query("UPDATE api_keys SET last_used_at = $2 WHERE id = $1")
                .bind(id)
                .bind(now)
                .execute(pool)
                .await
                .map(|_| ())
        })
        .context("noting an API key's use")?;
        Ok(())
    }
}
