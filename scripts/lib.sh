# Shared by up.sh and test.sh: install what is missing on a Debian 12 machine (as root).
APT_PACKAGES="runc conmon containerd containernetworking-plugins nftables iptables conntrack
busybox-static docker-registry skopeo umoci etcd-server iproute2 prometheus ca-certificates
gcc libc6-dev"

install_apt_packages() {
    missing=""
    for p in $APT_PACKAGES; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
    done
    if [ -n "$missing" ]; then
        echo "installing apt packages:$missing"
        apt-get update -q
        # Debian's services must not start on install: kubenode starts what it needs itself.
        printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q $missing
        rm -f /usr/sbin/policy-rc.d
    fi
}

# install_venv EXTRAS: .venv with the project installed (editable), redone when pyproject.toml changes.
install_venv() {
    extras="$1"
    stamp=".venv/.kubenode-installed"
    want="$(sha256sum pyproject.toml | cut -d' ' -f1) $extras"
    if [ ! -x .venv/bin/python ]; then
        python3 -m venv .venv
    fi
    if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
        .venv/bin/pip install -q --upgrade pip
        .venv/bin/pip install -q -e ".$extras"
        echo "$want" > "$stamp"
    fi
}

require_root() {
    if [ "$(id -u)" != 0 ]; then
        echo "$0: run as root (sudo $0): it installs packages and runs containers" >&2
        exit 1
    fi
}
