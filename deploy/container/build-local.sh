#!/usr/bin/env bash
# Builds the repository's Containerfile with podman on a machine that cannot pull its base
# images (no access to docker.io or gcr.io), and tags the result localhost/redis-flusher:dev.
#
# The Containerfile is built unchanged. Its two base images are replaced by local stand-ins
# under the names it uses, made from Debian bookworm by debootstrap:
#
#   gcr.io/distroless/cc-debian12:nonroot   what distroless puts there and no more: the files
#       of base-files, netbase, tzdata, media-types, libc6, libssl3, libgcc-s1, libgomp1,
#       libstdc++6, gcc-12-base; /etc/ssl/certs/ca-certificates.crt; distroless's /etc/passwd,
#       /etc/group (root, nobody, nonroot 65532), /etc/nsswitch.conf, /etc/os-release, /tmp,
#       /home/nonroot; USER 65532, WORKDIR /home/nonroot, SSL_CERT_FILE. No shell.
#   docker.io/library/rust:<X.Y>-slim-bookworm   bookworm with gcc, libc6-dev, ca-certificates
#       (as the official slim image has), and the official image's CARGO_HOME=/usr/local/cargo,
#       RUSTUP_HOME=/usr/local/rustup and PATH. The compiler is this machine's own toolchain,
#       bind-mounted read-only at build time, so <X.Y> is this machine's rustc version (passed
#       as --build-arg RUST_VERSION): the stand-in never claims a version it does not hold.
#       Crates come from `cargo vendor` (read-only mount, cargo offline): the build runs with
#       no network at all.
#
# RUN steps execute with `--isolation chroot`: no OCI runtime (crun/runc need cgroups that
# this kind of machine does not give) and no container is ever started.
#
# Everything it caches is its own, under target/container-stand-ins/ (the debootstrap tarball
# and the vendored crates) and in podman's storage (the two stand-in images, labelled
# redis-flusher.stand-in, and the build's cache mounts). A second build reuses them.
#
# Usage: deploy/container/build-local.sh [--tag NAME] [--rebuild-stand-ins] [--clean]
#   --tag NAME            tag of the result (default localhost/redis-flusher:dev)
#   --rebuild-stand-ins   make the debootstrap tarball, the vendored crates and both stand-ins anew
#   --clean               remove the stand-in images, the build stages made from them, the build's
#                         cache mounts and target/container-stand-ins/, then exit (an image you
#                         built, such as localhost/redis-flusher:dev, stays: podman keeps the
#                         layers it is made of, untagged)
# Environment: DEBIAN_MIRROR (default http://deb.debian.org/debian); CARGO_BUILD_JOBS, passed
# to the cargo inside the build (it uses every core otherwise).
#
# Runs as root, or as a user with sudo (debootstrap and podman then run under sudo, so the
# image is in root's podman storage; cargo runs as you, with your toolchain).
set -euo pipefail

tag=localhost/redis-flusher:dev
rebuild=0
clean=0
while [ $# -gt 0 ]; do
  case "$1" in
    --tag) [ $# -ge 2 ] || { echo "--tag needs a value" >&2; exit 2; }; tag=$2; shift 2 ;;
    --rebuild-stand-ins) rebuild=1; shift ;;
    --clean) clean=1; shift ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "unknown argument: $1 (see --help)" >&2; exit 2 ;;
  esac
done

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$repo"
state=$repo/target/container-stand-ins
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
runtime_image=gcr.io/distroless/cc-debian12:nonroot
# What the stand-ins are made of; a change here makes them anew.
suite=bookworm
runtime_pkgs=(base-files netbase tzdata media-types libc6 libssl3 libgcc-s1 libgomp1 libstdc++6 gcc-12-base)
build_pkgs=(ca-certificates gcc libc6-dev)
recipe_version=1

die() {
  echo "build-local.sh: FAILED: $*" >&2
  exit 1
}

