#!/bin/sh
# Installs the Clawrden shim over tools inside a container image (run as root, at build time).
#
#   install-clawrden.sh [--shim PATH] [--tools "curl git ..."] [--prefix DIR]
#   install-clawrden.sh --uninstall [--prefix DIR]
#
# Install: copies the shim to PREFIX/bin/clawrden-shim (root 0755); for each tool found in
# PATH, moves the original (a file, or a symlink as a symlink) to PREFIX/originals/<its
# absolute path> (the originals directory is root 0700, so only root, i.e. the warden's
# exec-helper, can reach an original) and puts a symlink to the shim in its place. A
# binary (ELF) original is made execute-only (group and others lose the read bit): a
# process started from a file its user cannot read is not dumpable, so nothing it spawns
# (a hook, a pager, `find -exec`) can reach the original through /proc/PID/exe or fd/.
# Each moved tool gets one line in PREFIX/manifest (with the mode it had, when it was
# changed). Running it again changes nothing for tools that are already shimmed. The
# busybox binary itself is never moved: its applets are symlinks to it and must keep
# working.
#
# Uninstall: moves every original in the manifest back (same bytes, mode, owner; symlinks
# with their original target) and removes PREFIX.
#
# POSIX sh (busybox ash, dash, bash). Every helper program is called through `util`, which
# runs the moved original when that program has been shimmed, so shimming cp, mv, ln or rm
# does not break a second run or an uninstall.
set -eu

PROG=install-clawrden.sh
PREFIX=/usr/lib/clawrden
TOOLS="curl wget git npm npx pip pip3 rm"
SHIM_SRC=""
UNINSTALL=0
TAB=$(printf '\t')

say() { printf '%s\n' "$*"; }
warn() { printf '%s: warning: %s\n' "$PROG" "$*" >&2; }
die() {
    printf '%s: %s\n' "$PROG" "$*" >&2
    exit 1
}

usage() {
    cat >&2 <<EOF
usage: $PROG [--shim PATH] [--tools "curl git ..."] [--prefix DIR]
       $PROG --uninstall [--prefix DIR]
  --shim PATH    the static clawrden-shim binary (default: clawrden-shim next to this script)
  --tools LIST   space-separated tool names to intercept (default: "$TOOLS")
  --prefix DIR   where the shim, the originals and the manifest live (default: $PREFIX)
  --uninstall    put every original back and remove DIR
EOF
    exit 2
}

while [ $# -gt 0 ]; do
    case $1 in
    --shim)
        [ $# -ge 2 ] || usage
        SHIM_SRC=$2
        shift 2
        ;;
    --tools)
        [ $# -ge 2 ] || usage
        TOOLS=$2
        shift 2
        ;;
    --prefix)
        [ $# -ge 2 ] || usage
        PREFIX=$2
        shift 2
        ;;
    --uninstall)
        UNINSTALL=1
        shift
        ;;
    -h | --help) usage ;;
    *)
        printf '%s: unknown argument: %s\n' "$PROG" "$1" >&2
        usage
        ;;
    esac
done

case $PREFIX in
/*) PREFIX=${PREFIX%/} ;;
*) die "--prefix must be an absolute path, got '$PREFIX'" ;;
esac
ORIG=$PREFIX/originals
SHIM=$PREFIX/bin/clawrden-shim
MANIFEST=$PREFIX/manifest

# Absolute path of an external program in PATH, or nothing. Unlike `command -v` alone this
# never answers with a shell builtin or a busybox applet that the shell would run itself.
path_lookup() {
    found=$(command -v "$1" 2>/dev/null) || found=""
    case $found in
    /*)
        printf '%s\n' "$found"
        return 0
        ;;
    esac
    old_ifs=$IFS
    IFS=:
    set -f
    for dir in $PATH; do
        case $dir in
        /*) ;;
        *) continue ;;
        esac
        if [ -f "$dir/$1" ] && [ -x "$dir/$1" ]; then
            IFS=$old_ifs
            set +f
            printf '%s\n' "$dir/$1"
            return 0
        fi
    done
    IFS=$old_ifs
    set +f
    return 1
}

# The same path with its directory resolved physically (symlinked directories such as a
# merged /bin -> usr/bin followed), the file name itself left alone.
physical_path() {
    dir=${1%/*}
    [ -n "$dir" ] || dir=/
    dir=$(cd -P "$dir" && pwd -P) || return 1
    case $dir in
    /) printf '/%s\n' "${1##*/}" ;;
    *) printf '%s/%s\n' "$dir" "${1##*/}" ;;
    esac
}

