//! API keys and roles. A key is `prg_<key id>_<secret>`; only a SHA-256 of the secret is
//! stored (the secret is 256 random bits, so a fast hash is enough — see `registry.rs`), and the
//! comparison is constant-time. A provider key is scoped to its provider's subtree.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use sqlx::Row;
use subtle::ConstantTimeEq;

use super::{Result, Service, ServiceError};

#[derive(utoipa::ToSchema, Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Admin,
    Scheduler,
    Engineer,
    Technician,
    Provider,
}

impl Role {
    pub const ALL: [Role; 5] = [
        Role::Admin,
        Role::Scheduler,
        Role::Engineer,
        Role::Technician,
        Role::Provider,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Scheduler => "scheduler",
            Role::Engineer => "engineer",
            Role::Technician => "technician",
            Role::Provider => "provider",
        }
    }

    pub fn parse(s: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.as_str() == s)
    }
}

/// What a request wants to do; [`allowed`] is the role matrix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    ReadTickets,
    CreateTicket,
    Transition,
    CloseTicket,
    Dispatch,
    Parts,
    RegistryRead,
    RegistryWrite,
    ProviderWrite,
    Webhooks,
    SlaWrite,
    ManageKeys,
    /// Fleet-wide telemetry and reliability analytics.
    Analytics,
}

pub fn allowed(role: Role, action: Action) -> bool {
    use Action::*;
    match role {
        Role::Admin => true,
        Role::Scheduler => !matches!(action, ProviderWrite | SlaWrite | ManageKeys),
        Role::Engineer => matches!(
            action,
            ReadTickets | CreateTicket | RegistryRead | Analytics
        ),
        Role::Technician => matches!(
            action,
            ReadTickets | Transition | CloseTicket | Parts | RegistryRead
        ),
        Role::Provider => matches!(
            action,
            ReadTickets
                | CreateTicket
                | Transition
                | CloseTicket
                | Dispatch
                | Parts
                | RegistryRead
                | Webhooks
        ),
    }
}

/// Who is acting: an API key's role and, for provider keys, the subtree it may see; for
/// technician keys, the technician whose jobs it may see and move.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Principal {
    pub key_id: String,
    pub role: Role,
    pub provider_id: Option<String>,
    /// `/oem/agent/provider/` of a provider key: it sees objects whose provider path starts so.
    /// A technician key carries its technician's provider path (for the registry it may read).
    pub provider_path: Option<String>,
    /// The technician a technician key belongs to.
    pub technician_id: Option<String>,
}

/// A scope that no provider path can start with (paths start with `/`): a provider key
/// without a provider, or a technician key without a technician, sees nothing.
const NOTHING: &str = "!";

/// The SQL condition "`col` lies in the subtree `param`" (`param` NULL: everywhere). An exact
/// prefix comparison — never `LIKE`, whose `_` matches any character and which ignores ASCII
/// case — on paths that end in `/`, so `/oem/sp-1/` never contains `/oem/sp-10/`.
pub(crate) fn within(col: &str, param: &str) -> String {
    format!("({param} IS NULL OR substr({col}, 1, length({param})) = {param})")
}

impl Principal {
    /// The service itself (alert consumer, SLA timer): unrestricted.
    pub fn system(name: &str) -> Principal {
        Principal {
            key_id: format!("system:{name}"),
            role: Role::Admin,
            provider_id: None,
            provider_path: None,
            technician_id: None,
        }
    }

    /// How the audit trail names this actor.
    pub fn actor(&self) -> String {
        if self.key_id.starts_with("system:") {
            self.key_id.clone()
        } else {
            format!("{}:{}", self.role.as_str(), self.key_id)
        }
    }

    pub fn require(&self, action: Action) -> Result<()> {
        if allowed(self.role, action) {
            Ok(())
        } else {
            Err(ServiceError::Forbidden(format!(
                "the {} role may not do this",
                self.role.as_str()
            )))
        }
    }

