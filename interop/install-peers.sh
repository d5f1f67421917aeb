#!/usr/bin/env bash
# Installs the build dependencies (libssl-dev and pkg-config: the DTLS engine links the system
# libssl 3) and the real peers the tests talk to: Debian packages (SIPp, baresip, Kamailio with
# TLS, tshark, stunnel, TLS scanners, rtpengine, openssl, systemd-analyze, SoftHSM, valgrind for
# the instruction-count check) and PyPI
# packages (pylibsrtp, aiortc, websockets). Idempotent; uses sudo when not run as root.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"

debs=(libssl-dev pkg-config sip-tester baresip kamailio kamailio-tls-modules tshark stunnel4 sslscan testssl.sh
      rtpengine-daemon openssl curl systemd softhsm2 iproute2 sox valgrind)
missing=()
for p in "${debs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing Debian packages: ${missing[*]}"
  $SUDO apt-get update -qq
  # Debian's tshark asks whether non-root users may capture; answer for it.
  echo "wireshark-common wireshark-common/install-setuid boolean false" | $SUDO debconf-set-selections
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# Debian enables rtpengine and kamailio as services; the tests start their own instances.
for s in rtpengine-daemon ngcp-rtpengine-daemon kamailio; do
  $SUDO systemctl disable --now "$s" >/dev/null 2>&1 || true
done

python3 -m pip install --quiet --disable-pip-version-check -r "$here/requirements.txt"
echo "peers installed"
