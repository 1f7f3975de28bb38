#!/bin/sh
# Prints, one line, the Debian packages that hold the shared libraries the
# given programs load (ldd), so that a runtime image installs exactly those
# (containers/Containerfile.*). Libraries no package owns (CUDA's, from the
# toolkit or the driver) are left out and named on stderr.
set -eu
[ $# -gt 0 ] || { echo "usage: runtime-packages.sh PROGRAM..." >&2; exit 2; }
for prog in "$@"; do
  ldd "$prog" | awk '$2 == "=>" && $3 ~ /^\// {print $3}'
done | sort -u | while read -r lib; do
  # Debian 12's packages list /lib/... or /usr/lib/... (merged /usr): try both.
  alt=$(echo "$lib" | sed 's|^/usr/lib/|/lib/|; t; s|^/lib/|/usr/lib/|')
  pkg=$(dpkg -S "$lib" 2>/dev/null || dpkg -S "$alt" 2>/dev/null || true)
  if [ -n "$pkg" ]; then echo "${pkg%%:*}"; else echo "runtime-packages.sh: no package owns $lib" >&2; fi
done | sort -u | tr '\n' ' '
echo
