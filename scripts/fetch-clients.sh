#!/usr/bin/env bash
# Fetches newer containerd and Docker clients from Debian's archive without installing them,
# so tests can run the shim under containerd 1.7, containerd 2.x and dockerd on a bookworm
# machine whose own packages stay as they are.
#
#   scripts/fetch-clients.sh TARGET_DIR
#
# Everything lands under TARGET_DIR/clients/:
#   containerd-1.7/bin/{containerd,ctr,containerd-shim-runc-v2}      trixie's containerd
#   containerd-2/bin/{containerd,ctr,containerd-shim-runc-v2}        sid's containerd
#   docker/bin/{dockerd,docker,docker-proxy,docker-init}             sid's docker.io, docker-cli, tini
#   versions.txt                                                     what each run gave
#   apt/                                                             apt's private config, lists, cache
# Each client dir holds the .debs' files under root/ and a flat bin/ of links into it.
#
# runc is never fetched: sid's needs a newer glibc than bookworm's, so bookworm's
# /usr/sbin/runc stays the one every containerd uses.
#
# Idempotent: a client dir whose stamp is present and whose bin/ programs all run is left
# alone, and when every dir is complete no network is used. Set FETCH_CLIENTS_REFRESH=1 to
# fetch again (sid moves; versions.txt records what a run got rather than pinning it).
#
# Needs only what a bookworm base system has: bash, apt-get, apt-config, dpkg-deb, coreutils,
# findutils, util-linux (flock). No curl, no gpg, no root-only system state is touched:
# apt gets a config file of its own through APT_CONFIG, so /etc/apt, /var/lib/apt and
# /var/cache/apt are neither read for sources nor written.
set -euo pipefail

usage() {
    echo "usage: $0 TARGET_DIR" >&2
    exit 2
}