sudo_cmd=()
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null 2>&1 || die "not root and no sudo: debootstrap and podman need root"
  sudo_cmd=(sudo)
fi
as_root() { "${sudo_cmd[@]}" "$@"; }

# Timing: each step says what it does and how long it took; a summary closes the run.
steps=()
step_name=""
step_start=0
now() { date +%s.%N; }
step() {
  step_end
  step_name=$1
  step_start=$(now)
  echo "==> $step_name"
}
step_end() {
  if [ -n "$step_name" ]; then
    local took
    took=$(awk -v a="$step_start" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }')
    echo "    ($took s)"
    steps+=("$(printf '%7s s  %s' "$took" "$step_name")")
    step_name=""
  fi
}
total_start=$(now)

work=""
cleanup() {
  local rc=$?
  if [ -n "$work" ] && [ -d "$work" ]; then
    # Never follow a mount out of the work directory (debootstrap mounts /proc and /sys in
    # its target, and leaves them when it fails).
    while read -r m; do as_root umount -l "$m" || true; done < <(awk -v w="$work" 'index($2, w) == 1 { print $2 }' /proc/mounts | sort -r)
    as_root rm -rf --one-file-system "$work"
  fi
  if [ "$rc" -ne 0 ]; then
    echo "build-local.sh: FAILED in step: ${step_name:-setup} (exit $rc); nothing was tagged $tag" >&2
  fi
}
trap cleanup EXIT

image_label() { as_root podman image inspect --format "{{ index .Labels \"$2\" }}" "$1" 2>/dev/null || true; }
# Removes the untagged images made from a stand-in (build stages, older results; every image
# made from a stand-in carries its label), then the stand-in. Tagged images made from it stay,
# and so does the stand-in they need.
prune_made_from() {
  local name=$1 id
  # Three passes: an image goes only once the images made from it are gone.
  for _ in 1 2 3; do
    for id in $(as_root podman images --all --filter "label=redis-flusher.stand-in=$name" --filter dangling=true --format '{{.ID}}'); do
      as_root podman rmi "$id" >/dev/null 2>&1 || true
    done
  done
}
drop_stand_in() {
  local name=$1
  prune_made_from "$name"
  as_root podman rmi "$name" >/dev/null 2>&1 ||
    ! as_root podman image exists "$name" ||
    echo "    kept $name: $(as_root podman images --filter "label=redis-flusher.stand-in=$name" --filter dangling=false --format '{{.Repository}}:{{.Tag}}' | grep -vxF "$name" | sort -u | tr '\n' ' ')is built on it"
}

if [ "$clean" -eq 1 ]; then
  step "remove the stand-ins, the build stages made from them, their cache mounts and ${state#"$repo"/}"
  for name in $(as_root podman images --all --filter label=redis-flusher.stand-in --format '{{ index .Labels "redis-flusher.stand-in" }}' | sort -u); do
    drop_stand_in "$name"
  done
  # podman keeps RUN --mount=type=cache directories under its temporary directory, by id.
  for dir in "${TMPDIR:-/var/tmp}/buildah-cache" /var/tmp/buildah-cache; do
    as_root rm -rf --one-file-system "$dir/redis-flusher-cargo-registry" "$dir/redis-flusher-target"
  done
  as_root rm -rf --one-file-system "$state"
  step_end
  exit 0
fi

# --- what this machine has -------------------------------------------------------------------
step "check the tools"
missing=()
command -v podman >/dev/null 2>&1 || missing+=(podman)
command -v debootstrap >/dev/null 2>&1 || [ -x /usr/sbin/debootstrap ] || missing+=(debootstrap)
if [ "${#missing[@]}" -gt 0 ]; then
  echo "    installing with apt: ${missing[*]}"
  as_root apt-get update -q
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -q --no-install-recommends "${missing[@]}" ||
    die "apt-get could not install ${missing[*]}"
