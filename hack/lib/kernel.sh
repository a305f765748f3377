# shellcheck shell=bash
# The lab's guest kernel: Debian's newest linux-image-6.12.*-amd64 from bookworm-backports, fetched with
# `apt-get download`, unpacked with `dpkg-deb -x` and cached under $LAB_CACHE/kernel/<package-version>.
#
# Needs deps.sh. After `lab_kernel_fetch`, LAB_KDIR holds the cache directory of the kernel in use:
#   $LAB_KDIR/vmlinuz          the kernel image
#   $LAB_KDIR/lib/modules/<kver>/  the module tree (compressed .ko.xz, as packaged) with modules.dep
#   $LAB_KDIR/kver             the kernel release string

LAB_CACHE=${VFGENIE_LAB_CACHE:-/var/cache/vfgenie-lab}

# Newest linux-image-6.12.N+debNN-amd64[-unsigned] package name known to apt.
lab_kernel_latest_package() {
	apt-cache search --names-only '^linux-image-6\.12\.[0-9]+\+deb[0-9]+-amd64(-unsigned)?$' 2>/dev/null |
		awk '{ print $1 }' | sort -V | tail -n1
}

# Newest kernel already in the cache (by directory name), if any.
lab_kernel_cached() {
	local d
	d=$(find "$LAB_CACHE/kernel" -mindepth 1 -maxdepth 1 -type d 2>/dev/null | sort -V | tail -n1)
	[[ -n $d && -f $d/vmlinuz && -f $d/kver ]] || return 1
	printf '%s\n' "$d"
}

# Sets LAB_KDIR. Uses the cache without touching the network unless VFGENIE_LAB_REFRESH=1 or the cache
# is empty. Concurrent runs serialise on a lock in the cache directory.
lab_kernel_fetch() {
	mkdir -p "$LAB_CACHE"
	local lock
	exec {lock}>"$LAB_CACHE/.lock"
	flock "$lock"
	_lab_kernel_fetch_locked
	exec {lock}>&-
}

_lab_kernel_fetch_locked() {
	if [[ ${VFGENIE_LAB_REFRESH:-0} != 1 ]] && LAB_KDIR=$(lab_kernel_cached); then
		return 0
	fi
	lab_enable_backports
	lab_backports_index_present || lab_apt_update_once
	local pkg ver
	pkg=$(lab_kernel_latest_package)
	if [[ -z $pkg ]]; then
		lab_apt_update_once
		pkg=$(lab_kernel_latest_package)
	fi
	[[ -n $pkg ]] || lab_die "no linux-image-6.12.*-amd64 package found in ${LAB_BACKPORTS_SUITE}"
	ver=$(apt-cache show --no-all-versions "$pkg" | awk '/^Version:/ { print $2; exit }')
	LAB_KDIR=$LAB_CACHE/kernel/${pkg}_${ver}
	if [[ -f $LAB_KDIR/vmlinuz && -f $LAB_KDIR/kver ]]; then
		return 0
	fi
	lab_log "downloading $pkg $ver"
	local tmp
	tmp=$(mktemp -d "${LAB_CACHE}/dl.XXXXXX")
	# apt downloads as the _apt user when it can write the directory.
	chmod 0755 "$tmp"
	chown _apt "$tmp" 2>/dev/null || true
	(cd "$tmp" && apt-get download -qq "$pkg=$ver" >&2) || {
		rm -rf "$tmp"
		lab_die "apt-get download $pkg failed"
	}
	dpkg-deb -x "$tmp"/*.deb "$tmp/root"
	local kver
	kver=$(find "$tmp/root/lib/modules" -mindepth 1 -maxdepth 1 -type d -printf '%f\n' | head -n1)
	[[ -n $kver && -f $tmp/root/boot/vmlinuz-$kver ]] || {
		rm -rf "$tmp"
		lab_die "$pkg has no vmlinuz or module tree"
	}
	rm -rf "$LAB_KDIR"
	mkdir -p "$LAB_KDIR/lib/modules"
	mv "$tmp/root/boot/vmlinuz-$kver" "$LAB_KDIR/vmlinuz"
	mv "$tmp/root/lib/modules/$kver" "$LAB_KDIR/lib/modules/$kver"
	# The package leaves modules.dep to its postinst; compute it here.
	depmod -b "$LAB_KDIR" "$kver"
	rm -rf "$tmp"
	printf '%s\n' "$kver" >"$LAB_KDIR/kver"
}

# Prints the module files (paths relative to the module tree) needed for the named modules, dependencies
# first, each once.
lab_kernel_module_closure() {
	local kver moddir
	kver=$(cat "$LAB_KDIR/kver")
	moddir=$LAB_KDIR/lib/modules/$kver
	awk -v want="$*" '
		function base(p,   b) { b = p; sub(/.*\//, "", b); sub(/\.ko(\.[a-z]+)?$/, "", b); gsub(/-/, "_", b); return b }
		function visit(m,   i, n, parts) {
			if (m in seen) return
			seen[m] = 1
			if (!(m in deps)) { missing = missing " " m; return }
			n = split(deps[m], parts, " ")
			for (i = n; i >= 1; i--) if (parts[i] != "") visit(base(parts[i]))
			print path[m]
		}
		{
			f = $1; sub(/:$/, "", f)
			m = base(f); path[m] = f
			d = ""; for (i = 2; i <= NF; i++) d = d " " $i
			deps[m] = d
		}
		END {
			n = split(want, w, " ")
			for (i = 1; i <= n; i++) { x = w[i]; gsub(/-/, "_", x); visit(x) }
			if (missing != "") { print "missing modules:" missing > "/dev/stderr"; exit 1 }
		}
	' "$moddir/modules.dep"
}