[ $# -eq 1 ] || usage
mkdir -p "$1"
# Absolute, so the paths written into apt's config and the links stay valid from any cwd.
TARGET_DIR=$(cd "$1" && pwd -P)
CLIENTS=$TARGET_DIR/clients
APT_DIR=$CLIENTS/apt
MIRROR=${FETCH_CLIENTS_MIRROR:-http://deb.debian.org/debian}
REFRESH=${FETCH_CLIENTS_REFRESH:-0}

# Each client dir: the packages (name/suite) it is extracted from, and the programs its bin/
# exposes. A|B means A, or B where A cannot be downloaded. docker-init in sid's docker.io is
# a link to tini-static, which sid ships in a package of its own (tini-static, what
# docker.io depends on) and trixie inside tini; either is a static binary, as it must be:
# dockerd bind-mounts it into containers that have no libc.
CLIENT_DIRS=(containerd-1.7 containerd-2 docker)
declare -A PACKAGES=(
    [containerd-1.7]="containerd/trixie"
    [containerd-2]="containerd/sid"
    [docker]="docker.io/sid docker-cli/sid tini-static/sid|tini/trixie"
)
declare -A PROGRAMS=(
    [containerd-1.7]="containerd ctr containerd-shim-runc-v2"
    [containerd-2]="containerd ctr containerd-shim-runc-v2"
    [docker]="dockerd docker docker-proxy docker-init"
)

log() { echo "fetch-clients: $*" >&2; }
die() {
    log "error: $*"
    exit 1
}

for tool in apt-get apt-config dpkg-deb flock realpath; do
    command -v "$tool" >/dev/null || die "$tool is required"
done

# Each program's version, on one line (the runc shim answers -v, over several lines).
version_of() {
    local prog=$1
    case ${prog##*/} in
        containerd-shim-runc-v2) "$prog" -v ;;
        *) "$prog" --version ;;
    esac | tr -s ' \n' '  ' | sed 's/ $//'
}

# A dir is complete when its stamp exists and every bin/ program runs. Running them (a few
# ms each) rather than testing -x also catches a dangling link or a binary that needs a
# newer glibc than this machine's.
is_complete() {
    local dir=$CLIENTS/$1 prog
    [ -f "$dir/.stamp" ] || return 1
    for prog in ${PROGRAMS[$1]}; do
        version_of "$dir/bin/$prog" >/dev/null 2>&1 || return 1
    done
}

# apt's own config, read instead of /etc/apt: APT_CONFIG is read before the parts dir and
# the main file, so pointing Dir::Etc at our dir keeps the host's apt.conf.d out entirely
# (its update hooks such as appstreamcli refresh write system caches; its DEP-11 targets
# would download metadata we don't need). Only the host's network settings are carried
# over, since a machine may reach the archive only through its configured proxy or a
# mirror whose Release files are past Valid-Until.
write_apt_config() {
    mkdir -p "$APT_DIR"/etc/apt.conf.d "$APT_DIR"/etc/preferences.d "$APT_DIR"/etc/sources.list.d \
        "$APT_DIR"/lists/partial "$APT_DIR"/cache/archives/partial "$APT_DIR"/state
    # An empty dpkg status: we install nothing, and apt must not look at (or lock) the
    # host's /var/lib/dpkg.
    : >"$APT_DIR/state/status"
    # Signed-By the keyring of the debian-archive-keyring package (priority important, so on
    # every bookworm system); it holds the keys that sign trixie and sid too.
    local keyring=/usr/share/keyrings/debian-archive-keyring.gpg
    [ -r "$keyring" ] || die "$keyring is missing (package debian-archive-keyring)"
    cat >"$APT_DIR/etc/sources.list" <<EOF
deb [signed-by=$keyring] $MIRROR trixie main
deb [signed-by=$keyring] $MIRROR sid main
EOF
    {
        echo "// Written by scripts/fetch-clients.sh: apt for downloading only, in its own dirs."
        echo "Dir::Etc \"$APT_DIR/etc\";"
        echo "Dir::Etc::main \"/dev/null\";"
        echo "Dir::Etc::parts \"$APT_DIR/etc/apt.conf.d\";"
        echo "Dir::Etc::sourcelist \"$APT_DIR/etc/sources.list\";"
        echo "Dir::Etc::sourceparts \"$APT_DIR/etc/sources.list.d\";"
        echo "Dir::Etc::preferences \"$APT_DIR/etc/preferences\";"
        echo "Dir::Etc::preferencesparts \"$APT_DIR/etc/preferences.d\";"
        echo "Dir::State \"$APT_DIR/state\";"
        echo "Dir::State::lists \"$APT_DIR/lists\";"
        echo "Dir::State::status \"$APT_DIR/state/status\";"
        echo "Dir::Cache \"$APT_DIR/cache\";"
        echo "Dir::Log \"$APT_DIR/log\";"
        # The download methods run as _apt by default, which cannot write into the mode-700
        # mktemp dir the .debs go to: apt then warns "Download is performed unsandboxed as
        # root" and does it as root anyway. Say so up front.
        echo "APT::Sandbox::User \"root\";"
        # Only main's Packages indices: no translations, no DEP-11.
        echo "Acquire::Languages \"none\";"
        echo "Acquire::GzipIndexes \"true\";"
        echo "Acquire::Retries \"3\";"
        # Host network settings (proxy, validity checks of a mirror), as apt-config prints them.
        apt-config dump 2>/dev/null |
            grep -E '^Acquire::(https?|ftp)::Proxy|^Acquire::Check-(Valid-Until|Date) |^Acquire::(https?)::(Timeout|Verify-Peer|CaInfo)' ||
            true
    } >"$APT_DIR/apt.conf"
}

APT_UPDATED=0
apt_update() {
    [ "$APT_UPDATED" -eq 1 ] && return 0
    write_apt_config
    log "apt-get update (trixie, sid) into $APT_DIR/lists"
    APT_CONFIG=$APT_DIR/apt.conf apt-get -q update >"$APT_DIR/update.log" 2>&1 ||
        {
            cat "$APT_DIR/update.log" >&2
            die "apt-get update failed"
        }
    # apt-get update exits 0 on some fetch failures (it only warns): an index missing here
    # would make the downloads below fail with a less helpful message.
    if grep -qE '^(W|E):' "$APT_DIR/update.log"; then
        grep -E '^(W|E):' "$APT_DIR/update.log" >&2
    fi
    APT_UPDATED=1
}

# Makes every absolute link inside the extracted tree point inside it, relatively, so no
# link reaches into the host's /usr and the tree works wherever it is moved. (Today's
# packages have none: docker-init is a relative link to tini-static. Packaging changes.)
fix_links() {
    local root=$1 link target
    while IFS= read -r -d '' link; do
        target=$(readlink "$link")
        case $target in
            /*) ln -sfn "$(realpath -m --relative-to="$(dirname "$link")" "$root$target")" "$link" ;;
        esac
    done < <(find "$root" -type l -print0)
}

# Path (relative to root) of a program in the extracted tree.
find_program() {
    local root=$1 prog=$2 d
    for d in usr/bin usr/sbin usr/libexec/docker bin sbin; do
        if [ -e "$root/$d/$prog" ]; then
            echo "$d/$prog"
            return 0
        fi
    done
    return 1
}

# dockerd bind-mounts docker-init into containers as their init, and they have no libc:
# the binary must run from an otherwise empty root. Checked with chroot where we are root.
check_static() {
    local bin=$1 jail rc=0
    [ "$(id -u)" -eq 0 ] || return 0
    jail=$(mktemp -d)
    cp -L "$bin" "$jail/init"
    chroot "$jail" /init --version >/dev/null 2>&1 || rc=$?
    rm -rf "$jail"
    [ "$rc" -eq 0 ] || die "$bin does not run without a libc (not a static binary?)"
}

fetch_dir() {
    local name=$1 dir=$CLIENTS/$1 work alts spec deb prog rel
    apt_update
    # Built beside the final dir and moved into place only when complete, so an interrupted
    # run never leaves a dir that looks complete.
    work=$(mktemp -d "$CLIENTS/.$name.XXXXXX")
    mkdir -p "$work/debs" "$work/root" "$work/bin"
    for alts in ${PACKAGES[$name]}; do
        deb=
        for spec in ${alts//|/ }; do
            log "$name: apt-get download $spec"
            # apt-get download writes into the cwd: one dir per package, so the .deb is
            # known to come from this spec.
            mkdir -p "$work/debs/${spec%/*}"
            if (cd "$work/debs/${spec%/*}" &&
                APT_CONFIG=$APT_DIR/apt.conf apt-get -q download "$spec" >/dev/null); then
                deb=$(echo "$work/debs/${spec%/*}"/*.deb)
                break
            fi
        done
        [ -f "$deb" ] || die "$name: could not download any of $alts"
        dpkg-deb -x "$deb" "$work/root"
        # The stamp records what was extracted: package, version, suite asked for.
        echo "$(dpkg-deb -f "$deb" Package) $(dpkg-deb -f "$deb" Version) ${spec#*/}" >>"$work/stamp.tmp"
    done
    fix_links "$work/root"
    for prog in ${PROGRAMS[$name]}; do
        rel=$(find_program "$work/root" "$prog") || die "$name: no $prog in ${PACKAGES[$name]}"
        ln -sfn "../root/$rel" "$work/bin/$prog"
        version_of "$work/bin/$prog" >/dev/null 2>&1 ||
            die "$name: $prog does not run here: $(version_of "$work/bin/$prog" 2>&1 | head -3)"
    done
    if [ "$name" = docker ]; then
        check_static "$work/bin/docker-init"
    fi
    # The debs are not needed once extracted (the stamp keeps their versions).
    rm -rf "$work/debs"
    mv "$work/stamp.tmp" "$work/.stamp"
    rm -rf "$dir"
    mv "$work" "$dir"
    chmod 755 "$dir"
    log "$name: ready in $dir/bin"
}