# Helper programs this script runs, resolved once; `util NAME ARGS` runs the moved original
# when NAME is (or, during this run, becomes) one of the shimmed tools.
UTILS="cp mv ln rm mkdir chmod chown chgrp readlink cmp id ls head"
for u in $UTILS; do
    p=$(path_lookup "$u") || p=""
    [ -z "$p" ] || p=$(physical_path "$p") || p=""
    eval "UTIL_$u=\$p"
done

util() {
    name=$1
    shift
    eval "p=\${UTIL_$name}"
    if [ -z "$p" ]; then
        die "needs '$name' in PATH, which was not found"
    fi
    if [ -e "$ORIG$p" ] || [ -L "$ORIG$p" ]; then
        "$ORIG$p" "$@"
    else
        "$p" "$@"
    fi
}

is_our_symlink() {
    [ -L "$1" ] && [ "$(util readlink "$1")" = "$SHIM" ]
}

# uid:gid of a file (not following symlinks), read from `ls -ldn`.
owner_of() {
    # shellcheck disable=SC2046 # the words of ls's line are what we want
    set -- $(util ls -ldn "$1")
    printf '%s:%s\n' "$3" "$4"
}

[ "$(util id -u)" = 0 ] || die "must run as root (it moves files under /usr and $PREFIX); run it as root in the image build, e.g. a Dockerfile RUN before USER"

