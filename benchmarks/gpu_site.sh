#!/usr/bin/env bash
# Packages benchmarks/full_size.py needs that a bare GPU image (JAX, flax, optax, orbax) lacks:
# omegaconf and its parser antlr4, both pure Python, copied from this checkout's venv into
# .gpu_site/ (git-ignored) to travel with the tree. Then, on the GPU machine:
#   PYTHONPATH=.gpu_site:. python3 benchmarks/full_size.py            # chinchilla_50m, bf16, T=2
set -euo pipefail
cd "$(dirname "$0")/.."
site=$(.venv/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
rm -rf .gpu_site && mkdir .gpu_site
for pkg in omegaconf antlr4; do
  [ -d "$site/$pkg" ] || { echo "gpu_site.sh: $site/$pkg missing: run 'make test' once to build .venv" >&2; exit 2; }
  cp -r "$site/$pkg" .gpu_site/
done
find .gpu_site -name __pycache__ -prune -exec rm -rf {} +
du -sh .gpu_site
