"""Memory of a suite for the bench scripts: the sum of the proportional set size (Pss) of the
processes whose executable matches a regex, so that pages shared between processes (libraries,
the many smtpd of Postfix) count once.

    python3 bench/pss.py REGEX      prints "MiB processes"
    from pss import pss_kib         (with bench/ on sys.path) returns (KiB, processes)
"""
import os
import re
import sys


def pss_kib(exe_re):
    total = n = 0
    for pid in filter(str.isdigit, os.listdir('/proc')):
        try:
            if not exe_re.search(os.readlink(f'/proc/{pid}/exe')):
                continue
            with open(f'/proc/{pid}/smaps_rollup') as f:
                total += next(int(l.split()[1]) for l in f if l.startswith('Pss:'))
            n += 1
        except (OSError, StopIteration):
            pass
    return total, n


if __name__ == '__main__':
    kib, n = pss_kib(re.compile(sys.argv[1]))
    print(f'{kib / 1024:.0f} {n}')
