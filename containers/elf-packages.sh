#!/usr/bin/env bash
# Prints, one line, the Debian packages that hold the shared libraries the
# given programs load, for programs of another CPU as well: the worker
# cross-compiled for arm64 on an amd64 build stage, where ldd cannot run it.
# It follows the ELF files' NEEDED entries (readelf) through their RUNPATH and
# the multiarch library directories of TRIPLET, and asks dpkg which package
# owns each library, so that the runtime image installs exactly those and no
# library version is written down anywhere (containers/Containerfile.cpu).
#
#   elf-packages.sh TRIPLET PROGRAM...    e.g. aarch64-linux-gnu gannf-worker
#
# READELF: the readelf to use (default readelf; any binutils' readelf reads
# every ELF machine). A library that is not found is an error; one that no
# package owns is named on stderr and left out.
set -euo pipefail
[ $# -ge 2 ] || { echo "usage: elf-packages.sh TRIPLET PROGRAM..." >&2; exit 2; }
triplet=$1; shift
readelf=${READELF:-readelf}

dynamic() { "$readelf" -d "$1" | sed -n "s/.*($2).*\[\(.*\)\]/\1/p"; }

declare -A seen=()
todo=("$@") packages=()
while [ ${#todo[@]} -gt 0 ]; do
  file=${todo[0]}; todo=("${todo[@]:1}")
  IFS=: read -r -a dirs <<< "$(dynamic "$file" RUNPATH)$(dynamic "$file" RPATH)"
  dirs+=("/lib/$triplet" "/usr/lib/$triplet")
  for so in $(dynamic "$file" NEEDED); do
    [ -z "${seen[$so]:-}" ] || continue
    seen[$so]=1
    lib=""
    for d in "${dirs[@]}"; do
      [ -n "$d" ] && [ -e "$d/$so" ] && { lib=$(readlink -f "$d/$so"); break; }
    done
    [ -n "$lib" ] || { echo "elf-packages.sh: $file needs $so, not found in ${dirs[*]}" >&2; exit 1; }
    todo+=("$lib")
    # Debian 12's packages list /lib/... or /usr/lib/... (merged /usr): try both.
    alt=$(echo "$lib" | sed 's|^/usr/lib/|/lib/|; t; s|^/lib/|/usr/lib/|')
    if owner=$(dpkg -S "$lib" 2>/dev/null || dpkg -S "$alt" 2>/dev/null); then
      packages+=("${owner%%:*}")
    else
      echo "elf-packages.sh: no package owns $lib" >&2
    fi
  done
done
printf '%s\n' "${packages[@]}" | sort -u | tr '\n' ' '
echo
