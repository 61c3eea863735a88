#!/bin/sh
# Builds the base images that Clawrden's Docker tests harden, without any registry:
#
#   scripts/images/build.sh NAME...      # NAME: busybox bookworm bullseye bookworm-python
#                                        #   bookworm-node bookworm-git bookworm-systemd prometheus
#   scripts/images/build.sh all
#
# Each image is tagged clawrden-test/NAME:latest and labelled with the hash of its recipe
# (org.clawrden.test.recipe). A tag whose label matches is left alone; otherwise the image is
# imported from the cached rootfs tarball, and only when that is missing too is the rootfs
# built (busybox-static, or debootstrap + apt-get in a chroot). Needs root, docker, and for
# the Debian images debootstrap and a reachable Debian mirror.
#
# Environment:
#   CLAWRDEN_IMAGE_CACHE      where rootfs tarballs and the build lock live
#                             (default /var/cache/clawrden-test)
#   CLAWRDEN_DEBIAN_MIRROR    Debian mirror (default http://deb.debian.org/debian; a suite that
#                             is missing there is retried on http://archive.debian.org/debian)
#   CLAWRDEN_IMAGE_LOCK_HELD  set to 1 by a caller that already holds the build lock
set -eu

RECIPE_VERSION=1
BUSYBOX=${CLAWRDEN_BUSYBOX:-/bin/busybox}
CACHE=${CLAWRDEN_IMAGE_CACHE:-/var/cache/clawrden-test}
MIRROR=${CLAWRDEN_DEBIAN_MIRROR:-http://deb.debian.org/debian}
ARCHIVE_MIRROR=http://archive.debian.org/debian
LABEL=org.clawrden.test.recipe
PATH_ENV=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
ALL="busybox bookworm bullseye bookworm-python bookworm-node bookworm-git bookworm-systemd prometheus"

die() {
    echo "build.sh: $*" >&2
    exit 1
}

usage() {
    echo "usage: scripts/images/build.sh NAME... | all   (NAME: $ALL)" >&2
    exit 2
}

now() { date +%s; }

# The parts of an image's recipe that change its contents; their hash names the tarball.
recipe() {
    case $1 in
    busybox)
        [ -x "$BUSYBOX" ] || die "$BUSYBOX not found: install Debian's busybox-static (apt-get install busybox-static) or set CLAWRDEN_BUSYBOX"
        echo "v$RECIPE_VERSION busybox-static $(sha256sum <"$BUSYBOX" | cut -d' ' -f1)"
        ;;
    bookworm | bullseye) echo "v$RECIPE_VERSION debootstrap minbase $1" ;;
    bookworm-python) echo "$(recipe bookworm) + python3 python3-pip" ;;
    bookworm-node) echo "$(recipe bookworm) + nodejs npm" ;;
    bookworm-git) echo "$(recipe bookworm) + git" ;;
    bookworm-systemd) echo "$(recipe bookworm) + systemd" ;;
    prometheus) echo "$(recipe bookworm) + prometheus; /prometheus, user prometheus, entrypoint prometheus" ;;
    *) die "unknown image '$1' (known: $ALL)" ;;
    esac
}

recipe_hash() {
    recipe "$1" | sha256sum | cut -c1-16
}

# Packages (and the image they are added to) for the derived images.
parent_of() {
    case $1 in
    bookworm-python | bookworm-node | bookworm-git | bookworm-systemd | prometheus) echo bookworm ;;
    *) echo "" ;;
    esac
}

packages_of() {
    case $1 in
    bookworm-python) echo "python3 python3-pip" ;;
    bookworm-node) echo "nodejs npm" ;;
    bookworm-git) echo "git" ;;
    bookworm-systemd) echo "systemd" ;;
    prometheus) echo "prometheus" ;;
    esac
}

