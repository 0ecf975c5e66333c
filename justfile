# distlab recipes. `just` is optional: each recipe is one plain cargo command, also in README.md.

default:
    @just --list

# Open the console on a new cluster (e.g. `just lab proj0 --nodes 5`)
lab PROJ *ARGS:
    cargo run --release -p lab -- run {{PROJ}} {{ARGS}}

# Run every test (the README's test command; CI also checks fmt and clippy)
test:
    cargo test --workspace

# What CI runs: fmt, clippy -D warnings, tests
ci:
    bash .ci/run

# Run a scenario headless and print its verdict (e.g. `just scenario scenarios/proj0-pause.yaml`)
scenario FILE *ARGS:
    cargo run --release -p lab -- scenario {{FILE}} {{ARGS}}

# Start a project's cluster and keep it up until Ctrl-C (e.g. `just up proj0 --nodes 3`)
up PROJ *ARGS:
    cargo run --release -p lab -- up {{PROJ}} {{ARGS}}

# Benchmark: proj0, proj1, proj2, proj3, proj4, proj5, proj6, links, checker or console; one parseable line per figure (e.g. `just bench proj0 --clients 64`)
# (proj1 compares with Debian's memcached and memcslap, proj2 with a 3-member etcd: the recipe installs them if it can)
bench PROJ *ARGS:
    if [ "{{PROJ}}" = proj1 ] && ! command -v memcached >/dev/null; then apt-get install -y memcached libmemcached-tools >/dev/null 2>&1 || sudo -n apt-get install -y memcached libmemcached-tools >/dev/null 2>&1 || echo "memcached is not installed: the memcached comparison will be skipped"; fi
    if [ "{{PROJ}}" = proj2 ] && ! command -v etcd >/dev/null; then apt-get install -y etcd-server >/dev/null 2>&1 || sudo -n apt-get install -y etcd-server >/dev/null 2>&1 || echo "etcd-server is not installed: the etcd comparison will be skipped"; fi
    cargo run --release -p lab -- bench {{PROJ}} {{ARGS}}

# Run one node of a project in the foreground (e.g. `just node proj0 --id n1`)
node PROJ *ARGS:
    cargo run --release -p lab -- node {{PROJ}} {{ARGS}}

# Record the console playing scenarios/NAME.yaml into assets/demos/NAME.cast (no terminal needed)
demo NAME:
    cargo run --release -p lab -- scenario scenarios/{{NAME}}.yaml --record assets/demos/{{NAME}}.cast --size 120x36

# Record every shipped scenario (play one with `asciinema play assets/demos/NAME.cast`)
demos:
    cargo build --release -p lab
    for f in scenarios/*.yaml; do just demo "$(basename "$f" .yaml)"; done