write_versions() {
    local name prog out=$CLIENTS/versions.txt.tmp
    {
        echo "# Written by scripts/fetch-clients.sh on $(date -u +%Y-%m-%dT%H:%M:%SZ)"
        for name in "${CLIENT_DIRS[@]}"; do
            while read -r pkg ver suite; do
                echo "$name deb $pkg $ver ($suite)"
            done <"$CLIENTS/$name/.stamp"
            for prog in ${PROGRAMS[$name]}; do
                echo "$name bin $prog: $(version_of "$CLIENTS/$name/bin/$prog" 2>&1)"
            done
        done
    } >"$out"
    mv "$out" "$CLIENTS/versions.txt"
}

mkdir -p "$CLIENTS"
# One run at a time (tests may call this in parallel): the second waits, then finds
# everything complete.
exec 9>"$CLIENTS/.lock"
flock 9

for name in "${CLIENT_DIRS[@]}"; do
    if [ "$REFRESH" != 1 ] && is_complete "$name"; then
        continue
    fi
    fetch_dir "$name"
done
# apt's binary caches (about 140 MB for two suites) only speed up the apt-get calls of this
# run; the lists stay, for looking at with APT_CONFIG=$APT_DIR/apt.conf apt-cache policy.
rm -f "$APT_DIR"/cache/*.bin
# Leftovers of an interrupted run.
find "$CLIENTS" -maxdepth 1 -name '.*.??????' -type d -exec rm -rf {} +
write_versions
cat "$CLIENTS/versions.txt"
