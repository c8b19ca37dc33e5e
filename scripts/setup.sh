#!/usr/bin/env bash
# Creates .venv/ in the repository root and installs everything relidar needs from its own files
# (requirements.txt pins, then relidar itself in editable mode). Idempotent: with nothing changed a
# second run takes a second.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  echo "relidar setup: creating .venv with $($PYTHON --version)"
  "$PYTHON" -m venv .venv
fi
pip_quiet() {
  # This machine's pip configuration lists local wheel folders that lack some projects; pip warns
  # about each of them, which is noise here.
  .venv/bin/python -m pip "$@" 2> >(grep -v "is ignored: it is neither a file nor a directory" >&2)
}
deps_stamp=".venv/.relidar-deps-$(cat requirements.txt requirements-runtime.txt | sha256sum | cut -c1-16)"
if [ ! -f "$deps_stamp" ]; then
  echo "relidar setup: installing requirements.txt into .venv (several GB the first time)"
  pip_quiet install --quiet --upgrade pip
  pip_quiet install --quiet -r requirements.txt
  rm -f .venv/.relidar-deps-*
  touch "$deps_stamp"
fi
pkg_stamp=".venv/.relidar-pkg-$(cat pyproject.toml ros2_ws/src/relidar_ros/setup.py | sha256sum | cut -c1-16)"
if [ ! -f "$pkg_stamp" ]; then
  pip_quiet install --quiet --no-deps --no-build-isolation -e .
  # The ROS package beside the core, so `relidar replay`, `relidar bench node` and the tests import it
  # (a ROS install builds it with colcon instead; see the README's ROS section).
  pip_quiet install --quiet --no-deps --no-build-isolation -e ros2_ws/src/relidar_ros
  rm -f .venv/.relidar-pkg-*
  touch "$pkg_stamp"
fi
# Headless Chromium for the viewer's browser test (tests/cli/test_viewer.py screenshots `relidar view`'s
# page); Debian's package, installed where apt-get runs as root. Elsewhere that test skips, saying why.
if ! command -v chromium >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  echo "relidar setup: installing chromium (Debian package) for the viewer's browser test"
  if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }; then
    echo "relidar setup: chromium could not be installed; tests/cli/test_viewer.py's browser test will skip" >&2
  fi
fi
