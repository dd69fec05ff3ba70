#!/bin/sh
# run.sh — builds the toolstack and starts it on this machine with the
# simulator backend, in the background.
#
#   ./run.sh          build, then start (or report the running daemon)
#   ./run.sh stop     stop it
#
# It listens on http://127.0.0.1:8080 (XML-RPC on / and /RPC2, JSON-RPC on
# /jsonrpc), https://127.0.0.1:8443 and the Unix socket state/xapi.sock.
# The state directory (database, certificate, root password) is ./state,
# or $XAPI_STATE_DIR.  On first start a random root password is written to
# state/root-password.  Ports: $XAPI_PORT, $XAPI_TLS_PORT.
set -e
top=$(cd "$(dirname "$0")" && pwd)
state=${XAPI_STATE_DIR:-$top/state}
port=${XAPI_PORT:-8080}
tls_port=${XAPI_TLS_PORT:-8443}
pidfile=$state/xapi.pid

running() {
    [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null
}

if [ "${1:-start}" = stop ]; then
    if running; then
        kill "$(cat "$pidfile")"
        echo "xapi stopped"
    else
        echo "xapi is not running"
    fi
    rm -f "$pidfile"
    exit 0
fi

"$top/scripts/install-deps.sh" build
"$top/scripts/build.sh" "$top/build"
mkdir -p "$state"
chmod 700 "$state"
if [ ! -s "$state/root-password" ]; then
    (umask 077; openssl rand -hex 12 > "$state/root-password")
fi
if running; then
    echo "xapi is already running (pid $(cat "$pidfile")); ./run.sh stop to stop it"
else
    : > "$state/xapi.log"
    nohup "$top/build/xapi/xapi" --state-dir "$state" \
        --listen "127.0.0.1:$port" --listen-tls "127.0.0.1:$tls_port" \
        --backend sim --root-password-file "$state/root-password" \
        >>"$state/xapi.log" 2>&1 &
    echo $! > "$pidfile"
    i=0
    until grep -q '^xapi ready' "$state/xapi.log"; do
        i=$((i + 1))
        if [ $i -gt 100 ] || ! running; then
            echo "xapi failed to start:" >&2
            cat "$state/xapi.log" >&2
            exit 1
        fi
        sleep 0.1
    done
    grep '^xapi ready' "$state/xapi.log"
fi
pw=$(cat "$state/root-password")
cat <<EOT
Log in as root with the password in $state/root-password ($pw), e.g.
  curl -s http://127.0.0.1:$port/jsonrpc -H 'Content-Type: application/json' \\
    -d '{"jsonrpc":"2.0","method":"session.login_with_password","params":["root","$pw"],"id":1}'
  python3 -c "import xmlrpc.client as x; s=x.ServerProxy('http://127.0.0.1:$port'); print(s.session.login_with_password('root','$pw'))"
Logs: $state/xapi.log.  Stop: ./run.sh stop
EOT