fi
command -v cargo >/dev/null 2>&1 || die "cargo is not on PATH: the build stand-in uses this machine's Rust toolchain"
sysroot=$(rustc --print sysroot) || die "rustc --print sysroot failed"
rust_full=$(rustc --version | awk '{ print $2 }')
case "$rust_full" in
  [0-9]*.[0-9]*.[0-9]*) ;;
  *) die "this machine's rustc is '$rust_full', not a stable release: the stand-in is named after a release" ;;
esac
rust_minor=${rust_full%.*}
host_triple=$(rustc -vV | awk '/^host:/ { print $2 }')
[ "$host_triple" = x86_64-unknown-linux-gnu ] || die "the stand-ins are made for x86_64-unknown-linux-gnu, this rustc is $host_triple"
build_image=docker.io/library/rust:${rust_minor}-slim-bookworm
toolchain_dir=/usr/local/rustup/toolchains/${rust_full}-${host_triple}
version=$(awk -F'"' '/^version *=/ { print $2; exit }' Cargo.toml)
revision=$(git rev-parse --short=12 HEAD 2>/dev/null || echo unknown)
echo "    podman $(podman --version | awk '{ print $3 }'), rustc $rust_full ($sysroot), redis-flusher $version ($revision)"
mkdir -p "$state"

recipe=$(printf '%s\n' "$recipe_version" "$suite" "$mirror" "${runtime_pkgs[*]}" "${build_pkgs[*]}" | sha256sum | cut -c1-16)
# An image is reused only when its label says it was made from this recipe (and, for the build
# stand-in, this rustc version: the toolchain itself is mounted at build time, from wherever it is).

# --- the crates, vendored for an offline build -----------------------------------------------
step "vendor the crates of Cargo.lock into target/container-stand-ins/vendor"
lock_sum=$(sha256sum Cargo.lock | cut -d' ' -f1)
if [ "$rebuild" -eq 0 ] && [ -d "$state/vendor" ] && [ "$(cat "$state/vendor.stamp" 2>/dev/null)" = "$lock_sum" ]; then
  echo "    unchanged since the last build (Cargo.lock $lock_sum)"
else
  rm -rf "$state/vendor.new"
  # Offline first, from this machine's cargo cache; crates it never downloaded (other
  # platforms' ones are vendored too) then come from crates.io.
  if ! cargo vendor --locked --offline --quiet "$state/vendor.new" >/dev/null 2>&1; then
    echo "    not all crates are in this machine's cargo cache: fetching the missing ones from crates.io"
    rm -rf "$state/vendor.new"
    cargo vendor --locked --quiet "$state/vendor.new" >/dev/null || die "cargo vendor --locked failed (see above)"
  fi
  rm -rf "$state/vendor"
  mv "$state/vendor.new" "$state/vendor"
  echo "$lock_sum" > "$state/vendor.stamp"
  echo "    $(find "$state/vendor" -mindepth 1 -maxdepth 1 -type d | wc -l) crates, $(du -sh "$state/vendor" | cut -f1)"
fi

# --- the Debian root file system both stand-ins come from ------------------------------------
rootfs_tar=$state/debootstrap-$suite-$recipe.tar
need_runtime=1
need_build=1
if [ "$rebuild" -eq 0 ]; then
  [ "$(image_label "$runtime_image" redis-flusher.stand-in.recipe)" = "$recipe" ] && need_runtime=0
  [ "$(image_label "$build_image" redis-flusher.stand-in.recipe)" = "$recipe/$rust_full" ] && need_build=0
fi

