# shellcheck shell=bash
# Builds the lab's initramfs: busybox-static as the shell, the guest /init, the kernel modules the lab
# needs (decompressed, with their load order), the workspace's dev-profile binaries with the glibc
# loader and libraries they link, Debian's CNI plugins, Debian's nft (the policy engine's applier)
# with its libraries, and hack/capture-sysfs when present.
#
# Needs deps.sh and kernel.sh (LAB_KDIR). `lab_initramfs_build REPO OUT [BINDIR]` writes an
# uncompressed newc cpio archive to OUT (QEMU loads it from disk; skipping compression saves guest
# boot time under TCG); BINDIR is the dev build's binaries (default REPO/target/debug).

# nf_tables and nft_ct (with nf_conntrack and its dependencies) for the policy engine's tables in
# pods' namespaces: the rules use ct state, meta iifname/oifname, payload and set lookups (hash,
# rbtree and pipapo sets are part of nf_tables.ko in 6.12); nothing rejects, so no nft_reject*.
# nf_tables needs libcrc32c, whose init fails without a crc32c algorithm (a softdep, which
# modules.dep does not list): crc32c_generic comes first.
LAB_MODULES=(igb igbvf vfio vfio_iommu_type1 vfio-pci veth bridge crc32c_generic nf_tables nft_ct)

# Copies an ELF file to the same path under ROOT, plus the loader and libraries ldd reports.
_lab_copy_elf() {
	local root=$1 src=$2 dst=${3:-$2} lib
	mkdir -p "$root$(dirname "$dst")"
	cp -L "$src" "$root$dst"
	# Debug info makes dev-profile binaries large; the guest never needs it.
	strip --strip-debug "$root$dst" 2>/dev/null || true
	while read -r lib; do
		[[ -n $lib && ! -e $root$lib ]] || continue
		mkdir -p "$root$(dirname "$lib")"
		cp -L "$lib" "$root$lib"
	done < <(ldd "$src" 2>/dev/null | awk '/=> \// { print $3 } /^[[:space:]]*\// { print $1 }')
}

lab_initramfs_build() {
	local repo=$1 out=$2 bindir=${3:-$1/target/debug} root kver moddir m name
	root=$(mktemp -d "${TMPDIR:-/tmp}/vmlab-root.XXXXXX")
	mkdir -p "$root"/{bin,sbin,dev,proc,sys,run,tmp,etc,lib/modules,usr/local/bin,opt/cni/bin,lab}

	cp /bin/busybox "$root/bin/busybox"
	for name in $(/bin/busybox --list); do
		[[ $name == busybox ]] || ln -s busybox "$root/bin/$name"
	done

	kver=$(cat "$LAB_KDIR/kver")
	moddir=$LAB_KDIR/lib/modules/$kver
	: >"$root/lib/modules/load.list"
	while read -r m; do
		name=$(basename "$m")
		case $name in
		*.ko.xz) xz -dc "$moddir/$m" >"$root/lib/modules/${name%.xz}" ;;
		*.ko.zst) zstd -qdc "$moddir/$m" >"$root/lib/modules/${name%.zst}" ;;
		*.ko) cp "$moddir/$m" "$root/lib/modules/$name" ;;
		*) lab_die "unexpected module file $m" ;;
		esac
		printf '%s\n' "${name%.ko*}.ko" >>"$root/lib/modules/load.list"
	done < <(lab_kernel_module_closure "${LAB_MODULES[@]}")

	# The binaries of the workspace's dev build (the lab reuses the test build) but those the
	# guest never runs: unoptimized, they would take the initramfs past what the guest's memory
	# can unpack.
	local bin
	for bin in "$bindir"/*; do
		[[ -f $bin && -x $bin ]] || continue
		case $(basename "$bin") in
		vfgenie-bench | vfgenie-controller | api-probe-* | admission-demo | vfgenie-fuzz*) continue ;;
		esac
		_lab_copy_elf "$root" "$bin" "/usr/local/bin/$(basename "$bin")"
	done
	for bin in /usr/lib/cni/*; do
		[[ -f $bin && -x $bin ]] || continue
		_lab_copy_elf "$root" "$bin" "/opt/cni/bin/$(basename "$bin")"
	done

	# nft as Debian ships it, where the guest's PATH finds it; nft names protocols and services
	# through /etc/protocols and /etc/services.
	[[ -x /usr/sbin/nft ]] || lab_die "/usr/sbin/nft is missing (Debian package nftables)"
	_lab_copy_elf "$root" /usr/sbin/nft /usr/sbin/nft
	for name in protocols services; do
		[[ -f /etc/$name ]] && cp "/etc/$name" "$root/etc/$name"
	done

	cp "$repo/hack/lab-guest/init" "$root/init"
	chmod 755 "$root/init"
	cp "$repo"/hack/lab-guest/*.sh "$root/lab/" 2>/dev/null || true
	if [[ -f $repo/hack/capture-sysfs ]]; then
		cp "$repo/hack/capture-sysfs" "$root/usr/local/bin/capture-sysfs"
		chmod 755 "$root/usr/local/bin/capture-sysfs"
	fi
	printf 'root:x:0:0:root:/:/bin/sh\n' >"$root/etc/passwd"
	printf 'root:x:0:\n' >"$root/etc/group"

	(cd "$root" && find . -print0 | cpio --null -o -H newc --quiet) >"$out.tmp"
	mv "$out.tmp" "$out"
	rm -rf "$root"
}
