# shellcheck shell=bash
# Boots the lab guest under QEMU (TCG) and turns its console into an exit status.
#
# The kernel line has no_timer_check: TCG's emulated timer is slow enough under load for the
# kernel's IO-APIC timer check to fail and panic.
#
# The machine: q35 with a split irqchip, an emulated Intel IOMMU (caching-mode=on, so vfio works under
# it), and two igb (82576) PFs, each behind its own PCIe root port so their VF ranges do not clash. The
# NICs sit on a QEMU hub with no outside network. A hard timeout kills QEMU.

LAB_TIMEOUT=${VFGENIE_LAB_TIMEOUT:-300}
# Extra `NAME=value` words for the kernel command line, which the kernel hands to the guest's init
# as environment variables (the chaos scenario's options).
LAB_GUEST_ENV=${LAB_GUEST_ENV:-}

# lab_qemu_cmd KERNEL INITRD SCENARIO: sets the array LAB_QEMU to the QEMU command line.
lab_qemu_cmd() {
	local kernel=$1 initrd=$2 scenario=$3
	# shellcheck disable=SC2054 # the commas belong to QEMU's option syntax
	LAB_QEMU=(
		qemu-system-x86_64
		-M q35,kernel-irqchip=split -accel tcg -cpu max -m 1024 -smp 2
		-nographic -no-reboot -nodefaults -serial stdio -monitor none
		-device intel-iommu,intremap=on,caching-mode=on
		-device pcie-root-port,id=rp1,slot=1,chassis=1
		-device pcie-root-port,id=rp2,slot=2,chassis=2
		-netdev hubport,id=n0,hubid=0 -device igb,netdev=n0,bus=rp1,romfile=
		-netdev hubport,id=n1,hubid=0 -device igb,netdev=n1,bus=rp2,romfile=
		-kernel "$kernel" -initrd "$initrd"
		-append "console=ttyS0 quiet loglevel=3 intel_iommu=on no_timer_check panic=-1 rdinit=/init vmlab.scenario=$scenario${LAB_GUEST_ENV:-}"
	)
}

# lab_boot KERNEL INITRD SCENARIO LOG: runs QEMU under a hard timeout, writing the whole console to LOG
# and echoing the VMLAB lines.
lab_boot() {
	local log=$4
	lab_qemu_cmd "$1" "$2" "$3"
	timeout --kill-after=5 "$LAB_TIMEOUT" "${LAB_QEMU[@]}" </dev/null 2>&1 |
		sed -u -e 's/\r//g' -e 's/\x1b\[[0-9;?]*[A-Za-z]//g' -e 's/\x1b[A-Za-z]//g' | tee "$log" | grep --line-buffered -E '^VMLAB (CHECK|RESULT|BOOTED|DONE)|^VMLAB-OUT' || true
}

# lab_boot_retrying KERNEL INITRD SCENARIO LOG: lab_boot, once more when the kernel never reached
# our init (no VMLAB BOOTED line: under TCG on a loaded machine the guest kernel has been seen to
# panic in early timer setup). A guest that booted is never rerun: its checks stand as they are.
lab_boot_retrying() {
	lab_boot "$@"
	if ! grep -q '^VMLAB BOOTED' "$4"; then
		lab_log "the guest kernel did not reach init; console tail:"
		tail -n 5 "$4" >&2
		lab_log "booting once more"
		lab_boot "$@"
	fi
}

# lab_verdict LOG: 0 only when a RESULT line arrived with failed=0 and passed>0.
lab_verdict() {
	local log=$1 line passed failed
	line=$(grep -E '^VMLAB RESULT passed=[0-9]+ failed=[0-9]+' "$log" | tail -n1 || true)
	if [[ -z $line ]]; then
		lab_log "no VMLAB RESULT line (timeout after ${LAB_TIMEOUT}s or guest crash); console in $log"
		return 1
	fi
	passed=$(sed -E 's/.*passed=([0-9]+).*/\1/' <<<"$line")
	failed=$(sed -E 's/.*failed=([0-9]+).*/\1/' <<<"$line")
	((failed == 0 && passed > 0))
}

# lab_extract_capture LOG DEST: unpacks the tree sent between the capture markers into DEST.
lab_extract_capture() {
	local log=$1 dest=$2 tmp
	tmp=$(mktemp -d)
	sed -n '/^VMLAB CAPTURE BEGIN$/,/^VMLAB CAPTURE END$/p' "$log" | sed '1d;$d' >"$tmp/b64"
	if [[ ! -s $tmp/b64 ]]; then
		rm -rf "$tmp"
		lab_log "no capture in the console output"
		return 1
	fi
	base64 -d "$tmp/b64" >"$tmp/tree.tgz"
	# Replace the captured tree, keeping the fixture's README.
	if [[ -f $dest/README.md ]]; then cp "$dest/README.md" "$tmp/README.md"; fi
	rm -rf "$dest"
	mkdir -p "$dest"
	tar -C "$dest" -xzf "$tmp/tree.tgz"
	if [[ -f $tmp/README.md ]]; then cp "$tmp/README.md" "$dest/README.md"; fi
	rm -rf "$tmp"
}
