# Recipes call the same xtask commands the README gives.

# Run the host on the embedded backends with the example plugins.
run:
    cargo xtask run

# Run every test (starts Redis and RabbitMQ if needed).
test *ARGS:
    cargo xtask test {{ARGS}}

# Benchmarks, each printed as a ratio to a native baseline.
bench *ARGS:
    cargo xtask bench {{ARGS}}

# Build the plugins for wasm32-wasip2.
build-plugins:
    cargo xtask build-plugins

# fmt and clippy, as CI runs them.
lint:
    cargo xtask lint
