# A menu of the project's commands; the logic lives in cargo and `cargo xtask`.

# Provision Kafka/Redis and run fmt, clippy and every test (what CI runs)
test *args:
    cargo xtask test {{args}}

# Real Kafka and Redis on loopback for a hand-started deployment
infra:
    cargo xtask infra

# The whole deployment on the zero-setup embedded default
up:
    cargo run --release -- up

# Repository rules
tidy:
    cargo xtask tidy

fmt:
    cargo fmt --all

lint:
    cargo clippy --workspace --all-targets -- -D warnings

build:
    cargo build --release
