#!/usr/bin/env bash
# The project's one test command (README and .ci/run call it).
#
# Installs whatever the integration tests need and is missing (each step is skipped, quickly, when
# already satisfied), then runs fmt, clippy and every test target. Installed tools live under
# $UPSTEP_TEST_TOOLS (default ~/.cache/upstep-test-tools) so CI can cache that one directory.
set -euo pipefail
cd "$(dirname "$0")/.."

TOOLS="${UPSTEP_TEST_TOOLS:-$HOME/.cache/upstep-test-tools}"
mkdir -p "$TOOLS"

# Pinned: SecantusDB is the MongoDB-compatible test server (GPL, run as a separate process only).
SECANTUS_CRATE_VERSION=0.5.3-beta.196
SECANTUS_PY_VERSION=0.7.0b3
# The Node packages the fixture migration scripts import. Changing this list re-installs them.
# typescript stays on 5: ts-node 10 cannot load typescript 7 (no `ts.sys`).
NODE_FIXTURE_PACKAGES=(mongodb@6 typescript@5 ts-node@10 @types/node@20)
# The migration tools the tool-project fixtures run (tests/it/tool_projects.rs), each in its own
# folder that every tag of a fixture links as its node_modules. MikroORM stays on 6.6.16: 7.x
# needs node 22.
MIKRO_ORM_PACKAGES=(@mikro-orm/core@6.6.16 @mikro-orm/mongodb@6.6.16 @mikro-orm/migrations-mongodb@6.6.16 @mikro-orm/cli@6.6.16)
MIGRATE_MONGO_PACKAGES=(migrate-mongo@14.0.7 mongodb@6)

note() { printf 'test.sh: %s\n' "$*" >&2; }

# Two test.sh runs at once (two worktrees) must not build SecantusDB twice into one directory.
exec 9>"$TOOLS/.install.lock"
if command -v flock >/dev/null 2>&1; then flock 9; fi

as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

# --- Debian packages -------------------------------------------------------------------------
missing=()
command -v cmake >/dev/null 2>&1 || missing+=(cmake)
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
[ -x /usr/sbin/sshd ] || missing+=(openssh-server)
command -v tmux >/dev/null 2>&1 || missing+=(tmux)
command -v npm >/dev/null 2>&1 || missing+=(nodejs npm)
if [ ${#missing[@]} -gt 0 ]; then
    note "apt: installing ${missing[*]}"
    as_root apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq "${missing[@]}" >&2
else
    note "apt: skipped (cmake, redis-server, sshd, tmux, npm present)"
fi

# --- SecantusDB ------------------------------------------------------------------------------
secantus_rs="$TOOLS/secantus/bin/secantusd-rs"
secantus_py="$TOOLS/secantus-py/bin/secantusd-py"
if [ -n "${UPSTEP_TEST_MONGOD:-}" ] && [ -x "$UPSTEP_TEST_MONGOD" ]; then
    note "secantus: skipped (UPSTEP_TEST_MONGOD=$UPSTEP_TEST_MONGOD)"
elif [ -x "$secantus_rs" ]; then
    note "secantus: skipped ($secantus_rs present)"
    UPSTEP_TEST_MONGOD="$secantus_rs"
elif [ -x "$secantus_py" ]; then
    note "secantus: skipped (python fallback $secantus_py present)"
    UPSTEP_TEST_MONGOD="$secantus_py"
else
    log="$TOOLS/secantus.log"
    note "secantus: building secantus-mdb $SECANTUS_CRATE_VERSION (about 7 min cold; log: $log)"
    # Every release declares rust-version 1.98 but builds with older toolchains.
    if cargo install secantus-mdb --version "$SECANTUS_CRATE_VERSION" --locked \
        --ignore-rust-version --root "$TOOLS/secantus" >"$log" 2>&1; then
        note "secantus: installed $secantus_rs"
        UPSTEP_TEST_MONGOD="$secantus_rs"
    else
        tail -n 20 "$log" >&2 || true
        note "secantus: cargo build failed; installing the python fallback SecantusDB==$SECANTUS_PY_VERSION"
        if ! python3 -c 'import ensurepip' >/dev/null 2>&1; then
            note "secantus: installing python3-venv for the fallback"
            as_root apt-get update -qq >&2
            DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq python3-venv >&2
        fi
        python3 -m venv "$TOOLS/secantus-py" >&2
        "$TOOLS/secantus-py/bin/pip" install -q "SecantusDB==$SECANTUS_PY_VERSION" >&2
        note "secantus: installed $secantus_py"
        UPSTEP_TEST_MONGOD="$secantus_py"
    fi
fi
export UPSTEP_TEST_MONGOD

# --- Node fixture packages -------------------------------------------------------------------
fixture="$TOOLS/node-fixture"
stamp="$fixture/.upstep-packages"
wanted="${NODE_FIXTURE_PACKAGES[*]}"
if [ -f "$fixture/node_modules/mongodb/package.json" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$wanted" ]; then
    note "node fixture: skipped ($wanted present)"
else
    note "node fixture: installing $wanted into $fixture"
    mkdir -p "$fixture"
    npm install --prefix "$fixture" --no-audit --no-fund --loglevel=error "${NODE_FIXTURE_PACKAGES[@]}" >&2
    printf '%s' "$wanted" >"$stamp"
fi
export UPSTEP_TEST_NODE_MODULES="$fixture/node_modules"

# --- Migration tools -------------------------------------------------------------------------
# install_tool <folder> <package whose package.json proves the install> <packages...>
install_tool() {
    local dir="$TOOLS/$1" probe="$2"
    shift 2
    local wanted="$*"
    if [ -f "$dir/node_modules/$probe/package.json" ] && [ "$(cat "$dir/.upstep-packages" 2>/dev/null)" = "$wanted" ]; then
        note "$1: skipped ($wanted present)"
    else
        note "$1: installing $wanted"
        mkdir -p "$dir"
        npm install --prefix "$dir" --no-audit --no-fund --loglevel=error "$@" >&2
        printf '%s' "$wanted" >"$dir/.upstep-packages"
    fi
}
install_tool mikro-orm-fixture @mikro-orm/cli "${MIKRO_ORM_PACKAGES[@]}"
install_tool migrate-mongo-fixture migrate-mongo "${MIGRATE_MONGO_PACKAGES[@]}"
export UPSTEP_TEST_MIKRO_ORM_MODULES="$TOOLS/mikro-orm-fixture/node_modules"
export UPSTEP_TEST_MIGRATE_MONGO_MODULES="$TOOLS/migrate-mongo-fixture/node_modules"

UPSTEP_TEST_REDIS="$(command -v redis-server)"
export UPSTEP_TEST_REDIS
export UPSTEP_TEST_SSHD=/usr/sbin/sshd

# Release the install lock: tests of two worktrees may run side by side.
exec 9>&-

# --- Checks ----------------------------------------------------------------------------------
note "cargo fmt --check"
cargo fmt --all -- --check
note "cargo clippy"
cargo clippy --all-targets -- -D warnings
note "cargo test"
# Library, binary and integration tests (no doc-tests: the crate has none, and their empty
# "0 passed" line would be the last one a reader sees). The total closes the output.
log=$(mktemp)
trap 'rm -f "$log"' EXIT
set +e
cargo test --lib --bins --tests 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
set -e
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i } }
     END { printf "tests: %d passed, %d failed\n", p, f }' "$log"
exit "$status"
