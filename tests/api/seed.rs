//! Data present after start-up: the bootstrap client and the development seed.

use std::time::Duration;

use crate::both_backends;
use crate::helpers::*;

const PROD_JWT: &str = "production-jwt-secret-0123456789abcdef";

both_backends!(
    fn a_fresh_database_holds_exactly_the_contracts_seed(backend) {
        let app = spawn_app(backend);

        let users = app.db.query_column("SELECT id || ' ' || email || ' ' || name || ' ' || role FROM users ORDER BY id");
        let pizzas = app.get("/api/v1/public/pizzas").json();
        let clients = app.db.query_column(
            "SELECT c.id || ' ' || c.scopes || ' ' || u.email FROM oauth_clients c JOIN users u ON u.id = c.user_id ORDER BY c.id",
        );

        assert_eq!(
            users.into_iter().flatten().collect::<Vec<_>>(),
            vec!["1 system@pizza.com System User admin", "2 user@pizza.com Regular User user"]
        );
        let summary: Vec<(i64, String, f64, Vec<String>, i64)> = pizzas
            .as_array()
            .unwrap()
            .iter()
            .map(|p| {
                (
                    p["id"].as_i64().unwrap(),
                    p["name"].as_str().unwrap().to_owned(),
                    p["price"].as_f64().unwrap(),
                    serde_json::from_value(p["ingredients"].clone()).unwrap(),
                    p["created_by"].as_i64().unwrap(),
                )
            })
            .collect();
        let strings = |items: &[&str]| items.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            summary,
            vec![
                (1, "Margherita".into(), 10.99, strings(&["Tomato Sauce", "Mozzarella", "Basil"]), 1),
                (2, "Pepperoni".into(), 12.99, strings(&["Tomato Sauce", "Mozzarella", "Pepperoni"]), 1),
                (3, "Vegetarian".into(), 11.99, strings(&["Tomato Sauce", "Mozzarella", "Bell Peppers", "Olives"]), 1),
            ]
        );
        assert_eq!(
            clients.into_iter().flatten().collect::<Vec<_>>(),
            vec![
                "admin-client read write system@pizza.com",
                "dev-client read write system@pizza.com",
                "user-client read write user@pizza.com",
            ]
        );
        assert!(app.log().contains("development seed: users"), "{}", app.log());
    }
);

both_backends!(
    fn production_seeds_nothing_but_bootstraps_its_client(backend) {
        let mut app = spawn_app_with(
            backend,
            &[("APP_ENV", "production"), ("JWT_SECRET", PROD_JWT), ("BOOTSTRAP_CLIENT_SECRET", "prod-bootstrap-secret")],
        );
        app.remember_secret(PROD_JWT);

        let pizzas = app.get("/api/v1/public/pizzas").json();
        let clients = app.db.query_column("SELECT id FROM oauth_clients");
        let users = app.db.query_i64("SELECT count(*) FROM users");
        let token = app.token_for(("admin-client", "prod-bootstrap-secret"));

        assert_eq!(pizzas, serde_json::json!([]));
        assert_eq!(clients, vec![Some("admin-client".to_owned())]);
        assert_eq!(users, 1);
        assert_eq!(claims_of(&token)["role"], "admin");
        assert!(app.log().contains("development seed: off"), "{}", app.log());
    }
);

both_backends!(
    fn production_refuses_to_start_with_the_development_seed(backend) {
        let db = TestDb::new(backend);
        let env = [("APP_ENV", "production"), ("JWT_SECRET", PROD_JWT), ("SEED_DEV_DATA", "true")];

        let (status, output) = run_to_exit(&db, &env, Duration::from_secs(10));

        assert_eq!(status.code(), Some(2), "{output}");
        let message = "invalid configuration: SEED_DEV_DATA: must not be true when APP_ENV=production: the \
                       development data includes an admin client whose secret is published";
        assert!(output.contains(message), "{output}");
        assert!(!output.contains(PROD_JWT), "{output}");
        // Refused before the database is touched: nothing was migrated or seeded.
        assert!(!output.contains("schema:") && !output.contains("development seed"), "{output}");
    }
);

both_backends!(
    fn starting_twice_keeps_one_bootstrap_client_and_one_seed(backend) {
        let db = TestDb::new(backend);
        let env = [("BOOTSTRAP_CLIENT_SECRET", "bootstrap-secret-one")];

        drop(spawn_on(db.clone(), &env));
        let second = spawn_on(db.clone(), &env);

        assert_eq!(db.query_i64("SELECT count(*) FROM oauth_clients WHERE id = 'admin-client'"), 1);
        assert_eq!(db.query_i64("SELECT count(*) FROM pizzas"), 3);
        assert_eq!(db.query_i64("SELECT count(*) FROM users"), 2);
        assert!(second.log().contains("development seed: skipped"), "{}", second.log());
        second.token_for(("admin-client", "bootstrap-secret-one"));
    }
);

both_backends!(
    fn a_new_bootstrap_secret_replaces_the_old_one(backend) {
        let db = TestDb::new(backend);
        drop(spawn_on(db.clone(), &[("BOOTSTRAP_CLIENT_SECRET", "first-bootstrap-secret")]));

        let app = spawn_on(db.clone(), &[("BOOTSTRAP_CLIENT_SECRET", "second-bootstrap-secret")]);

        app.token_for(("admin-client", "second-bootstrap-secret"));
        let old = app.token_request(
            "grant_type=client_credentials&client_id=admin-client&client_secret=first-bootstrap-secret",
            &[],
        );
        assert_eq!(old.status, 401);
    }
);

both_backends!(
    fn replicas_starting_together_bootstrap_and_seed_once(backend) {
        let db = TestDb::new(backend);
        let env = [("BOOTSTRAP_CLIENT_SECRET", "concurrent-bootstrap-secret")];

        let apps: Vec<TestApp> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..4).map(|_| scope.spawn(|| spawn_on(db.clone(), &env))).collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });

        assert_eq!(db.query_i64("SELECT count(*) FROM oauth_clients WHERE id = 'admin-client'"), 1);
        assert_eq!(db.query_i64("SELECT count(*) FROM pizzas"), 3);
        assert_eq!(db.query_i64("SELECT count(*) FROM users"), 2);
        assert_eq!(db.query_i64("SELECT count(*) FROM schema_migrations"), 5);
        for app in &apps {
            app.token_for(("admin-client", "concurrent-bootstrap-secret"));
        }
        let claimed = apps.iter().filter(|app| app.log().contains("development seed: users")).count();
        assert_eq!(claimed, 1, "exactly one replica says it seeded");
    }
);

both_backends!(
    fn a_custom_bootstrap_client_id_is_used(backend) {
        let app = spawn_app_with(backend, &[("BOOTSTRAP_CLIENT_ID", "ops-client"), ("BOOTSTRAP_CLIENT_SECRET", "ops-secret")]);

        app.token_for(("ops-client", "ops-secret"));
        assert_eq!(app.db.query_i64("SELECT count(*) FROM oauth_clients WHERE id = 'admin-client'"), 0);
    }
);
