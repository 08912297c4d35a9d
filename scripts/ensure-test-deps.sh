#!/bin/sh
# Makes sure what the tests need is on this machine before they run, so that no test skips for want
# of it (npm runs this before `npm test`; .ci/run runs it too):
# - each Debian package in test/debian-packages.txt whose command is missing: installed with apt-get
#   when running as root, otherwise the run stops and names the exact command to run;
# - an open-files hard limit of at least 11,000 for the 5,000 connections of test/faults.test.ts
#   (`npm test` raises the soft limit to the hard one).
set -eu
cd "$(dirname "$0")/.."
LIST=test/debian-packages.txt
OPEN_FILES=11000

missing() {
  grep -v '^#' "$LIST" | while read -r package command; do
    [ -n "$package" ] || continue
    command -v "$command" >/dev/null 2>&1 || printf '%s ' "$package"
  done
}

packages=$(missing)
if [ -n "$packages" ]; then
  install="apt-get update && apt-get install -y --no-install-recommends ${packages% }"
  if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    echo "The tests need Debian packages that are not installed: ${packages% }" >&2
    echo "Install them as root, then run the tests again:  $install" >&2
    exit 1
  fi
  echo "Installing Debian packages the tests need: $install"
  # shellcheck disable=SC2086 # one word a package
  if ! (export DEBIAN_FRONTEND=noninteractive && apt-get update && apt-get install -y --no-install-recommends $packages); then
    echo "Could not install the Debian packages the tests need. Install them as root:  $install" >&2
    exit 1
  fi
  still=$(missing)
  if [ -n "$still" ]; then
    echo "Installed, but the commands of these packages are still missing (see $LIST): ${still% }" >&2
    exit 1
  fi
fi

hard=$(ulimit -Hn)
if [ "$hard" != unlimited ] && [ "$hard" -lt "$OPEN_FILES" ]; then
  echo "The open-files hard limit is $hard; test/faults.test.ts holds 5,000 connections and needs $OPEN_FILES." >&2
  echo "Raise it as root before running the tests:  ulimit -Hn $OPEN_FILES  (a container: docker run --ulimit nofile=$OPEN_FILES:$OPEN_FILES)" >&2
  exit 1
fi
