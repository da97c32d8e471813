//! The service network: providers (OEM → agent → authorised provider), customers, sites,
//! devices, technicians with skills, the part catalogue, stock locations and stock levels.

use serde::{Deserialize, Serialize};
use sqlx::Row;
use sqlx::sqlite::SqliteRow;

use super::auth::{Action, Principal, Role};
use super::{Page, Paged, Result, Service, ServiceError, json_list, new_id, to_json};

fn non_empty(field: &str, value: &str) -> Result<()> {
    if value.trim().is_empty() {
        return Err(ServiceError::invalid(field, "must not be empty"));
    }
    Ok(())
}

fn valid_id(field: &str, value: &str) -> Result<()> {
    if value.is_empty()
        || value.len() > 64
        || !value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
    {
        return Err(ServiceError::invalid(
            field,
            "use 1-64 characters from A-Z a-z 0-9 - _ .",
        ));
    }
    Ok(())
}

fn lat_lon(lat: f64, lon: f64) -> Result<()> {
    if !(-90.0..=90.0).contains(&lat) {
        return Err(ServiceError::invalid("lat", "must be within -90..90"));
    }
    if !(-180.0..=180.0).contains(&lon) {
        return Err(ServiceError::invalid("lon", "must be within -180..180"));
    }
    Ok(())
}

fn id_or_new(id: &Option<String>, field: &str, prefix: &str) -> Result<String> {
    match id {
        Some(id) => {
            valid_id(field, id)?;
            Ok(id.clone())
        }
        None => new_id(prefix),
    }
}

fn duplicate(kind: &str, id: &str) -> impl FnOnce(sqlx::Error) -> ServiceError {
    let message = format!("{kind} {id:?} already exists");
    move |e| match e {
        sqlx::Error::Database(d) if d.is_unique_violation() => ServiceError::Conflict(message),
        other => other.into(),
    }
}

// ---------------------------------------------------------------- providers

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProviderKind {
    Oem,
    Agent,
    Provider,
}

