"""Interop check: the Prometheus project's Python client parses isogate's /metrics.

    tests/interop/.venv/bin/python tests/interop/prometheus_scrape.py --url http://127.0.0.1:9901/metrics

Fetches the scrape and parses it with prometheus_client's OpenMetrics parser, which refuses
anything the OpenMetrics text format does not allow (a missing `# EOF`, a histogram whose
buckets are not cumulative or lack `+Inf`, a counter sample without `_total`, a repeated
series, ...). Prints one line per metric family, `<name> <type> <samples>`, for the caller to
check. To show that the parser is strict, the same text without its `# EOF` must fail.
Exits 0 when everything holds, 1 with a message on stderr otherwise.
"""

import argparse
import sys
import urllib.request

from prometheus_client.openmetrics.parser import text_string_to_metric_families

TIMEOUT_SECONDS = 10
CONTENT_TYPE = "application/openmetrics-text"


def parse(text):
    return list(text_string_to_metric_families(text))


def main():
    args = argparse.ArgumentParser()
    args.add_argument("--url", required=True)
    url = args.parse_args().url
    with urllib.request.urlopen(url, timeout=TIMEOUT_SECONDS) as response:
        received_type = response.headers.get_content_type()
        text = response.read().decode("utf-8")
    if received_type != CONTENT_TYPE:
        print(f"GET {url}: Content-Type is {received_type}, expected {CONTENT_TYPE}", file=sys.stderr)
        return 1
    try:
        families = parse(text)
    except ValueError as e:
        print(f"GET {url}: not OpenMetrics: {e}", file=sys.stderr)
        return 1
    try:
        parse(text.replace("# EOF\n", ""))
    except ValueError:
        pass
    else:
        print("the parser accepted a scrape without # EOF: it is not checking", file=sys.stderr)
        return 1
    for family in families:
        print(f"{family.name} {family.type} {len(family.samples)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
