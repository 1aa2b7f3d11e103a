#!/usr/bin/env bash
# The layer rules of ARCHITECTURE.md ("Module rules") that a script can see.
# Prints every violation as `layers: <rule>: <file>:<line>: <code>` and exits 1
# if there is any; prints `layers: ok` and exits 0 otherwise. Cheap (grep only):
# ci/test.sh runs it before any build.
# Usage: ci/layers.sh            (from anywhere inside the repository)
set -euo pipefail
cd "$(dirname "$0")/.."

# The engine and the protocol beside it: they may import no service.
ENGINE_DIRS="core/src/engine core/src/p2p"
# The services (present and reserved) the engine must not name.
SERVICES="rma|rpc|coll|dsm|io|ckpt"
# The only core files that may name a concrete transport backend: the
# selector that builds the routes (core/src/select.rs; any file named
# select*.rs or selector*.rs under core/src counts as the selector) and the
# users of the node's shared segment itself, which is not a route to a peer
# but memory every rank of the node maps: the node collectives' slots
# (coll/slot.rs, coll/node.rs) and the engine's accessor to it
# (engine/routes.rs, `Engine::shm`). No other backend has such a thing.
SELECTOR_FILES=""
NODE_SHM_FILES="core/src/coll/slot.rs core/src/coll/node.rs core/src/engine/routes.rs"
# What naming a concrete backend looks like.
BACKEND_NAMES='\b(as_tcp|as_roce|as_verbs|as_shm|as_loopback|TcpIface|RoceIface|VerbsIface|ShmIface|LoopbackIface)\b|dos_transport::(tcp|roce|verbs|loopback)::'

failed=0

# grep -rnE over Rust sources, without comment lines (docs may mention anything).
code_grep() { # pattern path...
    local pat=$1
    shift
    grep -rnE --include='*.rs' -e "$pat" "$@" 2>/dev/null |
        grep -vE '^[^:]+:[0-9]+:[[:space:]]*//' || true
}

report() { # rule, lines
    local rule=$1 lines=$2
    [ -z "$lines" ] && return 0
    while IFS= read -r l; do
        printf 'layers: %s: %s\n' "$rule" "$l"
    done <<<"$lines"
    failed=1
}

# 1. The engine imports no service (services register with it; see
#    core/src/engine/am.rs and core/src/services.rs).
hits=$(code_grep "crate::($SERVICES)\b|super::super::($SERVICES)\b|crate::\{[^}]*\b($SERVICES)\b" $ENGINE_DIRS)
report "the engine imports a service (register it in core/src/services.rs instead)" "$hits"

# 2. Transport is mechanism: it never imports core (nor the launcher).
hits=$(code_grep '(^|[^[:alnum:]_])(dos|dos_launcher)::|extern crate dos\b|use dos(_launcher)?\b' transport/src)
report "transport imports core or the launcher" "$hits"
hits=$(grep -nE '^[[:space:]]*(dos|dos-launcher)[[:space:]]*=' transport/Cargo.toml || true)
report "transport depends on core or the launcher" "${hits:+transport/Cargo.toml:$hits}"
# ... and core never imports the launcher.
hits=$(code_grep '\bdos_launcher\b' core/src)
report "core imports the launcher" "$hits"

# 3. Only the transport selector names backends.
allowed=" $SELECTOR_FILES $NODE_SHM_FILES "
# (A log target in a string, "dos_transport::tcp::connect", names a module, not a backend.)
hits=$(code_grep "$BACKEND_NAMES" core/src | grep -vE '"dos_transport::' | while IFS= read -r l; do
    f=${l%%:*}
    base=$(basename "$f")
    case "$allowed" in *" $f "*) continue ;; esac
    case "$base" in select*.rs | selector*.rs) continue ;; esac
    printf '%s\n' "$l"
done)
report "core names a concrete backend outside the selector (ask the transport traits)" "$hits"

if [ "$failed" -ne 0 ]; then
    echo "layers: FAILED: a layer rule is broken (see ARCHITECTURE.md, \"Module rules\")" >&2
    exit 1
fi
echo "layers: ok"
