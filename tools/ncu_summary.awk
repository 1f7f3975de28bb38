# ncu --csv --page details: one row per (kernel launch, metric). Prints one
# line per launch: short kernel name, grid, duration, SM and memory
# throughput (% of peak), registers, achieved occupancy.
/^"/ {
  n = split(substr($0, 2, length($0) - 2), f, /","/)
  if (!hdr) { for (i = 1; i <= n; i++) col[f[i]] = i; hdr = 1; next }
  id = f[col["ID"]]
  if (!(id in name)) {
    k = f[col["Kernel Name"]]
    sub(/^void /, "", k)
    gsub(/\(anonymous namespace\)::/, "", k)  # no namespaces
    gsub(/gannf::cuda::[A-Za-z_0-9]*::/, "", k)
    sub(/\(.*$/, "", k)                       # no parameter list
    name[id] = substr(k, 1, 70); grid[id] = f[col["Grid Size"]]; order[++nk] = id
  }
  m = f[col["Metric Name"]]; v = f[col["Metric Value"]]; u = f[col["Metric Unit"]]
  if (m == "Duration") dur[id] = v " " u
  else if (m == "Compute (SM) Throughput") sm[id] = v
  else if (m == "Memory Throughput") mem[id] = v
  else if (m == "Registers Per Thread") reg[id] = v
  else if (m == "Achieved Occupancy") occ[id] = v
}
END {
  for (j = 1; j <= nk; j++) {
    id = order[j]
    printf "  %-70s grid %-14s %12s  SM %5s%%  mem %5s%%  regs %4s  occupancy %5s%%\n", name[id], grid[id], dur[id], sm[id], mem[id], reg[id], occ[id]
  }
  if (!nk) print "  (no kernel rows in ncu's output)"
}
