"""`make demo`: the lab in the real Envoy, on free local ports, with the lab's curl.

Starts the httpbun-compatible upstream and Envoy (the repository's envoy.yaml, ports changed),
sends the lab's request with `curl -v`, prints what comes back, and stops both processes,
also on failure or Ctrl-C.
"""

import json
import shutil
import signal
import subprocess
import sys

sys.path.insert(0, "tests/e2e")
from envoy_harness import ENVOY_VERSION, Upstream, lab_config, start_envoy  # noqa: E402

CHAT = json.dumps({"model": "gpt-4", "messages": [{"role": "user", "content": "Hello"}]})


def main() -> int:
    # Ctrl-C arrives as KeyboardInterrupt; SIGTERM (make being stopped) is turned into the same.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    upstream = envoy = None
    try:
        upstream = Upstream()
        envoy = start_envoy(lab_config(upstream.port))
        print(f"Envoy {ENVOY_VERSION} on 127.0.0.1:{envoy.port}, httpbun-compatible upstream on "
              f"127.0.0.1:{upstream.port}\n", flush=True)
        url = f"http://127.0.0.1:{envoy.port}/v1/chat/completions"
        if not shutil.which("curl"):
            print("curl is not installed (apt-get install curl)", file=sys.stderr)
            return 1
        cmd = ["curl", "-sS", "-v", "-X", "POST", url, "-H", "Content-Type: application/json", "-d", CHAT]
        print(f"$ curl -v -X POST {url} -H 'Content-Type: application/json' -d '{CHAT}'", flush=True)
        result = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
        # curl -v writes the exchange to stderr and the body to stdout.
        print("\n".join(line for line in result.stderr.splitlines() if line[:1] in "<>*"))
        print(result.stdout)
        headers = result.stderr.lower()
        ok = (result.returncode == 0 and "< http/1.1 200" in headers
              and "< x-custom-transformed: true" in headers
              and "< x-smart-header: method=post&path=/v1/chat/completions" in headers)
        print("demo: OK, both headers present" if ok else "demo: FAILED, see the response above",
              file=sys.stderr if not ok else sys.stdout)
        return 0 if ok else 1
    except KeyboardInterrupt:
        print("\ndemo: interrupted", file=sys.stderr)
        return 130
    finally:
        if envoy:
            envoy.stop()
        if upstream:
            upstream.stop()


if __name__ == "__main__":
    sys.exit(main())
