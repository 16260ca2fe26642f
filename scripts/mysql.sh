#!/usr/bin/env bash
# Start a local MariaDB natively (no systemd, no Docker) for the MySQL tests: 127.0.0.1:3306, root
# without a password over TCP, database `test`. Installs Debian's server package when missing.
# Idempotent: does nothing but check when the server already answers.
set -euo pipefail
up() { (exec 3<>/dev/tcp/127.0.0.1/3306) 2>/dev/null; }
if ! up; then
  if ! command -v mariadbd >/dev/null 2>&1; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mariadb-server
  fi
  mkdir -p /run/mysqld && chown mysql:mysql /run/mysqld 2>/dev/null || true
  start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd -- --user=mysql
  for _ in $(seq 1 60); do up && break; sleep 0.5; done
  up || { echo "mysql.sh: MariaDB did not come up on 127.0.0.1:3306" >&2; exit 1; }
fi
# TCP root login with no password, as the tests connect (Debian's default is the unix socket only).
mariadb -uroot --protocol=socket -e "CREATE DATABASE IF NOT EXISTS test; \
  ALTER USER 'root'@'localhost' IDENTIFIED VIA mysql_native_password USING PASSWORD('') OR unix_socket; \
  CREATE USER IF NOT EXISTS 'root'@'127.0.0.1' IDENTIFIED BY ''; \
  GRANT ALL PRIVILEGES ON *.* TO 'root'@'127.0.0.1' WITH GRANT OPTION; FLUSH PRIVILEGES;" 2>/dev/null \
  || mariadb -uroot -h127.0.0.1 -e "CREATE DATABASE IF NOT EXISTS test"
mariadb -uroot -h127.0.0.1 -e "SELECT 1" >/dev/null
echo "MariaDB ready on 127.0.0.1:3306 (root, database test)"
