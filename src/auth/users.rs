//! Users: the people who own pizzas and OAuth clients. There are no user
//! routes; users come from the bootstrap and the development seed.

use crate::auth::Role;
use crate::clock;
use crate::db::{DbError, Exec, Statement, Value};

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
