#!/usr/bin/env bash
# Provision one llmvirt Vagrant host: libvirt + QEMU, shared image storage over NFS (kvm1 serves),
# root SSH keys shared between the hosts (a throwaway lab key), llmvirt installed with the README's
# set-up script, and every host registered over qemu+ssh.
set -euo pipefail
NAME=$1
PEERS=$2   # kvm1=192.168.121.11,kvm2=...

export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq make nfs-kernel-server nfs-common

IFS=, read -ra PAIRS <<<"$PEERS"
for pair in "${PAIRS[@]}"; do
  host=${pair%%=*}; ip=${pair#*=}
  grep -q " $host\$" /etc/hosts || echo "$ip $host" >>/etc/hosts
done

# Shared storage: kvm1 exports the image directory, the others mount it at the same path.
install -d /var/lib/libvirt/images
if [ "$NAME" = "kvm1" ]; then
  grep -q "/var/lib/libvirt/images" /etc/exports ||
    echo "/var/lib/libvirt/images 192.168.121.0/24(rw,sync,no_root_squash,no_subtree_check)" >>/etc/exports
  exportfs -ra
  systemctl enable --now nfs-server
else
  grep -q "kvm1:/var/lib/libvirt/images" /etc/fstab ||
    echo "kvm1:/var/lib/libvirt/images /var/lib/libvirt/images nfs defaults,_netdev 0 0" >>/etc/fstab
  mount -a
fi

# Lab-only SSH trust between the hosts' root accounts, for qemu+ssh and peer-to-peer migration.
install -d -m 700 /root/.ssh
KEY=/opt/llmvirt/vagrant/.lab_ssh_key
[ -f "$KEY" ] || ssh-keygen -q -t ed25519 -N "" -f "$KEY"
install -m 600 "$KEY" /root/.ssh/id_ed25519
install -m 644 "$KEY.pub" /root/.ssh/id_ed25519.pub
grep -qf "$KEY.pub" /root/.ssh/authorized_keys 2>/dev/null || cat "$KEY.pub" >>/root/.ssh/authorized_keys
printf 'Host kvm*\n  StrictHostKeyChecking accept-new\n' >/root/.ssh/config

cd /opt/llmvirt
bash scripts/setup.sh
systemctl enable --now libvirtd

for pair in "${PAIRS[@]}"; do
  host=${pair%%=*}
  .venv/bin/llmvirt hosts list --json | grep -q "\"$host\"" ||
    .venv/bin/llmvirt hosts add "$host" "qemu+ssh://root@$host/system"
done