impl ProviderKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ProviderKind::Oem => "oem",
            ProviderKind::Agent => "agent",
            ProviderKind::Provider => "provider",
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct NewProvider {
    pub provider_id: Option<String>,
    pub name: String,
    pub kind: ProviderKind,
    pub parent_id: Option<String>,
    #[serde(default)]
    pub regions: Vec<String>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Provider {
    pub provider_id: String,
    pub name: String,
    pub kind: String,
    pub parent_id: Option<String>,
    pub path: String,
    pub regions: Vec<String>,
}

fn provider_row(r: &SqliteRow) -> Provider {
    Provider {
        provider_id: r.get(0),
        name: r.get(1),
        kind: r.get(2),
        parent_id: r.get(3),
        path: r.get(4),
        regions: json_list(&r.get::<String, _>(5)),
    }
}

/// Joins a location (`l`) to the provider that owns it (`p`): directly, or through the
/// technician whose van it is. Unowned locations (the OEM's central stock) have no `p`.
const LOCATION_OWNER: &str = "LEFT JOIN technicians lt ON lt.technician_id = l.technician_id
     LEFT JOIN providers p ON p.provider_id = COALESCE(l.provider_id, lt.provider_id)";

const PROVIDER_COLS: &str = "provider_id, name, kind, parent_id, path, regions";

// ---------------------------------------------------------------- customers, sites, devices

#[derive(Debug, Clone, Deserialize)]
pub struct NewCustomer {
    pub customer_id: Option<String>,
    pub name: String,
    #[serde(default = "default_tier")]
    pub tier: String,
    #[serde(default)]
    pub vip: bool,
    pub contact_email: Option<String>,
}

fn default_tier() -> String {
    "standard".to_owned()
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Customer {
    pub customer_id: String,
    pub name: String,
    pub tier: String,
    pub vip: bool,
    pub contact_email: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct NewSite {
    pub site_id: Option<String>,
    pub customer_id: String,
    pub name: String,
    pub region: String,
    pub lat: f64,
    pub lon: f64,
    pub address: Option<String>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Site {
    pub site_id: String,
    pub customer_id: String,
    pub name: String,
    pub region: String,
    pub lat: f64,
    pub lon: f64,
    pub address: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct NewServiceDevice {
    pub device_id: String,
    pub site_id: String,
    pub serial: String,
    pub model: String,
    pub batch: Option<String>,
    pub firmware: Option<String>,
    pub install_date: Option<String>,
    pub warranty_end: Option<String>,
    /// 1 (low) … 3 (production-critical).
    #[serde(default = "default_criticality")]
    pub criticality: i64,
    #[serde(default)]
    pub vip: bool,
}

fn default_criticality() -> i64 {
    2
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ServiceDevice {
    pub device_id: String,
    pub site_id: String,
    pub serial: String,
    pub model: String,
    pub batch: Option<String>,
    pub firmware: Option<String>,
    pub install_date: Option<String>,
    pub warranty_end: Option<String>,
    pub criticality: i64,
    pub vip: bool,
}

/// A device with everything a ticket needs to know about where it is and whose it is.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct DeviceContext {
    pub device: ServiceDevice,
    pub site: Site,
    pub customer: Customer,
}

// ---------------------------------------------------------------- technicians

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Skill {
    pub skill: String,
    /// 1 (trainee) … 5 (expert).
    pub level: i64,
}

#[derive(Debug, Clone, Deserialize)]
pub struct NewTechnician {
    pub technician_id: Option<String>,
    pub provider_id: String,
    pub name: String,
    pub region: String,
    pub home_lat: f64,
    pub home_lon: f64,
    #[serde(default)]
    pub skills: Vec<Skill>,
    #[serde(default = "default_shift_start")]
    pub shift_start_min: i64,
    #[serde(default = "default_shift_end")]
    pub shift_end_min: i64,
    #[serde(default = "default_load")]
    pub max_daily_load: i64,
}

fn default_shift_start() -> i64 {
    8 * 60
}
fn default_shift_end() -> i64 {
    17 * 60
}
fn default_load() -> i64 {
    4
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Technician {
    pub technician_id: String,
    pub provider_id: String,
    pub name: String,
    pub region: String,
    pub home_lat: f64,
    pub home_lon: f64,
    pub shift_start_min: i64,
    pub shift_end_min: i64,
    pub max_daily_load: i64,
    pub active: bool,
    pub skills: Vec<Skill>,
    /// The stock location that is this technician's van.
    pub van_location_id: String,
}

// ---------------------------------------------------------------- parts and stock

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Part {
    pub sku: String,
    pub name: String,
    #[serde(default)]
    pub compatible_models: Vec<String>,
    #[serde(default)]
    pub fixes_modes: Vec<String>,
    pub unit_cost: f64,
    /// A (high value, tight control), B, C.
    pub abc_class: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LocationKind {
    Central,
    Regional,
    ServicePoint,
    Van,
}

impl LocationKind {
    pub fn as_str(self) -> &'static str {
        match self {
            LocationKind::Central => "central",
            LocationKind::Regional => "regional",
            LocationKind::ServicePoint => "service_point",
            LocationKind::Van => "van",
        }
    }

    pub fn parse(s: &str) -> Option<LocationKind> {
        [
            LocationKind::Central,
            LocationKind::Regional,
            LocationKind::ServicePoint,
            LocationKind::Van,
        ]
        .into_iter()
        .find(|k| k.as_str() == s)
    }

    /// Picking, packing and booking time before a transfer from here leaves.
    pub fn handling_hours(self) -> f64 {
        match self {
            LocationKind::Central => 12.0,
            LocationKind::Regional => 4.0,
            LocationKind::ServicePoint => 1.0,
            LocationKind::Van => 0.5,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct NewLocation {
    pub location_id: Option<String>,
    pub kind: LocationKind,
    pub name: String,
    pub region: Option<String>,
    pub lat: f64,
    pub lon: f64,
    pub provider_id: Option<String>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Location {
    pub location_id: String,
    pub kind: String,
    pub name: String,
    pub region: Option<String>,
    pub lat: f64,
    pub lon: f64,
    pub provider_id: Option<String>,
    pub technician_id: Option<String>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct StockLevel {
    pub location_id: String,
    pub sku: String,
    pub on_hand: i64,
    pub reserved: i64,
    pub available: i64,
    pub reorder_point: i64,
}

pub(crate) fn stock_row(r: &SqliteRow) -> StockLevel {
    let on_hand: i64 = r.get(2);
    let reserved: i64 = r.get(3);
    StockLevel {
        location_id: r.get(0),
        sku: r.get(1),
        on_hand,
        reserved,
        available: on_hand - reserved,
        reorder_point: r.get(4),
    }
}

/// Default reorder point of a part class at a location kind: A parts are expensive and kept
/// lean, C parts are cheap and kept plentiful.
pub fn default_reorder_point(abc: &str, kind: LocationKind) -> i64 {
    let base = match abc {
        "A" => 1,
        "B" => 2,
        _ => 4,
    };
    match kind {
        LocationKind::Central => base * 5,
        LocationKind::Regional => base * 2,
        LocationKind::ServicePoint => base,
        LocationKind::Van => 0,
    }
}

impl Service {
    // ------------------------------------------------------------ providers

    pub async fn create_provider(&self, who: &Principal, new: &NewProvider) -> Result<Provider> {
        who.require(Action::ProviderWrite)?;
        non_empty("name", &new.name)?;
        let id = id_or_new(&new.provider_id, "provider_id", "P")?;
        let parent = match (&new.parent_id, new.kind) {
            (None, ProviderKind::Oem) => None,
            (Some(_), ProviderKind::Oem) => {
                return Err(ServiceError::invalid("parent_id", "an OEM has no parent"));
            }
            (None, _) => {
                return Err(ServiceError::invalid(
                    "parent_id",
                    "agents and providers need a parent",
                ));
            }
            (Some(parent_id), kind) => {
                let parent = self.provider(parent_id).await.map_err(|e| match e {
                    ServiceError::NotFound { .. } => ServiceError::invalid(
                        "parent_id",
                        format!("unknown provider {parent_id:?}"),
                    ),
                    e => e,
                })?;
                let ok = match kind {
                    ProviderKind::Agent => parent.kind == "oem",
                    _ => parent.kind == "oem" || parent.kind == "agent",
                };
                if !ok {
                    return Err(ServiceError::invalid(
                        "parent_id",
                        format!("a {} cannot sit under a {}", kind.as_str(), parent.kind),
                    ));
                }
                Some(parent)
            }
        };
        let path = format!(
            "{}{id}/",
            parent.as_ref().map(|p| p.path.as_str()).unwrap_or("/")
        );
        sqlx::query(
            "INSERT INTO providers (provider_id, name, kind, parent_id, path, regions, created_at_ms)
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(&id)
        .bind(&new.name)
        .bind(new.kind.as_str())
        .bind(&new.parent_id)
        .bind(&path)
        .bind(to_json(&new.regions))
        .bind(self.now_ms())
        .execute(self.pool())
        .await
        .map_err(duplicate("provider", &id))?;
        self.provider(&id).await
    }

    pub async fn provider(&self, id: &str) -> Result<Provider> {
        sqlx::query(&format!(
            "SELECT {PROVIDER_COLS} FROM providers WHERE provider_id = $1"
        ))
        .bind(id)
        .fetch_optional(self.pool())
        .await?
        .map(|r| provider_row(&r))
        .ok_or_else(|| ServiceError::not_found("provider", id))
    }

    /// Providers, optionally only those under the subtree rooted at `path`.
    pub async fn providers(&self, who: &Principal) -> Result<Vec<Provider>> {
        who.require(Action::RegistryRead)?;
        let within = who.scope();
        let rows = sqlx::query(&format!(
            "SELECT {PROVIDER_COLS} FROM providers
             WHERE ($1 IS NULL OR path LIKE $1 || '%') ORDER BY path"
        ))
        .bind(within)
        .fetch_all(self.pool())
        .await?;
        Ok(rows.iter().map(provider_row).collect())
    }

    /// The deepest provider serving `region` (an authorised provider before its agent before
    /// the OEM), ties broken by id.
    pub async fn provider_for_region(&self, region: &str) -> Result<Option<Provider>> {
        let all = self.providers(&Principal::system("service")).await?;
        Ok(all
            .into_iter()
            .filter(|p| p.regions.iter().any(|r| r == region))
            .max_by(|a, b| {
                (
                    a.path.matches('/').count(),
                    std::cmp::Reverse(&a.provider_id),
                )
                    .cmp(&(
                        b.path.matches('/').count(),
                        std::cmp::Reverse(&b.provider_id),
                    ))
            }))
    }

    // ------------------------------------------------------------ customers, sites, devices

    pub async fn create_customer(&self, who: &Principal, new: &NewCustomer) -> Result<Customer> {
        who.require(Action::RegistryWrite)?;
        non_empty("name", &new.name)?;
        if !["standard", "premium"].contains(&new.tier.as_str()) {
            return Err(ServiceError::invalid("tier", "must be standard or premium"));
        }
        let id = id_or_new(&new.customer_id, "customer_id", "C")?;
        sqlx::query(
            "INSERT INTO customers (customer_id, name, tier, vip, contact_email, created_at_ms)
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(&id)
        .bind(&new.name)
        .bind(&new.tier)
        .bind(i64::from(new.vip))
        .bind(&new.contact_email)
        .bind(self.now_ms())
        .execute(self.pool())
        .await
        .map_err(duplicate("customer", &id))?;
        self.customer(who, &id).await
    }

    pub async fn customer(&self, who: &Principal, id: &str) -> Result<Customer> {
        who.require(Action::RegistryRead)?;
        if who.role == Role::Provider {
            return Err(ServiceError::Forbidden(
                "customer records are not shared with providers".into(),
            ));
        }
        sqlx::query(
            "SELECT customer_id, name, tier, vip, contact_email FROM customers WHERE customer_id = $1",
        )
        .bind(id)
        .fetch_optional(self.pool())
        .await?
        .map(|r| Customer {
            customer_id: r.get(0),
            name: r.get(1),
            tier: r.get(2),
            vip: r.get::<i64, _>(3) != 0,
            contact_email: r.get(4),
        })
        .ok_or_else(|| ServiceError::not_found("customer", id))
    }

    pub async fn create_site(&self, who: &Principal, new: &NewSite) -> Result<Site> {
        who.require(Action::RegistryWrite)?;
        non_empty("name", &new.name)?;
        non_empty("region", &new.region)?;
        lat_lon(new.lat, new.lon)?;
        self.customer(who, &new.customer_id)
            .await
            .map_err(|_| ServiceError::invalid("customer_id", "unknown customer"))?;
        let id = id_or_new(&new.site_id, "site_id", "S")?;
        sqlx::query(
            "INSERT INTO sites (site_id, customer_id, name, region, lat, lon, address)
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(&id)
        .bind(&new.customer_id)
        .bind(&new.name)
        .bind(&new.region)
        .bind(new.lat)
        .bind(new.lon)
        .bind(&new.address)
        .execute(self.pool())
        .await
        .map_err(duplicate("site", &id))?;
        self.site(&id).await
    }

    pub async fn site(&self, id: &str) -> Result<Site> {
        sqlx::query(
            "SELECT site_id, customer_id, name, region, lat, lon, address FROM sites WHERE site_id = $1",
        )
        .bind(id)
        .fetch_optional(self.pool())
        .await?
        .map(|r| Site {
            site_id: r.get(0),
            customer_id: r.get(1),
            name: r.get(2),
            region: r.get(3),
            lat: r.get(4),
            lon: r.get(5),
            address: r.get(6),
        })
        .ok_or_else(|| ServiceError::not_found("site", id))
    }

    pub async fn create_device(
        &self,
        who: &Principal,
        new: &NewServiceDevice,
    ) -> Result<ServiceDevice> {
        who.require(Action::RegistryWrite)?;
        valid_id("device_id", &new.device_id)?;
        non_empty("serial", &new.serial)?;
        non_empty("model", &new.model)?;
        if !(1..=3).contains(&new.criticality) {
            return Err(ServiceError::invalid("criticality", "must be 1, 2 or 3"));
        }
        self.site(&new.site_id)
            .await
            .map_err(|_| ServiceError::invalid("site_id", "unknown site"))?;
        // One asset row per device: a device registered for MQTT only is placed here; one
        // already placed in the network is a duplicate.
        let placed = sqlx::query(
            "INSERT INTO devices (device_id, site_id, serial, model, batch, firmware,
                install_date, warranty_end, criticality, vip, created_at_ms)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
             ON CONFLICT (device_id) DO UPDATE SET
                site_id = excluded.site_id, serial = excluded.serial, model = excluded.model,
                batch = excluded.batch, firmware = excluded.firmware,
                install_date = excluded.install_date, warranty_end = excluded.warranty_end,
                criticality = excluded.criticality, vip = excluded.vip
             WHERE devices.site_id IS NULL",
        )
        .bind(&new.device_id)
        .bind(&new.site_id)
        .bind(&new.serial)
        .bind(&new.model)
        .bind(&new.batch)
        .bind(&new.firmware)
        .bind(&new.install_date)
        .bind(&new.warranty_end)
        .bind(new.criticality)
        .bind(i64::from(new.vip))
        .bind(self.now_ms())
        .execute(self.pool())
        .await
        .map_err(duplicate("device", &new.device_id))?;
        if placed.rows_affected() == 0 {
            return Err(ServiceError::Conflict(format!(
                "device {:?} already exists",
                new.device_id
            )));
        }
        Ok(self.device_context(who, &new.device_id).await?.device)
    }

    pub async fn device_context(&self, who: &Principal, device_id: &str) -> Result<DeviceContext> {
        who.require(Action::RegistryRead)?;
        let r = sqlx::query(
            "SELECT d.device_id, d.site_id, d.serial, d.model, d.batch, d.firmware,
                    d.install_date, d.warranty_end, d.criticality, d.vip,
                    s.customer_id, s.name, s.region, s.lat, s.lon, s.address,
                    c.name, c.tier, c.vip, c.contact_email
             FROM devices d
             JOIN sites s ON s.site_id = d.site_id
             JOIN customers c ON c.customer_id = s.customer_id
             WHERE d.device_id = $1",
        )
        .bind(device_id)
        .fetch_optional(self.pool())
        .await?
        .ok_or_else(|| ServiceError::not_found("device", device_id))?;
        if who.scope().is_some() {
            // A provider sees the devices of the regions its subtree serves; others are
            // reported as absent, not as forbidden (no probing for device ids).
            let region: String = r.get(12);
            let path = self.provider_for_region(&region).await?.map(|p| p.path);
            if !who.sees(path.as_deref()) {
                return Err(ServiceError::not_found("device", device_id));
            }
        }
        Ok(DeviceContext {
            device: ServiceDevice {
                device_id: r.get(0),
                site_id: r.get(1),
                serial: r.get(2),
                model: r.get(3),
                batch: r.get(4),
                firmware: r.get(5),
                install_date: r.get(6),
                warranty_end: r.get(7),
                criticality: r.get(8),
                vip: r.get::<i64, _>(9) != 0,
            },
            site: Site {
                site_id: r.get(1),
                customer_id: r.get(10),
                name: r.get(11),
                region: r.get(12),
                lat: r.get(13),
                lon: r.get(14),
                address: r.get(15),
            },
            customer: Customer {
                customer_id: r.get(10),
                name: r.get(16),
                tier: r.get(17),
                vip: r.get::<i64, _>(18) != 0,
                contact_email: r.get(19),
            },
        })
    }

    // ------------------------------------------------------------ technicians

    /// Registers a technician and the van that is their stock location, in one transaction.
    pub async fn create_technician(
        &self,
        who: &Principal,
        new: &NewTechnician,
    ) -> Result<Technician> {
        who.require(Action::RegistryWrite)?;
        non_empty("name", &new.name)?;
        non_empty("region", &new.region)?;
        lat_lon(new.home_lat, new.home_lon)?;
        if !(0..=1440).contains(&new.shift_start_min)
            || !(0..=1440).contains(&new.shift_end_min)
            || new.shift_start_min >= new.shift_end_min
        {
            return Err(ServiceError::invalid(
                "shift_start_min",
                "shift must be minutes of the day with start < end",
            ));
        }
        if !(1..=50).contains(&new.max_daily_load) {
            return Err(ServiceError::invalid("max_daily_load", "must be 1..50"));
        }
        for (i, s) in new.skills.iter().enumerate() {
            non_empty(&format!("skills[{i}].skill"), &s.skill)?;
            if !(1..=5).contains(&s.level) {
                return Err(ServiceError::invalid(
                    &format!("skills[{i}].level"),
                    "must be 1..5",
                ));
            }
        }
        self.provider(&new.provider_id)
            .await
            .map_err(|_| ServiceError::invalid("provider_id", "unknown provider"))?;
        let id = id_or_new(&new.technician_id, "technician_id", "TECH")?;
        let van = format!("van-{id}");
        let mut tx = self.begin_write().await?;
        sqlx::query(
            "INSERT INTO technicians (technician_id, provider_id, name, region, home_lat, home_lon,
                shift_start_min, shift_end_min, max_daily_load, active, created_at_ms)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, 1, $10)",
        )
        .bind(&id)
        .bind(&new.provider_id)
        .bind(&new.name)
        .bind(&new.region)
        .bind(new.home_lat)
        .bind(new.home_lon)
        .bind(new.shift_start_min)
        .bind(new.shift_end_min)
        .bind(new.max_daily_load)
        .bind(self.now_ms())
        .execute(&mut *tx)
        .await
        .map_err(duplicate("technician", &id))?;
        for s in &new.skills {
            sqlx::query(
                "INSERT INTO technician_skills (technician_id, skill, level) VALUES ($1, $2, $3)
                 ON CONFLICT (technician_id, skill) DO UPDATE SET level = excluded.level",
            )
            .bind(&id)
            .bind(&s.skill)
            .bind(s.level)
            .execute(&mut *tx)
            .await?;
        }
        sqlx::query(
            "INSERT INTO stock_locations (location_id, kind, name, region, lat, lon, provider_id, technician_id)
             VALUES ($1, 'van', $2, $3, $4, $5, $6, $7)",
        )
        .bind(&van)
        .bind(format!("van of {}", new.name))
        .bind(&new.region)
        .bind(new.home_lat)
        .bind(new.home_lon)
        .bind(&new.provider_id)
        .bind(&id)
        .execute(&mut *tx)
        .await
        .map_err(duplicate("location", &van))?;
        tx.commit().await?;
        self.technician(&id).await
    }

    pub async fn technician(&self, id: &str) -> Result<Technician> {
        self.technicians_where(&Principal::system("service"), Some(id), Page::default())
            .await?
            .items
            .into_iter()
            .next()
            .ok_or_else(|| ServiceError::not_found("technician", id))
    }

    /// Technicians, optionally only one, or only those of providers under `within` (a path).
    pub async fn technicians_where(
        &self,
        who: &Principal,
        id: Option<&str>,
        page: Page,
    ) -> Result<Paged<Technician>> {
        who.require(Action::RegistryRead)?;
        let within = who.scope();
        let rows = sqlx::query(
            "SELECT t.technician_id, t.provider_id, t.name, t.region, t.home_lat, t.home_lon,
                    t.shift_start_min, t.shift_end_min, t.max_daily_load, t.active,
                    (SELECT l.location_id FROM stock_locations l WHERE l.technician_id = t.technician_id)
             FROM technicians t JOIN providers p ON p.provider_id = t.provider_id
             WHERE ($1 IS NULL OR t.technician_id = $1) AND ($2 IS NULL OR p.path LIKE $2 || '%')
             ORDER BY t.technician_id LIMIT $3 OFFSET $4",
        )
        .bind(id)
        .bind(within)
        .bind(page.limit + 1)
        .bind(page.offset)
        .fetch_all(self.pool())
        .await?;
        let mut out = Vec::with_capacity(rows.len());
        for r in &rows {
            let technician_id: String = r.get(0);
            out.push(Technician {
                skills: self.skills_of(&technician_id).await?,
                technician_id,
                provider_id: r.get(1),
                name: r.get(2),
                region: r.get(3),
                home_lat: r.get(4),
                home_lon: r.get(5),
                shift_start_min: r.get(6),
                shift_end_min: r.get(7),
                max_daily_load: r.get(8),
                active: r.get::<i64, _>(9) != 0,
                van_location_id: r.get::<Option<String>, _>(10).unwrap_or_default(),
            });
        }
        Ok(Paged::from_rows(out, page))
    }

    async fn skills_of(&self, technician_id: &str) -> Result<Vec<Skill>> {
        let rows = sqlx::query(
            "SELECT skill, level FROM technician_skills WHERE technician_id = $1 ORDER BY skill",
        )
        .bind(technician_id)
        .fetch_all(self.pool())
        .await?;
        Ok(rows
            .iter()
            .map(|r| Skill {
                skill: r.get(0),
                level: r.get(1),
            })
            .collect())
    }

    // ------------------------------------------------------------ parts and stock

    pub async fn create_part(&self, who: &Principal, part: &Part) -> Result<Part> {
        who.require(Action::RegistryWrite)?;
        valid_id("sku", &part.sku)?;
        non_empty("name", &part.name)?;
        if !part.unit_cost.is_finite() || part.unit_cost < 0.0 {
            return Err(ServiceError::invalid("unit_cost", "must be a number ≥ 0"));
        }
        if !["A", "B", "C"].contains(&part.abc_class.as_str()) {
            return Err(ServiceError::invalid("abc_class", "must be A, B or C"));
        }
        sqlx::query(
            "INSERT INTO parts (sku, name, compatible_models, fixes_modes, unit_cost, abc_class)
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(&part.sku)
        .bind(&part.name)
        .bind(to_json(&part.compatible_models))
        .bind(to_json(&part.fixes_modes))
        .bind(part.unit_cost)
        .bind(&part.abc_class)
        .execute(self.pool())
        .await
        .map_err(duplicate("part", &part.sku))?;
        self.part(&part.sku).await
    }

    pub async fn part(&self, sku: &str) -> Result<Part> {
        self.parts(&Principal::system("service"))
            .await?
            .into_iter()
            .find(|p| p.sku == sku)
            .ok_or_else(|| ServiceError::not_found("part", sku))
    }

    pub async fn parts(&self, who: &Principal) -> Result<Vec<Part>> {
        who.require(Action::RegistryRead)?;
        let rows = sqlx::query(
            "SELECT sku, name, compatible_models, fixes_modes, unit_cost, abc_class FROM parts ORDER BY sku",
        )
        .fetch_all(self.pool())
        .await?;
        Ok(rows
            .iter()
            .map(|r| Part {
                sku: r.get(0),
                name: r.get(1),
                compatible_models: json_list(&r.get::<String, _>(2)),
                fixes_modes: json_list(&r.get::<String, _>(3)),
                unit_cost: r.get(4),
                abc_class: r.get(5),
            })
            .collect())
    }

    /// The parts a repair of `failure_mode` on a `model` needs (one of each matching SKU class:
    /// the cheapest compatible part that fixes the mode).
    pub async fn parts_for(&self, model: Option<&str>, failure_mode: &str) -> Result<Vec<String>> {
        let mut fitting: Vec<Part> = self
            .parts(&Principal::system("service"))
            .await?
            .into_iter()
            .filter(|p| p.fixes_modes.iter().any(|m| m == failure_mode))
            .filter(|p| {
                p.compatible_models.is_empty()
                    || model.is_some_and(|m| p.compatible_models.iter().any(|c| c == m))
            })
            .collect();
        fitting.sort_by(|a, b| a.unit_cost.total_cmp(&b.unit_cost));
        Ok(fitting.into_iter().take(1).map(|p| p.sku).collect())
    }

    pub async fn create_location(&self, who: &Principal, new: &NewLocation) -> Result<Location> {
        who.require(Action::RegistryWrite)?;
        non_empty("name", &new.name)?;
        lat_lon(new.lat, new.lon)?;
        if new.kind == LocationKind::Van {
            return Err(ServiceError::invalid(
                "kind",
                "vans are created with their technician",
            ));
        }
        if let Some(p) = &new.provider_id {
            self.provider(p)
                .await
                .map_err(|_| ServiceError::invalid("provider_id", "unknown provider"))?;
        }
        let id = id_or_new(&new.location_id, "location_id", "L")?;
        sqlx::query(
            "INSERT INTO stock_locations (location_id, kind, name, region, lat, lon, provider_id)
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(&id)
        .bind(new.kind.as_str())
        .bind(&new.name)
        .bind(&new.region)
        .bind(new.lat)
        .bind(new.lon)
        .bind(&new.provider_id)
        .execute(self.pool())
        .await
        .map_err(duplicate("location", &id))?;
        self.location(&id).await
    }

    pub async fn location(&self, id: &str) -> Result<Location> {
        self.locations()
            .await?
            .into_iter()
            .find(|l| l.location_id == id)
            .ok_or_else(|| ServiceError::not_found("location", id))
    }

    pub async fn locations(&self) -> Result<Vec<Location>> {
        self.locations_in(&Principal::system("service")).await
    }

    /// Stock locations; with a provider `scope` only those of that subtree.
    pub async fn locations_in(&self, who: &Principal) -> Result<Vec<Location>> {
        who.require(Action::RegistryRead)?;
        self.locations_within(who.scope()).await
    }

    async fn locations_within(&self, scope: Option<&str>) -> Result<Vec<Location>> {
        let rows = sqlx::query(&format!(
            "SELECT l.location_id, l.kind, l.name, l.region, l.lat, l.lon, l.provider_id,
                    l.technician_id
             FROM stock_locations l {LOCATION_OWNER}
             WHERE ($1 IS NULL OR p.path LIKE $1 || '%')
             ORDER BY l.location_id"
        ))
        .bind(scope)
        .fetch_all(self.pool())
        .await?;
        Ok(rows
            .iter()
            .map(|r| Location {
                location_id: r.get(0),
                kind: r.get(1),
                name: r.get(2),
                region: r.get(3),
                lat: r.get(4),
                lon: r.get(5),
                provider_id: r.get(6),
                technician_id: r.get(7),
            })
            .collect())
    }

    /// Refuses (403) a provider key acting on a location outside its subtree.
    pub async fn require_location_in_scope(
        &self,
        who: &Principal,
        location_id: &str,
    ) -> Result<()> {
        let Some(scope) = who.scope() else {
            return Ok(());
        };
        if self
            .locations_within(Some(scope))
            .await?
            .iter()
            .any(|l| l.location_id == location_id)
        {
            Ok(())
        } else {
            Err(ServiceError::Forbidden(format!(
                "location {location_id} is outside this provider's network"
            )))
        }
    }

    /// Sets the on-hand quantity of a SKU at a location (a stock count). Refused below what
    /// is reserved there. The reorder point defaults by ABC class and location kind.
    pub async fn set_stock(
        &self,
        who: &Principal,
        location_id: &str,
        sku: &str,
        on_hand: i64,
        reorder_point: Option<i64>,
    ) -> Result<StockLevel> {
        who.require(Action::RegistryWrite)?;
        self.location(location_id).await?;
        self.part(sku).await?;
        if on_hand < 0 {
            return Err(ServiceError::invalid("on_hand", "must be ≥ 0"));
        }
        let part = self
            .part(sku)
            .await
            .map_err(|_| ServiceError::invalid("sku", "unknown part"))?;
        let location = self
            .location(location_id)
            .await
            .map_err(|_| ServiceError::invalid("location_id", "unknown location"))?;
        let kind = LocationKind::parse(&location.kind).unwrap_or(LocationKind::ServicePoint);
        let rop = reorder_point.unwrap_or_else(|| default_reorder_point(&part.abc_class, kind));
        let updated = sqlx::query(
            "UPDATE stock SET on_hand = $3, reorder_point = $4
             WHERE location_id = $1 AND sku = $2 AND reserved <= $3",
        )
        .bind(location_id)
        .bind(sku)
        .bind(on_hand)
        .bind(rop)
        .execute(self.pool())
        .await?
        .rows_affected();
        if updated == 0 {
            let inserted = sqlx::query(
                "INSERT INTO stock (location_id, sku, on_hand, reserved, reorder_point)
                 VALUES ($1, $2, $3, 0, $4) ON CONFLICT (location_id, sku) DO NOTHING",
            )
            .bind(location_id)
            .bind(sku)
            .bind(on_hand)
            .bind(rop)
            .execute(self.pool())
            .await?
            .rows_affected();
            if inserted == 0 {
                return Err(ServiceError::Conflict(format!(
                    "{sku} at {location_id} has more reserved than {on_hand}"
                )));
            }
        }
        self.stock_level(location_id, sku).await
    }

    pub async fn stock_level(&self, location_id: &str, sku: &str) -> Result<StockLevel> {
        sqlx::query(
            "SELECT location_id, sku, on_hand, reserved, reorder_point FROM stock
             WHERE location_id = $1 AND sku = $2",
        )
        .bind(location_id)
        .bind(sku)
        .fetch_optional(self.pool())
        .await?
        .map(|r| stock_row(&r))
        .ok_or_else(|| ServiceError::not_found("stock", format!("{sku}@{location_id}")))
    }

    /// Stock levels; with a provider `scope` only at locations of that subtree (its own
    /// warehouses and its technicians' vans).
    pub async fn stock(
        &self,
        who: &Principal,
        location_id: Option<&str>,
        sku: Option<&str>,
        page: Page,
    ) -> Result<Paged<StockLevel>> {
        who.require(Action::RegistryRead)?;
        let scope = who.scope();
        let rows = sqlx::query(&format!(
            "SELECT s.location_id, s.sku, s.on_hand, s.reserved, s.reorder_point FROM stock s
             JOIN stock_locations l ON l.location_id = s.location_id {LOCATION_OWNER}
             WHERE ($1 IS NULL OR s.location_id = $1) AND ($2 IS NULL OR s.sku = $2)
               AND ($5 IS NULL OR p.path LIKE $5 || '%')
             ORDER BY s.location_id, s.sku LIMIT $3 OFFSET $4"
        ))
        .bind(location_id)
        .bind(sku)
        .bind(page.limit + 1)
        .bind(page.offset)
        .bind(scope)
        .fetch_all(self.pool())
        .await?;
        Ok(Paged::from_rows(rows.iter().map(stock_row).collect(), page))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::super::testutil::service;
    use super::*;

    #[tokio::test]
    async fn hierarchy_is_enforced_and_subtrees_are_prefixes() {
        let (_d, svc, _c) = service().await;
        let oem = svc
            .create_provider(
                &crate::auth::Principal::system("test"),
                &NewProvider {
                    provider_id: Some("oem".into()),
                    name: "OEM".into(),
                    kind: ProviderKind::Oem,
                    parent_id: None,
                    regions: vec!["north".into(), "south".into()],
                },
            )
            .await
            .unwrap();
        assert_eq!(oem.path, "/oem/");
        let agent = svc
            .create_provider(
                &crate::auth::Principal::system("test"),
                &NewProvider {
                    provider_id: Some("ag".into()),
                    name: "Agent".into(),
                    kind: ProviderKind::Agent,
                    parent_id: Some("oem".into()),
                    regions: vec!["north".into()],
                },
            )
            .await
            .unwrap();
        assert_eq!(agent.path, "/oem/ag/");
        let err = svc
            .create_provider(
                &crate::auth::Principal::system("test"),
                &NewProvider {
                    provider_id: Some("bad".into()),
                    name: "x".into(),
                    kind: ProviderKind::Agent,
                    parent_id: Some("ag".into()),
                    regions: vec![],
                },
            )
            .await
            .unwrap_err();
        assert!(matches!(err, ServiceError::Validation { ref field, .. } if field == "parent_id"));
        svc.create_provider(
            &crate::auth::Principal::system("test"),
            &NewProvider {
                provider_id: Some("sp".into()),
                name: "SP".into(),
                kind: ProviderKind::Provider,
                parent_id: Some("ag".into()),
                regions: vec!["north".into()],
            },
        )
        .await
        .unwrap();
        let agent = crate::auth::Principal {
            key_id: "k-ag".into(),
            role: crate::auth::Role::Provider,
            provider_id: Some("ag".into()),
            provider_path: Some("/oem/ag/".into()),
            technician_id: None,
        };
        assert_eq!(svc.providers(&agent).await.unwrap().len(), 2);
        let p = svc.provider_for_region("north").await.unwrap().unwrap();
        assert_eq!(p.provider_id, "sp");
        let p = svc.provider_for_region("south").await.unwrap().unwrap();
        assert_eq!(p.provider_id, "oem");
        assert!(matches!(
            svc.create_provider(
                &crate::auth::Principal::system("test"),
                &NewProvider {
                    provider_id: Some("sp".into()),
                    name: "again".into(),
                    kind: ProviderKind::Provider,
                    parent_id: Some("ag".into()),
                    regions: vec![],
                }
            )
            .await,
            Err(ServiceError::Conflict(_))
        ));
    }
}
