# shellcheck shell=bash
# Host dependencies of the SR-IOV lab (hack/vmlab), installed with apt-get by package name.
#
# Source this file and call `lab_deps_install`. Everything is idempotent: when all tools are present and
# QEMU already has `-device igb`, nothing touches the network.
#
# The backports suite is enabled by deriving an apt source from the machine's own Debian source (same
# URIs, same keyring, suite bookworm-backports); no mirror host is written anywhere in the repository.

LAB_BACKPORTS_SUITE=${LAB_BACKPORTS_SUITE:-bookworm-backports}
LAB_BACKPORTS_FILE=/etc/apt/sources.list.d/vfgenie-lab-backports.sources
_LAB_APT_UPDATED=0

lab_log() { printf 'vmlab: %s\n' "$*" >&2; }
lab_die() {
	printf 'vmlab: error: %s\n' "$*" >&2
	exit 1
}

# True when some apt source already names the backports suite.
lab_backports_configured() {
	grep -rqsE "^[^#]*\b${LAB_BACKPORTS_SUITE}\b" /etc/apt/sources.list /etc/apt/sources.list.d/
}

# Prints "URI<TAB>KEYRING" of the machine's main Debian archive source (not the security one).
lab_debian_source() {
	local f uri key line
	for f in /etc/apt/sources.list.d/debian.sources /etc/apt/sources.list.d/*.sources; do
		[[ -r $f ]] || continue
		uri=$(awk '/^URIs:/ { for (i = 2; i <= NF; i++) if ($i !~ /security/) { print $i; exit } }' "$f")
		[[ -n $uri ]] || continue
		key=$(awk '/^Signed-By:/ { print $2; exit }' "$f")
		printf '%s\t%s\n' "$uri" "$key"
		return 0
	done
	if [[ -r /etc/apt/sources.list ]]; then
		# deb [signed-by=/path] URI suite components
		line=$(grep -E '^deb[[:space:]]' /etc/apt/sources.list | grep -v security | head -n1 || true)
		if [[ -n $line ]]; then
			key=$(sed -nE 's/.*signed-by=([^] ]+).*/\1/p' <<<"$line")
			uri=$(sed -E 's/^deb[[:space:]]+(\[[^]]*\][[:space:]]+)?//' <<<"$line" | awk '{ print $1 }')
			printf '%s\t%s\n' "$uri" "$key"
			return 0
		fi
	fi
	return 1
}

lab_enable_backports() {
	lab_backports_configured && return 0
	local src uri key
	src=$(lab_debian_source) || lab_die "no Debian apt source found to derive ${LAB_BACKPORTS_SUITE} from"
	uri=${src%%$'\t'*}
	key=${src#*$'\t'}
	lab_log "enabling ${LAB_BACKPORTS_SUITE} from the machine's apt source"
	{
		printf 'Types: deb\nURIs: %s\nSuites: %s\nComponents: main\n' "$uri" "$LAB_BACKPORTS_SUITE"
		[[ -n $key ]] && printf 'Signed-By: %s\n' "$key"
	} >"$LAB_BACKPORTS_FILE"
	_LAB_APT_UPDATED=0
}

# apt-get update at most once per run, and only when something must be fetched.
lab_apt_update_once() {
	[[ $_LAB_APT_UPDATED == 1 ]] && return 0
	lab_log "apt-get update"
	DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 update -qq >&2
	_LAB_APT_UPDATED=1
}

# True when the backports package index is present (so apt-cache can answer without an update).
lab_backports_index_present() {
	compgen -G "/var/lib/apt/lists/*_dists_${LAB_BACKPORTS_SUITE}_main_binary-amd64_Packages*" >/dev/null
}

lab_pkg_installed() {
	[[ $(dpkg-query -W -f='${db:Status-Status}' "$1" 2>/dev/null || true) == installed ]]
}

lab_qemu_has_igb() {
	command -v qemu-system-x86_64 >/dev/null &&
		qemu-system-x86_64 -device help 2>/dev/null | grep -q '"igb"'
}

lab_deps_install() {
	local pkgs=() p
	for p in busybox-static kmod cpio xz-utils zstd containernetworking-plugins iputils-ping nftables netbase; do
		lab_pkg_installed "$p" || pkgs+=("$p")
	done
	local need_qemu=0
	lab_qemu_has_igb || need_qemu=1
	if ((${#pkgs[@]} == 0 && need_qemu == 0)); then
		return 0
	fi
	lab_enable_backports
	lab_apt_update_once
	if ((${#pkgs[@]})); then
		lab_log "installing ${pkgs[*]}"
		DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 install -y -qq --no-install-recommends "${pkgs[@]}" >&2
	fi
	if ((need_qemu)); then
		lab_log "installing qemu-system-x86 from ${LAB_BACKPORTS_SUITE}"
		DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 install -y -qq --no-install-recommends \
			-t "$LAB_BACKPORTS_SUITE" qemu-system-x86 >&2
		lab_qemu_has_igb || lab_die "qemu-system-x86_64 from ${LAB_BACKPORTS_SUITE} has no -device igb"
	fi
}

# Packages the workspace build and the host-tier tests need: protoc for the gRPC code, iproute2 and
# ping for the network-namespace tests, Debian's CNI plugins as real delegates, podman to load the
# images hack/image builds, containerd (with runc) and docker to import and run them
# (tests/tests/images.rs).
dev_deps_install() {
	local pkgs=() p
	for p in protobuf-compiler iproute2 iputils-ping containernetworking-plugins nftables iperf3 podman containerd docker.io; do
		lab_pkg_installed "$p" || pkgs+=("$p")
	done
	((${#pkgs[@]})) || return 0
	lab_apt_update_once
	lab_log "installing ${pkgs[*]}"
	DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 install -y -qq --no-install-recommends "${pkgs[@]}" >&2
}
