#!/usr/bin/env bash
# Provision one llmvirt Vagrant host as an operator would prepare a KVM host: libvirt + QEMU,
# image storage shared over NFS (kvm1 serves, the others mount), the lab's throwaway root SSH key
# (the controller's qemu+ssh and peer-to-peer migration between hosts), and the peers' names.
# llmvirt itself runs on the controller, not here (see vagrant/README.md).
set -euo pipefail
NAME=$1
PEERS=$2   # kvm1=10.77.0.11,kvm2=...

export DEBIAN_FRONTEND=noninteractive
PACKAGES=(libvirt-daemon-system libvirt-clients qemu-system-x86 qemu-utils nfs-kernel-server nfs-common)
missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

IFS=, read -ra PAIRS <<<"$PEERS"
SUBNET=${PAIRS[0]#*=}; SUBNET=${SUBNET%.*}.0/24
for pair in "${PAIRS[@]}"; do
  host=${pair%%=*}; ip=${pair#*=}
  sed -i "/[[:space:]]$host\$/d" /etc/hosts
  echo "$ip $host" >>/etc/hosts
done

# Root SSH trust for the lab only.
install -d -m 700 /root/.ssh
install -m 600 /tmp/lab_ssh_key /root/.ssh/id_ed25519
install -m 644 /tmp/lab_ssh_key.pub /root/.ssh/id_ed25519.pub
grep -qxf /root/.ssh/id_ed25519.pub /root/.ssh/authorized_keys 2>/dev/null || cat /root/.ssh/id_ed25519.pub >>/root/.ssh/authorized_keys
chmod 600 /root/.ssh/authorized_keys
printf 'Host kvm*\n  StrictHostKeyChecking accept-new\n' >/root/.ssh/config
rm -f /tmp/lab_ssh_key /tmp/lab_ssh_key.pub

# Shared storage: kvm1 exports the image directory, the others mount it at the same path.
install -d /var/lib/libvirt/images
if [ "$NAME" = "kvm1" ]; then
  grep -q "^/var/lib/libvirt/images " /etc/exports 2>/dev/null ||
    echo "/var/lib/libvirt/images $SUBNET(rw,sync,no_root_squash,no_subtree_check)" >>/etc/exports
  systemctl enable --now nfs-server
  exportfs -ra
else
  grep -q "kvm1:/var/lib/libvirt/images" /etc/fstab ||
    echo "kvm1:/var/lib/libvirt/images /var/lib/libvirt/images nfs defaults,_netdev 0 0" >>/etc/fstab
  # the machines boot in parallel: kvm1 may still be booting, so wait for its export (up to 5 min)
  for _ in $(seq 1 150); do mountpoint -q /var/lib/libvirt/images && break; mount /var/lib/libvirt/images || sleep 2; done
  mountpoint -q /var/lib/libvirt/images
fi

systemctl enable --now libvirtd
virsh -c qemu:///system version
echo "provisioned $NAME"
