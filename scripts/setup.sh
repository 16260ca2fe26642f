#!/usr/bin/env bash
# Create/refresh .venv with Airflow 3.3.2, this provider (editable) and the test tools.
# Idempotent: re-installs only when pyproject.toml or this script changed.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
AIRFLOW_VERSION=${AIRFLOW_VERSION:-3.3.2}
stamp=.venv/.installed-$(cat pyproject.toml scripts/setup.sh | sha256sum | cut -c1-16)
if [[ -f $stamp ]]; then exit 0; fi
# mysqlclient (MySQL provider) compiles against the MariaDB client headers: Debian's libmariadb-dev.
if ! pkg-config --exists libmariadb 2>/dev/null && ! pkg-config --exists mysqlclient 2>/dev/null; then
  if [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libmariadb-dev pkg-config
  else
    echo "setup: install the MariaDB client headers first (Debian: apt-get install libmariadb-dev pkg-config)" >&2
    exit 1
  fi
fi
if [[ ! -x .venv/bin/python ]]; then
  "$PY" -c 'import sys; assert sys.version_info >= (3, 10), "Python >= 3.10 needed"'
  "$PY" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e ".[dev,postgres,mysql,redis]" "apache-airflow==${AIRFLOW_VERSION}"
rm -f .venv/.installed-*
touch "$stamp"
