# pizza-api — see README.md. `make run` and `make test` are all most people need.

CARGO ?= cargo
# Where cargo builds: CARGO_TARGET_DIR when set, as cargo itself does.
TARGET_DIR := $(or $(CARGO_TARGET_DIR),target)
BIN   := $(TARGET_DIR)/release/pizza-api
IMAGE ?= pizza-api:1.0.0

.PHONY: run build test test-api test-faults lint fmt pg-start pg-stop bench bench-smoke bench-scale \
        k8s-validate lint-dockerfile openapi-check image clean

## run: release build, then serve on localhost:8080 with SQLite (test.sqlite)
run: build
	"$(BIN)"

## build: release binary at target/release/pizza-api ($CARGO_TARGET_DIR/release/pizza-api when set)
build:
	$(CARGO) build --release --locked

## test: every test on SQLite and PostgreSQL (starts and stops a private PostgreSQL),
##       the end-to-end walk-through on both, and the manifest and Dockerfile checks
test:
	scripts/check-busy-ports.sh
	scripts/test.sh
	scripts/k8s-validate.sh
	scripts/lint-dockerfile.sh

## test-api: the end-to-end walk-through (scripts/test-api.sh) on SQLite and PostgreSQL
test-api:
	scripts/test.sh api

## test-faults: fault and flood tests on the release binary: stalled clients, 10,000 idle
##              connections, fd exhaustion, huge Content-Length; PostgreSQL stopped, frozen
##              and restarted under load; kill -9 during writes; concurrent writers;
##              replicas racing at start-up; wrong-secret floods; tokens of unknown users.
##              SQLite and a private PostgreSQL, 127.0.0.1 only, a few minutes at most
test-faults:
	scripts/test-faults.sh

## lint: formatting check, clippy with warnings as errors, and the layering rules
##       of ARCHITECTURE.md (scripts/lint-layers.sh), links that stay in the repository
##       (scripts/lint-docs.sh)
lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --locked --all-targets -- -D warnings
	scripts/lint-layers.sh
	scripts/lint-docs.sh

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

## bench: the full benchmark on SQLite and PostgreSQL (installs wrk if missing)
bench:
	scripts/bench.sh

## bench-smoke: the benchmark with tiny counts and the list benchmark at 20,000 pizzas,
##              so neither can rot (CI runs it)
bench-smoke:
	BENCH_QUICK=1 scripts/bench.sh
	BENCH_SCALE_PIZZAS=20000 BENCH_LIST_SECONDS=1 scripts/bench-scale.sh

## bench-scale: the public list and read by ID at 1,000,000 pizzas on SQLite and
##              PostgreSQL (bulk-loaded), p50/p99 per query and peak RSS against the
##              targets; table in target/bench/scale/results.md
bench-scale:
	scripts/bench-scale.sh

## k8s-validate: validate k8s/ offline (kubernetes-validate --strict, yamllint)
k8s-validate:
	scripts/k8s-validate.sh

## lint-dockerfile: hadolint on the Dockerfile
lint-dockerfile:
	scripts/lint-dockerfile.sh

## openapi-check: validate /openapi.json and run schemathesis against a live server
openapi-check:
	scripts/openapi-check.sh

## image: build the container image (needs a Docker engine)
image:
	docker build -t $(IMAGE) .

clean:
	$(CARGO) clean
