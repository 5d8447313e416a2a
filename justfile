# Mirrors the README's Quickstart for those who have `just`.

# Run the demo: the whole mesh on an example dataset.
demo:
    cargo run --release -p trustmesh-cli -- demo

# Run every test against real servers.
test:
    bash infra/dev/test.sh

# Start / stop the dev servers.
up:
    bash infra/dev/up.sh
down:
    bash infra/dev/down.sh
