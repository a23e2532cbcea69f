"""The benchmarks: each script measures its arms side by side in one run and writes a JSON and
a plot to benchmarks/results/. A regular package, so that no other ``benchmarks`` package on a
machine's path can take the place of this one."""