# Where a moved symlink in the originals tree should point: its own target when that still
# resolves from the originals tree (an absolute target, or a relative one whose file was moved
# too), else the absolute path it resolved to when it was installed.
link_target_for() { # ORIGINAL_PATH TEXT RESOLVED
    case $2 in
    /*) target_check=$2 ;;
    *) target_check=$ORIG${1%/*}/$2 ;;
    esac
    if [ -e "$target_check" ]; then
        printf '%s\n' "$2"
    else
        printf '%s\n' "$3"
    fi
}

# Points every moved symlink in the manifest at a target that works from the originals tree.
fix_links() {
    [ -f "$MANIFEST" ] || return 0
    while IFS="$TAB" read -r kind path text resolved owner; do
        [ "$kind" = link ] || continue
        o=$ORIG$path
        [ -L "$o" ] || continue
        want=$(link_target_for "$path" "$text" "$resolved")
        cur=$(util readlink "$o")
        if [ "$cur" != "$want" ]; then
            util rm -f "$o"
            util ln -s "$want" "$o"
            util chown -h "$owner" "$o"
            say "original $path now points at $want (its target '$text' was not moved)"
        fi
    done <"$MANIFEST"
}

# Octal permission bits (special bits first) of an `ls -l` mode string: -rwsr-xr-x -> 4755.
mode_octal() { # LS_MODE
    rest=${1#?}
    digits=""
    special=0
    for weight in 4 2 1; do
        d=0
        c=${rest%"${rest#?}"}
        rest=${rest#?}
        [ "$c" != r ] || d=$((d + 4))
        c=${rest%"${rest#?}"}
        rest=${rest#?}
        [ "$c" != w ] || d=$((d + 2))
        c=${rest%"${rest#?}"}
        rest=${rest#?}
        case $c in
        x) d=$((d + 1)) ;;
        s | t)
            d=$((d + 1))
            special=$((special + weight))
            ;;
        S | T) special=$((special + weight)) ;;
        esac
        digits=$digits$d
    done
    printf '%s%s\n' "$special" "$digits"
}

is_elf() { # PATH
    [ "$(util head -c 4 "$1" 2>/dev/null)" = "$(printf '\177ELF')" ]
}

# Whether group or others may read PATH (a regular file, not followed if a symlink).
readable_by_others() { # PATH
    # shellcheck disable=SC2046 # the words of ls's line are what we want
    set -- $(util ls -ldn "$1")
    case $1 in
    ????r* | ???????r*) return 0 ;;
    esac
    return 1
}

# A binary original that group or others can still read (and so could dump).
readable_binary() { # PATH
    [ -f "$1" ] && [ ! -L "$1" ] && is_elf "$1" && readable_by_others "$1"
}

# Makes a binary (ELF) original execute-only: no read bit for group and others. Prints its
# mode before (octal) when there was one to remove, nothing otherwise. Scripts stay as they
# are: their interpreter, running as the caller, must read them.
execute_only() { # PATH
    readable_binary "$1" || return 0
    # shellcheck disable=SC2046 # the words of ls's line are what we want
    set -- "$1" $(util ls -ldn "$1")
    before=$(mode_octal "$2")
    util chmod go-r "$1"
    printf '%s\n' "$before"
}

# Dies unless every binary original in the manifest is execute-only.
check_execute_only() {
    [ -f "$MANIFEST" ] || return 0
    while IFS="$TAB" read -r kind path rest; do
        : "$rest"
        [ "$kind" = file ] || continue
        if readable_binary "$ORIG$path"; then
            die "original $ORIG$path can still be read by group or others; it must be execute-only"
        fi
    done <"$MANIFEST"
}

# Whether an older install left a binary original readable (a `file` line with no mode).
older_originals_readable() {
    [ -f "$MANIFEST" ] || return 1
    while IFS="$TAB" read -r kind path text rest; do
        : "$rest"
        if [ "$kind" = file ] && [ -z "$text" ] && readable_binary "$ORIG$path"; then
            return 0
        fi
    done <"$MANIFEST"
    return 1
}

# Makes the binary originals of an older install execute-only too, recording their mode in
# the manifest. Touches nothing when nothing needs it (a second run changes nothing).
harden_older_originals() {
    older_originals_readable || return 0
    : >"$MANIFEST.new"
    while IFS="$TAB" read -r kind path text rest; do
        line=$kind$TAB$path
        [ -z "$text" ] || line=$line$TAB$text
        [ -z "$rest" ] || line=$line$TAB$rest
        if [ "$kind" = file ] && [ -z "$text" ]; then
            mode=$(execute_only "$ORIG$path")
            if [ -n "$mode" ]; then
                line=$line$TAB$mode
                say "original $path made execute-only (was $mode)"
            fi
        fi
        printf '%s\n' "$line" >>"$MANIFEST.new"
    done <"$MANIFEST"
    util mv -f "$MANIFEST.new" "$MANIFEST"
}

# chown 0:0 and chmod, but only when needed: a second run must not touch anything (on
# overlayfs even a no-op chmod copies the file up and changes its directory).
set_root_mode() { # PATH OCTAL LS_MODE
    # shellcheck disable=SC2046 # the words of ls's line are what we want
    set -- "$1" "$2" "$3" $(util ls -ldn "$1")
    [ "$7" = 0 ] || util chown 0 "$1"
    [ "$8" = 0 ] || util chgrp 0 "$1"
    case $4 in
    "$3" | "$3"[.+]) ;;
    *) util chmod "$2" "$1" ;;
    esac
}

install_shim() {
    if [ -z "$SHIM_SRC" ]; then
        case $0 in
        */*) SHIM_SRC=${0%/*}/clawrden-shim ;;
        *) SHIM_SRC=./clawrden-shim ;;
        esac
    fi
    [ -f "$SHIM_SRC" ] || die "shim binary not found at $SHIM_SRC; pass --shim PATH (build it with: cargo build --release -p clawrden-shim --target x86_64-unknown-linux-musl)"
    util mkdir -p "$PREFIX/bin" "$ORIG"
    set_root_mode "$PREFIX" 0755 drwxr-xr-x
    set_root_mode "$PREFIX/bin" 0755 drwxr-xr-x
    set_root_mode "$ORIG" 0700 drwx------
    if [ -f "$SHIM" ] && util cmp -s "$SHIM_SRC" "$SHIM"; then
        say "shim $SHIM is up to date"
    else
        util cp "$SHIM_SRC" "$SHIM.new"
        util chown 0:0 "$SHIM.new"
        util chmod 0755 "$SHIM.new"
        util mv -f "$SHIM.new" "$SHIM"
        say "installed shim $SHIM"
    fi
    [ -f "$MANIFEST" ] || : >"$MANIFEST"
    set_root_mode "$MANIFEST" 0644 -rw-r--r--
}

FAILED=0

shim_tool() { # NAME
    tool=$1
    case $tool in
    "" | -* | */* | *"$TAB"*)
        warn "skip '$tool': not a tool name"
        FAILED=1
        return 0
        ;;
    esac
    found=$(path_lookup "$tool") || {
        warn "skip $tool: not found in PATH ($PATH)"
        return 0
    }
    path=$(physical_path "$found") || {
        warn "skip $tool: cannot resolve the directory of $found"
        FAILED=1
        return 0
    }
    if is_our_symlink "$path"; then
        say "$tool: $path is already shimmed"
        return 0
    fi
    if [ -e "$ORIG$path" ] || [ -L "$ORIG$path" ]; then
        warn "skip $tool: $path is not the shim, but an original is already saved at $ORIG$path; run --uninstall (or remove one of them) first"
        FAILED=1
        return 0
    fi
    if [ ! -L "$path" ] && [ "${path##*/}" = busybox ]; then
        warn "skip $tool: $path is the busybox binary itself, which is never moved (its applets would stop working); name the applets instead"
        FAILED=1
        return 0
    fi
    util mkdir -p "$ORIG${path%/*}"
    if [ -L "$path" ]; then
        text=$(util readlink "$path")
        resolved=$(util readlink -f "$path") || resolved=$text
        owner=$(owner_of "$path")
        util mv -f "$path" "$ORIG$path"
        util ln -s "$SHIM" "$path"
        printf 'link\t%s\t%s\t%s\t%s\n' "$path" "$text" "$resolved" "$owner" >>"$MANIFEST"
        say "$tool: shimmed $path (a symlink to $text; moved to $ORIG$path)"
    else
        util mv -f "$path" "$ORIG$path"
        util ln -s "$SHIM" "$path"
        mode=$(execute_only "$ORIG$path")
        if [ -n "$mode" ]; then
            printf 'file\t%s\t%s\n' "$path" "$mode" >>"$MANIFEST"
            say "$tool: shimmed $path (original moved to $ORIG$path, made execute-only; was $mode)"
        else
            printf 'file\t%s\n' "$path" >>"$MANIFEST"
            say "$tool: shimmed $path (original moved to $ORIG$path)"
        fi
    fi
}

