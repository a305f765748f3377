#!/bin/sh
# shellcheck disable=SC2012,SC2013 # sysfs names are plain; busybox sh has no arrays
# Guest side of `hack/vmlab capture`: creates VFs (4 on the first PF, one of them bound to vfio-pci,
# none on the second), runs capture-sysfs, and sends the captured tree over the console as base64 of a
# gzip'd tar between `VMLAB CAPTURE BEGIN` and `VMLAB CAPTURE END`.

pass=0
fail=0
check() { # name, then the command to run
	name=$1
	shift
	if out=$("$@" 2>&1); then
		echo "VMLAB CHECK $name: ok"
		pass=$((pass + 1))
	else
		echo "VMLAB CHECK $name: FAIL $(echo "$out" | tr '\n' ' ')"
		fail=$((fail + 1))
	fi
}

pfs=$(ls -d /sys/bus/pci/drivers/igb/0000:* | sort)
pf0=$(echo "$pfs" | sed -n 1p)
pf1=$(echo "$pfs" | sed -n 2p)

# PFs up first, as on a node (a PF that is down never answers its VFs' mailbox), and again
# after the VF-count change resets them; waits (bounded) for each link.
pfs_up() {
	for pf in $pfs; do
		for n in "$pf"/net/*; do
			ip link set "${n##*/}" up || return 1
			i=0
			until [ "$(cat "$n/operstate")" = up ]; do
				i=$((i + 1))
				[ $i -gt 100 ] && { echo "${n##*/} link did not come up"; return 1; }
				sleep 0.1
			done
		done
	done
}

make_vfs() {
	echo 4 >"$pf0/sriov_numvfs" || return 1
	echo 0 >"$pf1/sriov_numvfs" || return 1
	i=0
	while [ "$(ls -d /sys/bus/pci/drivers/igbvf/0000:* 2>/dev/null | wc -l)" -lt 4 ]; do
		i=$((i + 1))
		[ $i -gt 100 ] && { echo "igbvf did not bind 4 VFs"; return 1; }
		sleep 0.1
	done
}

bind_vfio() {
	vf=$(readlink -f "$pf0/virtfn3")
	addr=$(basename "$vf")
	echo vfio-pci >"$vf/driver_override"
	echo "$addr" >"$vf/driver/unbind"
	echo "$addr" >/sys/bus/pci/drivers_probe
	group=$(basename "$(readlink "$vf/iommu_group")")
	i=0
	while [ ! -e "/dev/vfio/$group" ]; do
		i=$((i + 1))
		[ $i -gt 100 ] && { echo "/dev/vfio/$group did not appear"; return 1; }
		sleep 0.1
	done
}

capture() {
	[ -x /usr/local/bin/capture-sysfs ] || { echo "capture-sysfs is not in this build"; return 1; }
	rm -rf /tmp/capture
	capture-sysfs /tmp/capture
}

check capture-pfs-up pfs_up
check capture-vfs make_vfs
check capture-pfs-relink pfs_up
check capture-vfio bind_vfio
check capture-sysfs capture
if [ -d /tmp/capture ]; then
	echo "VMLAB CAPTURE BEGIN"
	tar -C /tmp/capture -czf - . | base64
	echo "VMLAB CAPTURE END"
fi
echo "VMLAB RESULT passed=$pass failed=$fail"
