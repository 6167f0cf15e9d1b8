#!/usr/bin/env bash
# The browser test of `convnet train --serve` and `convnet serve`
# (tests/browser/test_serve.py): a headless Chromium driven by Selenium
# watches a short training run live, then draws digits on the page of its
# network and checks what it shows; it writes docs/images/train-serve.png and
# docs/images/serve.png. Installs Debian's chromium
# and chromium-driver if missing, and Selenium in .venv-web. Only the package
# installs use the network; the test itself stays on 127.0.0.1.
# Pass --latency-model deep to also measure the stroke-to-maps latency.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v chromium >/dev/null 2>&1 || ! command -v chromedriver >/dev/null 2>&1; then
    echo "== installing chromium and chromium-driver"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null
fi
if [ ! -x .venv-web/bin/python ] || ! .venv-web/bin/python -c "import selenium" 2>/dev/null; then
    echo "== installing selenium in .venv-web"
    python3 -m venv .venv-web
    .venv-web/bin/pip install -q selenium
fi
echo "== cargo build --release"
cargo build --release
echo "== tests/browser/test_serve.py"
.venv-web/bin/python tests/browser/test_serve.py --binary target/release/convnet "$@"
