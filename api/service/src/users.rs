//! People who sign in (the web console): accounts with the API's roles, argon2id password
//! hashes, server-side sessions with a per-session CSRF token. A signed-in user acts as a
//! [`Principal`], the same value an API key yields, so every scope and role decision stays in
//! the domain functions that take it.
//!
//! Sessions: the cookie value is 256 random bits (hex); the table stores only its SHA-256,
//! so a copy of the database cannot be replayed as a session.

use std::sync::LazyLock;

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use serde::Serialize;
use sha2::{Digest, Sha256};
use sqlx::Row;

use crate::auth::{Action, Principal, Role};
use crate::{Result, Service, ServiceError};

/// How long a session lives after sign-in.
pub const SESSION_TTL_MS: i64 = 12 * 3600 * 1000;
/// Passwords longer than this are refused before hashing (hashing time is bounded).
pub const MAX_PASSWORD_BYTES: usize = 256;
pub const MIN_PASSWORD_CHARS: usize = 8;

/// Console languages; `en` is the default.
pub const LANGS: [&str; 2] = ["en", "zh"];

#[derive(Debug, Clone)]
pub struct NewUser {
    pub name: String,
    pub password: String,
    pub role: Role,
    /// The provider whose subtree a provider user sees.
    pub provider_id: Option<String>,
    /// The technician a technician user is (its jobs only).
    pub technician_id: Option<String>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct User {
    pub user_id: String,
    pub name: String,
    pub role: Role,
    pub provider_id: Option<String>,
    pub technician_id: Option<String>,
    pub lang: String,
}

/// A new session: the cookie value (shown once, never stored) and its CSRF token.
#[derive(Debug, Clone)]
pub struct SessionGrant {
    pub session_id: String,
    pub csrf_token: String,
    pub expires_at_ms: i64,
}

/// The user behind a live session.
#[derive(Debug, Clone)]
pub struct SignedIn {
    pub user: User,
    pub principal: Principal,
    pub csrf_token: String,
    pub expires_at_ms: i64,
}

fn sha256_hex(text: &str) -> String {
    hex::encode(Sha256::digest(text.as_bytes()))
}

fn random_hex(bytes: usize) -> Result<String> {
    let mut buf = vec![0u8; bytes];
    getrandom::fill(&mut buf).map_err(|e| ServiceError::Random(e.to_string()))?;
    Ok(hex::encode(buf))
}

/// An argon2id PHC string (default parameters: 19 MiB, 2 passes).
pub fn hash_password(password: &str) -> Result<String> {
    let mut salt = [0u8; 16];
    getrandom::fill(&mut salt).map_err(|e| ServiceError::Random(e.to_string()))?;
    let salt = SaltString::encode_b64(&salt).map_err(|e| ServiceError::Random(e.to_string()))?;
    argon2::Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| ServiceError::Random(format!("argon2: {e}")))
}

fn verify_password(password: &str, phc: &str) -> bool {
    PasswordHash::new(phc).is_ok_and(|h| {
        argon2::Argon2::default()
            .verify_password(password.as_bytes(), &h)
            .is_ok()
    })
}

/// Verified when the name is unknown, so an absent user costs the same time as a wrong
/// password (no probing for names).
static DUMMY_HASH: LazyLock<String> =
    LazyLock::new(|| hash_password("prognos-dummy-password").unwrap_or_default());

fn valid_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-@".contains(c))
}

/// 256 random bits, hex: for tokens outside a session (the sign-in form's CSRF cookie).
pub fn random_token() -> Result<String> {
    random_hex(32)
}

/// A generated password: 16 random bytes, hex (128 bits).
pub fn generate_password() -> Result<String> {
    random_hex(16)
}

const USER_COLS: &str = "u.user_id, u.name, u.role, u.provider_id, u.technician_id, u.lang";

fn user_row(r: &sqlx::sqlite::SqliteRow) -> Result<User> {
    let role: String = r.get(2);
    Ok(User {
        user_id: r.get(0),
        name: r.get(1),
        role: Role::parse(&role).ok_or(ServiceError::Unauthorized)?,
        provider_id: r.get(3),
        technician_id: r.get(4),
        lang: r.get(5),
    })
}

