#!/bin/sh
# Builds the supermq Docker image and runs supermq in containers.
#
# There is no image registry to pull from: the image is built FROM scratch out of our own
# statically linked binary (see Dockerfile). Run ./docker.sh --help for the commands.
set -eu

usage() {
    cat <<'HELP'
Usage: ./docker.sh [COMMAND] [OPTIONS]

Commands:
  run       (the default) build the image if it does not exist yet, then start a standalone
            node in the background as container "supermq", replacing one of that name;
            MQTT on host port 1883, MQTT over WebSocket on 8083 (path /mqtt); its store
            (sessions, retained messages) on the volume NAME-data, kept when it is replaced
  build     build the static binary and the image supermq:latest, and nothing else
  stop      stop and remove the standalone container
  logs      follow the standalone container's log
  cluster   build the image if needed, then run docker compose on
            docker-compose-cluster.yaml with the rest of the arguments
            (default "up -d"; e.g. "./docker.sh cluster down", "./docker.sh cluster ps")

Options of run:
  --name NAME       container name (default supermq)
  --mqtt-port PORT  host port for MQTT over TCP (default 1883)
  --ws-port PORT    host port for MQTT over WebSocket (default 8083)

Configuration: every SUPERMQ_<SECTION>_<KEY> variable in this script's environment is passed to
the container, where it overrides /etc/supermq/appserver.conf, e.g.
  SUPERMQ_LOG_LEVEL=debug SUPERMQ_LIMITS_MAX_CONNECTIONS=5000 ./docker.sh run

Both "docker compose" and the older "docker-compose" are supported.
HELP
}

repo=$(cd "$(dirname "$0")" && pwd)
image=supermq:latest
target=x86_64-unknown-linux-gnu

# The static binary: glibc linked statically (static-pie). glibc's own "files" and "dns" host
# lookups are built in, so container names resolve without any shared library in the image.
build() {
    target_dir=${CARGO_TARGET_DIR:-"$repo/target"}
    echo "== building the static binary (cargo build --release --target $target)"
    # A small image: no debug information (the release profile keeps some for profiling).
    (cd "$repo" && RUSTFLAGS='-C target-feature=+crt-static' \
        CARGO_PROFILE_RELEASE_DEBUG=0 CARGO_PROFILE_RELEASE_STRIP=true \
        cargo build --locked --release --target "$target")
    binary="$target_dir/$target/release/supermq"
    # FROM scratch has no dynamic loader: a dynamically linked binary would not even start.
    # ldd (always there with glibc) says "statically linked" or "not a dynamic executable";
    # file(1), where installed, must agree.
    if ! ldd "$binary" 2>&1 | grep -q 'statically linked\|not a dynamic executable'; then
        echo "docker.sh: $binary is not statically linked; it needs:" >&2
        ldd "$binary" >&2
        exit 1
    fi
    if command -v file >/dev/null && ! file "$binary" | grep -q 'static-pie linked\|statically linked'; then
        echo "docker.sh: $binary is not statically linked: $(file "$binary")" >&2
        exit 1
    fi
    # The build context holds just what the image needs.
    context="$target_dir/docker-context"
    rm -rf "$context"
    mkdir -p "$context/data"
    cp "$binary" "$context/supermq"
    cp "$repo/config/appserver.conf" "$context/appserver.conf"
    echo "== building the image $image"
    docker build --quiet -t "$image" -f "$repo/Dockerfile" "$context"
    echo "built $image ($(docker image inspect -f '{{.Size}}' "$image") bytes)"
}

build_if_missing() {
    docker image inspect "$image" >/dev/null 2>&1 || build
}

compose() {
    if docker compose version >/dev/null 2>&1; then
        docker compose "$@"
    elif command -v docker-compose >/dev/null 2>&1; then
        docker-compose "$@"
    else
        echo "docker.sh: neither \"docker compose\" nor \"docker-compose\" is installed" >&2
        exit 1
    fi
}

run() {
    name=supermq
    mqtt_port=1883
    ws_port=8083
    while [ $# -gt 0 ]; do
        case "$1" in
            --name) name=${2:?--name needs a value}; shift 2 ;;
            --mqtt-port) mqtt_port=${2:?--mqtt-port needs a value}; shift 2 ;;
            --ws-port) ws_port=${2:?--ws-port needs a value}; shift 2 ;;
            *) echo "docker.sh run: unknown option $1 (see ./docker.sh --help)" >&2; exit 2 ;;
        esac
    done
    build_if_missing
    docker rm -f "$name" >/dev/null 2>&1 || true
    # Pass every SUPERMQ_ variable by name: docker reads its value from our environment.
    set --
    for variable in $(env | sed -n 's/^\(SUPERMQ_[A-Z0-9_]*\)=.*/\1/p'); do
        set -- "$@" -e "$variable"
    done
    # The store on a named volume of the container's name: replacing the container (as this
    # command does) keeps the sessions and retained messages.
    docker run -d --name "$name" --restart unless-stopped \
        -v "$name-data:/var/lib/supermq" \
        -p "$mqtt_port:1883" -p "$ws_port:8083" "$@" "$image" >/dev/null
    echo "supermq runs as container $name: MQTT on localhost:$mqtt_port, WebSocket on ws://localhost:$ws_port/mqtt"
    echo "store: volume $name-data (docker volume rm $name-data to start afresh)"
    echo "log: docker logs -f $name    stop: ./docker.sh stop"
}

command=${1:-run}
[ $# -gt 0 ] && shift
case "$command" in
    -h | --help | help) usage ;;
    build) build ;;
    run) run "$@" ;;
    stop) docker rm -f supermq >/dev/null && echo "supermq stopped and removed" ;;
    logs) docker logs -f supermq ;;
    cluster)
        build_if_missing
        [ $# -eq 0 ] && set -- up -d
        compose -f "$repo/docker-compose-cluster.yaml" "$@"
        ;;
    *) echo "docker.sh: unknown command $command (see ./docker.sh --help)" >&2; exit 2 ;;
esac