if [ "$need_runtime" -eq 1 ] || [ "$need_build" -eq 1 ]; then
  work=$(mktemp -d "$state/work.XXXXXX")
  if [ "$rebuild" -eq 1 ] || [ ! -s "$rootfs_tar" ]; then
    step "debootstrap $suite (minbase + ${runtime_pkgs[*]} ${build_pkgs[*]}) from $mirror"
    include=$(IFS=,; echo "${runtime_pkgs[*]},${build_pkgs[*]}")
    as_root debootstrap --variant=minbase --include="$include" "$suite" "$work/rootfs" "$mirror" \
      > "$state/debootstrap.log" 2>&1 ||
      die "debootstrap failed; the last lines of $state/debootstrap.log: $(tail -5 "$state/debootstrap.log")"
    # The tarball is written by this shell (so it is yours, not root's).
    as_root tar -C "$work/rootfs" --numeric-owner -cf - . > "$rootfs_tar.new"
    mv "$rootfs_tar.new" "$rootfs_tar"
    # Tarballs of another recipe are stale now (kept until here: a failed debootstrap keeps them).
    find "$state" -maxdepth 1 -name 'debootstrap-*.tar' ! -path "$rootfs_tar" -delete
    echo "    $(du -h "$rootfs_tar" | cut -f1) tarball cached at ${rootfs_tar#"$repo"/}"
  else
    step "unpack the cached debootstrap tarball ${rootfs_tar#"$repo"/}"
    as_root mkdir "$work/rootfs"
    as_root tar -C "$work/rootfs" --numeric-owner -xpf "$rootfs_tar"
  fi
fi

# --- the runtime stand-in: distroless cc-debian12:nonroot ------------------------------------
if [ "$need_runtime" -eq 0 ]; then
  step "runtime stand-in $runtime_image: present (recipe $recipe)"