WORK=""
PROC_MOUNTED=""
cleanup() {
    if [ -n "$PROC_MOUNTED" ]; then
        umount "$PROC_MOUNTED" 2>/dev/null || umount -l "$PROC_MOUNTED" 2>/dev/null || true
        PROC_MOUNTED=""
    fi
    if [ -n "$WORK" ]; then
        rm -rf "$WORK"
        WORK=""
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

new_workdir() {
    cleanup
    WORK=$(mktemp -d "$CACHE/work.XXXXXX")
}

pack_rootfs() { # DIR TARBALL
    tar --numeric-owner -C "$1" -cf "$2.partial" .
    mv "$2.partial" "$2"
}

build_busybox_rootfs() { # DIR
    dir=$1
    mkdir -p "$dir/bin" "$dir/sbin" "$dir/usr/bin" "$dir/usr/sbin" "$dir/etc" "$dir/root" \
        "$dir/tmp" "$dir/proc" "$dir/sys" "$dir/dev" "$dir/home" "$dir/var"
    chmod 1777 "$dir/tmp"
    chmod 0700 "$dir/root"
    cp "$BUSYBOX" "$dir/bin/busybox"
    chmod 0755 "$dir/bin/busybox"
    # Applets as symlinks to /bin/busybox, the way Alpine lays them out.
    chroot "$dir" /bin/busybox --install -s
    printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n' >"$dir/etc/passwd"
    printf 'root:x:0:\nnogroup:x:65534:\n' >"$dir/etc/group"
    printf 'root:*:0:0:99999:7:::\n' >"$dir/etc/shadow"
    chmod 0640 "$dir/etc/shadow"
}

debootstrap_rootfs() { # SUITE DIR
    suite=$1
    dir=$2
    command -v debootstrap >/dev/null 2>&1 || die "debootstrap not found: apt-get install debootstrap"
    log="$CACHE/debootstrap-$suite.log"
    for mirror in "$MIRROR" "$ARCHIVE_MIRROR"; do
        echo "    debootstrap --variant=minbase $suite from $mirror (log: $log)"
        rm -rf "$dir"
        if debootstrap --variant=minbase "$suite" "$dir" "$mirror" >"$log" 2>&1; then
            chroot "$dir" apt-get clean
            rm -rf "$dir"/var/lib/apt/lists/* "$dir"/var/cache/apt/*.bin
            return 0
        fi
        echo "    debootstrap of $suite from $mirror failed: $(tail -n 1 "$log")" >&2
    done
    die "cannot fetch Debian $suite from $MIRROR or $ARCHIVE_MIRROR; see $log"
}

apt_install_rootfs() { # NAME DIR PACKAGES...
    log="$CACHE/apt-$1.log"
    dir=$2
    shift 2
    cp /etc/resolv.conf "$dir/etc/resolv.conf"
    # No package may start its service inside the chroot (prometheus would keep running
    # and hold the mount): policy-rc.d says no to every invoke-rc.d/deb-systemd-invoke.
    printf '#!/bin/sh\nexit 101\n' >"$dir/usr/sbin/policy-rc.d"
    chmod 0755 "$dir/usr/sbin/policy-rc.d"
    mount -t proc proc "$dir/proc"
    PROC_MOUNTED="$dir/proc"
    echo "    apt-get install $* (log: $log)"
    if ! chroot "$dir" /usr/bin/env DEBIAN_FRONTEND=noninteractive PATH="$PATH_ENV" \
        sh -c 'apt-get update && apt-get install -y --no-install-recommends "$@" && apt-get clean' \
        apt-install "$@" >"$log" 2>&1; then
        tail -n 20 "$log" >&2
        die "apt-get install $* in the rootfs failed; see $log"
    fi
    umount "$dir/proc"
    PROC_MOUNTED=""
    rm -f "$dir/usr/sbin/policy-rc.d"
    rm -rf "$dir"/var/lib/apt/lists/* "$dir"/var/cache/apt/*.bin
    : >"$dir/etc/resolv.conf"
}

# Sets TARBALL to NAME's rootfs tarball, building it (and its parent's) when not cached.
# Runs in the main shell, not in $(...), so the EXIT trap can unmount and clean up on failure.
ensure_tarball() {
    parent=$(parent_of "$1")
    parent_tar=""
    if [ -n "$parent" ]; then
        build_tarball "$parent" ""
        parent_tar=$TARBALL
    fi
    build_tarball "$1" "$parent_tar"
}

build_tarball() { # NAME PARENT_TARBALL
    TARBALL="$CACHE/$1-$(recipe_hash "$1").tar"
    [ -f "$TARBALL" ] && return 0
    echo "==> building rootfs $1 ($(recipe "$1"))"
    new_workdir
    case $1 in
    busybox) build_busybox_rootfs "$WORK/rootfs" ;;
    bookworm | bullseye) debootstrap_rootfs "$1" "$WORK/rootfs" ;;
    *)
        mkdir "$WORK/rootfs"
        tar --numeric-owner -C "$WORK/rootfs" -xf "$2"
        # shellcheck disable=SC2046 # the package list is meant to split into words
        apt_install_rootfs "$1" "$WORK/rootfs" $(packages_of "$1")
        ;;
    esac
    if [ "$1" = prometheus ]; then
        # The layout of prom/prometheus: data in /prometheus, owned by the user it runs as.
        mkdir -p "$WORK/rootfs/prometheus"
        chroot "$WORK/rootfs" chown prometheus:prometheus /prometheus
    fi
    rm -f "$CACHE/$1"-????????????????.tar # an older recipe of this image only
    pack_rootfs "$WORK/rootfs" "$TARBALL"
    cleanup
}

ensure_image() {
    name=$1
    tag="clawrden-test/$name:latest"
    start=$(now)
    hash=$(recipe_hash "$name")
    have=$(docker image inspect --format "{{index .Config.Labels \"$LABEL\"}}" "$tag" 2>/dev/null || true)
    if [ "$have" = "$hash" ]; then
        echo "$tag is up to date (recipe $hash; 0s)"
        return 0
    fi
    ensure_tarball "$name"
    set -- --change "LABEL $LABEL=$hash" --change "ENV PATH=$PATH_ENV"
    case $name in
    prometheus)
        # Runs like prom/prometheus, so docker-compose.yml treats both images the same.
        set -- "$@" --change 'USER prometheus' --change 'WORKDIR /prometheus' \
            --change 'EXPOSE 9090' --change 'ENTRYPOINT ["/usr/bin/prometheus"]' \
            --change 'CMD ["--config.file=/etc/prometheus/prometheus.yml", "--storage.tsdb.path=/prometheus"]'
        ;;
    *) set -- "$@" --change 'CMD ["/bin/sh"]' ;;
    esac
    docker import "$@" "$TARBALL" "$tag" >/dev/null
    echo "$tag built (recipe $hash) in $(($(now) - start))s"
}

[ $# -gt 0 ] || usage
[ "$(id -u)" -eq 0 ] || die "must run as root (debootstrap, chroot and mount need it)"
command -v docker >/dev/null 2>&1 || die "docker CLI not found"
mkdir -p "$CACHE"

if [ "${CLAWRDEN_IMAGE_LOCK_HELD:-}" != 1 ]; then
    if command -v flock >/dev/null 2>&1; then
        exec 9>"$CACHE/build.lock"
        flock 9
    fi
fi

names=""
for arg in "$@"; do
    case $arg in
    all) names="$names $ALL" ;;
    -h | --help) usage ;;
    *)
        recipe "$arg" >/dev/null
        names="$names $arg"
        ;;
    esac
done

for name in $names; do
    ensure_image "$name"
done