    /// The subtree filter for queries: `Some(path)` for provider keys.
    pub fn scope(&self) -> Option<&str> {
        match self.role {
            Role::Provider => Some(self.provider_path.as_deref().unwrap_or(NOTHING)),
            _ => None,
        }
    }

    /// The job filter for queries: `Some(technician id)` for technician keys (a key without
    /// a technician gets an id no technician has).
    pub fn technician(&self) -> Option<&str> {
        match self.role {
            Role::Technician => Some(self.technician_id.as_deref().unwrap_or(NOTHING)),
            _ => None,
        }
    }

    /// The provider subtree whose registry (providers) this key reads: a provider key's own,
    /// a technician key's provider's.
    pub fn registry_scope(&self) -> Option<&str> {
        match self.role {
            Role::Provider | Role::Technician => {
                Some(self.provider_path.as_deref().unwrap_or(NOTHING))
            }
            _ => None,
        }
    }

    /// True when this principal sees only part of the service (a provider's subtree, a
    /// technician's own jobs).
    pub fn is_scoped(&self) -> bool {
        self.scope().is_some() || self.bound_technician().is_some()
    }

    /// The technician a technician-bound principal is limited to.
    pub fn bound_technician(&self) -> Option<&str> {
        match self.role {
            Role::Technician => self.technician_id.as_deref(),
            _ => None,
        }
    }

    /// True when an object owned by the provider at `path` is visible.
    pub fn sees(&self, path: Option<&str>) -> bool {
        match self.scope() {
            None => true,
            Some(scope) => path.is_some_and(|p| p.starts_with(scope)),
        }
    }

    /// True when a ticket owned by the provider at `provider_path` and assigned to
    /// `technician_id` is visible: a provider sees its subtree's tickets, a technician its
    /// own jobs, everyone else every ticket.
    pub fn sees_ticket(&self, provider_path: Option<&str>, technician_id: Option<&str>) -> bool {
        if !self.sees(provider_path) {
            return false;
        }
        match self.technician() {
            None => true,
            Some(me) => technician_id == Some(me),
        }
    }
}

/// A request for an API key. A `provider` key needs `provider_id` and no `technician_id`; a
/// `technician` key needs `technician_id` (and `provider_id`, if given, is its provider); the
/// other roles take neither. Breaking that is a 422 naming the field; an unknown provider or
/// technician, or a technician of another provider, is a 409.
#[derive(utoipa::ToSchema, Debug, Clone, Deserialize)]
pub struct NewApiKey {
    pub role: Role,
    /// The provider whose subtree a `provider` key sees (required for that role; for a
    /// technician key, it must be the technician's provider; no other role takes one).
    #[schema(pattern = "^[A-Za-z0-9._-]{1,64}$")]
    pub provider_id: Option<String>,
    /// The technician a `technician` key belongs to (required for that role; no other role
    /// takes one).
    #[schema(pattern = "^[A-Za-z0-9._-]{1,64}$")]
    pub technician_id: Option<String>,
    /// A note on who holds the key.
    #[schema(max_length = 200)]
    pub label: Option<String>,
}

impl NewApiKey {
    /// A key of `role` with no provider, technician or label.
    pub fn of(role: Role) -> NewApiKey {
        NewApiKey {
            role,
            provider_id: None,
            technician_id: None,
            label: None,
        }
    }

    pub fn provider(mut self, provider_id: &str) -> NewApiKey {
        self.provider_id = Some(provider_id.to_owned());
        self
    }

    pub fn technician(mut self, technician_id: &str) -> NewApiKey {
        self.technician_id = Some(technician_id.to_owned());
        self
    }

    pub fn label(mut self, label: &str) -> NewApiKey {
        self.label = Some(label.to_owned());
        self
    }
}

#[derive(utoipa::ToSchema, Debug, Clone, Serialize)]
pub struct IssuedKey {
    pub key_id: String,
    /// The full key; shown once, never stored.
    pub key: String,
    pub role: Role,
    pub provider_id: Option<String>,
    pub technician_id: Option<String>,
}

