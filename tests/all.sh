#!/usr/bin/env bash
# The whole test suite, as CI runs it (README: Tests):
#   1. python -m pytest -q                                        everything, on the Docker engine
#   2. OLLY_TEST_BUILDER=classic python -m pytest -q -m "docker and builder"
#                                                                 builder-sensitive tests on classic
#   3. OLLY_TEST_ENGINE=podman python -m pytest -q -m docker      the engine tests on Podman
# 3 runs alongside 1 and 2: another engine, so no image, tag or layer is shared (1 and 2 share
# dockerd's layer cache, so they run one after the other). Exit status: non-zero if any failed.
set -uo pipefail
cd "$(dirname "$0")/.."

podman_log=$(mktemp /tmp/olly-podman-pass.XXXXXX.log)
OLLY_TEST_ENGINE=podman python -m pytest -q -m docker -p no:cacheprovider --basetemp=/tmp/olly-podman-pass \
  >"$podman_log" 2>&1 &
podman_pid=$!

python -m pytest -q
main=$?
echo
OLLY_TEST_BUILDER=classic python -m pytest -q -m "docker and builder" -p no:cacheprovider
classic=$?

wait "$podman_pid"
podman=$?
echo
echo "== Podman pass (OLLY_TEST_ENGINE=podman python -m pytest -q -m docker) =="
cat "$podman_log"
rm -f "$podman_log"

echo
echo "tests: main $( ((main)) && echo FAILED || echo ok), classic builder $( ((classic)) && echo FAILED || echo ok), podman $( ((podman)) && echo FAILED || echo ok)"
exit $(( main || classic || podman ))
