//! The database executor, driven directly (no HTTP) on each dialect: what a
//! parameter becomes in a column and what a column reads back as, for the
//! types the service stores: integers, reals, text, timestamps with
//! microseconds, JSON arrays, and NULL for each; a transaction commits all or
//! nothing; a type mismatch is an error, never a panic.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use pizza_api::config::Config;
use pizza_api::db::{Db, DbError, Exec, Statement, Value};

use crate::both_backends;
use crate::helpers::TestDb;

const CREATE: Statement = Statement {
    sqlite: "CREATE TABLE samples (id INTEGER PRIMARY KEY, n INTEGER, r REAL, t TEXT, at TEXT, tags TEXT)",
    postgres: "CREATE TABLE samples (id BIGSERIAL PRIMARY KEY, n BIGINT, r DOUBLE PRECISION, t TEXT, \
               at TIMESTAMPTZ, tags JSONB)",
};
const INSERT: Statement = Statement {
    sqlite: "INSERT INTO samples (n, r, t, at, tags) VALUES ($1, $2, $3, $4, $5) RETURNING id",
    postgres: "INSERT INTO samples (n, r, t, at, tags) VALUES ($1, $2, $3, $4, $5::jsonb) RETURNING id",
};
const SELECT: Statement = Statement {
    sqlite: "SELECT n, r, t, at, tags FROM samples WHERE id = $1",
    postgres: "SELECT n, r, t, at, tags::text FROM samples WHERE id = $1",
};
const COUNT: Statement = Statement::both("SELECT count(*) FROM samples");

fn open(db: &TestDb) -> Db {
    let env = db.env();
    let config = Config::from_lookup(|name| env.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone()))
        .expect("a valid test configuration");
    let db = Db::connect(&config.database, &config.pool).expect("the test database opens");
    db.transaction(|tx| tx.run_script(&CREATE)).expect("the table is created");
    db
}

/// A moment with a non-zero microsecond part.
fn moment() -> SystemTime {
    UNIX_EPOCH + Duration::from_micros(1_764_201_600_123_456)
}

both_backends!(
    fn values_and_columns_round_trip_on_each_dialect(backend) {
        let test_db = TestDb::new(backend);
        let db = open(&test_db);
        let params: [Value<'_>; 5] =
            [42.into(), 10.99.into(), "Margherita".into(), moment().into(), r#"["Basil","Tomato"]"#.into()];

        let id = db.write(&INSERT, &params, |row| row.int(0)).unwrap()[0];
        let read = db
            .read_one(&SELECT, &[id.into()], |row| {
                Ok((row.int(0)?, row.real(1)?, row.text(2)?, row.time(3)?, row.time_text(3)?, row.json::<Vec<String>>(4)?))
            })
            .unwrap()
            .expect("the row is there");

        assert_eq!(read.0, 42);
        assert_eq!(read.1, 10.99);
        assert_eq!(read.2, "Margherita");
        assert_eq!(read.3, moment(), "microseconds survive");
        assert_eq!(read.4, "2025-11-27T00:00:00.123456Z");
        assert_eq!(read.5, vec!["Basil".to_string(), "Tomato".to_string()]);
    }
);

both_backends!(
    fn nulls_read_back_as_none_and_a_non_null_accessor_refuses_them(backend) {
        let test_db = TestDb::new(backend);
        let db = open(&test_db);
        let params: [Value<'_>; 5] =
            [Value::Int(None), 0.5.into(), Value::Text(None), Value::Time(None), "[]".into()];

        let id = db.write(&INSERT, &params, |row| row.int(0)).unwrap()[0];
        let nulls = db
            .read_one(&SELECT, &[id.into()], |row| Ok((row.opt_int(0)?, row.opt_text(2)?, row.opt_time(3)?)))
            .unwrap();
        let refused = db.read_one(&SELECT, &[id.into()], |row| row.int(0));

        assert_eq!(nulls, Some((None, None, None)));
        assert!(matches!(refused, Err(DbError::Query(_))), "{refused:?}");
    }
);

both_backends!(
    fn a_type_mismatch_is_an_error_not_a_panic(backend) {
        let test_db = TestDb::new(backend);
        let db = open(&test_db);
        let params: [Value<'_>; 5] = [1.into(), 1.5.into(), "text".into(), moment().into(), "[1]".into()];
        let id = db.write(&INSERT, &params, |row| row.int(0)).unwrap()[0];

        let as_int = db.read_one(&SELECT, &[id.into()], |row| row.int(2));
        let as_strings = db.read_one(&SELECT, &[id.into()], |row| row.json::<Vec<String>>(4));

        assert!(matches!(as_int, Err(DbError::Query(_))), "{as_int:?}");
        assert!(matches!(as_strings, Err(DbError::Query(_))), "{as_strings:?}");
    }
);

both_backends!(
    fn a_failed_transaction_leaves_nothing_behind(backend) {
        let test_db = TestDb::new(backend);
        let db = open(&test_db);
        let params: [Value<'_>; 5] = [1.into(), 1.0.into(), "a".into(), moment().into(), "[]".into()];

        let failed: Result<(), DbError> = db.transaction(|tx| {
            tx.lock(7)?;
            tx.write(&INSERT, &params, |row| row.int(0))?;
            Err(DbError::Query("changed my mind".into()))
        });
        let committed = db.transaction(|tx| tx.write(&INSERT, &params, |row| row.int(0)).map(|ids| ids.len()));

        assert!(failed.is_err());
        assert_eq!(committed.unwrap(), 1);
        assert_eq!(db.read_one(&COUNT, &[], |row| row.int(0)).unwrap(), Some(1));
    }
);

both_backends!(
    fn a_unique_violation_is_a_conflict(backend) {
        let test_db = TestDb::new(backend);
        let db = open(&test_db);
        let unique = Statement::both("CREATE UNIQUE INDEX samples_t ON samples (t)");
        db.transaction(|tx| tx.run_script(&unique)).unwrap();
        let params: [Value<'_>; 5] = [1.into(), 1.0.into(), "same".into(), moment().into(), "[]".into()];
        db.write(&INSERT, &params, |row| row.int(0)).unwrap();

        let again = db.write(&INSERT, &params, |row| row.int(0));

        assert!(matches!(again, Err(DbError::Conflict(_))), "{again:?}");
    }
);