impl Service {
    /// Adds a person who may sign in. Admin only (`Action::ManageKeys`, like API keys).
    pub async fn create_user(&self, who: &Principal, new: &NewUser) -> Result<User> {
        who.require(Action::ManageKeys)?;
        if !valid_name(&new.name) {
            return Err(ServiceError::invalid(
                "name",
                "1 to 64 characters of letters, digits and . _ - @",
            ));
        }
        if new.password.chars().count() < MIN_PASSWORD_CHARS {
            return Err(ServiceError::invalid(
                "password",
                format!("at least {MIN_PASSWORD_CHARS} characters"),
            ));
        }
        if new.password.len() > MAX_PASSWORD_BYTES {
            return Err(ServiceError::invalid(
                "password",
                format!("at most {MAX_PASSWORD_BYTES} bytes"),
            ));
        }
        match (new.role, &new.provider_id, &new.technician_id) {
            (Role::Provider, None, _) => {
                return Err(ServiceError::invalid(
                    "provider_id",
                    "a provider user needs its provider",
                ));
            }
            (Role::Technician, _, None) => {
                return Err(ServiceError::invalid(
                    "technician_id",
                    "a technician user needs its technician",
                ));
            }
            (r, _, Some(_)) if r != Role::Technician => {
                return Err(ServiceError::invalid(
                    "technician_id",
                    "only a technician user is bound to a technician",
                ));
            }
            _ => {}
        }
        if let Some(p) = &new.provider_id {
            self.provider(p)
                .await
                .map_err(|_| ServiceError::invalid("provider_id", "unknown provider"))?;
        }
        if let Some(t) = &new.technician_id {
            self.technician(t)
                .await
                .map_err(|_| ServiceError::invalid("technician_id", "unknown technician"))?;
        }
        let password = new.password.clone();
        let hash = tokio::task::spawn_blocking(move || hash_password(&password))
            .await
            .map_err(|e| ServiceError::Random(format!("hashing task: {e}")))??;
        let user_id = crate::new_id("U")?;
        sqlx::query(
            "INSERT INTO users (user_id, name, password_hash, role, provider_id, technician_id,
                                lang, disabled, created_at_ms)
             VALUES ($1, $2, $3, $4, $5, $6, 'en', 0, $7)",
        )
        .bind(&user_id)
        .bind(&new.name)
        .bind(&hash)
        .bind(new.role.as_str())
        .bind(&new.provider_id)
        .bind(&new.technician_id)
        .bind(self.now_ms())
        .execute(self.pool())
        .await
        .map_err(|e| match &e {
            sqlx::Error::Database(d) if d.is_unique_violation() => {
                ServiceError::Conflict(format!("user {:?} already exists", new.name))
            }
            _ => ServiceError::Sql(e),
        })?;
        Ok(User {
            user_id,
            name: new.name.clone(),
            role: new.role,
            provider_id: new.provider_id.clone(),
            technician_id: new.technician_id.clone(),
            lang: "en".into(),
        })
    }

    /// Checks a name and password and opens a session; `Unauthorized` for any mismatch
    /// (the caller cannot tell an unknown name from a wrong password).
    pub async fn sign_in(&self, name: &str, password: &str) -> Result<SessionGrant> {
        if name.len() > 64 || password.len() > MAX_PASSWORD_BYTES {
            return Err(ServiceError::Unauthorized);
        }
        let row = sqlx::query(
            "SELECT user_id, password_hash FROM users WHERE name = $1 AND disabled = 0",
        )
        .bind(name)
        .fetch_optional(self.pool())
        .await?;
        let (user_id, phc) = match &row {
            Some(r) => (Some(r.get::<String, _>(0)), r.get::<String, _>(1)),
            None => (None, DUMMY_HASH.clone()),
        };
        let password = password.to_owned();
        let ok = tokio::task::spawn_blocking(move || verify_password(&password, &phc))
            .await
            .map_err(|e| ServiceError::Random(format!("hashing task: {e}")))?;
        let (true, Some(user_id)) = (ok, user_id) else {
            return Err(ServiceError::Unauthorized);
        };
        let now = self.now_ms();
        let session_id = random_hex(32)?;
        let csrf_token = random_hex(32)?;
        let expires_at_ms = now + SESSION_TTL_MS;
        sqlx::query("DELETE FROM sessions WHERE expires_at_ms <= $1")
            .bind(now)
            .execute(self.pool())
            .await?;
        sqlx::query(
            "INSERT INTO sessions (session_hash, user_id, csrf_token, created_at_ms, expires_at_ms)
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(sha256_hex(&session_id))
        .bind(&user_id)
        .bind(&csrf_token)
        .bind(now)
        .bind(expires_at_ms)
        .execute(self.pool())
        .await?;
        Ok(SessionGrant {
            session_id,
            csrf_token,
            expires_at_ms,
        })
    }

    /// The user and principal of a live session, or `Unauthorized` (unknown, expired,
    /// disabled user).
    pub async fn session(&self, session_id: &str) -> Result<SignedIn> {
        if session_id.len() != 64 || !session_id.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(ServiceError::Unauthorized);
        }
        let row = sqlx::query(&format!(
            "SELECT {USER_COLS}, s.csrf_token, s.expires_at_ms, p.path
             FROM sessions s JOIN users u ON u.user_id = s.user_id
             LEFT JOIN providers p ON p.provider_id = u.provider_id
             WHERE s.session_hash = $1 AND s.expires_at_ms > $2 AND u.disabled = 0"
        ))
        .bind(sha256_hex(session_id))
        .bind(self.now_ms())
        .fetch_optional(self.pool())
        .await?
        .ok_or(ServiceError::Unauthorized)?;
        let user = user_row(&row)?;
        let principal = Principal {
            key_id: format!("user:{}", user.name),
            role: user.role,
            provider_id: user.provider_id.clone(),
            provider_path: row.get(8),
            technician_id: user.technician_id.clone(),
        };
        Ok(SignedIn {
            user,
            principal,
            csrf_token: row.get(6),
            expires_at_ms: row.get(7),
        })
    }

    /// Ends a session (unknown ids are ignored: signing out twice is fine).
    pub async fn sign_out(&self, session_id: &str) -> Result<()> {
        sqlx::query("DELETE FROM sessions WHERE session_hash = $1")
            .bind(sha256_hex(session_id))
            .execute(self.pool())
            .await?;
        Ok(())
    }

    /// The console language of a user (`en` or `zh`).
    pub async fn set_user_lang(&self, user_id: &str, lang: &str) -> Result<()> {
        if !LANGS.contains(&lang) {
            return Err(ServiceError::invalid("lang", "expected en or zh"));
        }
        sqlx::query("UPDATE users SET lang = $2 WHERE user_id = $1")
            .bind(user_id)
            .bind(lang)
            .execute(self.pool())
            .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::super::testutil::service;
    use super::*;

    #[tokio::test]
    async fn passwords_are_hashed_sessions_expire_and_sign_out() {
        let (_d, svc, clock) = service().await;
        let admin = Principal::system("test");
        let u = svc
            .create_user(
                &admin,
                &NewUser {
                    name: "sam".into(),
                    password: "correct horse".into(),
                    role: Role::Scheduler,
                    provider_id: None,
                    technician_id: None,
                },
            )
            .await
            .unwrap();
        let stored: String = sqlx::query_scalar("SELECT password_hash FROM users")
            .fetch_one(svc.pool())
            .await
            .unwrap();
        assert!(stored.starts_with("$argon2id$") && !stored.contains("correct"));
        assert!(matches!(
            svc.sign_in("sam", "wrong horse").await,
            Err(ServiceError::Unauthorized)
        ));
        assert!(matches!(
            svc.sign_in("nobody", "correct horse").await,
            Err(ServiceError::Unauthorized)
        ));
        let g = svc.sign_in("sam", "correct horse").await.unwrap();
        assert_eq!(g.session_id.len(), 64);
        let s = svc.session(&g.session_id).await.unwrap();
        assert_eq!(s.user, u);
        assert_eq!(s.principal.role, Role::Scheduler);
        assert_eq!(s.csrf_token, g.csrf_token);
        // Only the hash of the session id is stored.
        let hash: String = sqlx::query_scalar("SELECT session_hash FROM sessions")
            .fetch_one(svc.pool())
            .await
            .unwrap();
        assert_ne!(hash, g.session_id);
        svc.sign_out(&g.session_id).await.unwrap();
        assert!(svc.session(&g.session_id).await.is_err());
        let g = svc.sign_in("sam", "correct horse").await.unwrap();
        clock.advance_secs(SESSION_TTL_MS / 1000 + 1);
        assert!(matches!(
            svc.session(&g.session_id).await,
            Err(ServiceError::Unauthorized)
        ));
        // Only an admin adds people; a scheduler may not.
        assert!(matches!(
            svc.create_user(
                &s.principal,
                &NewUser {
                    name: "eve".into(),
                    password: "long enough".into(),
                    role: Role::Admin,
                    provider_id: None,
                    technician_id: None,
                }
            )
            .await,
            Err(ServiceError::Forbidden(_))
        ));
        for (role, provider, tech) in [
            (Role::Provider, None, None),
            (Role::Technician, None, None),
            (Role::Scheduler, None, Some("t1")),
        ] {
            assert!(matches!(
                svc.create_user(
                    &admin,
                    &NewUser {
                        name: "x".into(),
                        password: "long enough".into(),
                        role,
                        provider_id: provider,
                        technician_id: tech.map(str::to_owned),
                    }
                )
                .await,
                Err(ServiceError::Validation { .. })
            ));
        }
    }
}
