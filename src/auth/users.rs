//! Users: the people who own pizzas and OAuth clients. There are no user
//! routes; users come from the bootstrap and the development seed. Every
//! token names one ([`UserDirectory`] checks that it still exists, in memory).

use std::collections::HashSet;
use std::sync::RwLock;
use std::sync::atomic::{AtomicU64, Ordering};

use super::Role;
use crate::clock;
use crate::db::{Db, DbError, Exec, Statement, Value};

const INSERT_IF_ABSENT: Statement = Statement::both(
    "INSERT INTO users (email, name, role, created_at, updated_at) \
     VALUES ($1, $2, $3, $4, $4) ON CONFLICT (email) DO NOTHING",
);
const SELECT_ID_BY_EMAIL: Statement = Statement::both("SELECT id FROM users WHERE email = $1");

/// The ID of the user with `email`, storing the user first when there is
/// none. Looks before inserting, so existing users keep their IDs (the
/// development seed relies on IDs 1 and 2) and no sequence value is spent.
pub fn ensure(db: &impl Exec, email: &str, name: &str, role: Role) -> Result<i64, DbError> {
    let find = || db.read_one(&SELECT_ID_BY_EMAIL, &[email.into()], |row| row.int(0));
    if let Some(id) = find()? {
        return Ok(id);
    }
    let params: [Value<'_>; 4] = [email.into(), name.into(), role.as_str().into(), clock::now().into()];
    db.execute(&INSERT_IF_ABSENT, &params)?;
    find()?.ok_or_else(|| DbError::Query(format!("user {email} vanished after being stored")))
}

const SELECT_IDS: Statement = Statement::both("SELECT id FROM users");

/// How often at most an unknown user ID makes the directory look again.
const REFRESH_EVERY_SECONDS: u64 = 1;

/// Every user's ID, in memory: the bearer check asks it instead of the
/// database. Users are only ever added (by the bootstrap and the seed,
/// possibly on another replica), so an ID not found makes it reload, at most
/// once a second.
pub struct UserDirectory {
    ids: RwLock<HashSet<i64>>,
    /// When it last loaded, in Unix seconds.
    loaded_at: AtomicU64,
}

/// What the directory knows of a user a token names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lookup {
    /// The user exists.
    Known,
    /// The user does not exist (the database says so).
    Unknown,
}

impl UserDirectory {
    /// Loads every user.
    pub fn load(db: &impl Exec) -> Result<UserDirectory, DbError> {
        let directory = UserDirectory { ids: RwLock::new(HashSet::new()), loaded_at: AtomicU64::new(0) };
        directory.reload(db)?;
        Ok(directory)
    }

    fn reload(&self, db: &impl Exec) -> Result<(), DbError> {
        let ids = db.read_many(&SELECT_IDS, &[], |row| row.int(0))?.into_iter().collect();
        *self.ids.write().unwrap_or_else(|poisoned| poisoned.into_inner()) = ids;
        self.loaded_at.store(clock::unix_seconds(clock::now()), Ordering::Relaxed);
        Ok(())
    }

    /// The user `id`: from memory, or after one reload when it is not there
    /// (fails only when that reload cannot reach the database).
    pub fn lookup(&self, db: &Db, id: i64) -> Result<Lookup, DbError> {
        if self.knows(id) {
            return Ok(Lookup::Known);
        }
        let now = clock::unix_seconds(clock::now());
        let last = self.loaded_at.load(Ordering::Relaxed);
        if now >= last + REFRESH_EVERY_SECONDS
            && self.loaded_at.compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed).is_ok()
        {
            self.reload(db)?;
        }
        Ok(if self.knows(id) { Lookup::Known } else { Lookup::Unknown })
    }

    fn knows(&self, id: i64) -> bool {
        self.ids.read().unwrap_or_else(|poisoned| poisoned.into_inner()).contains(&id)
    }
}