fn hash(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

impl Service {
    /// Issues a key (admin only). A provider key needs its provider; a technician key needs
    /// its technician (and is scoped to that technician's provider); no other role takes
    /// either.
    pub async fn create_api_key(&self, who: &Principal, new: &NewApiKey) -> Result<IssuedKey> {
        who.require(Action::ManageKeys)?;
        let role = new.role;
        if let Some(label) = &new.label
            && label.len() > 200
        {
            return Err(ServiceError::invalid("label", "at most 200 bytes"));
        }
        let (provider_id, technician_id) = match role {
            Role::Provider => {
                if new.technician_id.is_some() {
                    return Err(ServiceError::invalid(
                        "technician_id",
                        "only a technician key belongs to a technician",
                    ));
                }
                let p = new.provider_id.as_deref().ok_or_else(|| {
                    ServiceError::invalid("provider_id", "a provider key needs its provider")
                })?;
                self.provider(p)
                    .await
                    .map_err(|_| ServiceError::unknown("provider_id", "provider", p))?;
                (Some(p.to_owned()), None)
            }
            Role::Technician => {
                let t = new.technician_id.as_deref().ok_or_else(|| {
                    ServiceError::invalid("technician_id", "a technician key needs its technician")
                })?;
                let tech = self
                    .technician(t)
                    .await
                    .map_err(|_| ServiceError::unknown("technician_id", "technician", t))?;
                if new
                    .provider_id
                    .as_deref()
                    .is_some_and(|p| p != tech.provider_id)
                {
                    return Err(ServiceError::Conflict(format!(
                        "provider_id: technician {t} works for another provider"
                    )));
                }
                (Some(tech.provider_id), Some(tech.technician_id))
            }
            _ => {
                if new.provider_id.is_some() {
                    return Err(ServiceError::invalid(
                        "provider_id",
                        "only a provider key is scoped to a provider",
                    ));
                }
                if new.technician_id.is_some() {
                    return Err(ServiceError::invalid(
                        "technician_id",
                        "only a technician key belongs to a technician",
                    ));
                }
                (None, None)
            }
        };
        let mut id = [0u8; 6];
        let mut secret = [0u8; 32];
        getrandom::fill(&mut id).map_err(|e| ServiceError::Random(e.to_string()))?;
        getrandom::fill(&mut secret).map_err(|e| ServiceError::Random(e.to_string()))?;
        let key_id = hex::encode(id);
        let secret = hex::encode(secret);
        sqlx::query(
            "INSERT INTO api_keys (key_id, key_hash, role, provider_id, technician_id, label,
                created_at_ms, revoked)
             VALUES ($1, $2, $3, $4, $5, $6, $7, 0)",
        )
        .bind(&key_id)
        .bind(hash(&secret))
        .bind(role.as_str())
        .bind(&provider_id)
        .bind(&technician_id)
        .bind(&new.label)
        .bind(self.now_ms())
        .execute(self.pool())
        .await?;
        Ok(IssuedKey {
            key: format!("prg_{key_id}_{secret}"),
            key_id,
            role,
            provider_id,
            technician_id,
        })
    }

    pub async fn revoke_api_key(&self, key_id: &str) -> Result<()> {
        let n = sqlx::query("UPDATE api_keys SET revoked = 1 WHERE key_id = $1")
            .bind(key_id)
            .execute(self.pool())
            .await?
            .rows_affected();
        if n == 0 {
            return Err(ServiceError::not_found("api key", key_id));
        }
        Ok(())
    }

    /// The principal behind a presented key, or `Unauthorized`. Fails closed: a provider key
    /// whose provider, or a technician key whose technician, is gone is no key at all.
    pub async fn authenticate(&self, presented: &str) -> Result<Principal> {
        let mut parts = presented.trim().splitn(3, '_');
        let (Some("prg"), Some(key_id), Some(secret)) = (parts.next(), parts.next(), parts.next())
        else {
            return Err(ServiceError::Unauthorized);
        };
        let row = sqlx::query(
            "SELECT k.key_hash, k.role, k.provider_id, p.path, k.technician_id, t.technician_id
             FROM api_keys k
             LEFT JOIN providers p ON p.provider_id = k.provider_id
             LEFT JOIN technicians t ON t.technician_id = k.technician_id
             WHERE k.key_id = $1 AND k.revoked = 0",
        )
        .bind(key_id)
        .fetch_optional(self.pool())
        .await?
        .ok_or(ServiceError::Unauthorized)?;
        let stored: String = row.get(0);
        if !bool::from(hash(secret).as_bytes().ct_eq(stored.as_bytes())) {
            return Err(ServiceError::Unauthorized);
        }
        let role = Role::parse(&row.get::<String, _>(1)).ok_or(ServiceError::Unauthorized)?;
        let provider_id: Option<String> = row.get(2);
        let provider_path: Option<String> = row.get(3);
        let technician_id: Option<String> = row.get(4);
        let technician_exists: Option<String> = row.get(5);
        if provider_id.is_some() && provider_path.is_none()
            || technician_id.is_some() && technician_exists.is_none()
        {
            return Err(ServiceError::Unauthorized);
        }
        Ok(Principal {
            key_id: key_id.to_owned(),
            role,
            provider_id,
            provider_path,
            technician_id,
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::super::testutil::service;
    use super::*;
    use crate::network::{NewProvider, ProviderKind};

    #[tokio::test]
    async fn keys_verify_hashed_and_revocable() {
        let (_d, svc, _c) = service().await;
        svc.create_provider(
            &crate::auth::Principal::system("test"),
            &NewProvider {
                provider_id: Some("oem".into()),
                name: "OEM".into(),
                kind: ProviderKind::Oem,
                parent_id: None,
                regions: vec![],
            },
        )
        .await
        .unwrap();
        let k = svc
            .create_api_key(
                &crate::auth::Principal::system("test"),
                &NewApiKey::of(Role::Provider).provider("oem"),
            )
            .await
            .unwrap();
        let p = svc.authenticate(&k.key).await.unwrap();
        assert_eq!(p.role, Role::Provider);
        assert_eq!(p.provider_path.as_deref(), Some("/oem/"));
        let stored: String = sqlx::query_scalar("SELECT key_hash FROM api_keys")
            .fetch_one(svc.pool())
            .await
            .unwrap();
        assert!(!k.key.contains(&stored));
        let last = if k.key.ends_with('0') { '1' } else { '0' };
        let tampered = format!("{}{last}", &k.key[..k.key.len() - 1]);
        assert!(matches!(
            svc.authenticate(&tampered).await,
            Err(ServiceError::Unauthorized)
        ));
        assert!(matches!(
            svc.authenticate("Bearer nonsense").await,
            Err(ServiceError::Unauthorized)
        ));
        assert!(matches!(
            svc.create_api_key(
                &crate::auth::Principal::system("test"),
                &NewApiKey::of(Role::Provider)
            )
            .await,
            Err(ServiceError::Validation { .. })
        ));
        svc.revoke_api_key(&k.key_id).await.unwrap();
        assert!(svc.authenticate(&k.key).await.is_err());
    }

    #[test]
    fn role_matrix() {
        use Action::*;
        assert!(allowed(Role::Admin, ManageKeys));
        assert!(!allowed(Role::Scheduler, ManageKeys));
        assert!(allowed(Role::Scheduler, Dispatch));
        assert!(!allowed(Role::Engineer, Transition));
        assert!(!allowed(Role::Technician, Dispatch));
        assert!(allowed(Role::Provider, Dispatch));
        assert!(!allowed(Role::Provider, RegistryWrite));
        let p = Principal {
            key_id: "k".into(),
            role: Role::Provider,
            provider_id: Some("a".into()),
            provider_path: Some("/oem/a/".into()),
            technician_id: None,
        };
        assert!(p.sees(Some("/oem/a/sp/")));
        assert!(!p.sees(Some("/oem/b/")));
        assert!(!p.sees(None));
        assert!(Principal::system("x").sees(None));
    }
}
