//! Data present after start-up: the bootstrap admin client (every start)
//! and the development seed (an empty database, development only unless
//! `SEED_DEV_DATA=true`). Both are safe when several replicas start at once:
//! rows are created with the database's own conflict handling and the seed's
//! pizzas under a lock.

use crate::auth::{Role, revocation, secrets, users};
use crate::clients::input::{CLIENT_CREDENTIALS, DEFAULT_SCOPES, NewClient};
use crate::clients::store as clients;
use crate::clock;
use crate::config::Config;
use crate::db::{Db, DbError};
use crate::pizzas::input::PizzaInput;
use crate::pizzas::store as pizzas;

/// The admin user the bootstrap client belongs to.
pub const SYSTEM_EMAIL: &str = "system@pizza.com";

/// A start-up data step that failed.
#[derive(Debug)]
pub enum SeedError {
    Database(DbError),
    Secret(String),
}

impl std::fmt::Display for SeedError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SeedError::Database(err) => write!(f, "{err}"),
            SeedError::Secret(err) => f.write_str(err),
        }
    }
}

impl From<DbError> for SeedError {
    fn from(err: DbError) -> SeedError {
        SeedError::Database(err)
    }
}

fn client(name: &str) -> NewClient {
    NewClient {
        name: name.to_owned(),
        domain: String::new(),
        scopes: DEFAULT_SCOPES.to_owned(),
        grant_types: CLIENT_CREDENTIALS.to_owned(),
        redirect_uri: String::new(),
    }
}

/// Makes sure the client `BOOTSTRAP_CLIENT_ID` exists, owned by the system
/// admin. A `BOOTSTRAP_CLIENT_SECRET` that differs from the stored one
/// replaces it (rotation through the deployment's secret); without one, a new
/// client gets a random secret that nobody knows until one is set. Secrets
/// are never logged.
pub fn bootstrap(db: &Db, config: &Config) -> Result<(), SeedError> {
    let id = &config.bootstrap_client_id;
    let admin = users::ensure(db, SYSTEM_EMAIL, "System User", Role::Admin)?;
    let given = config.bootstrap_client_secret.as_ref().map(|s| s.expose());

    if let Some(stored) = clients::secret_hash(db, id)? {
        match given {
            Some(secret) if !bcrypt::verify(secret, &stored).unwrap_or(false) => {
                let hash = hash(secret, config.bcrypt_cost)?;
                // A rotation like any other: tokens issued under the old secret are revoked.
                db.transaction(|tx| {
                    clients::rotate(tx, id, &hash, None)?;
                    revocation::bump_revision(tx)
                })?;
                log::info!(
                    "bootstrap client {id}: secret replaced by BOOTSTRAP_CLIENT_SECRET; its earlier tokens are revoked"
                );
            }
            _ => log::info!("bootstrap client {id}: already present"),
        }
        return Ok(());
    }

    let random;
    let secret = match given {
        Some(secret) => secret,
        None => {
            random = secrets::new_client_secret().map_err(SeedError::Secret)?;
            random.as_str()
        }
    };
    if clients::insert(db, id, &hash(secret, config.bcrypt_cost)?, &client("Bootstrap admin client"), admin)? {
        match given {
            Some(_) => log::info!("bootstrap client {id}: created with the secret from BOOTSTRAP_CLIENT_SECRET"),
            None => log::warn!(
                "bootstrap client {id}: created with a random secret that is not shown; \
                 set BOOTSTRAP_CLIENT_SECRET to choose one"
            ),
        }
    } else {
        // Another replica created it a moment ago, or it was deleted on purpose.
        log::info!("bootstrap client {id}: present (created concurrently, or deleted and left so)");
    }
    Ok(())
}

fn hash(secret: &str, cost: u32) -> Result<String, SeedError> {
    secrets::hash(secret, cost).map_err(SeedError::Secret)
}

/// The development seed (the contract's table), loaded only into a database
/// that never had a pizza.
pub fn seed_dev_data(db: &Db, config: &Config) -> Result<(), SeedError> {
    if !config.seed_enabled() {
        log::info!("development seed: off (APP_ENV=production; SEED_DEV_DATA=true loads it)");
        return Ok(());
    }
    if pizzas::count_all(db)? > 0 {
        log::info!("development seed: skipped, the database already has pizzas");
        return Ok(());
    }
    let admin = users::ensure(db, SYSTEM_EMAIL, "System User", Role::Admin)?;
    let regular = users::ensure(db, "user@pizza.com", "Regular User", Role::User)?;
    for (id, secret, owner, name) in [
        ("dev-client", "dev-secret-123", admin, "Development client"),
        ("user-client", "user-secret-123", regular, "Development user client"),
    ] {
        if !clients::insert(db, id, &hash(secret, config.bcrypt_cost)?, &client(name), owner)? {
            log::info!("development seed: client {id} is already present");
        }
    }
    let seed = [
        ("Margherita", 10.99, &["Tomato Sauce", "Mozzarella", "Basil"][..]),
        ("Pepperoni", 12.99, &["Tomato Sauce", "Mozzarella", "Pepperoni"][..]),
        ("Vegetarian", 11.99, &["Tomato Sauce", "Mozzarella", "Bell Peppers", "Olives"][..]),
    ]
    .map(|(name, price, ingredients)| PizzaInput {
        name: name.to_owned(),
        description: String::new(),
        ingredients: ingredients.iter().map(|s| s.to_string()).collect(),
        price,
    });
    let stored = insert_pizzas_once(db, &seed, admin)?;
    if stored == 0 {
        log::info!("development seed: skipped, another instance seeded the database a moment ago");
        return Ok(());
    }
    log::info!(
        "development seed: users {SYSTEM_EMAIL} (admin) and user@pizza.com (user), clients dev-client and \
         user-client, {stored} pizzas"
    );
    Ok(())
}

/// Key of the advisory lock that keeps replicas from seeding twice.
const SEED_LOCK_KEY: i64 = 0x7069_7a7a_6173_6564;

/// Stores `seed`, owned by `owner`, only if no pizza was ever stored.
/// Returns how many were stored: replicas seeding at the same moment take
/// turns on one lock, and only the first finds the table empty.
fn insert_pizzas_once(db: &Db, seed: &[PizzaInput], owner: i64) -> Result<usize, DbError> {
    let now = clock::now();
    db.transaction(|tx| {
        tx.lock(SEED_LOCK_KEY)?;
        if pizzas::count_all(tx)? > 0 {
            return Ok(0);
        }
        for pizza in seed {
            pizzas::insert(tx, pizza, owner, now)?;
        }
        Ok(seed.len())
    })
}