else
  step "make the runtime stand-in $runtime_image"
  root=$work/rootfs
  stage=$work/runtime
  list=$work/runtime.list
  : > "$list"
  declare -A resolved=()
  for pkg in "${runtime_pkgs[@]}"; do
    pkglist=""
    for f in "$root/var/lib/dpkg/info/$pkg.list" "$root/var/lib/dpkg/info/$pkg":*.list; do
      [ -f "$f" ] && { pkglist=$f; break; }
    done
    [ -n "$pkglist" ] || die "package $pkg is not in the debootstrap root file system"
    while IFS= read -r path; do
      [ "$path" = "/." ] && continue
      dir=${path%/*}
      dir=${dir:-/}
      if [ -z "${resolved[$dir]+x}" ]; then
        # bookworm's merged /usr: /lib is a link to usr/lib; list every file by its real path.
        resolved[$dir]=$(realpath -m --relative-to="$root" "$root$dir")
      fi
      entry=${resolved[$dir]}/${path##*/}
      entry=${entry#./}
      # Directories too (for their modes); --no-recursion below takes each path alone.
      if [ -e "$root/$entry" ] || [ -L "$root/$entry" ]; then
        echo "$entry" >> "$list"
      fi
    done < "$pkglist"
  done
  for link in bin sbin lib lib64; do [ -L "$root/$link" ] && echo "$link" >> "$list"; done
  echo "etc/ssl/certs/ca-certificates.crt" >> "$list"
  echo "usr/share/doc/ca-certificates/copyright" >> "$list"
  as_root mkdir -p "$stage/etc/ssl/certs" "$stage/usr/share/doc/ca-certificates"
  sort -u "$list" | as_root tar -C "$root" --numeric-owner --no-recursion -cf - -T - | as_root tar -C "$stage" --numeric-owner -xpf -
  # What distroless adds of its own (rules_distroless passwd/group/home, its nsswitch.conf,
  # os-release and a 1777 /tmp).
  printf '%s\n' 'root:x:0:0:root:/root:/sbin/nologin' \
    'nobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin' \
    'nonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin' | as_root tee "$stage/etc/passwd" >/dev/null
  printf '%s\n' 'root:x:0:' 'nobody:x:65534:' 'tty:x:5:' 'staff:x:50:' 'nonroot:x:65532:' |
    as_root tee "$stage/etc/group" >/dev/null
  printf '%s\n' 'passwd:         compat' 'group:          compat' 'shadow:         compat' \
    'gshadow:        files' '' 'hosts:          files dns' 'networks:       files' '' \
    'protocols:      db files' 'services:       db files' 'ethers:         db files' \
    'rpc:            db files' '' 'netgroup:       nis' | as_root tee "$stage/etc/nsswitch.conf" >/dev/null
  as_root rm -f "$stage/etc/os-release"
  printf '%s\n' 'PRETTY_NAME="Distroless"' 'NAME="Debian GNU/Linux"' 'ID="debian"' 'VERSION_ID="12"' \
    'VERSION="Debian GNU/Linux 12 (bookworm)"' 'HOME_URL="https://github.com/GoogleContainerTools/distroless"' |
    as_root tee "$stage/etc/os-release" >/dev/null
  as_root install -d -m 1777 "$stage/tmp"
  as_root install -d -m 0755 "$stage/home"
  as_root install -d -m 0700 "$stage/root"
  as_root install -d -m 0700 -o 65532 -g 65532 "$stage/home/nonroot"
  # The point of the stand-in: what the real image lacks, this one lacks too.
  for absent in bin/sh usr/bin/sh usr/bin/bash usr/bin/dash usr/bin/apt usr/bin/dpkg; do
    [ ! -e "$stage/$absent" ] || die "the runtime stand-in would hold /$absent, which distroless does not"
  done
  for present in usr/lib/x86_64-linux-gnu/libc.so.6 usr/lib/x86_64-linux-gnu/libgcc_s.so.1 \
    lib64/ld-linux-x86-64.so.2 etc/ssl/certs/ca-certificates.crt usr/share/zoneinfo/UTC; do
    [ -e "$stage/$present" ] || die "the runtime stand-in lacks /$present"
  done
  drop_stand_in "$runtime_image"
  as_root tar -C "$stage" --numeric-owner -cf - . | as_root podman import --quiet \
    --change 'USER 65532' \
    --change 'WORKDIR /home/nonroot' \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt' \
    --change "LABEL redis-flusher.stand-in=$runtime_image" \
    --change "LABEL redis-flusher.stand-in.recipe=$recipe" \
    - "$runtime_image" >/dev/null || die "podman import of the runtime stand-in failed"
  echo "    $(wc -l < "$list") paths from ${#runtime_pkgs[@]} packages"
fi

# --- the build stand-in: rust:X.Y-slim-bookworm with this machine's toolchain -----------------
if [ "$need_build" -eq 0 ]; then
  step "build stand-in $build_image: present (rustc $rust_full)"
else
  step "make the build stand-in $build_image"
  root=$work/rootfs
  as_root mkdir -p "$root/usr/local/cargo/bin" "$root/usr/local/cargo/vendor" "$root$toolchain_dir"
  # Mount points, filled at build time: the toolchain (read-only) and the vendored crates.
  for tool in cargo rustc rustdoc; do
    as_root ln -sfn "$toolchain_dir/bin/$tool" "$root/usr/local/cargo/bin/$tool"
  done
  printf '%s\n' \
    '# build-local.sh stand-in only: crates from the vendored copy mounted here, no network.' \
    '[source.crates-io]' 'replace-with = "vendored-sources"' '' \
    '[source.vendored-sources]' 'directory = "/usr/local/cargo/vendor"' '' \
    '[net]' 'offline = true' | as_root tee "$root/usr/local/cargo/config.toml" >/dev/null
  drop_stand_in "$build_image"
  as_root tar -C "$root" --numeric-owner -cf - . | as_root podman import --quiet \
    --change 'ENV RUSTUP_HOME=/usr/local/rustup' \
    --change 'ENV CARGO_HOME=/usr/local/cargo' \
    --change 'ENV PATH=/usr/local/cargo/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change "ENV RUST_VERSION=$rust_full" \
    --change 'CMD ["bash"]' \
    --change "LABEL redis-flusher.stand-in=$build_image" \
    --change "LABEL redis-flusher.stand-in.recipe=$recipe/$rust_full" \
    - "$build_image" >/dev/null || die "podman import of the build stand-in failed"
fi

# --- the build itself: the repository's Containerfile, unchanged ------------------------------
step "podman build -f Containerfile -t $tag (isolation chroot, no network, pull never)"
# The stand-in's cargo configuration, mounted over the one it holds: the vendored crates,
# offline, and CARGO_BUILD_JOBS when you set it.
{
  printf '%s\n' '[source.crates-io]' 'replace-with = "vendored-sources"' '' \
    '[source.vendored-sources]' 'directory = "/usr/local/cargo/vendor"' '' '[net]' 'offline = true'
  if [ -n "${CARGO_BUILD_JOBS:-}" ]; then printf '\n[build]\njobs = %d\n' "$CARGO_BUILD_JOBS"; fi
} > "$state/cargo-config.toml"
# With --isolation chroot, RUN shares the network of podman itself (podman refuses --network
# none there); podman runs in a network namespace of its own with no interface but lo instead,
# so the build provably fetches nothing.
build_args=(
  --isolation chroot
  --pull=never
  --volume "$sysroot:$toolchain_dir:ro"
  --volume "$state/vendor:/usr/local/cargo/vendor:ro"
  --volume "$state/cargo-config.toml:/usr/local/cargo/config.toml:ro"
  --build-arg "RUST_VERSION=$rust_minor"
  --build-arg "VERSION=$version"
  --build-arg "REVISION=$revision"
  # Again as labels: podman 4.3 (buildah 1.28) reuses a cached LABEL step when only a
  # --build-arg's value changed (buildah issue #5501), and would keep an older revision.
  --label "org.opencontainers.image.version=$version"
  --label "org.opencontainers.image.revision=$revision"
  --file Containerfile
  --tag "$tag"
)
echo "    unshare --net -- podman build ${build_args[*]} ."
as_root unshare --net -- podman build "${build_args[@]}" . || die "podman build failed (its output is above)"

step "inspect $tag"
# Older results, untagged now, and what only they used; and the build stages of earlier
# builds (about 480 MB each): the newest stays, as the layer cache of the next build.
prune_made_from "$runtime_image"
for id in $(as_root podman images --all --filter "label=redis-flusher.stand-in=$build_image" \
  --filter dangling=true --sort created --format '{{.ID}}' | tail -n +2); do
  as_root podman rmi "$id" >/dev/null 2>&1 || true
done
size=$(as_root podman image inspect --format '{{.Size}}' "$tag")
runtime_size=$(as_root podman image inspect --format '{{.Size}}' "$runtime_image")
config=$(as_root podman image inspect --format 'user={{.Config.User}} entrypoint={{.Config.Entrypoint}} cmd={{.Config.Cmd}} workdir={{.Config.WorkingDir}}' "$tag")
mnt=$(as_root podman image mount "$tag")
bin_size=$(as_root stat -c %s "$mnt/usr/local/bin/redis-flusher")
# Run in the image's own root, with its libraries, as its user: a smoke test of the result.
bin_version=$(as_root chroot --userspec=65532:65532 "$mnt" /usr/local/bin/redis-flusher --version) ||
  { as_root podman image unmount "$tag" >/dev/null; die "the image's binary does not run in the image"; }
as_root podman image unmount "$tag" >/dev/null
mib() { awk -v b="$1" 'BEGIN { printf "%.1f MiB", b / 1048576 }'; }
step_end

echo
echo "built $tag: $bin_version"
echo "  image size             $(mib "$size") ($size bytes)"
echo "  runtime stand-in size  $(mib "$runtime_size") ($runtime_image)"
echo "  binary                 $(mib "$bin_size") (/usr/local/bin/redis-flusher, stripped)"
echo "  config                 $config"
echo "  built with             $build_image (stand-in: this machine's rustc $rust_full)"
echo "time:"
printf '  %s\n' "${steps[@]}"
awk -v a="$total_start" -v b="$(now)" 'BEGIN { printf "  %7.1f s  in all\n", b - a }'
