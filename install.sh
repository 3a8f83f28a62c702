#!/bin/sh
# eKuiper runs this once, inside the install REST call, as `/bin/sh install.sh` in the plugin's folder
# (plugins/portable/<name>/). It installs the Python dependencies into ./lib and writes nothing outside the folder.
# A non-zero exit fails the install and eKuiper removes the plugin again; the message below is what the user sees.
set -u
cd "$(dirname "$0")" || exit 1

# The plugin runs under the host's portable.pythonBin: the environment override first, then the host's kuiper.yaml
# (three levels up), then python3.
PY="${KUIPER__PORTABLE__PYTHONBIN:-}"
if [ -z "$PY" ] && [ -f ../../../etc/kuiper.yaml ]; then
  PY=$(sed -n '/^portable:/,/^[^[:space:]#]/s/^[[:space:]]*pythonBin:[[:space:]]*["'"'"']\{0,1\}\([^"'"'"'[:space:]#]*\).*/\1/p' \
    ../../../etc/kuiper.yaml | head -n 1)
fi
[ -n "$PY" ] || PY=python3

fail() { echo "httppush install failed: $*" >&2; exit 1; }

command -v "$PY" >/dev/null 2>&1 || fail "the host's python '$PY' (portable.pythonBin) was not found"
# The floor is 3.10 (Ubuntu 22.04's python). Checked before pip, so an old python costs no download. The version is
# printed with syntax even Python 2 runs; exit 3 means "too old", anything else "does not run".
PYPATH=$(command -v "$PY")
CHECK='import sys; print("%d.%d.%d" % tuple(sys.version_info[:3])); sys.exit(0 if sys.version_info >= (3, 10) else 3)'
PYVER=$("$PY" -c "$CHECK" 2>/dev/null)
case $? in
  0) ;;
  3) fail "the host's python $PYPATH is Python $PYVER; httppush needs Python 3.10 or newer." \
       "Point eKuiper at a newer python (KUIPER__PORTABLE__PYTHONBIN in its environment, or portable.pythonBin in" \
       "its etc/kuiper.yaml), restart eKuiper and install the plugin again." ;;
  *) fail "the host's python $PYPATH does not run ('$PY -c' failed); httppush needs Python 3.10 or newer" ;;
esac
"$PY" -m pip --version >/dev/null 2>&1 \
  || fail "'$PY -m pip' does not work; install pip for that python (e.g. apt-get install python3-pip)"

PIP="$PY -m pip install --disable-pip-version-check --no-input --no-warn-script-location --target lib.new -r requirements.txt"
rm -rf lib.new
# Wheels first: on x86_64 with CPython 3.10-3.13 everything is prebuilt.
if ! $PIP --only-binary=:all: >install.log 2>&1; then
  # No wheel for this platform (ARM, Python 3.14, ...): pip must build pynng's bundled nng, which needs
  # cmake and a C compiler. Say so plainly instead of a build trace.
  missing=""
  command -v cmake >/dev/null 2>&1 || missing="$missing cmake"
  command -v cc >/dev/null 2>&1 || command -v gcc >/dev/null 2>&1 || missing="$missing a-C-compiler"
  if [ -n "$missing" ]; then
    fail "no prebuilt packages for $(uname -m) / $("$PY" -V 2>&1); building them (pynng) needs:$missing." \
      "Install them (e.g. apt-get install cmake build-essential) and install the plugin again." \
      "pip said: $(grep -m 1 -i 'error' install.log)"
  fi
  rm -rf lib.new
  $PIP >>install.log 2>&1 || fail "pip could not install the dependencies; the end of its log: $(tail -n 15 install.log)"
fi
# Optional packages (requirements-optional.txt: zstd bodies) may fail, wheel or build: the plugin runs without them
# and answers what needs them with a status naming the missing package.
OPTIONAL=""
if [ -f requirements-optional.txt ]; then
  OPT="$PY -m pip install --disable-pip-version-check --no-input --no-warn-script-location --target lib.new -r requirements-optional.txt"
  if ! $OPT --only-binary=:all: >>install.log 2>&1 && ! $OPT >>install.log 2>&1; then
    OPTIONAL=" (without the optional packages of requirements-optional.txt: pip could not install them, see install.log; Content-Encoding zstd is refused with 415)"
  fi
fi
rm -rf lib && mv lib.new lib || fail "cannot move lib.new to lib"
echo "httppush: dependencies installed into $(pwd)/lib with $("$PY" -V 2>&1)$OPTIONAL"
