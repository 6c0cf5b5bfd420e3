#!/usr/bin/env bash
# Build a minimal Debian 12 box for vagrant-libvirt from Debian packages only (no box download),
# cached between runs, and add it to Vagrant as llmvirt/bookworm.
#
# The box is an ext4 file system on the whole disk (no partition table, no boot loader): the
# machines boot its kernel directly (the Vagrantfile passes kernel, initrd and command line, which
# this script extracts next to the box). It holds systemd, SSH with the vagrant user and Vagrant's
# insecure key (Vagrant swaps it on first boot), sudo, ifupdown + DHCP, and the packages the
# provisioning installs (libvirt, QEMU, NFS), so that `vagrant up` under TCG takes minutes rather
# than an apt-get install per machine; provisioning still runs the same apt-get line.
#
# Usage: vagrant/build-box.sh            (prints the directory holding the kernel and initrd)
# Env:   LLMVIRT_BOX_CACHE (default ~/.cache/llmvirt/box), DEBIAN_MIRROR (default deb.debian.org)
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
CACHE=${LLMVIRT_BOX_CACHE:-$HOME/.cache/llmvirt/box}
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
BOX_NAME=llmvirt/bookworm
DISK_GIB=6
PACKAGES=(systemd-sysv udev dbus linux-image-cloud-amd64 initramfs-tools openssh-server sudo ifupdown
          isc-dhcp-client iproute2 netbase ca-certificates procps less rsync python3
          libvirt-daemon-system libvirt-clients qemu-system-x86 qemu-utils nfs-kernel-server nfs-common)

# the cache key: this script (package list and configuration) and the mirror
KEY=$(cat "$0" <(echo "$MIRROR") | sha256sum | cut -c1-16)
OUT=$CACHE/$KEY
if [ -f "$OUT/llmvirt-bookworm.box" ]; then
  echo "box cached: $OUT" >&2
else
  for tool in mmdebstrap mke2fs qemu-img; do
    command -v "$tool" >/dev/null || { echo "build-box: $tool not found (apt-get install mmdebstrap e2fsprogs qemu-utils)" >&2; exit 2; }
  done
  WORK=$(mktemp -d)
  trap 'rm -rf "$WORK"' EXIT
  ROOT=$WORK/root
  INSECURE_KEY=$(find /usr/share -path '*vagrant*/keys/vagrant.pub' 2>/dev/null | head -n1)
  [ -n "$INSECURE_KEY" ] || { echo "build-box: Vagrant's insecure key not found (apt-get install vagrant)" >&2; exit 2; }
  t0=$(date +%s)
  mmdebstrap --quiet --variant=minbase --include="$(IFS=,; echo "${PACKAGES[*]}")" \
    --aptopt='APT::Install-Recommends "false"' \
    --customize-hook='echo "llmvirt-box" > "$1/etc/hostname"' \
    --customize-hook='printf "/dev/vda / ext4 defaults,errors=remount-ro 0 1\n" > "$1/etc/fstab"' \
    --customize-hook='printf "auto lo\niface lo inet loopback\n\nallow-hotplug eth0\niface eth0 inet dhcp\n" > "$1/etc/network/interfaces"' \
    --customize-hook='chroot "$1" useradd -m -s /bin/bash -G sudo vagrant' \
    --customize-hook='echo "vagrant:vagrant" | chroot "$1" chpasswd' \
    --customize-hook='printf "vagrant ALL=(ALL) NOPASSWD:ALL\nDefaults:vagrant !requiretty\n" > "$1/etc/sudoers.d/vagrant"' \
    --customize-hook='chmod 440 "$1/etc/sudoers.d/vagrant"' \
    --customize-hook="install -d -m 700 \"\$1/home/vagrant/.ssh\" && install -m 600 $INSECURE_KEY \"\$1/home/vagrant/.ssh/authorized_keys\"" \
    --customize-hook='chroot "$1" chown -R vagrant:vagrant /home/vagrant/.ssh' \
    --customize-hook='rm -f "$1"/etc/ssh/ssh_host_*' \
    --customize-hook='install -d "$1/etc/systemd/system/ssh.service.d" && printf "[Service]\nExecStartPre=\nExecStartPre=/usr/bin/ssh-keygen -A\nExecStartPre=/usr/sbin/sshd -t\n" > "$1/etc/systemd/system/ssh.service.d/host-keys.conf"' \
    --customize-hook='printf "UseDNS no\n" > "$1/etc/ssh/sshd_config.d/vagrant.conf"' \
    --customize-hook='chroot "$1" systemctl enable ssh' \
    --customize-hook='rm -f "$1/etc/machine-id" && touch "$1/etc/machine-id"' \
    --customize-hook='cp "$1"/boot/vmlinuz-* '"$WORK"'/vmlinuz && cp "$1"/boot/initrd.img-* '"$WORK"'/initrd.img' \
    bookworm "$ROOT" "$MIRROR"
  t1=$(date +%s)
  truncate -s "${DISK_GIB}G" "$WORK/disk.raw"
  mke2fs -q -t ext4 -L root -d "$ROOT" "$WORK/disk.raw"
  mkdir -p "$WORK/box"
  qemu-img convert -O qcow2 "$WORK/disk.raw" "$WORK/box/box.img"
  printf '{"provider": "libvirt", "format": "qcow2", "virtual_size": %d}\n' "$DISK_GIB" >"$WORK/box/metadata.json"
  printf 'Vagrant.configure("2") do |config|\n  config.vm.provider :libvirt do |lv|\n    lv.driver = "qemu"\n  end\nend\n' \
    >"$WORK/box/Vagrantfile"
  mkdir -p "$OUT.tmp"
  tar -C "$WORK/box" -cf "$OUT.tmp/llmvirt-bookworm.box" metadata.json Vagrantfile box.img
  cp "$WORK/vmlinuz" "$WORK/initrd.img" "$OUT.tmp/"
  rm -rf "$OUT" && mv "$OUT.tmp" "$OUT"
  t2=$(date +%s)
  echo "box built in $((t2 - t0)) s (mmdebstrap $((t1 - t0)) s, image $((t2 - t1)) s): $OUT" >&2
fi
ln -sfn "$OUT" "$CACHE/current"
# QEMU runs as libvirt-qemu and cannot read a home directory: the kernel and initrd it boots live here
BOOT_DIR=${LLMVIRT_BOX_BOOT_DIR:-/var/lib/libvirt/boot/llmvirt-bookworm}
install -d -m 755 "$BOOT_DIR"
install -m 644 "$OUT/vmlinuz" "$OUT/initrd.img" "$BOOT_DIR/"
# (re-)add the box when Vagrant lacks it or holds an older build
if [ "$(cat "$CACHE/added" 2>/dev/null)" != "$KEY" ] || ! vagrant box list 2>/dev/null | grep -q "^$BOX_NAME "; then
  # vagrant-libvirt keeps each added box as a volume in the default pool: drop the older builds' volumes,
  # unless a Vagrant machine exists (its disk is a snapshot backed by one of them)
  if ! virsh -q -c qemu:///system list --all --name 2>/dev/null | grep -q '^vagrant_'; then
    for vol in $(virsh -q -c qemu:///system vol-list default 2>/dev/null | awk '/^llmvirt-VAGRANTSLASH-bookworm_vagrant_box/ {print $1}'); do
      virsh -q -c qemu:///system vol-delete --pool default "$vol" >/dev/null 2>&1 || true
    done
  fi
  vagrant box add --force --name "$BOX_NAME" "$OUT/llmvirt-bookworm.box" >&2
  echo "$KEY" >"$CACHE/added"
fi
echo "$BOOT_DIR"