restore_tool() { # KIND PATH TEXT OWNER (TEXT: a link's target, or a file's mode before)
    kind=$1
    path=$2
    o=$ORIG$path
    if [ ! -e "$o" ] && [ ! -L "$o" ]; then
        warn "cannot restore $path: its original $o is missing"
        FAILED=1
        return 0
    fi
    if [ -e "$path" ] || [ -L "$path" ]; then
        if ! is_our_symlink "$path"; then
            warn "left $path alone: it is no longer the clawrden shim (reinstalled by a package?); its original stays at $o"
            FAILED=1
            return 0
        fi
    fi
    if [ "$kind" = link ] && [ "$(util readlink "$o")" != "$3" ]; then
        util rm -f "$o"
        util ln -s "$3" "$o"
        util chown -h "$4" "$o"
    fi
    util mv -f "$o" "$path"
    if [ "$kind" = file ] && [ -n "$3" ]; then
        util chmod "$3" "$path"
    fi
    say "restored $path"
}

uninstall() {
    if [ ! -d "$PREFIX" ]; then
        say "nothing to uninstall: $PREFIX does not exist"
        return 0
    fi
    if [ -f "$MANIFEST" ]; then
        while IFS="$TAB" read -r kind path text resolved owner; do
            : "$resolved"
            case $kind in
            file | link) restore_tool "$kind" "$path" "$text" "$owner" ;;
            *) warn "ignoring a manifest line of unknown kind '$kind'" ;;
            esac
        done <"$MANIFEST"
    fi
    if [ "$FAILED" -ne 0 ]; then
        die "some originals were not restored (see above); $PREFIX is kept so that nothing is lost"
    fi
    util rm -rf "$PREFIX"
    say "removed $PREFIX"
}

if [ "$UNINSTALL" -eq 1 ]; then
    uninstall
    exit 0
fi

install_shim
harden_older_originals
set -f
for tool in $TOOLS; do
    shim_tool "$tool"
done
set +f
fix_links
check_execute_only
if [ "$FAILED" -ne 0 ]; then
    die "some tools were not shimmed (see the warnings above)"
fi
