#!/usr/bin/env bash
# make container-check: build the image on a local Debian bookworm base, then in containers train the
# models on small data, serve it on loopback, decide one case over HTTP and stop. Needs root (dockerd,
# debootstrap) and takes several minutes, so it is not part of `make test`.
#
# Container registries cannot be reached here, so the base is a stand-in: a debootstrap'ed bookworm
# (python:3.11-slim-bookworm is bookworm too); the Dockerfile installs Debian's python3.11 where the
# base has none. Build and run always use the host network (no bridge networking on these machines).
set -euo pipefail

IMAGE=${IMAGE:-keel:check}
BASE_TAG=${BASE_TAG:-keel-base:bookworm-minbase}
ROOTFS=${ROOTFS:-/var/tmp/keel-bookworm-rootfs}
PORT=${PORT:-3917}
STATE=keel-check-$$
cd "$(dirname "$0")/.."

say() { printf '\n== %s\n' "$*"; }

need_tools() {
  command -v dockerd > /dev/null && command -v debootstrap > /dev/null && return
  say "installing docker.io and debootstrap from Debian"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker.io debootstrap > /dev/null
}

start_dockerd() {
  docker info > /dev/null 2>&1 && return
  say "starting dockerd (log: /var/tmp/keel-dockerd.log)"
  nohup dockerd > /var/tmp/keel-dockerd.log 2>&1 &
  for _ in $(seq 60); do docker info > /dev/null 2>&1 && return; sleep 1; done
  echo "dockerd did not start; see /var/tmp/keel-dockerd.log" >&2
  exit 1
}

debian_mirror() {
  # The mirror apt already uses (deb822 .sources or one-line .list files).
  grep -hsE '^(URIs:|deb )' /etc/apt/sources.list /etc/apt/sources.list.d/* \
    | grep -v security | head -1 | sed -E 's/^URIs: *//; s/^deb (\[[^]]*\] )?//; s/ .*//'
}

base_image() {
  docker image inspect "$BASE_TAG" > /dev/null 2>&1 && return
  if [ ! -x "$ROOTFS/usr/bin/apt-get" ]; then
    mirror=$(debian_mirror)
    say "debootstrap --variant=minbase bookworm $ROOTFS $mirror"
    rm -rf "$ROOTFS"
    debootstrap --variant=minbase bookworm "$ROOTFS" "$mirror" > /var/tmp/keel-debootstrap.log
  fi
  say "docker import $ROOTFS as $BASE_TAG"
  tar -C "$ROOTFS" -c . | docker import - "$BASE_TAG" > /dev/null
}

cleanup() {
  docker rm -f "$STATE-serve" > /dev/null 2>&1 || true
  docker volume rm "$STATE" > /dev/null 2>&1 || true
}

need_tools
start_dockerd
base_image
trap cleanup EXIT

say "docker build --network host --build-arg BASE=$BASE_TAG -t $IMAGE ."
started=$SECONDS
# This machine reaches PyPI through a TLS-intercepting proxy whose CA the host trusts; the build
# trusts it for the dependency download only (see EXTRA_CA_CERTS in the Dockerfile).
extra_ca=$(cat /usr/local/share/ca-certificates/*.crt 2> /dev/null || true)
docker build --network host --build-arg "BASE=$BASE_TAG" --build-arg "EXTRA_CA_CERTS=$extra_ca" \
  -t "$IMAGE" .
echo "built in $((SECONDS - started)) s"

run() { docker run --rm --network host -v "$STATE:/data" "$IMAGE" "$@"; }

say "in the image: lightgbm loads (libgomp1), keel --version, user"
run python -c "import lightgbm; print('lightgbm', lightgbm.__version__)"
run keel --version
run id -u

# keel serve serves every model holding `champion`. On 3,000 rows invoice_classification certifies a
# threshold; discount_band and routing need more data than a quick check should spend (keel train
# exits 1 for a version that certifies nothing and never makes it champion).
say "in a container: keel train invoice_classification on 3000 generated rows"
run keel train invoice_classification --rows 3000
run keel status
key=$(run keel keys add check --role decide read | sed -n 's/^export KEEL_KEY=//p')
[ -n "$key" ] || { echo "no key printed" >&2; exit 1; }

say "in a container: keel serve on 127.0.0.1:$PORT"
docker run -d --name "$STATE-serve" --network host -v "$STATE:/data" \
  -e KEEL_SERVE_HOST=127.0.0.1 -e KEEL_SERVE_PORT="$PORT" "$IMAGE" > /dev/null
for _ in $(seq 120); do
  curl -fsS "http://127.0.0.1:$PORT/readyz" > /dev/null 2>&1 && break
  if [ "$(docker inspect -f '{{.State.Running}}' "$STATE-serve")" != true ]; then
    docker logs "$STATE-serve"; exit 1
  fi
  sleep 1
done
docker logs "$STATE-serve" 2>&1 | tail -5
curl -fsS "http://127.0.0.1:$PORT/readyz" > /dev/null || { echo "keel serve not ready in 120 s" >&2; exit 1; }

say "decide one case over loopback"
case_json=$(run python -c "import json; from keel.feature_defs.contract import load_contract; \
print(json.dumps({'cases': [load_contract('invoice_classification').example_case]}))")
answer=$(curl -fsS -X POST "http://127.0.0.1:$PORT/v1/invoice_classification/decide" \
  -H "Authorization: Bearer $key" -H "Content-Type: application/json" -d "$case_json")
echo "$answer" | python3 -c "import json, sys; d = json.load(sys.stdin)['decisions'][0]; \
print('decision', d['decision_id'], 'outcome', d['outcome'], 'route', d['route'], \
'confidence', round(d['confidence'], 3), 'versions', d['versions'])"

say "stop"
docker stop -t 20 "$STATE-serve" > /dev/null
echo "container-check passed"
