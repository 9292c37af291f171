#!/usr/bin/env bash
# Give the syslog forwarder's tests a real receiver: Debian's rsyslog (imtcp, RFC 6587 octet
# counting) and rsyslog-gnutls (its TLS netstream driver). Tests run their own private
# rsyslogd (tests/rsyslog.py): the system's service must not run, nor hold /dev/log or ports.
# Idempotent: installs only what is missing. Needs root (apt-get, kill). Used by tests/run-all.sh.
set -euo pipefail
installed() { [ "$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null)" = "install ok installed" ]; }
if ! installed rsyslog || ! installed rsyslog-gnutls; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq rsyslog rsyslog-gnutls >/dev/null
fi

# The package's postinst starts the system service where an init allows it (no policy-rc.d):
# stop it and keep it from starting at boot. Only the system daemon (its pid file
# /run/rsyslogd.pid), never a test's private rsyslogd (each has its own pid file).
if [ -d /run/systemd/system ]; then
  systemctl disable --now rsyslog.service >/dev/null 2>&1 || true
else
  update-rc.d rsyslog disable >/dev/null 2>&1 || true
fi
if [ -f /run/rsyslogd.pid ]; then
  pid="$(cat /run/rsyslogd.pid)"
  if [ -n "$pid" ] && [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = rsyslogd ]; then
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
  fi
  rm -f /run/rsyslogd.pid
fi
echo "receivers: $(/usr/sbin/rsyslogd -v 2>/dev/null | awk 'NR == 1 {print $1, $2}'), with gtls"
