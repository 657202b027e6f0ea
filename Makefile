# pizza-api — see README.md. `make run` and `make test` are all most people need.

CARGO ?= cargo
BIN   := target/release/pizza-api

.PHONY: run build test test-api lint fmt pg-start pg-stop clean

## run: release build, then serve on localhost:8080 with SQLite (test.sqlite)
run: build
	./$(BIN)

## build: release binary at target/release/pizza-api
build:
	$(CARGO) build --release --locked

## test: every test on SQLite and PostgreSQL (starts and stops a private PostgreSQL)
test:
	scripts/test.sh

## test-api: the end-to-end walk-through (scripts/test-api.sh) on SQLite and PostgreSQL
test-api:
	scripts/test.sh api

## lint: formatting check and clippy with warnings as errors
lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --locked --all-targets -- -D warnings

## fmt: format the code
fmt:
	$(CARGO) fmt --all

## pg-start: start the private PostgreSQL for `make run` and print the DB_* values to use
pg-start:
	@scripts/pg-cluster.sh start
	@scripts/pg-cluster.sh createdb pizza_api
	@echo "Run against it with:"
	@echo "  env $$(scripts/pg-cluster.sh env | tr '\n' ' ')make run"

## pg-stop: stop and delete the private PostgreSQL
pg-stop:
	@scripts/pg-cluster.sh stop

clean:
	$(CARGO) clean
