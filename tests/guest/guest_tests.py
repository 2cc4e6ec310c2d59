#!/usr/bin/env python3
"""Guest-side entry point of tests/guest (runs as root inside the test guest, never on the
host): qemu-hook-test.service runs `python3 /mnt/share/in/guest_tests.py --share /mnt/share`;
the harness (lib/harness.py) runs each scenario as `... --scenario NAME` under a deadline."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from lib import harness  # noqa: E402

if __name__ == "__main__":
    if not os.path.exists("/etc/qemu-hook-test-guest"):
        sys.exit("guest_tests.py: not the qemu-hook test guest (/etc/qemu-hook-test-guest "
                 "missing): refusing to run anything here")
    sys.exit(harness.main(sys.argv[1:]))
