//! Users: the people who own pizzas and OAuth clients. There are no user
//! routes; users come from the bootstrap and the development seed.

use std::fmt;

use rusqlite::OptionalExtension;

use crate::clock;
use crate::db::{Db, DbError};

/// What a user may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// May change anyone's pizzas and manage OAuth clients.
    Admin,
    /// May change only their own pizzas.
    User,
}

impl Role {
    /// The role as stored and as put in tokens.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::User => "user",
        }
    }

    /// Parses a stored or token role; anything else is `None`.
    pub fn parse(text: &str) -> Option<Role> {
        match text {
            "admin" => Some(Role::Admin),
            "user" => Some(Role::User),
            _ => None,
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

const INSERT_IF_ABSENT: &str = "INSERT INTO users (email, name, role, created_at, updated_at) \
     VALUES ($1, $2, $3, $4, $4) ON CONFLICT (email) DO NOTHING";
const SELECT_ID_BY_EMAIL: &str = "SELECT id FROM users WHERE email = $1";

/// The ID of the user with `email`, creating the user first when there is
/// none. Safe when several processes do it at once: the database's own
/// conflict handling decides, and everyone reads the same row back. The
/// lookup comes first because even an insert that conflicts uses up an ID,
/// and the seed's users must be 1 and 2.
pub fn ensure(db: &Db, email: &str, name: &str, role: Role) -> Result<i64, DbError> {
    let now = clock::now();
    match db {
        Db::Sqlite(sqlite) => {
            let find = || -> Result<Option<i64>, DbError> {
                let conn = sqlite.pool.get()?;
                Ok(conn.query_row(SELECT_ID_BY_EMAIL, [email], |row| row.get(0)).optional()?)
            };
            if let Some(id) = find()? {
                return Ok(id);
            }
            sqlite
                .write(|conn| Ok(conn.execute(INSERT_IF_ABSENT, (email, name, role.as_str(), clock::format(now)))?))?;
            find()?.ok_or_else(|| DbError::Query(format!("user {email} vanished after being stored")))
        }
        Db::Postgres(pool) => {
            let mut client = pool.get()?;
            if let Some(row) = client.query_opt(SELECT_ID_BY_EMAIL, &[&email])? {
                return Ok(row.try_get(0)?);
            }
            client.execute(INSERT_IF_ABSENT, &[&email, &name, &role.as_str(), &now])?;
            Ok(client.query_one(SELECT_ID_BY_EMAIL, &[&email])?.try_get(0)?)
        }
    }
}
