#!/usr/bin/env bash
# Install the external programs faultline's tests start for real: Prometheus and promtool,
# Alertmanager and amtool, Slurm (slurmctld, slurmd, scontrol) and munge, systemd-analyze (the
# units are verified), python3 (the progress module is tested from a real Python process), iproute2
# (ip and tc, for the network-namespace pingmesh test), and
# cargo-deb (tests/tests/packages.rs builds the .debs and installs them with dpkg).
# Needs root and apt (Debian/Ubuntu). Safe to run again.
set -euo pipefail
need=()
command -v prometheus >/dev/null || need+=(prometheus)
command -v promtool >/dev/null || need+=(prometheus)
command -v prometheus-alertmanager >/dev/null || command -v alertmanager >/dev/null || need+=(prometheus-alertmanager)
command -v amtool >/dev/null || need+=(prometheus-alertmanager)
command -v slurmctld >/dev/null || need+=(slurm-wlm)
command -v munged >/dev/null || need+=(munge)
command -v systemd-analyze >/dev/null || need+=(systemd)
command -v python3 >/dev/null || need+=(python3)
# ip and tc: the pingmesh test builds network namespaces, bridges and a lossy link (tests/tests/pingmesh_netns.rs).
command -v ip >/dev/null || need+=(iproute2)
command -v tc >/dev/null || need+=(iproute2)
if ((${#need[@]})); then
  if [[ $(id -u) -ne 0 ]] || ! command -v apt-get >/dev/null; then
    echo "install-test-deps: need root and apt-get to install: ${need[*]}" >&2
    exit 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  # Don't let package post-install scripts start services: the tests start their own.
  printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
  apt-get install -y -qq --no-install-recommends $(printf '%s\n' "${need[@]}" | sort -u)
  rm -f /usr/sbin/policy-rc.d
fi
# cargo-deb builds the packages in tests/tests/packages.rs (it is a cargo subcommand, not an apt package).
if ! cargo deb --version >/dev/null 2>&1; then
  cargo install cargo-deb --locked
fi
echo "install-test-deps: prometheus, alertmanager, slurm, munge, systemd-analyze, python3, iproute2 and cargo-deb present"
