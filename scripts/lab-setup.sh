#!/bin/sh
# Install the Debian packages `multa lab run` uses (run as root).
#
#   scripts/lab-setup.sh          # every scenario
#   scripts/lab-setup.sh --ci     # only what the CI small lab needs
#
# Daemons from these packages must not start in the root namespace: the lab
# starts its own copies inside network namespaces. A policy-rc.d that refuses
# service starts is put in place for the install (and removed again if it was
# not there before).
set -eu

CI_PACKAGES="iproute2 ethtool tcpdump curl nmap nginx-light iptables"
ALL_PACKAGES="$CI_PACKAGES
  wget openssl dnsmasq bind9-dnsutils
  openssh-server openssh-client vsftpd lftp
  swaks python3-aiosmtpd mosquitto mosquitto-clients redis-server redis-tools
  openvpn wireguard-go wireguard-tools iodine
  strongswan-charon strongswan-swanctl libcharon-extra-plugins
  hydra hping3 slowhttptest sqlmap wapiti wfuzz
  postgresql postgresql-client mariadb-server mariadb-client samba smbclient
  inetutils-inetd inetutils-telnetd telnet tigervnc-standalone-server tigervnc-tools vncsnapshot
  snmpd snmp rsyslog dovecot-imapd dovecot-pop3d apache2 apache2-utils lighttpd unbound bind9
  masscan wrk busybox ntpsec-ntpdate sntp kamailio sipsak sipvicious postfix
  tor opentracker mktorrent transmission-cli aria2
  ngtcp2-server ngtcp2-client httptunnel ptunnel-ng"
# The quic-aioquic scenario's aioquic is a Python package: pip install -e '.[lab]'.
# chronyd (the ntp scenario's server) is unpacked, not installed: Debian's chrony package conflicts
# with systemd-timesyncd (one time daemon per system) and the lab must not replace the host's.
CHRONY_DIR=/opt/multa-lab/chrony
# The c2-pwncat scenario's handler, pwncat-cs from PyPI, pins dependencies that do not fit multa's
# environment: it gets a virtual environment of its own. setuptools >= 70 lets its database's
# entry points find zope.interface (older pkg_resources does not).
PWNCAT_DIR=/opt/multa-lab/pwncat

case "${1:-}" in
  --ci) PACKAGES="$CI_PACKAGES" ;;
  "") PACKAGES="$ALL_PACKAGES" ;;
  *) echo "usage: $0 [--ci]" >&2; exit 2 ;;
esac

if [ "$(id -u)" != 0 ]; then
  echo "lab-setup: must run as root (apt-get install)" >&2
  exit 1
fi

created_policy=""
if [ ! -e /usr/sbin/policy-rc.d ]; then
  printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
  chmod 755 /usr/sbin/policy-rc.d
  created_policy=1
fi
cleanup() { if [ -n "$created_policy" ]; then rm -f /usr/sbin/policy-rc.d; fi; }
trap cleanup EXIT

export DEBIAN_FRONTEND=noninteractive
apt-get update -q
# Postfix is installed unconfigured: the lab writes its own main.cf; the host gets no mail system.
if command -v debconf-set-selections >/dev/null; then
  echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
fi
# shellcheck disable=SC2086
apt-get install -y -q --no-install-recommends $PACKAGES
if [ "$PACKAGES" = "$ALL_PACKAGES" ] && [ ! -x "$CHRONY_DIR/usr/sbin/chronyd" ]; then
  tmp=$(mktemp -d)
  chmod 755 "$tmp"
  if (cd "$tmp" && apt-get download -q chrony) && mkdir -p "$CHRONY_DIR" \
      && dpkg-deb -x "$tmp"/chrony_*.deb "$CHRONY_DIR"; then
    echo "lab-setup: unpacked chronyd into $CHRONY_DIR (not installed; the host's time daemon is untouched)"
  else
    echo "lab-setup: could not unpack chrony: the ntp scenario will be skipped" >&2
  fi
  rm -rf "$tmp"
fi
if [ "$PACKAGES" = "$ALL_PACKAGES" ] && [ ! -x "$PWNCAT_DIR/bin/python" ]; then
  if python3 -m venv "$PWNCAT_DIR" \
      && "$PWNCAT_DIR/bin/pip" install -q pwncat-cs==0.5.4 zope.interface "setuptools>=70,<81"; then
    echo "lab-setup: pwncat-cs in $PWNCAT_DIR"
  else
    echo "lab-setup: could not install pwncat-cs: the c2-pwncat scenario will be skipped" >&2
  fi
fi
echo "lab-setup: installed: $(echo $PACKAGES | tr -s ' \n' ' ')"
