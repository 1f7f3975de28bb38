#!/usr/bin/env bash
# One line per ctest label: passed, failed, skipped, and why the skipped ones
# were skipped (the first line of each GTEST_SKIP message, counted), then the
# test areas this build left out (tests/CMakeLists.txt writes them). Reads
# the JUnit file of a ctest run (--output-junit); tools/test.sh prints it last.
#   tools/test-summary.sh BUILD_DIR JUNIT_FILE
set -euo pipefail
build=$1
junit=$2
[ -s "$junit" ] || { echo "test summary: no results in $junit (ctest did not run)"; exit 0; }

# label <TAB> test name, for every label of every test.
labels=$(mktemp)
trap 'rm -f "$labels"' EXIT
ctest --test-dir "$build" --print-labels | sed -n 's/^  *//p' | grep -v '^All Labels:' |
  while read -r label; do
    ctest --test-dir "$build" -N -L "^${label}\$" |
      sed -n "s/^ *Test *#[0-9]*: \(.*\)\$/${label}	\1/p" | sed 's/ (Disabled)$//'  # ctest -N marks disabled tests
  done >"$labels"

awk -F'\t' '
  function unxml(s) {
    gsub(/&lt;/, "<", s); gsub(/&gt;/, ">", s); gsub(/&quot;/, "\"", s); gsub(/&apos;/, "\047", s)
    gsub(/&amp;/, "\\&", s)
    return s
  }
  function attr(line, name,   m) {
    if (match(line, " " name "=\"[^\"]*\"")) return unxml(substr(line, RSTART + length(name) + 3, RLENGTH - length(name) - 4))
    return ""
  }
  function finish() {
    if (name == "") return
    n_labels = split(test_labels[name], ls, SUBSEP)
    if (n_labels == 0) { ls[1] = "(no label)"; n_labels = 1 }
    for (i = 1; i <= n_labels; i++) {
      l = ls[i]
      seen[l] = 1
      if (outcome == "skipped") { skipped[l]++; why[l, reason]++; reasons[l] = reasons[l] SUBSEP reason }
      else if (outcome == "failed") failed[l]++
      else passed[l]++
    }
    name = ""
  }
  FNR == NR {  # the label list
    test_labels[$2] = test_labels[$2] == "" ? $1 : test_labels[$2] SUBSEP $1
    next
  }
  /<testcase / {
    finish()
    name = attr($0, "name")
    status = attr($0, "status")
    outcome = status == "run" ? "passed" : status == "disabled" ? "skipped" : "failed"
    reason = status == "disabled" ? "disabled" : "no reason given"
    next
  }
  /<skipped message="SKIP_REGULAR_EXPRESSION_MATCHED"/ { outcome = "skipped"; next }
  /: Skipped$/ { want_reason = 1; next }
  want_reason {
    want_reason = 0
    if ($0 !~ /^\[  SKIPPED \]/) {
      reason = unxml($0)
      if (length(reason) > 110) reason = substr(reason, 1, 107) "..."
    }
    next
  }
  END {
    finish()
    print "Tests by label (a test may carry more than one):"
    n = 0
    for (l in seen) order[++n] = l
    for (i = 2; i <= n; i++)  # insertion sort: awk has no portable sort
      for (j = i; j > 1 && order[j - 1] > order[j]; j--) { t = order[j]; order[j] = order[j - 1]; order[j - 1] = t }
    for (i = 1; i <= n; i++) {
      l = order[i]
      line = sprintf("  %-10s %4d passed, %d failed, %d skipped", l ":", passed[l], failed[l], skipped[l])
      if (skipped[l]) {
        sep = " ("
        split(substr(reasons[l], 2), rs, SUBSEP)
        delete done
        for (k = 1; k in rs; k++) {
          r = rs[k]
          if (r in done) continue
          done[r] = 1
          line = line sep (why[l, r] == skipped[l] ? "" : why[l, r] ": ") r
          sep = "; "
        }
        line = line ")"
      }
      print line
    }
  }
' "$labels" "$junit"

not_built="$build/tests/not-built.txt"
if [ -s "$not_built" ]; then
  echo "Test areas not built here (tools/setup.sh installs what they need):"
  sed 's/^/  /' "$not_built"
fi
